//! Reading a config: where the file is, the file itself and the
//! `TOPICGATE__…` environment overrides on top, every problem reported with
//! its key.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{CONFIG_ENV, Config, ConfigError, DEFAULT_PATH, ENV_PREFIX, Issue, RawConfig};

/// toml's message with the line and column it points at. (toml's `Display`
/// adds a multi-line excerpt of the file, which does not fit one issue line.)
pub(super) fn toml_issue(err: &toml::de::Error, text: &str) -> Issue {
    let reason = match err.span().and_then(|span| text.get(..span.start)) {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {}", err.message().trim_end())
        }
        None => err.message().trim_end().to_string(),
    };
    Issue::new("(file)", reason)
}

/// Where the config comes from: `--config` beats `TOPICGATE_CONFIG` beats the default.
pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
    resolve_path_from(cli, std::env::var_os(CONFIG_ENV))
}

/// [`resolve_path`] with the value of `TOPICGATE_CONFIG` given, for tests.
pub(super) fn resolve_path_from(cli: Option<&Path>, from_env: Option<OsString>) -> PathBuf {
    if let Some(path) = cli {
        return path.to_path_buf();
    }
    match from_env {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// Reads `path` (which must exist) with `TOPICGATE__…` overrides from `env`
/// (the process environment when `None`), then compiles it. Problems in the
/// environment and in the file are reported together.
pub fn load(path: &Path, env: Option<HashMap<String, String>>) -> Result<Config, ConfigError> {
    let with_file = |issues: Vec<Issue>| ConfigError {
        file: Some(path.to_path_buf()),
        issues,
    };
    let (raw, mut issues) = load_raw(path, env);
    let Some(raw) = raw else {
        return Err(with_file(issues));
    };
    let base_dir = path.parent().unwrap_or(Path::new("."));
    match raw.compile(base_dir) {
        Ok(config) if issues.is_empty() => Ok(config),
        Ok(_) => Err(with_file(issues)),
        Err(err) => {
            issues.extend(err.issues);
            Err(with_file(issues))
        }
    }
}

/// The file with the environment's overrides on top, and the problems found
/// on the way; `None` when no config could be deserialized at all.
fn load_raw(path: &Path, env: Option<HashMap<String, String>>) -> (Option<RawConfig>, Vec<Issue>) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            let issue = Issue::new("(file)", format!("cannot read {}: {err}", path.display()));
            return (None, vec![issue]);
        }
    };
    // A non-atomic save truncates before it writes; read in between, the
    // file would mean "all defaults" (with the secret from the environment,
    // a valid config that denies every topic). Nobody means that.
    if text.trim().is_empty() {
        let issue = Issue::new(
            "(file)",
            format!(
                "{} is empty; write at least one key (an empty file is never taken to mean all defaults)",
                path.display()
            ),
        );
        return (None, vec![issue]);
    }
    // Parse once with toml itself: its errors carry line and column.
    if let Err(err) = toml::from_str::<toml::Table>(&text) {
        return (None, vec![toml_issue(&err, &text)]);
    }
    let (overrides, mut issues) = env_overrides(env);
    // The config crate names the key path of a type error, which a plain
    // toml deserialization does not.
    let builder = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml));
    let raw = overrides
        .into_iter()
        .try_fold(builder, |builder, (key, value)| {
            builder.set_override(key, value)
        })
        .and_then(|builder| builder.build())
        .and_then(|settings| settings.try_deserialize::<RawConfig>());
    match raw {
        Ok(raw) => (Some(raw), issues),
        Err(err) => {
            issues.push(config_issue(&err));
            (None, issues)
        }
    }
}

/// `TOPICGATE__A__B=v` as an override of key `a.b`, typed like that key's
/// default: a string stays text, a number or boolean is parsed, a list is
/// split on commas. (The config crate's `Environment` guesses the type from
/// the text instead, which turned a secret `007` into `7`, `1e5` into
/// `100000` and `TRUE` into `true`, and a one-entry list `7` into a number.)
fn env_overrides(
    env: Option<HashMap<String, String>>,
) -> (Vec<(String, config::Value)>, Vec<Issue>) {
    let vars: Vec<(String, Option<String>)> = match env {
        Some(env) => env
            .into_iter()
            .map(|(name, value)| (name, Some(value)))
            .collect(),
        None => std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok())))
            .collect(),
    };
    let defaults = match toml::Value::try_from(RawConfig::default()) {
        Ok(defaults) => defaults,
        Err(err) => unreachable!("built-in defaults must serialize: {err}"),
    };
    let mut overrides = Vec::new();
    let mut issues = Vec::new();
    for (name, value) in vars {
        let Some(rest) = name
            .get(..ENV_PREFIX.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
            .and_then(|_| name.get(ENV_PREFIX.len()..))
        else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let key = path.join(".");
        let default = path
            .iter()
            .try_fold(&defaults, |table, segment| table.get(segment.as_str()));
        let Some(value) = value else {
            issues.push(Issue::new(key, format!("{name} is not valid UTF-8")));
            continue;
        };
        // Values of unknown keys are not echoed: they may be secrets.
        let typed = match default {
            Some(toml::Value::String(_)) => Ok(config::Value::from(value)),
            Some(toml::Value::Integer(_)) => value
                .trim()
                .parse::<u64>()
                .map(config::Value::from)
                .map_err(|_| format!("{name}={value:?} is not a whole number")),
            Some(toml::Value::Boolean(_)) => match value.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(config::Value::from(true)),
                "false" => Ok(config::Value::from(false)),
                _ => Err(format!("{name}={value:?} is not true or false")),
            },
            Some(toml::Value::Array(_)) => {
                let items: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(String::from)
                    .collect();
                Ok(config::Value::from(items))
            }
            _ => Err(format!("{name} does not name a config key")),
        };
        match typed {
            Ok(typed) => overrides.push((key, typed)),
            Err(reason) => issues.push(Issue::new(key, reason)),
        }
    }
    // A map has no order; reports and overrides should not depend on it.
    overrides.sort_by(|a, b| a.0.cmp(&b.0));
    issues.sort_by(|a, b| a.key.cmp(&b.key));
    (overrides, issues)
}

/// Turns the config crate's error into a key + reason where it names one.
fn config_issue(err: &config::ConfigError) -> Issue {
    let text = err.to_string();
    // "<reason> for key `<key>`[ in <origin>]"
    let (key, reason) = match text
        .rsplit_once(" for key `")
        .and_then(|(reason, rest)| Some((rest.split_once('`')?.0, reason)))
    {
        Some((key, reason)) => (Some(key.to_string()), reason.to_string()),
        None => (None, text),
    };
    // serde names an unknown key only in its message: move it into the path.
    let unknown = reason
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field.to_string());
    match (key, unknown) {
        (Some(key), Some(field)) => Issue::new(format!("{key}.{field}"), reason),
        (None, Some(field)) => Issue::new(field, reason),
        (Some(key), None) => Issue::new(key, reason),
        (None, None) => Issue::new("(file)", reason),
    }
}
