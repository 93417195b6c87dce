//! The zero scan skips host-file holes (SEEK_DATA/SEEK_HOLE) without reading them, and still
//! finds data that lies after a hole inside a block.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vdisk_core::{
    CancelToken, CompactOptions, Compactor, CreateSpec, FormatDriver, GenericCompactor, HostFile,
    ImageKind, Mode, NoProgress, OpenOptions, StdFile,
};
use vdisk_vhdx::DRIVER;

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
fn blocks_wholly_in_host_holes_are_reclaimed_without_a_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("holes.vhdx");
    let img = DRIVER
        .create(
            Box::new(StdFile::create_new(&path).unwrap()),
            &CreateSpec::new(ImageKind::Dynamic, 8 * BS).block_size(BS),
        )
        .unwrap();
    for b in 0..4u64 {
        img.write_at(&vec![b as u8 + 1; BS as usize], b * BS)
            .unwrap();
    }
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
    // Block 1 punched out whole; block 2 too, except its last 4 KiB.
    let raw = StdFile::open(&path, vdisk_core::Access::ReadWrite).unwrap();
    raw.punch_hole(hosts[1], BS).unwrap();
    raw.punch_hole(hosts[2], BS - 4096).unwrap();
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
    assert_eq!(zero, vec![1], "block 2 keeps the data after its hole");
    assert_eq!(plan.blocks_zero_from_holes, 1);
    // Blocks 0 and 3 stop at their first chunk, block 2 reads its last 4 KiB only.
    assert!(
        scanned <= 2 * BS + 4096,
        "read {scanned} bytes: a punched range was read"
    );
    c.apply(&mut *img, &plan, &NoProgress, &CancelToken::new())
        .unwrap();
    assert!(content(&*img) == before, "content unchanged");
}
