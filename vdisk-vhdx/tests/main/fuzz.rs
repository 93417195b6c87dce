//! Random corruption: opening never panics; it errors or gives an image whose reads do not
//! panic either.

use std::sync::OnceLock;

use proptest::prelude::*;
use vdisk_core::{BlockIndex, FormatDriver, MIB, MemFile};

use super::util::{FIXTURES, fix_crc, run};

/// A small qemu image with data, built once.
fn base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.vhdx");
        let p = path.to_str().unwrap();
        run(
            "qemu-img",
            &["create", "-q", "-f", "vhdx", "-o", "block_size=1M", p, "6M"],
        );
        run("qemu-io", &["-f", "vhdx", "-c", "write -P 0x5c 512k 1M", p]);
        std::fs::read(&path).unwrap()
    })
}

/// The dirty-log fixture, cut after its last block, built once.
fn dirty() -> &'static [u8] {
    static DIRTY: OnceLock<Vec<u8>> = OnceLock::new();
    DIRTY.get_or_init(|| {
        let out = std::process::Command::new("bzcat")
            .arg(format!("{FIXTURES}/iotest-dirtylog-10G-4M.vhdx.bz2"))
            .output()
            .unwrap();
        out.stdout
    })
}

/// Opens and, if that works, exercises every read path; nothing may panic.
fn exercise(bytes: Vec<u8>) {
    let file = MemFile::from_bytes(bytes);
    let _ = vdisk_vhdx::DRIVER.check(Box::new(file.read_only()));
    if let Ok(image) = vdisk_vhdx::DRIVER.open(Box::new(file.read_only()), &Default::default()) {
        let _ = image.details();
        let _ = image.check();
        for i in 0..image.block_count().min(64) {
            let _ = image.block_state(BlockIndex(i));
        }
        let mut buf = vec![0u8; 64 << 10];
        let step = (image.size() / 16).max(1);
        for off in (0..image.size()).step_by(step as usize) {
            let n = buf.len().min((image.size() - off) as usize);
            let _ = image.read_at(&mut buf[..n], off);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_flips_in_the_first_4_mib_never_panic(
        flips in prop::collection::vec((0usize..4 << 20, any::<u8>()), 1..8)
    ) {
        let mut b = base().to_vec();
        for (at, x) in flips {
            if at < b.len() { b[at] ^= x | 1; }
        }
        exercise(b);
    }

    /// Flips with header and region table checksums repaired, so mutations reach the
    /// metadata, the BAT and the log.
    #[test]
    fn random_flips_behind_valid_checksums_never_panic(
        flips in prop::collection::vec((0x10000usize..4 << 20, any::<u8>()), 1..6)
    ) {
        let mut b = base().to_vec();
        for (at, x) in flips {
            if at < b.len() { b[at] ^= x | 1; }
        }
        for h in [0x10000, 0x20000] { fix_crc(&mut b, h, 4096); }
        for r in [0x30000, 0x40000] { fix_crc(&mut b, r, 0x10000); }
        exercise(b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The log of the dirty fixture, corrupted, with the active entry's checksum repaired.
    #[test]
    fn random_flips_in_a_pending_log_never_panic(
        flips in prop::collection::vec((0usize..0x10000, any::<u8>()), 1..6)
    ) {
        let mut b = dirty().to_vec();
        for (at, x) in flips {
            b[0x10_0000 + at] ^= x | 1;
        }
        fix_crc(&mut b, 0x10_c000, 8192);
        exercise(b);
    }
}

/// A parent and a differencing child made by vdisk (full and partial blocks), built once:
/// (parent bytes, child bytes).
fn chain() -> &'static (Vec<u8>, Vec<u8>) {
    static CHAIN: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    CHAIN.get_or_init(|| {
        use super::diff::{base, child, write};
        let dir = tempfile::tempdir().unwrap();
        let a = base(dir.path(), "a.vhdx", 6 * MIB, MIB);
        write(&a, &[(0, vec![0x5a; 3 * MIB as usize])]);
        let b = child(dir.path(), "b.vhdx", &a);
        write(
            &b,
            &[
                (MIB, vec![0x6b; MIB as usize]),
                (4 * MIB + 512, vec![7; 4096]),
            ],
        );
        super::diff_cases::make_partial(&b, 1, &[0, 3, 1000]);
        (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// A differencing child corrupted behind valid checksums (its parent locator, BAT, sector
    /// bitmap and blocks), opened with its parent: errors, never panics.
    #[test]
    fn random_flips_in_a_differencing_child_never_panic(
        flips in prop::collection::vec((prop_oneof![
            // Anywhere; the metadata table and items (the parent locator last); the BAT's
            // payload entries and the sector bitmap entry; the sector bitmap block.
            0x10000usize..6 << 20,
            0x20_0000usize..0x21_0200,
            0x30_0000usize..0x30_0040,
            0x30_8000usize..0x30_8008,
            0x40_0000usize..0x40_0400,
        ], any::<u8>()), 1..6)
    ) {
        let (parent, child) = chain();
        let mut b = child.clone();
        for (at, x) in flips {
            if at < b.len() { b[at] ^= x | 1; }
        }
        for h in [0x10000, 0x20000] { fix_crc(&mut b, h, 4096); }
        for r in [0x30000, 0x40000] { fix_crc(&mut b, r, 0x10000); }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.vhdx"), parent).unwrap();
        let path = dir.path().join("b.vhdx");
        std::fs::write(&path, &b).unwrap();
        exercise(b);
        if let Ok(image) = super::diff::open(&path, false) {
            let _ = image.details();
            let mut buf = vec![0u8; 1 << 20];
            for off in (0..image.size()).step_by(1 << 20) {
                let n = buf.len().min((image.size() - off) as usize);
                let _ = image.read_at(&mut buf[..n], off);
            }
        }
    }
}
