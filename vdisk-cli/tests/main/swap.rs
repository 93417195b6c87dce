//! Linux swap in an MBR partition (type 0x82), end to end: `mkswap` over random bytes on a
//! 48 MiB disk, converted to VHDX by `qemu-img`. The free space is what mkswap reports as the
//! area's usable size (every page after the header); after `vdisk compact` every byte outside
//! it is kept (the header, the partition table, the gaps) and vdisk reclaimed at least 97% of
//! the ceiling. A hibernation signature makes the area untrusted and kept byte for byte.
//!
//! Tools (a missing one fails the test): `util-linux` (mkswap, swaplabel), `fdisk` (sfdisk),
//! `qemu-utils` (qemu-img).

use std::ops::Range;

use super::support::compact_ok;
use super::support::guest::{os, tool};
use super::support::guest_fat::{GuestDisk, MIB, SECTOR, assert_reclaimed_near_ceiling, volume};

const PART: Range<u64> = MIB..45 * MIB;

fn build(hibernated: bool) -> GuestDisk {
    let script = format!(
        "label: dos\nstart={}, size={}, type=82\n",
        PART.start / SECTOR,
        (PART.end - PART.start) / SECTOR
    );
    GuestDisk::build(48 * MIB, &script, PART, |_, vol| {
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

#[test]
fn full_compaction_reclaims_every_page_of_a_swap_partition_but_its_header() {
    let disk = build(false);
    let image = disk.image("vhdx", "subformat=dynamic,block_size=1M", "swap.vhdx");
    let r = compact_ok(&image, "full", &[]);
    let v = volume(&r, 1);
    assert_eq!(
        (v["fs"].as_str(), v["state"].as_str()),
        (Some("swap"), Some("trusted")),
        "{r}"
    );
    assert_reclaimed_near_ceiling(&disk, &r, "swap in mbr, vhdx 1M");
    let vol = disk.assert_kept_outside_free(&image, "vhdx");
    let label = tool("swaplabel", "util-linux", &[vol.as_os_str()], None);
    assert!(
        String::from_utf8_lossy(&label).contains("VSWAP"),
        "header kept"
    );
}

#[test]
fn a_swap_partition_holding_a_hibernation_image_is_untrusted_and_kept() {
    let disk = build(true);
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
