//! The trust rules, one volume type at a time, over metadata written the way LVM writes it.

use super::*;
use crate::text::parse;
use crate::vg::from_text;

const MIB: u64 = 1 << 20;
/// 20 MiB volume: metadata area at 4 KiB, 16 extents of 1 MiB from 1 MiB.
const SIZE: u64 = 20 * MIB;
const MDAS: [Area; 1] = [Area {
    offset: 4096,
    size: MIB - 4096,
}];

/// A volume group whose pv0 is this PV ("thispv") and pv1 another, with `lvs`.
fn group(lvs: &str) -> VolumeGroup {
    let t = format!(
        r#"vg {{ seqno = 1 extent_size = 2048
physical_volumes {{
pv0 {{ id = "this-pv" pe_start = 2048 pe_count = 16 }}
pv1 {{ id = "other-pv" pe_start = 2048 pe_count = 16 }} }}
logical_volumes {{ {lvs} }} }}"#
    );
    from_text(&parse(t.as_bytes()).unwrap()).unwrap()
}

fn linear(name: &str, segs: &[(u64, u64, &str, u64)], visible: bool) -> String {
    let status = if visible {
        r#"["READ", "WRITE", "VISIBLE"]"#
    } else {
        r#"["READ", "WRITE"]"#
    };
    let mut s = format!("{name} {{ status = {status}\n");
    for (i, (le, n, pv, pe)) in segs.iter().enumerate() {
        s += &format!(
            "segment{} {{ start_extent = {le} extent_count = {n} type = \"striped\" stripe_count = 1 stripes = [\"{pv}\", {pe}] }}\n",
            i + 1
        );
    }
    s + "}\n"
}

fn analysed(lvs: &str) -> ContainerUsage {
    container(&group(lvs), "thispv", SIZE, &MDAS).unwrap()
}

fn free(c: &ContainerUsage) -> Vec<Range<u64>> {
    c.usage.free.runs().collect()
}

fn pe(n: u64) -> u64 {
    MIB + n * MIB
}

#[test]
fn a_linear_volume_is_its_extents_in_logical_order_and_unused_extents_are_free() {
    let lvs = linear("root", &[(0, 2, "pv0", 5), (2, 3, "pv0", 0)], true);
    let c = analysed(&lvs);
    assert_eq!(c.volumes.len(), 1);
    let v = &c.volumes[0];
    assert_eq!(v.name, "vg/root");
    assert_eq!(v.untrusted, None);
    assert_eq!(v.extents, vec![pe(5)..pe(7), pe(0)..pe(3)]);
    // Free: extents 3, 4 and 7..16; the label, metadata and the tail after the last extent
    // are used.
    assert_eq!(free(&c), vec![pe(3)..pe(5), pe(7)..pe(16)]);
    assert!(
        c.usage
            .details
            .contains(&("free_extents".into(), "11".into()))
    );
}

#[test]
fn free_extents_that_straddle_extent_sized_units_of_the_volume_are_all_free() {
    // pe_start 1 MiB, extents 4 MiB: extent n starts at 1 + 4n MiB.
    let t = r#"vg { seqno = 1 extent_size = 8192
physical_volumes { pv0 { id = "this-pv" pe_start = 2048 pe_count = 4 } }
logical_volumes { } }"#;
    let vg = from_text(&parse(t.as_bytes()).unwrap()).unwrap();
    let c = container(&vg, "thispv", SIZE, &MDAS).unwrap();
    assert_eq!(free(&c), vec![MIB..17 * MIB]);
}

#[test]
fn hidden_thin_snapshot_raid_and_striped_volumes_keep_their_extents_and_are_untrusted() {
    let cases = [
        (
            // A thin pool: hidden data and metadata LVs, the pool and a thin volume.
            linear("pool_tdata", &[(0, 4, "pv0", 0)], false)
                + &linear("pool_tmeta", &[(0, 1, "pv0", 4)], false)
                + r#"pool { status = ["READ", "WRITE", "VISIBLE"] segment1 { start_extent = 0 extent_count = 4 type = "thin-pool" metadata = "pool_tmeta" pool = "pool_tdata" } }
thin { status = ["READ", "WRITE", "VISIBLE"] segment1 { start_extent = 0 extent_count = 8 type = "thin" thin_pool = "pool" } }"#,
            vec![("vg/pool", "thin pool"), ("vg/thin", "thin volume")],
            5,
        ),
        (
            // An old-style snapshot: the origin and the change store both look linear.
            linear("lv", &[(0, 3, "pv0", 0)], true)
                + &linear("snap", &[(0, 2, "pv0", 3)], true)
                + r#"snapshot0 { status = ["READ"] segment1 { start_extent = 0 extent_count = 3 type = "snapshot" chunk_size = 8 origin = "lv" cow_store = "snap" } }"#,
            vec![("vg/lv", "snapshot"), ("vg/snap", "snapshot")],
            5,
        ),
        (
            linear("r_rimage_0", &[(0, 2, "pv0", 0)], false)
                + &linear("r_rmeta_0", &[(0, 1, "pv0", 2)], false)
                + r#"r { status = ["READ", "WRITE", "VISIBLE"] segment1 { start_extent = 0 extent_count = 2 type = "raid1" raids = ["r_rmeta_0", "r_rimage_0"] } }"#,
            vec![("vg/r", "raid")],
            3,
        ),
        (
            r#"s { status = ["READ", "VISIBLE"] segment1 { start_extent = 0 extent_count = 4 type = "striped" stripe_count = 2 stripes = ["pv0", 0, "pv0", 6] } }"#.to_string(),
            vec![("vg/s", "striped over 2")],
            4,
        ),
        (
            linear("span", &[(0, 2, "pv0", 0), (2, 2, "pv1", 0)], true),
            vec![("vg/span", "another physical volume")],
            2,
        ),
        (
            linear("moving", &[(0, 2, "pvmove0", 0)], true)
                + r#"pvmove0 { status = ["READ", "LOCKED"] segment1 { start_extent = 0 extent_count = 2 type = "mirror" mirrors = ["pv0", 0, "pv1", 3] } }"#,
            vec![("vg/moving", "pvmove")],
            2,
        ),
    ];
    for (lvs, want, used) in cases {
        let c = analysed(&lvs);
        let got: Vec<(&str, &str)> = c
            .volumes
            .iter()
            .map(|v| (v.name.as_str(), v.untrusted.as_deref().unwrap_or("TRUSTED")))
            .collect();
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((name, reason), (w_name, w_reason)) in got.iter().zip(&want) {
            assert_eq!(name, w_name);
            assert!(reason.contains(w_reason), "{name}: {reason}");
        }
        // Exactly the extents no volume (hidden or not) uses are free.
        assert_eq!(c.usage.free.free_bytes(), (16 - used) * MIB, "{want:?}");
        // Untrusted volumes' own extents are listed so that the core keeps them.
        for v in &c.volumes {
            for e in &v.extents {
                assert!(!c.usage.free.any_free(e));
            }
        }
    }
}

#[test]
fn inconsistent_allocation_makes_the_whole_physical_volume_untrusted() {
    let err = |lvs: &str, uuid: &str, size: u64| container(&group(lvs), uuid, size, &MDAS);
    let overlap = linear("a", &[(0, 3, "pv0", 0)], true) + &linear("b", &[(0, 1, "pv0", 2)], true);
    assert!(
        err(&overlap, "thispv", SIZE)
            .unwrap_err()
            .contains("both use extent 2")
    );
    let past = linear("a", &[(0, 3, "pv0", 14)], true);
    assert!(
        err(&past, "thispv", SIZE)
            .unwrap_err()
            .contains("past the end")
    );
    assert!(
        err("", "nosuchpv", SIZE)
            .unwrap_err()
            .contains("not listed")
    );
    assert!(
        err("", "thispv", 16 * MIB)
            .unwrap_err()
            .contains("past the end of its")
    );
    let bad_stripes = r#"s { status = ["VISIBLE"] segment1 { start_extent = 0 extent_count = 3 type = "striped" stripe_count = 2 stripes = ["pv0", 0, "pv0", 6] } }"#;
    assert!(
        err(bad_stripes, "thispv", SIZE)
            .unwrap_err()
            .contains("stripe count")
    );
    // Extents over the metadata area.
    let mdas = [Area {
        offset: 4096,
        size: 2 * MIB,
    }];
    assert!(
        container(&group(""), "thispv", SIZE, &mdas)
            .unwrap_err()
            .contains("overlap its label or metadata")
    );
}

#[test]
fn a_volume_wholly_on_another_disk_is_not_listed_and_a_gap_is_untrusted() {
    let lvs = linear("far", &[(0, 2, "pv1", 0)], true)
        + &linear("gappy", &[(0, 1, "pv0", 0), (2, 1, "pv0", 1)], true);
    let c = analysed(&lvs);
    assert_eq!(c.volumes.len(), 1);
    assert!(c.volumes[0].untrusted.as_deref().unwrap().contains("gap"));
    assert_eq!(c.usage.free.free_bytes(), 14 * MIB);
}
