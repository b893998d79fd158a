//! docs/CONFIG.md against the code: the page documents exactly the keys
//! `RawConfig::default()` has, with the same defaults and the environment
//! variable that really overrides each, so neither can drift from the other.

use std::collections::{BTreeMap, BTreeSet};

use topicgate::RawConfig;

/// `acl.rules` is a list of tables: one key, not one per field.
const WHOLE: &str = "acl.rules";
const RELOADS: [&str; 3] = ["live", "new connections", "restart"];
/// docs/CONFIG.md: `TOPICGATE__SECTION__KEY`.
const ENV_PREFIX: &str = "TOPICGATE__";

/// The built-in defaults as dotted keys, through their TOML text.
fn defaults() -> BTreeMap<String, toml::Value> {
    let text = toml::to_string(&RawConfig::default()).expect("defaults serialize");
    let table: toml::Table = toml::from_str(&text).expect("defaults parse back");
    let mut out = BTreeMap::new();
    flatten("", &table, &mut out);
    out
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            toml::Value::Table(inner) if key != WHOLE => flatten(&key, inner, out),
            _ => {
                out.insert(key, value.clone());
            }
        }
    }
}

/// One row of a key table: `| key | default | environment | reload | meaning |`.
struct Row {
    default: String,
    env: String,
    reload: String,
    meaning: String,
}

fn documented() -> BTreeMap<String, Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md");
    let text = std::fs::read_to_string(path).expect("docs/CONFIG.md");
    let mut rows = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let [key, default, env, reload, meaning] = cells[..] else {
            panic!("not a five-column row: {line}");
        };
        let unquote = |cell: &str| cell.trim_matches('`').to_string();
        let row = Row {
            default: unquote(default),
            env: unquote(env),
            reload: reload.to_string(),
            meaning: meaning.to_string(),
        };
        assert!(
            rows.insert(unquote(key), row).is_none(),
            "{key} is documented twice"
        );
    }
    rows
}

#[test]
fn config_doc_lists_exactly_the_keys_of_the_defaults() {
    let defaults: BTreeSet<String> = defaults().into_keys().collect();
    let documented: BTreeSet<String> = documented().into_keys().collect();
    let missing: Vec<_> = defaults.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&defaults).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/CONFIG.md is out of date: missing {missing:?}, not config keys {extra:?}"
    );
}

#[test]
fn config_doc_defaults_are_the_built_in_defaults() {
    let documented = documented();
    for (key, value) in defaults() {
        let Some(row) = documented.get(&key) else {
            continue; // reported by the test above
        };
        let parsed: toml::Table = toml::from_str(&format!("v = {}", row.default))
            .unwrap_or_else(|err| panic!("{key}: default `{}` is not TOML: {err}", row.default));
        assert_eq!(parsed["v"], value, "{key}: documented default");
    }
}

#[test]
fn config_doc_names_each_environment_variable_and_reload_behaviour() {
    let mut restart = BTreeSet::new();
    for (key, row) in documented() {
        if key == WHOLE {
            assert_eq!(row.env, "—", "{key} cannot come from the environment");
        } else {
            let expected = format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase());
            assert_eq!(row.env, expected, "{key}: environment variable");
        }
        assert!(
            RELOADS.contains(&row.reload.as_str()),
            "{key}: reload `{}` is not one of {RELOADS:?}",
            row.reload
        );
        if row.reload == "restart" {
            restart.insert(key.clone());
        }
        assert!(!row.meaning.is_empty(), "{key}: meaning");
    }
    // The listener is bound and the broker and logger built once at start;
    // everything else is read from the live config.
    assert_eq!(
        restart,
        BTreeSet::from(["broker.kind", "server.bind", "server.log_format"].map(String::from))
    );
}

/// The variable names above are the ones the loader really reads.
#[test]
fn a_documented_environment_variable_overrides_its_key() {
    let tmp = tempfile::Builder::new()
        .prefix("topicgate-config-doc-")
        .tempdir()
        .unwrap();
    let file = tmp.path().join("config.toml");
    std::fs::write(&file, "[auth.jwt]\nsecret = \"s\"\n").unwrap();
    let env = std::collections::HashMap::from([
        ("TOPICGATE__LIMITS__SEND_QUEUE".to_string(), "7".to_string()),
        (
            "TOPICGATE__SERVER__ALLOWED_ORIGINS".to_string(),
            "https://a.example,https://b.example".to_string(),
        ),
    ]);
    let config = topicgate::load_config(&file, Some(env));
    let config = config.unwrap();
    assert_eq!(config.limits.send_queue, 7);
    assert_eq!(
        config.server.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
}
