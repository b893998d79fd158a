//! Loading `[auth]`: algorithms, the HS secret and the public key, each
//! checked when the config loads so that a bad key fails `check` and a
//! reload rather than every token later.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};

use super::{Authenticator, KeyId, KeyedValidation, Mode, RawAuth, RawJwt, SUPPORTED, alg_name};
use crate::issues::{Issue, check_secs};

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
        check_secs(
            &mut issues,
            "auth.timeout_secs",
            raw.timeout_secs,
            1,
            86_400,
        );
        let jwt = &raw.jwt;
        check_secs(
            &mut issues,
            "auth.jwt.leeway_secs",
            jwt.leeway_secs,
            0,
            3600,
        );
        let algorithms = parse_algorithms(&jwt.algorithms, &mut issues);
        let mut asymmetric: Vec<AlgorithmFamily> = Vec::new();
        for family in algorithms.iter().map(|a| a.family()) {
            if family != AlgorithmFamily::Hmac && !asymmetric.contains(&family) {
                asymmetric.push(family);
            }
        }
        // One public key serves one family: RS* and ES* tokens cannot both
        // verify against the same PEM.
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
        // Bypass accepts any string anyway; demanding a secret there would
        // only stop a dev setup from starting.
        if wants_hmac && secret.is_none() && mode == Mode::Jwt {
            issues.push(Issue::new(
                "auth.jwt.secret",
                "must be set (or auth.jwt.secret_file) when an HS* algorithm is allowed",
            ));
        }
        // Anyone can sign tokens with a secret copied from an example.
        let placeholder = secret.as_deref().is_some_and(is_placeholder);
        if placeholder && wants_hmac && mode == Mode::Jwt {
            let key = if jwt.secret_file.is_empty() {
                "auth.jwt.secret"
            } else {
                "auth.jwt.secret_file"
            };
            issues.push(Issue::new(
                key,
                "is a placeholder from an example; set a real secret, e.g. \
                 TOPICGATE__AUTH__JWT__SECRET=$(openssl rand -hex 32)",
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
                Ok(key) => {
                    let validation = Self::validation(jwt, family_algs(AlgorithmFamily::Hmac));
                    Some(KeyedValidation {
                        id: KeyId::of(secret, &validation),
                        key,
                        validation,
                    })
                }
                Err(err) => {
                    issues.push(Issue::new("auth.jwt.secret", format!("unusable: {err}")));
                    None
                }
            },
            _ => None,
        };
        let public = match asymmetric.as_slice() {
            [family] => {
                let algs = family_algs(*family);
                Self::load_public_key(jwt, *family, &algs, base_dir, &mut issues).map(
                    |(key, pem)| {
                        let validation = Self::validation(jwt, algs);
                        KeyedValidation {
                            id: KeyId::of(&pem, &validation),
                            key,
                            validation,
                        }
                    },
                )
            }
            _ => None,
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

    /// Reads the PEM for `family` and proves it can verify each of `algs`.
    fn load_public_key(
        jwt: &RawJwt,
        family: AlgorithmFamily,
        algs: &[Algorithm],
        base_dir: &Path,
        issues: &mut Vec<Issue>,
    ) -> Option<(DecodingKey, Vec<u8>)> {
        const KEY: &str = "auth.jwt.public_key_file";
        if jwt.public_key_file.is_empty() {
            issues.push(Issue::new(
                KEY,
                "must be set when an RS*, ES* or EdDSA algorithm is allowed",
            ));
            return None;
        }
        let path = base_dir.join(&jwt.public_key_file);
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(err) => {
                issues.push(Issue::new(
                    KEY,
                    format!("cannot read {}: {err}", path.display()),
                ));
                return None;
            }
        };
        let family_name = family_name(family);
        // jsonwebtoken takes the first bit string of an RSA private key as if
        // it were a public key and then fails every signature; a private key
        // also has no business on the gateway. Say so instead.
        if pem.windows(16).any(|w| w == b"PRIVATE KEY-----") {
            issues.push(Issue::new(
                KEY,
                format!(
                    "{} holds a private key; give the {family_name} public key \
                     (openssl pkey -in KEY -pubout)",
                    path.display()
                ),
            ));
            return None;
        }
        let key = match family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
            AlgorithmFamily::Hmac => return None,
        };
        let key = match key {
            Ok(key) => key,
            Err(err) => {
                issues.push(Issue::new(
                    KEY,
                    format!(
                        "{} is not an {family_name} public key in PEM: {err}",
                        path.display()
                    ),
                ));
                return None;
            }
        };
        match usable_for(&key, family, algs) {
            Ok(()) => Some((key, pem)),
            Err(reason) => {
                issues.push(Issue::new(KEY, format!("{} {reason}", path.display())));
                None
            }
        }
    }

    fn validation(jwt: &RawJwt, algorithms: Vec<Algorithm>) -> Validation {
        let mut validation = Validation {
            algorithms,
            // Time claims are checked in `verify` against the caller's clock.
            validate_exp: false,
            validate_nbf: false,
            leeway: 0,
            ..Validation::default()
        };
        // jsonwebtoken checks `iss` and `aud` only when the token carries
        // them; `verify` requires them itself, in a fixed order (the
        // library's required set is a HashSet, so its first complaint would
        // vary from run to run).
        validation.required_spec_claims = HashSet::new();
        if jwt.issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[&jwt.issuer]);
        }
        if jwt.audience.is_empty() {
            // Otherwise any token carrying an `aud` would be refused.
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&jwt.audience]);
        }
        validation
    }
}

fn parse_algorithms(names: &[String], issues: &mut Vec<Issue>) -> Vec<Algorithm> {
    const KEY: &str = "auth.jwt.algorithms";
    if names.is_empty() {
        issues.push(Issue::new(KEY, "must list at least one algorithm"));
    }
    let mut algorithms = Vec::new();
    for name in names {
        match name.parse::<Algorithm>() {
            Ok(alg) if SUPPORTED.contains(&alg) => algorithms.push(alg),
            _ => {
                let expected: Vec<&str> = SUPPORTED.iter().map(|a| alg_name(*a)).collect();
                issues.push(Issue::new(
                    KEY,
                    format!(
                        "unknown algorithm {name:?}; expected one of {}",
                        expected.join(", ")
                    ),
                ));
            }
        }
    }
    algorithms
}

/// Proves at compile time that `key` can verify every algorithm in `algs`,
/// so that a mismatch (a P-256 key with ES384, a truncated Ed25519 key, an
/// RSA PEM that is not RSA) is reported with the config key, not at the
/// first token.
fn usable_for(
    key: &DecodingKey,
    family: AlgorithmFamily,
    algs: &[Algorithm],
) -> Result<(), String> {
    match family {
        AlgorithmFamily::Rsa => {
            // The RustCrypto verifier parses the key at each verification and
            // turns a parse failure into "invalid signature"; parse it once
            // here the same way.
            let (Some(provider), Ok(der)) =
                (CryptoProvider::try_get_default(), key.try_get_as_bytes())
            else {
                return Ok(());
            };
            (provider.key_utils.rsa_pub_components_from_public_key)(der)
                .map(|_| ())
                .map_err(|err| format!("is not a usable RSA public key: {err}"))
        }
        AlgorithmFamily::Ec | AlgorithmFamily::Ed => {
            // The EdDSA verifier slices the first 32 bytes of the key and
            // panics on a shorter one.
            if family == AlgorithmFamily::Ed
                && !matches!(key.try_get_as_bytes(), Ok(bytes) if bytes.len() == 32)
            {
                return Err("is not a usable Ed25519 public key (expected 32 bytes)".into());
            }
            let hint = match family {
                AlgorithmFamily::Ec => {
                    " (ES256 needs a P-256 key, ES384 a P-384 key: allow only the one that matches)"
                }
                _ => "",
            };
            for alg in algs {
                // An empty signature fails verification (`Ok(false)`); only a
                // key the algorithm cannot use is an `Err`.
                if jsonwebtoken::crypto::verify("", b"", key, *alg).is_err() {
                    return Err(format!("cannot verify {}{hint}", alg_name(*alg)));
                }
            }
            Ok(())
        }
        AlgorithmFamily::Hmac => Ok(()),
    }
}

/// The key family's name, for config errors.
fn family_name(family: AlgorithmFamily) -> &'static str {
    match family {
        AlgorithmFamily::Hmac => "HMAC",
        AlgorithmFamily::Rsa => "RSA",
        AlgorithmFamily::Ec => "EC",
        AlgorithmFamily::Ed => "Ed25519",
    }
}

/// Secrets copied from examples and tutorials, compared case-insensitively
/// after trimming; a secret starting with one of [`PLACEHOLDER_PREFIXES`]
/// (such as `change-me-jwt-secret` in `.env.example`) counts too.
const PLACEHOLDERS: &[&str] = &[
    "secret",
    "changeit",
    "password",
    "placeholder",
    "your-secret",
    "your_secret",
    "yoursecret",
    "your-256-bit-secret",
    "jwt-secret",
    "jwt_secret",
    "...",
    "xxx",
    "todo",
];
const PLACEHOLDER_PREFIXES: &[&str] = &[
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
];

/// Whether an HS secret is a known placeholder rather than a real secret.
pub(crate) fn is_placeholder(secret: &[u8]) -> bool {
    let secret = secret.trim_ascii().to_ascii_lowercase();
    PLACEHOLDERS.iter().any(|p| secret == p.as_bytes())
        || PLACEHOLDER_PREFIXES
            .iter()
            .any(|p| secret.starts_with(p.as_bytes()))
}
