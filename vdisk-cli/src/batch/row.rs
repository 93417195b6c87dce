//! One file's result in a batch: its state (a stable English word, never localised: scripts
//! and spreadsheets match on it) and the numbers, as a report row and a line on stdout.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Space was reclaimed (or, with --dry-run, would be).
    Compacted,
    /// Nothing to reclaim: the file is as small as this mode can make it.
    NothingToReclaim,
    /// The dry-run estimate was below --min-savings: the file was not changed.
    BelowThreshold,
    /// Another program holds the file (--skip-in-use): the file was not changed.
    InUse,
    /// An error; the message says what, and whether the file changed.
    Failed,
    /// Ctrl-C / SIGTERM: not started, or stopped at a safe point (the image is valid).
    Cancelled,
}

impl State {
    /// Every state, in the order of the summary line.
    pub const ALL: [State; 6] = [
        State::Compacted,
        State::NothingToReclaim,
        State::BelowThreshold,
        State::InUse,
        State::Failed,
        State::Cancelled,
    ];

    /// The word in reports, lines and the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Compacted => "compacted",
            State::NothingToReclaim => "nothing-to-reclaim",
            State::BelowThreshold => "below-threshold",
            State::InUse => "in-use",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
}

/// One row of the report (CSV columns in this order; JSON Lines objects with these keys).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The path as walked (the folder named on the command line, then the path below it).
    pub path: String,
    /// What happened.
    pub state: State,
    /// When work on the file started (RFC 3339, UTC, milliseconds).
    pub start: String,
    /// When it ended.
    pub end: String,
    /// Wall time spent on the file, in seconds (millisecond precision).
    pub seconds: f64,
    /// Host file length before.
    pub bytes_before: u64,
    /// Host file length after (predicted with --dry-run).
    pub bytes_after: u64,
    /// Host bytes given back: the bytes the file got shorter by, or punched out (retrim).
    pub bytes_saved: u64,
    /// The mode requested.
    pub mode: &'static str,
    /// In words: what was reclaimed, or the error and what it means for the file.
    pub message: String,
    /// The image format ("vhd", "vhdx"), empty if it was not opened.
    pub format: String,
    /// True if nothing was written by request (--dry-run).
    pub dry_run: bool,
    /// The exit code this file alone would give (0 unless failed or cancelled; 3 for in-use).
    pub exit_code: u8,
    /// The host the run was on, so that reports of several hosts can share one file.
    pub host: String,
}

/// The CSV header: the field names of [`Row`], in order.
pub const CSV_HEADER: &str = "path,state,start,end,seconds,bytes_before,bytes_after,bytes_saved,mode,message,format,dry_run,exit_code,host";

impl Row {
    /// The row as one CSV record (RFC 4180 quoting), with its line end (a bare newline).
    pub fn csv_line(&self) -> String {
        let fields = [
            self.path.clone(),
            self.state.as_str().to_string(),
            self.start.clone(),
            self.end.clone(),
            format!("{:.3}", self.seconds),
            self.bytes_before.to_string(),
            self.bytes_after.to_string(),
            self.bytes_saved.to_string(),
            self.mode.to_string(),
            self.message.clone(),
            self.format.clone(),
            self.dry_run.to_string(),
            self.exit_code.to_string(),
            self.host.clone(),
        ];
        let mut line = fields.map(|f| csv_field(&f)).join(",");
        line.push('\n');
        line
    }

    /// The row as one JSON object, with its line end.
    pub fn json_line(&self) -> String {
        // A struct of strings and numbers always encodes.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (quotes doubled).
fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

/// `t` as RFC 3339 in UTC with milliseconds: "2026-12-04T15:20:34.123Z".
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// This machine's name, for the report's host column (empty if the system does not say).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.789
        let t = UNIX_EPOCH + Duration::from_millis(951_827_696_789);
        assert_eq!(rfc3339(t), "2000-02-29T12:34:56.789Z");
        // 2026-12-31T23:59:59Z
        let t = UNIX_EPOCH + Duration::from_secs(1_798_761_599);
        assert_eq!(rfc3339(t), "2026-12-31T23:59:59.000Z");
    }

    #[test]
    fn csv_fields_with_commas_quotes_or_newlines_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn the_header_names_every_field_of_a_json_row_in_csv_order() {
        let row = Row {
            path: "a.vhd".into(),
            state: State::BelowThreshold,
            start: String::new(),
            end: String::new(),
            seconds: 1.5,
            bytes_before: 1,
            bytes_after: 1,
            bytes_saved: 0,
            mode: "full",
            message: String::new(),
            format: "vhd".into(),
            dry_run: false,
            exit_code: 0,
            host: "h".into(),
        };
        let json: serde_json::Value = serde_json::from_str(&row.json_line()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut header: Vec<&str> = CSV_HEADER.split(',').collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        header.sort_unstable();
        assert_eq!(sorted, header);
        assert_eq!(json["state"], "below-threshold");
        assert_eq!(
            row.csv_line().split(',').count(),
            CSV_HEADER.split(',').count()
        );
    }
}
