//! Creating images, as `qemu-img create -f qcow2` does: version 3, 16-bit refcounts, the
//! cluster size asked for (64 KiB by default), no preallocation.
//!
//! ```text
//!   cluster 0          header (112 bytes), backing-format extension, end marker, backing name
//!   cluster 1..        refcount table (enough clusters for the refcount blocks)
//!   next               refcount blocks (covering every cluster written here)
//!   next               the L1 table, all zeros (no L2 table yet)
//! ```
//!
//! A child image (`CreateSpec::differencing`) names its backing file by the path given
//! (relative to the child's folder when it lies there), records its format in the
//! backing-format extension under qemu's name (`vpc` for a VHD), and takes its size. The
//! backing file may be in any format of `CreateSpec::registry` that a qcow2 can name (qcow2,
//! VHD, VHDX, VDI), as `qemu-img create -f qcow2 -b base -F <format>` makes it; it is opened
//! through core's gate ([`vdisk_core::parent::open_named_parent`]).

use std::path::{Path, PathBuf};

use vdisk_core::parent::{MAX_CHAIN_DEPTH, open_named_parent};
use vdisk_core::{
    ChainContext, CreateSpec, Error, ErrorKind, HostFile, ImageKind, OpenOptions, ParentPolicy,
    Result,
};
use zerocopy::byteorder::big_endian::{U32, U64};
use zerocopy::{FromZeros, IntoBytes};

use crate::chain::{BACKING_FORMATS, qemu_format_name};
use crate::format::{
    EXT_BACKING_FORMAT, HEADER_LEN, Header, MAGIC, MAX_BACKING_NAME, MAX_CLUSTER_BITS,
    MAX_GUEST_CLUSTERS, MAX_L1_BYTES, MIN_CLUSTER_BITS, idx,
};
use crate::image::Qcow2Image;
use crate::refcount;

/// Cluster size when the caller does not choose one (qemu's default).
const DEFAULT_CLUSTER_SIZE: u64 = 64 << 10;
/// Refcount order written (16-bit refcounts, qemu's default).
const REFCOUNT_ORDER: u32 = 4;

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// Checks what can be checked of `spec` without touching a file.
pub(crate) fn check_spec(spec: &CreateSpec) -> Result<()> {
    if let Some(s) = spec.logical_sector_size.filter(|&s| s != 512) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("qcow2 images have 512-byte sectors; {s}-byte sectors are not possible"),
        ));
    }
    let cluster_size = spec.block_size.unwrap_or(DEFAULT_CLUSTER_SIZE);
    cluster_bits(cluster_size)?;
    match spec.kind {
        ImageKind::Fixed => Err(Error::new(
            ErrorKind::Unsupported,
            "fixed (preallocated) qcow2 images are not supported; create a dynamic one",
        )),
        ImageKind::Differencing if spec.parent.is_none() || spec.path.is_none() => Err(invalid(
            "a differencing image needs its parent's path and its own path".to_string(),
        )),
        ImageKind::Differencing => Ok(()),
        _ => l1_entries(spec.size, cluster_size).map(|_| ()),
    }
}

/// log2 of `cluster_size`, which must be a power of two from 512 bytes to 2 MiB.
fn cluster_bits(cluster_size: u64) -> Result<u32> {
    let bits = cluster_size.trailing_zeros();
    if !cluster_size.is_power_of_two() || !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&bits) {
        return Err(invalid(format!(
            "a cluster size of {cluster_size} bytes is not a power of two from 512 bytes to 2 MiB"
        )));
    }
    Ok(bits)
}

/// L1 entries for `size` bytes in `cluster_size` clusters, within qemu's limit.
fn l1_entries(size: u64, cluster_size: u64) -> Result<u64> {
    if size == 0 || !size.is_multiple_of(512) {
        return Err(invalid(format!(
            "a qcow2 holds whole 512-byte sectors and at least one; {size} bytes were asked for"
        )));
    }
    if size.div_ceil(cluster_size) > MAX_GUEST_CLUSTERS {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{size} bytes are more than the {MAX_GUEST_CLUSTERS} clusters of \
                 {cluster_size} bytes vdisk handles in a qcow2 (4 TiB with 64 KiB clusters, \
                 128 TiB with 2 MiB clusters)"
            ),
        ));
    }
    let per_l2 = cluster_size / 8 * cluster_size;
    let entries = size.div_ceil(per_l2);
    if entries * 8 > MAX_L1_BYTES {
        return Err(invalid(format!(
            "{size} bytes need an l1 table of {entries} entries, more than the {} qemu allows \
             with {cluster_size}-byte clusters",
            MAX_L1_BYTES / 8
        )));
    }
    Ok(entries)
}

/// Creates an image as `spec` says in the empty `file`.
pub(crate) fn create(file: Box<dyn HostFile>, spec: &CreateSpec) -> Result<Qcow2Image> {
    check_spec(spec)?;
    if file.len()? != 0 {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            "the file to create the image in is not empty",
        ));
    }
    let cluster_size = spec.block_size.unwrap_or(DEFAULT_CLUSTER_SIZE);
    if spec.kind != ImageKind::Differencing {
        write_new(&*file, spec.size, cluster_size, None)?;
        return Qcow2Image::open_with(file, &OpenOptions::read_only());
    }
    let (Some(parent_path), Some(child_path)) = (&spec.parent, &spec.path) else {
        return Err(invalid(
            "a differencing image needs its parent's path and its own path".to_string(),
        ));
    };
    let parent = open_named_parent(spec, &crate::DRIVER)?.image;
    let format = qemu_format_name(parent.format());
    if !BACKING_FORMATS.contains(&format) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the parent is a {} image, which a qcow2 cannot name as its backing file \
                 (qcow2, vpc, vhdx and vdi can be)",
                parent.format()
            ),
        )
        .with_path(parent_path));
    }
    let depth = std::iter::successors(Some(&*parent), |p| p.parent()).count();
    if depth >= MAX_CHAIN_DEPTH {
        return Err(invalid(format!(
            "{} heads a chain of {depth} images; a child would make it deeper than the \
             {MAX_CHAIN_DEPTH} vdisk opens",
            parent_path.display()
        )));
    }
    let name = backing_name(parent_path, child_path)?;
    write_new(&*file, parent.size(), cluster_size, Some((&name, format)))?;
    let mut opts = OpenOptions::read_only().with_parents(ParentPolicy {
        explicit: Some(parent_path.clone()),
        allowed_dirs: spec.parent_dirs.clone(),
    });
    if let Some(registry) = &spec.registry {
        opts = opts.with_registry(registry.clone());
    }
    opts.chain = ChainContext::root(child_path);
    Qcow2Image::open_with(file, &opts)
}

/// The backing file name to store: the parent's file name when it lies in the child's
/// folder, else its absolute path.
fn backing_name(parent: &Path, child: &Path) -> Result<String> {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (parent, child) = (absolute(parent), absolute(child));
    let same_dir = parent.parent() == child.parent();
    let name = match (same_dir, parent.file_name()) {
        (true, Some(n)) => PathBuf::from(n),
        _ => parent.clone(),
    };
    let name = name.to_str().map(str::to_string).ok_or_else(|| {
        invalid(format!(
            "the parent path {} is not valid UTF-8, which a qcow2 cannot store",
            parent.display()
        ))
    })?;
    if name.len() > MAX_BACKING_NAME as usize {
        return Err(invalid(format!(
            "the parent path is {} bytes, more than the 1023 a qcow2 stores",
            name.len()
        )));
    }
    Ok(name)
}

/// Writes a new image of `size` bytes: header (and backing file), refcount table and
/// blocks, an empty L1 table; then syncs.
fn write_new(
    file: &dyn HostFile,
    size: u64,
    cluster_size: u64,
    backing: Option<(&str, &str)>,
) -> Result<()> {
    let bits = cluster_bits(cluster_size)?;
    let l1_size = l1_entries(size, cluster_size)?;
    let cs = cluster_size;
    let l1_clusters = (l1_size * 8).div_ceil(cs);
    let per_block = (cs * 8) >> REFCOUNT_ORDER;
    // The refcount table and blocks cover every cluster written, themselves included.
    let (mut table, mut blocks) = (1u64, 1u64);
    loop {
        let total = 1 + table + blocks + l1_clusters;
        let need_blocks = total.div_ceil(per_block);
        let need_table = (need_blocks * 8).div_ceil(cs);
        if need_blocks <= blocks && need_table <= table {
            break;
        }
        blocks = blocks.max(need_blocks);
        table = table.max(need_table);
    }
    let total = 1 + table + blocks + l1_clusters;
    let reftable_at = cs;
    let blocks_at = reftable_at + table * cs;
    let l1_at = blocks_at + blocks * cs;

    let mut cluster0 = vec![0u8; idx(cs)];
    let mut h = Header::new_zeroed();
    h.magic = MAGIC;
    h.version = U32::new(3);
    h.cluster_bits = U32::new(bits);
    h.size = U64::new(size);
    h.l1_size = U32::new(u32::try_from(l1_size).map_err(|_| invalid("l1 too large".into()))?);
    h.l1_table_offset = U64::new(l1_at);
    h.refcount_table_offset = U64::new(reftable_at);
    h.refcount_table_clusters =
        U32::new(u32::try_from(table).map_err(|_| invalid("refcount table too large".into()))?);
    h.refcount_order = U32::new(REFCOUNT_ORDER);
    h.header_length = U32::new(u32::try_from(HEADER_LEN).unwrap_or(112));
    let at = idx(HEADER_LEN);
    if let Some((name, fmt)) = backing {
        let fmt = fmt.as_bytes();
        let ext_len = 8 + fmt.len().next_multiple_of(8);
        let name_at = at + ext_len + 8;
        if name_at + name.len() > cluster0.len() {
            return Err(invalid(format!(
                "the backing file name ({} bytes) does not fit in a {cs}-byte cluster",
                name.len()
            )));
        }
        cluster0[at..at + 4].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        cluster0[at + 4..at + 8]
            .copy_from_slice(&u32::try_from(fmt.len()).unwrap_or(0).to_be_bytes());
        cluster0[at + 8..at + 8 + fmt.len()].copy_from_slice(fmt);
        // The end marker (zeros) follows at `at + ext_len`; then the name.
        cluster0[name_at..name_at + name.len()].copy_from_slice(name.as_bytes());
        h.backing_file_offset = U64::new(name_at as u64);
        h.backing_file_size = U32::new(u32::try_from(name.len()).unwrap_or(0));
    }
    cluster0[..idx(HEADER_LEN)].copy_from_slice(h.as_bytes());

    let mut reftable = vec![0u8; idx(table * cs)];
    for b in 0..blocks {
        let off = blocks_at + b * cs;
        reftable[idx(b * 8)..idx(b * 8 + 8)].copy_from_slice(&off.to_be_bytes());
    }
    file.set_len(total * cs)?;
    for b in 0..blocks {
        let mut block = vec![0u8; idx(cs)];
        for c in b * per_block..((b + 1) * per_block).min(total) {
            refcount::set(&mut block, REFCOUNT_ORDER, c - b * per_block, 1);
        }
        file.write_at(&block, blocks_at + b * cs)?;
    }
    file.write_at(&reftable, reftable_at)?;
    file.write_at(&cluster0, 0)?;
    file.sync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk_core::{BlockDevice, DiskImage, MemFile};

    #[test]
    fn a_created_image_opens_reads_zeros_and_its_refcounts_check_clean() {
        for (size, cs) in [
            (8u64 << 20, 65536u64),
            (64 << 20, 512),
            (1 << 30, 4096),
            (512, 2 << 20),
        ] {
            let file = MemFile::new();
            let spec = CreateSpec::new(ImageKind::Dynamic, size).block_size(cs);
            let image = create(Box::new(file), &spec).unwrap();
            assert_eq!(image.size(), size);
            assert_eq!(image.block_size(), cs);
            assert!(
                image.check().unwrap().is_empty(),
                "{size} {cs}: {:?}",
                image.check()
            );
            let mut buf = vec![1u8; idx(4096.min(size))];
            image.read_at(&mut buf, 0).unwrap();
            assert!(buf.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn bad_specs_are_refused_before_any_file_is_touched() {
        assert!(
            check_spec(&CreateSpec::new(ImageKind::Dynamic, 8 << 20).block_size(1000)).is_err()
        );
        assert!(
            check_spec(&CreateSpec::new(ImageKind::Dynamic, 8 << 20).block_size(4 << 20)).is_err()
        );
        assert!(check_spec(&CreateSpec::new(ImageKind::Dynamic, 100)).is_err());
        assert!(check_spec(&CreateSpec::new(ImageKind::Fixed, 8 << 20)).is_err());
        // More clusters than an image may have (4 TiB at 64 KiB clusters is the most).
        assert!(check_spec(&CreateSpec::new(ImageKind::Dynamic, 4 << 40)).is_ok());
        let err = check_spec(&CreateSpec::new(ImageKind::Dynamic, (4 << 40) + 512)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        assert!(check_spec(&CreateSpec::new(ImageKind::Dynamic, 1 << 60).block_size(512)).is_err());
    }
}
