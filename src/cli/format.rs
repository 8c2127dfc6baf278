//! Plain-text output for the cluster commands: aligned tables, times relative to `now`, and
//! durations in the Kubernetes (Go) notation. Pure; `now` is always a parameter.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Columns separated like kubectl's: three spaces, no trailing whitespace.
const GAP: &str = "   ";

/// A table with a header row, rendered with every column as wide as its widest cell.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row; control characters (a newline in a condition message, a terminal escape)
    /// become spaces so that every row stays one line and the terminal stays sane.
    pub fn push(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|cell| {
                    cell.chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .collect()
                })
                .collect(),
        );
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(i))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                line.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// When `at` is, seen from `now`: `3m ago`, `in 23h`, or `now` within a second.
pub fn relative(now: Timestamp, at: Timestamp) -> String {
    let delta = at.duration_since(now);
    if delta.abs() < SignedDuration::from_secs(1) {
        "now".into()
    } else if delta.is_negative() {
        format!("{} ago", span(delta))
    } else {
        format!("in {}", span(delta))
    }
}

/// When a rotation is due, seen from `now`: `in 29d 23h`, `overdue 5m`, or `due now`.
pub fn due(now: Timestamp, at: Timestamp) -> String {
    let delta = at.duration_since(now);
    if delta.abs() < SignedDuration::from_secs(1) {
        "due now".into()
    } else if delta.is_negative() {
        format!("overdue {}", span(delta))
    } else {
        format!("in {}", span(delta))
    }
}

/// The magnitude of `delta` in its largest unit and the next one when that is not zero,
/// truncated: `29d 23h`, `3m 12s`, `45s`, `2d`.
pub fn span(delta: SignedDuration) -> String {
    let seconds = delta.as_secs().unsigned_abs();
    let units = [
        (seconds / 86_400, "d"),
        (seconds / 3600 % 24, "h"),
        (seconds / 60 % 60, "m"),
        (seconds % 60, "s"),
    ];
    let Some(first) = units.iter().position(|(value, _)| *value > 0) else {
        return "0s".into();
    };
    let mut text = format!("{}{}", units[first].0, units[first].1);
    if let Some((value, unit)) = units.get(first + 1).filter(|(value, _)| *value > 0) {
        text.push_str(&format!(" {value}{unit}"));
    }
    text
}

/// A timestamp to the second, in UTC: `2025-01-31T12:00:00Z`.
pub fn absolute(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A duration as a Kubernetes manifest writes it: `720h`, `1h30m`, `90s` → `1m30s`, `1.5s`.
/// A spec's duration field in canonical Go form, or as written with a note when it is invalid.
pub fn shown_duration(duration: &jwks_operator::api::GoDuration) -> String {
    match duration.parse() {
        Ok(d) => go_duration(d),
        Err(_) => format!("{duration} (invalid)"),
    }
}

pub fn go_duration(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    let millis = duration.subsec_millis();
    let mut text = String::new();
    if seconds >= 3600 {
        text.push_str(&format!("{}h", seconds / 3600));
    }
    if seconds % 3600 >= 60 {
        text.push_str(&format!("{}m", seconds % 3600 / 60));
    }
    match (seconds % 60, millis) {
        (0, 0) if !text.is_empty() => {}
        (s, 0) => text.push_str(&format!("{s}s")),
        (s, ms) => {
            let fraction = format!("{ms:03}");
            text.push_str(&format!("{s}.{}s", fraction.trim_end_matches('0')));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn table_aligns_columns_to_the_widest_cell_without_trailing_spaces() {
        let mut table = Table::new(&["NAME", "KID", "READY"]);
        table.push(vec!["a".into(), "long-kid-value".into(), "True".into()]);
        table.push(vec!["longer-name".into(), "k".into(), "-".into()]);
        assert_eq!(
            table.render(),
            "NAME          KID              READY\n\
             a             long-kid-value   True\n\
             longer-name   k                -\n"
        );
    }

    #[test]
    fn table_trims_an_empty_last_cell_and_flattens_control_characters() {
        let mut table = Table::new(&["TYPE", "MESSAGE"]);
        table.push(vec!["Ready".into(), "".into()]);
        table.push(vec!["Degraded".into(), "two\nlines\x1b[31m".into()]);
        assert_eq!(
            table.render(),
            "TYPE       MESSAGE\nReady\nDegraded   two lines [31m\n"
        );
    }

    #[test]
    fn table_measures_width_in_characters_not_bytes() {
        let mut table = Table::new(&["A", "B"]);
        table.push(vec!["µµ".into(), "x".into()]);
        assert_eq!(table.render(), "A    B\nµµ   x\n");
    }

    #[test]
    fn span_shows_the_two_largest_units_truncated() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (60, "1m"),
            (192, "3m 12s"),
            (3600, "1h"),
            (23 * 3600 + 59 * 60 + 59, "23h 59m"),
            (2 * 86_400 + 300, "2d"),
            (30 * 86_400 - 1, "29d 23h"),
            (400 * 86_400, "400d"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(
                span(SignedDuration::from_secs(seconds)),
                expected,
                "{seconds}s"
            );
            assert_eq!(
                span(SignedDuration::from_secs(-seconds)),
                expected,
                "-{seconds}s"
            );
        }
    }

    #[test]
    fn relative_times_say_ago_in_or_now() {
        let now = at("2025-03-01T12:00:00Z");
        assert_eq!(relative(now, at("2025-03-01T11:57:00Z")), "3m ago");
        assert_eq!(relative(now, at("2025-03-02T11:00:00Z")), "in 23h");
        assert_eq!(relative(now, at("2025-03-01T12:00:00.5Z")), "now");
        assert_eq!(relative(now, at("2025-02-01T12:00:00Z")), "28d ago");
    }

    #[test]
    fn due_times_say_in_overdue_or_due_now() {
        let now = at("2025-03-01T12:00:00Z");
        assert_eq!(due(now, at("2025-03-31T11:59:59Z")), "in 29d 23h");
        assert_eq!(due(now, at("2025-03-01T11:55:00Z")), "overdue 5m");
        assert_eq!(due(now, at("2025-03-01T11:59:59.9Z")), "due now");
    }

    #[test]
    fn absolute_times_are_utc_to_the_second() {
        assert_eq!(
            absolute(at("2025-03-01T12:00:00.123456Z")),
            "2025-03-01T12:00:00Z"
        );
        assert_eq!(
            absolute(at("2025-03-01T14:00:00+02:00")),
            "2025-03-01T12:00:00Z"
        );
    }

    #[test]
    fn durations_read_like_a_manifest() {
        let cases = [
            (0, 0, "0s"),
            (90, 0, "1m30s"),
            (3600, 0, "1h"),
            (5400, 0, "1h30m"),
            (720 * 3600, 0, "720h"),
            (3601, 0, "1h1s"),
            (1, 500, "1.5s"),
            (0, 250, "0.25s"),
        ];
        for (seconds, millis, expected) in cases {
            let duration =
                std::time::Duration::from_secs(seconds) + std::time::Duration::from_millis(millis);
            assert_eq!(go_duration(duration), expected);
        }
    }
}
