//! Oracle: images vdisk creates and compacts must pass `qemu-img check` and read back the same
//! through qemu. Fails (never skips) where qemu-img is not installed: CI installs qemu-utils.

use std::path::Path;
use std::process::Command;

use vdisk_core::{Access, CreateSpec, DiskImage, FormatDriver, ImageKind, Mode, OpenOptions};
use vdisk_vhd::DRIVER;

use super::util::{compact, content};

/// Panics with the package to install if qemu's tools are missing: an oracle test must fail,
/// not pass silently, on a machine without its oracle.
pub fn require_qemu() {
    for tool in ["qemu-img", "qemu-io"] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "{tool} is missing: install the qemu-utils package (apt-get install qemu-utils)"
        );
    }
}

/// `qemu-img check` (qemu's vpc driver has no checker: it says so, which is accepted) and
/// `qemu-img info`, whose virtual size must be ours.
fn qemu_check(path: &Path, size: u64) {
    let out = Command::new("qemu-img")
        .args(["check", "-f", "vpc"])
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() || text.contains("does not support checks"),
        "qemu-img check: {text}"
    );
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", "vpc"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "qemu-img info failed");
    assert!(
        text.contains(&format!("\"virtual-size\": {size},")),
        "qemu sees another size than {size}: {text}"
    );
}

pub fn qemu_raw(path: &Path, dir: &Path) -> Vec<u8> {
    let raw = dir.join("out.raw");
    let _ = std::fs::remove_file(&raw);
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "vpc", "-O", "raw"])
        .arg(path)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(raw).unwrap()
}

/// `qemu-io -c "read -P <byte> <offset> <len>"`: qemu verifies the pattern itself.
fn qemu_io_pattern(path: &Path, byte: u8, offset: u64, len: u64) {
    let out = Command::new("qemu-io")
        .args(["-f", "vpc", "-c", &format!("read -P {byte} {offset} {len}")])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("Pattern verification failed"),
        "qemu-io: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_patterns(img: &dyn DiskImage) {
    let size = img.size();
    let bs = img.block_size();
    img.write_at(&[0xa5; 4096], 0).unwrap();
    img.write_at(&[0x5a; 777], bs + 3).unwrap();
    if 4 * bs <= size {
        img.write_at(&vec![0u8; bs as usize], 3 * bs).unwrap(); // allocated, all zero
    }
    img.write_at(&[0x11; 512], size - 512).unwrap();
    img.write_at(&[0x22; 1], size - 1000).unwrap();
}

#[test]
fn created_images_pass_qemu_check_and_read_back_identically() {
    require_qemu();
    let dir = tempfile::tempdir().unwrap();
    for (i, (kind, size, bs)) in [
        (ImageKind::Dynamic, 10_000_000u64, Some(1u64 << 20)),
        (ImageKind::Dynamic, 33 << 20, Some(2 << 20)),
        (ImageKind::Dynamic, (3 << 20) + 512, Some(64 << 10)),
        // A fixed VHD has no blocks: a block size is refused for it.
        (ImageKind::Fixed, 5_000_000, None),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("t{i}.vhd"));
        let file = vdisk_core::StdFile::create_new(&path).unwrap();
        let spec = match bs {
            Some(bs) => CreateSpec::new(kind, size).block_size(bs),
            None => CreateSpec::new(kind, size),
        };
        let img = DRIVER.create(Box::new(file), &spec).unwrap();
        write_patterns(&*img);
        let expect = content(&*img);
        img.flush().unwrap();
        drop(img);
        qemu_check(&path, expect.len() as u64);
        assert_eq!(qemu_raw(&path, dir.path()), expect, "{kind:?} {size}");
        qemu_io_pattern(&path, 0xa5, 0, 4096);
        qemu_io_pattern(&path, 0x11, expect.len() as u64 - 512, 512);
        if kind == ImageKind::Dynamic {
            let file = vdisk_core::testing::open_std_file(&path, Access::ReadWrite).unwrap();
            let mut img = DRIVER
                .open(Box::new(file), &OpenOptions::read_write())
                .unwrap();
            let before = std::fs::metadata(&path).unwrap().len();
            compact(&mut *img, Mode::Prezeroed).unwrap();
            let after = std::fs::metadata(&path).unwrap().len();
            assert!(after < before, "the zero block was reclaimed");
            assert_eq!(content(&*img), expect);
            drop(img);
            qemu_check(&path, expect.len() as u64);
            assert_eq!(qemu_raw(&path, dir.path()), expect, "after compaction");
        }
    }
}

#[test]
fn compacted_disk2vhd_image_reads_the_same_through_qemu() {
    require_qemu();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d2v.vhd");
    std::fs::write(&path, super::util::fixture("d2v-zerofilled.vhd")).unwrap();
    let before = qemu_raw(&path, dir.path());
    let file = vdisk_core::testing::open_std_file(&path, Access::ReadWrite).unwrap();
    let mut img = DRIVER
        .open(Box::new(file), &OpenOptions::read_write())
        .unwrap();
    compact(&mut *img, Mode::Prezeroed).unwrap();
    drop(img);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 2560);
    qemu_check(&path, before.len() as u64);
    assert!(qemu_raw(&path, dir.path()) == before);
}
