//! Sizes in bytes as the config file writes them: `65536`, `"64KiB"`, `"1MiB"`, `"1MB"`.
//!
//! A whole number of bytes, or a whole number and one unit: `B`, `KiB`, `MiB`, `GiB` (powers of
//! 1024) or `KB`, `MB`, `GB` (powers of 1000), in that spelling. No fractions, no sign, no space:
//! the same small grammar as durations, so a typo is an error rather than a guess.

use super::scalar::RawScalar;

/// The units with their size in bytes.
const UNITS: [(&str, u64); 7] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
];

/// Why a size was refused. The messages complete "`key`: ..." in the config error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SizeError {
    /// `""`, `"KiB"`, `"1.5MiB"`, `"1 MiB"`, `"-1"`.
    #[error(
        "{0:?} is not a size; write a whole number of bytes or e.g. \"64KiB\", \"1MiB\" (units: B, KiB, MiB, GiB, KB, MB, GB)"
    )]
    Malformed(String),
    /// `"5TiB"`, `"5kb"`.
    #[error("{text:?}: unknown unit {unit:?} (units: B, KiB, MiB, GiB, KB, MB, GB)")]
    UnknownUnit {
        /// The whole value.
        text: String,
        /// What followed the number.
        unit: String,
    },
    /// A list, a mapping, a boolean, a float.
    #[error("expected a size such as \"1MiB\" or a whole number of bytes, found {0}")]
    WrongType(&'static str),
    /// More than fits in 64 bits.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Parses a size (see the module documentation for the grammar).
pub(crate) fn parse(text: &str) -> Result<u64, SizeError> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(SizeError::Malformed(text.to_owned()));
    }
    let multiplier = if unit.is_empty() {
        1
    } else if let Some((_, bytes)) = UNITS.iter().find(|(name, _)| *name == unit) {
        *bytes
    } else if unit.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(SizeError::UnknownUnit {
            text: text.to_owned(),
            unit: unit.to_owned(),
        });
    } else {
        return Err(SizeError::Malformed(text.to_owned()));
    };
    let too_large = || SizeError::TooLarge(text.to_owned());
    number
        .parse::<u64>()
        .map_err(|_| too_large())?
        .checked_mul(multiplier)
        .ok_or_else(too_large)
}

/// Writes `bytes` the way a person reads it: `1 MiB` when it is a whole number of a binary
/// unit, else `1500000 bytes`.
pub(crate) fn display(bytes: u64) -> String {
    for (name, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {name}", bytes / size);
        }
    }
    format!("{bytes} bytes")
}

/// A size as it stands in the YAML, before [`parse`]: YAML gives `65536` as a number and
/// `64KiB` as a string, and both must reach validation so that it can name the key.
pub(crate) type RawSize = RawScalar;

impl RawScalar {
    /// The size in bytes, or why it is refused.
    pub(crate) fn to_bytes(&self) -> Result<u64, SizeError> {
        match self {
            Self::Text(text) => parse(text),
            Self::Integer(n) if *n < 0 => Err(SizeError::Malformed(n.to_string())),
            Self::Integer(n) => u64::try_from(*n).map_err(|_| SizeError::TooLarge(n.to_string())),
            Self::Float(_) => Err(SizeError::WrongType("a fraction")),
            Self::Other(kind) => Err(SizeError::WrongType(kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_sizes() {
        for (text, bytes) in [
            ("0", 0),
            ("65536", 65_536),
            ("1B", 1),
            ("64KiB", 65_536),
            ("1MiB", 1 << 20),
            ("2GiB", 2 << 30),
            ("1KB", 1_000),
            ("3MB", 3_000_000),
            ("1GB", 1_000_000_000),
        ] {
            assert_eq!(parse(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn bad_sizes() {
        let unknown = |text: &str, unit: &str| SizeError::UnknownUnit {
            text: text.into(),
            unit: unit.into(),
        };
        for (text, want) in [
            ("", SizeError::Malformed(String::new())),
            ("MiB", SizeError::Malformed("MiB".into())),
            ("-1", SizeError::Malformed("-1".into())),
            ("1.5MiB", SizeError::Malformed("1.5MiB".into())),
            ("1 MiB", SizeError::Malformed("1 MiB".into())),
            ("1mib", unknown("1mib", "mib")),
            ("1TiB", unknown("1TiB", "TiB")),
            ("1MiB1", unknown("1MiB1", "MiB1")),
            (
                "18446744073709551616",
                SizeError::TooLarge("18446744073709551616".into()),
            ),
            (
                "17179869184GiB",
                SizeError::TooLarge("17179869184GiB".into()),
            ),
        ] {
            assert_eq!(parse(text), Err(want), "{text:?}");
        }
        assert_eq!(
            RawSize::Integer(-5).to_bytes(),
            Err(SizeError::Malformed("-5".into()))
        );
        assert_eq!(
            RawSize::Other("a list").to_bytes(),
            Err(SizeError::WrongType("a list"))
        );
    }

    #[test]
    fn shown_in_the_largest_whole_unit() {
        assert_eq!(display(1 << 20), "1 MiB");
        assert_eq!(display(1536), "1536 bytes");
        assert_eq!(display(65_536), "64 KiB");
        assert_eq!(display(3 << 30), "3 GiB");
        assert_eq!(display(1_000_000), "1000000 bytes");
    }
}
