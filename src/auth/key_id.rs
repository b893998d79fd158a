//! [`KeyId`]: which configured key verified a session's token.

use jsonwebtoken::Validation;

use super::alg_name;

/// Which configured key verified a token: a hash of the key material and
/// the rules checked with it (algorithms, issuer, audience), never the key
/// itself. A session keeps it, so a reload that drops or changes that key
/// makes the session re-authorize (docs/PROTOCOL.md, "Token lifetime").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(std::num::NonZeroU64);

impl KeyId {
    /// Fingerprints `material` with the rules of `validation`.
    pub(super) fn of(material: &[u8], validation: &Validation) -> Self {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        material.hash(&mut hasher);
        for alg in &validation.algorithms {
            alg_name(*alg).hash(&mut hasher);
        }
        let mut issuers: Vec<&String> = validation.iss.iter().flatten().collect();
        issuers.sort();
        issuers.hash(&mut hasher);
        let mut audiences: Vec<&String> = validation.aud.iter().flatten().collect();
        audiences.sort();
        audiences.hash(&mut hasher);
        // Non-zero, so that `Option<KeyId>` costs a session no more than
        // the id itself.
        Self(std::num::NonZeroU64::new(hasher.finish()).unwrap_or(std::num::NonZeroU64::MIN))
    }
}
