//! `vdisk check`: the refcount of every host cluster rebuilt from every reference (header,
//! L1 tables, L2 tables, data and compressed clusters, snapshots, the refcount table and
//! blocks) and compared with the stored one, as `qemu-img check` does. A stored refcount
//! below the references is corruption (a write would free a cluster still in use); above them
//! a leak (harmless space). Clusters claimed by two structures that cannot share, COPIED flags
//! that disagree with the refcount, and references past the end of the file are reported too.

use std::collections::BTreeMap;

use vdisk_core::{Error, ErrorKind, Problem, Result};

use crate::format::{AUTOCLEAR_BITMAPS, MAX_CHECKED_CLUSTERS, idx};
use crate::image::Qcow2Image;
use crate::l1::{self, L1Entry};
use crate::l2::{self, Entry};
use crate::refcount::Refcounts;

/// What references a host cluster, for overlap reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Free,
    /// Header, L1 tables, the refcount table and blocks, the snapshot table, bitmaps: one
    /// owner each (an index into [`META_NAMES`], so a cluster's use takes two bytes).
    Meta(u8),
    L2,
    Data,
    Compressed,
}

/// The names of the [`Use::Meta`] kinds.
const META_NAMES: [&str; 9] = [
    "the header cluster",
    "the l1 table",
    "the refcount table",
    "a refcount block",
    "the snapshot table",
    "a snapshot l1 table",
    "the bitmap directory",
    "a bitmap table",
    "a bitmap data cluster",
];

/// The [`Use::Meta`] of the structure named `name` (one of [`META_NAMES`]).
fn meta(name: &str) -> Use {
    let i = META_NAMES.iter().position(|n| *n == name).unwrap_or(0);
    Use::Meta(u8::try_from(i).unwrap_or(0))
}

struct Rebuild {
    cluster_size: u64,
    file_clusters: u64,
    counts: Vec<u32>,
    uses: Vec<Use>,
    problems: Vec<Problem>,
}

impl Rebuild {
    /// Adds one reference to every cluster of `start..start + len`, used as `what`.
    fn add(&mut self, start: u64, len: u64, what: Use, name: &str) {
        self.add_times(start, len, what, name, 1);
    }

    /// Adds `times` references to every cluster of `start..start + len`, used as `what` (an
    /// L2 table that `times` L1 entries name references its clusters that often).
    fn add_times(&mut self, start: u64, len: u64, what: Use, name: &str, times: u32) {
        if len == 0 {
            return;
        }
        let first = start / self.cluster_size;
        let last = (start.saturating_add(len) - 1) / self.cluster_size;
        for c in first..=last {
            if c >= self.file_clusters {
                self.problems.push(Problem::error(
                    format!("{name} at {start:#x} lies past the end of the file"),
                    Some(start),
                ));
                return;
            }
            let i = idx(c);
            let prev = self.uses[i];
            let clash = match (prev, what) {
                (Use::Free, _) => false,
                (Use::Meta(_), _) | (_, Use::Meta(_)) => true,
                (a, b) => a != b,
            };
            if clash {
                let prev_name = match prev {
                    Use::Meta(n) => META_NAMES[usize::from(n)],
                    Use::L2 => "an l2 table",
                    Use::Data => "a data cluster",
                    Use::Compressed => "a compressed cluster",
                    Use::Free => "",
                };
                self.problems.push(Problem::error(
                    format!(
                        "{name} at {start:#x} overlaps {prev_name} in host cluster {:#x}",
                        c * self.cluster_size
                    ),
                    Some(c * self.cluster_size),
                ));
            }
            self.uses[i] = what;
            self.counts[i] = self.counts[i].saturating_add(times);
        }
    }
}

/// Every problem of `image`'s refcounts and references, and every compressed cluster of the
/// active tables that does not inflate.
pub(crate) fn check(image: &Qcow2Image) -> Result<Vec<Problem>> {
    check_with(image, true)
}

/// Every problem of `image`'s refcounts and references; with `inflate`, also every compressed
/// cluster of the active tables that does not inflate. Compaction asks without: it keeps
/// compressed clusters where they are and never reads them, so a broken stream cannot make
/// it lose anything, while inflating them all costs a read of every one.
pub(crate) fn check_with(image: &Qcow2Image, inflate: bool) -> Result<Vec<Problem>> {
    let l = &image.layout;
    let file = &*image.file;
    let cs = l.cluster_size;
    let file_clusters = file.len()?.div_ceil(cs);
    if file_clusters > MAX_CHECKED_CLUSTERS {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the file has {file_clusters} clusters; this version checks the refcounts of at \
                 most {MAX_CHECKED_CLUSTERS}"
            ),
        ));
    }
    let mut r = Rebuild {
        cluster_size: cs,
        file_clusters,
        counts: vec![0; idx(file_clusters)],
        uses: vec![Use::Free; idx(file_clusters)],
        problems: Vec::new(),
    };
    r.add(0, cs, meta("the header cluster"), "the header cluster");
    r.add(
        l.l1_offset,
        l.l1_bytes(),
        meta("the l1 table"),
        "the l1 table",
    );
    r.add(
        l.reftable_offset,
        l.reftable_bytes(),
        meta("the refcount table"),
        "the refcount table",
    );
    for (i, &b) in image.reftable.iter().enumerate() {
        if b != 0 {
            r.add(
                b,
                cs,
                meta("a refcount block"),
                &format!("refcount block {i}"),
            );
        }
    }
    if l.nb_snapshots > 0 {
        r.add(
            l.snapshots_offset,
            image.snapshot_table_len,
            meta("the snapshot table"),
            "the snapshot table",
        );
    }
    // Persistent bitmaps count only while the autoclear bit says they are consistent (qemu
    // ignores the extension otherwise, and their clusters are then leaks).
    if l.autoclear & AUTOCLEAR_BITMAPS != 0 {
        for (start, len, what) in crate::bitmap::host_ranges(file, l)? {
            r.add(start, len, meta(what), what);
        }
    }
    let mut refcounts = Refcounts::new(file, l, &image.reftable);
    // The active tables, then the snapshots'.
    walk(image, &image.l1, &mut r, "active", true, &mut refcounts)?;
    walk_snapshots(image, &mut r)?;
    // Every compressed cluster of the active tables must inflate to a whole cluster: a guest
    // read of it would fail otherwise.
    let inflated = if inflate { l.guest_clusters() } else { 0 };
    for guest in 0..inflated {
        if let Entry::Compressed { offset, len } = image.entry(guest) {
            match image.inflate_at(offset, len) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::InvalidImage => r.problems.push(Problem::error(
                    format!("guest cluster {guest}: {}", e.message()),
                    Some(offset),
                )),
                Err(e) => return Err(e),
            }
        }
    }
    // Stored refcounts against references, for every cluster of the file and any refcount
    // block entry past it.
    let mut problems = std::mem::take(&mut r.problems);
    let per = l.refblock_entries();
    let covered = image.reftable.len() as u64 * per;
    for c in 0..file_clusters.max(covered.min(file_clusters + per)) {
        let want = u64::from(r.counts.get(idx(c)).copied().unwrap_or(0));
        let have = refcounts.get(c)?;
        let at = c * cs;
        if have < want {
            problems.push(Problem::error(
                format!(
                    "host cluster {at:#x} has refcount {have} but {want} references: a write \
                     could free it while in use (run `qemu-img check -r all`)"
                ),
                Some(at),
            ));
        } else if have > want {
            let past = if c >= file_clusters {
                " (past the end of the file)"
            } else {
                ""
            };
            problems.push(Problem::warning(
                format!(
                    "host cluster {at:#x}{past} has refcount {have} but {want} references: \
                     leaked space"
                ),
                Some(at),
            ));
        }
    }
    Ok(problems)
}

/// Adds the references of one L1 table's L2 tables and clusters; for the active table, also
/// checks the COPIED flags against the stored refcounts.
fn walk(
    image: &Qcow2Image,
    table: &[L1Entry],
    r: &mut Rebuild,
    name: &str,
    active: bool,
    refcounts: &mut Refcounts<'_>,
) -> Result<()> {
    let l = &image.layout;
    let cs = l.cluster_size;
    for (i, e) in table.iter().enumerate() {
        if e.l2 == 0 {
            continue;
        }
        r.add(
            e.l2,
            cs,
            Use::L2,
            &format!("l2 table {i} of the {name} l1 table"),
        );
        if active {
            copied_matches(e.copied, refcounts.get(e.l2 / cs)?, e.l2, "l2 table", r);
        }
        let entries = match (active, image.l2.get(i)) {
            (true, Some(Some(t))) => t.to_vec(),
            _ => l2::read_table(&*image.file, l, e.l2)?,
        };
        for (j, raw) in entries.into_iter().enumerate() {
            let guest = i as u64 * l.l2_entries() + j as u64;
            let entry = match Entry::decode(raw, l) {
                Ok(entry) => entry,
                Err(err) => {
                    r.problems.push(Problem::error(
                        format!("guest cluster {guest} ({name}): {}", err.message()),
                        Some(e.l2 + j as u64 * 8),
                    ));
                    continue;
                }
            };
            let what = match entry {
                Entry::Compressed { .. } => Use::Compressed,
                _ => Use::Data,
            };
            if let Some((host, len)) = entry.host_range(cs) {
                r.add(host, len, what, &format!("guest cluster {guest} ({name})"));
                if let (true, Entry::Standard { copied, .. } | Entry::Zero { copied, .. }) =
                    (active, entry)
                {
                    copied_matches(copied, refcounts.get(host / cs)?, host, "data cluster", r);
                }
            }
        }
    }
    Ok(())
}

/// Adds the references of every snapshot's L1 table, L2 tables and clusters. An L2 table is
/// read once however many snapshot L1 entries name it, its clusters counted once per name (as
/// qemu counts them): the work is bounded by the file's size (the snapshot L1 tables fit in
/// the file, see [`crate::snapshot::read_table`], and so do the distinct L2 tables), never by
/// how often a hostile image repeats a table.
fn walk_snapshots(image: &Qcow2Image, r: &mut Rebuild) -> Result<()> {
    let l = &image.layout;
    let cs = l.cluster_size;
    // L2 table offset → (L1 entries naming it, the first one's guest cluster and snapshot).
    let mut tables: BTreeMap<u64, (u32, u64, String)> = BTreeMap::new();
    for s in &image.snapshots {
        r.add(
            s.l1_offset,
            s.l1_size * 8,
            meta("a snapshot l1 table"),
            &format!("the l1 table of snapshot {}", s.id),
        );
        let table = match l1::read(
            &*image.file,
            l,
            s.l1_offset,
            s.l1_size,
            "a snapshot l1 table",
        ) {
            Ok(table) => table,
            Err(e) if e.kind() == ErrorKind::InvalidImage => {
                r.problems.push(Problem::error(
                    format!("snapshot {}: {}", s.id, e.message()),
                    e.offset(),
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        for (i, e) in table.iter().enumerate().filter(|(_, e)| e.l2 != 0) {
            let name = format!("l2 table {i} of the {} l1 table", s.id);
            r.add(e.l2, cs, Use::L2, &name);
            let first_guest = i as u64 * l.l2_entries();
            let t = tables
                .entry(e.l2)
                .or_insert_with(|| (0, first_guest, s.id.clone()));
            t.0 = t.0.saturating_add(1);
        }
    }
    for (l2_at, (times, first_guest, id)) in tables {
        if l2_at.saturating_add(cs) > r.file_clusters * cs {
            continue; // reported past the end of the file by `add` above
        }
        for (j, raw) in l2::read_table(&*image.file, l, l2_at)?
            .into_iter()
            .enumerate()
        {
            let guest = first_guest + j as u64;
            let entry = match Entry::decode(raw, l) {
                Ok(entry) => entry,
                Err(err) => {
                    r.problems.push(Problem::error(
                        format!("guest cluster {guest} ({id}): {}", err.message()),
                        Some(l2_at + j as u64 * 8),
                    ));
                    continue;
                }
            };
            let what = match entry {
                Entry::Compressed { .. } => Use::Compressed,
                _ => Use::Data,
            };
            if let Some((host, len)) = entry.host_range(cs) {
                let name = format!("guest cluster {guest} ({id})");
                r.add_times(host, len, what, &name, times);
            }
        }
    }
    Ok(())
}

/// The COPIED flag must be set exactly when the refcount is one.
fn copied_matches(copied: bool, refcount: u64, at: u64, what: &str, r: &mut Rebuild) {
    if copied != (refcount == 1) {
        r.problems.push(Problem::error(
            format!(
                "the {what} at {at:#x} has refcount {refcount} but its COPIED flag is {}",
                if copied { "set" } else { "clear" }
            ),
            Some(at),
        ));
    }
}
