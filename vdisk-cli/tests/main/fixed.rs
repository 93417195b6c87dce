//! Fixed VHDs have nothing to move: every block-moving mode refuses them with exit 5 and leaves
//! the file byte-identical.

use super::support::{
    EXIT_UNSUPPORTED, Snapshot, info_ok, num, qemu_create, qemu_io, tempdir, text, vdisk_compact,
};

#[test]
fn block_moving_modes_refuse_a_fixed_vhd_with_exit_5_and_leave_it_unchanged() {
    let dir = tempdir();
    let image = dir.path().join("fixed.vhd");
    let size = qemu_create(&image, "fixed", 8 << 20);
    qemu_io(
        &image,
        &[
            "write -P 0xab 0 1M".to_string(),
            "write -P 0 2M 2M".to_string(),
        ],
    );
    let info = info_ok(&image);
    assert_eq!(text(&info, "type"), "fixed", "{info}");
    assert_eq!(num(&info, "virtual_size"), size, "{info}");
    let pristine = Snapshot::of(&image);
    for mode in ["prezeroed", "pretrimmed", "full", "quick"] {
        for dry in [false, true] {
            let extra: &[&str] = if dry { &["--dry-run"] } else { &[] };
            let out = vdisk_compact(&image, mode, extra);
            out.expect_code(EXIT_UNSUPPORTED);
            let report = out.json();
            let err = &report["error"];
            assert_eq!(err["exit_code"].as_u64(), Some(5), "{mode}: {report}");
            let message = err["message"].as_str().unwrap_or_default().to_lowercase();
            assert!(
                message.contains("fixed"),
                "{mode}: the message must say the disk is fixed: {report}"
            );
            pristine.assert_unchanged(&image, true, &format!("{mode} (dry run {dry}) on fixed"));

            let plain = super::support::run(
                super::support::vdisk_cmd()
                    .args(["compact", "--mode", mode])
                    .args(extra)
                    .arg(&image),
            );
            plain.expect_code(EXIT_UNSUPPORTED);
            assert!(
                plain.stderr.to_lowercase().contains("fixed"),
                "{mode}: stderr must explain: {}",
                plain.stderr
            );
        }
    }
}
