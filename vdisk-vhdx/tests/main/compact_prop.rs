//! Random write patterns made by qemu-io, compacted: every byte reads the same (for us and
//! for qemu), and qemu finds the result clean.

use proptest::prelude::*;
use vdisk_core::{Access, MIB, Mode};

use super::util::{
    check_errors, compact, content, log_detail, open_path, open_rw, qemu_create, run,
};

/// One qemu-io write: (offset as a fraction of the disk, length in 512-byte sectors, kind).
/// Kind 0: real zeros (`-P 0`), 1: zero write (`-z`), other: that pattern.
type Write = (f64, u64, u8);

fn qemu_io_args(size: u64, writes: &[Write]) -> Vec<String> {
    let mut args = vec!["-f".to_string(), "vhdx".to_string()];
    for &(at, sectors, kind) in writes {
        let off = ((at * size as f64) as u64 / 512 * 512).min(size - 512);
        let len = (sectors * 512).min(size - off);
        args.push("-c".into());
        args.push(match kind {
            1 => format!("write -z {off} {len}"),
            k => format!("write -P {k} {off} {len}"),
        });
    }
    args
}

fn compact_random(bs: u64, size: u64, writes: &[Write], mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let orig = dir.path().join("o.vhdx");
    let o = orig.to_str().unwrap();
    let opts = format!("block_size={bs}");
    qemu_create(o, &opts, &size.to_string());
    let mut args = qemu_io_args(size, writes);
    args.push(o.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("qemu-io", &args);
    let model = content(&*open_path(&orig).unwrap());
    let new = dir.path().join("n.vhdx");
    std::fs::copy(&orig, &new).unwrap();
    let mut image =
        open_rw(vdisk_core::testing::open_std_file(&new, Access::ReadWrite).unwrap()).unwrap();
    compact(&mut *image, mode).unwrap();
    assert!(content(&*image) == model, "in-memory view after compaction");
    drop(image);
    let image = open_path(&new).unwrap();
    assert!(content(&*image) == model, "reopened");
    assert_eq!(log_detail(&*image), "empty");
    assert!(check_errors(std::fs::read(&new).unwrap()).is_empty());
    assert!(std::fs::metadata(&new).unwrap().len() <= std::fs::metadata(&orig).unwrap().len());
    let n = new.to_str().unwrap();
    run("qemu-img", &["check", "-q", "-f", "vhdx", n]);
    run(
        "qemu-img",
        &["compare", "-q", "-f", "vhdx", "-F", "vhdx", o, n],
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_qemu_writes_compact_byte_identical(
        bs_mib in prop_oneof![Just(1u64), Just(2u64)],
        blocks in 2u64..12,
        tail_sectors in 0u64..64,
        writes in prop::collection::vec(
            (0.0f64..1.0, 1u64..6000, prop_oneof![Just(0u8), Just(1u8), 2u8..255]),
            1..10,
        ),
        pretrimmed in any::<bool>(),
    ) {
        let bs = bs_mib * MIB;
        let size = blocks * bs + tail_sectors * 512;
        let mode = if pretrimmed { Mode::Pretrimmed } else { Mode::Prezeroed };
        compact_random(bs, size, &writes, mode);
    }
}
