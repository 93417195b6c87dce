//! The zero scan skips host-file holes (SEEK_DATA/SEEK_HOLE) without reading them, and still
//! finds data that lies after a hole inside a block.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vdisk_core::{
    CancelToken, CompactOptions, Compactor, CreateSpec, FormatDriver, GenericCompactor, HostFile,
    ImageKind, Mode, NoProgress, OpenOptions, StdFile,
};
use vdisk_vhd::DRIVER;

use super::util::content;

/// A real file that counts the bytes read through it.
#[derive(Debug)]
struct Counting {
    file: StdFile,
    read: Arc<AtomicU64>,
}

impl HostFile for Counting {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> vdisk_core::Result<()> {
        self.read.fetch_add(buf.len() as u64, Ordering::SeqCst);
        self.file.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> vdisk_core::Result<()> {
        self.file.write_at(buf, offset)
    }
    fn len(&self) -> vdisk_core::Result<u64> {
        self.file.len()
    }
    fn set_len(&self, len: u64) -> vdisk_core::Result<()> {
        self.file.set_len(len)
    }
    fn sync(&self) -> vdisk_core::Result<()> {
        self.file.sync()
    }
    fn next_data(&self, offset: u64) -> vdisk_core::Result<Option<u64>> {
        self.file.next_data(offset)
    }
    fn next_hole(&self, offset: u64) -> vdisk_core::Result<u64> {
        self.file.next_hole(offset)
    }
    fn is_writable(&self) -> bool {
        true
    }
}

const BS: u64 = 1 << 20;

#[test]
fn zero_scan_reads_only_what_the_host_file_stores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("holes.vhd");
    let img = DRIVER
        .create(
            Box::new(StdFile::create_new(&path).unwrap()),
            &CreateSpec::new(ImageKind::Dynamic, 8 * BS).block_size(BS),
        )
        .unwrap();
    // Blocks 0..4 hold data; then block 1's data is punched out entirely, block 2's too except
    // one sector written at its very end, and block 3 is overwritten with zeros (stored).
    for b in 0..4u64 {
        img.write_at(&vec![b as u8 + 1; BS as usize], b * BS)
            .unwrap();
    }
    img.write_at(&vec![0; BS as usize], 3 * BS).unwrap();
    let hosts: Vec<u64> = (0..4)
        .map(|b| {
            img.block_state(vdisk_core::BlockIndex(b))
                .unwrap()
                .host()
                .unwrap()
                .0
        })
        .collect();
    img.flush().unwrap();
    drop(img);
    let raw = StdFile::open(&path, vdisk_core::Access::ReadWrite).unwrap();
    // The data follows a 512-byte sector bitmap (1 MiB block: 2048 sectors, one bitmap sector).
    for b in [1, 2] {
        raw.punch_hole(hosts[b] + 512, BS).unwrap();
    }
    raw.write_at(&[9u8; 512], hosts[2] + 512 + BS - 512)
        .unwrap();
    raw.sync().unwrap();
    drop(raw);

    let read = Arc::new(AtomicU64::new(0));
    let file = Counting {
        file: StdFile::open(&path, vdisk_core::Access::ReadWrite).unwrap(),
        read: Arc::clone(&read),
    };
    let mut img = DRIVER
        .open(Box::new(file), &OpenOptions::read_write())
        .unwrap();
    let before = content(&*img);
    assert_eq!(
        before[(3 * BS - 1) as usize],
        9,
        "the sector after the hole"
    );
    let opened = read.load(Ordering::SeqCst);
    let c = GenericCompactor;
    let plan = c
        .plan(
            &*img,
            &CompactOptions::new(Mode::Prezeroed),
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap();
    let scanned = read.load(Ordering::SeqCst) - opened;
    let zero: Vec<u64> = plan.reclaim.iter().map(|(b, _)| b.0).collect();
    assert_eq!(zero, vec![1, 3], "block 2 has data after its hole");
    // Block 3 (1 MiB of stored zeros) is read whole, blocks 0 and 2 stop at their first
    // non-zero chunk, block 1 costs at most the file-system pages it shares with its bitmap.
    assert!(
        scanned < 2 * BS + 64 * 1024,
        "read {scanned} bytes: the punched ranges were read"
    );
    c.apply(&mut *img, &plan, &NoProgress, &CancelToken::new())
        .unwrap();
    assert!(content(&*img) == before, "content unchanged");
}
