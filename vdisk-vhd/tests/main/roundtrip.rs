//! Create, write, read back.

use vdisk_core::{BlockIndex, BlockState, CreateSpec, ErrorKind, FormatDriver, ImageKind, MemFile};
use vdisk_vhd::DRIVER;

use super::util::{check, content, create_dynamic, open};

#[test]
fn created_dynamic_reads_back_patterns_and_survives_reopen() {
    let (img, mem) = create_dynamic(10 << 20, 1 << 20);
    assert_eq!(img.size(), 10 << 20);
    let mut expect = vec![0u8; img.size() as usize];
    let writes: &[(u64, usize, u8)] = &[
        (0, 512, 1),
        (1000, 3000, 2),
        ((1 << 20) - 7, 20, 3),
        (5 << 20, 2 << 20, 4),
        ((10 << 20) - 1, 1, 5),
        (1000, 10, 0),
    ];
    for &(off, len, val) in writes {
        let data = vec![val; len];
        img.write_at(&data, off).unwrap();
        expect[off as usize..off as usize + len].copy_from_slice(&data);
    }
    assert_eq!(content(&*img), expect);
    drop(img);
    let again = open(mem.to_vec(), false).unwrap();
    assert_eq!(content(&*again), expect);
    assert!(check(mem.to_vec()).is_empty(), "{:?}", check(mem.to_vec()));
    assert_eq!(
        again.write_at(&[1], 0).unwrap_err().kind(),
        ErrorKind::ReadOnly
    );
    assert_eq!(
        again
            .read_at(&mut [0u8; 2], again.size() - 1)
            .unwrap_err()
            .kind(),
        ErrorKind::OutOfRange
    );
}

#[test]
fn created_fixed_is_size_plus_footer_and_refuses_block_compaction() {
    let mem = MemFile::new();
    let mut img = DRIVER
        .create(
            Box::new(mem.clone()),
            &CreateSpec::new(ImageKind::Fixed, 3 << 20),
        )
        .unwrap();
    assert_eq!(mem.to_vec().len() as u64, img.size() + 512);
    img.write_at(&[7; 100], 50).unwrap();
    assert_eq!(mem.to_vec()[50..150], [7; 100]);
    assert_eq!(
        img.block_state(BlockIndex(0)).unwrap(),
        BlockState::Allocated {
            host: vdisk_core::HostOffset(0)
        }
    );
    let err = img.as_compactable().err().unwrap();
    assert_eq!(err.kind(), ErrorKind::WrongType);
    assert!(err.message().contains("retrim"), "{err}");
}

#[test]
fn create_rejects_differencing_without_parent_and_odd_block_sizes() {
    let e = DRIVER
        .create(
            Box::new(MemFile::new()),
            &CreateSpec::new(ImageKind::Differencing, 1 << 20),
        )
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("parent"), "{e}");
    let e = DRIVER
        .create(
            Box::new(MemFile::new()),
            &CreateSpec::new(ImageKind::Dynamic, 1 << 20).block_size(3000),
        )
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = DRIVER
        .create(
            Box::new(MemFile::from_bytes(vec![1])),
            &CreateSpec::new(ImageKind::Dynamic, 1 << 20),
        )
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn write_into_existing_block_sets_its_bitmap_bits() {
    let (img, mem) = create_dynamic(4 << 20, 1 << 20);
    img.write_at(&[1; 10], 0).unwrap();
    let host = match img.block_state(BlockIndex(0)).unwrap() {
        BlockState::Allocated { host } => host.0 as usize,
        s => panic!("{s:?}"),
    };
    // New blocks get an all-ones bitmap, like qemu.
    let bytes = mem.to_vec();
    assert!(bytes[host..host + 256].iter().all(|&b| b == 0xff));
}

#[test]
fn created_size_is_the_request_rounded_up_to_a_sector() {
    for (asked, got) in [
        (1u64, 512u64),
        (512, 512),
        (1_000_000, 1_000_448),
        (5 << 30, 5 << 30),
    ] {
        let (img, _) = create_dynamic(asked, 2 << 20);
        assert_eq!(img.size(), got);
        let details = img.details();
        let chs: u64 = details
            .iter()
            .find(|(k, _)| k == "chs size")
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert!(chs <= got);
    }
}
