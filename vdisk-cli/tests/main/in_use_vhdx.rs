//! A VHDX that qemu has open (qemu takes OFD locks on the image) is neither compacted nor
//! checked: exit 3, file untouched (bytes and mtime); once qemu lets go the same command
//! succeeds. `in_use.rs` covers VHD.

use super::in_use::Holder;
use super::killed::{Subject, build, compact};
use super::support::{EXIT_IN_USE, Snapshot, file_len, run, tempdir, vdisk_cmd};

fn refused_while_qemu_holds_it(extra: &[&str]) {
    let dir = tempdir();
    let subject = Subject {
        pristine: build(dir.path(), "held.vhdx", &vdisk_vhdx::DRIVER, 12, 1 << 20),
        qemu_format: "vhdx",
    };
    let file = subject.copy("in-use");
    let before = Snapshot::of(&file);
    {
        let _qemu = Holder::start_format(&file, "vhdx", extra);
        for args in [
            &["compact", "--json", "--mode", "prezeroed"][..],
            &["compact", "--json", "--mode", "prezeroed", "--dry-run"][..],
            &["check", "--json"][..],
        ] {
            let out = run(vdisk_cmd().args(args).arg(&file));
            out.expect_code(EXIT_IN_USE);
            let what = format!(
                "`vdisk {}` while qemu-io {extra:?} holds it",
                args.join(" ")
            );
            assert!(out.stdout.contains("in-use"), "{what}: {}", out.stdout);
            before.assert_unchanged(&file, true, &what);
        }
    }
    let len = file_len(&file);
    compact(&file).ok();
    assert!(file_len(&file) < len, "compacts once qemu is gone");
    subject.assert_same_content(&file, "after qemu quit");
}

#[test]
fn vhdx_open_for_writing_in_qemu_is_refused_with_exit_3_and_unchanged() {
    refused_while_qemu_holds_it(&[]);
}

#[test]
fn vhdx_open_read_only_in_qemu_is_refused_for_compaction_with_exit_3_and_unchanged() {
    let dir = tempdir();
    let subject = Subject {
        pristine: build(dir.path(), "held.vhdx", &vdisk_vhdx::DRIVER, 12, 1 << 20),
        qemu_format: "vhdx",
    };
    let file = subject.copy("in-use-ro");
    let before = Snapshot::of(&file);
    {
        let _qemu = Holder::start_format(&file, "vhdx", &["-r"]);
        let out = run(vdisk_cmd()
            .args(["compact", "--json", "--mode", "prezeroed"])
            .arg(&file));
        out.expect_code(EXIT_IN_USE);
        before.assert_unchanged(&file, true, "compact while qemu-io -r holds it");
        // Readers share: check works while qemu only reads.
        run(vdisk_cmd().args(["check", "--json"]).arg(&file)).ok();
    }
    compact(&file).ok();
    subject.assert_same_content(&file, "after qemu quit");
}
