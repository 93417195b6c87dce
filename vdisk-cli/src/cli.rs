//! The command line, declared with clap's derive API.

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use vdisk_core::{ImageKind, Mode, ParentPolicy};

use crate::exit;

/// Inspect, check, create and compact virtual hard disk images in place.
#[derive(Debug, Parser)]
#[command(name = "vdisk", version, after_help = exit::HELP)]
pub struct Cli {
    /// The parent of the differencing image(s) named (used instead of the parent locators
    /// stored in the image; the link is still verified). With `create --type differencing`:
    /// the parent to create the child over.
    #[arg(long, global = true, value_name = "PATH")]
    pub parent: Option<PathBuf>,
    /// A folder where parents named inside differencing images may be opened, besides the
    /// image's own folder (repeatable). Paths found inside an image are never followed
    /// elsewhere.
    #[arg(long = "parent-dir", global = true, value_name = "DIR")]
    pub parent_dirs: Vec<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the help of a `--format` option lists the formats: filled in from the registry by
/// [`Cli::parse_with_formats`], so a new format needs no edit here.
const FORMATS: &str = "FORMATS";

impl Cli {
    /// Parses the command line as [`Parser::parse`] does, with `formats` (the ids of the
    /// registered formats) in the help of every `--format` option; exits on a usage error or
    /// after printing help.
    pub fn parse_with_formats(formats: &str) -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let fill = |mut arg: clap::Arg| {
            if let Some(help) = arg
                .get_help()
                .map(|h| h.to_string().replace(FORMATS, formats))
            {
                arg = arg.help(help);
            }
            if let Some(long) = arg
                .get_long_help()
                .map(|h| h.to_string().replace(FORMATS, formats))
            {
                arg = arg.long_help(long);
            }
            arg
        };
        let mut command = Cli::command();
        let names: Vec<String> = command
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        for name in names {
            command = command.mut_subcommand(name, |sub| {
                if sub.get_arguments().any(|a| a.get_id() == "format") {
                    sub.mut_arg("format", fill)
                } else {
                    sub
                }
            });
        }
        let mut matches = command.clone().get_matches();
        Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut command).exit())
    }

    /// The parent policy for every open, from `--parent` and `--parent-dir`.
    pub fn parent_policy(&self) -> ParentPolicy {
        ParentPolicy {
            explicit: self.parent.clone(),
            allowed_dirs: self.parent_dirs.clone(),
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show format, type, sizes and allocation of images.
    #[command(after_help = exit::HELP)]
    Info(InfoArgs),
    /// Shrink image files in place by reclaiming blocks that hold no data.
    #[command(after_help = exit::HELP)]
    Compact(CompactArgs),
    /// Create a new, empty image (never overwrites an existing file).
    #[command(after_help = exit::HELP)]
    Create(CreateArgs),
    /// Validate the structure of images; exit 0 only if every one is safe to compact.
    #[command(after_help = exit::HELP)]
    Check(CheckArgs),
    /// Show where each part of the virtual disk lives: stored in the file (and where), reading
    /// as zeros, read from the parent, or released by the guest.
    #[command(after_help = exit::HELP)]
    Map(MapArgs),
}

/// `vdisk info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Open the image as this format (FORMATS) instead of detecting it: for a file vdisk
    /// refuses as ambiguous (it reads as both), after you have checked which it is.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Print one JSON object per file (JSON Lines) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Image files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// `vdisk compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Open the image as this format (FORMATS) instead of detecting it: for a file vdisk
    /// refuses as ambiguous (it reads as both), after you have checked which it is.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// What to reclaim.
    #[arg(long, default_value = "full", value_parser = mode_parser())]
    pub mode: Mode,
    /// Only report what would be reclaimed; open read-only and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Reclaim the space of deleted files even from an image that differencing images in its
    /// folder read through. Their content then changes (VHDX children refuse to open, VHD
    /// children read whatever the parent now holds): only for children you will discard.
    #[arg(long)]
    pub force: bool,
    /// Reclaim the free space of NTFS volumes that have shadow copies (System Restore points,
    /// Previous Versions). Snapshots read deleted files' clusters from that free space, so
    /// their data is lost. Without this option only blocks holding only zeros are reclaimed there.
    #[arg(long)]
    pub discard_shadow_copies: bool,
    /// Print one JSON object per file (JSON Lines) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Many disks at once: walk each folder named and compact every image below it that
    /// --include selects and --exclude does not. Symbolic links are never followed, neither to
    /// files nor to folders, so the walk stays inside the folders named (a folder named on the
    /// command line is used as given). Each file gets one line (state, path, what happened)
    /// and the run ends with a summary line.
    #[arg(long, short = 'r', help_heading = BATCH)]
    pub recursive: bool,
    /// With --recursive: compact only files whose name matches GLOB (repeatable;
    /// case-insensitive; default: the file extensions of every supported format, such as
    /// *.vhdx and *.qcow2). A GLOB containing "/" is matched against
    /// the path below the folder named instead of the file name.
    #[arg(long, value_name = "GLOB", requires = "recursive", help_heading = BATCH)]
    pub include: Vec<String>,
    /// With --recursive: skip files, and whole folders, whose name matches GLOB (repeatable;
    /// case-insensitive; same rules as --include).
    #[arg(long, value_name = "GLOB", requires = "recursive", help_heading = BATCH)]
    pub exclude: Vec<String>,
    /// Compact up to N files at the same time (default 1), each under its own exclusive lock.
    /// With N > 1 the per-file progress bars are replaced by one bar counting files; output
    /// lines are never mixed.
    #[arg(long, short = 'j', value_name = "N", help_heading = BATCH,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// Compact a file only if a dry run first estimates it saves at least SIZE (e.g. 500M,
    /// same units as create's --size) or PERCENT of the file (e.g. 10%); otherwise its state
    /// is below-threshold and the file is not changed.
    #[arg(long, value_name = "SIZE|PERCENT", help_heading = BATCH,
          value_parser = crate::batch::threshold::MinSavings::parse)]
    pub min_savings: Option<crate::batch::threshold::MinSavings>,
    /// A file another program holds (a running VM, qemu, a mounted profile disk) gets the
    /// state in-use, naming the holder where the system can tell, instead of counting as a
    /// failure.
    #[arg(long, help_heading = BATCH)]
    pub skip_in_use: bool,
    /// Append one row per file to FILE: CSV (header written when the file is empty) or JSON
    /// Lines, by the extension .csv or .jsonl or --report-format. Each row is appended whole
    /// in one write under a lock, so several runs (or hosts, on a shared folder) can share
    /// the file. Columns: path, state, start, end, seconds, bytes_before, bytes_after,
    /// bytes_saved, mode, message, format, dry_run, exit_code, host. States: compacted,
    /// nothing-to-reclaim, below-threshold, in-use, failed, cancelled.
    #[arg(long, value_name = "FILE", help_heading = BATCH)]
    pub report: Option<PathBuf>,
    /// The format of --report, when its extension does not say.
    #[arg(long, value_name = "FORMAT", requires = "report", help_heading = BATCH)]
    pub report_format: Option<crate::batch::report_file::ReportFormat>,
    /// Image files (or, with --recursive, folders); each is compacted on its own.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// The help heading of the options for many files at once.
const BATCH: &str = "Many disks at once";

impl CompactArgs {
    /// True if any option of batch mode is given: the run then goes through
    /// [`crate::batch`] (one line per file with its state, a summary, the report).
    pub fn is_batch(&self) -> bool {
        self.recursive
            || self.jobs.is_some()
            || self.min_savings.is_some()
            || self.skip_in_use
            || self.report.is_some()
    }
}

/// `vdisk create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Image format (FORMATS); for differencing images, default: the parent's.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Fixed (all space allocated now), dynamic (grows on write) or differencing (a child of
    /// --parent that holds only what is written to it).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: KindArg,
    /// Virtual size: bytes, or a number with K, M, G, T (or KiB, MiB, GiB, TiB; powers of
    /// 1024). Differencing images take their parent's size.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub size: Option<u64>,
    /// Block size (dynamic images), same units as --size; default: the format's.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub block_size: Option<u64>,
    /// The file to create; it must not exist.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `vdisk check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Open the image as this format (FORMATS) instead of detecting it: for a file vdisk
    /// refuses as ambiguous (it reads as both), after you have checked which it is.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Print one JSON object per file (JSON Lines) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Image files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// `vdisk map`.
#[derive(Debug, Args)]
pub struct MapArgs {
    /// Open the image as this format (FORMATS) instead of detecting it: for a file vdisk
    /// refuses as ambiguous (it reads as both), after you have checked which it is.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Print one JSON object per file (JSON Lines) on stdout, with every extent.
    #[arg(long)]
    pub json: bool,
    /// Image files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// The image types `create` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Every virtual byte has its place in the file from the start.
    Fixed,
    /// The file grows as blocks are written.
    Dynamic,
    /// A child of --parent: holds only what is written to it, reads the rest from the parent.
    Differencing,
}

impl KindArg {
    /// The core's image kind.
    pub fn kind(self) -> ImageKind {
        match self {
            KindArg::Fixed => ImageKind::Fixed,
            KindArg::Dynamic => ImageKind::Dynamic,
            KindArg::Differencing => ImageKind::Differencing,
        }
    }
}

/// One-line help for each mode, shown by `--help`.
fn mode_help(mode: Mode) -> &'static str {
    match mode {
        Mode::Full => {
            "space of deleted files + blocks that hold only zeros + space the guest already released (the smallest file)"
        }
        Mode::Quick => {
            "space of deleted files + space the guest already released; reads only the file system's maps, not the data"
        }
        Mode::Prezeroed => {
            "blocks that hold only zeros + space the guest already released; every byte reads the same"
        }
        Mode::Pretrimmed => "only space the guest already released; reads no data",
        Mode::Retrim => {
            "give the host back the space of deleted files, zeros and released blocks without moving anything; the file keeps its length (fixed disks)"
        }
    }
}

/// A parser for `--mode` that lists every mode the core knows, with its help.
fn mode_parser() -> impl TypedValueParser<Value = Mode> {
    PossibleValuesParser::new(Mode::ALL.map(|m| PossibleValue::new(m.as_str()).help(mode_help(m))))
        .try_map(|s| s.parse::<Mode>())
}

/// Parses a size: plain bytes, or a number followed by K, M, G, T (optionally with "iB"),
/// case-insensitive, in powers of 1024. Decimal units (KB, MB...) are refused as ambiguous.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "{text:?} is not a size: expected bytes or a whole number with K, M, G or T"
        ));
    }
    if unit.starts_with(['.', ',']) {
        return Err(format!(
            "{text:?}: use a whole number, in a smaller unit if needed (1536M for 1.5G)"
        ));
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "kb" | "mb" | "gb" | "tb" => {
            return Err(format!(
                "{text:?}: decimal units are ambiguous; use K, M, G, T or KiB, MiB, GiB, TiB (powers of 1024)"
            ));
        }
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use K, M, G, T or KiB, MiB, GiB, TiB"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn sizes_accept_bytes_and_binary_suffixes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("3 GiB"), Ok(3 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
    }

    #[test]
    fn sizes_refuse_garbage_decimal_units_and_overflow() {
        for bad in ["", "M", "1.5G", "-1", "1MB", "1X", "99999999999T", "1 G B"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn parent_options_are_global_and_repeatable() {
        let cli = Cli::try_parse_from([
            "vdisk",
            "info",
            "--parent",
            "p.vhd",
            "--parent-dir",
            "/a",
            "--parent-dir",
            "/b",
            "c.vhd",
        ])
        .unwrap();
        let policy = cli.parent_policy();
        assert_eq!(policy.explicit, Some(PathBuf::from("p.vhd")));
        assert_eq!(
            policy.allowed_dirs,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_core_mode_is_accepted_and_unknown_ones_are_usage_errors() {
        for m in Mode::ALL {
            let cli = Cli::try_parse_from(["vdisk", "compact", "--mode", m.as_str(), "a.vhd"]);
            assert!(cli.is_ok(), "{m}");
        }
        let err = Cli::try_parse_from(["vdisk", "compact", "--mode", "fast", "a.vhd"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
