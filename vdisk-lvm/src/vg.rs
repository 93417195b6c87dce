//! The volume group as its metadata text describes it: extent size, physical volumes, logical
//! volumes and their segments. Only what the analysis needs is kept; every number is checked
//! to be a non-negative integer and every extent range to fit `u64` bytes.

use crate::text::{Section, Value};

/// Bytes per sector in LVM metadata (`extent_size`, `pe_start`), whatever the device's.
pub const SECTOR: u64 = 512;

/// A volume group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeGroup {
    /// Its name.
    pub name: String,
    /// The metadata's sequence number (higher is newer).
    pub seqno: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    /// Its physical volumes.
    pub pvs: Vec<PhysicalVolume>,
    /// Its logical volumes, in metadata order.
    pub lvs: Vec<LogicalVolume>,
}

/// A physical volume of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalVolume {
    /// The key segments name it by ("pv0").
    pub key: String,
    /// Its UUID, dashes removed.
    pub uuid: String,
    /// Where its first extent starts, in bytes.
    pub pe_start: u64,
    /// How many extents it has.
    pub pe_count: u64,
    /// Its `flags` (e.g. "MISSING").
    pub flags: Vec<String>,
}

/// A logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalVolume {
    /// Its name.
    pub name: String,
    /// Its `status` ("READ", "WRITE", "VISIBLE", ...).
    pub status: Vec<String>,
    /// Its segments, sorted by `start_extent`.
    pub segments: Vec<LvSegment>,
}

impl LogicalVolume {
    /// True if users see it (internal parts of thin pools, RAID and the like are hidden).
    pub fn visible(&self) -> bool {
        self.status.iter().any(|s| s == "VISIBLE")
    }
}

/// One segment of a logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvSegment {
    /// First logical extent.
    pub start_extent: u64,
    /// Logical extents.
    pub extent_count: u64,
    /// The segment type ("striped", "thin", "raid1", ...).
    pub kind: String,
    /// `stripe_count` (1 if absent).
    pub stripe_count: u64,
    /// Every ("name", first extent) pair of its arrays (`stripes`, `mirrors`): the name is
    /// a physical volume key or a logical volume.
    pub areas: Vec<(String, u64)>,
    /// Every other string it holds besides its type (origin, pool, sub-volumes, ...): names
    /// of logical volumes it is built on, among harmless words.
    pub names: Vec<String>,
}

/// Builds the volume group from the parsed text `top`. `Err` says what is wrong.
pub fn from_text(top: &Section) -> Result<VolumeGroup, String> {
    let mut groups = top.sections();
    let Some((name, vg)) = groups.next() else {
        return Err("the lvm metadata holds no volume group".into());
    };
    if groups.next().is_some() {
        return Err("the lvm metadata holds more than one volume group".into());
    }
    let extent_sectors = number(vg, "extent_size", name)?;
    let extent_size = extent_sectors
        .checked_mul(SECTOR)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("volume group {name} has an invalid extent size"))?;
    let mut pvs = Vec::new();
    if let Some(list) = vg.section("physical_volumes") {
        for (key, pv) in list.sections() {
            let what = format!("physical volume {key}");
            let pe_start = number(pv, "pe_start", &what)?
                .checked_mul(SECTOR)
                .ok_or_else(|| format!("{what} has an invalid pe_start"))?;
            let pe_count = number(pv, "pe_count", &what)?;
            let uuid = pv
                .str("id")
                .ok_or_else(|| format!("{what} has no id"))?
                .replace('-', "");
            pvs.push(PhysicalVolume {
                key: key.to_owned(),
                uuid,
                pe_start,
                pe_count,
                flags: pv.strings("flags").into_iter().map(str::to_owned).collect(),
            });
        }
    }
    let mut lvs = Vec::new();
    if let Some(list) = vg.section("logical_volumes") {
        for (lv_name, lv) in list.sections() {
            lvs.push(logical_volume(lv_name, lv)?);
        }
    }
    Ok(VolumeGroup {
        name: name.to_owned(),
        seqno: number(vg, "seqno", name)?,
        extent_size,
        pvs,
        lvs,
    })
}

fn logical_volume(name: &str, lv: &Section) -> Result<LogicalVolume, String> {
    let mut segments = Vec::new();
    for (key, seg) in lv.sections() {
        let what = format!("logical volume {name} {key}");
        let start_extent = number(seg, "start_extent", &what)?;
        let extent_count = number(seg, "extent_count", &what)?;
        if start_extent.checked_add(extent_count).is_none() {
            return Err(format!("{what} has an invalid extent range"));
        }
        let kind = seg
            .str("type")
            .ok_or_else(|| format!("{what} has no type"))?
            .to_owned();
        let stripe_count = match seg.value("stripe_count") {
            None => 1,
            Some(_) => number(seg, "stripe_count", &what)?,
        };
        let mut areas = Vec::new();
        let mut names = Vec::new();
        for (k, item) in &seg.items {
            let crate::text::Item::Value(v) = item else {
                continue;
            };
            match v {
                Value::Str(s) if k != "type" => names.push(s.clone()),
                Value::Array(a) => {
                    let mut i = 0;
                    while i < a.len() {
                        match (&a[i], a.get(i + 1)) {
                            (Value::Str(s), Some(Value::Int(n))) => {
                                let n = u64::try_from(*n)
                                    .map_err(|_| format!("{what} has a negative extent"))?;
                                areas.push((s.clone(), n));
                                i += 2;
                            }
                            (Value::Str(s), _) => {
                                names.push(s.clone());
                                i += 1;
                            }
                            _ => i += 1,
                        }
                    }
                }
                _ => {}
            }
        }
        segments.push(LvSegment {
            start_extent,
            extent_count,
            kind,
            stripe_count,
            areas,
            names,
        });
    }
    segments.sort_by_key(|s| s.start_extent);
    Ok(LogicalVolume {
        name: name.to_owned(),
        status: lv
            .strings("status")
            .into_iter()
            .map(str::to_owned)
            .collect(),
        segments,
    })
}

/// The non-negative integer `key` of `section` (named `what` in the error).
fn number(section: &Section, key: &str, what: &str) -> Result<u64, String> {
    match section.int(key).map(u64::try_from) {
        Some(Ok(n)) => Ok(n),
        Some(Err(_)) => Err(format!("{what} has a negative {key}")),
        None => Err(format!("{what} has no {key}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::parse;

    #[test]
    fn the_group_lists_volumes_segments_areas_and_the_names_segments_build_on() {
        let t = br#"vg {
id = "x"
seqno = 7
extent_size = 8192
physical_volumes { pv0 { id = "ab-cd" pe_start = 2048 pe_count = 15 flags = ["MISSING"] } }
logical_volumes {
thin { status = ["READ", "VISIBLE"]
  segment1 { start_extent = 0 extent_count = 4 type = "thin" thin_pool = "pool" transaction_id = 1 } }
lv { status = ["READ"]
  segment2 { start_extent = 2 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 9] }
  segment1 { start_extent = 0 extent_count = 2 type = "raid1" raids = ["lv_rmeta_0", "lv_rimage_0"] } }
}
}"#;
        let vg = from_text(&parse(t).unwrap()).unwrap();
        assert_eq!(
            (vg.name.as_str(), vg.seqno, vg.extent_size),
            ("vg", 7, 4 << 20)
        );
        assert_eq!(vg.pvs[0].uuid, "abcd");
        assert_eq!((vg.pvs[0].pe_start, vg.pvs[0].pe_count), (1 << 20, 15));
        assert_eq!(vg.pvs[0].flags, vec!["MISSING"]);
        assert!(vg.lvs[0].visible() && !vg.lvs[1].visible());
        assert_eq!(vg.lvs[0].segments[0].names, vec!["pool"]);
        let lv = &vg.lvs[1];
        assert_eq!(lv.segments[0].kind, "raid1");
        assert_eq!(lv.segments[0].names, vec!["lv_rmeta_0", "lv_rimage_0"]);
        assert_eq!(lv.segments[1].areas, vec![("pv0".to_string(), 9)]);
    }

    #[test]
    fn missing_or_negative_numbers_and_extra_groups_are_reasons() {
        for (t, why) in [
            (&b"vg { seqno = 1 }"[..], "no extent_size"),
            (b"vg { seqno = 1 extent_size = 0 }", "invalid extent size"),
            (b"vg { seqno = -1 extent_size = 8 }", "negative seqno"),
            (b"a { } b { }", "more than one"),
            (b"x = 1", "no volume group"),
            (
                b"vg { seqno = 1 extent_size = 8 logical_volumes { l { s { start_extent = 0 extent_count = 1 } } } }",
                "no type",
            ),
        ] {
            let e = from_text(&parse(t).unwrap()).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
