//! Images made by qemu-img and written by qemu-io: every byte must read as qemu reads it.

use std::path::{Path, PathBuf};

use vdisk_core::{BlockIndex, BlockState, ImageKind, MIB};

use super::util::{
    METADATA_REGION, assert_same_as_raw, libvhdi_raw, open_path, qemu_convert_raw, qemu_create,
    region_offset, run,
};

/// Creates `name` with qemu-img, applies qemu-io commands, converts to raw with qemu-img.
pub fn make(dir: &Path, name: &str, opts: &str, size: u64, cmds: &[&str]) -> (PathBuf, PathBuf) {
    let path = dir.join(name);
    let p = path.to_str().unwrap();
    qemu_create(p, opts, &size.to_string());
    for c in cmds {
        run("qemu-io", &["-f", "vhdx", "-c", c, p]);
    }
    let raw = dir.join(format!("{name}.raw"));
    qemu_convert_raw(p, &raw);
    (path, raw)
}

/// Patterns that cross block boundaries, overwrite with zeros, and touch the last byte.
fn patterns(block: u64, size: u64) -> Vec<String> {
    vec![
        "write -P 0x11 0 4k".into(),
        format!("write -P 0x22 {} 1024", block - 512),
        format!("write -P 0x33 {} {}", 2 * block + 4096, block),
        format!("write -z {} 8192", 2 * block + 8192),
        format!("write -P 0x44 {} 512", size - 512),
        format!("write -z {} {}", 4 * block, block),
    ]
}

fn roundtrip(subformat: &str, block: u64, size: u64, zero_state: bool) {
    let dir = tempfile::tempdir().unwrap();
    let zero = if zero_state { "on" } else { "off" };
    let opts =
        format!("subformat={subformat},block_size={block},log_size=1M,block_state_zero={zero}");
    let cmds = patterns(block, size);
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let (vhdx, raw) = make(dir.path(), "t.vhdx", &opts, size, &cmds);
    let before = std::fs::read(&vhdx).unwrap();
    let image = open_path(&vhdx).unwrap();
    assert_eq!(image.block_size(), block);
    let kind = if subformat == "fixed" {
        ImageKind::Fixed
    } else {
        ImageKind::Dynamic
    };
    assert_eq!(image.kind(), kind);
    assert_same_as_raw(&*image, &raw);
    if subformat == "dynamic" {
        assert!(matches!(
            image.block_state(BlockIndex(0)).unwrap(),
            BlockState::Allocated { .. }
        ));
        // qemu marks never-written blocks ZERO unless told otherwise.
        let unwritten = if zero_state {
            BlockState::Zero
        } else {
            BlockState::Unallocated
        };
        assert_eq!(image.block_state(BlockIndex(5)).unwrap(), unwritten);
    }
    assert!(image.check().unwrap().is_empty(), "{:?}", image.check());
    drop(image);
    assert!(std::fs::read(&vhdx).unwrap() == before, "file changed");
}

#[test]
fn qemu_dynamic_1m_blocks_read_like_qemu() {
    roundtrip("dynamic", MIB, 9 * MIB + 512 * 3, true);
}

#[test]
fn qemu_dynamic_2m_blocks_read_like_qemu() {
    roundtrip("dynamic", 2 * MIB, 20 * MIB, false);
}

#[test]
fn qemu_dynamic_32m_blocks_read_like_qemu() {
    roundtrip("dynamic", 32 * MIB, 200 * MIB + 4096, true);
}

#[test]
fn qemu_fixed_1m_blocks_read_like_qemu() {
    roundtrip("fixed", MIB, 12 * MIB, true);
}

#[test]
fn qemu_fixed_32m_blocks_read_like_qemu() {
    roundtrip("fixed", 32 * MIB, 160 * MIB, false);
}

/// qemu can neither create nor open 4096-byte logical sectors. An image qemu wrote, whose
/// logical sector size item is then patched to 4096 (fewer blocks than one chunk, so the BAT
/// layout is unchanged), must read as qemu read it before the patch, and as libvhdi reads it.
#[test]
fn logical_sector_4096_reads_like_qemu_and_libvhdi() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.vhdx");
    let p = path.to_str().unwrap();
    run(
        "qemu-img",
        &["create", "-q", "-f", "vhdx", "-o", "block_size=1M", p, "8M"],
    );
    for c in ["write -P 0x5a 4096 8192", "write -P 0x6b 1044480 8192"] {
        run("qemu-io", &["-f", "vhdx", "-c", c, p]);
    }
    let raw = dir.path().join("s.raw");
    qemu_convert_raw(p, &raw);
    let mut bytes = std::fs::read(&path).unwrap();
    let meta = region_offset(&bytes, METADATA_REGION) as usize;
    let count = u16::from_le_bytes([bytes[meta + 10], bytes[meta + 11]]) as usize;
    let lss = uuid::Uuid::from_u128(0x8141BF1D_A96F_4709_BA47_F233A8FAAB5F).to_bytes_le();
    let mut patched = false;
    for i in 0..count {
        let e = meta + 32 + 32 * i;
        if bytes[e..e + 16] == lss {
            let off = u32::from_le_bytes(bytes[e + 16..e + 20].try_into().unwrap()) as usize;
            bytes[meta + off..meta + off + 4].copy_from_slice(&4096u32.to_le_bytes());
            patched = true;
        }
    }
    assert!(patched);
    std::fs::write(&path, &bytes).unwrap();
    let image = open_path(&path).unwrap();
    assert_eq!(image.sector_size(), 4096);
    assert_same_as_raw(&*image, &raw);
    let libvhdi = dir.path().join("s.libvhdi");
    libvhdi_raw(&path, &libvhdi);
    assert_same_as_raw(&*image, &libvhdi);
}
