//! One analysis of a volume whose superblock passed: the trust rules, then the block bitmaps
//! of every group into a [`FreeMap`], then the cross-checks that make a readable but wrong
//! bitmap untrusted instead of reclaimed.

use vdisk_core::FsUsage;
use vdisk_core::fs::{Examined, FreeMap, MetaReader, damaged};

use crate::bitmap::{self, for_each_free_run, inode_table_blocks};
use crate::checksum;
use crate::features::{Compat, Incompat, RoCompat};
use crate::group;
use crate::group_desc::GroupDesc;
use crate::journal;
use crate::superblock::{Geometry, STATE_ERROR, STATE_VALID, uuid_text};

/// The trust rules the superblock alone decides.
pub(crate) fn check_state(geo: &Geometry) -> Examined<()> {
    let f = &geo.features;
    if f.incompat & Incompat::JOURNAL_DEV != 0 {
        return damaged(
            "this is an ext4 external journal device, not a file system: none of it is free",
        );
    }
    if f.incompat & Incompat::RECOVER != 0 {
        return damaged(journal::needs_recovery());
    }
    if geo.state & STATE_ERROR != 0 || geo.error_count != 0 {
        return damaged(format!(
            "ext4 volume has recorded errors ({} since the last check): run e2fsck -f on it \
             first",
            geo.error_count
        ));
    }
    if geo.state & STATE_VALID == 0 {
        return damaged(
            "ext4 volume was not unmounted cleanly (it is mounted, or the machine stopped): \
             unmount it or shut the machine down cleanly (for WSL: `wsl --shutdown`), or run \
             e2fsck",
        );
    }
    Ok(())
}

/// Reads and checks group `g`'s descriptor.
fn descriptor(reader: &MetaReader<'_>, geo: &Geometry, g: u64) -> Examined<GroupDesc> {
    let len = usize::try_from(geo.desc_size).unwrap_or(0);
    let bytes = reader.read(group::descriptor_offset(geo, g), len, "a group descriptor")?;
    let desc = GroupDesc::parse(geo, g, &bytes).or_else(damaged)?;
    let itable = inode_table_blocks(geo);
    let inside =
        |b: u64, n: u64| b >= geo.first_data_block && b.saturating_add(n) <= geo.blocks_count;
    if !inside(desc.block_bitmap, 1)
        || !inside(desc.inode_bitmap, 1)
        || !inside(desc.inode_table, itable)
    {
        return damaged(format!(
            "ext4 group descriptor {g} places its bitmaps or inode table outside the file system"
        ));
    }
    if desc.free_clusters > geo.group_clusters(g) {
        return damaged(format!(
            "ext4 group descriptor {g} counts more free clusters than the group has (run e2fsck)"
        ));
    }
    Ok(desc)
}

/// Group `g`'s block bitmap: read and checksum-verified, or computed when uninitialised.
fn block_bitmap(
    reader: &MetaReader<'_>,
    geo: &Geometry,
    g: u64,
    desc: &GroupDesc,
) -> Examined<Vec<u8>> {
    if desc.block_uninit(geo) {
        return Ok(bitmap::uninit(geo, g, desc));
    }
    let len = usize::try_from(geo.block_size).unwrap_or(0);
    let mut bits = reader.read(desc.block_bitmap * geo.block_size, len, "a block bitmap")?;
    bits.truncate(usize::try_from(geo.clusters_per_group / 8).unwrap_or(0));
    if geo.features.has_metadata_csum()
        && !desc.bitmap_csum_matches(geo, checksum::ext4(geo.csum_seed, &bits))
    {
        return damaged(format!(
            "ext4 block bitmap of group {g} fails its checksum (metadata is damaged; run e2fsck)"
        ));
    }
    Ok(bits)
}

/// Free space and counts of a trusted volume.
pub(crate) fn examine(reader: &MetaReader<'_>, geo: &Geometry) -> Examined<FsUsage> {
    check_state(geo)?;
    let cluster = geo.cluster_size();
    let fs_end = geo.blocks_count * geo.block_size;
    let mut free = FreeMap::new(reader.size(), cluster);
    let mut free_clusters = 0u64;
    let mut uninit_groups = 0u64;
    for g in 0..geo.groups {
        let desc = descriptor(reader, geo, g)?;
        uninit_groups += u64::from(desc.block_uninit(geo));
        let bits = block_bitmap(reader, geo, g, &desc)?;
        let first = geo.group_first_block(g) * geo.block_size;
        let counted = for_each_free_run(&bits, geo.group_clusters(g), |r| {
            let start = first + r.start * cluster;
            let end = (first + r.end * cluster).min(fs_end);
            free.mark_free(start..end);
        });
        if counted != desc.free_clusters {
            return damaged(format!(
                "ext4 group {g}: the block bitmap has {counted} free clusters but its descriptor \
                 says {} (the volume needs checking: run e2fsck)",
                desc.free_clusters
            ));
        }
        free_clusters += counted;
    }
    // The superblock's count (in blocks, also with bigalloc) is updated lazily by the kernel
    // (at commit and unmount), so it may lag the descriptors'; one larger than the file
    // system is damage.
    if geo.free_blocks_count > geo.blocks_count {
        return damaged(
            "ext4 superblock counts more free blocks than the file system has (run e2fsck)",
        );
    }
    // Every group's own metadata must be marked used: a readable bitmap that frees the
    // superblock, a descriptor table or an inode table is wrong, whatever its checksum says.
    let itable = inode_table_blocks(geo);
    for g in 0..geo.groups {
        let desc = descriptor(reader, geo, g)?;
        let start = group::meta_start(geo, g);
        let meta = [
            (
                "superblock and descriptor blocks",
                start,
                group::base_meta_blocks(geo, g),
            ),
            ("block bitmap", desc.block_bitmap, 1),
            ("inode bitmap", desc.inode_bitmap, 1),
            ("inode table", desc.inode_table, itable),
        ];
        for (what, block, n) in meta {
            let bytes = block * geo.block_size..(block + n) * geo.block_size;
            if free.any_free(&bytes) {
                return damaged(format!(
                    "ext4 block bitmap marks the {what} of group {g} free: the bitmaps do not \
                     match the volume (run e2fsck)"
                ));
            }
        }
    }
    // The superblock itself (bytes 1024..2048) and, with 1 KiB blocks, the boot block.
    if free.any_free(&(0..2048)) {
        return damaged("ext4 block bitmap marks the superblock free (run e2fsck)");
    }
    let f = &geo.features;
    let journal = if f.compat & Compat::HAS_JOURNAL == 0 {
        "none".to_owned()
    } else if geo.journal_inum != 0 {
        journal::check_internal(reader, geo, &free)?;
        format!("internal (inode {})", geo.journal_inum)
    } else {
        format!("external (device uuid {})", uuid_text(&geo.journal_uuid))
    };
    if f.compat & 0x10 != 0 {
        journal::check_resize_inode(reader, geo, &free)?;
    }
    if f.incompat & Incompat::MMP != 0 {
        journal::check_mmp(reader, geo, &free)?;
    }
    // Orphans: inodes deleted or truncated while still open, whose cleanup runs at the next
    // mount. Their blocks stay marked used in the bitmaps until then, so the free map is
    // conservative; the volume is trusted and the fact reported.
    let orphans = geo.last_orphan != 0 || f.ro_compat & RoCompat::ORPHAN_PRESENT != 0;

    let details = vec![
        ("type".to_owned(), f.generation().to_owned()),
        ("label".to_owned(), geo.label.clone()),
        ("uuid".to_owned(), uuid_text(&geo.uuid)),
        ("block_size".to_owned(), geo.block_size.to_string()),
        ("cluster_size".to_owned(), cluster.to_string()),
        ("blocks".to_owned(), geo.blocks_count.to_string()),
        ("groups".to_owned(), geo.groups.to_string()),
        ("uninit_groups".to_owned(), uninit_groups.to_string()),
        ("free_clusters".to_owned(), free_clusters.to_string()),
        (
            "superblock_free_blocks".to_owned(),
            geo.free_blocks_count.to_string(),
        ),
        ("journal".to_owned(), journal),
        ("orphans_pending".to_owned(), orphans.to_string()),
        ("features".to_owned(), f.names().join(" ")),
    ];
    Ok(FsUsage {
        fs: crate::ID,
        cluster_size: cluster,
        free,
        details,
    })
}
