//! Real volumes from mkntfs/ntfscp, judged by ntfs-3g: overwriting every range we call free
//! must leave every file readable and identical, and our free-cluster count must equal
//! ntfs-3g's.

use std::path::Path;

use vdisk_core::FsAnalyzer;

use super::util::*;

/// Files copied in: several sizes, resident (tiny) and non-resident, one fragmented.
fn populate(volume: &Path, cluster: u64) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let sizes = [1usize, 700, 5000, 70_000, 400_000, 1_500_000];
    for (i, &size) in sizes.iter().enumerate() {
        let name = format!("file{i}.bin");
        let data = pseudo_random(size, 1000 + i as u64);
        copy_in(volume, &name, &data);
        files.push((name, data));
    }
    // Fragment "frag.bin": copy a small version, block its end with another file, then
    // overwrite it with a bigger version that must continue elsewhere.
    let small = pseudo_random(cluster as usize * 2, 77);
    copy_in(volume, "frag.bin", &small);
    let blocker = pseudo_random(cluster as usize * 3, 78);
    copy_in(volume, "blocker.bin", &blocker);
    let big = pseudo_random(cluster as usize * 9 + 123, 79);
    copy_in(volume, "frag.bin", &big);
    files.push(("frag.bin".into(), big));
    files.push(("blocker.bin".into(), blocker));
    files
}

/// The whole check for one cluster size.
fn free_ranges_hold_no_file_data(cluster: u64, volume_size: usize) {
    free_ranges_hold_no_file_data_on(cluster, volume_size, 512);
}

fn free_ranges_hold_no_file_data_on(cluster: u64, volume_size: usize, sector: u64) {
    let dir = tempfile::tempdir().unwrap();
    let volume = make_volume_with_sectors(dir.path(), "vol.img", volume_size, cluster, sector);
    let files = populate(&volume, cluster);
    let device_size = std::fs::metadata(&volume).unwrap().len();

    assert_eq!(
        peek(&volume, 11, 2),
        (sector as u16).to_le_bytes(),
        "bytes per sector"
    );
    let usage = usage(&volume);
    assert_eq!(usage.fs, "ntfs");
    assert_eq!(usage.cluster_size, cluster);
    assert_eq!(detail(&usage, "label"), "VDISKTEST");
    assert_eq!(detail(&usage, "version"), "3.1");
    assert_eq!(detail(&usage, "cluster_size"), cluster.to_string());

    // Shape: sorted, disjoint, not touching, cluster-aligned, inside the volume and never
    // covering the last sector (the backup boot sector).
    assert!(!usage.free.is_empty(), "a fresh volume has free space");
    let free: Vec<_> = usage.free.runs().collect();
    for pair in free.windows(2) {
        assert!(
            pair[0].end < pair[1].start,
            "ranges not coalesced: {pair:?}"
        );
    }
    for r in &free {
        assert!(r.start < r.end && r.start % cluster == 0 && r.end % cluster == 0);
        assert!(
            r.end <= device_size - 512,
            "{r:?} reaches the backup boot sector"
        );
    }

    // Same free-cluster count as ntfs-3g.
    let free_clusters = usage.free_bytes() / cluster;
    assert_eq!(free_clusters, ntfs3g_free_clusters(&volume));
    assert_eq!(detail(&usage, "free_clusters"), free_clusters.to_string());
    let clusters: u64 = detail(&usage, "clusters").parse().unwrap();
    let used: u64 = detail(&usage, "used_clusters").parse().unwrap();
    assert_eq!(used + free_clusters, clusters);

    // Overwrite every free byte with 0xEE in a copy; ntfs-3g must still read everything.
    let wiped = dir.path().join("wiped.img");
    std::fs::copy(&volume, &wiped).unwrap();
    for r in &free {
        patch(&wiped, r.start, &vec![0xEE; (r.end - r.start) as usize]);
    }
    for (name, data) in &files {
        assert!(
            cat(&wiped, name) == *data,
            "{name} changed after wiping free space"
        );
    }
    let listing =
        String::from_utf8_lossy(&run("ntfsls", &[wiped.to_str().unwrap()]).stdout).into_owned();
    for (name, _) in &files {
        assert!(
            listing.contains(name.as_str()),
            "{name} missing from {listing}"
        );
    }
    run("ntfsinfo", &["-m", wiped.to_str().unwrap()]);
    // And the wiped volume is still the same volume for us.
    assert_eq!(super::util::usage(&wiped).free, usage.free);
}

#[test]
fn free_ranges_hold_no_file_data_with_512_byte_clusters() {
    free_ranges_hold_no_file_data(512, 12 << 20);
}

#[test]
fn free_ranges_hold_no_file_data_with_4k_clusters() {
    free_ranges_hold_no_file_data(4096, 16 << 20);
}

#[test]
fn free_ranges_hold_no_file_data_with_4k_sectors() {
    free_ranges_hold_no_file_data_on(4096, 16 << 20, 4096);
}

#[test]
fn free_ranges_hold_no_file_data_with_64k_clusters() {
    free_ranges_hold_no_file_data(65536, 32 << 20);
}

#[test]
fn free_ranges_hold_no_file_data_with_1m_clusters() {
    free_ranges_hold_no_file_data(1 << 20, 64 << 20);
}

#[test]
fn free_ranges_hold_no_file_data_with_2m_clusters() {
    free_ranges_hold_no_file_data(2 << 20, 96 << 20);
}

/// The analyser reads metadata only: on a mostly empty volume it reads far less than the
/// volume, and a four times larger volume costs about the same.
#[test]
fn analysis_reads_only_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let mut read = Vec::new();
    for (name, size) in [("small.img", 32usize << 20), ("large.img", 128 << 20)] {
        let volume = make_volume(dir.path(), name, size, 4096);
        copy_in(&volume, "data.bin", &pseudo_random(3 << 20, 5));
        let device = FileDevice::open(&volume).unwrap();
        let verdict = vdisk_ntfs::ANALYZER.analyze(&device);
        assert!(matches!(verdict, Ok(vdisk_core::FsVerdict::Analysed(_))));
        read.push(device.bytes_read());
    }
    // Bitmaps are 1 and 4 KiB; $UpCase is 128 KiB; MFT records and journal pages the rest
    // (about 160 KB in all when measured).
    assert!(
        read[0] < 512 << 10,
        "read {} bytes of a 32 MiB volume",
        read[0]
    );
    assert!(
        read[1] < read[0] + (64 << 10),
        "reads grew with the volume: {read:?}"
    );
}
