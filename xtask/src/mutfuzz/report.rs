//! What a run found: counts per format and command, failures by class, and the first
//! finding of each (format, command, class), minimised.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::PathBuf;

use super::Cmd;
use super::layout::Format;

/// A broken rule.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Seed image name.
    pub seed: String,
    /// Its format.
    pub format: Format,
    /// Case number (replay with the same run seed).
    pub case: u64,
    /// The command.
    pub cmd: String,
    /// Failure class.
    pub class: &'static str,
    /// What happened.
    pub detail: String,
    /// The mutation (minimised).
    pub mutation: String,
    /// Saved input, if `--keep`.
    pub kept: Option<PathBuf>,
}

/// Counts of a run.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Cases per format.
    pub cases: BTreeMap<Format, u64>,
    /// Commands run per (format, command).
    pub tried: BTreeMap<(Format, String), u64>,
    /// Failures per (format, command, class).
    pub failures: BTreeMap<(Format, String, &'static str), u64>,
    /// Successful compactions whose input the oracle refused (not compared).
    pub unopenable: BTreeMap<(Format, String), u64>,
    /// Successful compactions compared by an oracle.
    pub compared: BTreeMap<(Format, String), u64>,
    /// The first findings of each (format, command, class).
    pub findings: Vec<Finding>,
}

impl Report {
    /// Total failures.
    pub fn failure_count(&self) -> u64 {
        self.failures.values().sum()
    }

    pub(super) fn merge(&mut self, o: Report) {
        for (k, v) in o.cases {
            *self.cases.entry(k).or_default() += v;
        }
        for (map, other) in [
            (&mut self.tried, o.tried),
            (&mut self.unopenable, o.unopenable),
            (&mut self.compared, o.compared),
        ] {
            for (k, v) in other {
                *map.entry(k).or_default() += v;
            }
        }
        for (k, v) in o.failures {
            *self.failures.entry(k).or_default() += v;
        }
        for x in o.findings {
            let seen = self
                .findings
                .iter()
                .any(|y| (y.format, &y.cmd, y.class) == (x.format, &x.cmd, x.class));
            if !seen {
                self.findings.push(x);
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (format, cases) in &self.cases {
            writeln!(f, "{}: {cases} mutations", format.name())?;
            writeln!(
                f,
                "  {:<20} {:>7} {:>9} {:>11}  failures by class",
                "command", "runs", "compared", "unopenable"
            )?;
            for cmd in Cmd::all() {
                let key = (*format, cmd.label());
                let runs = self.tried.get(&key).copied().unwrap_or(0);
                let cmp = self.compared.get(&key).copied().unwrap_or(0);
                let un = self.unopenable.get(&key).copied().unwrap_or(0);
                let mut classes = String::new();
                for ((fm, c, class), n) in &self.failures {
                    if fm == format && *c == key.1 {
                        let _ = write!(classes, "{class}={n} ");
                    }
                }
                writeln!(
                    f,
                    "  {:<20} {runs:>7} {cmp:>9} {un:>11}  {}",
                    key.1,
                    if classes.is_empty() {
                        "-"
                    } else {
                        classes.trim_end()
                    }
                )?;
            }
        }
        if !self.findings.is_empty() {
            writeln!(f, "findings (first of each format/command/class):")?;
        }
        for x in &self.findings {
            writeln!(
                f,
                "  [{}] {} case {} on {}: {} — {}\n      mutation: {}{}",
                x.class,
                x.format.name(),
                x.case,
                x.seed,
                x.cmd,
                x.detail,
                x.mutation,
                x.kept
                    .as_ref()
                    .map(|p| format!("\n      kept: {}", p.display()))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}
