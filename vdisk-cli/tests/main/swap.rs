//! Linux swap in an MBR partition (type 0x82), end to end: `mkswap` over random bytes,
//! converted by `qemu-img` to a dynamic VHD and to VHDX with 1 MiB and 32 MiB blocks, each
//! compacted in full, quick and retrim. The free space is what mkswap reports as the area's
//! usable size (every page after the header); after `vdisk compact` qemu checks the image,
//! every byte outside that space is kept (the header, the partition table, the gaps),
//! `swaplabel` still reads the header, and vdisk reclaimed at least 97% of the ceiling, the
//! host file too. A hibernation signature makes the area untrusted and kept byte for byte.
//!
//! Tools (a missing one fails the test): `util-linux` (mkswap, swaplabel), `fdisk` (sfdisk),
//! `qemu-utils` (qemu-img).

use std::ops::Range;

use super::support::compact_ok;
use super::support::guest::{os, tool};
use super::support::guest_fat::{GuestDisk, MIB, SECTOR, compact_copy_and_check, volume};

/// A disk of `mib` MiB with one swap partition from 1 MiB to 3 MiB before the end.
fn build(mib: u64, hibernated: bool) -> GuestDisk {
    let part: Range<u64> = MIB..(mib - 3) * MIB;
    let script = format!(
        "label: dos\nstart={}, size={}, type=82\n",
        part.start / SECTOR,
        (part.end - part.start) / SECTOR
    );
    GuestDisk::build(mib * MIB, &script, part, |_, vol| {
        let out = tool(
            "mkswap",
            "util-linux",
            &[os("-L"), os("VSWAP"), os("-p"), os("4096"), vol.as_os_str()],
            None,
        );
        // "Setting up swapspace version 1, size = 44 MiB (46133248 bytes)"
        let out = String::from_utf8_lossy(&out).to_string();
        let usable: u64 = out
            .split('(')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{out}"));
        if hibernated {
            // What the kernel writes over the signature when it hibernates into the area.
            let mut b = std::fs::read(vol).unwrap();
            b[4086..4096].copy_from_slice(b"S1SUSPEND\0");
            std::fs::write(vol, b).unwrap();
            return Vec::new();
        }
        std::iter::once(4096..4096 + usable).collect()
    })
}

/// Compacts `disk` converted to each of `images` (format, qemu-img options, file name) in
/// full, quick and retrim; after each: the checks of [`compact_copy_and_check`], and
/// `swaplabel` still reads the header.
fn every_mode(disk: &GuestDisk, images: &[(&str, &str, &str)]) {
    for &(format, opts, name) in images {
        let image = disk.image(format, opts, name);
        for mode in ["full", "quick", "retrim"] {
            let (_, vol) = compact_copy_and_check(disk, &image, format, mode, "swap");
            let label = tool("swaplabel", "util-linux", &[vol.as_os_str()], None);
            assert!(
                String::from_utf8_lossy(&label).contains("VSWAP"),
                "{name} {mode}: header kept"
            );
        }
        std::fs::remove_file(&image).unwrap();
    }
}

#[test]
fn every_page_of_a_swap_partition_but_its_header_is_reclaimed_from_a_1mib_block_vhdx_in_every_mode()
{
    let disk = build(48, false);
    every_mode(
        &disk,
        &[("vhdx", "subformat=dynamic,block_size=1M", "swap.vhdx")],
    );
}

/// 72 MiB: the area (1 to 69 MiB) holds the whole 32 MiB block from 32 to 64 MiB.
#[test]
fn every_page_of_a_swap_partition_but_its_header_is_reclaimed_from_a_dynamic_vhd_and_a_32mib_block_vhdx()
 {
    let disk = build(72, false);
    every_mode(
        &disk,
        &[
            ("vpc", "subformat=dynamic", "swap.vhd"),
            ("vhdx", "subformat=dynamic,block_size=32M", "swap32.vhdx"),
        ],
    );
}

#[test]
fn a_swap_partition_holding_a_hibernation_image_is_untrusted_and_kept() {
    let disk = build(48, true);
    let image = disk.image("vhdx", "subformat=dynamic,block_size=1M", "hib.vhdx");
    let r = compact_ok(&image, "full", &[]);
    let v = volume(&r, 1);
    assert_eq!(v["state"], "untrusted", "{r}");
    assert!(
        v["reason"].as_str().unwrap_or("").contains("hibernated"),
        "{r}"
    );
    disk.assert_kept_outside_free(&image, "vhdx");
}
