//! Images made by other tools (see tests/fixtures/README.md).

use vdisk_core::{FormatDriver, ImageKind, MemFile, Mode, image_info};
use vdisk_vhd::DRIVER;

use super::util::{check, compact, content, fixture, open};

#[test]
fn real_dynamic_images_open_with_the_sizes_their_makers_meant() {
    // (file, virtual size, block count)
    let cases = [
        ("d2v-zerofilled.vhd", 514_560u64 * 512, 126u64),
        ("hyperv2012r2-dynamic.vhd", 266_338_304 * 512, 0xfe00),
        ("virtualpc-dynamic.vhd", 266_338_304 * 512, 0xfe00),
        ("image.vhd", 102 * 1024, 1),
        ("ext2.vhd", 4_212_736, 3),
    ];
    for (name, size, blocks) in cases {
        let bytes = fixture(name);
        assert_eq!(
            DRIVER.probe(&MemFile::from_bytes(bytes.clone())).unwrap(),
            vdisk_core::Confidence::Yes
        );
        let img = open(bytes.clone(), false).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(img.kind(), ImageKind::Dynamic, "{name}");
        assert_eq!(img.size(), size, "{name}");
        assert_eq!(img.block_count(), blocks, "{name}");
        let info = image_info(&*img).unwrap();
        assert!(
            info.details.iter().any(|(k, _)| k == "chs size"),
            "{name}: details show the chs size"
        );
        let problems = check(bytes);
        assert!(
            problems
                .iter()
                .all(|p| p.severity == vdisk_core::Severity::Warning),
            "{name}: {problems:?}"
        );
    }
}

#[test]
fn virtual_pc_image_reports_its_smaller_chs_size_in_details() {
    let img = open(fixture("virtualpc-dynamic.vhd"), false).unwrap();
    let details = img.details();
    let chs = details.iter().find(|(k, _)| k == "chs size").unwrap();
    assert_eq!(chs.1, (266_334_240u64 * 512).to_string());
}

#[test]
fn ext2_image_holds_an_ext2_superblock() {
    let img = open(fixture("ext2.vhd"), false).unwrap();
    let mut magic = [0u8; 2];
    img.read_at(&mut magic, 1024 + 56).unwrap();
    assert_eq!(magic, [0x53, 0xef]);
}

#[test]
fn disk2vhd_zero_filled_image_compacts_to_metadata_and_reads_zero() {
    let bytes = fixture("d2v-zerofilled.vhd");
    let before = bytes.len() as u64;
    let mem = MemFile::from_bytes(bytes);
    let mut img = DRIVER
        .open(
            Box::new(mem.clone()),
            &vdisk_core::OpenOptions::read_write(),
        )
        .unwrap();
    let report = compact(&mut *img, Mode::Prezeroed).unwrap();
    assert_eq!(report.blocks_reclaimed_zero, 126);
    let after = mem.to_vec();
    // Footer copy, header, 126-entry BAT padded to 512, footer.
    assert_eq!(after.len() as u64, 512 + 1024 + 512 + 512, "was {before}");
    assert!(content(&*img).iter().all(|&b| b == 0));
    let again = open(after.clone(), false).unwrap();
    assert_eq!(again.size(), 514_560 * 512);
    // The footer is byte-identical (unique id kept).
    assert_eq!(after[after.len() - 512..], after[..512]);
    assert!(check(after).is_empty());
}
