//! An opened qcow2: the active L1 table and every allocated L2 table loaded at open (so the
//! allocation map is answered with no I/O), the guest view, and `vdisk info`'s facts.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use vdisk_core::{
    BlockDevice, BlockIndex, BlockState, DiskImage, Error, ErrorKind, GuestExtent, HostFile,
    HostOffset, ImageKind, Problem, Result, block_spans, check_range, push_extent,
};

use crate::compressed;
use crate::format::{Header, MAX_GUEST_CLUSTERS, MAX_LOADED_L2_ENTRIES, idx};
use crate::header::{Layout, inspect};
use crate::l1::{self, L1Entry};
use crate::l2::{self, Entry};
use crate::refcount;
use crate::snapshot::{self, Snapshot};

/// An opened qcow2 image, with its backing chain.
#[derive(Debug)]
pub struct Qcow2Image {
    pub(crate) file: Box<dyn HostFile>,
    #[allow(dead_code, reason = "kept for the compaction primitives")]
    pub(crate) writable: bool,
    pub(crate) header: Header,
    pub(crate) layout: Layout,
    /// The active L1 table.
    pub(crate) l1: Vec<L1Entry>,
    /// Each active L1 entry's L2 table (raw entries), `None` where unallocated.
    pub(crate) l2: Vec<Option<Box<[u64]>>>,
    /// The refcount table.
    pub(crate) reftable: Vec<u64>,
    /// Internal snapshots.
    pub(crate) snapshots: Vec<Snapshot>,
    /// Bytes of the snapshot table.
    pub(crate) snapshot_table_len: u64,
    /// The backing image (opened through core's gate), if any.
    pub(crate) parent: Option<Box<dyn DiskImage>>,
    pub(crate) parent_path: Option<PathBuf>,
    /// Warnings found at open, reported again by `check`.
    pub(crate) notes: Vec<Problem>,
    /// Entries of the allocation map ([`DiskImage::block_count`]), fixed at open.
    blocks: u64,
    /// The last compressed cluster inflated: (guest cluster, its bytes).
    inflated: Mutex<Option<(u64, Vec<u8>)>>,
}

impl Qcow2Image {
    /// Opens the image in `file` without its backing file: header, active L1 and L2 tables,
    /// refcount table and snapshot table, every entry checked. Never writes.
    pub(crate) fn open_unlinked(file: Box<dyn HostFile>, writable: bool) -> Result<Qcow2Image> {
        let (header, layout) = inspect(&*file)?;
        let l1 = l1::read(
            &*file,
            &layout,
            layout.l1_offset,
            layout.l1_size,
            "the l1 table",
        )?;
        let allocated = l1.iter().filter(|e| e.l2 != 0).count() as u64;
        if allocated.saturating_mul(layout.l2_entries()) > MAX_LOADED_L2_ENTRIES {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the image has {allocated} l2 tables of {} entries; this version loads at \
                     most {MAX_LOADED_L2_ENTRIES} entries (256 MiB) at open",
                    layout.l2_entries()
                ),
            ));
        }
        let mut l2 = Vec::with_capacity(l1.len());
        for (i, e) in l1.iter().enumerate() {
            if e.l2 == 0 {
                l2.push(None);
                continue;
            }
            let table = l2::read_table(&*file, &layout, e.l2)?;
            for (j, &raw) in table.iter().enumerate() {
                Entry::decode(raw, &layout).map_err(|err| {
                    Error::invalid(
                        format!(
                            "guest cluster {}: {}",
                            i as u64 * layout.l2_entries() + j as u64,
                            err.message()
                        ),
                        e.l2 + j as u64 * 8,
                    )
                })?;
            }
            l2.push(Some(table.into_boxed_slice()));
        }
        let reftable = refcount::read_table(&*file, &layout)?;
        let (snapshots, snapshot_table_len) = if layout.nb_snapshots > 0 {
            snapshot::read_table(&*file, &layout)?
        } else {
            (Vec::new(), 0)
        };
        // The guest clusters of the virtual size, and past it every cluster the L2 tables
        // address (qemu keeps saved VM state there), so their host space is kept.
        let per = layout.l2_entries();
        let mapped = l2
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, t)| {
                let last = t.as_ref()?.iter().rposition(|&raw| raw != 0)?;
                Some(i as u64 * per + last as u64 + 1)
            })
            .unwrap_or(0);
        let blocks = layout.guest_clusters().max(mapped);
        if blocks > MAX_GUEST_CLUSTERS {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the image has {blocks} guest clusters of {} bytes ({} bytes of virtual \
                     disk), more than the {MAX_GUEST_CLUSTERS} this version handles (4 TiB with \
                     64 KiB clusters, 128 TiB with 2 MiB clusters); nothing was changed",
                    layout.cluster_size,
                    blocks.saturating_mul(layout.cluster_size)
                ),
            ));
        }
        Ok(Qcow2Image {
            blocks,
            file,
            writable,
            header,
            layout,
            l1,
            l2,
            reftable,
            snapshots,
            snapshot_table_len,
            parent: None,
            parent_path: None,
            notes: Vec::new(),
            inflated: Mutex::new(None),
        })
    }

    /// The decoded L2 entry of guest cluster `cluster` (unallocated past the tables).
    pub(crate) fn entry(&self, cluster: u64) -> Entry {
        let per = self.layout.l2_entries();
        let table = usize::try_from(cluster / per)
            .ok()
            .and_then(|i| self.l2.get(i));
        match table {
            Some(Some(t)) => {
                let raw = t[idx(cluster % per)];
                // Every entry was decoded at open; a failure here cannot happen.
                Entry::decode(raw, &self.layout).unwrap_or(Entry::Unallocated)
            }
            _ => Entry::Unallocated,
        }
    }

    /// Whether the L2 table of guest cluster `cluster` has the COPIED flag in the L1 table
    /// (refcount one: no snapshot shares it).
    pub(crate) fn l2_copied(&self, cluster: u64) -> bool {
        let i = cluster / self.layout.l2_entries();
        usize::try_from(i)
            .ok()
            .and_then(|i| self.l1.get(i))
            .is_some_and(|e| e.copied)
    }

    /// Whether guest `cluster` holds host space that only moves whole and is never freed:
    /// a compressed cluster, or a cluster (or its L2 table) shared with an internal snapshot
    /// (no COPIED flag). The one definition the allocation map, the guest extents and the host
    /// space map share.
    pub(crate) fn pinned(&self, cluster: u64) -> bool {
        match self.entry(cluster) {
            Entry::Compressed { .. } => true,
            Entry::Standard { copied, .. }
            | Entry::Zero {
                host: Some(_),
                copied,
            } => !copied || !self.l2_copied(cluster),
            Entry::Unallocated | Entry::Zero { host: None, .. } => false,
        }
    }

    /// Reads host bytes at `offset`; bytes past the end of the file read as zeros (a data
    /// cluster's tail qemu has not written yet).
    fn read_host(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = self.file.len()?;
        let n = usize::try_from(len.saturating_sub(offset)).unwrap_or(usize::MAX);
        let n = n.min(buf.len());
        if n > 0 {
            self.file.read_at(&mut buf[..n], offset)?;
        }
        buf[n..].fill(0);
        Ok(())
    }

    /// Reads from the backing image (zeros past its end, or without one).
    fn read_backing(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let Some(parent) = &self.parent else {
            buf.fill(0);
            return Ok(());
        };
        let size = parent.size();
        let n = usize::try_from(size.saturating_sub(offset)).unwrap_or(usize::MAX);
        let n = n.min(buf.len());
        if n > 0 {
            parent.read_at(&mut buf[..n], offset)?;
        }
        buf[n..].fill(0);
        Ok(())
    }

    /// Reads `part` at `within` of compressed guest `cluster`.
    fn read_compressed(
        &self,
        cluster: u64,
        offset: u64,
        len: u64,
        part: &mut [u8],
        within: u64,
    ) -> Result<()> {
        let mut cache = self.inflated.lock().unwrap_or_else(|p| p.into_inner());
        if cache.as_ref().is_none_or(|(c, _)| *c != cluster) {
            let mut stream = vec![0u8; idx(len)];
            self.read_host(&mut stream, offset)?;
            let mut out = vec![0u8; idx(self.layout.cluster_size)];
            compressed::inflate(&stream, &mut out, offset)?;
            *cache = Some((cluster, out));
        }
        let (_, data) = cache.as_ref().expect("just filled");
        let w = idx(within);
        part.copy_from_slice(&data[w..w + part.len()]);
        Ok(())
    }

    /// Inflates the compressed stream of `len` bytes at `offset` (for `check`).
    pub(crate) fn inflate_at(&self, offset: u64, len: u64) -> Result<()> {
        let mut stream = vec![0u8; idx(len)];
        self.read_host(&mut stream, offset)?;
        let mut out = vec![0u8; idx(self.layout.cluster_size)];
        compressed::inflate(&stream, &mut out, offset)
    }

    /// The path of the backing file as the header names it.
    pub fn backing_name(&self) -> Option<&str> {
        self.layout.backing.as_deref()
    }
}

impl BlockDevice for Qcow2Image {
    fn size(&self) -> u64 {
        self.layout.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.layout.size, offset, buf.len())?;
        // Standard clusters that follow each other in the file too are read in one request:
        // (start in `buf`, host offset, length) of the run being gathered.
        let mut run: Option<(usize, u64, usize)> = None;
        for span in block_spans(offset, buf.len(), self.layout.cluster_size) {
            let entry = self.entry(span.block);
            if let Entry::Standard { host, .. } = entry {
                let at = host + span.within;
                match &mut run {
                    Some((_, h, n)) if *h + *n as u64 == at => *n += span.buf.len(),
                    _ => {
                        if let Some((b, h, n)) = run.take() {
                            self.read_host(&mut buf[b..b + n], h)?;
                        }
                        run = Some((span.buf.start, at, span.buf.len()));
                    }
                }
                continue;
            }
            if let Some((b, h, n)) = run.take() {
                self.read_host(&mut buf[b..b + n], h)?;
            }
            let part = &mut buf[span.buf];
            match entry {
                Entry::Standard { .. } => {}
                Entry::Zero { .. } => part.fill(0),
                Entry::Unallocated => self.read_backing(part, span.offset)?,
                Entry::Compressed { offset, len } => {
                    self.read_compressed(span.block, offset, len, part, span.within)?;
                }
            }
        }
        if let Some((b, h, n)) = run {
            self.read_host(&mut buf[b..b + n], h)?;
        }
        Ok(())
    }
}

impl DiskImage for Qcow2Image {
    fn format(&self) -> &'static str {
        "qcow2"
    }

    fn kind(&self) -> ImageKind {
        match self.layout.backing {
            Some(_) => ImageKind::Differencing,
            None => ImageKind::Dynamic,
        }
    }

    fn block_size(&self) -> u64 {
        self.layout.cluster_size
    }

    /// The guest clusters of the virtual size, and past it every cluster the L2 tables
    /// address (qemu keeps saved VM state there), so their host space is kept.
    fn block_count(&self) -> u64 {
        self.blocks
    }

    /// Standard clusters (and preallocated zero clusters) whose entry and L2 table both have
    /// the COPIED flag are allocated at their host cluster; zero clusters without one are
    /// [`BlockState::Zero`]; no entry (or no L2 table) is [`BlockState::Unallocated`].
    /// Compressed clusters, and clusters shared with a snapshot (no COPIED flag on the entry
    /// or on its L2 table), are [`BlockState::Pinned`]: compaction keeps them where they are
    /// (the host space map calls their clusters fixed metadata).
    fn block_state(&self, block: BlockIndex) -> Result<BlockState> {
        if block.0 >= self.block_count() {
            return Err(Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "block {block} is past the image's {} blocks",
                    self.block_count()
                ),
            ));
        }
        let pinned = self.pinned(block.0);
        Ok(match self.entry(block.0) {
            Entry::Unallocated => BlockState::Unallocated,
            Entry::Zero { host: None, .. } => BlockState::Zero,
            Entry::Zero {
                host: Some(host), ..
            }
            | Entry::Standard { host, .. } => match pinned {
                false => BlockState::Allocated {
                    host: HostOffset(host),
                },
                true => BlockState::Pinned {
                    host: HostOffset(host),
                },
            },
            Entry::Compressed { offset, .. } => BlockState::Pinned {
                host: HostOffset(offset),
            },
        })
    }

    fn host_file(&self) -> &dyn HostFile {
        &*self.file
    }

    /// Standard clusters are their data in order; zero clusters (preallocated or not) read
    /// zeros; compressed clusters, and clusters shared with a snapshot (no COPIED flag on the
    /// entry or its L2 table), are opaque: kept whole where they are.
    fn guest_extents(
        &self,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<(std::ops::Range<u64>, GuestExtent)>> {
        let size = self.layout.size;
        let cs = self.layout.cluster_size;
        let range = range.start.min(size)..range.end.min(size);
        let mut out: Vec<(std::ops::Range<u64>, GuestExtent)> = Vec::new();
        let mut at = range.start;
        while at < range.end {
            let cluster = at / cs;
            let within = at % cs;
            let end = ((cluster + 1) * cs).min(range.end);
            let pinned = self.pinned(cluster);
            let kind = match self.entry(cluster) {
                Entry::Unallocated if self.parent.is_some() || self.layout.backing.is_some() => {
                    GuestExtent::Backing
                }
                Entry::Standard { host, .. }
                | Entry::Zero {
                    host: Some(host), ..
                } if pinned => GuestExtent::Opaque {
                    host: host..host + cs,
                },
                Entry::Unallocated | Entry::Zero { .. } => GuestExtent::Zero,
                Entry::Standard { host, .. } => GuestExtent::Data {
                    host: Some(HostOffset(host + within)),
                },
                Entry::Compressed { offset, len } => GuestExtent::Opaque {
                    host: offset..offset + len,
                },
            };
            push_extent(&mut out, at..end, kind);
            at = end;
        }
        Ok(out)
    }

    fn details(&self) -> Vec<(String, String)> {
        crate::info::details(self)
    }

    fn check(&self) -> Result<Vec<Problem>> {
        let mut problems = self.notes.clone();
        problems.extend(crate::check::check(self)?);
        Ok(problems)
    }

    fn parent(&self) -> Option<&dyn DiskImage> {
        self.parent.as_deref()
    }

    fn host_space(&self) -> Result<vdisk_core::HostSpaceMap> {
        self.host_map()
    }

    /// Refused when the check finds an error (see [`crate::compact::refuse_damaged`]), or a
    /// cluster compaction may free or move has a stored refcount other than one (see
    /// [`crate::compact::verify_exclusive`]).
    fn compaction_allowed(&self) -> Result<()> {
        crate::compact::refusal(&self.layout)?;
        crate::compact::refuse_damaged(self)?;
        crate::compact::verify_exclusive(self)
    }

    fn as_compactable(&mut self) -> Result<&mut dyn vdisk_core::Compactable> {
        self.as_compactable_ref()?;
        Ok(self)
    }

    /// Refused while persistent dirty bitmaps exist (see [`crate::compact`]).
    fn as_compactable_ref(&self) -> Result<&dyn vdisk_core::Compactable> {
        crate::compact::refusal(&self.layout)?;
        Ok(self)
    }

    fn parent_path(&self) -> Option<&Path> {
        self.parent_path.as_deref()
    }
}
