//! Criterion benches for vdisk's hot paths.
//!
//! - `zero_detect/*`: `vdisk_core::is_zero` throughput on in-memory blocks of several sizes,
//!   next to `memory_read/*`, a plain read of the same buffer (an XOR fold over u64 words that
//!   cannot exit early), measured in the same run so the ratio is meaningful on any machine.
//! - `plan_moves/*`: planning the block moves of a large, fragmented table (2 Mi blocks).
//! - `bat_load_plan/*`: opening a 2 TiB dynamic VHDX with 2 MiB blocks (a 1 Mi-entry BAT,
//!   8 MiB) from memory and planning a `pretrimmed` compaction (every table entry visited,
//!   moves planned, no block read), next to `memcpy_bat`, a copy of as many bytes as the BAT
//!   holds.
//! - `relocate/*`: applying a planned compaction that moves 64 MiB of 1 MiB blocks (plus
//!   deallocation and truncation), in memory (`MemFile`, no syncs) and on a temporary file (`StdFile`,
//!   `copy_file_range` and real syncs), next to `memcpy`, a copy of the same bytes.
//!
//! `bat_load_plan` goes through the library's entry point (`compact_image`, dry run);
//! `relocate` times `GenericCompactor::apply` alone on purpose (the entry point would time the
//! zero scan and planning too), with a plan made by `GenericCompactor::plan` in the untimed
//! setup.
//!
//! Run: `cargo bench -p vdisk-benches` (or `cargo xtask bench` once it exists).

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vdisk_core::compact::plan_moves;
use vdisk_core::{
    BlockIndex, CancelToken, CompactOptions, CompactRequest, Compactor, CreateSpec, DiskImage,
    FormatDriver, GenericCompactor, HostFile, HostLayout, HostOffset, ImageKind, MemFile, Mode,
    NoProgress, OpenOptions, Registry, StdFile, Toolkit, compact_image, is_zero,
};

const MIB: u64 = 1 << 20;

const BLOCK_SIZES: [usize; 4] = [64 << 10, 1 << 20, 2 << 20, 32 << 20];

/// Reads every byte of `buf` (folding u64 words), the baseline zero detection is judged by.
fn read_all(buf: &[u8]) -> u64 {
    buf.chunks_exact(8)
        .map(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
        .fold(0, |acc, w| acc ^ w)
}

/// A zero buffer backed by written pages. `vec![0; n]` maps untouched pages to the kernel's
/// shared zero page, which always hits the cache and overstates throughput several times.
fn zeros_in_real_pages(size: usize) -> Vec<u8> {
    let mut buf = vec![0xa5u8; size];
    buf.fill(0);
    black_box(buf)
}

fn zero_detection(c: &mut Criterion) {
    let mut group = c.benchmark_group("zero_detect");
    for &size in &BLOCK_SIZES {
        let buf = zeros_in_real_pages(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("is_zero", size), &buf, |b, buf| {
            b.iter(|| is_zero(black_box(buf)))
        });
        group.bench_with_input(BenchmarkId::new("memory_read", size), &buf, |b, buf| {
            b.iter(|| read_all(black_box(buf)))
        });
        // A block with data in its last byte: the worst case for early exit.
        let mut late = zeros_in_real_pages(size);
        late[size - 1] = 1;
        group.bench_with_input(
            BenchmarkId::new("is_zero_data_at_end", size),
            &late,
            |b, buf| b.iter(|| is_zero(black_box(buf))),
        );
    }
    group.finish();
}

fn move_planning(c: &mut Criterion) {
    let footprint = (2u64 << 20) + 512;
    let layout = HostLayout {
        data_start: 1 << 20,
        block_footprint: footprint,
        data_offset: Some(512),
        alignment: 512,
        reserved: Vec::new(),
        trailer_len: 512,
        end_alignment: 512,
    };
    let blocks: u64 = 2 << 20;
    // Every third block survives: many holes, many moves.
    let survivors: Vec<(BlockIndex, HostOffset)> = (0..blocks)
        .filter(|i| i % 3 == 0)
        .map(|i| (BlockIndex(i), HostOffset(layout.data_start + i * footprint)))
        .collect();
    let mut group = c.benchmark_group("plan_moves");
    group.throughput(Throughput::Elements(blocks));
    group.sample_size(10);
    group.bench_function("2Mi_blocks_one_in_three_survive", |b| {
        b.iter(|| plan_moves(black_box(&layout), black_box(&survivors)).map(|p| p.moves.len()))
    });
    group.finish();
}

/// A 2 TiB dynamic VHDX with 2 MiB blocks (1 Mi BAT entries) in memory with 2 Ki blocks
/// allocated (every 1024th block data, the one after it stored zeros).
fn huge_vhdx() -> MemFile {
    let mem = MemFile::new();
    let image = vdisk_vhdx::DRIVER
        .create(
            Box::new(mem.clone()),
            &CreateSpec::new(ImageKind::Dynamic, 2 << 40).block_size(2 * MIB),
        )
        .expect("create");
    let data = vec![0x5au8; 4096];
    let zeros = vec![0u8; 4096];
    for b in (0..image.block_count()).step_by(1024) {
        image.write_at(&data, b * 2 * MIB).expect("write");
        image.write_at(&zeros, (b + 1) * 2 * MIB).expect("write");
    }
    image.flush().expect("flush");
    mem
}

fn plan_in(image: &mut dyn DiskImage, mode: Mode) -> vdisk_core::CompactPlan {
    GenericCompactor
        .plan(
            image,
            &CompactOptions::new(mode),
            &NoProgress,
            &CancelToken::new(),
        )
        .expect("plan")
}

fn plan(image: &mut dyn DiskImage) -> vdisk_core::CompactPlan {
    plan_in(image, Mode::Prezeroed)
}

fn bat_load_and_plan(c: &mut Criterion) {
    let mem = huge_vhdx();
    let mut group = c.benchmark_group("bat_load_plan");
    let entries = (2u64 << 40) / (2 * MIB);
    group.throughput(Throughput::Elements(entries));
    group.sample_size(10);
    group.bench_function("vhdx_2TiB_1Mi_entries_open_and_plan", |b| {
        b.iter(|| {
            let mut image = vdisk_vhdx::DRIVER
                .open(Box::new(mem.read_only()), &OpenOptions::read_only())
                .expect("open");
            // Pretrimmed: the table pass and move planning without the zero scan, whose
            // cost (reading blocks) the other groups measure. Through the library's entry
            // point, as a dry run.
            let toolkit = Toolkit::new(Registry::new(&[&vdisk_vhdx::DRIVER]), &[]);
            let request = CompactRequest::new(Mode::Pretrimmed).dry_run(true);
            compact_image(
                &mut *image,
                &toolkit,
                &request,
                &NoProgress,
                &CancelToken::new(),
            )
            .expect("dry run")
            .report
            .blocks_allocated_before
        })
    });
    // The baseline: copying as many bytes as the table holds (8 bytes per entry).
    let bat = vec![0x11u8; usize::try_from(entries * 8).expect("fits")];
    let mut dst = vec![0u8; bat.len()];
    group.bench_function("memcpy_bat", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&bat)))
    });
    group.finish();
}

/// A 256 MiB dynamic VHDX with 1 MiB blocks, all allocated: even blocks data, odd blocks
/// stored zeros. Compaction frees the 128 zero blocks and moves 64 data blocks (64 MiB).
fn bloated_vhdx() -> Vec<u8> {
    let mem = MemFile::new();
    let image = vdisk_vhdx::DRIVER
        .create(
            Box::new(mem.clone()),
            &CreateSpec::new(ImageKind::Dynamic, 256 * MIB).block_size(MIB),
        )
        .expect("create");
    let mut block = vec![0u8; 1 << 20];
    for b in 0..256u64 {
        block.fill((b % 251) as u8 + 1);
        image.write_at(&block, b * MIB).expect("write");
        if b % 2 == 1 {
            // Stored zeros: written over data, so the block stays allocated.
            block.fill(0);
            image.write_at(&block, b * MIB).expect("write");
        }
    }
    image.flush().expect("flush");
    drop(image);
    mem.to_vec()
}

fn relocation(c: &mut Criterion) {
    let bytes = bloated_vhdx();
    let moved = {
        let mut image = vdisk_vhdx::DRIVER
            .open(
                Box::new(MemFile::from_bytes(bytes.clone())),
                &OpenOptions::read_write(),
            )
            .expect("open");
        let p = plan(&mut *image);
        assert_eq!(p.moves.len(), 64, "the bench image must need moves");
        p.moves.len() as u64 * MIB
    };
    let mut group = c.benchmark_group("relocate");
    group.throughput(Throughput::Bytes(moved));
    group.sample_size(10);
    // Planning (the zero scan) happens in the untimed setup: only applying is measured.
    let planned = |mut image: Box<dyn DiskImage>| {
        let p = plan(&mut *image);
        (image, p)
    };
    let apply = |(mut image, p): (Box<dyn DiskImage>, vdisk_core::CompactPlan)| {
        GenericCompactor
            .apply(&mut *image, &p, &NoProgress, &CancelToken::new())
            .expect("apply")
            .blocks_moved
    };
    group.bench_function("memfile_apply", |b| {
        b.iter_batched(
            || {
                planned(
                    vdisk_vhdx::DRIVER
                        .open(
                            Box::new(MemFile::from_bytes(bytes.clone())),
                            &OpenOptions::read_write(),
                        )
                        .expect("open"),
                )
            },
            apply,
            BatchSize::PerIteration,
        )
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.vhdx");
    group.bench_function("stdfile_apply_with_syncs", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_file(&path);
                let f = StdFile::create_new(&path).expect("create");
                f.write_at(&bytes, 0).expect("write");
                f.sync().expect("sync");
                drop(f);
                let file = StdFile::open(&path, vdisk_core::Access::ReadWrite).expect("open");
                planned(
                    vdisk_vhdx::DRIVER
                        .open(Box::new(file), &OpenOptions::read_write())
                        .expect("open"),
                )
            },
            apply,
            BatchSize::PerIteration,
        )
    });
    let src = vec![0x5au8; usize::try_from(moved).expect("fits")];
    let mut dst = vec![0u8; src.len()];
    group.bench_function("memcpy", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)))
    });
    group.finish();
}

criterion_group!(
    benches,
    zero_detection,
    move_planning,
    bat_load_and_plan,
    relocation
);
criterion_main!(benches);
