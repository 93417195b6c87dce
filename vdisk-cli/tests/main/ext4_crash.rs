//! Crash safety of ext4-aware compaction end to end: the WSL layout (a bare ext4 over the
//! whole disk, `mkfs.ext4 -b 4096 -G 4096 -d` over random bytes) with every other file removed
//! by `debugfs -w`, so free blocks holding old data lie between used ones and blocks must
//! move, put into a dynamic VHD (128 KiB blocks) and a dynamic VHDX (1 MiB blocks) by our own
//! drivers. The operation under test is what `vdisk compact --mode full` does: `analyze_disk`
//! with the ext4 analyser, plan with its free space, apply.
//!
//! The write stream is cut at every write (the shared harness in `support::fs_crash`); each
//! recovered image must read as before outside dumpe2fs's own free blocks (not our analyser)
//! and each block wholly inside them as before or all zeros; a re-run must finish. For a
//! sample of recovered images qemu-img exports the disk (after `qemu-img check -r all`, which
//! replays a pending VHDX log), `e2fsck -fn` must be clean and `debugfs` must read every file
//! back byte for byte.
//!
//! Tools (a missing one fails the test): `e2fsprogs`, `qemu-utils` (qemu-img).

use vdisk_core::FormatDriver;

use super::support::fs_crash::{FsCrash, crash_full, image, qemu_export};
use super::support::guest_ext4::{Ext4Disk, Fill, Placement, WSL_MKFS};

/// Recovered images the oracle reads back, per format.
const ORACLE_SAMPLES: u64 = 6;

fn full_compaction_survives_a_crash_at_every_write_with_files_intact(
    driver: &'static dyn FormatDriver,
    qemu_format: &str,
    block: u64,
    min_cuts: u64,
) {
    let fill = Fill {
        count: 6,
        len: 1_500_000,
        keep_every: 2,
    };
    let disk = Ext4Disk::build(Placement::Bare, 20, WSL_MKFS, fill);
    let bytes = image(driver, &disk.bytes, block);
    let read_back = |format: &str, bytes: &[u8], what: &str| {
        let exported = qemu_export(disk.dir.path(), format, bytes);
        assert!(
            exported.len() >= disk.bytes.len(),
            "{what}: qemu's export is too short"
        );
        disk.assert_volume_sound(&exported[..disk.bytes.len()], what);
    };
    let fs = FsCrash {
        analyzer: &vdisk_ext4::ANALYZER,
        free: &disk.free,
        read_back: &read_back,
        samples: ORACLE_SAMPLES,
    };
    let out = crash_full(&fs, driver, qemu_format, bytes);
    let cuts = out.stats.cut_points;
    eprintln!(
        "ext4 {qemu_format} full crash: {cuts} cut points ({} recoveries, {} duplicates \
         skipped), {} free blocks read zeros in recovered images, {} read back by debugfs",
        out.stats.recoveries, out.stats.duplicates, out.zeroed, out.samples
    );
    assert!(cuts >= min_cuts, "{qemu_format}: {cuts} cut points");
    assert!(out.zeroed >= 5, "{qemu_format}: recoveries after freeing");
    assert_eq!(out.samples, ORACLE_SAMPLES, "{qemu_format}: oracle samples");
}

#[test]
fn full_compaction_of_a_wsl_ext4_vhd_survives_a_crash_at_every_write_with_files_intact() {
    full_compaction_survives_a_crash_at_every_write_with_files_intact(
        &vdisk_vhd::DRIVER,
        "vpc",
        128 << 10,
        30,
    );
}

#[test]
fn full_compaction_of_a_wsl_ext4_vhdx_survives_a_crash_at_every_write_with_files_intact() {
    full_compaction_survives_a_crash_at_every_write_with_files_intact(
        &vdisk_vhdx::DRIVER,
        "vhdx",
        1 << 20,
        15,
    );
}
