//! The analyser's free map equals e2fsprogs' own (`dumpe2fs` free blocks), block for block,
//! on every layout mke2fs makes: flex_bg with metadata_csum (WSL), uninit_bg's crc16, plain
//! ext2 and ext3 bitmaps, 1 KiB blocks, bigalloc clusters, meta_bg, sparse_super2 and no
//! sparse_super, groups whose bitmaps were never initialised.

use super::util::{Volume, detail, trusted};

/// Builds the volume, deletes most files, and checks the analyser against dumpe2fs.
fn matches_dumpe2fs(options: &[&str], mib: usize, kind: &str) -> vdisk_core::FsUsage {
    let vol = Volume::make(options, mib, 24, 300, 4);
    vol.assert_fsck_clean();
    let want = vol.dumpe2fs_free();
    let usage = trusted(vol.bytes());
    let got: Vec<_> = usage.free.runs().collect();
    assert_eq!(got, want, "free map vs dumpe2fs for {options:?}");
    assert_eq!(detail(&usage, "type"), kind);
    let free_bytes: u64 = want.iter().map(|r| r.end - r.start).sum();
    assert!(
        free_bytes > (mib as u64) << 19,
        "most of the volume is free: {free_bytes}"
    );
    assert_eq!(usage.free.len(), (mib as u64) << 20);
    usage
}

#[test]
fn a_wsl_style_ext4_free_map_equals_dumpe2fs() {
    let u = matches_dumpe2fs(&["-t", "ext4", "-b", "4096", "-G", "4096"], 64, "ext4");
    assert_eq!(detail(&u, "journal"), "internal (inode 8)");
    assert!(detail(&u, "features").contains("metadata_csum"));
    assert_eq!(detail(&u, "block_size"), "4096");
}

#[test]
fn ext4_with_one_kib_blocks_and_many_uninitialised_groups_equals_dumpe2fs() {
    let u = matches_dumpe2fs(&["-t", "ext4", "-b", "1024", "-O", "^flex_bg"], 48, "ext4");
    assert_ne!(detail(&u, "uninit_groups"), "0", "{:?}", u.details);
}

#[test]
fn uninit_bg_with_crc16_descriptor_checksums_equals_dumpe2fs() {
    let u = matches_dumpe2fs(
        &[
            "-t",
            "ext4",
            "-O",
            "^metadata_csum,uninit_bg,^flex_bg",
            "-b",
            "1024",
        ],
        32,
        "ext4",
    );
    assert_ne!(detail(&u, "uninit_groups"), "0", "{:?}", u.details);
}

#[test]
fn ext2_and_ext3_bitmaps_equal_dumpe2fs() {
    matches_dumpe2fs(&["-t", "ext2", "-b", "1024"], 24, "ext2");
    let u = matches_dumpe2fs(&["-t", "ext3", "-b", "4096"], 48, "ext3");
    assert_eq!(detail(&u, "journal"), "internal (inode 8)");
}

#[test]
fn bigalloc_clusters_equal_dumpe2fs() {
    let u = matches_dumpe2fs(&["-t", "ext4", "-O", "bigalloc", "-C", "16384"], 64, "ext4");
    assert_eq!(detail(&u, "cluster_size"), "16384");
    let u = matches_dumpe2fs(
        &["-t", "ext4", "-b", "4096", "-O", "bigalloc", "-C", "65536"],
        64,
        "ext4",
    );
    assert_eq!(detail(&u, "cluster_size"), "65536");
}

#[test]
fn meta_bg_descriptors_equal_dumpe2fs() {
    matches_dumpe2fs(
        &["-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"],
        48,
        "ext4",
    );
}

#[test]
fn sparse_super2_and_no_sparse_super_backups_equal_dumpe2fs() {
    matches_dumpe2fs(
        &["-t", "ext4", "-b", "1024", "-O", "sparse_super2,^flex_bg"],
        32,
        "ext4",
    );
    matches_dumpe2fs(
        &[
            "-t",
            "ext4",
            "-b",
            "1024",
            "-O",
            "^sparse_super,^resize_inode,^flex_bg",
        ],
        32,
        "ext4",
    );
}

#[test]
fn a_journal_in_many_extents_below_an_index_block_is_checked_and_trusted() {
    // 1 KiB blocks without flex_bg: the 40 MiB journal is split around each group's
    // metadata into more extents than the inode holds, so its map has an index block.
    let vol = Volume::make(
        &[
            "-t", "ext4", "-b", "1024", "-O", "^flex_bg", "-J", "size=40",
        ],
        128,
        4,
        100,
        2,
    );
    let stat = super::util::e2("debugfs", &["-R", "stat <8>", vol.path.to_str().unwrap()]);
    assert!(
        stat.contains("(ETB0)"),
        "the journal has an index block: {stat}"
    );
    let u = trusted(vol.bytes());
    assert_eq!(detail(&u, "journal"), "internal (inode 8)");
    assert_eq!(u.free.runs().collect::<Vec<_>>(), vol.dumpe2fs_free());
}
