//! The JavaScript/TypeScript client's test suite (`clients/js`, run with
//! `npm test`): its unit tests, its tests against this crate's `topicgate`
//! binary and a real `redis-server`, and the browser example in headless
//! Chromium. `npm test` builds the package first, so the browser example
//! loads the bundle this run produced.
//!
//! Needs Node.js 20 or later with npm. Installs the client's development
//! dependencies from `clients/js/package-lock.json` (`npm ci`) when
//! `clients/js/node_modules` is missing.

use std::path::Path;
use std::process::{Command, Output};

fn npm(dir: &Path, args: &[&str]) -> Output {
    Command::new("npm")
        .args(args)
        .current_dir(dir)
        .env("TOPICGATE_BIN", env!("CARGO_BIN_EXE_topicgate"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run npm ({err}): the JavaScript client's tests need Node.js 20+ \
                 and npm (e.g. apt-get install nodejs npm)"
            )
        })
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn javascript_client_suite_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    if !dir.join("node_modules").exists() {
        assert_success("npm ci", &npm(&dir, &["ci", "--no-audit", "--no-fund"]));
    }
    let output = npm(&dir, &["test"]);
    assert_success("npm test", &output);
    // The suite ran tests, and none was skipped or left to do.
    let report = String::from_utf8_lossy(&output.stdout);
    let count = |label: &str| {
        report
            .lines()
            .find_map(|line| line.trim().strip_prefix(label)?.trim().parse::<u32>().ok())
    };
    assert!(
        count("ℹ pass").is_some_and(|n| n > 0),
        "no test passed:\n{report}"
    );
    assert_eq!(count("ℹ fail"), Some(0), "{report}");
    assert_eq!(count("ℹ skipped"), Some(0), "{report}");
    assert_eq!(count("ℹ todo"), Some(0), "{report}");
}
