//! `--dry-run` reads only: the file keeps its bytes and mtime, and the prediction is what the
//! real run then does.

use super::roundtrip::mixed;
use super::support::{
    Snapshot, assert_qemu_identical, assert_report_fields, compact_ok, file_len, flag, num, tempdir,
};

fn dry_run_then_real(mode: &str) {
    let dir = tempdir();
    let s = mixed(dir.path());
    let before = Snapshot::of(&s.image);

    let predicted = compact_ok(&s.image, mode, &["--dry-run"]);
    assert_report_fields(&predicted);
    assert!(flag(&predicted, "dry_run"), "{predicted}");
    before.assert_unchanged(&s.image, true, &format!("{mode} --dry-run"));
    assert_eq!(
        num(&predicted, "bytes_before"),
        file_len(&s.image),
        "{predicted}"
    );

    let real = compact_ok(&s.image, mode, &[]);
    assert!(!flag(&real, "dry_run"), "{real}");
    assert_eq!(
        num(&predicted, "bytes_after"),
        file_len(&s.image),
        "{mode}: the dry run predicted another size than the real run produced"
    );
    for field in [
        "bytes_after",
        "blocks_reclaimed",
        "blocks_moved",
        "blocks_reclaimed_zero",
        "blocks_reclaimed_trimmed",
    ] {
        assert_eq!(
            num(&predicted, field),
            num(&real, field),
            "{mode}: dry run and real run disagree on {field}"
        );
    }
    assert_qemu_identical(&s.pristine, &s.image);
}

#[test]
fn prezeroed_dry_run_writes_nothing_and_predicts_the_real_result() {
    dry_run_then_real("prezeroed");
}

#[test]
fn full_dry_run_writes_nothing_and_predicts_the_real_result() {
    dry_run_then_real("full");
}

#[test]
fn pretrimmed_dry_run_writes_nothing_and_predicts_the_real_result() {
    dry_run_then_real("pretrimmed");
}
