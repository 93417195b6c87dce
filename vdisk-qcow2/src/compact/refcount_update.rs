//! Refcount updates in qcow2's crash order. qcow2 has no journal; its rule is that a refcount
//! too high (a leak) is harmless and one too low is corruption. So every change raises the
//! refcounts of the places it is about to use first (durably), and lowers those of the places
//! it stopped using last (durably). Each update writes only the 512-byte sectors of a refcount
//! block that differ: whichever of them survive a crash, every entry reads either its old or
//! its new value.

use std::collections::BTreeMap;

use vdisk_core::{Error, ErrorKind, HostFile, Result};

use crate::header::Layout;
use crate::refcount;

/// The refcount table and the refcount blocks read so far, as they are on disk.
#[derive(Debug)]
pub(crate) struct RefcountUpdate {
    layout: Layout,
    /// Where each refcount block lies (0: none), as the file's refcount table says.
    table: Vec<u64>,
    /// Refcount blocks read, by table index, as on disk.
    blocks: BTreeMap<u64, Vec<u8>>,
}

impl RefcountUpdate {
    /// Reads the refcount table of the image in `file` (laid out as `layout` says). Every
    /// other call takes the same file.
    pub fn load(file: &dyn HostFile, layout: &Layout) -> Result<RefcountUpdate> {
        let table = refcount::read_table(file, layout)?;
        Ok(RefcountUpdate {
            layout: layout.clone(),
            table,
            blocks: BTreeMap::new(),
        })
    }

    /// The refcount table as on disk.
    pub fn table(&self) -> &[u64] {
        &self.table
    }

    /// The table index and entry of host cluster `cluster`.
    fn site(&self, cluster: u64) -> (u64, u64) {
        let per = self.layout.refblock_entries();
        (cluster / per, cluster % per)
    }

    /// The refcount block at table index `ti`, read on first use; `None` where the table has
    /// no block.
    fn block(&mut self, file: &dyn HostFile, ti: u64) -> Result<Option<&mut Vec<u8>>> {
        let at = match usize::try_from(ti).ok().and_then(|i| self.table.get(i)) {
            Some(&at) if at != 0 => at,
            _ => return Ok(None),
        };
        if !self.blocks.contains_key(&ti) {
            // A cluster is at most 2 MiB (cluster_bits <= 21, checked at open).
            let mut buf = vec![0u8; usize::try_from(self.layout.cluster_size).unwrap_or(0)];
            file.read_at(&mut buf, at)?;
            self.blocks.insert(ti, buf);
        }
        Ok(self.blocks.get_mut(&ti))
    }

    /// The stored refcount of host cluster `cluster` (0 where no block covers it).
    pub fn get(&mut self, file: &dyn HostFile, cluster: u64) -> Result<u64> {
        let (ti, i) = self.site(cluster);
        let order = self.layout.refcount_order;
        Ok(self
            .block(file, ti)?
            .and_then(|b| refcount::get(b, order, i))
            .unwrap_or(0))
    }

    /// Sets the refcount of each `(cluster, value)`, writing the changed sectors of each
    /// refcount block, then syncs. Refused before any write, changing nothing, when a cluster
    /// has no refcount block (this version does not allocate new ones) or a value does not fit
    /// the refcount width.
    pub fn set(&mut self, file: &dyn HostFile, changes: &[(u64, u64)]) -> Result<()> {
        let order = self.layout.refcount_order;
        let mut next: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for &(cluster, value) in changes {
            let (ti, i) = self.site(cluster);
            if let std::collections::btree_map::Entry::Vacant(slot) = next.entry(ti) {
                let Some(block) = self.block(file, ti)? else {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "host cluster {cluster} has no refcount block, and this version \
                             does not add refcount blocks; nothing was changed"
                        ),
                    ));
                };
                slot.insert(block.clone());
            }
            let block = next.get_mut(&ti).expect("just inserted");
            refcount::set(block, order, i, value).ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    format!("refcount {value} of host cluster {cluster} does not fit"),
                )
            })?;
        }
        for (ti, new) in next {
            let at = self.table[usize::try_from(ti).expect("a block read above")];
            let old = self.blocks.get(&ti).expect("read above");
            write_changed_sectors(file, at, old, &new)?;
            self.blocks.insert(ti, new);
        }
        file.sync()
    }

    /// Points refcount table entry `ti` at `to` (one 8-byte write), syncs, and takes `to` as
    /// the block's place. The block at `to` must already be a durable copy of the old one.
    pub fn repoint(&mut self, file: &dyn HostFile, ti: u64, to: u64) -> Result<()> {
        let at = self.layout.reftable_offset + ti * 8;
        file.write_at(&to.to_be_bytes(), at)?;
        file.sync()?;
        if let Some(e) = usize::try_from(ti).ok().and_then(|i| self.table.get_mut(i)) {
            *e = to;
        }
        Ok(())
    }
}

/// Writes the 512-byte sectors of `new` that differ from `old` (the bytes at `at` now), each
/// in one write. The caller syncs.
pub(crate) fn write_changed_sectors(
    file: &dyn HostFile,
    at: u64,
    old: &[u8],
    new: &[u8],
) -> Result<()> {
    for (k, (o, n)) in old.chunks(512).zip(new.chunks(512)).enumerate() {
        if o != n {
            file.write_at(n, at + k as u64 * 512)?;
        }
    }
    Ok(())
}
