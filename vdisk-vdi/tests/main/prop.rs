//! Random write patterns against a byte model: what is written reads back, a compaction keeps
//! every byte and leaves a clean image, and writes after it land past every moved block.

use proptest::prelude::*;
use vdisk_core::{BlockDevice, FormatDriver, ImageKind, Mode, OpenOptions};
use vdisk_vdi::DRIVER;

use super::util::{compact, content, create, errors, open};

const BS: u64 = 4096;
const BLOCKS: u64 = 24;

fn write_op() -> impl Strategy<Value = (u64, usize, u8)> {
    (
        0..BLOCKS * BS - 1,
        1usize..3 * BS as usize,
        prop_oneof![Just(0u8), 1u8..=255],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_writes_read_back_and_survive_compaction_and_later_writes(
        before in prop::collection::vec(write_op(), 1..24),
        after in prop::collection::vec(write_op(), 0..8),
        mode in prop_oneof![Just(Mode::Full), Just(Mode::Prezeroed), Just(Mode::Pretrimmed)],
    ) {
        let size = BLOCKS * BS;
        let (img, mem) = create(ImageKind::Dynamic, size, BS);
        let mut model = vec![0u8; size as usize];
        let apply = |img: &dyn BlockDevice, model: &mut Vec<u8>, ops: &[(u64, usize, u8)]| {
            for &(at, len, byte) in ops {
                let len = len.min((size - at) as usize);
                img.write_at(&vec![byte; len], at).unwrap();
                model[at as usize..at as usize + len].fill(byte);
            }
        };
        apply(&*img, &mut model, &before);
        prop_assert!(content(&*img) == model);
        drop(img);
        let rw = || DRIVER.open(Box::new(mem.clone()), &OpenOptions::read_write()).unwrap();
        let mut img = rw();
        compact(&mut *img, mode).unwrap();
        prop_assert!(content(&*img) == model);
        drop(img);
        prop_assert!(errors(mem.to_vec()).is_empty());
        let img = rw();
        apply(&*img, &mut model, &after);
        prop_assert!(content(&*img) == model);
        drop(img);
        prop_assert!(errors(mem.to_vec()).is_empty());
        prop_assert!(content(&*open(mem.to_vec(), false).unwrap()) == model);
    }
}
