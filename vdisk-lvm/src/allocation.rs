//! Which extents of this physical volume each logical volume uses, which are free, and which
//! logical volumes the analysers may look into.
//!
//! ```text
//!  PV bytes: label, metadata areas ..│ pe_start ─ extent 0 │ 1 │ ... │ pe_count-1 │.. (mda 2)
//!                 always used        │  used by some LV (any type, hidden or not) or free │ used
//! ```
//!
//! A visible logical volume becomes an inner volume whose bytes are its extents in logical
//! order when every segment is `striped` with one stripe on this PV, it starts at logical
//! extent 0 without gaps, and no other volume is built on it (a snapshot's origin or
//! exception store, a thin pool's data, a RAID image...). Any other visible volume is listed
//! untrusted with the reason, its extents kept. Hidden volumes (the parts of thin pools, RAID,
//! mirrors, caches) are never analysed; their extents are used.

use std::collections::HashMap;
use std::ops::Range;

use vdisk_core::fs::{ContainerUsage, FreeMap, FsUsage, InnerVolume};

use crate::ID;
use crate::label::{Area, SCAN_SECTORS, SECTOR};
use crate::vg::{LogicalVolume, LvSegment, VolumeGroup};

/// Extents of this PV a logical volume uses.
#[derive(Debug, Clone)]
struct Run {
    /// Physical extents.
    pe: Range<u64>,
    /// Index of the logical volume in the group.
    lv: usize,
    /// False when the length is a conservative guess (an area of a segment type whose
    /// layout is not read): never freed, but not checked for overlaps either.
    exact: bool,
}

/// The container verdict for the PV whose UUID is `uuid`, `size` bytes long, with metadata
/// areas `mdas`, in the group `vg`. `Err` is the reason the PV cannot be trusted.
pub fn container(
    vg: &VolumeGroup,
    uuid: &str,
    size: u64,
    mdas: &[Area],
) -> Result<ContainerUsage, String> {
    let Some(this) = vg.pvs.iter().find(|p| p.uuid == uuid) else {
        return Err(format!(
            "this physical volume is not listed in the metadata of volume group {}",
            vg.name
        ));
    };
    if this.flags.iter().any(|f| f == "MISSING") {
        return Err("the volume group metadata marks this physical volume missing".into());
    }
    let es = vg.extent_size;
    let pe_bytes = |pe: u64| {
        pe.checked_mul(es)
            .and_then(|b| b.checked_add(this.pe_start))
    };
    let data = this.pe_start..pe_bytes(this.pe_count).unwrap_or(u64::MAX);
    if data.end > size {
        return Err(format!(
            "the extents of this physical volume reach byte {}, past the end of its {size}-byte volume",
            data.end
        ));
    }
    if data.start < SCAN_SECTORS * SECTOR
        || mdas
            .iter()
            .any(|a| a.offset < data.end && data.start < a.offset + a.size)
    {
        return Err("the extents of this physical volume overlap its label or metadata".into());
    }
    let runs = runs(vg, &this.key, this.pe_count)?;
    // The map's unit must divide the extents' offsets in the volume (pe_start is usually
    // 1 MiB, extents 4 MiB): a unit of the extent size would lose the extents it straddles.
    let align = 1u64 << (this.pe_start | es).trailing_zeros().min(63);
    let mut free = FreeMap::new(size, align);
    let mut free_extents = 0u64;
    for gap in gaps(&runs, this.pe_count) {
        free_extents += gap.end - gap.start;
        free.mark_free(this.pe_start + gap.start * es..this.pe_start + gap.end * es);
    }
    let users = users(vg);
    let keys: Vec<&str> = vg.pvs.iter().map(|p| p.key.as_str()).collect();
    let mut volumes = Vec::new();
    for (i, lv) in vg.lvs.iter().enumerate() {
        if !lv.visible() {
            continue;
        }
        let here: Vec<&Run> = runs.iter().filter(|r| r.lv == i && r.exact).collect();
        let elsewhere = lv.segments.iter().any(|s| {
            s.areas
                .iter()
                .any(|(n, _)| n != &this.key && keys.contains(&n.as_str()))
        });
        let through_lv = lv.segments.iter().any(|s| {
            s.areas
                .iter()
                .any(|(n, _)| n != &this.key && !keys.contains(&n.as_str()))
        });
        let all_striped = lv.segments.iter().all(|s| s.kind == "striped");
        if here.is_empty() && elsewhere && all_striped {
            // Wholly on other physical volumes: not in this container.
            continue;
        }
        let untrusted = why_untrusted(lv, &users, elsewhere, through_lv);
        let extents = match &untrusted {
            None => linear_extents(lv, this.pe_start, es),
            Some(_) => here
                .iter()
                .map(|r| this.pe_start + r.pe.start * es..this.pe_start + r.pe.end * es)
                .collect(),
        };
        volumes.push(InnerVolume {
            name: format!("{}/{}", vg.name, lv.name),
            extents,
            untrusted,
        });
    }
    let details = vec![
        ("volume_group".to_owned(), vg.name.clone()),
        ("extent_size".to_owned(), es.to_string()),
        ("pe_start".to_owned(), this.pe_start.to_string()),
        ("extents".to_owned(), this.pe_count.to_string()),
        ("free_extents".to_owned(), free_extents.to_string()),
        ("logical_volumes".to_owned(), vg.lvs.len().to_string()),
        ("seqno".to_owned(), vg.seqno.to_string()),
    ];
    Ok(ContainerUsage {
        usage: FsUsage {
            fs: ID,
            cluster_size: es,
            free,
            details,
        },
        volumes,
    })
}

/// Every run of this PV's extents (key `key`, `pe_count` extents) that a logical volume uses;
/// `Err` if one lies past the PV's extents or two exact runs overlap.
fn runs(vg: &VolumeGroup, key: &str, pe_count: u64) -> Result<Vec<Run>, String> {
    let mut runs = Vec::new();
    for (i, lv) in vg.lvs.iter().enumerate() {
        for seg in &lv.segments {
            let (len, exact) = area_len(seg, &lv.name)?;
            for (name, pe) in &seg.areas {
                if name != key {
                    continue;
                }
                let end = pe.checked_add(len).filter(|&e| e <= pe_count);
                let Some(end) = end else {
                    return Err(format!(
                        "logical volume {} uses extents past the end of this physical volume",
                        lv.name
                    ));
                };
                if len > 0 {
                    runs.push(Run {
                        pe: *pe..end,
                        lv: i,
                        exact,
                    });
                }
            }
        }
    }
    runs.sort_by_key(|r| r.pe.start);
    let exact: Vec<&Run> = runs.iter().filter(|r| r.exact).collect();
    if let Some(w) = exact.windows(2).find(|w| w[1].pe.start < w[0].pe.end) {
        return Err(format!(
            "logical volumes {} and {} both use extent {} of this physical volume",
            vg.lvs[w[0].lv].name, vg.lvs[w[1].lv].name, w[1].pe.start
        ));
    }
    Ok(runs)
}

/// The extents each area of `seg` covers: exact for `striped` (the segment's extents split
/// evenly between its stripes); for other types the whole segment length, which is at least
/// what any area of theirs holds.
fn area_len(seg: &LvSegment, lv: &str) -> Result<(u64, bool), String> {
    if seg.kind != "striped" {
        return Ok((seg.extent_count, false));
    }
    let n = seg.stripe_count;
    if n == 0 || seg.areas.len() as u64 != n || !seg.extent_count.is_multiple_of(n) {
        return Err(format!(
            "logical volume {lv} has a striped segment whose stripes do not match its stripe count"
        ));
    }
    Ok((seg.extent_count / n, true))
}

/// The extents `0..pe_count` no run covers, in order.
fn gaps(runs: &[Run], pe_count: u64) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = 0;
    for r in runs {
        if r.pe.start > at {
            out.push(at..r.pe.start);
        }
        at = at.max(r.pe.end);
    }
    if at < pe_count {
        out.push(at..pe_count);
    }
    out
}

/// For each logical volume another one is built on: the first such user and its type.
fn users(vg: &VolumeGroup) -> HashMap<&str, (&str, &str)> {
    let mut users = HashMap::new();
    for lv in &vg.lvs {
        for seg in &lv.segments {
            let named = seg
                .names
                .iter()
                .chain(seg.areas.iter().map(|(n, _)| n))
                .filter(|n| vg.lvs.iter().any(|l| &l.name == *n && l.name != lv.name));
            for n in named {
                users
                    .entry(n.as_str())
                    .or_insert((lv.name.as_str(), seg.kind.as_str()));
            }
        }
    }
    users
}

/// Why the visible volume `lv` must not be analysed, if it must not.
fn why_untrusted(
    lv: &LogicalVolume,
    users: &HashMap<&str, (&str, &str)>,
    elsewhere: bool,
    through_lv: bool,
) -> Option<String> {
    if let Some(seg) = lv.segments.iter().find(|s| s.kind != "striped") {
        return Some(describe(&seg.kind));
    }
    if let Some((user, kind)) = users.get(lv.name.as_str()) {
        return Some(match *kind {
            "snapshot" => format!(
                "it is the origin or the change store of an lvm snapshot ({user}), which reads its blocks"
            ),
            kind => format!("logical volume {user} ({kind}) is built on it"),
        });
    }
    if let Some(seg) = lv.segments.iter().find(|s| s.stripe_count != 1) {
        return Some(format!(
            "it is striped over {} areas, which vdisk does not map",
            seg.stripe_count
        ));
    }
    if through_lv {
        return Some(
            "it is mapped through another logical volume (a pvmove in progress?), which vdisk does not follow"
                .into(),
        );
    }
    if elsewhere {
        return Some(
            "it continues on another physical volume (another disk), which vdisk cannot see".into(),
        );
    }
    let mut next = 0;
    for s in &lv.segments {
        if s.start_extent != next {
            return Some("its segments leave a gap in the volume".into());
        }
        next = s.start_extent + s.extent_count;
    }
    if next == 0 {
        return Some("it has no extents".into());
    }
    None
}

/// What a volume with a segment of type `kind` is, in words a user understands.
fn describe(kind: &str) -> String {
    let what = match kind {
        "thin" => "a thin volume, whose blocks its thin pool maps (vdisk does not read the pool)",
        "thin-pool" => "a thin pool",
        "snapshot" => "an lvm snapshot",
        "mirror" => "a mirrored volume",
        "cache" | "cache-pool" | "writecache" => "a cached volume",
        "vdo" | "vdo-pool" => "a vdo (deduplicated) volume",
        "integrity" => "a volume with integrity checking",
        "error" | "zero" => "a volume without data of its own",
        k if k.starts_with("raid") => "a raid volume",
        k => return format!("a volume of lvm segment type \"{k}\", which vdisk does not read"),
    };
    what.to_owned()
}

/// The bytes of the linear volume `lv` on this PV, in logical order (all its segments are
/// single-stripe and on this PV: see [`why_untrusted`]).
fn linear_extents(lv: &LogicalVolume, pe_start: u64, es: u64) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for s in &lv.segments {
        for (_, pe) in &s.areas {
            // Bounded by `runs`: pe + count <= pe_count, whose bytes fit the volume.
            let r = pe_start + pe * es..pe_start + (pe + s.extent_count) * es;
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "allocation_tests.rs"]
mod tests;
