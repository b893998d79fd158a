use std::path::PathBuf;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::issues::Issue;

/// A fixed clock: every time claim below is relative to it.
const NOW: u64 = 1_700_000_000;
const SECRET: &str = "test-secret-0123456789";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

fn claims(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("claims must be an object, got {other}"),
    }
}

/// `[auth.jwt]` allowing `algs` with the test secret and nothing else.
fn hs_config(algs: &[&str]) -> RawAuth {
    let mut raw = RawAuth::default();
    raw.jwt.algorithms = algs.iter().map(|a| a.to_string()).collect();
    raw.jwt.secret = SECRET.into();
    raw
}

/// `[auth.jwt]` allowing `algs` with `public_key_file = key` (a fixture).
fn key_config(algs: &[&str], key: &str) -> RawAuth {
    let mut raw = RawAuth::default();
    raw.jwt.algorithms = algs.iter().map(|a| a.to_string()).collect();
    raw.jwt.public_key_file = key.into();
    raw
}

/// `mode = "bypass"` with everything else at its default (so no secret).
fn bypass_config() -> RawAuth {
    RawAuth {
        mode: "bypass".into(),
        ..RawAuth::default()
    }
}

/// What `verify` returned, without the identity.
type Outcome = Result<(), AuthError>;

fn compile(raw: &RawAuth) -> Authenticator {
    Authenticator::compile(raw, &fixtures()).unwrap()
}

fn compile_err(raw: &RawAuth) -> Vec<Issue> {
    match Authenticator::compile(raw, &fixtures()) {
        Ok(auth) => panic!("config should be refused: {auth:?}"),
        Err(issues) => issues,
    }
}

fn encoding_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(SECRET.as_bytes()).unwrap()
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(&pem("rs256.key.pem")).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem("es256.key.pem")).unwrap(),
        Algorithm::ES384 => EncodingKey::from_ec_pem(&pem("es384.key.pem")).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem("ed25519.key.pem")).unwrap(),
        other => panic!("no test key for {other:?}"),
    }
}

/// A token signed the ordinary way with the fixture key for `alg`.
fn sign(alg: Algorithm, payload: Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims(payload), &encoding_key(alg)).unwrap()
}

fn sign_with(alg: Algorithm, key: &EncodingKey, payload: Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims(payload), key).unwrap()
}

/// base64 without padding; `url` picks the JWT alphabet, else PEM's.
fn b64(bytes: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(table[(n >> (18 - 6 * i)) as usize & 63]));
        }
        if !url {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

/// A token from raw header and payload text, with the signature given.
fn craft(header: &str, payload: &str, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.as_bytes(), true),
        b64(payload.as_bytes(), true)
    )
}

/// A token from raw header and payload text, correctly signed with `key`:
/// for headers and payloads jsonwebtoken would refuse to produce.
fn craft_signed(header: &str, payload: &str, alg: Algorithm, key: &EncodingKey) -> String {
    let message = format!(
        "{}.{}",
        b64(header.as_bytes(), true),
        b64(payload.as_bytes(), true)
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

#[test]
fn every_supported_algorithm_verifies_a_token_it_signed() {
    let cases: &[(&str, RawAuth)] = &[
        ("HS256", hs_config(&["HS256"])),
        ("HS384", hs_config(&["HS384"])),
        ("HS512", hs_config(&["HS512"])),
        ("RS256", key_config(&["RS256"], "rs256.pub.pem")),
        ("RS384", key_config(&["RS384"], "rs256.pub.pem")),
        ("RS512", key_config(&["RS512"], "rs256.pub.pem")),
        ("RS256", key_config(&["RS256"], "rs256.pkcs1.pub.pem")),
        ("ES256", key_config(&["ES256"], "es256.pub.pem")),
        ("ES384", key_config(&["ES384"], "es384.pub.pem")),
        ("EdDSA", key_config(&["EdDSA"], "ed25519.pub.pem")),
        // Several algorithms of one family share the key.
        (
            "RS512",
            key_config(&["RS256", "RS384", "RS512"], "rs256.pub.pem"),
        ),
        // HS and one asymmetric family side by side.
        ("HS256", {
            let mut raw = key_config(&["HS256", "ES256"], "es256.pub.pem");
            raw.jwt.secret = SECRET.into();
            raw
        }),
        ("ES256", {
            let mut raw = key_config(&["HS256", "ES256"], "es256.pub.pem");
            raw.jwt.secret = SECRET.into();
            raw
        }),
    ];
    for (alg, raw) in cases {
        let alg: Algorithm = alg.parse().unwrap();
        let token = sign(alg, json!({"sub": "alice", "exp": NOW + 60}));
        let identity = compile(raw)
            .verify(&token, NOW)
            .unwrap_or_else(|err| panic!("{alg:?} with {:?}: {err}", raw.jwt));
        assert_eq!(identity.subject(), Some("alice"), "{alg:?}");
        assert_eq!(identity.expires_at, Some(NOW + 60 + 5), "{alg:?}");
    }
}

#[test]
fn secret_file_is_read_relative_to_base_dir_and_trimmed() {
    let dir = std::env::temp_dir().join(format!("topicgate-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("jwt.secret"), format!("  {SECRET}\n")).unwrap();
    let mut raw = RawAuth::default();
    raw.jwt.secret_file = "jwt.secret".into();
    let auth = Authenticator::compile(&raw, &dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let token = sign(Algorithm::HS256, json!({"sub": "alice"}));
    assert_eq!(auth.verify(&token, NOW).unwrap().subject(), Some("alice"));
}

#[test]
fn token_without_exp_is_accepted_and_never_expires() {
    let auth = compile(&hs_config(&["HS256"]));
    let token = sign(Algorithm::HS256, json!({"sub": "alice"}));
    let identity = auth.verify(&token, u64::MAX).unwrap();
    assert_eq!(identity.expires_at, None);
}

#[test]
fn leeway_applies_to_exp_and_nbf_at_the_boundary() {
    // (leeway, exp relative to NOW, nbf relative to NOW, expected)
    let cases: &[(u64, Option<i64>, Option<i64>, Outcome)] = &[
        // RFC 7519: valid strictly before exp, from nbf on.
        (0, Some(1), None, Ok(())),
        (0, Some(0), None, Err(AuthError::Expired)),
        (0, Some(-1), None, Err(AuthError::Expired)),
        (5, Some(-4), None, Ok(())),
        (5, Some(-5), None, Err(AuthError::Expired)),
        (60, Some(-59), None, Ok(())),
        (0, None, Some(0), Ok(())),
        (0, None, Some(1), Err(AuthError::NotYetValid)),
        (5, None, Some(5), Ok(())),
        (5, None, Some(6), Err(AuthError::NotYetValid)),
        (5, Some(100), Some(6), Err(AuthError::NotYetValid)),
        (5, Some(-10), Some(-20), Err(AuthError::Expired)),
        (5, Some(100), Some(-20), Ok(())),
    ];
    for (leeway, exp, nbf, expected) in cases {
        let mut raw = hs_config(&["HS256"]);
        raw.jwt.leeway_secs = *leeway;
        let auth = compile(&raw);
        let mut payload = json!({"sub": "alice"});
        let at = |offset: i64| NOW.checked_add_signed(offset).unwrap();
        if let Some(exp) = exp {
            payload["exp"] = at(*exp).into();
        }
        if let Some(nbf) = nbf {
            payload["nbf"] = at(*nbf).into();
        }
        let token = sign(Algorithm::HS256, payload);
        let got = auth.verify(&token, NOW).map(|_| ());
        assert_eq!(&got, expected, "leeway {leeway}, exp {exp:?}, nbf {nbf:?}");
    }
}

#[test]
fn expires_at_includes_the_leeway() {
    let mut raw = hs_config(&["HS256"]);
    raw.jwt.leeway_secs = 7;
    let token = sign(Algorithm::HS256, json!({"exp": NOW + 100}));
    let identity = compile(&raw).verify(&token, NOW).unwrap();
    assert_eq!(identity.expires_at, Some(NOW + 107));
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let mut strict = hs_config(&["HS256"]);
    strict.jwt.issuer = "https://auth.example.com".into();
    strict.jwt.audience = "topicgate".into();
    let strict = compile(&strict);
    let lax = compile(&hs_config(&["HS256"]));
    let iss = "https://auth.example.com";
    let cases: &[(Value, Outcome, Outcome)] = &[
        // (payload, with issuer+audience configured, with neither)
        (json!({"iss": iss, "aud": "topicgate"}), Ok(()), Ok(())),
        (
            json!({"iss": iss, "aud": ["other", "topicgate"]}),
            Ok(()),
            Ok(()),
        ),
        (
            json!({"iss": "https://evil.example.com", "aud": "topicgate"}),
            Err(AuthError::WrongIssuer),
            Ok(()),
        ),
        (
            json!({"aud": "topicgate"}),
            Err(AuthError::MissingIssuer),
            Ok(()),
        ),
        (
            json!({"iss": iss, "aud": "other"}),
            Err(AuthError::WrongAudience),
            // An `aud` is not refused when no audience is configured.
            Ok(()),
        ),
        (
            json!({"iss": iss, "aud": ["other", "another"]}),
            Err(AuthError::WrongAudience),
            Ok(()),
        ),
        (json!({"iss": iss}), Err(AuthError::MissingAudience), Ok(())),
        (json!({}), Err(AuthError::MissingIssuer), Ok(())),
        (
            json!({"iss": null, "aud": "topicgate"}),
            Err(AuthError::MissingIssuer),
            Ok(()),
        ),
        (
            json!({"iss": iss, "aud": null}),
            Err(AuthError::MissingAudience),
            Ok(()),
        ),
        (
            json!({"iss": iss, "aud": []}),
            Err(AuthError::WrongAudience),
            Ok(()),
        ),
        // Present claims are compared before absent ones are noticed.
        (
            json!({"aud": "other"}),
            Err(AuthError::WrongAudience),
            Ok(()),
        ),
        (
            json!({"iss": 42, "aud": "topicgate"}),
            Err(AuthError::BadClaim("iss")),
            Ok(()),
        ),
    ];
    for (payload, with, without) in cases {
        let token = sign(Algorithm::HS256, payload.clone());
        assert_eq!(&strict.verify(&token, NOW).map(|_| ()), with, "{payload}");
        assert_eq!(&lax.verify(&token, NOW).map(|_| ()), without, "{payload}");
    }
}

#[test]
fn each_rejection_maps_to_a_precise_error() {
    let hs256 = compile(&hs_config(&["HS256"]));
    let rs256 = compile(&key_config(&["RS256"], "rs256.pub.pem"));
    let es256 = compile(&key_config(&["ES256"], "es256.pub.pem"));
    let ed = compile(&key_config(&["EdDSA"], "ed25519.pub.pem"));
    let hs_and_rs = {
        let mut raw = key_config(&["HS256", "RS256"], "rs256.pub.pem");
        raw.jwt.secret = SECRET.into();
        compile(&raw)
    };
    let payload = r#"{"sub":"alice"}"#;
    let good_hs = sign(Algorithm::HS256, json!({"sub": "alice"}));
    let other_secret = EncodingKey::from_secret(b"another-secret").unwrap();
    // The key-confusion attack: HMAC keyed with the RSA public key's PEM.
    let public_pem_as_secret = EncodingKey::from_secret(&pem("rs256.pub.pem")).unwrap();
    let confused = sign_with(
        Algorithm::HS256,
        &public_pem_as_secret,
        json!({"sub": "mallory"}),
    );
    let hs_key = encoding_key(Algorithm::HS256);
    let tamper = |token: &str| {
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64(br#"{"sub":"admin"}"#, true);
        parts[1] = &forged;
        parts.join(".")
    };
    let cases: Vec<(&str, &Authenticator, String, AuthError)> = vec![
        (
            "signed with another secret",
            &hs256,
            sign_with(Algorithm::HS256, &other_secret, json!({"sub": "alice"})),
            AuthError::BadSignature,
        ),
        (
            "HS payload swapped",
            &hs256,
            tamper(&good_hs),
            AuthError::BadSignature,
        ),
        (
            "RS payload swapped",
            &rs256,
            tamper(&sign(Algorithm::RS256, json!({"sub": "alice"}))),
            AuthError::BadSignature,
        ),
        (
            "ES payload swapped",
            &es256,
            tamper(&sign(Algorithm::ES256, json!({"sub": "alice"}))),
            AuthError::BadSignature,
        ),
        (
            "EdDSA payload swapped",
            &ed,
            tamper(&sign(Algorithm::EdDSA, json!({"sub": "alice"}))),
            AuthError::BadSignature,
        ),
        (
            "signature stripped",
            &hs256,
            format!("{}.", good_hs.rsplit_once('.').unwrap().0),
            AuthError::BadSignature,
        ),
        ("empty", &hs256, String::new(), AuthError::Malformed),
        ("not a token", &hs256, "hello".into(), AuthError::Malformed),
        ("two segments", &hs256, "a.b".into(), AuthError::Malformed),
        (
            "four segments",
            &hs256,
            format!("{good_hs}.x"),
            AuthError::Malformed,
        ),
        (
            "header not base64",
            &hs256,
            "!!!.e30.x".into(),
            AuthError::Malformed,
        ),
        (
            "header not JSON",
            &hs256,
            craft("not json", payload, "x"),
            AuthError::Malformed,
        ),
        (
            "header without alg",
            &hs256,
            craft(r#"{"typ":"JWT"}"#, payload, "x"),
            AuthError::Malformed,
        ),
        (
            "signed payload not JSON",
            &hs256,
            craft_signed(r#"{"alg":"HS256"}"#, "not json", Algorithm::HS256, &hs_key),
            AuthError::Malformed,
        ),
        (
            "signed payload not an object",
            &hs256,
            craft_signed(r#"{"alg":"HS256"}"#, "[1,2]", Algorithm::HS256, &hs_key),
            AuthError::Malformed,
        ),
        (
            "unsupported crit header",
            &hs256,
            craft_signed(
                r#"{"alg":"HS256","crit":["exp"]}"#,
                payload,
                Algorithm::HS256,
                &hs_key,
            ),
            AuthError::Malformed,
        ),
        (
            "alg none",
            &hs256,
            craft(r#"{"alg":"none","typ":"JWT"}"#, payload, ""),
            AuthError::AlgorithmNotAllowed("none"),
        ),
        (
            "alg None",
            &hs256,
            craft(r#"{"alg":"None"}"#, payload, ""),
            AuthError::AlgorithmNotAllowed("none"),
        ),
        (
            "alg none against an asymmetric key",
            &rs256,
            craft(r#"{"alg":"none"}"#, payload, ""),
            AuthError::AlgorithmNotAllowed("none"),
        ),
        (
            "alg unknown",
            &hs256,
            craft(r#"{"alg":"HS1024"}"#, payload, "x"),
            AuthError::AlgorithmNotAllowed("(unrecognized)"),
        ),
        (
            "HS384 when only HS256 is allowed",
            &hs256,
            sign(Algorithm::HS384, json!({})),
            AuthError::AlgorithmNotAllowed("HS384"),
        ),
        (
            "RS256 when only HS256 is allowed",
            &hs256,
            sign(Algorithm::RS256, json!({})),
            AuthError::AlgorithmNotAllowed("RS256"),
        ),
        (
            "PS256 with an RSA key but only RS256 allowed",
            &rs256,
            sign(Algorithm::PS256, json!({})),
            AuthError::AlgorithmNotAllowed("PS256"),
        ),
        (
            "ES384 when only ES256 is allowed",
            &es256,
            sign(Algorithm::ES384, json!({})),
            AuthError::AlgorithmNotAllowed("ES384"),
        ),
        (
            "EdDSA when only ES256 is allowed",
            &es256,
            sign(Algorithm::EdDSA, json!({})),
            AuthError::AlgorithmNotAllowed("EdDSA"),
        ),
        (
            "HS256 when only RS256 is configured",
            &rs256,
            sign(Algorithm::HS256, json!({})),
            AuthError::KeyConfusion("HS256"),
        ),
        (
            "HS256 keyed with the RSA public key PEM",
            &rs256,
            confused.clone(),
            AuthError::KeyConfusion("HS256"),
        ),
        (
            "HS512 keyed with the public key PEM, ES256 configured",
            &es256,
            sign_with(
                Algorithm::HS512,
                &EncodingKey::from_secret(&pem("es256.pub.pem")).unwrap(),
                json!({}),
            ),
            AuthError::KeyConfusion("HS512"),
        ),
        (
            "HS256 keyed with the RSA public key PEM, HS256 also allowed",
            &hs_and_rs,
            confused,
            AuthError::BadSignature,
        ),
        (
            "RS256 header on an HMAC signature",
            &hs_and_rs,
            {
                let token = sign(Algorithm::HS256, json!({}));
                let (_, rest) = token.split_once('.').unwrap();
                format!("{}.{rest}", b64(br#"{"alg":"RS256"}"#, true))
            },
            AuthError::BadSignature,
        ),
        (
            "expired",
            &hs256,
            sign(Algorithm::HS256, json!({"exp": NOW - 60})),
            AuthError::Expired,
        ),
        (
            "not yet valid",
            &hs256,
            sign(Algorithm::HS256, json!({"nbf": NOW + 60})),
            AuthError::NotYetValid,
        ),
        (
            "exp is a string",
            &hs256,
            sign(Algorithm::HS256, json!({"exp": "tomorrow"})),
            AuthError::BadClaim("exp"),
        ),
        (
            "exp is negative",
            &hs256,
            sign(Algorithm::HS256, json!({"exp": -1})),
            AuthError::BadClaim("exp"),
        ),
        (
            "nbf is a string",
            &hs256,
            sign(Algorithm::HS256, json!({"nbf": "now"})),
            AuthError::BadClaim("nbf"),
        ),
    ];
    for (name, auth, token, expected) in cases {
        assert_eq!(auth.verify(&token, NOW), Err(expected), "{name}");
    }
}

#[test]
fn error_details_never_contain_the_token_or_key_material() {
    let rs256 = compile(&key_config(&["RS256"], "rs256.pub.pem"));
    let mut strict = hs_config(&["HS256"]);
    strict.jwt.issuer = "iss-configured".into();
    strict.jwt.audience = "aud-configured".into();
    let strict = compile(&strict);
    let public_pem = String::from_utf8(pem("rs256.pub.pem")).unwrap();
    let public_pem_as_secret = EncodingKey::from_secret(public_pem.as_bytes()).unwrap();
    let cases: Vec<(&Authenticator, String)> = vec![
        (
            &strict,
            craft(r#"{"alg":"none-SECRET-LEAK"}"#, r#"{"sub":"x"}"#, ""),
        ),
        (
            &strict,
            sign(Algorithm::HS256, json!({"iss": "evil-issuer-LEAK"})),
        ),
        (
            &strict,
            sign(
                Algorithm::HS256,
                json!({"iss": "iss-configured", "aud": "evil-aud-LEAK"}),
            ),
        ),
        (&strict, sign(Algorithm::HS256, json!({"exp": "LEAK-exp"}))),
        (&strict, "LEAK.LEAK.LEAK".into()),
        (&strict, "LEAK-not-a-token".into()),
        (
            &strict,
            format!("{}x", sign(Algorithm::HS256, json!({"sub": "LEAK"}))),
        ),
        (
            &rs256,
            sign_with(
                Algorithm::HS256,
                &public_pem_as_secret,
                json!({"sub": "LEAK"}),
            ),
        ),
        (
            &rs256,
            sign(Algorithm::RS256, json!({"exp": NOW - 100, "sub": "LEAK"})),
        ),
    ];
    let key_lines: Vec<&str> = public_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    for (auth, token) in cases {
        let err = auth.verify(&token, NOW).unwrap_err();
        let detail = err.to_string();
        let debug = format!("{err:?}");
        for text in [&detail, &debug] {
            assert!(!text.contains("LEAK"), "{text}");
            assert!(!text.contains(SECRET), "{text}");
            for segment in token.split('.').filter(|s| s.len() >= 4) {
                assert!(
                    !text.contains(segment),
                    "{text} contains token part {segment}"
                );
            }
            for line in &key_lines {
                assert!(!text.contains(line), "{text}");
            }
        }
    }
    // Nor does the authenticator's own Debug (it is logged at start).
    let debug = format!("{strict:?}");
    assert!(!debug.contains(SECRET), "{debug}");
}

#[test]
fn bypass_accepts_any_string_and_uses_the_claims_of_a_well_formed_token() {
    let raw = bypass_config();
    // No secret: bypass must start without one.
    let bypass = compile(&raw);
    let mut with_secret = hs_config(&["HS256"]);
    with_secret.mode = "bypass".into();
    let with_secret = compile(&with_secret);

    let anonymous = Identity::anonymous();
    let signed = sign(Algorithm::HS256, json!({"sub": "alice", "exp": NOW + 60}));
    let expired = sign(Algorithm::HS256, json!({"sub": "alice", "exp": NOW - 60}));
    let unsigned = craft(r#"{"alg":"none"}"#, r#"{"sub":"bob","role":"admin"}"#, "");
    let for_claims = |sub: &str| Identity {
        claims: claims(json!({"sub": sub})),
        expires_at: None,
    };
    let cases: Vec<(&str, &Authenticator, String, Identity)> = vec![
        ("empty string", &bypass, String::new(), anonymous.clone()),
        ("any word", &bypass, "letmein".into(), anonymous.clone()),
        (
            "three garbage parts",
            &bypass,
            "a.b.c".into(),
            anonymous.clone(),
        ),
        (
            "payload is not an object",
            &bypass,
            craft(r#"{"alg":"HS256"}"#, "[1]", "x"),
            anonymous.clone(),
        ),
        (
            "header is not JSON",
            &bypass,
            craft("nope", r#"{"sub":"alice"}"#, "x"),
            anonymous.clone(),
        ),
        (
            "signed token, secret unknown: claims used unverified",
            &bypass,
            signed.clone(),
            Identity {
                claims: claims(json!({"sub": "alice", "exp": NOW + 60})),
                expires_at: None,
            },
        ),
        (
            "signed token that verifies: claims and expiry",
            &with_secret,
            signed,
            Identity {
                claims: claims(json!({"sub": "alice", "exp": NOW + 60})),
                expires_at: Some(NOW + 65),
            },
        ),
        (
            "expired token: claims still used",
            &with_secret,
            expired,
            Identity {
                claims: claims(json!({"sub": "alice", "exp": NOW - 60})),
                expires_at: None,
            },
        ),
        (
            "alg none token: claims used",
            &bypass,
            unsigned,
            Identity {
                claims: claims(json!({"sub": "bob", "role": "admin"})),
                expires_at: None,
            },
        ),
        (
            "RS256 token with no key configured",
            &bypass,
            sign(Algorithm::RS256, json!({"sub": "carol"})),
            for_claims("carol"),
        ),
    ];
    for (name, auth, token, expected) in cases {
        assert_eq!(auth.authorize(&token, NOW), Ok(expected), "{name}");
    }
}

#[test]
fn jwt_mode_authorize_is_verify() {
    let auth = compile(&hs_config(&["HS256"]));
    assert_eq!(auth.authorize("letmein", NOW), Err(AuthError::Malformed));
    let token = sign(Algorithm::HS256, json!({"sub": "alice"}));
    assert_eq!(auth.authorize(&token, NOW), auth.verify(&token, NOW));
}

#[test]
fn sign_produces_tokens_that_verify_with_every_hs_algorithm() {
    for alg in ["HS256", "HS384", "HS512"] {
        let mut raw = hs_config(&[alg]);
        raw.jwt.issuer = "https://auth.example.com".into();
        raw.jwt.audience = "topicgate".into();
        let auth = compile(&raw);
        let token = auth
            .sign(claims(json!({"sub": "alice", "exp": NOW + 60})))
            .unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&token).unwrap().alg,
            alg.parse().unwrap()
        );
        let identity = auth.verify(&token, NOW).unwrap();
        assert_eq!(identity.subject(), Some("alice"));
        assert_eq!(identity.claims["iss"], "https://auth.example.com");
        assert_eq!(identity.claims["aud"], "topicgate");
    }
}

#[test]
fn sign_uses_the_first_hs_algorithm_and_keeps_given_claims() {
    let mut raw = key_config(&["RS256", "HS512", "HS256"], "rs256.pub.pem");
    raw.jwt.secret = SECRET.into();
    raw.jwt.issuer = "configured".into();
    let auth = compile(&raw);
    let token = auth.sign(claims(json!({"iss": "given"}))).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        Algorithm::HS512
    );
    let (_, payload) = unverified_parts(&token).unwrap();
    assert_eq!(payload["iss"], "given");
}

#[test]
fn sign_without_an_hs_algorithm_or_secret_is_a_clear_error() {
    let rs = compile(&key_config(&["RS256"], "rs256.pub.pem"));
    let err = rs.sign(Map::new()).unwrap_err();
    assert!(matches!(err, SignError::NoHmac));
    assert!(err.to_string().contains("identity provider"), "{err}");

    let raw = bypass_config();
    let err = compile(&raw).sign(Map::new()).unwrap_err();
    assert!(matches!(err, SignError::NoSecret));
    assert!(err.to_string().contains("auth.jwt.secret"), "{err}");
}

/// A PEM `PUBLIC KEY` block from DER, for keys openssl would not produce.
fn spki_pem(der: &[u8]) -> String {
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        b64(der, false)
    )
}

#[test]
fn config_errors_name_the_key() {
    // Removed when the test ends, pass or fail.
    let scratch = tempfile::Builder::new()
        .prefix("topicgate-auth-keys-")
        .tempdir()
        .unwrap();
    let dir = scratch.path();
    // An Ed25519 SPKI holding 16 bytes instead of 32.
    let mut short_ed = vec![
        0x30, 0x1a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x11, 0x00,
    ];
    short_ed.extend([7u8; 16]);
    std::fs::write(dir.join("short-ed.pem"), spki_pem(&short_ed)).unwrap();
    // An RSA SPKI whose key is a DER NULL, not an RSAPublicKey.
    let not_rsa = [
        0x30, 0x14, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
        0x05, 0x00, 0x03, 0x03, 0x00, 0x05, 0x00,
    ];
    std::fs::write(dir.join("not-rsa.pem"), spki_pem(&not_rsa)).unwrap();
    let in_dir = |name: &str| dir.join(name).display().to_string();

    let with = |edit: &dyn Fn(&mut RawAuth)| {
        let mut raw = RawAuth::default();
        edit(&mut raw);
        raw
    };
    let cases: Vec<(&str, RawAuth, &str, &str)> = vec![
        (
            "HS256 without a secret",
            with(&|_| {}),
            "auth.jwt.secret",
            "must be set",
        ),
        (
            "secret and secret_file",
            with(&|r| {
                r.jwt.secret = "a".into();
                r.jwt.secret_file = "b".into();
            }),
            "auth.jwt.secret_file",
            "not both",
        ),
        (
            "unreadable secret_file",
            with(&|r| r.jwt.secret_file = "missing.secret".into()),
            "auth.jwt.secret_file",
            "cannot read",
        ),
        (
            "unknown mode",
            with(&|r| {
                r.mode = "open".into();
                r.jwt.secret = SECRET.into();
            }),
            "auth.mode",
            "unknown mode",
        ),
        (
            "zero timeout",
            with(&|r| {
                r.timeout_secs = 0;
                r.jwt.secret = SECRET.into();
            }),
            "auth.timeout_secs",
            "at least 1",
        ),
        (
            "no algorithms",
            hs_config(&[]),
            "auth.jwt.algorithms",
            "at least one",
        ),
        (
            "alg none",
            hs_config(&["none"]),
            "auth.jwt.algorithms",
            "unknown algorithm \"none\"",
        ),
        (
            "lower-case name",
            hs_config(&["hs256"]),
            "auth.jwt.algorithms",
            "unknown algorithm",
        ),
        (
            "PS256 is not in the contract",
            key_config(&["PS256"], "rs256.pub.pem"),
            "auth.jwt.algorithms",
            "expected one of HS256",
        ),
        (
            "RS and ES mixed",
            key_config(&["RS256", "ES256"], "rs256.pub.pem"),
            "auth.jwt.algorithms",
            "one key family",
        ),
        (
            "ES and EdDSA mixed",
            key_config(&["ES256", "EdDSA"], "es256.pub.pem"),
            "auth.jwt.algorithms",
            "one key family",
        ),
        (
            "no public_key_file",
            key_config(&["RS256"], ""),
            "auth.jwt.public_key_file",
            "must be set",
        ),
        (
            "unreadable public_key_file",
            key_config(&["RS256"], "missing.pub.pem"),
            "auth.jwt.public_key_file",
            "cannot read",
        ),
        (
            "RSA key for ES256",
            key_config(&["ES256"], "rs256.pub.pem"),
            "auth.jwt.public_key_file",
            "not an EC public key",
        ),
        (
            "EC key for RS256",
            key_config(&["RS256"], "es256.pub.pem"),
            "auth.jwt.public_key_file",
            "not an RSA public key",
        ),
        (
            "EC key for EdDSA",
            key_config(&["EdDSA"], "es256.pub.pem"),
            "auth.jwt.public_key_file",
            "not an Ed25519 public key",
        ),
        (
            "P-256 key for ES384",
            key_config(&["ES384"], "es256.pub.pem"),
            "auth.jwt.public_key_file",
            "cannot verify ES384",
        ),
        (
            "P-384 key for ES256",
            key_config(&["ES256"], "es384.pub.pem"),
            "auth.jwt.public_key_file",
            "cannot verify ES256",
        ),
        (
            "P-256 key for ES256 and ES384",
            key_config(&["ES256", "ES384"], "es256.pub.pem"),
            "auth.jwt.public_key_file",
            "cannot verify ES384",
        ),
        (
            "RSA private key",
            key_config(&["RS256"], "rs256.key.pem"),
            "auth.jwt.public_key_file",
            "holds a private key",
        ),
        (
            "EC private key",
            key_config(&["ES256"], "es256.key.pem"),
            "auth.jwt.public_key_file",
            "holds a private key",
        ),
        (
            "truncated Ed25519 key",
            key_config(&["EdDSA"], &in_dir("short-ed.pem")),
            "auth.jwt.public_key_file",
            "expected 32 bytes",
        ),
        (
            "RSA SPKI that is not an RSA key",
            key_config(&["RS256"], &in_dir("not-rsa.pem")),
            "auth.jwt.public_key_file",
            "not a usable RSA public key",
        ),
    ];
    for (name, raw, key, reason) in cases {
        let issues = compile_err(&raw);
        assert!(
            issues
                .iter()
                .any(|issue| issue.key == key && issue.reason.contains(reason)),
            "{name}: expected {key}: ...{reason}..., got {issues:?}"
        );
    }
}

#[test]
fn mixed_families_are_reported_once_not_as_a_key_error_too() {
    let issues = compile_err(&key_config(&["RS256", "ES256"], "rs256.pub.pem"));
    assert_eq!(issues.len(), 1, "{issues:?}");
}

#[test]
fn every_config_problem_is_reported_at_once() {
    let mut raw = key_config(&["HS256", "ES384", "XS1"], "es256.pub.pem");
    raw.mode = "open".into();
    let keys: Vec<String> = compile_err(&raw).into_iter().map(|i| i.key).collect();
    for key in [
        "auth.mode",
        "auth.jwt.algorithms",
        "auth.jwt.secret",
        "auth.jwt.public_key_file",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
    }
}

#[test]
fn bypass_mode_starts_without_a_secret() {
    let raw = bypass_config();
    assert_eq!(compile(&raw).mode, Mode::Bypass);
}
