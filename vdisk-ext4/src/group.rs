//! Block groups: where each group's descriptor lives (the classic table after the superblock,
//! or with `meta_bg` one descriptor block per meta group), which groups hold superblock
//! backups (`sparse_super`, `sparse_super2`), and so which blocks at the start of a group are
//! base metadata (superblock copy, descriptor table copy, reserved GDT blocks). The kernel
//! computes the same in `ext4_num_base_meta_clusters` for groups whose bitmap is not
//! initialised.

use crate::superblock::Geometry;

/// Whether group `g` holds a superblock copy.
pub(crate) fn has_super(geo: &Geometry, g: u64) -> bool {
    if g == 0 {
        return true;
    }
    if geo.features.has_sparse_super2() {
        return geo.backup_bgs.contains(&g);
    }
    if !geo.features.has_sparse_super() || g == 1 {
        return true;
    }
    // Groups 0, 1 and the powers of 3, 5 and 7.
    !g.is_multiple_of(2) && [3u64, 5, 7].iter().any(|&b| is_power_of(g, b))
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 && n.is_multiple_of(base) {
        n /= base;
    }
    n == 1
}

/// Blocks of the classic descriptor table (all groups' descriptors, or those before the first
/// meta group with `meta_bg`).
pub(crate) fn classic_gdt_blocks(geo: &Geometry) -> u64 {
    if geo.features.has_meta_bg() {
        geo.first_meta_bg
    } else {
        geo.groups.div_ceil(geo.descs_per_block())
    }
}

/// Whether group `g` lies in a meta group (its descriptors follow the `meta_bg` layout).
fn in_meta_group(geo: &Geometry, g: u64) -> bool {
    geo.features.has_meta_bg() && g / geo.descs_per_block() >= geo.first_meta_bg
}

/// Blocks of base metadata of group `g`: its superblock copy, descriptor blocks and reserved
/// GDT blocks, contiguous from [`meta_start`].
pub(crate) fn base_meta_blocks(geo: &Geometry, g: u64) -> u64 {
    let sb = u64::from(has_super(geo, g));
    if in_meta_group(geo, g) {
        let dpb = geo.descs_per_block();
        let first = g / dpb * dpb;
        let gdb = u64::from(g == first || g == first + 1 || g == first + dpb - 1);
        sb + gdb
    } else if sb == 1 {
        sb + classic_gdt_blocks(geo) + geo.reserved_gdt_blocks
    } else {
        0
    }
}

/// The block of group `g`'s superblock copy, where its base metadata starts: the group's
/// first block, except in group 0 whose superblock is always at byte 1024 (block 1 with
/// 1 KiB blocks, also with bigalloc where group 0 starts at block 0; else block 0).
pub(crate) fn meta_start(geo: &Geometry, g: u64) -> u64 {
    if g == 0 {
        1024 / geo.block_size
    } else {
        geo.group_first_block(g)
    }
}

/// Byte offset in the volume of group `g`'s descriptor.
pub(crate) fn descriptor_offset(geo: &Geometry, g: u64) -> u64 {
    let dpb = geo.descs_per_block();
    let block = if in_meta_group(geo, g) {
        let first = g / dpb * dpb;
        geo.group_first_block(first) + u64::from(has_super(geo, first))
    } else {
        meta_start(geo, 0) + 1 + g / dpb
    };
    block * geo.block_size + (g % dpb) * geo.desc_size
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::Features;

    pub(crate) fn geo(features: Features, groups: u64) -> Geometry {
        Geometry {
            block_size: 4096,
            cluster_ratio: 1,
            blocks_count: groups * 32768,
            first_data_block: 0,
            blocks_per_group: 32768,
            clusters_per_group: 32768,
            inodes_per_group: 8192,
            inode_size: 256,
            groups,
            desc_size: 64,
            reserved_gdt_blocks: 100,
            first_meta_bg: 1,
            backup_bgs: [1, groups - 1],
            features,
            csum_seed: 0,
            uuid: [0; 16],
            label: String::new(),
            state: 1,
            error_count: 0,
            journal_inum: 8,
            journal_uuid: [0; 16],
            last_orphan: 0,
            orphan_file_inum: 0,
            mmp_block: 0,
            free_blocks_count: 0,
        }
    }

    #[test]
    fn superblock_backups_follow_sparse_super_and_sparse_super2() {
        let sparse = geo(
            Features {
                compat: 0,
                incompat: 0x80,
                ro_compat: 0x1,
            },
            400,
        );
        let with: Vec<u64> = (0..400).filter(|&g| has_super(&sparse, g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125, 243, 343]);
        let all = geo(
            Features {
                compat: 0,
                incompat: 0x80,
                ro_compat: 0,
            },
            4,
        );
        assert!((0..4).all(|g| has_super(&all, g)));
        let two = geo(
            Features {
                compat: 0x200,
                incompat: 0x80,
                ro_compat: 0x1,
            },
            10,
        );
        let with: Vec<u64> = (0..10).filter(|&g| has_super(&two, g)).collect();
        assert_eq!(with, vec![0, 1, 9]);
        // 400 groups of 64-byte descriptors: 7 blocks, plus 100 reserved, plus the superblock.
        assert_eq!(base_meta_blocks(&sparse, 0), 108);
        assert_eq!(base_meta_blocks(&sparse, 2), 0);
        assert_eq!(descriptor_offset(&sparse, 65), 2 * 4096 + 64);
    }

    #[test]
    fn meta_bg_descriptors_live_in_the_first_second_and_last_group_of_each_meta_group() {
        let meta = geo(
            Features {
                compat: 0,
                incompat: 0x80 | 0x10,
                ro_compat: 0x1,
            },
            256,
        );
        // 64 descriptors per block; meta group 1 = groups 64..128; first_meta_bg = 1.
        assert_eq!(descriptor_offset(&meta, 3), 4096 + 3 * 64);
        assert_eq!(descriptor_offset(&meta, 70), 64 * 32768 * 4096 + 6 * 64);
        // Group 81 (a power of 3) has a superblock backup before its descriptor block.
        assert_eq!(base_meta_blocks(&meta, 64), 1);
        assert_eq!(base_meta_blocks(&meta, 65), 1);
        assert_eq!(base_meta_blocks(&meta, 66), 0);
        assert_eq!(base_meta_blocks(&meta, 127), 1);
        assert_eq!(base_meta_blocks(&meta, 81), 1);
        assert_eq!(base_meta_blocks(&meta, 0), 1 + 1 + 100);
    }
}
