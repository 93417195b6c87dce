//! Differencing VDIs: linked to their parent by UUID only, found among the `.vdi` files of
//! their folder (never through a link), read through the parent, compacted without changing
//! what they read.

use std::path::Path;

use vdisk_core::{
    Access, CreateSpec, DiskImage, ErrorKind, FormatDriver, ImageKind, Mode, OpenOptions,
    ParentPolicy, Registry, StdFile, Toolkit,
};
use vdisk_vdi::DRIVER;

use super::util::{compact, content};

const BS: u64 = 4096;

fn base(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("base.vdi");
    let spec = CreateSpec::new(ImageKind::Dynamic, 32 * BS).block_size(BS);
    let img = DRIVER
        .create(Box::new(StdFile::create_new(&path).unwrap()), &spec)
        .unwrap();
    for b in 0..32u64 {
        img.write_at(&vec![(b + 1) as u8; BS as usize], b * BS)
            .unwrap();
    }
    img.flush().unwrap();
    path
}

fn child(dir: &Path, parent: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let img = DRIVER
        .create(
            Box::new(StdFile::create_new(&path).unwrap()),
            &CreateSpec::differencing(parent, &path),
        )
        .unwrap();
    // Block 2: own data; block 3: part written (the rest is the parent's); block 4: the
    // parent's content again; block 5: zeros; block 6: own data.
    img.write_at(&[0xaa; 4096], 2 * BS).unwrap();
    img.write_at(&[0xbb; 100], 3 * BS + 1000).unwrap();
    img.write_at(&[5u8; 4096], 4 * BS).unwrap();
    img.write_at(&[0u8; 4096], 5 * BS).unwrap();
    img.write_at(&[0xcc; 4096], 6 * BS).unwrap();
    img.flush().unwrap();
    path
}

fn open_path(path: &Path, writable: bool) -> vdisk_core::Result<Box<dyn DiskImage>> {
    let access = if writable {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    };
    let opts = if writable {
        OpenOptions::read_write()
    } else {
        OpenOptions::read_only()
    };
    DRIVER.open(Box::new(StdFile::open(path, access)?), &opts)
}

#[test]
fn a_child_finds_its_parent_by_uuid_and_reads_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = base(dir.path());
    let c = child(dir.path(), &p, "child.vdi");
    // An unrelated VDI in the folder is not taken for the parent.
    let other = dir.path().join("other.vdi");
    DRIVER
        .create(
            Box::new(StdFile::create_new(&other).unwrap()),
            &CreateSpec::new(ImageKind::Dynamic, 32 * BS).block_size(BS),
        )
        .unwrap();
    let img = open_path(&c, false).unwrap();
    assert_eq!(img.kind(), ImageKind::Differencing);
    assert_eq!(
        img.parent_path().unwrap(),
        p.canonicalize().unwrap().as_path()
    );
    let all = content(&*img);
    let block = |b: u64| &all[(b * BS) as usize..((b + 1) * BS) as usize];
    assert_eq!(block(0), &[1u8; 4096][..]);
    assert_eq!(block(2), &[0xaa; 4096][..]);
    assert_eq!(&block(3)[..1000], &[4u8; 1000][..]);
    assert_eq!(&block(3)[1000..1100], &[0xbb; 100][..]);
    assert_eq!(&block(3)[1100..], &[4u8; 2996][..]);
    assert_eq!(block(5), &[0u8; 4096][..]);
    assert_eq!(block(31), &[32u8; 4096][..]);
}

#[test]
fn compacting_a_child_frees_blocks_equal_to_the_parent_or_zero_and_keeps_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let p = base(dir.path());
    let c = child(dir.path(), &p, "child.vdi");
    let before = content(&*open_path(&c, false).unwrap());
    let len = std::fs::metadata(&c).unwrap().len();
    let mut img = open_path(&c, true).unwrap();
    let r = compact(&mut *img, Mode::Prezeroed).unwrap();
    drop(img);
    assert_eq!(r.blocks_reclaimed_parent, 1, "{r:?}");
    assert_eq!(r.blocks_reclaimed_zero, 1, "{r:?}");
    assert_eq!(std::fs::metadata(&c).unwrap().len(), len - 2 * BS);
    let img = open_path(&c, false).unwrap();
    assert!(content(&*img) == before, "the child reads the same");
    let report = DRIVER
        .check(Box::new(StdFile::open(&c, Access::ReadOnly).unwrap()))
        .unwrap();
    assert!(
        vdisk_core::first_error(&report.problems).is_none(),
        "{report:?}"
    );
}

#[test]
fn two_copies_of_the_parent_are_refused_and_a_link_to_it_is_not_followed() {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("vm");
    let snaps = outer.path().join("snapshots");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&snaps).unwrap();
    let p = base(&dir);
    let c = child(&dir, &p, "child.vdi");
    std::fs::copy(&p, dir.join("copy.vdi")).unwrap();
    let err = open_path(&c, false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(err.message().contains("several files claim"), "{err}");
    // --parent names the right one.
    let opts = OpenOptions::read_only().with_parents(ParentPolicy {
        explicit: Some(p.clone()),
        allowed_dirs: Vec::new(),
    });
    DRIVER
        .open(
            Box::new(StdFile::open(&c, Access::ReadOnly).unwrap()),
            &opts,
        )
        .unwrap();
    std::fs::remove_file(dir.join("copy.vdi")).unwrap();

    // A child in another folder, with only a link to the parent there: not followed.
    let moved = snaps.join("child.vdi");
    std::fs::rename(&c, &moved).unwrap();
    std::os::unix::fs::symlink(&p, snaps.join("base.vdi")).unwrap();
    let err = open_path(&moved, false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains("--parent-dir"), "{err}");
    // Allowing the parent's folder finds it.
    let opts = OpenOptions::read_only().with_parents(ParentPolicy {
        explicit: None,
        allowed_dirs: vec![dir.clone()],
    });
    DRIVER
        .open(
            Box::new(StdFile::open(&moved, Access::ReadOnly).unwrap()),
            &opts,
        )
        .unwrap();
}

#[test]
fn a_parent_is_told_its_children_by_uuid_before_file_system_reclaim() {
    let dir = tempfile::tempdir().unwrap();
    let p = base(dir.path());
    let c = child(dir.path(), &p, "child.vdi");
    let unrelated = dir.path().join("lone.vdi");
    DRIVER
        .create(
            Box::new(StdFile::create_new(&unrelated).unwrap()),
            &CreateSpec::new(ImageKind::Dynamic, 32 * BS).block_size(BS),
        )
        .unwrap();
    static DRIVERS: [&dyn FormatDriver; 1] = [&DRIVER];
    let toolkit = Toolkit::new(Registry::new(&DRIVERS), &[]);
    let parent = open_path(&p, false).unwrap();
    let found = toolkit.children_of_id(&p, parent.image_id().as_deref());
    assert_eq!(found.children, vec![c.clone()], "{found:?}");
    assert!(found.undetermined.is_empty(), "{found:?}");
    let lone = open_path(&unrelated, false).unwrap();
    assert!(
        toolkit
            .children_of_id(&unrelated, lone.image_id().as_deref())
            .is_empty()
    );
    // Without the image's identity, a child naming its parent by uuid cannot be told.
    let unknown = toolkit.children_of(&p);
    assert!(unknown.children.is_empty());
    assert_eq!(unknown.undetermined.len(), 1, "{unknown:?}");
}
