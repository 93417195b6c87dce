//! libvhdi as an oracle: an independent reader of VHD and VHDX (Debian `python3-libvhdi`,
//! driven through the system `/usr/bin/python3`). A missing module fails the test.

use std::path::Path;
use std::process::Command;

use super::{BLOCK, num, require, run, text};

/// The interpreter that has Debian's `pyvhdi` (the pyenv `python3` on PATH does not).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// What libvhdi reads through an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Libvhdi {
    /// Media size libvhdi reports.
    pub media_size: u64,
    /// SHA-256 of the bytes read (every virtual byte, or the prefix asked for).
    pub sha256: String,
    /// Indexes of `block`-sized units that hold a non-zero byte.
    pub nonzero_blocks: Vec<u64>,
    /// Disk type libvhdi reports (2 fixed, 3 dynamic, 4 differencing).
    pub disk_type: u64,
}

const PYVHDI_SCRIPT: &str = r#"
import hashlib, json, sys
import pyvhdi
path, block, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
f = pyvhdi.file()
f.open(path)
n = f.get_media_size()
h = hashlib.sha256()
nonzero = []
off = 0
chunk = min(1 << 20, block)
end = n if limit < 0 else min(n, limit)
while off < end:
    want = min(chunk, end - off)
    b = f.read_buffer_at_offset(want, off)
    if len(b) != want:
        sys.exit("short read at %d: %d of %d" % (off, len(b), want))
    h.update(b)
    if b.count(0) != len(b):
        blk = off // block
        if not nonzero or nonzero[-1] != blk:
            nonzero.append(blk)
    off += want
print(json.dumps({"media_size": n, "sha256": h.hexdigest(),
                  "nonzero_blocks": nonzero, "disk_type": f.get_disk_type()}))
f.close()
"#;

fn pyvhdi(file: &Path, block: u64, limit: Option<u64>) -> Libvhdi {
    let python = require(SYSTEM_PYTHON, "python3-libvhdi");
    let limit = limit.map_or_else(|| "-1".to_string(), |l| l.to_string());
    let out = run(Command::new(python)
        .arg("-c")
        .arg(PYVHDI_SCRIPT)
        .arg(file)
        .arg(block.to_string())
        .arg(limit));
    assert!(
        !out.stderr.contains("No module named 'pyvhdi'"),
        "pyvhdi is missing for {SYSTEM_PYTHON}: install the Debian package `python3-libvhdi`"
    );
    out.ok();
    let v = out.json();
    Libvhdi {
        media_size: num(&v, "media_size"),
        sha256: text(&v, "sha256").to_string(),
        nonzero_blocks: v["nonzero_blocks"]
            .as_array()
            .expect("nonzero_blocks")
            .iter()
            .map(|x| x.as_u64().expect("block index"))
            .collect(),
        disk_type: num(&v, "disk_type"),
    }
}

/// Opens `file` with libvhdi and reads every virtual byte.
#[track_caller]
pub fn libvhdi_read(file: &Path) -> Libvhdi {
    pyvhdi(file, BLOCK, None)
}

/// Like [`libvhdi_read`], with non-zero blocks counted in units of `block` bytes.
#[track_caller]
pub fn libvhdi_read_blocks(file: &Path, block: u64) -> Libvhdi {
    pyvhdi(file, block, None)
}

/// Opens `file` with libvhdi and reads only the first `limit` bytes (for huge empty fixtures).
#[track_caller]
pub fn libvhdi_read_prefix(file: &Path, limit: u64) -> Libvhdi {
    pyvhdi(file, BLOCK, Some(limit))
}

/// Asserts libvhdi reads exactly the same bytes from both images.
#[track_caller]
pub fn assert_libvhdi_identical(a: &Path, b: &Path) {
    let (x, y) = (libvhdi_read(a), libvhdi_read(b));
    assert_eq!(
        x.media_size,
        y.media_size,
        "libvhdi media size differs: {} vs {}",
        a.display(),
        b.display()
    );
    assert_eq!(
        x.sha256,
        y.sha256,
        "libvhdi reads different content from {} and {}",
        a.display(),
        b.display()
    );
}
