//! Trust rules: each state in which the free map cannot be relied on gives an untrusted
//! verdict whose reason a user understands.

use vdisk_core::FsVerdict;

use super::util::{
    SUPER, analyze, chunk_root, edit_node, edit_super, extent_root, get_u64, leaf_items, mkfs,
    put_u64, small, untrusted,
};

#[test]
fn an_unreplayed_log_tree_is_untrusted_with_the_fix_in_the_reason() {
    let mut b = small().bytes();
    edit_super(&mut b, |sb| put_u64(sb, 0x60, 0x1234_0000));
    let reason = untrusted(b);
    assert!(reason.contains("unreplayed log"), "{reason}");
    assert!(reason.contains("mount and unmount it cleanly"), "{reason}");
}

#[test]
fn more_than_one_device_is_untrusted() {
    let mut b = small().bytes();
    edit_super(&mut b, |sb| put_u64(sb, 0x88, 2));
    let reason = untrusted(b);
    assert!(reason.contains("several devices"), "{reason}");
}

#[test]
fn unknown_incompatible_features_are_untrusted() {
    let mut b = small().bytes();
    edit_super(&mut b, |sb| {
        let f = get_u64(sb, 0xbc);
        put_u64(sb, 0xbc, f | 1 << 13);
    });
    let reason = untrusted(b);
    assert!(reason.contains("incompatible features"), "{reason}");
}

#[test]
fn a_superblock_checksum_mismatch_is_untrusted() {
    let mut b = small().bytes();
    b[SUPER + 0x300] ^= 1;
    let reason = untrusted(b);
    assert!(reason.contains("checksum mismatch"), "{reason}");
}

#[test]
fn a_tree_node_checksum_mismatch_is_untrusted() {
    let v = small();
    let mut b = v.bytes();
    let root = extent_root(&v.image);
    for at in super::util::node_copies(&b, root) {
        b[at + 200] ^= 0x40;
    }
    let reason = untrusted(b);
    assert!(reason.contains("fails its checksum"), "{reason}");
}

#[test]
fn a_damaged_first_copy_of_a_dup_node_is_read_from_its_second_copy() {
    let v = small();
    let mut b = v.bytes();
    let root = extent_root(&v.image);
    let copies = super::util::node_copies(&b, root);
    assert_eq!(copies.len(), 2, "default metadata is dup");
    let before = super::util::usage(b.clone());
    b[copies[0] + 200] ^= 0x40;
    assert_eq!(super::util::usage(b), before);
}

/// Changes the flags (and stripes) of the chunk items `pick` chooses in the chunk tree leaf.
fn edit_chunks(b: &mut [u8], pick: impl Fn(u64) -> bool, edit: impl Fn(&mut [u8])) {
    let root = chunk_root(b);
    edit_node(b, root, |node| {
        for it in leaf_items(node) {
            if it.kind == 228 && pick(get_u64(node, it.data.start + 24)) {
                edit(&mut node[it.data.clone()]);
            }
        }
    });
}

#[test]
fn a_raid_profile_is_untrusted() {
    let mut b = small().bytes();
    // DATA|RAID1 with its single stripe.
    edit_chunks(&mut b, |t| t == 1, |c| put_u64(c, 24, 1 | 0x10));
    let reason = untrusted(b);
    assert!(reason.contains("raid1 profile"), "{reason}");
}

#[test]
fn a_chunk_on_a_missing_device_is_untrusted() {
    let mut b = small().bytes();
    edit_chunks(&mut b, |t| t == 1, |c| put_u64(c, 48, 2));
    let reason = untrusted(b);
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn block_group_used_bytes_that_disagree_with_the_extents_are_untrusted() {
    let v = small();
    let mut b = v.bytes();
    let root = extent_root(&v.image);
    edit_node(&mut b, root, |node| {
        let it = leaf_items(node)
            .into_iter()
            .find(|i| i.kind == 192)
            .unwrap();
        let used = get_u64(node, it.data.start);
        put_u64(node, it.data.start, used + 4096);
    });
    let reason = untrusted(b);
    assert!(
        reason.contains("bytes are used but its extents hold"),
        "{reason}"
    );
}

#[test]
fn a_superblock_copy_newer_than_the_primary_is_untrusted() {
    let mut b = small().bytes();
    let m = 64 << 20;
    let gen_at = m + 0x48;
    let g = get_u64(&b, gen_at);
    put_u64(&mut b, gen_at, g + 1);
    let c = crc32c::crc32c(&b[m + 32..m + 4096]);
    b[m..m + 4].copy_from_slice(&c.to_le_bytes());
    let reason = untrusted(b);
    assert!(reason.contains("newer than the primary"), "{reason}");
}

#[test]
fn checksum_types_other_than_crc32c_are_untrusted_as_not_supported() {
    let b = mkfs(128, &["--csum", "xxhash"], &[("a", 10_000)]).bytes();
    let reason = untrusted(b);
    assert!(reason.contains("checksum type not supported"), "{reason}");
}

#[test]
fn a_volume_without_the_magic_is_not_mine_and_a_truncated_one_is_untrusted() {
    assert_eq!(analyze(vec![0; 1 << 20]), FsVerdict::NotMine);
    assert_eq!(analyze(vec![0; 100]), FsVerdict::NotMine);
    let mut b = small().bytes();
    b.truncate(100 << 20);
    let reason = untrusted(b);
    assert!(reason.contains("truncated image"), "{reason}");
}
