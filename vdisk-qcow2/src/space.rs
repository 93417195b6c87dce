//! The host space map: what every host byte of a qcow2 holds, for the compactor.
//!
//! ```text
//!  header cluster, snapshot table, snapshot L1 tables,   FIXED (never moved, never freed)
//!  snapshot-only L2 tables and data, compressed and
//!  shared clusters, L2 tables shared with a snapshot,
//!  persistent bitmaps (directory, tables, data)
//!  active L1 table (one range), refcount table (one     Metadata { movable: true }
//!  range), each refcount block, each unshared L2 table
//!  each unshared standard data cluster of the active    BlockData(guest cluster)
//!  tables (COPIED on the entry and its L2 table)
//! ```

use std::collections::HashSet;
use std::ops::Range;

use vdisk_core::{BlockIndex, HostSpaceMap, HostUse, Result};

use crate::image::Qcow2Image;
use crate::l1;
use crate::l2::{self, Entry};

const MOVABLE: HostUse = HostUse::Metadata { movable: true };

impl Qcow2Image {
    /// Every host byte range and what holds it (see the module doc). Refused
    /// ([`vdisk_core::ErrorKind::InvalidImage`]) when a data cluster overlaps metadata or
    /// another cluster, or lies past the end of the file.
    pub fn host_map(&self) -> Result<HostSpaceMap> {
        let l = &self.layout;
        let cs = l.cluster_size;
        let mut used: Vec<(Range<u64>, HostUse)> = vec![(0..cs, HostUse::FIXED)];
        used.push((
            l.l1_offset..l.l1_offset + l.cluster_align(l.l1_bytes()),
            MOVABLE,
        ));
        used.push((
            l.reftable_offset..l.reftable_offset + l.reftable_bytes(),
            MOVABLE,
        ));
        used.extend(
            self.reftable
                .iter()
                .filter(|&&b| b != 0)
                .map(|&b| (b..b + cs, MOVABLE)),
        );
        if l.nb_snapshots > 0 {
            let end = l.snapshots_offset + l.cluster_align(self.snapshot_table_len);
            used.push((l.snapshots_offset..end, HostUse::FIXED));
        }
        // Persistent bitmaps: kept where they are.
        for (start, len, _) in crate::bitmap::host_ranges(&*self.file, l)? {
            used.push((start..start + l.cluster_align(len), HostUse::FIXED));
        }
        // The active tables: unshared L2 tables are movable, unshared clusters blocks.
        for (i, e) in self.l1.iter().enumerate() {
            if e.l2 == 0 {
                continue;
            }
            let table_use = if e.copied { MOVABLE } else { HostUse::FIXED };
            used.push((e.l2..e.l2 + cs, table_use));
            let base = i as u64 * l.l2_entries();
            for j in 0..l.l2_entries() {
                let guest = base + j;
                let entry = self.entry(guest);
                let Some((host, len)) = entry.host_range(cs) else {
                    continue;
                };
                let own = !self.pinned(guest);
                let r = host..l.cluster_align(host + len);
                let r = (r.start / cs * cs)..r.end;
                used.push(match own {
                    true => (r, HostUse::BlockData(BlockIndex(guest))),
                    false => (r, HostUse::FIXED),
                });
            }
        }
        // Snapshots: their L1 tables, and every cluster their L2 tables reach, fixed (the
        // active tables' claims on shared clusters were fixed already and merge with these).
        // Each distinct L2 table is read once, however many snapshot L1 entries name it: the
        // work is bounded by the file's size, not by how often a hostile image repeats one.
        let mut seen = HashSet::new();
        for s in &self.snapshots {
            used.push((
                s.l1_offset..s.l1_offset + l.cluster_align(s.l1_size * 8),
                HostUse::FIXED,
            ));
            let table = l1::read(
                &*self.file,
                l,
                s.l1_offset,
                s.l1_size,
                "a snapshot l1 table",
            )?;
            for e in table.iter().filter(|e| e.l2 != 0) {
                if !seen.insert(e.l2) {
                    continue;
                }
                used.push((e.l2..e.l2 + cs, HostUse::FIXED));
                for raw in l2::read_table(&*self.file, l, e.l2)? {
                    // A snapshot entry that does not decode could hold any cluster: no map.
                    let entry = Entry::decode(raw, l).map_err(|err| {
                        vdisk_core::Error::invalid(
                            format!("snapshot {}: {}; nothing was changed", s.id, err.message()),
                            e.l2,
                        )
                    })?;
                    if let Some((host, len)) = entry.host_range(cs) {
                        let start = host / cs * cs;
                        used.push((start..l.cluster_align(host + len), HostUse::FIXED));
                    }
                }
            }
        }
        HostSpaceMap::new(self.file.len()?, used)
    }
}
