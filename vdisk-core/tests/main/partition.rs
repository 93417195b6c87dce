//! Partition tables written by `sfdisk` (Debian package `fdisk`; a missing tool fails the
//! test) read back by [`vdisk_core::partition::read_layout`]: the same partitions at the same
//! sectors as `sfdisk --dump` lists, the table sectors reported, and a GPT whose primary header
//! is destroyed still read, through its backup, with a note.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};

use vdisk_core::partition::{Layout, PartitionKind, PartitionTable, Scheme, read_layout};
use vdisk_core::{BlockDevice, Error, Result, check_range};

/// A raw disk file as a read-only block device.
#[derive(Debug)]
struct RawDisk {
    file: File,
    size: u64,
}

impl RawDisk {
    fn open(path: &Path) -> RawDisk {
        let file = File::open(path).unwrap();
        let size = file.metadata().unwrap().len();
        RawDisk { file, size }
    }
}

impl BlockDevice for RawDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len())?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(e, "reading the test disk"))
    }
}

/// Runs sfdisk with `args`, feeding `stdin`; returns stdout.
fn sfdisk(args: &[&str], disk: &Path, stdin: &str) -> String {
    let mut child = Command::new("sfdisk")
        .args(args)
        .arg(disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run sfdisk: {e} (install the Debian package `fdisk`)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sfdisk {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// (number, start sector, sectors, type) of each partition in `sfdisk --dump` output.
fn dumped(dump: &str) -> Vec<(u32, u64, u64, String)> {
    let field = |line: &str, key: &str| -> Option<String> {
        line.split(',')
            .map(str::trim)
            .find_map(|f| f.strip_prefix(key))
            .map(|v| v.trim_start_matches([' ', '=']).trim().to_string())
    };
    dump.lines()
        .filter_map(|line| {
            let (node, rest) = line.split_once(':')?;
            let number: u32 = node
                .trim()
                .rsplit(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?;
            let rest = format!(",{rest}");
            Some((
                number,
                field(&rest, "start")?.parse().ok()?,
                field(&rest, "size")?.parse().ok()?,
                field(&rest, "type")?,
            ))
        })
        .collect()
}

fn table(disk: &Path) -> PartitionTable {
    match read_layout(&RawDisk::open(disk)).unwrap() {
        Layout::Table(t) => t,
        other => panic!("expected a partition table, got {other:?}"),
    }
}

/// Our partitions as (number, start sector, sectors).
fn ours(t: &PartitionTable) -> Vec<(u32, u64, u64)> {
    t.partitions
        .iter()
        .map(|p| (p.index, p.start / 512, p.len / 512))
        .collect()
}

fn new_disk(dir: &Path, name: &str, size: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    File::create(&path).unwrap().set_len(size).unwrap();
    path
}

#[test]
fn mbr_partitions_written_by_sfdisk_read_back_at_the_same_sectors_with_every_ebr() {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path(), "mbr.raw", 64 << 20);
    // Two primaries, an extended partition with four logical partitions at odd sectors.
    let script = "label: dos\n\
        start=63, size=4000, type=7\n\
        start=4096, size=8191, type=83\n\
        start=20000, size=100000, type=f\n\
        start=20001, size=9999, type=7\n\
        start=30011, size=5000, type=b\n\
        start=40000, size=20000, type=7\n\
        start=70001, size=49999, type=83\n";
    sfdisk(&["-q"], &disk, script);
    let dump = dumped(&sfdisk(&["--dump"], &disk, ""));
    let t = table(&disk);
    assert_eq!(t.scheme, Scheme::Mbr);
    let want: Vec<(u32, u64, u64)> = dump
        .iter()
        .filter(|(_, _, _, ty)| !matches!(ty.as_str(), "5" | "f" | "85"))
        .map(|&(n, s, l, _)| (n, s, l))
        .collect();
    assert_eq!(ours(&t), want, "sfdisk --dump: {dump:?}");
    for (p, (_, _, _, ty)) in t.partitions.iter().zip(dump.iter().filter(|d| d.3 != "f")) {
        match p.kind {
            PartitionKind::Mbr { type_id, .. } => {
                assert_eq!(format!("{type_id:x}"), *ty, "partition {}", p.index);
            }
            ref k => panic!("{k:?}"),
        }
    }
    // The MBR, and one EBR per logical partition, inside the extended partition.
    assert_eq!(t.metadata.len(), 5, "{:?}", t.metadata);
    assert_eq!(t.metadata[0], 0..512);
    for r in &t.metadata[1..] {
        assert!(r.start >= 20000 * 512 && r.end <= 120_000 * 512, "{r:?}");
    }
}

const BASIC: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";

fn gpt_disk(dir: &Path) -> std::path::PathBuf {
    let disk = new_disk(dir, "gpt.raw", 64 << 20);
    let script = format!(
        "label: gpt\n\
         start=2048, size=8192, type={BASIC}, name=\"data one\"\n\
         start=10241, size=30000, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
         start=50000, size=60000, type={BASIC}, name=\"third\"\n"
    );
    sfdisk(&["-q"], &disk, &script);
    disk
}

#[test]
fn gpt_partitions_written_by_sfdisk_read_back_with_types_names_and_both_copies_protected() {
    let dir = tempfile::tempdir().unwrap();
    let disk = gpt_disk(dir.path());
    let dump = dumped(&sfdisk(&["--dump"], &disk, ""));
    let t = table(&disk);
    assert_eq!(t.scheme, Scheme::Gpt);
    let want: Vec<(u32, u64, u64)> = dump.iter().map(|&(n, s, l, _)| (n, s, l)).collect();
    assert_eq!(ours(&t), want, "sfdisk --dump: {dump:?}");
    let names: Vec<(String, String)> = t
        .partitions
        .iter()
        .map(|p| match &p.kind {
            PartitionKind::Gpt {
                type_guid, name, ..
            } => (type_guid.to_string(), name.clone()),
            k => panic!("{k:?}"),
        })
        .collect();
    assert_eq!(names[0], (BASIC.to_string(), "data one".to_string()));
    assert_eq!(names[2].1, "third");
    for (ours, theirs) in names.iter().zip(&dump) {
        assert_eq!(ours.0, theirs.3);
    }
    let end = 64u64 << 20;
    assert!(t.metadata.contains(&(0..512)));
    assert!(t.metadata.contains(&(512..1024)));
    assert!(t.metadata.contains(&(end - 512..end)), "{:?}", t.metadata);
    assert!(
        t.metadata
            .iter()
            .any(|r| r.end == end - 512 && r.start < r.end),
        "the backup entry array before the backup header: {:?}",
        t.metadata
    );
}

#[test]
fn gpt_with_a_destroyed_primary_header_is_read_from_its_backup_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let disk = gpt_disk(dir.path());
    let good = table(&disk);
    File::options()
        .write(true)
        .open(&disk)
        .unwrap()
        .write_all_at(&[0u8; 512], 512)
        .unwrap();
    let t = table(&disk);
    assert_eq!(t.partitions, good.partitions);
    assert!(
        t.notes
            .iter()
            .any(|n| n.contains("primary gpt header is damaged")),
        "{:?}",
        t.notes
    );
    // sfdisk agrees the partitions are still there (it also falls back to the backup).
    let dump = dumped(&sfdisk(&["--dump"], &disk, ""));
    let want: Vec<(u32, u64, u64)> = dump.iter().map(|&(n, s, l, _)| (n, s, l)).collect();
    assert_eq!(ours(&t), want);
}
