//! Durations as the config file writes them: `"500ms"`, `"30s"`, `"5m"`, `"1h30m"`.
//!
//! The grammar is deliberately small: one or more `<digits><unit>` parts, units `h`, `m`, `s`,
//! `ms`, each at most once and from the largest to the smallest, no spaces, no fractions, no
//! sign. A bare `0` (number or string) is the one value that needs no unit, because "zero" is
//! the same in every unit and is how the file says "disabled".

use std::time::Duration;

use super::scalar::RawScalar;

/// The longest duration the file may hold. Longer is certainly a typo, and deadlines are
/// computed as `now + duration` on clocks (`Instant`, `SystemTime`) whose addition panics on
/// overflow; keeping every configured duration far below that makes the sum safe everywhere.
pub(crate) const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The units, largest first, with their length in milliseconds.
const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// Why a duration string was refused. The messages complete "`key`: ..." in the config error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    /// `""`.
    #[error("empty duration; write e.g. \"30s\" (units: ms, s, m, h)")]
    Empty,
    /// `"-5s"`.
    #[error("negative duration {0:?}")]
    Negative(String),
    /// `"30"` or `30`.
    #[error("{0:?} needs a unit, e.g. \"{0}s\" (units: ms, s, m, h)")]
    MissingUnit(String),
    /// `"1.5s"`.
    #[error("{0:?}: fractions are not supported; use a smaller unit, e.g. \"1500ms\" for 1.5s")]
    Fraction(String),
    /// `"5d"`, `"30 s"`, `"s"`.
    #[error("{text:?}: unknown unit {unit:?} (units: ms, s, m, h)")]
    UnknownUnit {
        /// The whole value.
        text: String,
        /// What stood where a unit (or a number) was expected.
        unit: String,
    },
    /// `"s"`, `"ms5"`.
    #[error("{0:?}: expected a number before each unit, e.g. \"30s\"")]
    MissingNumber(String),
    /// `"30s1m"`, `"1s1s"`.
    #[error("{0:?}: write each unit once, from the largest to the smallest (e.g. \"1h30m\")")]
    UnitOrder(String),
    /// `.inf`, `.nan`.
    #[error("{0:?} is not a duration; write e.g. \"30s\" (units: ms, s, m, h)")]
    NotADuration(String),
    /// A list, a mapping, a boolean.
    #[error("expected a duration such as \"30s\", found {0}")]
    WrongType(&'static str),
    /// More than [`MAX`].
    #[error("{0:?} is too long (at most 100 years)")]
    TooLong(String),
}

/// Parses a duration string (see the module documentation for the grammar).
pub(crate) fn parse(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.starts_with('-') {
        return Err(DurationError::Negative(text.to_owned()));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: zero is allowed without a unit, anything else is ambiguous (seconds?
        // milliseconds?) and refused rather than guessed.
        return if text.bytes().all(|b| b == b'0') {
            Ok(Duration::ZERO)
        } else {
            Err(DurationError::MissingUnit(text.to_owned()))
        };
    }

    let too_long = || DurationError::TooLong(text.to_owned());
    let mut total_ms: u64 = 0;
    // Index into UNITS of the last unit seen; the next must come strictly after it.
    let mut last_unit: Option<usize> = None;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (digits, after) = rest.split_at(digits_len);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after_unit) = after.split_at(unit_len);

        if digits.is_empty() || unit.is_empty() {
            if after.starts_with('.') && !digits.is_empty() {
                return Err(DurationError::Fraction(text.to_owned()));
            }
            if unit.is_empty() && after.is_empty() {
                // A trailing number after a complete part: "1h30".
                return Err(DurationError::MissingUnit(text.to_owned()));
            }
            if !unit.is_empty() {
                return Err(DurationError::MissingNumber(text.to_owned()));
            }
            // Something that is neither digit nor letter: a space, a sign, a dot.
            return Err(DurationError::UnknownUnit {
                text: text.to_owned(),
                unit: after.chars().take(1).collect(),
            });
        }

        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit {
                text: text.to_owned(),
                unit: unit.to_owned(),
            });
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err(DurationError::UnitOrder(text.to_owned()));
        }
        last_unit = Some(index);

        // A digit string too long for u64 is certainly over MAX.
        let number: u64 = digits.parse().map_err(|_| too_long())?;
        let part = number.checked_mul(UNITS[index].1).ok_or_else(too_long)?;
        total_ms = total_ms.checked_add(part).ok_or_else(too_long)?;
        rest = after_unit;
    }

    let duration = Duration::from_millis(total_ms);
    if duration > MAX {
        return Err(too_long());
    }
    Ok(duration)
}

/// A duration as it stands in the YAML, before [`parse`]: YAML gives `30s` as a string but `0`
/// or `30` as a number, and both must reach validation so that it can name the key.
pub(crate) type RawDuration = RawScalar;

impl RawScalar {
    /// The duration, or why it is refused.
    pub(crate) fn to_duration(&self) -> Result<Duration, DurationError> {
        match self {
            Self::Text(text) => parse(text),
            Self::Integer(0) => Ok(Duration::ZERO),
            Self::Integer(n) if *n < 0 => Err(DurationError::Negative(n.to_string())),
            Self::Integer(n) => Err(DurationError::MissingUnit(n.to_string())),
            Self::Float(f) if !f.is_finite() => Err(DurationError::NotADuration(f.to_string())),
            Self::Float(f) if *f < 0.0 => Err(DurationError::Negative(f.to_string())),
            // YAML reads an integer too large for i64/u64 as a float.
            Self::Float(f) if f.fract() == 0.0 => Err(DurationError::MissingUnit(f.to_string())),
            Self::Float(f) => Err(DurationError::Fraction(f.to_string())),
            Self::Other(kind) => Err(DurationError::WrongType(kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1;
    const S: u64 = 1_000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;

    #[test]
    fn good_durations() {
        let table: &[(&str, u64)] = &[
            ("0", 0),
            ("000", 0),
            ("0s", 0),
            ("0ms", 0),
            ("500ms", 500 * MS),
            ("1s", S),
            ("30s", 30 * S),
            ("5m", 5 * M),
            ("1h", H),
            ("1h30m", H + 30 * M),
            ("2h3m4s5ms", 2 * H + 3 * M + 4 * S + 5 * MS),
            ("90s", 90 * S),
            ("1m500ms", M + 500 * MS),
            ("007s", 7 * S),
            ("876000h", 876_000 * H),
        ];
        for (text, ms) in table {
            assert_eq!(parse(text), Ok(Duration::from_millis(*ms)), "{text}");
        }
    }

    #[test]
    fn bad_durations() {
        use DurationError::*;
        let unknown = |text: &str, unit: &str| UnknownUnit {
            text: text.into(),
            unit: unit.into(),
        };
        let table: Vec<(&str, DurationError)> = vec![
            ("", Empty),
            ("30", MissingUnit("30".into())),
            ("1h30", MissingUnit("1h30".into())),
            ("-5s", Negative("-5s".into())),
            ("-0", Negative("-0".into())),
            ("1.5s", Fraction("1.5s".into())),
            ("5d", unknown("5d", "d")),
            ("5S", unknown("5S", "S")),
            ("5us", unknown("5us", "us")),
            ("5sec", unknown("5sec", "sec")),
            ("30 s", unknown("30 s", " ")),
            (" 30s", unknown(" 30s", " ")),
            ("30s ", unknown("30s ", " ")),
            ("+5s", unknown("+5s", "+")),
            ("s", MissingNumber("s".into())),
            ("ms5", MissingNumber("ms5".into())),
            ("1hm", unknown("1hm", "hm")),
            ("1h.5m", unknown("1h.5m", ".")),
            ("1h h", unknown("1h h", " ")),
            ("30s1m", UnitOrder("30s1m".into())),
            ("1s1s", UnitOrder("1s1s".into())),
            ("1ms1s", UnitOrder("1ms1s".into())),
            ("876001h", TooLong("876001h".into())),
            (
                "18446744073709551616ms",
                TooLong("18446744073709551616ms".into()),
            ),
            (
                "18446744073709551615h",
                TooLong("18446744073709551615h".into()),
            ),
            (
                "18446744073709551615ms1ms",
                UnitOrder("18446744073709551615ms1ms".into()),
            ),
            (
                "5124095576030431h1ms",
                TooLong("5124095576030431h1ms".into()),
            ),
        ];
        for (text, want) in table {
            assert_eq!(parse(text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn raw_numbers() {
        assert_eq!(RawDuration::Integer(0).to_duration(), Ok(Duration::ZERO));
        assert_eq!(
            RawDuration::Integer(30).to_duration(),
            Err(DurationError::MissingUnit("30".into()))
        );
        assert_eq!(
            RawDuration::Integer(-1).to_duration(),
            Err(DurationError::Negative("-1".into()))
        );
        assert_eq!(
            RawDuration::Float(1.5).to_duration(),
            Err(DurationError::Fraction("1.5".into()))
        );
        assert_eq!(
            RawDuration::Float(1e20).to_duration(),
            Err(DurationError::MissingUnit("100000000000000000000".into()))
        );
        assert_eq!(
            RawDuration::Float(f64::NAN).to_duration(),
            Err(DurationError::NotADuration("NaN".into()))
        );
    }

    #[test]
    fn messages_suggest_the_fix() {
        assert_eq!(
            DurationError::MissingUnit("30".into()).to_string(),
            "\"30\" needs a unit, e.g. \"30s\" (units: ms, s, m, h)"
        );
    }
}
