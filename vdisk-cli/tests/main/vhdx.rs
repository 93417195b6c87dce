//! VHDX round trip through qemu-made images (qemu's vhdx driver has a real checker). VHDX
//! compaction is landing now: until it does, the only other acceptable answer is "unsupported"
//! (5) with the file untouched.

use std::ffi::OsStr;

use super::support::{
    EXIT_UNSUPPORTED, Snapshot, compact_ok, copy_to, file_len, libvhdi_read, num, qemu_img,
    require, run, tempdir, vdisk_compact,
};

#[test]
fn qemu_made_vhdx_compacts_with_every_byte_kept_and_passes_qemu_img_check() {
    let dir = tempdir();
    let image = dir.path().join("q.vhdx");
    let mb = 1u64 << 20;
    qemu_img(
        ["create", "-q", "-f", "vhdx", "-o", "block_size=1M"]
            .map(OsStr::new)
            .into_iter()
            .chain([image.as_os_str(), OsStr::new("16M")]),
    )
    .ok();
    let mut cmd = std::process::Command::new(require("qemu-io", "qemu-utils"));
    cmd.args(["-f", "vhdx"]);
    for c in [
        format!("write -P 0x11 0 {mb}"),
        format!("write -P 0x22 {mb} {mb}"),
        format!("write -P 0 {mb} {mb}"),
        format!("write -P 0x33 {} 4096", 5 * mb),
        format!("write -P 0x44 {} {mb}", 9 * mb),
        format!("write -z {} {mb}", 9 * mb),
        format!("write -P 0x55 {} {mb}", 15 * mb),
    ] {
        cmd.arg("-c").arg(c);
    }
    run(cmd.arg(&image)).ok();
    let pristine = copy_to(&image, dir.path(), "q.pristine.vhdx");
    let before = libvhdi_read(&image);

    let probe = vdisk_compact(&image, "prezeroed", &["--dry-run"]);
    if probe.code == EXIT_UNSUPPORTED {
        Snapshot::of(&pristine).assert_unchanged(&image, false, "unsupported VHDX");
        return;
    }
    probe.ok();
    let predicted = probe.json();
    let r = compact_ok(&image, "prezeroed", &[]);
    assert_eq!(num(&r, "bytes_after"), file_len(&image), "{r}");
    assert_eq!(
        num(&predicted, "bytes_after"),
        file_len(&image),
        "dry run: {predicted}"
    );
    assert!(
        file_len(&image) < file_len(&pristine),
        "the file must shrink"
    );
    let cmp = qemu_img(
        ["compare", "-f", "vhdx", "-F", "vhdx"]
            .map(OsStr::new)
            .into_iter()
            .chain([pristine.as_os_str(), image.as_os_str()]),
    );
    assert_eq!(
        cmp.code, 0,
        "qemu-img compare: {}{}",
        cmp.stdout, cmp.stderr
    );
    let check = qemu_img(
        ["check", "-f", "vhdx"]
            .map(OsStr::new)
            .into_iter()
            .chain([image.as_os_str()]),
    );
    assert_eq!(
        check.code, 0,
        "qemu-img check: {}{}",
        check.stdout, check.stderr
    );
    assert_eq!(libvhdi_read(&image), before, "libvhdi reads other bytes");

    let first = Snapshot::of(&image);
    let again = compact_ok(&image, "prezeroed", &[]);
    assert_eq!(num(&again, "blocks_reclaimed"), 0, "{again}");
    first.assert_unchanged(&image, false, "second VHDX run");
}
