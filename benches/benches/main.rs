//! Criterion benches for vdisk's hot paths.
//!
//! - `zero_detect/*`: `vdisk_core::is_zero` throughput on in-memory blocks of several sizes,
//!   next to `memory_read/*`, a plain read of the same buffer (an XOR fold over u64 words that
//!   cannot exit early), measured in the same run so the ratio is meaningful on any machine.
//! - `plan_moves/*`: planning the block moves of a large, fragmented table (2 Mi blocks).
//!
//! Run: `cargo bench -p vdisk-benches` (or `cargo xtask bench` once it exists).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vdisk_core::compact::plan_moves;
use vdisk_core::{BlockIndex, HostLayout, HostOffset, is_zero};

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

criterion_group!(benches, zero_detection, move_planning);
criterion_main!(benches);
