//! Random write patterns (zeros included) applied by qemu-io to qemu-made dynamic VHDs of random
//! size: after a prezeroed compaction qemu and libvhdi read the same bytes, and exactly the
//! blocks holding a non-zero byte stay allocated.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::support::vhd;
use super::support::{
    BLOCK, assert_qemu_identical, compact_ok, copy_to, file_len, info_ok, libvhdi_read,
    libvhdi_read_blocks, num, qemu_create, qemu_io, run, tempdir, vdisk_cmd,
};

/// One write: where (as fractions of the disk, so it fits any size), how long, what.
#[derive(Debug, Clone)]
struct Write {
    at: u32,
    sectors: u32,
    value: u8,
    zero_command: bool,
}

fn write_strategy() -> impl Strategy<Value = Write> {
    (
        any::<u32>(),
        1u32..=9000,
        prop_oneof![2 => Just(0u8), 3 => any::<u8>()],
        any::<bool>(),
    )
        .prop_map(|(at, sectors, value, zero_command)| Write {
            at,
            sectors,
            value,
            zero_command,
        })
}

/// Applies `writes` to a model of the disk and returns qemu-io commands doing the same.
fn plan(size: u64, writes: &[Write], model: &mut [u8]) -> Vec<String> {
    let total = size / 512;
    writes
        .iter()
        .map(|w| {
            let sector = u64::from(w.at) % total;
            let len = (u64::from(w.sectors).min(total - sector)) * 512;
            let off = sector * 512;
            let value = if w.zero_command { 0 } else { w.value };
            let (s, e) = (vhd::idx(off), vhd::idx(off + len));
            model[s..e].fill(value);
            if w.zero_command {
                format!("write -z {off} {len}")
            } else {
                format!("write -P {value} {off} {len}")
            }
        })
        .collect()
}

fn nonzero_blocks(model: &[u8]) -> Vec<u64> {
    model
        .chunks(vhd::idx(BLOCK))
        .enumerate()
        .filter(|(_, c)| c.iter().any(|&b| b != 0))
        .map(|(i, _)| i as u64)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 20,
        // Failures are kept beside the tests (cargo runs tests from the package root).
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/prop.txt"
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_writes_survive_prezeroed_compaction_and_only_nonzero_blocks_stay_allocated(
        size_mib in 1u64..=13,
        writes in proptest::collection::vec(write_strategy(), 1..10),
    ) {
        let dir = tempdir();
        let image = dir.path().join("p.vhd");
        let size = qemu_create(&image, "dynamic", size_mib << 20);
        let mut model = vec![0u8; vhd::idx(size)];
        qemu_io(&image, &plan(size, &writes, &mut model));
        let pristine = copy_to(&image, dir.path(), "pristine.vhd");
        let expected = nonzero_blocks(&model);
        let before = libvhdi_read(&image);
        prop_assert_eq!(&before.nonzero_blocks, &expected, "libvhdi vs model before compaction");

        let r = compact_ok(&image, "prezeroed", &[]);
        prop_assert_eq!(num(&r, "bytes_after"), file_len(&image));
        assert_qemu_identical(&pristine, &image);
        let after = libvhdi_read(&image);
        prop_assert_eq!(&after, &before, "libvhdi reads other bytes after compaction");
        let allocated = num(&info_ok(&image), "allocated_blocks");
        prop_assert_eq!(allocated, expected.len() as u64, "an allocated block reads all zero");
        prop_assert_eq!(vhd::check_dynamic(&image), Ok(expected.len() as u64));
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/prop.txt"
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_writes_into_vdisk_created_images_of_any_block_size_survive_compaction(
        size_kib in 512u64..=12 * 1024,
        block_shift in 19u32..=22,
        writes in proptest::collection::vec(write_strategy(), 1..10),
    ) {
        let dir = tempdir();
        let image = dir.path().join("v.vhd");
        let block = 1u64 << block_shift;
        let out = run(vdisk_cmd()
            .args(["create", "--format", "vhd", "--type", "dynamic", "--block-size"])
            .arg(block.to_string())
            .arg("--size")
            .arg((size_kib << 10).to_string())
            .arg(&image));
        out.ok();
        let size = num(&info_ok(&image), "virtual_size");
        let mut model = vec![0u8; vhd::idx(size)];
        qemu_io(&image, &plan(size, &writes, &mut model));
        let pristine = copy_to(&image, dir.path(), "pristine.vhd");
        let expected: Vec<u64> = model
            .chunks(vhd::idx(block))
            .enumerate()
            .filter(|(_, c)| c.iter().any(|&b| b != 0))
            .map(|(i, _)| i as u64)
            .collect();

        let r = compact_ok(&image, "prezeroed", &[]);
        prop_assert_eq!(num(&r, "bytes_after"), file_len(&image));
        assert_qemu_identical(&pristine, &image);
        let (a, b) = (libvhdi_read_blocks(&pristine, block), libvhdi_read_blocks(&image, block));
        prop_assert_eq!(&a, &b, "libvhdi reads other bytes after compaction");
        prop_assert_eq!(&b.nonzero_blocks, &expected, "libvhdi vs model");
        prop_assert_eq!(num(&info_ok(&image), "allocated_blocks"), expected.len() as u64);
        prop_assert_eq!(vhd::check_dynamic(&image), Ok(expected.len() as u64));
    }
}
