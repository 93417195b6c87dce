//! btrfs-progs' own view of a btrfs volume's free device bytes, from the text of
//! `btrfs inspect-internal dump-super` and `dump-tree -t chunk` / `-t extent`: the oracle the
//! analyser is compared with. Shared with vdisk-cli's end-to-end tests (included by path).

use std::ops::Range;
use std::path::Path;
use std::process::Command;

/// A chunk as btrfs-progs prints it.
#[derive(Debug, Clone)]
struct Chunk {
    logical: u64,
    length: u64,
    copies: Vec<u64>,
}

fn run(args: &[&str], image: &Path) -> String {
    let out = Command::new("btrfs")
        .args(args)
        .arg(image)
        .output()
        .expect("btrfs (btrfs-progs) must be installed");
    assert!(
        out.status.success(),
        "btrfs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The number after `word` in `line`.
fn field(line: &str, word: &str) -> Option<u64> {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == word {
            return it.next()?.parse().ok();
        }
    }
    None
}

/// `(object id, type, offset)` of an `item N key (A TYPE B)` line.
fn key(line: &str) -> Option<(String, String, String)> {
    let inner = line.split_once("key (")?.1.split_once(')')?.0;
    let mut p = inner.split_whitespace();
    Some((p.next()?.into(), p.next()?.into(), p.next()?.into()))
}

/// The device byte ranges of the btrfs volume in `image` (a raw file holding only the
/// volume) that btrfs-progs' dumps show hold nothing: outside every chunk, or inside a chunk
/// but in no extent (every copy of it), less the first MiB and the superblock copies.
/// Sorted, disjoint.
pub fn free_ranges(image: &Path) -> Vec<Range<u64>> {
    let sup = run(&["inspect-internal", "dump-super"], image);
    let nodesize = sup
        .lines()
        .find_map(|l| {
            l.starts_with("nodesize")
                .then(|| field(l, "nodesize"))
                .flatten()
        })
        .expect("nodesize in dump-super");
    let dev_bytes = sup
        .lines()
        .find_map(|l| {
            l.trim_start()
                .starts_with("dev_item.total_bytes")
                .then(|| field(l, "dev_item.total_bytes"))
                .flatten()
        })
        .expect("dev_item.total_bytes in dump-super");

    let mut chunks: Vec<Chunk> = Vec::new();
    for line in run(&["inspect-internal", "dump-tree", "-t", "chunk"], image).lines() {
        if let Some((_, t, off)) = key(line)
            && t == "CHUNK_ITEM"
        {
            chunks.push(Chunk {
                logical: off.parse().unwrap(),
                length: 0,
                copies: Vec::new(),
            });
        } else if let Some(c) = chunks.last_mut() {
            if let Some(l) = field(line, "length").filter(|_| line.contains("stripe_len")) {
                c.length = l;
            }
            if line.trim_start().starts_with("stripe ") {
                c.copies.push(field(line, "offset").unwrap());
            }
        }
    }
    chunks.sort_by_key(|c| c.logical);

    let mut extents: Vec<Range<u64>> = Vec::new();
    for line in run(&["inspect-internal", "dump-tree", "-t", "extent"], image).lines() {
        if let Some((obj, t, off)) = key(line) {
            let start: u64 = match obj.parse() {
                Ok(s) => s,
                Err(_) => continue,
            };
            match t.as_str() {
                "EXTENT_ITEM" => extents.push(start..start + off.parse::<u64>().unwrap()),
                "METADATA_ITEM" => extents.push(start..start + nodesize),
                _ => {}
            }
        }
    }
    extents.sort_by_key(|r| r.start);

    let mut free: Vec<Range<u64>> = Vec::new();
    for c in &chunks {
        let mut at = c.logical;
        let end = c.logical + c.length;
        let inside = extents
            .iter()
            .filter(|e| e.start >= c.logical && e.start < end);
        let mut gaps = Vec::new();
        for e in inside {
            if e.start > at {
                gaps.push(at..e.start);
            }
            at = at.max(e.end);
        }
        if end > at {
            gaps.push(at..end);
        }
        for g in gaps {
            for &p in &c.copies {
                free.push(p + (g.start - c.logical)..p + (g.end - c.logical));
            }
        }
    }
    let mut held: Vec<Range<u64>> = chunks
        .iter()
        .flat_map(|c| c.copies.iter().map(|&p| p..p + c.length))
        .collect();
    held.sort_by_key(|r| r.start);
    let mut at = 0;
    for h in held {
        if h.start > at {
            free.push(at..h.start);
        }
        at = at.max(h.end);
    }
    if dev_bytes > at {
        free.push(at..dev_bytes);
    }
    let reserved = [
        0..1 << 20,
        (64 << 20)..(64 << 20) + 4096,
        (256 << 30)..(256 << 30) + 4096,
    ];
    subtract(normalise(free), &reserved)
}

/// Sorted, merged.
pub fn normalise(mut v: Vec<Range<u64>>) -> Vec<Range<u64>> {
    v.retain(|r| r.start < r.end);
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(l) if r.start <= l.end => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// `ranges` less every byte of `cut`.
pub fn subtract(ranges: Vec<Range<u64>>, cut: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for r in ranges {
        let mut pieces = vec![r];
        for c in cut {
            pieces = pieces
                .into_iter()
                .flat_map(|p| {
                    let mut v = Vec::new();
                    if c.start > p.start {
                        v.push(p.start..p.end.min(c.start));
                    }
                    if c.end < p.end {
                        v.push(p.start.max(c.end)..p.end);
                    }
                    v.into_iter().filter(|x| x.start < x.end)
                })
                .collect();
        }
        out.extend(pieces);
    }
    normalise(out)
}
