//! qemu as an oracle (Debian `qemu-utils`): `qemu-img` (create, convert, check, compare,
//! info) and `qemu-io` (write patterns, read everything back). A missing tool fails the test.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use super::{Out, num, require, run};

/// Runs `qemu-img ARGS...`.
pub fn qemu_img<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(require("qemu-img", "qemu-utils")).args(args))
}

/// Runs `qemu-io -f vpc` with one `-c` per command on `file`, expecting success.
#[track_caller]
pub fn qemu_io(file: &Path, cmds: &[String]) {
    qemu_io_as("vpc", file, cmds);
}

/// Runs `qemu-io -f FORMAT` with one `-c` per command on `file`, expecting success.
#[track_caller]
pub fn qemu_io_as(format: &str, file: &Path, cmds: &[String]) {
    if cmds.is_empty() {
        return;
    }
    let mut cmd = Command::new(require("qemu-io", "qemu-utils"));
    cmd.args(["-f", format]);
    for c in cmds {
        cmd.arg("-c").arg(c);
    }
    cmd.arg(file);
    let out = run(&mut cmd);
    out.ok();
    // qemu-io reports failed commands on stderr/stdout but may still exit 0.
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        !all.contains("failed") && !all.contains("Pattern verification"),
        "`{}` reported a failure:\n{all}",
        out.cmdline
    );
}

/// `qemu-img create -q -f FORMAT -o OPTIONS file SIZE` (`size` as qemu reads it: bytes, or
/// with a suffix such as `64M`), expecting success.
#[track_caller]
pub fn qemu_create_as(file: &Path, format: &str, options: &str, size: &str) {
    qemu_img([
        OsStr::new("create"),
        OsStr::new("-q"),
        OsStr::new("-f"),
        OsStr::new(format),
        OsStr::new("-o"),
        OsStr::new(options),
        file.as_os_str(),
        OsStr::new(size),
    ])
    .ok();
}

/// Creates a qemu-made VHDX with `qemu-img create -o OPTIONS` of `size` bytes.
#[track_caller]
pub fn qemu_create_vhdx(file: &Path, options: &str, size: u64) {
    qemu_create_as(file, "vhdx", options, &size.to_string());
}

/// Creates a qemu-made VHD of `subformat` (`dynamic` or `fixed`) with requested size `size`
/// (qemu rounds up to CHS geometry); returns the real virtual size qemu reports.
#[track_caller]
pub fn qemu_create(file: &Path, subformat: &str, size: u64) -> u64 {
    let options = format!("subformat={subformat}");
    qemu_create_as(file, "vpc", &options, &size.to_string());
    qemu_virtual_size(file)
}

/// The virtual size qemu sees.
#[track_caller]
pub fn qemu_virtual_size(file: &Path) -> u64 {
    let out = qemu_img([
        OsStr::new("info"),
        OsStr::new("--output=json"),
        OsStr::new("-f"),
        OsStr::new("vpc"),
        file.as_os_str(),
    ]);
    out.ok();
    num(&out.json(), "virtual-size")
}

/// `qemu-img compare -f vpc -F vpc a b`: exit code 0 identical, 1 different.
pub fn qemu_compare(a: &Path, b: &Path) -> Out {
    qemu_compare_as("vpc", a, b)
}

/// `qemu-img compare -f FORMAT -F FORMAT a b` (`vpc` for VHD, `vhdx`).
pub fn qemu_compare_as(format: &str, a: &Path, b: &Path) -> Out {
    qemu_img([
        OsStr::new("compare"),
        OsStr::new("-f"),
        OsStr::new(format),
        OsStr::new("-F"),
        OsStr::new(format),
        a.as_os_str(),
        b.as_os_str(),
    ])
}

/// Asserts qemu sees the same content in the VHDs `a` and `b`.
#[track_caller]
pub fn assert_qemu_identical(a: &Path, b: &Path) {
    assert_qemu_identical_as("vpc", a, b);
}

/// Asserts qemu sees the same content in `a` and `b`, both in `format`.
#[track_caller]
pub fn assert_qemu_identical_as(format: &str, a: &Path, b: &Path) {
    let out = qemu_compare_as(format, a, b);
    assert_eq!(
        out.code,
        0,
        "qemu-img compare says {} and {} differ:\n{}{}",
        a.display(),
        b.display(),
        out.stdout,
        out.stderr
    );
}

/// `qemu-img check` passes on `a`, and qemu reads `a` as `b` (both in `format`).
#[track_caller]
pub fn assert_qemu_checked_same(format: &str, a: &Path, b: &Path) {
    let check = qemu_img([
        OsStr::new("check"),
        OsStr::new("-f"),
        OsStr::new(format),
        a.as_os_str(),
    ]);
    assert_eq!(
        check.code,
        0,
        "qemu-img check {}: {}{}",
        a.display(),
        check.stdout,
        check.stderr
    );
    assert_qemu_identical_as(format, a, b);
}

/// qemu's verdict on an image: `qemu-img check` where qemu supports it (its vpc driver has no
/// checker and says so with exit 63), then `qemu-img info` (qemu's vpc open validates the
/// footer, header, BAT size and that no block lies past EOF) and a full read through qemu-io.
#[track_caller]
pub fn assert_qemu_valid(file: &Path) {
    let out = qemu_img([
        OsStr::new("check"),
        OsStr::new("-f"),
        OsStr::new("vpc"),
        file.as_os_str(),
    ]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        out.code == 0 || (out.code == 63 && all.contains("does not support checks")),
        "qemu-img check -f vpc {} failed ({}):\n{all}",
        file.display(),
        out.code
    );
    let size = qemu_virtual_size(file);
    qemu_read_all(file, size);
}

/// qemu opens `file` (`qemu-img info`) and reads its first `limit` bytes; for huge fixtures.
#[track_caller]
pub fn assert_qemu_opens(file: &Path, limit: u64) {
    let size = qemu_virtual_size(file).min(limit);
    qemu_read_all(file, size);
}

#[track_caller]
fn qemu_read_all(file: &Path, size: u64) {
    let out = run(Command::new(require("qemu-io", "qemu-utils"))
        .args(["-r", "-f", "vpc", "-c"])
        .arg(format!("read 0 {size}"))
        .arg(file));
    out.ok();
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains(&format!("read {size}/{size} bytes")),
        "qemu-io could not read all of {}:\n{all}",
        file.display()
    );
}
