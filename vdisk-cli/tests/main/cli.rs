//! The command-line contract around the oracle tests: usage errors, missing files, and the
//! fields `info` and `check` promise.

use super::roundtrip::mixed;
use super::support::{
    EXIT_USAGE, Snapshot, file_len, flag, info_ok, num, run, tempdir, vdisk, vdisk_cmd,
    vdisk_compact,
};

#[test]
fn unknown_mode_is_a_usage_error_with_exit_2_and_the_file_is_untouched() {
    let dir = tempdir();
    let s = mixed(dir.path());
    let pristine = Snapshot::of(&s.image);
    let out = vdisk_compact(&s.image, "fast", &[]);
    out.expect_code(EXIT_USAGE);
    assert!(!out.stderr.is_empty(), "usage errors explain themselves");
    pristine.assert_unchanged(&s.image, true, "usage error");
}

#[test]
fn missing_subcommand_or_file_is_a_usage_error_with_exit_2() {
    vdisk::<[&str; 0], &str>([]).expect_code(EXIT_USAGE);
    vdisk(["compact"]).expect_code(EXIT_USAGE);
    vdisk(["frobnicate", "x.vhd"]).expect_code(EXIT_USAGE);
}

#[test]
fn nonexistent_file_fails_with_exit_9_naming_the_file() {
    let dir = tempdir();
    let missing = dir.path().join("nope.vhd");
    let out = run(vdisk_cmd()
        .args(["compact", "--mode", "prezeroed"])
        .arg(&missing));
    out.expect_code(9);
    assert!(out.stderr.contains("nope.vhd"), "{}", out.stderr);
    assert!(!missing.exists(), "compaction must not create the file");
}

#[test]
fn info_and_check_report_the_contract_fields_for_a_healthy_qemu_image() {
    let dir = tempdir();
    let s = mixed(dir.path());
    let info = info_ok(&s.image);
    for f in [
        "file",
        "format",
        "type",
        "virtual_size",
        "block_size",
        "blocks_total",
        "allocated_blocks",
        "file_size",
        "details",
    ] {
        assert!(info.get(f).is_some(), "info lacks {f:?}: {info}");
    }
    assert_eq!(num(&info, "file_size"), file_len(&s.image));
    let out = run(vdisk_cmd().args(["check", "--json"]).arg(&s.image));
    out.ok();
    let check = out.json();
    assert!(flag(&check, "safe_to_compact"), "{check}");
    assert!(
        check["problems"].as_array().is_some_and(|p| p
            .iter()
            .all(|x| !x.to_string().to_lowercase().contains("error"))),
        "a qemu-made image has no error-level problems: {check}"
    );
}

#[test]
fn format_is_detected_by_content_not_by_file_name_extension() {
    let dir = tempdir();
    let s = mixed(dir.path());
    let renamed = dir.path().join("disk.img");
    std::fs::rename(&s.image, &renamed).unwrap();
    let out = run(vdisk_cmd()
        .args(["compact", "--json", "--mode", "prezeroed"])
        .arg(&renamed));
    out.ok();
    assert_eq!(num(&out.json(), "blocks_reclaimed"), s.zero_blocks);
    crate::main::support::assert_qemu_identical(&s.pristine, &renamed);
}

/// File names are data: quotes, backslashes, spaces and non-ASCII must survive into valid JSON.
#[test]
fn json_reports_escape_awkward_file_names() {
    let dir = tempdir();
    let s = mixed(dir.path());
    let name = "my \"disk\" \\ ü 1.vhd";
    let awkward = dir.path().join(name);
    std::fs::rename(&s.image, &awkward).unwrap();
    for args in [
        &["compact", "--json", "--dry-run"][..],
        &["info", "--json"][..],
        &["check", "--json"][..],
    ] {
        let out = run(vdisk_cmd().args(args).arg(&awkward));
        out.ok();
        let v = out.json();
        let file = v["file"].as_str().unwrap_or_default();
        assert!(
            file.ends_with(name),
            "{args:?}: file field {file:?} lost the name"
        );
    }
    let out = run(vdisk_cmd()
        .args(["compact", "--json"])
        .arg(dir.path().join("gone \"x\".vhd")));
    let v = out.json();
    assert!(
        v["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("gone \"x\".vhd")),
        "{v}"
    );
    assert!(v["error"]["exit_code"].as_u64().is_some(), "{v}");
}

/// A FIFO (or any non-regular file) is not an image. Opening one for reading blocks until a
/// writer appears, so a tool that opens before checking the file type hangs forever. The
/// bound below is a hang detector, not a performance limit: a correct run takes milliseconds.
#[test]
fn info_check_and_compact_on_a_fifo_fail_instead_of_hanging() {
    let dir = tempdir();
    // All four run at once, each on its own FIFO (one opening a shared FIFO read-write would
    // unblock the others); each gets the same 15 s before it is called hung.
    let mut children: Vec<(String, std::process::Child)> = [
        &["info", "--json"][..],
        &["check", "--json"][..],
        &["compact", "--json", "--dry-run"][..],
        &["compact", "--json"][..],
    ]
    .into_iter()
    .enumerate()
    .map(|(i, args)| {
        let fifo = dir.path().join(format!("pipe-{i}.vhd"));
        run(
            std::process::Command::new(crate::main::support::require("mkfifo", "coreutils"))
                .arg(&fifo),
        )
        .ok();
        let child = vdisk_cmd()
            .args(args)
            .arg(&fifo)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        (format!("{args:?}"), child)
    })
    .collect();
    let mut codes = Vec::new();
    for _ in 0..300 {
        let mut i = 0;
        while i < children.len() {
            if let Some(s) = children[i].1.try_wait().unwrap() {
                let (name, _) = children.remove(i);
                codes.push((name, s.code()));
            } else {
                i += 1;
            }
        }
        if children.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let hung: Vec<String> = children
        .iter_mut()
        .map(|(name, child)| {
            let _ = child.kill();
            let _ = child.wait();
            name.clone()
        })
        .collect();
    for (name, code) in &codes {
        assert!(
            matches!(code, Some(1 | 4 | 5)),
            "vdisk {name} on a FIFO: exit {code:?}"
        );
    }
    assert!(
        hung.is_empty(),
        "vdisk hung (15 s, then killed) on a FIFO for: {}",
        hung.join(", ")
    );
}

/// VMDK is a real disk image format vdisk does not handle: "unsupported" (5), never "invalid"
/// (4), and never touched. (qcow2 was here until vdisk compacted it: vdisk-cli's qcow2 tests.)
#[test]
fn a_vmdk_is_refused_as_unsupported_and_left_unchanged() {
    let dir = tempdir();
    let file = dir.path().join("disk.vmdk");
    crate::main::support::qemu_img([
        std::ffi::OsStr::new("create"),
        std::ffi::OsStr::new("-q"),
        std::ffi::OsStr::new("-f"),
        std::ffi::OsStr::new("vmdk"),
        file.as_os_str(),
        std::ffi::OsStr::new("8M"),
    ])
    .ok();
    let pristine = Snapshot::of(&file);
    let out = vdisk_compact(&file, "prezeroed", &[]);
    out.expect_code(5);
    assert_eq!(out.json()["error"]["kind"].as_str(), Some("unsupported"));
    pristine.assert_unchanged(&file, true, "vmdk");
}

/// Several files: each is handled on its own (a bad one does not stop the good ones) and the
/// exit code is the first failure's.
#[test]
fn several_files_are_each_handled_and_the_exit_code_is_the_first_failures() {
    let dir = tempdir();
    let good = mixed(dir.path());
    let garbage = dir.path().join("garbage.vhd");
    std::fs::write(&garbage, vec![0x5au8; 4096]).unwrap();
    let missing = dir.path().join("missing.vhd");
    let out = run(vdisk_cmd()
        .args(["compact", "--json", "--mode", "prezeroed"])
        .arg(&garbage)
        .arg(&good.image)
        .arg(&missing));
    out.expect_code(4);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 3, "one line per file: {}", out.stdout);
    assert_eq!(
        lines[0]["error"]["exit_code"].as_u64(),
        Some(4),
        "{}",
        lines[0]
    );
    assert_eq!(
        num(&lines[1], "blocks_reclaimed"),
        good.zero_blocks,
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2]["error"]["exit_code"].as_u64(),
        Some(9),
        "{}",
        lines[2]
    );
    crate::main::support::assert_qemu_identical(&good.pristine, &good.image);
}

/// The help of every `--format` option lists the formats this build creates and opens, the
/// same list `create` names when refusing an unknown one (both come from the registry).
#[test]
fn every_format_option_help_lists_the_registered_formats() {
    let dir = tempdir();
    let out = run(vdisk_cmd()
        .args([
            "create", "--format", "nonesuch", "--type", "dynamic", "--size", "1M",
        ])
        .arg(dir.path().join("x.img")));
    let known = out
        .stderr
        .split("formats it knows: ")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .unwrap_or_else(|| panic!("no list of formats in: {}", out.stderr))
        .to_string();
    assert!(known.contains("qcow2"), "{known}");
    for command in ["info", "check", "map", "compact", "create"] {
        let help = run(vdisk_cmd().args([command, "--help"]));
        help.expect_code(0);
        assert!(
            help.stdout.contains(&format!("({known})")),
            "{command}: {}",
            help.stdout
        );
        assert!(
            !help.stdout.contains("FORMATS"),
            "{command}: {}",
            help.stdout
        );
    }
}
