//! Images created by vdisk: qemu-img and libvhdi accept them and read what vdisk reads.

use std::path::{Path, PathBuf};

use vdisk_core::{Access, CreateSpec, DiskImage, ErrorKind, FormatDriver, ImageKind, MIB, MemFile};

use super::util::{libvhdi_raw, open_path, qemu_convert_raw, run};

/// Creates an image at `dir/name` through the driver and returns its path and the open image.
///
/// A differencing spec opens the parent, whose lock a tool spawned by another test thread can
/// hold for a moment between `fork` and `exec` (see `vdisk_core::testing::open_std_file`): an
/// in-use failure is retried from an empty file for up to 5 s.
pub fn create_file(dir: &Path, name: &str, spec: &CreateSpec) -> (PathBuf, Box<dyn DiskImage>) {
    let path = dir.join(name);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        std::fs::write(&path, []).unwrap();
        let file = vdisk_core::testing::open_std_file(&path, Access::ReadWrite).unwrap();
        match vdisk_vhdx::DRIVER.create(Box::new(file), spec) {
            Err(e) if e.kind() == ErrorKind::InUse && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return (path, other.expect("create succeeds")),
        }
    }
}

/// qemu-img check passes and qemu-img info reports `size`.
pub fn qemu_accepts(path: &Path, size: u64) {
    let p = path.to_str().unwrap();
    run("qemu-img", &["check", "-f", "vhdx", p]);
    let info = run("qemu-img", &["info", "-f", "vhdx", "--output=json", p]);
    assert!(
        info.contains(&format!("\"virtual-size\": {size},")),
        "qemu-img info reports another size: {info}"
    );
}

/// The virtual disk as qemu-img converts it to raw.
pub fn qemu_raw(path: &Path) -> Vec<u8> {
    let raw = path.with_extension("qemu.raw");
    qemu_convert_raw(path.to_str().unwrap(), &raw);
    std::fs::read(raw).unwrap()
}

/// The virtual disk as libvhdi reads it.
pub fn libvhdi_bytes(path: &Path) -> Vec<u8> {
    let raw = path.with_extension("vhdi.raw");
    libvhdi_raw(path, &raw);
    std::fs::read(raw).unwrap()
}

fn spec(kind: ImageKind, size: u64, block: u64, sector: u32) -> CreateSpec {
    CreateSpec::new(kind, size)
        .block_size(block)
        .logical_sector_size(sector)
}

#[test]
fn created_images_pass_qemu_check_and_read_zeros_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let size = 37 * MIB + 3 * 512;
    for kind in [ImageKind::Fixed, ImageKind::Dynamic] {
        for block in [MIB, 2 * MIB, 32 * MIB] {
            let name = format!("{kind:?}-{block}.vhdx");
            let (path, image) = create_file(dir.path(), &name, &spec(kind, size, block, 512));
            assert_eq!(image.size(), size);
            assert_eq!(image.kind(), kind);
            assert_eq!(image.block_size(), block);
            drop(image);
            qemu_accepts(&path, size);
            let zeros = vec![0u8; size as usize];
            assert!(qemu_raw(&path) == zeros, "qemu reads zeros");
            assert!(libvhdi_bytes(&path) == zeros, "libvhdi reads zeros");
            let image = open_path(&path).unwrap();
            assert!(super::util::content(&*image) == zeros, "vdisk reads zeros");
            assert!(image.check().unwrap().is_empty(), "no problems");
        }
    }
}

#[test]
fn created_4k_sector_images_open_in_libvhdi_and_vdisk() {
    let dir = tempfile::tempdir().unwrap();
    let size = 9 * MIB + 4096;
    for kind in [ImageKind::Fixed, ImageKind::Dynamic] {
        let (path, image) = create_file(dir.path(), "4k.vhdx", &spec(kind, size, MIB, 4096));
        assert_eq!(image.sector_size(), 4096);
        drop(image);
        let out = run("vhdiinfo", &[path.to_str().unwrap()]);
        assert!(
            out.contains("Bytes per sector\t: 4096 bytes")
                && out.contains(&format!("({size} bytes)"))
                && out.contains(&format!("Disk type\t\t: {kind:?}")),
            "vhdiinfo shows 4096-byte sectors: {out}"
        );
        assert!(libvhdi_bytes(&path) == vec![0u8; size as usize]);
        let image = open_path(&path).unwrap();
        assert_eq!(image.sector_size(), 4096);
        assert_eq!(image.size(), size);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn default_block_size_is_32_mib_and_size_rounds_up_to_a_sector() {
    let file = MemFile::new();
    let image = vdisk_vhdx::DRIVER
        .create(Box::new(file), &CreateSpec::new(ImageKind::Dynamic, 1000))
        .unwrap();
    assert_eq!(image.block_size(), 32 * MIB);
    assert_eq!(image.size(), 1024);
    assert_eq!(image.sector_size(), 512);
    assert!(
        image
            .details()
            .iter()
            .any(|(k, v)| k == "creator" && v == "vdisk")
    );
}

#[test]
fn absurd_specs_are_refused_without_writing() {
    let cases = [
        CreateSpec::new(ImageKind::Dynamic, 0),
        CreateSpec::new(ImageKind::Dynamic, (64 << 40) + 512),
        CreateSpec::new(ImageKind::Dynamic, u64::MAX),
        CreateSpec::new(ImageKind::Fixed, MIB).block_size(3 * MIB),
        CreateSpec::new(ImageKind::Dynamic, MIB).block_size(512 * 1024),
        CreateSpec::new(ImageKind::Dynamic, MIB).block_size(512 * MIB),
        CreateSpec::new(ImageKind::Dynamic, MIB).block_size(0),
        CreateSpec::new(ImageKind::Dynamic, MIB).block_size(u64::MAX),
        CreateSpec::new(ImageKind::Dynamic, MIB).logical_sector_size(1024),
        CreateSpec::new(ImageKind::Dynamic, MIB).logical_sector_size(0),
    ];
    for spec in &cases {
        let file = MemFile::new();
        let probe = file.clone();
        let err = vdisk_vhdx::DRIVER
            .create(Box::new(file), spec)
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{spec:?}: {err}");
        assert_eq!(vdisk_core::HostFile::len(&probe).unwrap(), 0, "{spec:?}");
    }
    let err = vdisk_vhdx::DRIVER
        .create(
            Box::new(MemFile::from_bytes(vec![1])),
            &CreateSpec::new(ImageKind::Dynamic, MIB),
        )
        .expect_err("non-empty file refused");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = vdisk_vhdx::DRIVER
        .create(
            Box::new(MemFile::new()),
            &CreateSpec::new(ImageKind::Differencing, MIB),
        )
        .expect_err("differencing without a parent refused");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}
