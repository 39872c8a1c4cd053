//! A scalar of the YAML as serde reads it, before a key's own grammar (a duration, a size)
//! judges it: YAML gives `30s` as a string but `0` or `30` as a number, and every form must
//! reach validation so that a refusal can name the key and the value's place.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// What the YAML held where a duration or a size was expected.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawScalar {
    /// A string scalar, e.g. `30s` or `"1MiB"`.
    Text(String),
    /// An integer scalar.
    Integer(i128),
    /// A float scalar (`1.5`), kept to say why it is refused.
    Float(f64),
    /// Something else (a list, a mapping, a boolean), named for the message. Read here
    /// rather than refused by the visitor because serde-saphyr places a visitor's type error
    /// at the key, while validation can place it at the value.
    Other(&'static str),
}

impl<'de> Deserialize<'de> for RawScalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;

        impl<'de> Visitor<'de> for RawVisitor {
            type Value = RawScalar;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"30s\" or a size such as \"1MiB\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawScalar, E> {
                Ok(RawScalar::Text(v.to_owned()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawScalar, E> {
                Ok(RawScalar::Integer(v.into()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawScalar, E> {
                Ok(RawScalar::Integer(v.into()))
            }

            fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawScalar, E> {
                // Saturating is fine: anything this large is refused as "needs a unit".
                Ok(RawScalar::Integer(i128::try_from(v).unwrap_or(i128::MAX)))
            }

            fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawScalar, E> {
                Ok(RawScalar::Integer(v))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawScalar, E> {
                Ok(RawScalar::Float(v))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawScalar, E> {
                Ok(RawScalar::Other("a boolean"))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawScalar, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(RawScalar::Other("a list"))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawScalar, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(RawScalar::Other("a mapping"))
            }
        }

        deserializer.deserialize_any(RawVisitor)
    }
}
