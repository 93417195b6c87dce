//! Random chains and write patterns: compacting any member in any byte-exact mode leaves every
//! virtual byte of every level as it was.

use proptest::prelude::*;
use vdisk_core::{MIB, Mode};

use super::diff::{assert_levels, base, child, contents, open};
use super::util::compact;

/// One guest write: (offset as a fraction of the disk, length in 512-byte sectors, kind).
/// Kind 0: zeros; 1: a copy of what the parent shows there; other: that byte.
type Write = (f64, u64, u8);

fn apply(path: &std::path::Path, parent: Option<&std::path::Path>, writes: &[Write], size: u64) {
    let image = open(path, true).unwrap();
    let parent = parent.map(|p| open(p, false).unwrap());
    for &(at, sectors, kind) in writes {
        let off = ((at * size as f64) as u64 / 512 * 512).min(size - 512);
        let len = (sectors * 512).min(size - off) as usize;
        let data = match (kind, &parent) {
            (0, _) => vec![0; len],
            (1, Some(p)) => {
                let mut b = vec![0; len];
                p.read_at(&mut b, off).unwrap();
                b
            }
            (k, _) => vec![k; len],
        };
        image.write_at(&data, off).unwrap();
    }
    image.flush().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn compacting_any_member_of_a_random_chain_keeps_every_byte(
        blocks in 2u64..7,
        tail_sectors in prop_oneof![Just(0u64), 1u64..2048],
        depth in 2usize..4,
        writes in prop::collection::vec(
            prop::collection::vec(
                (0.0f64..1.0, 1u64..3000, prop_oneof![Just(0u8), Just(1u8), 2u8..255]),
                0..6,
            ),
            3,
        ),
        member in 0usize..3,
        pretrimmed in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        // A last block reaching past the end of the disk, sometimes.
        let size = blocks * MIB + tail_sectors * 512;
        let mut chain = vec![base(dir.path(), "l0.vhdx", size, MIB)];
        apply(&chain[0], None, &writes[0], size);
        for level in 1..depth {
            let path = child(dir.path(), &format!("l{level}.vhdx"), &chain[level - 1]);
            apply(&path, Some(&chain[level - 1]), &writes[level], size);
            chain.push(path);
        }
        let model = contents(&chain);
        let member = member % depth;
        let mode = if pretrimmed { Mode::Pretrimmed } else { Mode::Prezeroed };
        let before = std::fs::metadata(&chain[member]).unwrap().len();
        let mut image = open(&chain[member], true).unwrap();
        compact(&mut *image, mode).unwrap();
        drop(image);
        prop_assert!(std::fs::metadata(&chain[member]).unwrap().len() <= before);
        assert_levels(&contents(&chain), &model, &format!("member {member} {mode}"));
    }
}
