//! Vetting a payload before a delivery embeds it as raw JSON.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// The only whitespace JSON allows around a value (RFC 8259 §2); `str::trim`
/// would also strip Unicode spaces that are not JSON.
pub(super) const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// Deepest nesting of a payload embedded as JSON. serde_json, so every Rust
/// client, refuses text nested deeper than 127 arrays/objects, and the
/// delivery frame wraps the snapshot in one more object.
const MAX_SNAPSHOT_DEPTH: usize = 126;

/// Whether `text` is one JSON value that strict readers accept.
///
/// `IgnoredAny` is not enough to vet a payload embedded raw: it skips string
/// escapes and numbers unchecked, so it passes `"\ud800"` (a lone surrogate)
/// and `1e400` (out of range), which `serde_json::Value`, Go and other strict
/// clients refuse, losing the whole delivery frame. [`StrictJson`] decodes
/// every string and number (in serde_json's scratch buffer, nothing kept) and
/// bounds the nesting; a refused payload then travels as a JSON string like
/// any other non-JSON text.
pub(super) fn is_strict_json(text: &str) -> bool {
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = StrictJson {
        depth_left: MAX_SNAPSHOT_DEPTH,
    };
    seed.deserialize(&mut de).is_ok() && de.end().is_ok()
}

/// Walks one JSON value, refusing what strict readers refuse.
#[derive(Clone, Copy)]
struct StrictJson {
    /// Arrays/objects that may still open inside this value.
    depth_left: usize,
}

impl StrictJson {
    fn inner<E: de::Error>(self) -> Result<Self, E> {
        match self.depth_left.checked_sub(1) {
            Some(depth_left) => Ok(StrictJson { depth_left }),
            None => Err(E::custom("nested too deeply")),
        }
    }
}

impl<'de> DeserializeSeed<'de> for StrictJson {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictJson {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        // Keys are strings, decoded (so checked) by the same visitor.
        while map.next_entry_seed(inner, inner)?.is_some() {}
        Ok(())
    }
}
