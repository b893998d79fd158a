//! The `topicgate` binary: `check`, `token`, exit codes (README,
//! docs/CONFIG.md).

use topicgate_test_support as common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::TempFile;

const BIN: &str = env!("CARGO_BIN_EXE_topicgate");

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Writes `text` to a config file unique to this test.
fn temp_config(name: &str, text: &str) -> TempFile {
    TempFile::new("cli", &format!("{name}.toml"), text)
}

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("TOPICGATE_CONFIG");
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("run topicgate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_prints_the_effective_config_with_secrets_masked() {
    let path = temp_config(
        "masked",
        "[auth.jwt]\nsecret = \"jwt-secret-value\"\n[api]\nkey = \"api-key-value\"\n\
         [redis]\nurl = \"redis://user:url-password@127.0.0.1:6379/0\"\npassword = \"redis-password\"\n",
    );
    let out = run(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    for secret in [
        "jwt-secret-value",
        "api-key-value",
        "url-password",
        "redis-password",
    ] {
        assert!(!printed.contains(secret), "{secret} leaked:\n{printed}");
    }
    assert!(printed.contains("***"));
    // Defaults are part of the effective config.
    assert!(printed.contains("max_subscriptions = 100"), "{printed}");
}

#[test]
fn invalid_config_exits_2_naming_every_key() {
    let path = temp_config(
        "invalid",
        "[server]\nbind = \"nowhere\"\n[broker]\nkind = \"kafka\"\n[limits]\nsend_queue = 0\n",
    );
    for args in [
        vec!["check", "--config", path.to_str().unwrap()],
        vec!["--config", path.to_str().unwrap()],
    ] {
        let out = run(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        for key in [
            "server.bind",
            "broker.kind",
            "limits.send_queue",
            "auth.jwt.secret",
        ] {
            assert!(err.contains(key), "{key} missing from:\n{err}");
        }
    }
}

#[test]
fn toml_syntax_error_exits_2() {
    let path = temp_config("syntax", "[server\nbind = 1\n");
    let out = run(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("syntax.toml"));
}

#[test]
fn missing_file_exits_2() {
    let out = run(&["check", "--config", "/nonexistent/topicgate.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read"));
}

#[test]
fn config_path_comes_from_topicgate_config_and_flag_wins() {
    let good = repo_file("config/dev.toml");
    let bad = temp_config("env-bad", "[broker]\nkind = \"nope\"\n");
    let out = run(&["check"], &[("TOPICGATE_CONFIG", good.to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("kind = \"memory\""));
    let out = run(
        &["check", "--config", good.to_str().unwrap()],
        &[("TOPICGATE_CONFIG", bad.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(0));
    let out = run(&["check"], &[("TOPICGATE_CONFIG", bad.to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn environment_overrides_the_file() {
    let good = repo_file("config/config.toml");
    let out = run(
        &["check", "--config", good.to_str().unwrap()],
        &[
            ("TOPICGATE__REDIS__URL", "redis://10.1.2.3:7000/2"),
            ("TOPICGATE__LIMITS__MAX_SUBSCRIPTIONS", "7"),
            ("TOPICGATE__AUTH__JWT__SECRET", REAL_SECRET),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("url = \"redis://10.1.2.3:7000/2\""),
        "{printed}"
    );
    assert!(printed.contains("max_subscriptions = 7"), "{printed}");
}

/// A secret that is not a placeholder, for the shipped production-style
/// config (its own `secret = "change-me"` is refused on purpose).
const REAL_SECRET: &str = "0f6c2b1e9d8a7c5b4e3f2a1d0c9b8a7e";

#[test]
fn shipped_configs_are_valid() {
    for file in ["config/config.toml", "config/dev.toml"] {
        let out = run(
            &["check", "--config", repo_file(file).to_str().unwrap()],
            &[("TOPICGATE__AUTH__JWT__SECRET", REAL_SECRET)],
        );
        assert_eq!(out.status.code(), Some(0), "{file}: {}", text(&out.stderr));
    }
    // The dev config needs nothing from the environment.
    let dev = repo_file("config/dev.toml");
    let out = run(&["check", "--config", dev.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn placeholder_secrets_are_refused_in_jwt_mode_naming_the_key() {
    // The production-style config as shipped: its secret is a placeholder.
    let shipped = repo_file("config/config.toml");
    let out = run(&["check", "--config", shipped.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("auth.jwt.secret: is a placeholder from an example"),
        "{stderr}"
    );
    assert!(stderr.contains("TOPICGATE__AUTH__JWT__SECRET"), "{stderr}");
    // Also from the environment, in any case, and through secret_file.
    for placeholder in ["Change-Me", "secret", "change-me-jwt-secret", " changeme "] {
        let out = run(
            &["check", "--config", shipped.to_str().unwrap()],
            &[("TOPICGATE__AUTH__JWT__SECRET", placeholder)],
        );
        assert_eq!(out.status.code(), Some(2), "{placeholder:?} accepted");
    }
    let dir = common::temp_dir("cli-secret-file");
    std::fs::write(dir.path().join("jwt.secret"), "changeme\n").unwrap();
    let config = dir.path().join("gw.toml");
    std::fs::write(&config, "[auth.jwt]\nsecret_file = \"jwt.secret\"\n").unwrap();
    let out = run(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("auth.jwt.secret_file: is a placeholder"),
        "{}",
        text(&out.stderr)
    );
    // Bypass mode (development) accepts any secret.
    let bypass = temp_config(
        "bypass-placeholder",
        "[auth]\nmode = \"bypass\"\n[auth.jwt]\nsecret = \"change-me\"\n",
    );
    let out = run(&["check", "--config", bypass.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn token_signs_with_the_configured_secret_issuer_and_audience() {
    let path = temp_config(
        "token",
        "[auth.jwt]\nsecret = \"cli-secret\"\nissuer = \"https://auth.test\"\naudience = \"topicgate\"\n",
    );
    let out = run(
        &[
            "token",
            "--sub",
            "alice",
            "--claim",
            "role=admin",
            "--claim",
            "level=3",
            "--ttl",
            "60",
            "--config",
            path.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_string();
    let config = topicgate::load_config(&path, Some(Default::default())).unwrap();
    let identity = config
        .auth
        .verify(&token, topicgate::unix_now())
        .expect("token verifies");
    assert_eq!(identity.claims["sub"], "alice");
    assert_eq!(identity.claims["role"], "admin");
    assert_eq!(identity.claims["level"], 3);
    assert_eq!(identity.claims["iss"], "https://auth.test");
    assert_eq!(identity.claims["aud"], "topicgate");
}

#[test]
fn check_warns_when_a_wildcard_follows_a_claim() {
    let risky = temp_config(
        "acl-risky",
        "[auth.jwt]\nsecret = \"s\"\n[[acl.rules]]\ntopics = [\"public.*\", \"user.${sub}.*\"]\neffect = \"allow\"\n",
    );
    let out = run(&["check", "--config", risky.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "warning: acl.rules[0].topics[1]: \"user.${sub}.*\": a wildcard after ${sub}"
        ),
        "{stderr}"
    );
    let safe = temp_config(
        "acl-safe",
        "[auth.jwt]\nsecret = \"s\"\n[[acl.rules]]\ntopics = [\"user.${sub}.{inbox,feed}\"]\neffect = \"allow\"\n",
    );
    let out = run(&["check", "--config", safe.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
}
