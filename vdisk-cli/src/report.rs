//! Everything `vdisk` prints: human lines, JSON Lines objects, error lines.
//!
//! Results go to stdout; errors, notes and progress to stderr. Write errors (a closed pipe) are
//! ignored so that `vdisk ... | head` never panics.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use vdisk_core::{CheckReport, CompactReport, DiskAnalysis, Error, ImageInfo, Severity};

use crate::commands::check::Verdict;
use crate::exit;
use crate::host_space::HostSpace;
use crate::volumes::VolumeJson;

/// Whether `c` is escaped before it reaches a terminal: a control character other than a
/// line break or tab, or a bidirectional override or zero-width character. Messages quote
/// names and paths read from images (snapshot ids, parent locators), which must not drive
/// the user's terminal or disguise a line.
fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `line` with every character [`needs_escape`] names escaped as Rust writes it (`\u{1b}`).
fn terminal_safe(line: &str) -> Cow<'_, str> {
    if !line.chars().any(needs_escape) {
        return Cow::Borrowed(line);
    }
    let mut safe = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if needs_escape(c) {
            safe.extend(c.escape_default());
        } else {
            safe.push(c);
        }
    }
    Cow::Owned(safe)
}

/// Prints one line on stdout, escaped for the terminal ([`terminal_safe`]).
pub fn out(line: &str) {
    out_raw(&terminal_safe(line));
}

/// Prints one line on stdout as it is (JSON, whose encoder escapes control characters).
fn out_raw(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Prints one line on stderr, escaped for the terminal ([`terminal_safe`]).
pub fn err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{}", terminal_safe(line));
}

/// Prints `value` as one JSON line on stdout.
pub fn json_line(value: &impl Serialize) {
    match serde_json::to_string(value) {
        Ok(s) => out_raw(&s),
        Err(e) => err(&format!("vdisk: cannot encode the JSON report: {e}")),
    }
}

/// The path as the user gave it, for messages and the `file` field.
pub fn shown(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A size in binary units: "512 B", "1.5 KiB", "12.5 MiB", "1.0 GiB".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Where in its handling of a file an error happened: this decides what we can promise about
/// the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before anything was written (open, plan, read-only commands).
    Untouched,
    /// While compaction was writing: every step leaves a valid image.
    Applying,
    /// Failed before the operation wrote, after the image changed the file on its own (a
    /// pending VHDX log replayed: [`vdisk_core::DiskImage::implicit_changes`]).
    ChangedByOpen,
    /// `create` failed before it created the file (or the file already existed).
    NotCreated,
    /// `create` failed after creating the file and removed it again.
    CreatedAndRemoved,
    /// `create` failed after creating the file and could not remove it.
    CreatedNotRemoved,
}

impl Stage {
    /// The promise printed on the second error line.
    pub fn promise(self) -> &'static str {
        match self {
            Stage::Untouched => "the file was not changed",
            Stage::Applying => "the image is valid; run the same command again to finish",
            Stage::ChangedByOpen => {
                "the pending log was replayed (the file was changed; its content is what the \
                 log says); nothing else was written"
            }
            Stage::NotCreated => "no file was created",
            Stage::CreatedAndRemoved => "the partly created file was removed",
            Stage::CreatedNotRemoved => {
                "the partly created file could not be removed; delete it by hand"
            }
        }
    }
}

/// The stage to report for a failure at `stage`, given what the image changed on its own
/// (`DiskImage::implicit_changes`): "the file was not changed" is never said after a change.
pub fn changed_stage(stage: Stage, implicit_changes: &[String]) -> Stage {
    if stage == Stage::Untouched && !implicit_changes.is_empty() {
        Stage::ChangedByOpen
    } else {
        stage
    }
}

/// The error's message with its offset, the path it names if that is not `file`, and its
/// cause chain, each cause once: "message (at offset 0x200): cause: cause".
pub fn error_message(file: &Path, error: &Error) -> String {
    let mut text = String::new();
    if let Some(p) = error.path().filter(|p| *p != file) {
        text.push_str(&format!("{}: ", p.display()));
    }
    text.push_str(error.message());
    if let Some(offset) = error.offset() {
        text.push_str(&format!(" (at offset {offset:#x})"));
    }
    let mut last = String::new();
    let mut cause: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !s.is_empty() && s != last && !text.ends_with(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        last = s;
        cause = c.source();
    }
    text
}

/// The JSON object for a failed file.
#[derive(Debug, Serialize)]
pub struct ErrorJson {
    file: String,
    error: ErrorBody,
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    kind: &'static str,
    message: String,
    exit_code: u8,
    /// False when the file is known to be untouched.
    may_have_changed: bool,
}

/// Reports a failed file (JSON object on stdout, or two lines on stderr); returns its exit code.
pub fn failure(file: &Path, error: &Error, stage: Stage, json: bool) -> u8 {
    let code = exit::code_for(error.kind());
    let mut message = error_message(file, error);
    if error.kind() == vdisk_core::ErrorKind::Internal {
        message = format!("internal error (a bug in vdisk; please report it): {message}");
    }
    if json {
        json_line(&ErrorJson {
            file: shown(file),
            error: ErrorBody {
                kind: error.kind().as_str(),
                message,
                exit_code: code,
                may_have_changed: matches!(
                    stage,
                    Stage::Applying | Stage::ChangedByOpen | Stage::CreatedNotRemoved
                ),
            },
        });
    } else {
        let name = shown(file);
        // The promise line already says what a cancelled run left behind.
        let first = if error.kind() == vdisk_core::ErrorKind::Cancelled {
            "cancelled".to_string()
        } else {
            message
        };
        err(&format!("vdisk: {name}: {first}"));
        // A file that does not exist has nothing to promise about.
        if error.kind() != vdisk_core::ErrorKind::NotFound {
            err(&format!("vdisk: {name}: {}", stage.promise()));
        }
    }
    code
}

/// A note for the user that is not an error.
pub fn note(file: &Path, text: &str) {
    err(&format!("vdisk: {}: note: {text}", shown(file)));
}

/// `vdisk info --json`.
#[derive(Debug, Serialize)]
pub struct InfoJson {
    file: String,
    format: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    virtual_size: u64,
    block_size: u64,
    blocks_total: u64,
    allocated_blocks: u64,
    file_size: u64,
    details: serde_json::Map<String, serde_json::Value>,
    /// The parent chain, immediate parent first; empty for base images.
    chain: Vec<ChainMember>,
    /// "none", "mbr", "gpt" or "unknown"; absent if the guest disk could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    partition_table: Option<&'static str>,
    /// Partitions (or the whole disk) and their file systems.
    #[serde(skip_serializing_if = "Option::is_none")]
    volumes: Option<Vec<VolumeJson>>,
}

/// One ancestor of a differencing image, for `vdisk info`.
#[derive(Debug, Clone, Serialize)]
pub struct ChainMember {
    /// Where it was opened.
    pub path: String,
    /// Its format id.
    pub format: &'static str,
    /// Fixed, dynamic or differencing.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl InfoJson {
    /// Adds the parent chain.
    pub fn with_chain(mut self, chain: Vec<ChainMember>) -> InfoJson {
        self.chain = chain;
        self
    }

    /// The object for `info` of `file`, with the file-system analysis if there is one.
    pub fn new(file: &Path, info: &ImageInfo, analysis: Option<&DiskAnalysis>) -> InfoJson {
        InfoJson {
            file: shown(file),
            format: info.format,
            kind: info.kind.as_str(),
            virtual_size: info.virtual_size,
            block_size: info.block_size,
            blocks_total: info.block_count,
            allocated_blocks: info.allocated_blocks,
            file_size: info.file_size,
            details: info
                .details
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
            chain: Vec::new(),
            partition_table: analysis.map(|a| a.layout.scheme_name()),
            volumes: analysis.map(|a| a.volumes.iter().map(VolumeJson::new).collect()),
        }
    }
}

/// Longest detail name shown (a snapshot id, say, can be 65535 bytes long).
const MAX_DETAIL_NAME: usize = 64;
/// Longest detail value shown.
const MAX_DETAIL_VALUE: usize = 4096;

/// Text read from an image (a detail, a path a parent was found at) for one aligned line:
/// escaped as [`terminal_safe`] does (line breaks and tabs too), at most `max` characters as
/// shown, the rest cut with "…".
fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut shown = 0;
    for c in text.chars() {
        let piece: String = if needs_escape(c) || c == '\n' || c == '\t' {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        let n = piece.chars().count();
        if shown + n > max {
            out.push('…');
            break;
        }
        out.push_str(&piece);
        shown += n;
    }
    out
}

/// The human form of `info`: a few aligned lines, then the parent chain if there is one.
pub fn info_human(file: &Path, info: &ImageInfo, chain: &[ChainMember]) -> String {
    let details: Vec<(String, String)> = info
        .details
        .iter()
        .map(|(k, v)| {
            (
                printable(k, MAX_DETAIL_NAME),
                printable(v, MAX_DETAIL_VALUE),
            )
        })
        .collect();
    let rows: Vec<(String, String)> = vec![
        ("format".into(), info.format.into()),
        ("type".into(), info.kind.as_str().into()),
        (
            "virtual size".into(),
            format!(
                "{} ({} bytes)",
                human_size(info.virtual_size),
                info.virtual_size
            ),
        ),
        ("block size".into(), human_size(info.block_size)),
        (
            "allocated".into(),
            format!("{} of {} blocks", info.allocated_blocks, info.block_count),
        ),
        (
            "file size".into(),
            format!("{} ({} bytes)", human_size(info.file_size), info.file_size),
        ),
    ];
    let width = rows
        .iter()
        .chain(&details)
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    let mut text = format!("{}:", shown(file));
    for (k, v) in rows {
        let w = width + 2;
        text.push_str(&format!("\n  {:<w$} {v}", format!("{k}:")));
    }
    if !chain.is_empty() {
        text.push_str("\n  parent chain:");
        for (i, m) in chain.iter().enumerate() {
            text.push_str(&format!(
                "\n    {}. {} ({} {})",
                i + 1,
                printable(&m.path, MAX_DETAIL_VALUE),
                m.format,
                m.kind
            ));
        }
    }
    if !details.is_empty() {
        text.push_str(&format!("\n  {} details:", info.format));
        for (k, v) in &details {
            text.push_str(&format!("\n    {:<width$} {v}", format!("{k}:")));
        }
    }
    text
}

/// `vdisk compact --json`.
#[derive(Debug, Serialize)]
pub struct CompactJson {
    file: String,
    format: &'static str,
    mode: &'static str,
    requested_mode: &'static str,
    dry_run: bool,
    bytes_before: u64,
    bytes_after: u64,
    block_size: u64,
    blocks_total: u64,
    blocks_allocated_before: u64,
    blocks_reclaimed: u64,
    blocks_reclaimed_zero: u64,
    blocks_reclaimed_trimmed: u64,
    blocks_reclaimed_fs: u64,
    blocks_reclaimed_parent: u64,
    /// Virtual bytes of the blocks reclaimed because the file system does not use them.
    bytes_reclaimed_fs: u64,
    /// Virtual bytes of the blocks reclaimed because they read as zeros.
    bytes_reclaimed_zero: u64,
    /// Virtual bytes of the blocks reclaimed because the image marks them trimmed.
    bytes_reclaimed_trimmed: u64,
    blocks_moved: u64,
    bytes_punched: u64,
    /// Host storage the file took before, as `du` counts it (absent where the host does not
    /// say).
    #[serde(skip_serializing_if = "Option::is_none")]
    host_allocated_before: Option<u64>,
    /// Host storage it takes after (absent for a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    host_allocated_after: Option<u64>,
    /// "none", "mbr", "gpt" or "unknown"; absent when the mode does not use the file system.
    #[serde(skip_serializing_if = "Option::is_none")]
    partition_table: Option<&'static str>,
    /// The volumes examined; absent when the mode does not use the file system.
    #[serde(skip_serializing_if = "Option::is_none")]
    volumes: Option<Vec<VolumeJson>>,
    notes: Vec<String>,
}

impl CompactJson {
    /// The object for a compaction (or dry run) of `file`.
    pub fn new(
        file: &Path,
        format: &'static str,
        requested: vdisk_core::Mode,
        r: &CompactReport,
        notes: Vec<String>,
        analysis: Option<&DiskAnalysis>,
        space: Option<HostSpace>,
    ) -> CompactJson {
        CompactJson {
            file: shown(file),
            format,
            mode: r.mode.as_str(),
            requested_mode: requested.as_str(),
            dry_run: r.dry_run,
            bytes_before: r.bytes_before,
            bytes_after: r.bytes_after,
            block_size: r.block_size,
            blocks_total: r.blocks_total,
            blocks_allocated_before: r.blocks_allocated_before,
            blocks_reclaimed: r.blocks_reclaimed,
            blocks_reclaimed_zero: r.blocks_reclaimed_zero,
            blocks_reclaimed_trimmed: r.blocks_reclaimed_trimmed,
            blocks_reclaimed_fs: r.blocks_reclaimed_fs,
            blocks_reclaimed_parent: r.blocks_reclaimed_parent,
            bytes_reclaimed_fs: r.blocks_reclaimed_fs.saturating_mul(r.block_size),
            bytes_reclaimed_zero: r.blocks_reclaimed_zero.saturating_mul(r.block_size),
            bytes_reclaimed_trimmed: r.blocks_reclaimed_trimmed.saturating_mul(r.block_size),
            blocks_moved: r.blocks_moved,
            bytes_punched: r.bytes_punched,
            host_allocated_before: space.map(|s| s.before),
            host_allocated_after: space.filter(|_| !r.dry_run).map(|s| s.after),
            partition_table: analysis.map(|a| a.layout.scheme_name()),
            volumes: analysis.map(|a| a.volumes.iter().map(VolumeJson::new).collect()),
            notes,
        }
    }
}

/// True if the compaction changes (or changed) nothing.
pub fn nothing_to_reclaim(r: &CompactReport) -> bool {
    vdisk_core::nothing_to_reclaim(r)
}

/// The one-line human summary of a compaction; `space` is the host storage the file took
/// before and after, where the host says (it is what a retrim's line reports).
pub fn compact_human(file: &Path, r: &CompactReport, space: Option<HostSpace>) -> String {
    let name = shown(file);
    let (tag, would) = if r.dry_run {
        (" (dry run, nothing written)", "would ")
    } else {
        ("", "")
    };
    if nothing_to_reclaim(r) {
        return format!(
            "{name}{tag}: nothing to reclaim ({}, {} of {} blocks allocated, {} mode)",
            human_size(r.bytes_before),
            r.blocks_allocated_before,
            r.blocks_total,
            r.mode
        );
    }
    if r.blocks_reclaimed == 0 && r.blocks_moved == 0 && r.bytes_punched == 0 {
        return format!(
            "{name}{tag}: {} -> {} (no blocks to reclaim; {would}remove{} {} of unused space at the end of the file)",
            human_size(r.bytes_before),
            human_size(r.bytes_after),
            if r.dry_run { "" } else { "d" },
            human_size(r.bytes_before.saturating_sub(r.bytes_after)),
        );
    }
    let kinds: Vec<String> = [
        (
            r.blocks_reclaimed_fs,
            "unused by the file system (deleted files)",
        ),
        (r.blocks_reclaimed_zero, "only zeros"),
        (r.blocks_reclaimed_trimmed, "released by the guest"),
        (r.blocks_reclaimed_parent, "the same as the parent"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    let mut text = format!(
        "{name}{tag}: {} -> {} ({} {} of {} stored blocks",
        human_size(r.bytes_before),
        human_size(r.bytes_after),
        if r.dry_run {
            "would give back"
        } else {
            "gave back"
        },
        r.blocks_reclaimed,
        r.blocks_allocated_before,
    );
    if !kinds.is_empty() {
        text.push_str(&format!(": {}", kinds.join(", ")));
    }
    if r.blocks_moved > 0 {
        let d = if r.dry_run { "" } else { "d" };
        text.push_str(&format!(
            "; {would}move{d} {} to close the gaps",
            r.blocks_moved
        ));
    }
    match space.filter(|_| !r.dry_run && r.mode == vdisk_core::Mode::Retrim) {
        Some(s) => text.push_str(&format!(
            "; the file keeps its length; the disk space it takes went from {} to {}{}",
            human_size(s.before),
            human_size(s.after),
            if s.given_back() == 0 {
                ": the host gave nothing back"
            } else {
                ""
            }
        )),
        None if r.bytes_punched > 0 => text.push_str(&format!(
            "; the file keeps its length, but up to {} of it {}",
            human_size(r.bytes_punched),
            if r.dry_run {
                "would stop taking disk space"
            } else {
                "no longer takes disk space"
            }
        )),
        None => {}
    }
    text.push(')');
    text
}

/// The second line of a file-system-aware compaction's summary: how much each engine found.
pub fn reclaim_sources(r: &CompactReport) -> String {
    let would = if r.dry_run { "would be " } else { "" };
    let bytes = |blocks: u64| human_size(blocks.saturating_mul(r.block_size));
    format!(
        "  {would}given back: {} of deleted or unused file-system space, {} of zero blocks, {} the guest had released",
        bytes(r.blocks_reclaimed_fs),
        bytes(r.blocks_reclaimed_zero),
        bytes(r.blocks_reclaimed_trimmed)
    )
}

/// `vdisk check --json`.
#[derive(Debug, Serialize)]
pub struct CheckJson {
    file: String,
    format: Option<&'static str>,
    safe_to_compact: bool,
    /// Why it is (or is not) safe to compact.
    safe_to_compact_why: String,
    problems: Vec<ProblemJson>,
}

#[derive(Debug, Serialize)]
struct ProblemJson {
    severity: &'static str,
    offset: Option<u64>,
    message: String,
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

impl CheckJson {
    /// The object for `check` of `file` (`format` is `None` if no driver recognised it).
    pub fn new(
        file: &Path,
        format: Option<&'static str>,
        report: &CheckReport,
        verdict: &Verdict,
    ) -> CheckJson {
        CheckJson {
            file: shown(file),
            format,
            safe_to_compact: verdict.safe,
            safe_to_compact_why: verdict.why.clone(),
            problems: report
                .problems
                .iter()
                .map(|p| ProblemJson {
                    severity: severity(p.severity),
                    offset: p.offset,
                    message: p.message.clone(),
                })
                .collect(),
        }
    }
}

/// The human form of `check`: a summary line, "safe to compact: yes/no (why)", then one line
/// per problem.
pub fn check_human(
    file: &Path,
    format: Option<&str>,
    report: &CheckReport,
    verdict: &Verdict,
) -> String {
    let errors = report
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let warnings = report.problems.len() - errors;
    let what = format.map_or_else(|| "not a recognised image".to_string(), str::to_string);
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    let mut text = if report.problems.is_empty() {
        format!("{}: {what}: no problems found", shown(file))
    } else {
        format!(
            "{}: {what}: {}, {}",
            shown(file),
            plural(errors, "error"),
            plural(warnings, "warning")
        )
    };
    let yes_no = if verdict.safe { "yes" } else { "no" };
    text.push_str(&format!("\n  safe to compact: {yes_no} ({})", verdict.why));
    for p in &report.problems {
        text.push_str(&format!("\n  {p}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use vdisk_core::{ErrorKind, Mode};

    #[test]
    fn text_from_images_reaches_the_terminal_escaped_and_details_are_cut() {
        assert_eq!(terminal_safe("plain\nline\tok"), "plain\nline\tok");
        assert_eq!(
            terminal_safe("a\u{1b}[2Jb\rc\u{202e}d\u{0}"),
            "a\\u{1b}[2Jb\\rc\\u{202e}d\\u{0}"
        );
        assert!(matches!(terminal_safe("ok"), Cow::Borrowed(_)));
        assert_eq!(printable("ab\ncd", 10), "ab\\ncd");
        assert_eq!(printable("abcdef", 4), "abcd…");
        // An escape is never cut in half.
        assert_eq!(printable("ab\u{1b}", 4), "ab…");
        let long = "x".repeat(70_000);
        let info = ImageInfo {
            format: "qcow2",
            kind: vdisk_core::ImageKind::Dynamic,
            virtual_size: 1 << 20,
            block_size: 65536,
            block_count: 16,
            allocated_blocks: 0,
            file_size: 1 << 18,
            details: vec![(long.clone(), long)],
        };
        let text = info_human(Path::new("a.qcow2"), &info, &[]);
        assert!(
            text.lines().all(|l| l.chars().count() < 4300),
            "a line is too long"
        );
    }

    #[test]
    fn sizes_use_binary_units_with_one_decimal() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(125 * (1 << 20) / 10), "12.5 MiB");
        assert_eq!(human_size(1 << 30), "1.0 GiB");
    }

    #[test]
    fn error_message_names_offset_and_cause_once_but_not_the_file() {
        let e = Error::io(io::Error::other("disk on fire"), "read failed")
            .with_path("a.vhd")
            .with_offset(0x200);
        assert_eq!(
            error_message(Path::new("a.vhd"), &e),
            "read failed (at offset 0x200): disk on fire"
        );
        let e = Error::new(ErrorKind::NotFound, "parent not found").with_path("p.vhd");
        assert_eq!(
            error_message(Path::new("c.vhd"), &e),
            "p.vhd: parent not found"
        );
    }

    #[test]
    fn an_internal_error_exits_1_and_asks_to_be_reported() {
        let e = Error::new(ErrorKind::Internal, "block 3 is not where the plan says");
        let code = failure(Path::new("a.vhd"), &e, Stage::Untouched, true);
        assert_eq!(code, 1);
        assert_eq!(e.kind().as_str(), "internal");
    }

    fn report(reclaimed: u64, moved: u64, before: u64, after: u64) -> CompactReport {
        CompactReport {
            mode: Mode::Prezeroed,
            dry_run: false,
            bytes_before: before,
            bytes_after: after,
            block_size: 2 << 20,
            blocks_total: 512,
            blocks_allocated_before: 506,
            blocks_reclaimed: reclaimed,
            blocks_reclaimed_zero: reclaimed,
            blocks_reclaimed_trimmed: 0,
            blocks_reclaimed_fs: 0,
            blocks_reclaimed_parent: 0,
            blocks_moved: moved,
            bytes_punched: 0,
        }
    }

    #[test]
    fn compact_summary_matches_the_documented_shape() {
        let r = report(500, 3, 1 << 30, 125 * (1 << 20) / 10);
        assert_eq!(
            compact_human(Path::new("disk.vhd"), &r, None),
            "disk.vhd: 1.0 GiB -> 12.5 MiB (gave back 500 of 506 stored blocks: 500 only zeros; \
             moved 3 to close the gaps)"
        );
    }

    #[test]
    fn a_failure_after_a_log_replay_never_says_the_file_was_not_changed() {
        let replayed = vec!["the pending log (1 entry up to sequence 5) was replayed".into()];
        let stage = changed_stage(Stage::Untouched, &replayed);
        assert_eq!(stage, Stage::ChangedByOpen);
        assert!(
            !stage.promise().contains("not changed"),
            "{}",
            stage.promise()
        );
        assert!(stage.promise().contains("the pending log was replayed"));
        assert_eq!(changed_stage(Stage::Untouched, &[]), Stage::Untouched);
        assert_eq!(changed_stage(Stage::Applying, &replayed), Stage::Applying);
    }

    #[test]
    fn an_unchanged_file_says_nothing_to_reclaim() {
        let r = report(0, 0, 4096, 4096);
        assert!(compact_human(Path::new("d.vhd"), &r, None).contains("nothing to reclaim"));
    }
}
