use std::collections::HashMap;
use std::path::PathBuf;

use super::*;

use serde_json::{Map, Value, json};

use crate::auth::{Identity, Mode};

/// The smallest file that compiles: the HS256 default needs a secret.
const MINIMAL: &str = "[auth.jwt]\nsecret = \"s\"\n";

/// A config file in a fresh directory of its own, so tests can run in
/// parallel; the directory is removed when this drops.
struct TempConfig {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl std::ops::Deref for TempConfig {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

fn write_config(name: &str, text: &str) -> TempConfig {
    let dir = tempfile::Builder::new()
        .prefix(&format!("topicgate-config-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    TempConfig { _dir: dir, path }
}

fn env(vars: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(
        vars.iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
    )
}

/// Loads `text` as a file with `vars` as the whole environment.
fn load_text(name: &str, text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load(&write_config(name, text), env(vars))
}

fn compile_text(text: &str) -> Result<Config, ConfigError> {
    RawConfig::from_toml(text).unwrap().compile(Path::new("."))
}

fn issue_keys(err: &ConfigError) -> Vec<&str> {
    err.issues.iter().map(|issue| issue.key.as_str()).collect()
}

/// The issue for `key`, failing the test when there is none.
fn issue<'a>(err: &'a ConfigError, key: &str) -> &'a Issue {
    err.issues
        .iter()
        .find(|issue| issue.key == key)
        .unwrap_or_else(|| panic!("no issue for {key}: {err}"))
}

fn identity(claims: Value) -> Identity {
    let Value::Object(claims) = claims else {
        panic!("claims must be an object")
    };
    Identity {
        claims,
        ..Identity::default()
    }
}

fn allows(config: &Config, claims: Value, topic: &str) -> bool {
    config.acl.bind(&identity(claims)).check(topic).allowed()
}

// ---- defaults ----

#[test]
fn defaults_equal_spec() {
    let raw = RawConfig::from_toml(MINIMAL).unwrap();
    let config = raw.compile(Path::new(".")).unwrap();

    assert_eq!(
        config.server.bind,
        "0.0.0.0:3000".parse::<SocketAddr>().unwrap()
    );
    assert!(config.server.allowed_origins.is_empty());
    assert_eq!(config.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(10));
    assert!(!config.server.console);
    assert_eq!(config.server.log_format, LogFormat::Text);

    assert_eq!(config.auth.mode, Mode::Jwt);
    assert_eq!(config.auth.timeout, Duration::from_secs(30));
    assert_eq!(raw.auth.jwt.algorithms, ["HS256"]);
    assert_eq!(raw.auth.jwt.leeway_secs, 5);
    assert_eq!(raw.auth.jwt.issuer, "");
    assert_eq!(raw.auth.jwt.audience, "");

    assert_eq!(config.broker, BrokerKind::Redis);
    assert_eq!(config.api_key, None);

    assert_eq!(config.redis.url, "redis://127.0.0.1:6379/0");
    assert_eq!(config.redis.password, None);
    assert_eq!(config.redis.pool_size, 8);
    assert_eq!(config.redis.channel_prefix, "");
    assert_eq!(config.redis.reconnect_max, Duration::from_secs(5));
    assert_eq!(config.redis.health_check, Duration::from_secs(5));
    assert!(config.redis.nodes.is_empty());

    assert_eq!(config.limits.max_message_bytes, 65536);
    assert_eq!(config.limits.max_subscriptions, 100);
    assert_eq!(config.limits.send_queue, 1024);
    assert_eq!(config.limits.max_connections, 100_000);
    assert_eq!(config.limits.requests_per_sec, 100);
    assert_eq!(config.limits.request_burst, 100);

    assert_eq!(raw.acl.default, "deny");
    assert!(raw.acl.rules.is_empty());
    assert!(!allows(&config, json!({"sub": "u1"}), "chat-room"));
}

#[test]
fn defaults_are_the_same_through_load() {
    let config = load_text("defaults-load", MINIMAL, &[]).unwrap();
    let from_toml = RawConfig::from_toml(MINIMAL).unwrap();
    assert_eq!(config.raw.to_masked_toml(), from_toml.to_masked_toml());
}

#[test]
fn empty_toml_needs_only_the_hs_secret() {
    let err = compile_text("").unwrap_err();
    assert_eq!(issue_keys(&err), ["auth.jwt.secret"], "{err}");
    load_text(
        "comment-env-secret",
        "# every key at its default\n",
        &[("TOPICGATE__AUTH__JWT__SECRET", "s")],
    )
    .unwrap();
}

#[test]
fn an_empty_or_blank_file_is_refused_even_when_the_environment_completes_it() {
    for text in ["", "  \n\t\n"] {
        let err = load_text(
            "empty-env-secret",
            text,
            &[("TOPICGATE__AUTH__JWT__SECRET", "s")],
        )
        .unwrap_err();
        assert_eq!(issue_keys(&err), ["(file)"], "{err}");
        assert!(err.issues[0].reason.contains("is empty"), "{err}");
    }
}

#[test]
fn duration_keys_out_of_their_bounds_are_errors_naming_the_key() {
    let cases = [
        (
            "[server]\nidle_timeout_secs = 18446744073709551615\n",
            "server.idle_timeout_secs",
        ),
        (
            "[server]\nidle_timeout_secs = 0\n",
            "server.idle_timeout_secs",
        ),
        (
            "[server]\nshutdown_grace_secs = 9223372036854775807\n",
            "server.shutdown_grace_secs",
        ),
        (
            "[auth]\ntimeout_secs = 9223372036854775807\n",
            "auth.timeout_secs",
        ),
        (
            "[auth.jwt]\nleeway_secs = 9223372036854775807\n",
            "auth.jwt.leeway_secs",
        ),
        (
            "[redis]\nreconnect_max_secs = 86401\n",
            "redis.reconnect_max_secs",
        ),
    ];
    for (text, key) in cases {
        let text = format!("{text}[auth.jwt]\nsecret = \"s\"\n").replace(
            "[auth.jwt]\nleeway_secs = 9223372036854775807\n[auth.jwt]\n",
            "[auth.jwt]\nleeway_secs = 9223372036854775807\n",
        );
        let err = compile_text(&text).unwrap_err();
        assert_eq!(issue_keys(&err), [key], "{err}");
    }
    let at_the_bounds = "[server]\nidle_timeout_secs = 86400\nshutdown_grace_secs = 3600\n\
                         [auth]\ntimeout_secs = 86400\n[auth.jwt]\nsecret = \"s\"\nleeway_secs = 3600\n\
                         [redis]\nreconnect_max_secs = 3600\n";
    compile_text(at_the_bounds).unwrap();
}

#[test]
fn default_config_compiles() {
    let config = Config::default();
    assert_eq!(config.broker, BrokerKind::Redis);
}

// ---- shipped files ----

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

#[test]
fn shipped_config_toml_loads() {
    // Its own secret is a placeholder, refused on purpose (see below).
    let secret = ("TOPICGATE__AUTH__JWT__SECRET", "0f6c2b1e9d8a7c5b4e3f2a1d");
    let config = load(&shipped("config.toml"), env(&[secret])).unwrap();
    assert_eq!(config.auth.mode, Mode::Jwt);
    assert_eq!(config.broker, BrokerKind::Redis);
    assert_eq!(config.server.bind.port(), 3000);
    assert!(allows(&config, json!({}), "test-channel"));
    assert!(allows(&config, json!({}), "chat-lobby"));
    assert!(!allows(&config, json!({}), "admin-room"));
}

#[test]
fn shipped_dev_toml_loads() {
    let config = load(&shipped("dev.toml"), env(&[])).unwrap();
    assert_eq!(config.auth.mode, Mode::Bypass);
    assert_eq!(config.broker, BrokerKind::Memory);
    assert_eq!(
        config.server.bind,
        "127.0.0.1:3000".parse::<SocketAddr>().unwrap()
    );
    assert!(allows(&config, json!({}), "anything"));
}

#[test]
fn shipped_files_parse_without_the_environment_layer() {
    for name in ["config.toml", "dev.toml"] {
        let text = std::fs::read_to_string(shipped(name)).unwrap();
        let mut raw = RawConfig::from_toml(&text).unwrap();
        if name == "config.toml" {
            // The production-style file runs only once a real secret is
            // given: its own is a placeholder.
            let err = raw.compile(&shipped("")).unwrap_err();
            assert!(
                err.to_string()
                    .contains("auth.jwt.secret: is a placeholder from an example"),
                "{err}"
            );
            raw.auth.jwt.secret = "0f6c2b1e9d8a7c5b4e3f2a1d".into();
        }
        raw.compile(&shipped(""))
            .unwrap_or_else(|err| panic!("{name}: {err}"));
    }
}

// ---- environment overrides ----

#[test]
fn env_overrides_each_kind_of_key() {
    let file = "[redis]\nurl = \"redis://file:6379/0\"\n[limits]\nmax_subscriptions = 5\n";
    let config = load_text(
        "env-kinds",
        file,
        &[
            ("TOPICGATE__REDIS__URL", "redis://env-host:6380/1"),
            ("TOPICGATE__AUTH__JWT__SECRET", "from-env"),
            ("TOPICGATE__LIMITS__MAX_SUBSCRIPTIONS", "7"),
            (
                "TOPICGATE__SERVER__ALLOWED_ORIGINS",
                "https://a.example, https://b.example",
            ),
            ("TOPICGATE__AUTH__MODE", "bypass"),
            ("TOPICGATE__SERVER__CONSOLE", "true"),
        ],
    )
    .unwrap();
    // Environment beats the file.
    assert_eq!(config.redis.url, "redis://env-host:6380/1");
    assert_eq!(config.limits.max_subscriptions, 7);
    assert_eq!(config.raw.auth.jwt.secret, "from-env");
    assert_eq!(
        config.server.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(config.auth.mode, Mode::Bypass);
    assert!(config.server.console);
    // Keys the environment does not name keep the file's or default value.
    assert_eq!(config.limits.send_queue, 1024);
}

#[test]
fn env_lists_split_on_commas() {
    let cases: [(&str, &[&str]); 5] = [
        ("a,b", &["a", "b"]),
        ("a", &["a"]),
        ("7", &["7"]),
        ("", &[]),
        (" a , ,b ", &["a", "b"]),
    ];
    for (value, expected) in cases {
        let config = load_text(
            "env-lists",
            MINIMAL,
            &[("TOPICGATE__SERVER__ALLOWED_ORIGINS", value)],
        )
        .unwrap_or_else(|err| panic!("{value:?}: {err}"));
        assert_eq!(config.server.allowed_origins, expected, "{value:?}");
    }
    let config = load_text(
        "env-algorithms",
        MINIMAL,
        &[("TOPICGATE__AUTH__JWT__ALGORITHMS", "HS256,HS512")],
    )
    .unwrap();
    assert_eq!(config.raw.auth.jwt.algorithms, ["HS256", "HS512"]);
}

#[test]
fn env_strings_keep_their_exact_text() {
    // Values that look like numbers, booleans or lists stay text where the
    // key is text: a secret "007" must not become "7".
    for value in [
        "007", "1e5", "TRUE", "false", "a,b", " padded ", "-0", "0x1F", "3.10",
    ] {
        let config = load_text(
            "env-strings",
            MINIMAL,
            &[
                ("TOPICGATE__AUTH__JWT__SECRET", value),
                ("TOPICGATE__API__KEY", value),
                ("TOPICGATE__REDIS__PASSWORD", value),
                ("TOPICGATE__REDIS__CHANNEL_PREFIX", value),
            ],
        )
        .unwrap_or_else(|err| panic!("{value:?}: {err}"));
        assert_eq!(config.raw.auth.jwt.secret, value);
        assert_eq!(config.api_key.as_deref(), Some(value));
        assert_eq!(config.redis.password.as_deref(), Some(value));
        assert_eq!(config.redis.channel_prefix, value);
    }
}

#[test]
fn env_booleans_and_numbers_are_parsed() {
    for (value, expected) in [
        ("true", true),
        ("TRUE", true),
        ("False", false),
        (" false ", false),
    ] {
        let config = load_text(
            "env-bools",
            MINIMAL,
            &[("TOPICGATE__SERVER__CONSOLE", value)],
        )
        .unwrap();
        assert_eq!(config.server.console, expected, "{value:?}");
    }
    let config = load_text(
        "env-numbers",
        MINIMAL,
        &[
            ("TOPICGATE__LIMITS__REQUESTS_PER_SEC", "250"),
            ("TOPICGATE__SERVER__IDLE_TIMEOUT_SECS", " 90 "),
            ("TOPICGATE__REDIS__POOL_SIZE", "16"),
        ],
    )
    .unwrap();
    assert_eq!(config.limits.requests_per_sec, 250);
    assert_eq!(config.server.idle_timeout, Duration::from_secs(90));
    assert_eq!(config.redis.pool_size, 16);
}

#[test]
fn env_prefix_is_case_insensitive_and_needs_the_double_underscore() {
    let config = load_text(
        "env-prefix",
        MINIMAL,
        &[
            ("topicgate__redis__url", "redis://lower:6379/0"),
            // One underscore is another variable (TOPICGATE_CONFIG names the file).
            ("TOPICGATE_CONFIG", "/elsewhere.toml"),
            ("TOPICGATE_REDIS__POOL_SIZE", "x"),
            ("OTHER__REDIS__URL", "redis://other:6379/0"),
        ],
    )
    .unwrap();
    assert_eq!(config.redis.url, "redis://lower:6379/0");
    assert_eq!(config.redis.pool_size, 8);
}

#[test]
fn env_problems_name_the_key_and_variable() {
    let err = load_text(
        "env-bad",
        MINIMAL,
        &[
            ("TOPICGATE__LIMITS__MAX_SUBSCRIPTIONS", "many"),
            ("TOPICGATE__LIMITS__SEND_QUEUE", "-1"),
            ("TOPICGATE__SERVER__CONSOLE", "yes"),
            ("TOPICGATE__REDIS__HOST", "super-secret-value"),
            ("TOPICGATE__AUTH__JWT", "x"),
        ],
    )
    .unwrap_err();
    let mut keys = issue_keys(&err);
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "auth.jwt",
            "limits.max_subscriptions",
            "limits.send_queue",
            "redis.host",
            "server.console"
        ],
        "{err}"
    );
    let reason = &issue(&err, "limits.max_subscriptions").reason;
    assert!(
        reason.contains("TOPICGATE__LIMITS__MAX_SUBSCRIPTIONS"),
        "{reason}"
    );
    assert!(reason.contains("\"many\""), "{reason}");
    let reason = &issue(&err, "redis.host").reason;
    assert!(reason.contains("TOPICGATE__REDIS__HOST"), "{reason}");
    // An unknown variable may hold a secret: its value is never shown.
    assert!(!err.to_string().contains("super-secret-value"), "{err}");
}

#[test]
fn env_number_out_of_range_names_the_key() {
    let err = load_text(
        "env-range",
        MINIMAL,
        &[("TOPICGATE__LIMITS__REQUESTS_PER_SEC", "5000000000")],
    )
    .unwrap_err();
    assert_eq!(issue_keys(&err), ["limits.requests_per_sec"], "{err}");
}

#[test]
fn env_and_file_problems_are_reported_together() {
    let err = load_text(
        "env-and-file",
        "[server]\nbind = \"nowhere\"\n[auth.jwt]\nsecret = \"s\"\n",
        &[("TOPICGATE__REDIS__POOL_SIZE", "x")],
    )
    .unwrap_err();
    let mut keys = issue_keys(&err);
    keys.sort_unstable();
    assert_eq!(keys, ["redis.pool_size", "server.bind"], "{err}");
}

// ---- invalid configs ----

#[test]
fn every_problem_is_reported_at_once_with_its_key() {
    let text = r#"
[server]
bind = "not-an-address"
idle_timeout_secs = 0
log_format = "xml"

[auth]
mode = "open"

[broker]
kind = "kafka"

[redis]
pool_size = 0
reconnect_max_secs = 0
health_check_secs = 0

[limits]
max_message_bytes = 0
max_subscriptions = 0
send_queue = 0
max_connections = 0
requests_per_sec = 0
request_burst = 0

[acl]
default = "maybe"
"#;
    let expected = [
        "server.bind",
        "server.idle_timeout_secs",
        "server.log_format",
        "auth.mode",
        "auth.jwt.secret",
        "broker.kind",
        "redis.pool_size",
        "redis.reconnect_max_secs",
        "redis.health_check_secs",
        "limits.max_message_bytes",
        "limits.max_subscriptions",
        "limits.send_queue",
        "limits.max_connections",
        "limits.requests_per_sec",
        "limits.request_burst",
        "acl.default",
    ];
    for err in [
        compile_text(text).unwrap_err(),
        load_text("every-problem", text, &[]).unwrap_err(),
    ] {
        let keys = issue_keys(&err);
        for key in expected {
            assert!(keys.contains(&key), "missing {key} in {err}");
        }
        for issue in &err.issues {
            assert!(!issue.reason.is_empty(), "{issue:?}");
        }
        // Display lists every issue on a line of its own, key first.
        let text = err.to_string();
        for key in expected {
            assert!(text.contains(&format!("\n  {key}: ")), "{key} in {text}");
        }
    }
}

#[test]
fn bad_values_name_the_value() {
    let cases = [
        (
            "[server]\nbind = \"localhost\"",
            "server.bind",
            "\"localhost\"",
        ),
        ("[server]\nbind = \"0.0.0.0:99999\"", "server.bind", "99999"),
        ("[broker]\nkind = \"kafka\"", "broker.kind", "\"kafka\""),
        (
            "[server]\nlog_format = \"xml\"",
            "server.log_format",
            "\"xml\"",
        ),
        (
            "[redis]\nurl = \"http://127.0.0.1:6379\"",
            "redis.url",
            "redis://",
        ),
        ("[redis]\nurl = \"not a url\"", "redis.url", "redis://"),
        (
            "[limits]\nmax_message_bytes = 100",
            "limits.max_message_bytes",
            "256",
        ),
    ];
    for (section, key, needle) in cases {
        let err = compile_text(&format!("{MINIMAL}{section}\n")).unwrap_err();
        assert_eq!(issue_keys(&err), [key], "{section}: {err}");
        let reason = &issue(&err, key).reason;
        assert!(reason.contains(needle), "{section}: {reason}");
    }
}

#[test]
fn accepted_redis_urls_and_brokers() {
    for section in [
        "[redis]\nurl = \"redis://127.0.0.1:6379/0\"",
        "[redis]\nurl = \"redis://:pw@[::1]:6379\"",
        // Memory needs no Redis, so its URL is not checked.
        "[broker]\nkind = \"memory\"\n[redis]\nurl = \"http://unused\"",
        "[limits]\nmax_message_bytes = 256",
    ] {
        compile_text(&format!("{MINIMAL}{section}\n"))
            .unwrap_or_else(|err| panic!("{section}: {err}"));
    }
}

#[test]
fn redis_cluster_needs_usable_seed_nodes() {
    let cluster = format!("{MINIMAL}[broker]\nkind = \"redis-cluster\"\n");
    let config = compile_text(&format!(
        "{cluster}[redis]\nnodes = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]\n"
    ))
    .unwrap();
    assert_eq!(config.broker, BrokerKind::RedisCluster);
    assert_eq!(config.redis.nodes.len(), 2);
    // The single-Redis URL is not used, so it is not checked.
    compile_text(&format!(
        "{cluster}[redis]\nurl = \"http://unused\"\nnodes = [\"rediss://:pw@a.example:7000\"]\n"
    ))
    .unwrap();

    for (nodes, says) in [
        ("[]", "at least one seed"),
        ("[\"http://10.0.0.1:7000\"]", "not a usable"),
        (
            "[\"redis://10.0.0.1:7000\", \"rediss://10.0.0.2:7000\"]",
            "mixes redis:// and rediss://",
        ),
    ] {
        let err = compile_text(&format!("{cluster}[redis]\nnodes = {nodes}\n")).unwrap_err();
        assert_eq!(issue_keys(&err), ["redis.nodes"], "{nodes}: {err}");
        assert!(err.to_string().contains(says), "{nodes}: {err}");
    }
    let err = compile_text(&format!(
        "{cluster}[redis]\nnodes = [\"redis://:secret@[bad\"]\n"
    ))
    .unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[test]
fn rediss_urls_are_accepted() {
    compile_text(&format!(
        "{MINIMAL}[redis]\nurl = \"rediss://user:pw@cache.example:6380/2\"\n"
    ))
    .unwrap();
}

#[test]
fn unknown_keys_are_named() {
    let cases = [
        ("[server]\nbogus = 1\n", "server.bogus"),
        ("bogus = 1\n", "bogus"),
        ("[servers]\nbind = \"0.0.0.0:1\"\n", "servers"),
        (
            "[auth.jwt]\nsecret = \"s\"\nsecrett = \"t\"\n",
            "auth.jwt.secrett",
        ),
        (
            "[[acl.rules]]\ntopics = [\"a\"]\neffect = \"allow\"\nbogus = 2\n",
            "acl.rules[0].bogus",
        ),
    ];
    for (text, key) in cases {
        let err = load_text("unknown-keys", text, &[]).unwrap_err();
        assert_eq!(issue_keys(&err), [key], "{text}: {err}");
        assert!(err.issues[0].reason.contains("unknown field"), "{err}");

        // Without the environment layer the key is in the message, with
        // the line it is on.
        let err = RawConfig::from_toml(text).unwrap_err();
        assert!(err.issues[0].reason.contains("unknown field"), "{err}");
        assert!(err.issues[0].reason.starts_with("line "), "{err}");
    }
}

#[test]
fn wrong_types_name_the_key() {
    let cases = [
        (
            "[server]\nidle_timeout_secs = \"x\"\n",
            "server.idle_timeout_secs",
        ),
        (
            "[limits]\nmax_subscriptions = -1\n",
            "limits.max_subscriptions",
        ),
        ("[server]\nallowed_origins = 7\n", "server.allowed_origins"),
        ("[server]\nconsole = \"maybe\"\n", "server.console"),
    ];
    for (section, key) in cases {
        let err = load_text("wrong-types", &format!("{MINIMAL}{section}"), &[]).unwrap_err();
        assert_eq!(issue_keys(&err), [key], "{section}: {err}");
    }
}

#[test]
fn toml_syntax_errors_name_the_file_and_line() {
    let text = "[server]\nbind = \"0.0.0.0:3000\"\nidle_timeout_secs = \n";
    let path = write_config("syntax", text);
    let err = load(&path, env(&[])).unwrap_err();
    assert_eq!(err.file.as_deref(), Some(&*path));
    assert_eq!(issue_keys(&err), ["(file)"]);
    let reason = &err.issues[0].reason;
    assert!(reason.starts_with("line 3, column "), "{reason}");
    assert!(!reason.contains('\n'), "one line: {reason:?}");
    let shown = err.to_string();
    assert!(shown.contains(&path.display().to_string()), "{shown}");

    let err = RawConfig::from_toml("[server]\n\nbind = [\"a\",\n").unwrap_err();
    assert_eq!(err.file, None);
    assert!(err.issues[0].reason.starts_with("line 3, column "), "{err}");

    // Columns count characters, not bytes.
    let err = RawConfig::from_toml("# é\n\"ключ\" = = 1\n").unwrap_err();
    assert!(
        err.issues[0].reason.starts_with("line 2, column 10:"),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_reported() {
    let path = std::env::temp_dir().join("topicgate-config-does-not-exist/config.toml");
    let err = load(&path, env(&[])).unwrap_err();
    assert_eq!(err.file.as_deref(), Some(path.as_path()));
    assert_eq!(issue_keys(&err), ["(file)"]);
    assert!(err.issues[0].reason.contains("cannot read"), "{err}");
}

// ---- ACL claim names keep their case ----

const CASED_CLAIMS: &str = r#"
[auth.jwt]
secret = "s"

[[acl.rules]]
topics = ["admin-*"]
claims = { Role = "admin", "Org.Team" = "Ops" }
effect = "allow"
"#;

#[test]
fn acl_claim_names_keep_their_case() {
    let loaded = load_text("claims-case", CASED_CLAIMS, &[]).unwrap();
    let parsed = compile_text(CASED_CLAIMS).unwrap();
    for config in [&loaded, &parsed] {
        let claims: &Map<String, Value> = &config.raw.acl.rules[0].claims;
        let mut names: Vec<&str> = claims.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["Org.Team", "Role"]);

        let admin = json!({"Role": "admin", "Org": {"Team": "Ops"}});
        assert!(allows(config, admin, "admin-room"));
        let lower = json!({"role": "admin", "org": {"team": "Ops"}});
        assert!(!allows(config, lower, "admin-room"));
    }
}

// ---- masking ----

#[test]
fn masked_toml_hides_every_secret() {
    let text = r#"
[auth.jwt]
secret = "jwt-secret-value"

[api]
key = "api-key-value"

[redis]
url = "redis://alice:url-password-value@cache.example:6379/0"
password = "redis-password-value"
nodes = ["redis://:node-password-value@a:7000", "redis://b:7001"]
"#;
    let raw = RawConfig::from_toml(text).unwrap();
    let masked = raw.to_masked_toml();
    for secret in [
        "jwt-secret-value",
        "api-key-value",
        "url-password-value",
        "redis-password-value",
        "node-password-value",
    ] {
        assert!(!masked.contains(secret), "{secret} in\n{masked}");
    }
    assert!(masked.contains("***"), "{masked}");
    // Everything else is still there, and it is still a config.
    let back = RawConfig::from_toml(&masked).unwrap();
    assert_eq!(back.auth.jwt.secret, "***");
    assert_eq!(back.api.key, "***");
    assert_eq!(back.redis.password, "***");
    assert_eq!(back.redis.url, "redis://alice:***@cache.example:6379/0");
    assert_eq!(back.redis.nodes, ["redis://:***@a:7000", "redis://b:7001"]);
    // The original is untouched.
    assert_eq!(raw.auth.jwt.secret, "jwt-secret-value");
}

#[test]
fn masked_toml_hides_secrets_from_the_environment() {
    let config = load_text(
        "mask-env",
        MINIMAL,
        &[
            ("TOPICGATE__AUTH__JWT__SECRET", "env-jwt-secret"),
            ("TOPICGATE__REDIS__URL", "redis://:env-url-pass@h:6379/0"),
        ],
    )
    .unwrap();
    let masked = config.raw.to_masked_toml();
    assert!(!masked.contains("env-jwt-secret"), "{masked}");
    assert!(!masked.contains("env-url-pass"), "{masked}");
}

#[test]
fn masked_toml_leaves_empty_secrets_empty() {
    let masked = RawConfig::from_toml("").unwrap().to_masked_toml();
    assert!(!masked.contains("***"), "{masked}");
}

#[test]
fn mask_url_password_cases() {
    let cases = [
        (
            "redis://user:pass@host:6379/0",
            "redis://user:***@host:6379/0",
        ),
        ("redis://:pass@host:6379", "redis://:***@host:6379"),
        ("rediss://default:p%40ss@host", "rediss://default:***@host"),
        // A password containing '@' is cut at the last one before the path.
        ("redis://u:p@ss@host/0", "redis://u:***@host/0"),
        // A userinfo without ':' may be a bare password.
        ("redis://token@host", "redis://***@host"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://127.0.0.1", "redis://127.0.0.1"),
        // An '@' after the authority is not userinfo.
        ("redis://host/0?name=a@b", "redis://host/0?name=a@b"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        (
            "unix:///run/redis.sock?db=1&pass=secret",
            "unix:///run/redis.sock?db=1&pass=***",
        ),
        (
            "redis+unix:///s.sock?user=u&password=secret",
            "redis+unix:///s.sock?user=u&password=***",
        ),
        ("not a url", "not a url"),
        ("", ""),
    ];
    for (url, expected) in cases {
        assert_eq!(mask_url_password(url), expected, "{url}");
    }
}

// ---- config path ----

#[test]
fn config_path_cli_beats_env_beats_default() {
    let cli = Path::new("/etc/topicgate/cli.toml");
    assert_eq!(
        resolve_path_from(Some(cli), Some("/env.toml".into())),
        PathBuf::from("/etc/topicgate/cli.toml")
    );
    assert_eq!(
        resolve_path_from(None, Some("/env.toml".into())),
        PathBuf::from("/env.toml")
    );
    assert_eq!(
        resolve_path_from(None, Some("".into())),
        PathBuf::from(DEFAULT_PATH)
    );
    assert_eq!(resolve_path_from(None, None), PathBuf::from(DEFAULT_PATH));
    assert_eq!(resolve_path(Some(cli)), cli);
}

#[test]
fn relative_key_files_resolve_against_the_config_directory() {
    let path = write_config("secret-file", "[auth.jwt]\nsecret_file = \"jwt.secret\"\n");
    std::fs::write(path.with_file_name("jwt.secret"), "file-secret\n").unwrap();
    load(&path, env(&[])).unwrap();

    std::fs::remove_file(path.with_file_name("jwt.secret")).unwrap();
    let err = load(&path, env(&[])).unwrap_err();
    assert!(
        issue(&err, "auth.jwt.secret_file")
            .reason
            .contains("jwt.secret")
    );
}
