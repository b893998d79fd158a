//! What a config check found wrong: each problem with the key it concerns,
//! and the report of all of them.
//!
//! A leaf below `config`, `acl` and `auth`: each of those validates its own
//! section and returns its problems as [`Issue`]s, and `config` gathers them
//! into one [`ConfigError`], so every problem is reported at once. Key paths
//! are the dotted names of docs/CONFIG.md (`auth.jwt.secret`,
//! `acl.rules[2].topics[0]`).

use std::fmt;
use std::path::PathBuf;

/// One problem found in a config, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted key path, e.g. `auth.jwt.secret`; `(file)` for whole-file errors.
    pub key: String,
    /// Why the value is not acceptable.
    pub reason: String,
}

impl Issue {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Checks a duration key (in seconds) against its documented bounds
/// (docs/CONFIG.md): a value beyond them is refused by name rather than
/// carried into timer arithmetic that could overflow.
pub fn check_secs(issues: &mut Vec<Issue>, key: &str, value: u64, min: u64, max: u64) {
    if value < min {
        issues.push(Issue::new(key, format!("must be at least {min}")));
    } else if value > max {
        issues.push(Issue::new(
            key,
            format!("{value} is too large: at most {max} seconds"),
        ));
    }
}

/// Every problem of a rejected config, reported at once.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The file the config was read from, when there was one.
    pub file: Option<PathBuf>,
    /// All problems found; never empty.
    pub issues: Vec<Issue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "invalid config {}:", file.display())?,
            None => write!(f, "invalid config:")?,
        }
        for issue in &self.issues {
            write!(f, "\n  {}: {}", issue.key, issue.reason)?;
        }
        Ok(())
    }
}
