//! Duration fields as the specs hold them: Go syntax (`90m`, `1h30m`, `720h`), kept as text.
//!
//! An object is read before anything checks it, and a field that fails to deserialize fails the
//! whole list or watch it arrives in — every other object's with it. So reading never fails on
//! a duration: the text is kept as written and [`GoDuration::parse`] (total, never panics) says
//! what is wrong, which the controller reports on that one object. The schema refuses the same
//! values at admission; this covers objects stored before the schema did, or by other means.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Go duration syntax without a sign: one or more number+unit pairs, e.g. `90m`, `1h30m`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// The longest duration any field may hold: Go's own limit (an i64 of nanoseconds, ~292 years),
/// which is also what the apiserver's CEL `duration()` accepts.
pub const MAX_GO_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// A duration field of a spec, as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct GoDuration(String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration in Go syntax (e.g. 90m, 1h30m, 720h)")]
    Syntax(String),
    #[error("{0:?} is longer than any duration can be (about 292 years)")]
    OutOfRange(String),
    #[error("{value:?} is longer than the {max} this field allows")]
    TooLong { value: String, max: String },
}

impl GoDuration {
    /// The duration `d` in the shortest Go syntax (`1h`, `90m`, `30s`, `1500ms`).
    pub fn from_duration(d: Duration) -> GoDuration {
        GoDuration(format_go(d))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The duration, or why the text is not one. Total: any string gives an answer.
    pub fn parse(&self) -> Result<Duration, DurationError> {
        parse_go(&self.0)
    }

    /// [`parse`](Self::parse), and at most `max`.
    pub fn parse_at_most(&self, max: Duration) -> Result<Duration, DurationError> {
        let d = self.parse()?;
        if d > max {
            return Err(DurationError::TooLong {
                value: shown(&self.0),
                max: format_go(max),
            });
        }
        Ok(d)
    }
}

impl From<&str> for GoDuration {
    fn from(text: &str) -> Self {
        GoDuration(text.to_owned())
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Units in the order they must be tried: a two-letter unit before its one-letter prefix.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

fn parse_go(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(shown(text));
    let out_of_range = || DurationError::OutOfRange(shown(text));
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(syntax());
    }
    let max = MAX_GO_DURATION.as_nanos();
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, after) = split_digits(rest);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => split_digits(after),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(syntax());
        }
        let (unit, scale) = UNITS
            .iter()
            .find(|(unit, _)| after.starts_with(unit))
            .copied()
            .ok_or_else(syntax)?;
        rest = &after[unit.len()..];
        let mut nanos = digits_value(whole, max)
            .and_then(|v| v.checked_mul(scale))
            .ok_or_else(out_of_range)?;
        // The fraction contributes less than one unit: only its leading digits can matter.
        let mut numerator: u128 = 0;
        let mut denominator: u128 = 1;
        // 18 digits: below a nanosecond even for hours, and numerator × scale fits in u128.
        for digit in fraction.bytes().take(18) {
            numerator = numerator * 10 + u128::from(digit - b'0');
            denominator *= 10;
        }
        nanos = nanos
            .checked_add(numerator * scale / denominator)
            .ok_or_else(out_of_range)?;
        total = total.checked_add(nanos).ok_or_else(out_of_range)?;
        if total > max {
            return Err(out_of_range());
        }
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| out_of_range())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

fn split_digits(text: &str) -> (&str, &str) {
    let n = text.bytes().take_while(u8::is_ascii_digit).count();
    text.split_at(n)
}

/// The value of a digit string, or `None` when it exceeds `max`.
fn digits_value(digits: &str, max: u128) -> Option<u128> {
    digits.bytes().try_fold(0u128, |value, digit| {
        let value = value
            .checked_mul(10)?
            .checked_add(u128::from(digit - b'0'))?;
        (value <= max).then_some(value)
    })
}

/// The value as it may appear in a message: it is the user's own text, but bounded.
fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    if text.chars().count() <= MAX_CHARS {
        text.to_owned()
    } else {
        let head: String = text.chars().take(MAX_CHARS).collect();
        format!("{head}…")
    }
}

fn format_go(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs, d.subsec_nanos()) {
        (0, 0) => "0s".into(),
        (s, 0) if s % 3600 == 0 => format!("{}h", s / 3600),
        (s, 0) if s % 60 == 0 => format!("{}m", s / 60),
        (s, 0) => format!("{s}s"),
        (_, n) if n % 1_000_000 == 0 => format!("{}ms", d.as_millis()),
        _ => format!("{}ns", d.as_nanos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Duration, DurationError> {
        GoDuration::from(text).parse()
    }

    #[test]
    fn go_syntax_parses_as_go_does() {
        let cases = [
            ("0", 0),
            ("90m", 90 * 60_000_000_000),
            ("1h30m", 5_400_000_000_000),
            ("720h", 720 * 3_600_000_000_000),
            ("1.5h", 5_400_000_000_000),
            ("2s500ms", 2_500_000_000),
            ("10us", 10_000),
            ("10µs", 10_000),
            ("7ns", 7),
            ("0.000000001s", 1),
            ("1.0000000009s", 1_000_000_000),
            ("2562047h47m16.854775807s", i64::MAX as u128),
        ];
        for (text, nanos) in cases {
            assert_eq!(parse(text).map(|d| d.as_nanos()), Ok(nanos), "{text}");
        }
    }

    #[test]
    fn malformed_text_is_a_syntax_error_naming_the_value() {
        for text in [
            "", "h", "1", "1d", "-1h", "1h-", "1.h2", ".h", "1 h", "1hh", "P1D",
        ] {
            let error = parse(text).unwrap_err();
            assert!(matches!(error, DurationError::Syntax(_)), "{text}: {error}");
        }
        assert_eq!(
            parse("1x").unwrap_err().to_string(),
            r#""1x" is not a duration in Go syntax (e.g. 90m, 1h30m, 720h)"#
        );
    }

    #[test]
    fn huge_values_are_out_of_range_not_a_panic() {
        for text in [
            "99999999999999999999h",
            "2562048h",
            "2562047h47m16.854775808s",
            "9999999999999999999999999999999999999999999ns",
            "1000000h1000000h1000000h",
        ] {
            assert!(
                matches!(parse(text), Err(DurationError::OutOfRange(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn a_field_bound_names_the_value_and_the_bound() {
        let error = GoDuration::from("9000h")
            .parse_at_most(Duration::from_secs(8760 * 3600))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#""9000h" is longer than the 8760h this field allows"#
        );
    }

    #[test]
    fn a_long_value_is_shortened_in_messages() {
        let text = "1".repeat(500) + "h";
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.len() < 100, "{message}");
    }

    #[test]
    fn formatting_round_trips() {
        for secs in [0, 1, 59, 60, 90 * 60, 3600, 86_400, 3_600 * 720] {
            let d = Duration::from_secs(secs);
            assert_eq!(GoDuration::from_duration(d).parse(), Ok(d));
        }
        let d = Duration::from_millis(1500);
        assert_eq!(GoDuration::from_duration(d).as_str(), "1500ms");
        assert_eq!(GoDuration::from_duration(d).parse(), Ok(d));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn any_text_parses_or_errs_without_panicking(text in ".{0,64}") {
            let _ = parse(&text);
        }

        #[test]
        fn any_text_of_duration_characters_parses_or_errs(text in "[0-9.hmsunµ]{0,40}") {
            if let Ok(d) = parse(&text) {
                prop_assert!(d <= MAX_GO_DURATION);
            }
        }

        #[test]
        fn any_number_with_a_unit_parses_or_is_out_of_range(
            whole in "[0-9]{1,40}",
            fraction in proptest::option::of("[0-9]{1,40}"),
            unit in prop::sample::select(vec!["ns", "us", "µs", "ms", "s", "m", "h"]),
        ) {
            let text = match fraction {
                Some(f) => format!("{whole}.{f}{unit}"),
                None => format!("{whole}{unit}"),
            };
            match parse(&text) {
                Ok(d) => prop_assert!(d <= MAX_GO_DURATION),
                Err(error) => prop_assert!(matches!(error, DurationError::OutOfRange(_)), "{}: {}", text, error),
            }
        }

        #[test]
        fn whole_seconds_parse_exactly(secs in 0u64..(i64::MAX as u64 / 1_000_000_000)) {
            prop_assert_eq!(parse(&format!("{secs}s")), Ok(Duration::from_secs(secs)));
        }
    }
}
