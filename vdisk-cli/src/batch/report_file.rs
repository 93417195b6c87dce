//! `--report FILE`: one row per file appended to a CSV or JSON Lines file that several runs,
//! on one host or many (a shared folder), may append to at the same time.
//!
//! Each row is one `write(2)` of a whole line on a file opened with `O_APPEND`, under an
//! exclusive `flock` (which also covers the header: it is written only when the file is empty,
//! and two runs starting on an empty file must not both write it). A reader never sees half a
//! row, and rows of concurrent runs never mix.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::row::{CSV_HEADER, Row};
use crate::exit;

/// The report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl ReportFormat {
    /// The format the file's extension names (.csv, .jsonl, .ndjson), case-insensitive.
    pub fn from_extension(path: &Path) -> Option<ReportFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(ReportFormat::Csv),
            "jsonl" | "ndjson" => Some(ReportFormat::Jsonl),
            _ => None,
        }
    }
}

/// An open report file.
#[derive(Debug)]
pub struct ReportFile {
    file: File,
    path: PathBuf,
    format: ReportFormat,
}

impl ReportFile {
    /// Opens (or creates) the report at `path` for appending, in `format` or the one its
    /// extension names. A CSV file that already has rows must start with this version's
    /// header: rows of another layout would make the table unreadable.
    ///
    /// Errors carry the exit code of their kind: a name or file that cannot be a report is a
    /// usage error, a host error has its own kind's code (no such folder, read-only, ...).
    pub fn open(path: &Path, format: Option<ReportFormat>) -> Result<ReportFile, (u8, String)> {
        let usage = |m: String| (exit::USAGE, m);
        let shown = path.display();
        let format = format
            .or_else(|| ReportFormat::from_extension(path))
            .ok_or_else(|| {
                usage(format!(
                    "{shown}: cannot tell the report format from the extension; name the file \
                     .csv or .jsonl, or give --report-format csv|jsonl"
                ))
            })?;
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .read(true)
            .open(path)
            .map_err(|e| host(&e, format!("{shown}: cannot open the report file: {e}")))?;
        let meta = file.metadata().map_err(|e| {
            host(
                &e,
                format!("{shown}: cannot read the report file's metadata: {e}"),
            )
        })?;
        if !meta.is_file() {
            return Err(usage(format!("{shown}: the report must be a regular file")));
        }
        let report = ReportFile {
            file,
            path: path.to_path_buf(),
            format,
        };
        if format == ReportFormat::Csv {
            report.check_header().map_err(usage)?;
        }
        Ok(report)
    }

    /// Refuses a non-empty CSV file whose first line is not our header.
    fn check_header(&self) -> Result<(), String> {
        let mut first = vec![0u8; CSV_HEADER.len() + 1];
        let mut read = 0;
        let mut f = &self.file;
        while read < first.len() {
            match f.read(&mut first[read..]) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) => {
                    return Err(format!(
                        "{}: cannot read the report file: {e}",
                        self.path.display()
                    ));
                }
            }
        }
        let first = &first[..read];
        let expected = format!("{CSV_HEADER}\n");
        if !first.is_empty() && first != expected.as_bytes() {
            return Err(format!(
                "{}: this CSV file does not start with the header of vdisk's report ({CSV_HEADER}); \
                 give a new file or an earlier report of this version",
                self.path.display()
            ));
        }
        Ok(())
    }

    /// Appends `row` in one write, with the header first if the file is empty.
    pub fn append(&self, row: &Row) -> io::Result<()> {
        let _lock = Lock::exclusive(&self.file)?;
        let mut line = match self.format {
            ReportFormat::Csv => row.csv_line(),
            ReportFormat::Jsonl => row.json_line(),
        };
        if self.format == ReportFormat::Csv && self.file.metadata()?.len() == 0 {
            line = format!("{CSV_HEADER}\n{line}");
        }
        let written = (&self.file).write(line.as_bytes())?;
        if written != line.len() {
            // Only a full disk or a file-size limit writes part of a line to a regular file.
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "only {written} of the row's {} bytes were written",
                    line.len()
                ),
            ));
        }
        Ok(())
    }

    /// Where the report is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// An exclusive `flock` on the report, released when dropped (Unix; elsewhere only a marker:
/// each row is one append there, and two runs sharing one new report may both write the
/// header).
#[cfg_attr(
    not(unix),
    expect(dead_code, reason = "the file is only used to unlock it, on Unix")
)]
struct Lock<'a>(&'a File);

impl<'a> Lock<'a> {
    #[cfg(unix)]
    fn exclusive(file: &'a File) -> io::Result<Lock<'a>> {
        use rustix::fs::{FlockOperation, flock};
        // Waits: another run holds it only for the one write of a row.
        flock(file, FlockOperation::LockExclusive)?;
        Ok(Lock(file))
    }

    /// Elsewhere: the one O_APPEND write of each row is all there is.
    #[cfg(not(unix))]
    fn exclusive(file: &'a File) -> io::Result<Lock<'a>> {
        Ok(Lock(file))
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        #[cfg(unix)]
        let _ = rustix::fs::flock(self.0, rustix::fs::FlockOperation::Unlock);
    }
}

/// A host error opening the report, with the exit code of its kind.
fn host(e: &io::Error, message: String) -> (u8, String) {
    (exit::code_for(vdisk_core::ErrorKind::of_io(e)), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::row::State;

    fn row(path: &str) -> Row {
        Row {
            path: path.into(),
            state: State::Compacted,
            start: "s".into(),
            end: "e".into(),
            seconds: 0.25,
            bytes_before: 10,
            bytes_after: 4,
            bytes_saved: 6,
            mode: "full",
            message: "a, \"quoted\" message".into(),
            format: "vhd".into(),
            dry_run: false,
            exit_code: 0,
            host: "h".into(),
        }
    }

    #[test]
    fn csv_gets_one_header_even_when_two_handles_append_to_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let a = ReportFile::open(&path, None).unwrap();
        let b = ReportFile::open(&path, None).unwrap();
        a.append(&row("one.vhd")).unwrap();
        b.append(&row("two.vhd")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(CSV_HEADER).count(), 1, "{text}");
        assert!(text.starts_with(CSV_HEADER));
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn a_csv_file_of_another_layout_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        std::fs::write(&path, "name,size\nx,1\n").unwrap();
        let (code, err) = ReportFile::open(&path, None).unwrap_err();
        assert!(err.contains("does not start with the header"), "{err}");
        assert_eq!(code, exit::USAGE);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "name,size\nx,1\n");
    }

    #[test]
    fn the_format_comes_from_the_extension_or_the_option_or_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.JSONL");
        let r = ReportFile::open(&p, None).unwrap();
        r.append(&row("a.vhd")).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&p).unwrap().trim()).unwrap();
        assert_eq!(v["bytes_saved"], 6);
        let (code, err) = ReportFile::open(&dir.path().join("r.txt"), None).unwrap_err();
        assert!(err.contains("--report-format"), "{err}");
        assert_eq!(code, exit::USAGE);
        let (code, _) = ReportFile::open(&dir.path().join("no/such/r.csv"), None).unwrap_err();
        assert_eq!(code, exit::NOT_FOUND, "a missing folder is a missing file");
        assert!(ReportFile::open(&dir.path().join("r.txt"), Some(ReportFormat::Csv)).is_ok());
    }
}
