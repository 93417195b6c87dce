//! The fast slice of the mutation fuzzer (`cargo xtask mutate`, same code included from
//! `xtask/src/mutfuzz`): a fixed seed, a bounded number of mutations of qemu- and vdisk-made
//! VHD/VHDX/VDI/qcow2 images (fixed, dynamic, differencing or backed, compressed, with
//! snapshots), each run through `info`, `check`, `compact --dry-run` and `compact` in every
//! mode of the binary under test. Zero failures allowed: no hang, panic, signal or memory
//! blow-up, failed runs leave the file unchanged, compactions read the same by qemu-img /
//! libvhdi and add nothing to what `qemu-img check` finds.

#[allow(dead_code, missing_docs)]
#[path = "../../../xtask/src/mutfuzz/mod.rs"]
mod mutfuzz;

use std::time::Duration;

use super::support::tempdir;

/// Mutations per run (the four formats alternate): about 40 s on the 2-core CI machine.
const CASES: u64 = 48;

#[test]
fn mutated_images_never_make_vdisk_crash_hang_change_a_refused_file_or_lose_content() {
    let dir = tempdir();
    let mut cfg = mutfuzz::Config::new(env!("CARGO_BIN_EXE_vdisk").into(), dir.path().into());
    cfg.seed = 0x1212;
    cfg.cases = Some(CASES);
    // Debug-profile binary: allow more than the release default per command.
    cfg.limits.timeout = Duration::from_secs(60);
    let log = |line: &str| eprintln!("{line}");
    let report = mutfuzz::run(&cfg, &log).unwrap_or_else(|e| panic!("mutate: {e}"));
    eprintln!("{report}");
    assert_eq!(report.cases.values().sum::<u64>(), CASES, "every case ran");
    assert_eq!(
        report.failure_count(),
        0,
        "mutation fuzzing found failures (replay: cargo xtask mutate --seed {} --case N):\n{report}",
        cfg.seed
    );
}
