//! Windows: share modes are the lock, vdisk never makes a sparse file, the read-only
//! attribute is "read-only". Run under Wine by `cargo xtask windows test`.

use super::*;

#[test]
fn a_writer_shares_nothing_so_every_other_open_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.vhd");
    let writer = StdFile::create_new(&path).unwrap();
    for access in [Access::ReadOnly, Access::ReadWrite] {
        let err = StdFile::open(&path, access).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InUse, "{access:?}: {err}");
        assert!(err.message().contains("in use"), "{err}");
    }
    drop(writer);
    StdFile::open(&path, Access::ReadWrite).expect("free once the writer closed it");
}

#[test]
fn readers_share_reading_but_keep_writers_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.vhd");
    std::fs::write(&path, [1u8; 4096]).unwrap();
    let a = StdFile::open(&path, Access::ReadOnly).unwrap();
    let _b = StdFile::open(&path, Access::ReadOnly).expect("two readers");
    let err = StdFile::open(&path, Access::ReadWrite).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InUse, "{err}");
    let mut buf = [0u8; 16];
    a.read_at(&mut buf, 4080).unwrap();
    assert_eq!(buf, [1u8; 16]);
    let err = a.read_at(&mut buf, 4090).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfRange, "{err}");
}

#[test]
fn punching_is_refused_and_the_file_never_becomes_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.vhdx");
    let f = StdFile::create_new(&path).unwrap();
    f.write_at(&[7u8; 1 << 20], 0).unwrap();
    assert!(!f.punches_holes());
    let err = f.punch_hole(4096, 65536).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("sparse"), "{err}");
    f.sync().unwrap();
    assert!(!has_sparse_attribute(&path));
    let mut buf = vec![0u8; 65536];
    f.read_at(&mut buf, 4096).unwrap();
    assert!(buf.iter().all(|&b| b == 7), "the range was not zeroed");
}

#[test]
fn the_read_only_attribute_refuses_writing_as_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.vhd");
    std::fs::write(&path, [0u8; 512]).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&path, perms.clone()).unwrap();
    let err = StdFile::open(&path, Access::ReadWrite).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
    StdFile::open(&path, Access::ReadOnly).expect("reading needs no write access");
    #[allow(
        clippy::permissions_set_readonly_false,
        reason = "test cleanup on windows"
    )]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
}

/// Parents are opened by their canonical path (`\\?\C:\...`) and what was opened is
/// checked against it through the handle's final path.
#[test]
fn a_canonical_path_opens_without_following_and_is_checked_by_its_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parent.vhdx");
    std::fs::write(&path, b"parent").unwrap();
    let canon = path.canonicalize().unwrap();
    let f = StdFile::open_no_follow(&canon, Access::ReadOnly).unwrap();
    assert_eq!(sys::opened_path(&f.file).as_deref(), Some(canon.as_path()));
    let err = StdFile::open_no_follow(dir.path(), Access::ReadOnly).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
}

#[test]
fn copies_and_lengths_are_positional_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.vhd");
    let f = StdFile::create_new(&path).unwrap();
    let data: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i * 7 + i / 4096).to_le_bytes()[0])
        .collect();
    f.write_at(&data, 5 << 20).unwrap();
    f.copy_within(5 << 20, 4096, data.len() as u64).unwrap();
    f.set_len(4096 + data.len() as u64).unwrap();
    f.sync().unwrap();
    drop(f);
    let f = StdFile::open(&path, Access::ReadOnly).unwrap();
    assert_eq!(f.len().unwrap(), 4096 + data.len() as u64);
    let mut back = vec![0u8; data.len()];
    f.read_at(&mut back, 4096).unwrap();
    assert!(back == data);
}

#[test]
fn a_written_file_takes_at_least_its_length_and_a_folder_is_not_measured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.vhdx");
    let f = StdFile::create_new(&path).unwrap();
    f.write_at(&[3u8; 1 << 20], 0).unwrap();
    f.sync().unwrap();
    let taken = allocated_size(&path).expect("windows says what a file takes");
    assert!(taken >= 1 << 20, "never sparse, so all of it: {taken}");
    assert_eq!(allocated_size(dir.path()), None, "a folder is not measured");
    assert_eq!(allocated_size(&dir.path().join("missing")), None);
}
