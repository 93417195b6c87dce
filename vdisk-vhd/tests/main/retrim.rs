//! `retrim`: zero blocks are freed in place and punched out of the host file; nothing moves,
//! the file keeps its length, and every byte reads the same through qemu.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use vdisk_core::{Access, FormatDriver, Mode, OpenOptions};
use vdisk_vhd::DRIVER;

use super::qemu::{qemu_raw, require_qemu};
use super::util::compact;

const MIB: u64 = 1 << 20;

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("tool runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A qemu-made image with data in MiB 0, zeros written over data in MiB 2..6, data in MiB 8.
fn qemu_image(dir: &Path, subformat: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{subformat}.vhd"));
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "vpc", "-o"])
        .arg(format!("subformat={subformat}"))
        .arg(&path)
        .arg("16M"));
    for c in [
        "write -P 0xa1 0 1M",
        "write -P 0xb2 2M 4M",
        "write -z 2M 4M",
        "write -P 0xc3 8M 1M",
    ] {
        run(Command::new("qemu-io")
            .args(["-f", "vpc", "-c", c])
            .arg(&path));
    }
    path
}

fn retrim(path: &Path) -> vdisk_core::CompactReport {
    let file = vdisk_core::testing::open_std_file(path, Access::ReadWrite).unwrap();
    let mut img = DRIVER
        .open(Box::new(file), &OpenOptions::read_write())
        .unwrap();
    compact(&mut *img, Mode::Retrim).unwrap()
}

/// Host bytes actually allocated to the file.
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn retrim_punches_zero_blocks_of_a_fixed_vhd_keeping_length_and_content() {
    require_qemu();
    let dir = tempfile::tempdir().unwrap();
    let path = qemu_image(dir.path(), "fixed");
    let before = qemu_raw(&path, dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    let used = allocated(&path);
    let report = retrim(&path);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len,
        "file length unchanged"
    );
    assert_eq!(report.blocks_moved, 0);
    // Blocks are nominal 2 MiB units: MiB 2..6 (units 1 and 2) were written as zeros and hold
    // host space; every unit from 5 on (MiB 10..16) was never written, so qemu left it a
    // host hole: it gives nothing back and is not reclaimed (nor reported) again.
    assert_eq!(report.blocks_reclaimed_zero, 2, "{report:?}");
    assert_eq!(report.bytes_punched, 4 * MIB, "{report:?}");
    // qemu makes fixed images sparse; the 4 MiB written as zeros were allocated. Afterwards
    // only the 2 MiB of data (and the footer's page) hold host space.
    assert!(
        used >= 6 * MIB,
        "the zeroed MiB 2..6 were allocated before: {used}"
    );
    assert!(
        allocated(&path) <= 2 * MIB + 64 * 1024,
        "host usage {used} -> {}",
        allocated(&path)
    );
    assert!(
        qemu_raw(&path, dir.path()) == before,
        "every byte reads the same through qemu"
    );
    let again = retrim(&path);
    assert_eq!(
        (again.blocks_reclaimed, again.bytes_punched),
        (0, 0),
        "a second retrim finds nothing: {again:?}"
    );
}

#[test]
fn retrim_frees_zero_blocks_of_a_dynamic_vhd_in_place() {
    require_qemu();
    let dir = tempfile::tempdir().unwrap();
    let path = qemu_image(dir.path(), "dynamic");
    let before = qemu_raw(&path, dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    let report = retrim(&path);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len,
        "retrim never truncates"
    );
    assert_eq!(report.blocks_moved, 0);
    assert_eq!(
        report.blocks_reclaimed_zero, 2,
        "the two blocks zeroed after writing: {report:?}"
    );
    assert!(
        qemu_raw(&path, dir.path()) == before,
        "every byte reads the same through qemu"
    );
    // Prezeroed afterwards finds nothing more to free; it only closes the holes.
    let file = vdisk_core::testing::open_std_file(&path, Access::ReadWrite).unwrap();
    let mut img = DRIVER
        .open(Box::new(file), &OpenOptions::read_write())
        .unwrap();
    let again = compact(&mut *img, Mode::Prezeroed).unwrap();
    assert_eq!(again.blocks_reclaimed, 0);
    drop(img);
    assert!(std::fs::metadata(&path).unwrap().len() < len);
    assert!(qemu_raw(&path, dir.path()) == before);
}
