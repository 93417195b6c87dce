//! Random guest write, zero-write, write-zeroes and discard patterns (qemu-io), compacted in a
//! random mode: `qemu-img check` clean (no errors, no leaks) and `qemu-img compare` identical.

use proptest::prelude::*;
use vdisk_core::Mode;

use super::compact_util::{assert_identical, assert_qemu_clean, compact_path, copy_as, len, made};

const CS: u64 = 4096;
const CLUSTERS: u64 = 48;

fn op() -> impl Strategy<Value = String> {
    let at = 0..CLUSTERS;
    let n = 1u64..4;
    prop_oneof![
        3 => (at.clone(), n.clone(), 1u8..=255).prop_map(|(c, n, p)| {
            let n = n.min(CLUSTERS - c);
            format!("write -P {p} {} {}", c * CS, n * CS)
        }),
        2 => (at.clone(), n.clone()).prop_map(|(c, n)| {
            let n = n.min(CLUSTERS - c);
            format!("write -P 0 {} {}", c * CS, n * CS)
        }),
        1 => (at.clone(), n.clone()).prop_map(|(c, n)| {
            let n = n.min(CLUSTERS - c);
            format!("write -z {} {}", c * CS, n * CS)
        }),
        1 => (at, n).prop_map(|(c, n)| {
            let n = n.min(CLUSTERS - c);
            format!("discard {} {}", c * CS, n * CS)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn any_write_and_discard_pattern_compacts_to_an_image_qemu_checks_clean_and_reads_identical(
        ops in prop::collection::vec(op(), 1..24),
        v3 in any::<bool>(),
        mode in prop::sample::select(vec![Mode::Full, Mode::Prezeroed, Mode::Pretrimmed, Mode::Retrim]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let opts = if v3 { "compat=1.1,cluster_size=4096" } else { "compat=0.10,cluster_size=4096" };
        let original = made(dir.path(), "o.qcow2", opts, &(CLUSTERS * CS).to_string(), &ops);
        let copy = copy_as(&original, "c.qcow2");
        let r = compact_path(&copy, mode).unwrap();
        let what = format!("{opts} {mode} {ops:?}");
        assert_qemu_clean(&copy, &what);
        assert_identical(&original, &copy, &what);
        prop_assert!(len(&copy) <= len(&original), "{}", what);
        prop_assert_eq!(len(&copy), r.bytes_after);
    }
}
