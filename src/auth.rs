//! Token verification: `verify(token, now) -> Identity` (docs/CONFIG.md
//! `[auth]`, docs/PROTOCOL.md "Token lifetime").
//!
//! Keys are parsed once when the config compiles, and checked there against
//! every allowed algorithm, so a key that cannot verify a configured
//! algorithm is a config error rather than a stream of refused tokens. The
//! clock is an argument, so expiry and not-before are checked here against
//! the caller's `now` (the library's own clock checks are turned off), which
//! keeps tests exact. Nothing in this module logs or returns a token or a
//! secret: every [`AuthError`] carries only `'static` text.
//!
//! `raw` is `[auth]` as written; `keys` validates it and loads the keys
//! into an [`Authenticator`] when the config compiles.

use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

mod key_id;
mod keys;
mod raw;

pub use key_id::KeyId;
pub use raw::{RawAuth, RawJwt};

/// The algorithms `auth.jwt.algorithms` offers (docs/CONFIG.md).
/// jsonwebtoken also knows PS*, which the gateway does not offer, so a
/// config naming them is refused.
pub const SUPPORTED: [Algorithm; 9] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every session must present a valid token before subscribing.
    Jwt,
    /// Development only: any string authorizes (docs/CONFIG.md, `auth.mode`).
    Bypass,
}

/// Who a session is: the claims of its token, or none for an anonymous one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// The token's claims; empty for an anonymous (bypass) identity.
    pub claims: Map<String, Value>,
    /// When the session must end (docs/PROTOCOL.md, "Token lifetime"): the
    /// token's `exp` plus the leeway, in seconds since the epoch; `None`
    /// without `exp`.
    pub expires_at: Option<u64>,
}

impl Identity {
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// The `sub` claim, for logs.
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }
}

/// Why a token was refused. `Display` is the `detail` sent to the client:
/// precise about the cause, silent about the token and the keys. Every
/// payload is `'static` so that nothing read from a token can end up here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token algorithm {0} is not allowed")]
    AlgorithmNotAllowed(&'static str),
    #[error("token is signed with {0} but only asymmetric keys are configured")]
    KeyConfusion(&'static str),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token has no issuer (iss) but one is required")]
    MissingIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token has no audience (aud) but one is required")]
    MissingAudience,
    #[error("claim {0} has an invalid format")]
    BadClaim(&'static str),
}

/// One verification key with the validation rules that go with it.
struct KeyedValidation {
    /// Fingerprint of the key and its rules.
    id: KeyId,
    /// Parsed once at compile; verifying never touches the file again.
    key: DecodingKey,
    /// This key's family only, so a token can never pick another family's key.
    validation: Validation,
}

/// Verifies tokens for `auth.mode`, keys already parsed.
pub struct Authenticator {
    pub mode: Mode,
    /// How long a jwt-mode connection may stay unauthenticated.
    pub timeout: Duration,
    /// Allowed algorithms in configured order (first HS one signs `token`).
    algorithms: Vec<Algorithm>,
    /// Key for the HS* family, when one is allowed and a secret is set.
    hmac: Option<KeyedValidation>,
    /// Raw HS secret, kept only to sign test tokens (`topicgate token`).
    secret: Option<Vec<u8>>,
    /// Key for the configured asymmetric family, when `public_key_file` is set.
    public: Option<KeyedValidation>,
    /// Required in every token and added to signed ones; its value is
    /// compared by jsonwebtoken through each `Validation`.
    issuer: Option<String>,
    /// Required in every token and added to signed ones; its value is
    /// compared by jsonwebtoken through each `Validation`.
    audience: Option<String>,
    /// Seconds of clock skew accepted on `exp` and `nbf`.
    leeway: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.mode)
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Checks `token` at time `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        self.verify_keyed(token, now).map(|(identity, _)| identity)
    }

    /// Whether the key `id` names is configured, with the same rules.
    pub fn has_key(&self, id: KeyId) -> bool {
        [&self.hmac, &self.public]
            .into_iter()
            .flatten()
            .any(|keyed| keyed.id == id)
    }

    /// [`verify`](Self::verify), with the key that verified the token.
    fn verify_keyed(&self, token: &str, now: u64) -> Result<(Identity, KeyId), AuthError> {
        let alg = header_alg(token)?;
        let keyed = if !self.algorithms.contains(&alg) {
            None
        } else if alg.family() == AlgorithmFamily::Hmac {
            self.hmac.as_ref()
        } else {
            self.public.as_ref()
        };
        let Some(keyed) = keyed else {
            // The classic confusion attack: an HS token whose "secret" is the
            // public key. It is refused here, before any key is touched.
            if alg.family() == AlgorithmFamily::Hmac && self.hmac.is_none() && self.public.is_some()
            {
                return Err(AuthError::KeyConfusion(alg_name(alg)));
            }
            return Err(AuthError::AlgorithmNotAllowed(alg_name(alg)));
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &keyed.key, &keyed.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidClaimFormat(claim) => AuthError::BadClaim(claim_name(claim)),
                ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed(alg_name(alg)),
                // `compile` proved the key usable for every allowed algorithm,
                // so these cannot come from the token; if they do, the token
                // still cannot be verified.
                ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
                _ => AuthError::Malformed,
            })?;
        let claims = data.claims;
        // `null` counts as absent, as it does for jsonwebtoken's own checks.
        let absent = |name: &str| claims.get(name).is_none_or(Value::is_null);
        if self.issuer.is_some() && absent("iss") {
            return Err(AuthError::MissingIssuer);
        }
        if self.audience.is_some() && absent("aud") {
            return Err(AuthError::MissingAudience);
        }
        let time_claim = |name: &'static str| -> Result<Option<u64>, AuthError> {
            match claims.get(name) {
                None => Ok(None),
                Some(value) => value
                    .as_u64()
                    .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                    .map(Some)
                    .ok_or(AuthError::BadClaim(name)),
            }
        };
        // RFC 7519 §4.1.4: valid strictly before `exp`; §4.1.5: from `nbf` on.
        let expires_at = time_claim("exp")?;
        if let Some(exp) = expires_at {
            if exp.saturating_add(self.leeway) <= now {
                return Err(AuthError::Expired);
            }
        }
        if let Some(nbf) = time_claim("nbf")? {
            if nbf > now.saturating_add(self.leeway) {
                return Err(AuthError::NotYetValid);
            }
        }
        let identity = Identity {
            expires_at: expires_at.map(|exp| exp.saturating_add(self.leeway)),
            claims,
        };
        Ok((identity, keyed.id))
    }

    /// Authorization as the session sees it: in bypass mode any string
    /// succeeds, and a well-formed token's claims are still used for the ACL
    /// whether or not they verify (docs/CONFIG.md, `auth.mode`).
    pub fn authorize(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        self.authorize_keyed(token, now)
            .map(|(identity, _)| identity)
    }

    /// [`authorize`](Self::authorize), with the key that verified the token;
    /// `None` for a bypass-mode token that did not verify.
    pub fn authorize_keyed(
        &self,
        token: &str,
        now: u64,
    ) -> Result<(Identity, Option<KeyId>), AuthError> {
        match (self.mode, self.verify_keyed(token, now)) {
            (_, Ok((identity, key))) => Ok((identity, Some(key))),
            (Mode::Jwt, Err(err)) => Err(err),
            (Mode::Bypass, Err(_)) => {
                let identity = Identity {
                    claims: unverified_parts(token)
                        .map(|(_, claims)| claims)
                        .unwrap_or_default(),
                    expires_at: None,
                };
                Ok((identity, None))
            }
        }
    }

    /// Signs `claims` with the configured HS secret (for `topicgate token`),
    /// adding the configured `iss` and `aud` so the gateway accepts it.
    pub fn sign(&self, mut claims: Map<String, Value>) -> Result<String, SignError> {
        let alg = self
            .algorithms
            .iter()
            .copied()
            .find(|a| a.family() == AlgorithmFamily::Hmac)
            .ok_or(SignError::NoHmac)?;
        let secret = self.secret.as_ref().ok_or(SignError::NoSecret)?;
        if let Some(iss) = &self.issuer {
            claims
                .entry("iss")
                .or_insert_with(|| Value::String(iss.clone()));
        }
        if let Some(aud) = &self.audience {
            claims
                .entry("aud")
                .or_insert_with(|| Value::String(aud.clone()));
        }
        let key = jsonwebtoken::EncodingKey::from_secret(secret)
            .map_err(|err| SignError::Encode(err.to_string()))?;
        jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key)
            .map_err(|err| SignError::Encode(err.to_string()))
    }
}

/// Why `topicgate token` cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(
        "no HS* algorithm is allowed in auth.jwt.algorithms; tokens for RS*/ES*/EdDSA must be signed by your identity provider"
    )]
    NoHmac,
    #[error("auth.jwt.secret (or secret_file) is not set")]
    NoSecret,
    #[error("cannot sign: {0}")]
    Encode(String),
}

/// Seconds since the epoch, the clock `verify` is normally given.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The algorithm a token's header claims, or why the header is refused.
fn header_alg(token: &str) -> Result<Algorithm, AuthError> {
    match jsonwebtoken::decode_header(token) {
        Ok(header) => Ok(header.alg),
        // jsonwebtoken fails to parse a header whose `alg` it does not know
        // ("none" included) like any other bad JSON; tell the two apart.
        Err(_) => match unverified_parts(token)
            .and_then(|(header, _)| header.get("alg").and_then(Value::as_str).map(str::to_owned))
        {
            Some(alg) if alg.parse::<Algorithm>().is_ok() => Err(AuthError::Malformed),
            Some(alg) if alg.eq_ignore_ascii_case("none") => {
                Err(AuthError::AlgorithmNotAllowed("none"))
            }
            Some(_) => Err(AuthError::AlgorithmNotAllowed("(unrecognized)")),
            None => Err(AuthError::Malformed),
        },
    }
}

/// Header and claims of a `header.payload.signature` token, unverified;
/// `None` unless both decode to JSON objects.
fn unverified_parts(token: &str) -> Option<(Map<String, Value>, Map<String, Value>)> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some((segment_object(header)?, segment_object(payload)?))
}

/// One base64url segment decoded as a JSON object. jsonwebtoken decodes the
/// middle segment of `a.b.c` this way without checking anything else, and it
/// is the only base64url decoder this crate depends on.
fn segment_object(segment: &str) -> Option<Map<String, Value>> {
    jsonwebtoken::dangerous::insecure_decode_claims(format!("_.{segment}._")).ok()
}

/// The JWA name of an algorithm, as a `'static` string for [`AuthError`].
fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        _ => "(unrecognized)",
    }
}

/// A registered claim name jsonwebtoken reports, as a `'static` string.
fn claim_name(claim: &str) -> &'static str {
    match claim {
        "exp" => "exp",
        "nbf" => "nbf",
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        _ => "(registered claim)",
    }
}

#[cfg(test)]
mod tests;
