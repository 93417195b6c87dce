//! Differencing chains built by our own create and write: libvhdi reads every level as we do,
//! before and after compacting each member; sizes shrink where the child duplicates its parent.

use std::path::{Path, PathBuf};

use vdisk_core::{
    Access, BlockIndex, BlockState, CreateSpec, DiskImage, FormatDriver, ImageKind, MIB, Mode,
    OpenOptions, Reason,
};

use super::create::create_file;
use super::util::{compact, content, run};

/// Creates a dynamic base image of `size` bytes in `block`-byte blocks.
pub fn base(dir: &Path, name: &str, size: u64, block: u64) -> PathBuf {
    let spec = CreateSpec::new(ImageKind::Dynamic, size).block_size(block);
    create_file(dir, name, &spec).0
}

/// Creates a differencing image `name` over `parent`, in the same folder.
pub fn child(dir: &Path, name: &str, parent: &Path) -> PathBuf {
    let path = dir.join(name);
    let spec = CreateSpec::differencing(parent, &path);
    let (p, image) = create_file(dir, name, &spec);
    assert_eq!(image.kind(), ImageKind::Differencing);
    assert_eq!(image.parent_path(), Some(parent));
    p
}

/// Opens the image at `path` (with its chain) through the driver.
pub fn open(path: &Path, writable: bool) -> vdisk_core::Result<Box<dyn DiskImage>> {
    let access = if writable {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    };
    let file = vdisk_core::testing::open_std_file(path, access)?;
    let opts = if writable {
        OpenOptions::read_write()
    } else {
        OpenOptions::read_only()
    };
    vdisk_vhdx::DRIVER.open(Box::new(file), &opts)
}

/// Guest writes to the image at `path`.
pub fn write(path: &Path, writes: &[(u64, Vec<u8>)]) {
    let image = open(path, true).unwrap();
    for (at, data) in writes {
        image.write_at(data, *at).unwrap();
    }
    image.flush().unwrap();
}

/// The virtual content of every level of `chain` (base first), read by vdisk.
pub fn contents(chain: &[PathBuf]) -> Vec<Vec<u8>> {
    chain
        .iter()
        .map(|p| content(&*open(p, false).unwrap()))
        .collect()
}

/// The virtual content of every level of `chain` (base first), read by libvhdi with each
/// level's parent set explicitly.
pub fn libvhdi_contents(chain: &[PathBuf]) -> Vec<Vec<u8>> {
    let script = "import pyvhdi,sys\n\
        paths=sys.argv[1:]; files=[]\n\
        for i,p in enumerate(paths):\n\
        \x20 f=pyvhdi.file(); f.open(p)\n\
        \x20 if i: f.set_parent(files[i-1])\n\
        \x20 files.append(f)\n\
        for p,f in zip(paths,files):\n\
        \x20 n=f.get_media_size(); o=open(p+'.vhdi.raw','wb'); at=0\n\
        \x20 while at<n:\n\
        \x20\x20 k=min(4<<20,n-at); o.write(f.read_buffer_at_offset(k,at)); at+=k\n\
        \x20 o.close()\n";
    let mut args = vec!["-c", script];
    args.extend(chain.iter().map(|p| p.to_str().unwrap()));
    run("/usr/bin/python3", &args);
    chain
        .iter()
        .map(|p| {
            let raw = format!("{}.vhdi.raw", p.display());
            let bytes = std::fs::read(&raw).unwrap();
            std::fs::remove_file(raw).unwrap();
            bytes
        })
        .collect()
}

/// Asserts that two sets of level contents are equal, naming the first differing byte.
#[track_caller]
pub fn assert_levels(got: &[Vec<u8>], want: &[Vec<u8>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: levels");
    for (level, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: level {level} size");
        if let Some(at) = g.iter().zip(w).position(|(a, b)| a != b) {
            panic!(
                "{what}: level {level} differs first at byte {at:#x}: {:#04x}, expected {:#04x}",
                g[at], w[at]
            );
        }
    }
}

/// Blocks of each level (base first) that read zeros because of a ZERO block in a child level
/// (the level itself or an ancestor reached through NOT_PRESENT blocks).
fn zero_masks(chain: &[PathBuf]) -> Vec<Vec<bool>> {
    let images: Vec<_> = chain.iter().map(|p| open(p, false).unwrap()).collect();
    let blocks = images[0].block_count();
    (0..images.len())
        .map(|level| {
            (0..blocks)
                .map(|b| {
                    for k in (1..=level).rev() {
                        match images[k].block_state(BlockIndex(b)).unwrap() {
                            BlockState::Unallocated => continue,
                            BlockState::Zero => return true,
                            _ => return false,
                        }
                    }
                    false
                })
                .collect()
        })
        .collect()
}

/// libvhdi reads every level of `chain` as `model` says, except blocks that are ZERO in a
/// child level: libvhdi (20210425, `libvhdi_block_descriptor.c`) treats every state below
/// FULLY_PRESENT as "read the parent", against MS-VHDX and DESIGN.md (ZERO reads zeros, also
/// in a child). There the model must read zeros, and libvhdi is not asked.
#[track_caller]
pub fn assert_libvhdi_agrees(chain: &[PathBuf], model: &[Vec<u8>], what: &str) {
    let mut vhdi = libvhdi_contents(chain);
    let bs = open(&chain[0], false).unwrap().block_size() as usize;
    let masks = zero_masks(chain);
    let mut masked = 0;
    for (level, mask) in masks.iter().enumerate() {
        for (b, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
            let r = b * bs..((b + 1) * bs).min(model[level].len());
            assert!(
                model[level][r.clone()].iter().all(|&x| x == 0),
                "{what}: level {level} block {b} is ZERO but reads data"
            );
            vhdi[level][r].fill(0);
            masked += 1;
        }
    }
    if masked > 0 {
        eprintln!("{what}: {masked} ZERO-backed blocks not compared with libvhdi");
    }
    assert_levels(&vhdi, model, &format!("libvhdi {what}"));
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i / 512) as u8) | 1)
        .collect()
}

/// A three-level chain (1 MiB blocks, 16 MiB) exercising every child case: data equal to the
/// parent, zeros over parent data (whole and partial blocks), sub-sector writes, blocks the
/// parent never had, and untouched blocks.
fn three_level_chain(dir: &Path) -> Vec<PathBuf> {
    let size = 16 * MIB;
    let bs = MIB as usize;
    let a = base(dir, "a.vhdx", size, MIB);
    let mut w = Vec::new();
    for b in 0..8u64 {
        w.push((b * MIB, pattern(b as u8 * 16, bs)));
    }
    // Allocated but all zero in the base.
    w.push((12 * MIB, pattern(7, 4096)));
    w.push((12 * MIB, vec![0; 4096]));
    write(&a, &w);
    let b = child(dir, "b.vhdx", &a);
    let parent_block1 = pattern(16, bs);
    write(
        &b,
        &[
            // Block 1: the same bytes as the parent (reclaimable as SameAsParent).
            (MIB, parent_block1.clone()),
            // Block 2: zeros over parent data (reclaimable only as ZERO).
            (2 * MIB, vec![0; bs]),
            // Block 3: a few bytes inside one sector, rest from the parent.
            (3 * MIB + 1000, vec![0xee; 100]),
            // Block 4: half zeros over parent data.
            (4 * MIB, vec![0; bs / 2]),
            // Block 9: data where the parent has none.
            (9 * MIB + 4096, pattern(99, 8192)),
            // Block 10: zeros where the parent reads zeros: nothing allocated.
            (10 * MIB, vec![0; 4096]),
            // Block 11: same as parent (zeros) but written as data then zeros.
            (11 * MIB, pattern(5, 512)),
            (11 * MIB, vec![0; 512]),
        ],
    );
    let c = child(dir, "c.vhdx", &b);
    write(
        &c,
        &[
            // Data over the middle's zero block.
            (2 * MIB + 512, pattern(200, 1024)),
            // The same bytes as the middle shows (from the base).
            (MIB, parent_block1),
            // Zeros over everything at block 5.
            (5 * MIB, vec![0; bs]),
            // Last sector of the disk.
            (size - 512, pattern(77, 512)),
            // Same bytes as the middle's partial block 3.
            (3 * MIB + 1000, vec![0xee; 100]),
        ],
    );
    vec![a, b, c]
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[test]
fn chains_built_by_vdisk_read_the_same_in_libvhdi_before_and_after_compacting_each_member() {
    for mode in [Mode::Pretrimmed, Mode::Prezeroed] {
        let dir = tempfile::tempdir().unwrap();
        let chain = three_level_chain(dir.path());
        let model = contents(&chain);
        assert_libvhdi_agrees(&chain, &model, &format!("{mode}: before"));
        // The chain shows what was written: zeros over parent data stay zeros.
        assert!(
            model[1][2 * MIB as usize..3 * MIB as usize]
                .iter()
                .all(|&b| b == 0)
        );
        assert!(
            model[0][2 * MIB as usize..3 * MIB as usize]
                .iter()
                .any(|&b| b != 0)
        );
        for (level, path) in chain.iter().enumerate() {
            let before = file_len(path);
            let mut image = open(path, true).unwrap();
            let report = compact(&mut *image, mode).unwrap();
            assert!(
                content(&*image) == model[level],
                "{mode}: level {level} in memory"
            );
            drop(image);
            let after = file_len(path);
            eprintln!(
                "{mode}: level {level}: {before} -> {after} bytes, reclaimed {} (same as parent \
                 {}, zero {}), moved {}",
                report.blocks_reclaimed,
                report.blocks_reclaimed_parent,
                report.blocks_reclaimed_zero,
                report.blocks_moved
            );
            assert!(after <= before, "{mode}: level {level} grew");
            if mode == Mode::Prezeroed && level == 1 {
                assert!(report.blocks_reclaimed_parent >= 2, "{report:?}");
                assert!(report.blocks_reclaimed_zero >= 1, "{report:?}");
                assert!(
                    after < before,
                    "the middle level shrinks: {before} -> {after}"
                );
                let image = open(path, false).unwrap();
                assert_eq!(image.block_state(BlockIndex(2)).unwrap(), BlockState::Zero);
                assert_eq!(
                    image.block_state(BlockIndex(1)).unwrap(),
                    BlockState::Unallocated
                );
            }
            if mode == Mode::Prezeroed && level == 2 {
                assert!(report.blocks_reclaimed_parent >= 1, "{report:?}");
            }
            // Every level still opens (DataWriteGuid kept) and reads the same, for both.
            let what = format!("{mode}: after compacting level {level}");
            assert_levels(&contents(&chain), &model, &what);
            assert_libvhdi_agrees(&chain, &model, &what);
        }
    }
}

#[test]
fn a_zero_child_block_over_parent_data_reads_zero_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let a = base(dir.path(), "a.vhdx", 4 * MIB, MIB);
    write(&a, &[(0, pattern(3, 4 * MIB as usize))]);
    let b = child(dir.path(), "b.vhdx", &a);
    write(&b, &[(MIB, vec![0; MIB as usize])]);
    let mut image = open(&b, true).unwrap();
    let plan_reasons = {
        use vdisk_core::{CancelToken, CompactOptions, Compactor, GenericCompactor, NoProgress};
        let plan = GenericCompactor
            .plan(
                &*image,
                &CompactOptions::new(Mode::Prezeroed),
                &NoProgress,
                &CancelToken::new(),
            )
            .unwrap();
        plan.reclaim.clone()
    };
    assert_eq!(plan_reasons, vec![(BlockIndex(1), Reason::Zero)]);
    compact(&mut *image, Mode::Prezeroed).unwrap();
    drop(image);
    let image = open(&b, false).unwrap();
    assert_eq!(image.block_state(BlockIndex(1)).unwrap(), BlockState::Zero);
    let mut buf = vec![1u8; MIB as usize];
    image.read_at(&mut buf, MIB).unwrap();
    assert!(
        buf.iter().all(|&x| x == 0),
        "zero block must not show the parent"
    );
    // libvhdi shows the parent here (see `assert_libvhdi_agrees`); everything else agrees.
    let chain = [a, b];
    let model = contents(&chain);
    assert_libvhdi_agrees(&chain, &model, "zero block");
}

#[test]
fn compacting_a_parent_in_prezeroed_mode_keeps_its_children_valid() {
    let dir = tempfile::tempdir().unwrap();
    let a = base(dir.path(), "a.vhdx", 6 * MIB, MIB);
    // Block 1 zero-filled but allocated, block 2 data: compaction frees and moves.
    write(
        &a,
        &[
            (MIB, pattern(1, 4096)),
            (MIB, vec![0; 4096]),
            (2 * MIB, pattern(2, 4096)),
            (5 * MIB, pattern(4, 4096)),
        ],
    );
    let b = child(dir.path(), "b.vhdx", &a);
    write(&b, &[(3 * MIB, pattern(9, 1000))]);
    let model = contents(&[a.clone(), b.clone()]);
    let guid = |p: &Path| {
        let image = open(p, false).unwrap();
        image
            .details()
            .into_iter()
            .find(|(k, _)| k == "data write guid")
            .unwrap()
            .1
    };
    let before = guid(&a);
    let mut image = open(&a, true).unwrap();
    let report = compact(&mut *image, Mode::Prezeroed).unwrap();
    assert!(
        report.blocks_reclaimed_zero >= 1 && report.blocks_moved >= 1,
        "{report:?}"
    );
    drop(image);
    assert_eq!(guid(&a), before, "prezeroed compaction keeps DataWriteGuid");
    assert_levels(&contents(&[a.clone(), b.clone()]), &model, "vdisk");
    assert_libvhdi_agrees(&[a, b], &model, "parent compacted");
}

#[test]
fn content_change_gives_the_parent_a_new_data_write_guid_and_orphans_children() {
    let dir = tempfile::tempdir().unwrap();
    let a = base(dir.path(), "a.vhdx", 2 * MIB, MIB);
    let b = child(dir.path(), "b.vhdx", &a);
    open(&b, false).unwrap();
    let mut image = open(&a, true).unwrap();
    image
        .as_compactable()
        .unwrap()
        .begin_content_change()
        .unwrap();
    drop(image);
    let err = open(&b, false).unwrap_err();
    assert_eq!(err.kind(), vdisk_core::ErrorKind::InvalidImage, "{err}");
    assert!(
        err.message().contains("parent_linkage") && err.message().contains("a.vhdx"),
        "{err}"
    );
}

#[test]
fn created_children_carry_the_parent_linkage_and_a_relative_locator_libvhdi_reads() {
    let dir = tempfile::tempdir().unwrap();
    let a = base(dir.path(), "a.vhdx", 3 * MIB + 4096, MIB);
    let b = child(dir.path(), "b.vhdx", &a);
    let image = open(&b, false).unwrap();
    let details = image.details();
    let get = |k: &str| {
        details
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("parent relative_path"), ".\\a.vhdx");
    let parent_dwg = {
        let p = open(&a, false).unwrap();
        p.details()
            .into_iter()
            .find(|(k, _)| k == "data write guid")
            .unwrap()
            .1
    };
    assert_eq!(get("parent linkage"), format!("{{{parent_dwg}}}"));
    let parent_id = open(&a, false)
        .unwrap()
        .details()
        .into_iter()
        .find(|(k, _)| k == "virtual disk id")
        .unwrap()
        .1;
    assert_eq!(
        get("virtual disk id"),
        parent_id,
        "the child keeps the disk's identity"
    );
    assert_eq!(image.size(), 3 * MIB + 4096);
    let out = run("vhdiinfo", &[b.to_str().unwrap()]);
    assert!(out.contains("Differential"), "{out}");
    assert!(
        out.contains(&format!("Parent identifier\t: {parent_dwg}")),
        "vhdiinfo shows the linkage: {out}"
    );
}

#[test]
fn chains_with_4k_sectors_and_large_blocks_read_the_same_in_libvhdi_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let spec = CreateSpec::new(ImageKind::Dynamic, 9 * MIB)
        .block_size(4 * MIB)
        .logical_sector_size(4096);
    let a = create_file(dir.path(), "a.vhdx", &spec).0;
    write(&a, &[(0, pattern(1, 9 * MIB as usize))]);
    let b = child(dir.path(), "b.vhdx", &a);
    let parent_head = pattern(1, 4096);
    write(
        &b,
        &[
            (5000, vec![0x5b; 3000]),
            (0, parent_head),
            (4 * MIB, vec![0; 4 * MIB as usize]),
            (9 * MIB - 4096, pattern(8, 4096)),
        ],
    );
    let chain = [a, b.clone()];
    let image = open(&b, false).unwrap();
    assert_eq!(image.sector_size(), 4096);
    assert_eq!(
        image.block_size(),
        4 * MIB,
        "block size taken from the parent"
    );
    drop(image);
    let model = contents(&chain);
    assert_libvhdi_agrees(&chain, &model, "4k before");
    let mut image = open(&b, true).unwrap();
    let report = compact(&mut *image, Mode::Prezeroed).unwrap();
    assert_eq!(report.blocks_reclaimed_zero, 1, "{report:?}");
    drop(image);
    assert_levels(&contents(&chain), &model, "4k after");
    assert_libvhdi_agrees(&chain, &model, "4k after");
}
