//! `--min-savings`: how much a dry run must estimate before a file is compacted.

use vdisk_core::CompactReport;

use crate::cli::parse_size;
use crate::host_space::HostSpace;
use crate::report::human_size;

/// The least a compaction must save to be worth doing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinSavings {
    /// Host bytes.
    Bytes(u64),
    /// Percent of the file's size before (0 to 100).
    Percent(f64),
}

impl MinSavings {
    /// Parses `500M`, `1G`, `4096` (sizes as `create --size`) or `10%`, `2.5%`.
    pub fn parse(text: &str) -> Result<MinSavings, String> {
        let t = text.trim();
        if let Some(number) = t.strip_suffix('%') {
            let p: f64 = number.trim().parse().map_err(|_| {
                format!("{text:?} is not a percentage: expected a number from 0 to 100 before %")
            })?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("{text:?}: a percentage must be from 0 to 100"));
            }
            return Ok(MinSavings::Percent(p));
        }
        parse_size(t).map(MinSavings::Bytes)
    }

    /// True if saving `saved` of a file of `before` bytes reaches the threshold.
    pub fn reached(self, saved: u64, before: u64) -> bool {
        match self {
            MinSavings::Bytes(b) => saved >= b,
            // Integer-exact for whole percentages; f64 is exact for files below 2^53 bytes.
            MinSavings::Percent(p) => saved as f64 * 100.0 >= p * before as f64,
        }
    }

    /// The threshold in words, for messages: "500.0 MiB" or "10%".
    pub fn describe(self) -> String {
        match self {
            MinSavings::Bytes(b) => human_size(b),
            MinSavings::Percent(p) => format!("{p}%"),
        }
    }
}

/// Host bytes a compaction saves (or would): the bytes the file got shorter by, or, for
/// retrim, which keeps the length, what the host gave back as `du` counts it (`space`,
/// measured around a compaction that ran) or, for an estimate, the bytes it would punch out.
pub fn saved(r: &CompactReport, space: Option<HostSpace>) -> u64 {
    let shorter = r.bytes_before.saturating_sub(r.bytes_after);
    match space {
        Some(s) if !r.dry_run && r.mode == vdisk_core::Mode::Retrim => s.given_back(),
        _ => shorter.max(r.bytes_punched),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_percentages_parse_and_garbage_is_refused() {
        assert_eq!(MinSavings::parse("500M"), Ok(MinSavings::Bytes(500 << 20)));
        assert_eq!(MinSavings::parse("4096"), Ok(MinSavings::Bytes(4096)));
        assert_eq!(MinSavings::parse("10%"), Ok(MinSavings::Percent(10.0)));
        assert_eq!(MinSavings::parse("2.5 %"), Ok(MinSavings::Percent(2.5)));
        for bad in ["", "%", "101%", "-1%", "ten%", "1.5G", "5MB"] {
            assert!(MinSavings::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_threshold_is_reached_at_exactly_its_value() {
        assert!(MinSavings::Bytes(100).reached(100, 1000));
        assert!(!MinSavings::Bytes(100).reached(99, 1000));
        assert!(MinSavings::Percent(10.0).reached(100, 1000));
        assert!(!MinSavings::Percent(10.0).reached(99, 1000));
        assert!(MinSavings::Percent(0.0).reached(0, 1000));
    }
}
