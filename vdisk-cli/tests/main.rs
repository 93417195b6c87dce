//! Oracle-backed integration tests of the `vdisk` binary.
//!
//! Every test protects DESIGN.md section 3: after compaction every virtual byte reads the same
//! (prezeroed and pretrimmed are byte-exact everywhere), and the file is still an image qemu
//! and libvhdi open. The oracles are tools nobody on the team wrote: qemu-img and qemu-io
//! (Debian `qemu-utils`) and libvhdi (`python3-libvhdi`, through `/usr/bin/python3`). A missing
//! oracle fails the test with the package to install; nothing is skipped.

mod main {
    pub mod support;

    mod ansible;
    mod bad_input;
    pub mod batch;
    mod btrfs;
    mod chain;
    mod check_verdict;
    mod children;
    mod cli;
    mod create;
    mod disk_full;
    mod dry_run;
    mod exfat;
    mod exit_codes;
    mod ext4;
    mod ext4_crash;
    mod fat;
    mod fixed;
    mod fixtures;
    mod format_confusion;
    mod host_space;
    mod in_use;
    mod in_use_vhdx;
    mod interrupted;
    mod killed;
    mod killed_modes;
    mod log_replay;
    mod lvm;
    mod map;
    mod mutate;
    mod ntfs;
    mod ntfs_crash;
    mod parent_policy;
    mod prop;
    mod qcow2;
    mod quirks;
    mod read_only;
    mod read_only_vhdx;
    mod retrim;
    pub mod roundtrip;
    mod selftest;
    mod shadow_copies;
    mod swap;
    mod symlinks;
    mod terminal;
    mod trimmed_offsets;
    mod vhdx;
    mod xfs;
}
