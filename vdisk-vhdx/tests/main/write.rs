//! Guest writes through `write_at`: qemu, libvhdi and vdisk read back exactly what was
//! written, before and after compaction, and a crash leaves old or new content per block.

use std::path::Path;

use proptest::prelude::*;
use vdisk_core::testing::{Fault, FaultyFile, Survivors};
use vdisk_core::{
    Access, BlockIndex, BlockState, CreateSpec, DiskImage, ErrorKind, FormatDriver, ImageKind, MIB,
    MemFile, Mode,
};

use super::create::{create_file, libvhdi_bytes, qemu_accepts, qemu_raw};
use super::util::{check_errors, compact, content, open_bytes, open_path, open_rw, run};

/// Writes that cover data, zeros, partial blocks, block boundaries, the last sector and
/// unaligned bytes; applied to the image and to the model.
fn patterns(block: u64, size: u64) -> Vec<(u64, Vec<u8>)> {
    vec![
        (0, vec![0x11; 4096]),
        (12345, vec![0x55; 777]),
        (block - 512, vec![0x22; 1024]),
        (
            2 * block + block / 2,
            vec![0x33; (block / 2 + 1024) as usize],
        ),
        (2 * block + block / 2 + 100, vec![0; 5000]),
        (3 * block + 7, vec![0x66; 9000]),
        (3 * block, vec![0; block as usize]),
        (4 * block + 4096, vec![0; 8192]),
        (size - 512, vec![0x44; 512]),
    ]
}

fn apply(image: &dyn DiskImage, model: &mut [u8], writes: &[(u64, Vec<u8>)]) {
    for (at, data) in writes {
        image.write_at(data, *at).expect("write_at");
        model[*at as usize..*at as usize + data.len()].copy_from_slice(data);
    }
}

/// Every reader agrees with `model`; qemu only for 512-byte sectors.
fn assert_all_read(path: &Path, model: &[u8], sector: u32, what: &str) {
    if sector == 512 {
        qemu_accepts(path, model.len() as u64);
        assert!(qemu_raw(path) == model, "{what}: qemu-img convert differs");
        let p = path.to_str().unwrap();
        let out = run("qemu-io", &["-f", "vhdx", "-c", "read -P 0x11 0 4k", p]);
        assert!(
            !out.contains("Pattern verification failed"),
            "{what}: {out}"
        );
        let out = run(
            "qemu-io",
            &[
                "-f",
                "vhdx",
                "-c",
                &format!("read -P 0x44 {} 512", model.len() - 512),
                p,
            ],
        );
        assert!(
            !out.contains("Pattern verification failed"),
            "{what}: {out}"
        );
    }
    assert!(libvhdi_bytes(path) == model, "{what}: libvhdi differs");
    let image = open_path(path).unwrap();
    assert!(content(&*image) == model, "{what}: vdisk differs");
    drop(image);
    let bytes = std::fs::read(path).unwrap();
    let errors = check_errors(bytes);
    assert!(errors.is_empty(), "{what}: check: {errors:?}");
}

fn roundtrip(kind: ImageKind, block: u64, sector: u32) {
    let dir = tempfile::tempdir().unwrap();
    let size = 5 * block + 3 * u64::from(sector);
    let what = format!("{kind:?} {block} {sector}");
    let spec = CreateSpec::new(kind, size)
        .block_size(block)
        .logical_sector_size(sector);
    let (path, image) = create_file(dir.path(), "w.vhdx", &spec);
    let mut model = vec![0u8; size as usize];
    apply(&*image, &mut model, &patterns(block, size));
    image.flush().unwrap();
    assert!(
        content(&*image) == model,
        "{what}: reads back in the same open"
    );
    if kind == ImageKind::Dynamic {
        assert_eq!(
            image.block_state(BlockIndex(4)).unwrap(),
            BlockState::Unallocated,
            "{what}: zeros do not allocate"
        );
    }
    drop(image);
    assert_all_read(&path, &model, sector, &what);

    let file = vdisk_core::testing::open_std_file(&path, Access::ReadWrite).unwrap();
    let mut image = open_rw(file).unwrap();
    match compact(&mut *image, Mode::Prezeroed) {
        Ok(_) => {}
        Err(e) if kind == ImageKind::Fixed && e.kind() == ErrorKind::WrongType => {}
        Err(e) => panic!("{what}: compact: {e}"),
    }
    if kind == ImageKind::Dynamic {
        assert!(
            !matches!(
                image.block_state(BlockIndex(3)).unwrap(),
                BlockState::Allocated { .. }
            ),
            "{what}: the block overwritten with zeros was freed"
        );
    }
    drop(image);
    assert_all_read(&path, &model, sector, &format!("{what} compacted"));
}

#[test]
fn writes_read_back_identically_in_qemu_libvhdi_and_vdisk_before_and_after_compaction() {
    for kind in [ImageKind::Fixed, ImageKind::Dynamic] {
        for block in [MIB, 2 * MIB, 32 * MIB] {
            roundtrip(kind, block, 512);
        }
    }
}

#[test]
fn writes_on_4k_sector_images_read_back_in_libvhdi_and_vdisk() {
    for kind in [ImageKind::Fixed, ImageKind::Dynamic] {
        for block in [MIB, 2 * MIB] {
            roundtrip(kind, block, 4096);
        }
    }
}

#[test]
fn writes_change_data_write_guid_once_and_read_only_opens_refuse_writes() {
    let file = MemFile::new();
    let handle = file.clone();
    let image = vdisk_vhdx::DRIVER
        .create(
            Box::new(file),
            &CreateSpec::new(ImageKind::Dynamic, 4 * MIB).block_size(MIB),
        )
        .unwrap();
    let guid = |image: &dyn DiskImage| {
        image
            .details()
            .into_iter()
            .find(|(k, _)| k == "data write guid")
            .unwrap()
            .1
    };
    let before = guid(&*image);
    image.write_at(&[0; 100], 5).unwrap();
    assert_eq!(
        guid(&*image),
        before,
        "zeros on a zero block change no reads"
    );
    image.write_at(&[1; 100], 5).unwrap();
    let after = guid(&*image);
    assert_ne!(after, before, "first change of reads");
    image.write_at(&[2; 100], 3 * MIB).unwrap();
    assert_eq!(guid(&*image), after, "once per session");
    assert_eq!(
        image.write_at(&[1], 4 * MIB).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    assert_eq!(
        image.write_at(&[1; 2], 4 * MIB - 1).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    drop(image);
    let bytes = handle.to_vec();
    let ro = open_bytes(&bytes).unwrap();
    assert_eq!(
        ro.write_at(&[1], 0).unwrap_err().kind(),
        ErrorKind::ReadOnly
    );
    assert_eq!(super::util::read(&*ro, 5, 100), vec![1; 100]);
}

fn created_dynamic(size: u64, block: u64) -> Vec<u8> {
    let file = MemFile::new();
    let handle = file.clone();
    let image = vdisk_vhdx::DRIVER
        .create(
            Box::new(file),
            &CreateSpec::new(ImageKind::Dynamic, size).block_size(block),
        )
        .unwrap();
    drop(image);
    handle.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_writes_match_a_model_and_survive_reopen(
        writes in proptest::collection::vec((0u64..(4 * MIB + 1536), 1usize..300_000, 0u8..4), 1..12)
    ) {
        let size = 4 * MIB + 1536;
        let file = MemFile::from_bytes(created_dynamic(size, MIB));
        let handle = file.clone();
        let image = open_rw(file).unwrap();
        let mut model = vec![0u8; size as usize];
        for (at, len, fill) in writes {
            let len = len.min((size - at) as usize);
            let data: Vec<u8> = (0..len).map(|i| if fill == 0 { 0 } else { (i as u8) ^ fill }).collect();
            image.write_at(&data, at).unwrap();
            model[at as usize..at as usize + len].copy_from_slice(&data);
        }
        prop_assert!(content(&*image) == model);
        drop(image);
        let bytes = handle.to_vec();
        let image = open_bytes(&bytes).unwrap();
        prop_assert!(content(&*image) == model);
        prop_assert!(check_errors(bytes).is_empty());
    }
}

#[test]
fn allocating_write_survives_a_crash_at_every_write() {
    let size = 4 * MIB;
    let base = {
        let file = MemFile::from_bytes(created_dynamic(size, MIB));
        let handle = file.clone();
        let image = open_rw(file).unwrap();
        image.write_at(&[7; 4096], MIB).unwrap();
        drop(image);
        handle.to_vec()
    };
    let old = content(&*open_bytes(&base).unwrap());
    // Spans block 0 (new), block 1 (allocated: in place) and block 2 (new).
    let (at, data) = (MIB - 1000, vec![9u8; MIB as usize + 2000]);
    let mut new = old.clone();
    new[at as usize..at as usize + data.len()].copy_from_slice(&data);
    let mut cut = 0;
    for n in 1.. {
        let f = FaultyFile::new(base.clone());
        let image = open_rw(f.clone()).unwrap();
        f.set_limit(n, Fault::Crash);
        let result = image.write_at(&data, at);
        drop(image);
        if !f.crashed() {
            result.unwrap();
            break;
        }
        cut += 1;
        let pending = f.pending();
        let mut survivors = vec![Survivors::SyncedOnly, Survivors::All];
        survivors.extend((0..pending).map(Survivors::Prefix));
        // Unsynced writes may reach the disk in any order.
        survivors.extend(
            (0..6u32).map(|i| Survivors::Mask(0x9E37_79B9_7F4A_7C15u64.rotate_left(7 * i))),
        );
        for s in survivors {
            let bytes = f.after_crash(s);
            let what = format!("cut at {n}, {s:?}");
            let image = open_bytes(&bytes).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            let got = content(&*image);
            drop(image);
            for b in 0..(size / MIB) as usize {
                let r = b * MIB as usize..(b + 1) * MIB as usize;
                // Block 1 is written in place: any mix of old and new bytes per write; its
                // bytes outside the write stay old.
                if b == 1 {
                    continue;
                }
                assert!(
                    got[r.clone()] == old[r.clone()] || got[r.clone()] == new[r.clone()],
                    "{what}: block {b} is neither old nor new"
                );
            }
            let errors = check_errors(bytes.clone());
            assert!(errors.is_empty(), "{what}: check: {errors:?}");
            let rw = open_rw(MemFile::from_bytes(bytes))
                .unwrap_or_else(|e| panic!("{what}: writable reopen: {e}"));
            drop(rw);
        }
    }
    assert!(cut > 3, "the write was cut at {cut} points");
}

/// Blocks past the first chunk sit after a sector-bitmap slot in the BAT: qemu must find them
/// where vdisk put them (1 MiB blocks, 512-byte sectors: 4096 blocks per chunk).
#[test]
fn blocks_after_the_first_sector_bitmap_slot_read_back_in_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let size = 4098 * MIB + 512;
    for kind in [ImageKind::Fixed, ImageKind::Dynamic] {
        let spec = CreateSpec::new(kind, size).block_size(MIB);
        let name = format!("{kind:?}-chunk.vhdx");
        let (path, image) = create_file(dir.path(), &name, &spec);
        let writes = [
            (4095 * MIB + 100, vec![0x5au8; 4096]),
            (4096 * MIB - 512, vec![0x6b; 1024]),
            (4097 * MIB + 4096, vec![0x7c; 4096]),
            (size - 512, vec![0x44; 512]),
        ];
        for (at, data) in &writes {
            image.write_at(data, *at).unwrap();
        }
        image.flush().unwrap();
        drop(image);
        qemu_accepts(&path, size);
        let p = path.to_str().unwrap();
        for (at, data) in &writes {
            let cmd = format!("read -P {} {at} {}", data[0], data.len());
            run("qemu-io", &["-f", "vhdx", "-c", &cmd, p]);
        }
        let cmd = format!("read -P 0 {} 4096", 4097 * MIB);
        run("qemu-io", &["-f", "vhdx", "-c", &cmd, p]);
        let image = open_path(&path).unwrap();
        for (at, data) in &writes {
            assert!(
                super::util::read(&*image, *at, data.len()) == *data,
                "{kind:?} at {at}"
            );
        }
        drop(image);
        let file = vdisk_core::testing::open_std_file(&path, Access::ReadOnly).unwrap();
        let report = vdisk_vhdx::DRIVER.check(Box::new(file)).unwrap();
        assert!(
            report.problems.is_empty(),
            "{kind:?}: {:?}",
            report.problems
        );
        std::fs::remove_file(&path).unwrap();
    }
}
