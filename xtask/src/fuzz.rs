//! `cargo xtask fuzz [--time SECS] [TARGET]`: writes the seed corpora, then runs each
//! cargo-fuzz (libFuzzer) target of `fuzz/` for a bounded time and prints executions and
//! crashes per target.
//!
//! cargo-fuzz builds with `-Zsanitizer=address` and other unstable flags, which need a
//! nightly compiler. We set `RUSTC_BOOTSTRAP=1` so the pinned stable toolchain accepts them:
//! the workspace keeps one compiler, CI needs no second toolchain, and only this throwaway
//! instrumented build (its own target directory) uses the bootstrap switch.
//!
//! Seeds (`fuzz/corpus/<target>/`, committed; missing ones are written here): small images made
//! by our own `create` and, when `qemu-img` is installed, by qemu. New inputs libFuzzer finds
//! go to `<target dir>/fuzz/corpus/<target>/`; crashes to `<target dir>/fuzz/artifacts/`.
//! Every crash found must become a named regression test in the format crate.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vdisk_core::{CreateSpec, DiskImage, FormatDriver, ImageKind, MemFile};

#[path = "../../fuzz/src/sparse.rs"]
mod sparse;
mod volumes;

/// How a target's seeds are made.
#[derive(Clone, Copy)]
enum Seeds {
    /// Raw VHD files.
    Vhd,
    /// Raw VDI files (small blocks keep them small).
    Vdi,
    /// Raw qcow2 files (512-byte clusters keep them small).
    Qcow2,
    /// VHDX files in the sparse encoding (`fuzz/src/sparse.rs`).
    VhdxSparse,
    /// Raw disks (NTFS made by `mkntfs`, with and without an `sfdisk` MBR) in the sparse
    /// encoding.
    DiskSparse,
    /// Raw ext2/3/4 volumes (made by `mkfs.ext4 -d`) in the sparse encoding.
    Ext4Sparse,
    /// XFS volumes made by `mkfs.xfs` (v5 and v4) in the sparse encoding.
    XfsSparse,
    /// FAT12/16/32, exFAT and swap volumes made by their `mkfs` tools in the sparse encoding.
    FatSparse,
    /// btrfs volumes made by `mkfs.btrfs` in the sparse encoding.
    BtrfsSparse,
    /// LVM2 metadata texts as LVM writes them, after an 8-byte physical volume size.
    LvmText,
}

/// The fuzz targets, in run order. `disk_analysis` covers the partition tables and the NTFS
/// analyser together, as `vdisk compact` uses them.
const TARGETS: &[(&str, Seeds)] = &[
    ("vhd_open", Seeds::Vhd),
    ("vhdx_open", Seeds::VhdxSparse),
    ("vdi_open", Seeds::Vdi),
    ("qcow2_open", Seeds::Qcow2),
    ("partition_scan", Seeds::DiskSparse),
    ("disk_analysis", Seeds::DiskSparse),
    ("ext4_analysis", Seeds::Ext4Sparse),
    ("xfs_analysis", Seeds::XfsSparse),
    ("fat_volume", Seeds::FatSparse),
    ("btrfs_analysis", Seeds::BtrfsSparse),
    ("lvm_metadata", Seeds::LvmText),
];

/// Targets built without overflow checks (`cargo fuzz run -O`). `disk_analysis` runs the
/// `ntfs` crate, whose index-record size check overflows on hostile input (ntfs 0.4.0
/// `index_record.rs:167`; regression test
/// `index_record_whose_used_size_overflows_in_the_ntfs_crate_is_untrusted_not_a_panic`). Our
/// analyser contains that panic with `catch_unwind`, but libFuzzer aborts on any panic, so
/// with overflow checks the target would stop there every time. `partition_scan` fuzzes the
/// partition code with overflow checks on.
const WITHOUT_OVERFLOW_CHECKS: &[&str] = &["disk_analysis"];

/// libFuzzer limits: bounded memory is one of the oracles.
const RSS_LIMIT_MB: u32 = 2048;
const MALLOC_LIMIT_MB: u32 = 512;

/// The names of every target, in run order.
pub fn target_names() -> Vec<&'static str> {
    TARGETS.iter().map(|(n, _)| *n).collect()
}

/// Runs the task.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut secs = 60u64;
    let mut only = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => {
                secs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--time needs a number of seconds")?;
            }
            t if !t.starts_with('-') && only.is_none() => only = Some(t.to_string()),
            other => return Err(format!("unknown fuzz argument {other:?}")),
        }
    }
    let targets: Vec<_> = TARGETS
        .iter()
        .filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name))
        .collect();
    if targets.is_empty() {
        let names: Vec<_> = TARGETS.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "no fuzz target {:?} (targets: {})",
            only.unwrap_or_default(),
            names.join(", ")
        ));
    }
    let fuzz_dir = workspace_root().join("fuzz");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let installed = Command::new(&cargo)
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        return Err(
            "cargo-fuzz is not installed: run `cargo install cargo-fuzz --locked` \
             (0.13.2 builds with the stable toolchain)"
                .into(),
        );
    }
    let work = crate::shared::target_dir().join("fuzz");
    let mut summary = Vec::new();
    for &&(name, seeds) in &targets {
        let seed_dir = fuzz_dir.join("corpus").join(name);
        let n = write_seeds(&seed_dir, seeds)?;
        println!("== {name}: {n} seeds in {}", seed_dir.display());
        let corpus = work.join("corpus").join(name);
        let artifacts = work.join("artifacts").join(name);
        for d in [&corpus, &artifacts] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let before = crashes_in(&artifacts);
        let log = work.join(format!("{name}.log"));
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        println!(
            "== cargo fuzz run {name} ({secs} s; libFuzzer output in {})",
            log.display()
        );
        let status = Command::new(&cargo)
            .current_dir(&fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_DIR", work.join("target"))
            .args(["fuzz", "run", name])
            .args(WITHOUT_OVERFLOW_CHECKS.contains(&name).then_some("-O"))
            .arg(&corpus)
            .arg(&seed_dir)
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
            .arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1")
            .stdout(Stdio::inherit())
            .stderr(log_file)
            .status()
            .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let execs = final_stat(&text, "stat::number_of_executed_units:")
            .or_else(|| last_exec_count(&text))
            .map_or("?".to_string(), |n| n.to_string());
        let new: Vec<PathBuf> = crashes_in(&artifacts)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        summary.push((name, status.success(), execs, new));
    }
    println!(
        "\n{:<12} {:>8} {:>14}  crashes",
        "target", "status", "executions"
    );
    let mut failed = false;
    for (name, ok, execs, crashes) in &summary {
        let status = if *ok { "ok" } else { "FAILED" };
        println!("{name:<12} {status:>8} {execs:>14}  {}", crashes.len());
        for c in crashes {
            println!("    {}", c.display());
        }
        failed |= !ok || !crashes.is_empty();
    }
    if failed {
        return Err("fuzzing found crashes (or the build failed); see above".into());
    }
    Ok(())
}

/// The workspace folder (the parent of xtask/).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or(manifest.clone(), Path::to_path_buf)
}

/// The value of libFuzzer's final `stat::` line `key`.
fn final_stat(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

/// The execution count of the last `#N ...` status line (when the run died before its stats).
fn last_exec_count(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| {
        let rest = l.strip_prefix('#')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn crashes_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                ["crash-", "oom-", "leak-", "timeout-", "slow-unit-"]
                    .iter()
                    .any(|pre| n.starts_with(pre))
            })
        })
        .collect();
    out.sort();
    out
}

/// Writes the seeds of one target that are missing; returns their number.
fn write_seeds(dir: &Path, seeds: Seeds) -> Result<usize, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = match seeds {
        Seeds::Vhd => vhd_seeds()?,
        Seeds::Vdi => vdi_seeds()?,
        Seeds::Qcow2 => qcow2_seeds()?,
        Seeds::XfsSparse => encoded(volumes::xfs_seeds()?)?,
        Seeds::Ext4Sparse => encoded(volumes::ext4_seeds()?)?,
        Seeds::FatSparse => encoded(volumes::fat_family_seeds()?)?,
        Seeds::BtrfsSparse => encoded(volumes::btrfs_seeds()?)?,
        Seeds::LvmText => lvm_seeds(),
        Seeds::DiskSparse => encoded(volumes::disk_seeds()?)?,
        Seeds::VhdxSparse => vhdx_seeds()?
            .into_iter()
            .map(|(n, b)| match sparse::encode(&b) {
                // The target must see exactly the image we made.
                Some(e) if sparse::decode(&e).as_ref() == Some(&b) => Ok((n, e)),
                Some(_) => Err(format!("seed {n} does not survive the sparse encoding")),
                None => Err(format!("seed {n} is larger than the sparse limit")),
            })
            .collect::<Result<_, _>>()?,
    };
    files.extend(qemu_seeds(seeds));
    for (name, bytes) in &files {
        // Created images carry a timestamp and a random id: keep a committed seed as it is
        // (no churn), write only missing ones.
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(files.len())
}

/// Raw volumes in the sparse encoding; a volume it cannot hold is a bug of the seed maker.
fn encoded(volumes: Vec<(String, Vec<u8>)>) -> Result<Vec<(String, Vec<u8>)>, String> {
    volumes
        .into_iter()
        .map(|(n, b)| match sparse::encode(&b) {
            Some(e) => Ok((n, e)),
            None => Err(format!("seed {n} is larger than the sparse limit")),
        })
        .collect()
}

fn created(
    driver: &dyn FormatDriver,
    spec: &CreateSpec,
    writes: &[(u64, u8, usize)],
) -> Result<Vec<u8>, String> {
    let mem = MemFile::new();
    let image: Box<dyn DiskImage> = driver
        .create(Box::new(mem.clone()), spec)
        .map_err(|e| format!("create seed: {e}"))?;
    for &(at, byte, len) in writes {
        image
            .write_at(&vec![byte; len], at)
            .map_err(|e| format!("write seed: {e}"))?;
    }
    drop(image);
    Ok(mem.to_vec())
}

/// Our own VHDs: small dynamic images with small blocks, a fixed one, an empty one.
fn vhd_seeds() -> Result<Vec<(String, Vec<u8>)>, String> {
    let d = &vdisk_vhd::DRIVER;
    let dynamic = |size, bs| CreateSpec::new(ImageKind::Dynamic, size).block_size(bs);
    Ok(vec![
        (
            "ours-dynamic-4k-blocks".into(),
            created(
                d,
                &dynamic(64 << 10, 4096),
                &[(0, 1, 700), (20_000, 2, 5000)],
            )?,
        ),
        (
            "ours-dynamic-64k-blocks-partial-tail".into(),
            created(d, &dynamic(200_000, 65536), &[(131_072, 3, 512)])?,
        ),
        (
            "ours-dynamic-empty".into(),
            created(d, &dynamic(1 << 20, 4096), &[])?,
        ),
        (
            "ours-fixed".into(),
            created(
                d,
                &CreateSpec::new(ImageKind::Fixed, 16 << 10),
                &[(512, 4, 512)],
            )?,
        ),
    ])
}

/// Our own VDIs: dynamic with 4 KiB blocks (data, empty) and a fixed one.
/// qcow2 seeds our own `create` makes (qemu's, with data and a compressed cluster, come from
/// [`qemu_seeds`]).
fn qcow2_seeds() -> Result<Vec<(String, Vec<u8>)>, String> {
    let d = &vdisk_qcow2::DRIVER;
    let dynamic = |size, cs| CreateSpec::new(ImageKind::Dynamic, size).block_size(cs);
    Ok(vec![
        (
            "ours-512-clusters".into(),
            created(d, &dynamic(64 << 10, 512), &[])?,
        ),
        (
            "ours-4k-clusters".into(),
            created(d, &dynamic(1 << 20, 4096), &[])?,
        ),
    ])
}

fn vdi_seeds() -> Result<Vec<(String, Vec<u8>)>, String> {
    let d = &vdisk_vdi::DRIVER;
    let dynamic = |size| CreateSpec::new(ImageKind::Dynamic, size).block_size(4096);
    Ok(vec![
        (
            "ours-dynamic-4k-blocks".into(),
            created(d, &dynamic(64 << 10), &[(0, 1, 700), (20_000, 2, 5000)])?,
        ),
        (
            "ours-dynamic-empty".into(),
            created(d, &dynamic(1 << 20), &[])?,
        ),
        (
            "ours-fixed".into(),
            created(
                d,
                &CreateSpec::new(ImageKind::Fixed, 16 << 10).block_size(4096),
                &[(512, 4, 512)],
            )?,
        ),
    ])
}

/// Our own VHDXs: 1 MiB blocks, one with data, one empty, one with 4 KiB sectors.
fn vhdx_seeds() -> Result<Vec<(String, Vec<u8>)>, String> {
    let d = &vdisk_vhdx::DRIVER;
    let spec = |size| CreateSpec::new(ImageKind::Dynamic, size).block_size(1 << 20);
    Ok(vec![
        (
            "ours-dynamic-data".into(),
            created(
                d,
                &spec(3 << 20),
                &[(4096, 7, 512), ((2 << 20) + 512, 8, 512)],
            )?,
        ),
        (
            "ours-dynamic-empty".into(),
            created(d, &spec(8 << 20), &[])?,
        ),
        (
            "ours-dynamic-4k-sectors".into(),
            created(d, &spec(2 << 20).logical_sector_size(4096), &[(0, 9, 4096)])?,
        ),
    ])
}

/// qemu-made images when `qemu-img` is installed (skipped with a note otherwise: the seeds
/// of our own still cover every structure).
fn qemu_seeds(seeds: Seeds) -> Vec<(String, Vec<u8>)> {
    let Ok(dir) = volumes::tempdir() else {
        return Vec::new();
    };
    let (fmt, opts, size, name) = match seeds {
        Seeds::DiskSparse
        | Seeds::Ext4Sparse
        | Seeds::XfsSparse
        | Seeds::FatSparse
        | Seeds::BtrfsSparse
        | Seeds::LvmText => {
            return Vec::new();
        }
        Seeds::Vhd => ("vpc", "subformat=dynamic", "4M", "qemu-dynamic-empty"),
        Seeds::Vdi => ("vdi", "static=off", "4M", "qemu-dynamic-empty"),
        Seeds::Qcow2 => ("qcow2", "cluster_size=512", "64K", "qemu-data-compressed"),
        Seeds::VhdxSparse => ("vhdx", "block_size=1M", "4M", "qemu-dynamic-data"),
    };
    let path = dir.join("seed");
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", fmt, "-o", opts])
        .arg(&path)
        .arg(size)
        .status()
        .is_ok_and(|s| s.success());
    if matches!(seeds, Seeds::VhdxSparse) && ok {
        let _ = Command::new("qemu-io")
            .args(["-f", "vhdx", "-c", "write -P 0x5c 1M 4k"])
            .arg(&path)
            .stdout(Stdio::null())
            .status();
    }
    if matches!(seeds, Seeds::Qcow2) && ok {
        let _ = Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -P 0x5c 4k 8k"])
            .args(["-c", "write -c -P 0x3a 32k 512"])
            .arg(&path)
            .stdout(Stdio::null())
            .status();
    }
    let bytes = if ok { std::fs::read(&path).ok() } else { None };
    let _ = std::fs::remove_dir_all(&dir);
    let Some(bytes) = bytes else {
        println!("   (qemu-img not available: no qemu-made seed)");
        return Vec::new();
    };
    let bytes = match seeds {
        Seeds::Vhd | Seeds::Vdi | Seeds::Qcow2 => Some(bytes),
        Seeds::VhdxSparse => sparse::encode(&bytes),
        Seeds::DiskSparse
        | Seeds::Ext4Sparse
        | Seeds::XfsSparse
        | Seeds::FatSparse
        | Seeds::BtrfsSparse
        | Seeds::LvmText => None,
    };
    bytes
        .map(|b| vec![(name.to_string(), b)])
        .unwrap_or_default()
}

/// LVM2 metadata texts in the layout LVM 2.03 writes (a linear volume in two segments, a
/// thin pool with a thin volume, a snapshot), each after a 64 MiB physical volume size.
fn lvm_seeds() -> Vec<(String, Vec<u8>)> {
    let pv = |n: u32, pe: u32| {
        format!(
            "pv{n} {{\nid = \"7ieZhE-tv3R-kLAL-SGua-24jM-19vh-gBMTU{n}\"\ndevice = \"/dev/loop0\"\n\
             status = [\"ALLOCATABLE\"]\nflags = []\ndev_size = 131072\npe_start = 2048\n\
             pe_count = {pe}\n}}\n"
        )
    };
    let seg = |i: u32, le: u32, n: u32, kind: &str, rest: &str| {
        format!(
            "segment{i} {{\nstart_extent = {le}\nextent_count = {n}\n\ntype = \"{kind}\"\n{rest}}}\n"
        )
    };
    let lv = |name: &str, visible: bool, segs: &str| {
        let v = if visible { ", \"VISIBLE\"" } else { "" };
        format!(
            "{name} {{\nid = \"H3U0rI-kwdn-NYIT-T8D3-Gf3c-LW7G-etgoYz\"\n\
             status = [\"READ\", \"WRITE\"{v}]\nflags = []\n{segs}}}\n"
        )
    };
    let stripes =
        |pv: u32, pe: u32| format!("stripe_count = 1\nstripes = [\n\"pv{pv}\", {pe}\n]\n");
    let group = |lvs: String| {
        format!(
            "vgt {{\nid = \"C3a8I1-m4QB-VaGk-vaqk-ifVM-zSCa-5JswhP\"\nseqno = 3\n\
             format = \"lvm2\"\nstatus = [\"RESIZEABLE\", \"READ\", \"WRITE\"]\n\
             flags = []\nextent_size = 8192\nmax_lv = 0\nmax_pv = 0\nmetadata_copies = 0\n\n\
             physical_volumes {{\n{}{}}}\n\nlogical_volumes {{\n{lvs}}}\n}}\n\
             # Generated by LVM2 version 2.03.16(2) (2022-05-18)\n\n\
             contents = \"Text Format Volume Group\"\nversion = 1\n\ndescription = \"\"\n\0",
            pv(0, 15),
            pv(1, 15)
        )
    };
    let linear = lv(
        "lv1",
        true,
        &(seg(1, 0, 2, "striped", &stripes(0, 5)) + &seg(2, 2, 3, "striped", &stripes(0, 0))),
    ) + &lv("far", true, &seg(1, 0, 4, "striped", &stripes(1, 0)));
    let thin = lv(
        "pool_tdata",
        false,
        &seg(1, 0, 4, "striped", &stripes(0, 0)),
    ) + &lv(
        "pool_tmeta",
        false,
        &seg(1, 0, 1, "striped", &stripes(0, 4)),
    ) + &lv(
        "pool",
        true,
        &seg(
            1,
            0,
            4,
            "thin-pool",
            "metadata = \"pool_tmeta\"\npool = \"pool_tdata\"\n",
        ),
    ) + &lv(
        "thin",
        true,
        &seg(1, 0, 8, "thin", "thin_pool = \"pool\"\n"),
    );
    let snapshot = lv("lv", true, &seg(1, 0, 3, "striped", &stripes(0, 0)))
        + &lv("snap", true, &seg(1, 0, 2, "striped", &stripes(0, 3)))
        + &lv(
            "snapshot0",
            false,
            &seg(
                1,
                0,
                3,
                "snapshot",
                "chunk_size = 8\norigin = \"lv\"\ncow_store = \"snap\"\n",
            ),
        );
    [("linear", linear), ("thin", thin), ("snapshot", snapshot)]
        .into_iter()
        .map(|(name, lvs)| {
            let mut bytes = (64u64 << 20).to_le_bytes().to_vec();
            bytes.extend_from_slice(group(lvs).as_bytes());
            (format!("lvm-{name}"), bytes)
        })
        .collect()
}
