//! Compaction on a nearly full host file system. When an image's zero blocks are host-file
//! holes (`cp --sparse=always` here), every block moved into one allocates host space; vdisk
//! gives each batch's sources back as soon as the table points at the copies, so the extra
//! space a compaction needs is one batch (64 MiB), not the bytes to move. Measured on a real,
//! small file system: a tmpfs mounted with `size=` (holes supported), as root.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::support::{copy_to, euid, qemu_img, require, run, tempdir, vdisk_compact};

const MIB: u64 = 1 << 20;

/// A tmpfs of `size` bytes mounted on a fresh directory; unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: u64) -> SmallFs {
        assert_eq!(euid(), 0, "mounting a small tmpfs needs root");
        let dir = tempdir();
        run(Command::new(require("mount", "mount"))
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path()))
        .ok();
        SmallFs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes free for files, as `df` says.
    fn avail(&self) -> u64 {
        let out = run(Command::new(require("df", "coreutils"))
            .args(["--output=avail", "-B1"])
            .arg(self.path()));
        out.ok();
        out.stdout.lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A 256 MiB image (`vhdx` in 1 MiB blocks or `vpc` in 2 MiB blocks): the first half written
/// with zeros, the second half with data, so every data block must move into the zeros.
fn half_zero(dir: &Path, format: &str) -> PathBuf {
    let image = dir.join(format!("half.{format}"));
    let opts = match format {
        "vhdx" => "block_size=1M",
        _ => "subformat=dynamic",
    };
    qemu_img(
        ["create", "-q", "-f", format, "-o", opts]
            .map(OsStr::new)
            .into_iter()
            .chain([image.as_os_str(), OsStr::new("256M")]),
    )
    .ok();
    run(Command::new(require("qemu-io", "qemu-utils"))
        .args(["-f", format, "-c", "write -P 0 0 128M", "-c"])
        .arg("write -P 0x5a 128M 128M")
        .arg(&image))
    .ok();
    image
}

fn compacts_in_one_batch_of_room(format: &str) {
    let dir = tempdir();
    let pristine = half_zero(dir.path(), format);
    // Room for the sparse copy (128 MiB of data and the metadata) and about 96 MiB more: more
    // than a batch, less than the 128 MiB to move.
    let fs = SmallFs::mount(232 * MIB);
    let image = fs.path().join(format!("img.{format}"));
    run(Command::new(require("cp", "coreutils"))
        .arg("--sparse=always")
        .arg(&pristine)
        .arg(&image))
    .ok();
    let before = fs.avail();
    assert!(
        before < 128 * MIB && before > 64 * MIB,
        "the test needs less room than the bytes to move: {before}"
    );
    let out = vdisk_compact(&image, "prezeroed", &[]);
    out.ok();
    assert!(
        fs.avail() >= before,
        "the host is fuller after compaction: {} < {before}",
        fs.avail()
    );
    let kept = copy_to(&image, dir.path(), &format!("after.{format}"));
    let cmp = qemu_img(
        ["compare", "-f", format, "-F", format]
            .map(OsStr::new)
            .into_iter()
            .chain([pristine.as_os_str(), kept.as_os_str()]),
    );
    assert_eq!(
        cmp.code, 0,
        "qemu-img compare: {}{}",
        cmp.stdout, cmp.stderr
    );
    if format == "vhdx" {
        let check = qemu_img(
            ["check", "-f", format]
                .map(OsStr::new)
                .into_iter()
                .chain([kept.as_os_str()]),
        );
        assert_eq!(
            check.code, 0,
            "qemu-img check: {}{}",
            check.stdout, check.stderr
        );
    }
}

#[test]
fn a_vhdx_whose_zero_blocks_are_holes_compacts_with_less_free_space_than_it_moves() {
    compacts_in_one_batch_of_room("vhdx");
}

#[test]
fn a_vhd_whose_zero_blocks_are_holes_compacts_with_less_free_space_than_it_moves() {
    compacts_in_one_batch_of_room("vpc");
}
