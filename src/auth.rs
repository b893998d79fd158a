//! Token verification: `verify(token, now) -> Identity` (SPEC §1, §2 `[auth]`).
//!
//! Keys are parsed once when the config compiles. The clock is an argument,
//! so expiry and not-before are checked here against the caller's `now` (the
//! library's own clock checks are turned off), which keeps tests exact.
//! Nothing in this module logs or returns a token or a secret.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::Issue;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAuth {
    pub mode: String,
    pub timeout_secs: u64,
    pub jwt: RawJwt,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            mode: "jwt".into(),
            timeout_secs: 30,
            jwt: RawJwt::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawJwt {
    pub algorithms: Vec<String>,
    pub secret: String,
    pub secret_file: String,
    pub public_key_file: String,
    pub issuer: String,
    pub audience: String,
    pub leeway_secs: u64,
}

impl Default for RawJwt {
    fn default() -> Self {
        Self {
            algorithms: vec!["HS256".into()],
            secret: String::new(),
            secret_file: String::new(),
            public_key_file: String::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway_secs: 5,
        }
    }
}

/// `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every session must present a valid token before subscribing.
    Jwt,
    /// Development only: any string authorizes (SPEC §2).
    Bypass,
}

/// Who a session is: the claims of its token, or none for an anonymous one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// The token's claims; empty for an anonymous (bypass) identity.
    pub claims: Map<String, Value>,
    /// `exp` in seconds since the epoch, when the token carries one.
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
/// precise about the cause, silent about the token and the keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("token is signed with {0} but only asymmetric keys are configured")]
    KeyConfusion(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("claim {0} has an invalid format")]
    BadClaim(String),
}

/// One verification key with the validation rules that go with it.
struct KeyedValidation {
    key: DecodingKey,
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
    issuer: Option<String>,
    audience: Option<String>,
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
    /// Validates `[auth]` and loads its key files (relative to `base_dir`).
    pub fn compile(raw: &RawAuth, base_dir: &Path) -> Result<Self, Vec<Issue>> {
        let mut issues = Vec::new();
        let mode = match raw.mode.as_str() {
            "jwt" => Mode::Jwt,
            "bypass" => Mode::Bypass,
            other => {
                issues.push(Issue::new(
                    "auth.mode",
                    format!("unknown mode {other:?}; expected \"jwt\" or \"bypass\""),
                ));
                Mode::Jwt
            }
        };
        if raw.timeout_secs == 0 {
            issues.push(Issue::new("auth.timeout_secs", "must be at least 1"));
        }
        let jwt = &raw.jwt;
        let mut algorithms = Vec::new();
        for name in &jwt.algorithms {
            match name.parse::<Algorithm>() {
                Ok(alg) => algorithms.push(alg),
                Err(_) => issues.push(Issue::new(
                    "auth.jwt.algorithms",
                    format!("unknown algorithm {name:?}"),
                )),
            }
        }
        if jwt.algorithms.is_empty() {
            issues.push(Issue::new("auth.jwt.algorithms", "must list at least one algorithm"));
        }
        let mut asymmetric: Vec<AlgorithmFamily> = Vec::new();
        for family in algorithms.iter().map(|a| a.family()) {
            if family != AlgorithmFamily::Hmac && !asymmetric.contains(&family) {
                asymmetric.push(family);
            }
        }
        if asymmetric.len() > 1 {
            issues.push(Issue::new(
                "auth.jwt.algorithms",
                "asymmetric algorithms must share one key family (RS*, ES* or EdDSA)",
            ));
        }

        let secret = Self::load_secret(jwt, base_dir, &mut issues);
        let wants_hmac = algorithms
            .iter()
            .any(|a| a.family() == AlgorithmFamily::Hmac);
        if wants_hmac && secret.is_none() && mode == Mode::Jwt {
            issues.push(Issue::new(
                "auth.jwt.secret",
                "must be set (or auth.jwt.secret_file) when an HS* algorithm is allowed",
            ));
        }
        let family_algs = |family: AlgorithmFamily| -> Vec<Algorithm> {
            algorithms
                .iter()
                .copied()
                .filter(|a| a.family() == family)
                .collect()
        };
        let hmac = match (&secret, wants_hmac) {
            (Some(secret), true) => match DecodingKey::from_secret(secret) {
                Ok(key) => Some(KeyedValidation {
                    key,
                    validation: Self::validation(jwt, family_algs(AlgorithmFamily::Hmac)),
                }),
                Err(err) => {
                    issues.push(Issue::new("auth.jwt.secret", format!("unusable: {err}")));
                    None
                }
            },
            _ => None,
        };
        let public = match asymmetric.first() {
            Some(family) => Self::load_public_key(jwt, *family, base_dir, &mut issues).map(|key| {
                KeyedValidation {
                    key,
                    validation: Self::validation(jwt, family_algs(*family)),
                }
            }),
            None => None,
        };
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Self {
            mode,
            timeout: Duration::from_secs(raw.timeout_secs),
            algorithms,
            hmac,
            secret,
            public,
            issuer: (!jwt.issuer.is_empty()).then(|| jwt.issuer.clone()),
            audience: (!jwt.audience.is_empty()).then(|| jwt.audience.clone()),
            leeway: jwt.leeway_secs,
        })
    }

    fn load_secret(jwt: &RawJwt, base_dir: &Path, issues: &mut Vec<Issue>) -> Option<Vec<u8>> {
        match (jwt.secret.is_empty(), jwt.secret_file.is_empty()) {
            (false, false) => {
                issues.push(Issue::new(
                    "auth.jwt.secret_file",
                    "set either auth.jwt.secret or auth.jwt.secret_file, not both",
                ));
                None
            }
            (false, true) => Some(jwt.secret.as_bytes().to_vec()),
            (true, false) => {
                let path = base_dir.join(&jwt.secret_file);
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        let trimmed = bytes.trim_ascii().to_vec();
                        if trimmed.is_empty() {
                            issues.push(Issue::new(
                                "auth.jwt.secret_file",
                                format!("{} is empty", path.display()),
                            ));
                            None
                        } else {
                            Some(trimmed)
                        }
                    }
                    Err(err) => {
                        issues.push(Issue::new(
                            "auth.jwt.secret_file",
                            format!("cannot read {}: {err}", path.display()),
                        ));
                        None
                    }
                }
            }
            (true, true) => None,
        }
    }

    fn load_public_key(
        jwt: &RawJwt,
        family: AlgorithmFamily,
        base_dir: &Path,
        issues: &mut Vec<Issue>,
    ) -> Option<DecodingKey> {
        const KEY: &str = "auth.jwt.public_key_file";
        if jwt.public_key_file.is_empty() {
            issues.push(Issue::new(KEY, "must be set when an RS*, ES* or EdDSA algorithm is allowed"));
            return None;
        }
        let path = base_dir.join(&jwt.public_key_file);
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(err) => {
                issues.push(Issue::new(KEY, format!("cannot read {}: {err}", path.display())));
                return None;
            }
        };
        let key = match family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
            AlgorithmFamily::Hmac => return None,
        };
        key.map_err(|err| {
            issues.push(Issue::new(
                KEY,
                format!("{} is not a {family:?} public key in PEM: {err}", path.display()),
            ))
        })
        .ok()
    }

    fn validation(jwt: &RawJwt, algorithms: Vec<Algorithm>) -> Validation {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        // Time claims are checked in `verify` against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = HashSet::new();
        validation.leeway = 0;
        if jwt.issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[&jwt.issuer]);
        }
        if jwt.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&jwt.audience]);
        }
        validation
    }

    /// Checks `token` at time `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|err| match err.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
                AuthError::AlgorithmNotAllowed("none".into())
            }
            _ => AuthError::Malformed,
        })?;
        let alg = header.alg;
        let keyed = if !self.algorithms.contains(&alg) {
            None
        } else if alg.family() == AlgorithmFamily::Hmac {
            self.hmac.as_ref()
        } else {
            self.public.as_ref()
        };
        let Some(keyed) = keyed else {
            let name = format!("{alg:?}");
            if alg.family() == AlgorithmFamily::Hmac && self.hmac.is_none() && self.public.is_some()
            {
                return Err(AuthError::KeyConfusion(name));
            }
            return Err(AuthError::AlgorithmNotAllowed(name));
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &keyed.key, &keyed.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                    AuthError::WrongAudience
                }
                ErrorKind::InvalidClaimFormat(claim) => AuthError::BadClaim(claim.clone()),
                ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed(format!("{alg:?}")),
                _ => AuthError::Malformed,
            })?;
        let claims = data.claims;
        let time_claim = |name: &str| -> Result<Option<u64>, AuthError> {
            match claims.get(name) {
                None => Ok(None),
                Some(value) => value
                    .as_u64()
                    .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                    .map(Some)
                    .ok_or_else(|| AuthError::BadClaim(name.into())),
            }
        };
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
        Ok(Identity {
            expires_at: expires_at.map(|exp| exp.saturating_add(self.leeway)),
            claims,
        })
    }

    /// Authorization as the session sees it: in bypass mode any string
    /// succeeds, and a well-formed token's claims are still used for the ACL.
    pub fn authorize(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        match self.mode {
            Mode::Jwt => self.verify(token, now),
            Mode::Bypass => Ok(self.verify(token, now).unwrap_or_else(|_| {
                jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token)
                    .map(|data| Identity {
                        claims: data.claims,
                        expires_at: None,
                    })
                    .unwrap_or_default()
            })),
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
            claims.entry("iss").or_insert_with(|| Value::String(iss.clone()));
        }
        if let Some(aud) = &self.audience {
            claims.entry("aud").or_insert_with(|| Value::String(aud.clone()));
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
    #[error("no HS* algorithm is allowed in auth.jwt.algorithms; tokens for RS*/ES*/EdDSA must be signed by your identity provider")]
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
