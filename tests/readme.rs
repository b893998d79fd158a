//! README.md as executable truth: every shell block it shows is run as
//! written, top to bottom, against a real gateway and a real
//! `redis-server`, and every output it shows is compared with what the
//! commands print. A newcomer's first five minutes are what this guards.
//!
//! How README is read (its blocks are written for this):
//! - Every fenced block must say what it is; `sh` blocks are commands,
//!   `text` blocks are output, anything else (`toml`, `json`…) is
//!   illustration and not run.
//! - `sh` blocks run in file order in one shell session, as typed at a bash
//!   prompt in the repository root with `set -euo pipefail`: a failing
//!   command fails the test, and variables a block sets (`TOKEN=$(…)`) stay
//!   set for the blocks after it.
//! - A command whose comment says `keeps running` (the gateway, the
//!   subscriber example) is started in the background; the README goes on
//!   once it printed a line containing `listening`. It is stopped, as with
//!   Ctrl-C, at the next `## ` heading.
//! - A `text` block is what a terminal shows (stdout and stderr) for the
//!   last command of the `sh` block before it. `text from=WORD` is, instead,
//!   what the running background command containing WORD prints next.
//!   `…` in an output line stands for any text (session ids, tokens).
//!
//! What is changed, and only this, so the commands stay README's own:
//! - README's fixed ports become free ones: in command and output text,
//!   `127.0.0.1:3000` becomes the gateway's port of the current section, and
//!   `redis-cli` becomes `redis-cli -p PORT` of the test's Redis. The
//!   gateway gets the same addresses from `TOPICGATE__SERVER__BIND`,
//!   `TOPICGATE__REDIS__URL` and `TOPICGATE_URL` (the default `--url` of
//!   `topicgate publish`), so the machine's Redis on 6379 is never used.
//! - Two things are not run: the line `cargo test --workspace` (it is this test's own
//!   command) and the `## Docker` section (it needs a Docker daemon and
//!   builds an image; `tests/deploy.rs` checks the files it uses).
//!
//! The first run builds the release profile (`cargo build --release`, as
//! README says), which takes minutes on a small machine.

use topicgate_test_support as common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::RedisServer;

/// README's own addresses, replaced by the test's.
const README_GATEWAY: &str = "127.0.0.1:3000";
/// Upper bound for any one step; a cold release build is the slowest.
/// It only ends a hung run: no assertion depends on timing.
const STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// What a background command prints once it serves.
const READY: &str = "listening";
/// Sections whose commands are not run (see the module doc).
const SKIPPED_SECTIONS: &[&str] = &["Docker"];
/// Lines not run (see the module doc).
const SKIPPED_LINES: &[&str] = &["cargo test --workspace"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One fenced block of README, with the `## ` section it is in.
#[derive(Debug)]
struct Block {
    section: String,
    info: String,
    /// 1-based line of the opening fence, for messages.
    line: usize,
    body: Vec<String>,
}

/// Splits README into its fenced blocks; an indented fence (inside a list
/// item) has its indentation removed from the body.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut open: Option<(usize, Block)> = None;
    for (n, raw) in markdown.lines().enumerate() {
        let trimmed = raw.trim_start();
        let indent = raw.len() - trimmed.len();
        if let Some((fence_indent, mut block)) = open.take() {
            if trimmed.starts_with("```") {
                blocks.push(block);
            } else {
                let cut = raw
                    .char_indices()
                    .take_while(|(i, c)| *i < fence_indent && c.is_whitespace())
                    .count();
                block.body.push(raw[cut..].to_string());
                open = Some((fence_indent, block));
            }
            continue;
        }
        if let Some(heading) = raw.strip_prefix("## ") {
            section = heading.trim().to_string();
        } else if let Some(info) = trimmed.strip_prefix("```") {
            open = Some((
                indent,
                Block {
                    section: section.clone(),
                    info: info.trim().to_string(),
                    line: n + 1,
                    body: Vec::new(),
                },
            ));
        }
    }
    assert!(open.is_none(), "README ends inside a fenced block");
    blocks
}

/// The commands of an `sh` block: `\`-continued lines joined, comments and
/// blank lines kept out.
fn commands(block: &Block) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in &block.body {
        let line = line.trim_end();
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(
        current.is_empty(),
        "README line {}: a continued command never ends",
        block.line
    );
    commands
}

/// The comment of a command line (after an unquoted `#`), if any.
fn comment(command: &str) -> Option<&str> {
    let mut quote = None;
    for (i, c) in command.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if i == 0 || command[..i].ends_with(char::is_whitespace) => {
                return Some(&command[i + 1..]);
            }
            _ => {}
        }
    }
    None
}

/// Whether `line` matches `pattern`, where `…` stands for any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split('…');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

fn assert_output(expected: &[String], actual: &[String], what: &str) {
    let same = expected.len() == actual.len()
        && expected.iter().zip(actual).all(|(e, a)| line_matches(e, a));
    assert!(
        same,
        "{what}: README shows\n{}\nbut the terminal shows\n{}",
        expected.join("\n"),
        actual.join("\n")
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A command left running, in a process group of its own so that Ctrl-C
/// (SIGINT to the group) reaches cargo and the program it runs alike.
struct Background {
    command: String,
    /// Taken by [`stop`](Self::stop); what is left is killed on drop.
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    /// Everything printed so far.
    seen: Vec<String>,
    /// How many of `seen` README's output blocks have accounted for.
    shown: usize,
}

impl Background {
    /// Waits for line `n` (0-based) of what the command printed.
    fn line(&mut self, n: usize) -> &str {
        while self.seen.len() <= n {
            match self.lines.recv_timeout(STEP_TIMEOUT) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "`{}` ended or went silent; it printed:\n{}",
                    self.command,
                    self.seen.join("\n")
                ),
            }
        }
        &self.seen[n]
    }

    /// The next line README has not shown yet.
    fn next_line(&mut self) -> String {
        let line = self.line(self.shown).to_string();
        self.shown += 1;
        line
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            // The group id is the child's pid (process_group(0)).
            let _ = Command::new("kill")
                .args([signal, "--", &format!("-{}", child.id())])
                .status();
        }
    }

    /// Ctrl-C, then waits for the command to end.
    fn stop(mut self) {
        self.signal("-INT");
        let Some(mut child) = self.child.take() else {
            return;
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx.recv_timeout(STEP_TIMEOUT);
        assert!(
            matches!(status, Ok(Ok(_))),
            "`{}` did not stop on Ctrl-C",
            self.command
        );
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.signal("-KILL");
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// README's shell session: its environment, saved between blocks.
struct Shell {
    state: PathBuf,
    env: HashMap<String, String>,
    /// The current section's addresses; set after the saved state, which
    /// may hold an earlier section's.
    overrides: Vec<(&'static str, String)>,
}

impl Shell {
    /// The script prefix: restore what earlier blocks exported, fail on
    /// the first failing command, and export every assignment.
    fn prelude(&self) -> String {
        let mut prelude = format!(
            "set -euo pipefail\nsource {state}\nset -a\ntrap 'export -p > {state}' EXIT\nexec 2>&1\n",
            state = self.state.display()
        );
        for (key, value) in &self.overrides {
            prelude.push_str(&format!("export {key}='{value}'\n"));
        }
        prelude
    }

    fn command(&self, script: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(script)
            .current_dir(root())
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null());
        command
    }

    /// Runs `commands` to completion; returns what the terminal showed.
    fn run(&self, commands: &[String], line: usize) -> Vec<String> {
        let script = format!("{}{}\n", self.prelude(), commands.join("\n"));
        let mut child = self
            .command(&script)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run bash");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let lines: Vec<String> = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect();
            let _ = tx.send(lines);
        });
        let printed = rx.recv_timeout(STEP_TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "README line {line}: `{}` did not finish",
                commands.join("; ")
            )
        });
        let status = child.wait().expect("wait for bash");
        assert!(
            status.success(),
            "README line {line}: `{}` failed ({status}):\n{}",
            commands.join("; "),
            printed.join("\n")
        );
        printed
    }

    /// Starts a `keeps running` command and waits until it serves.
    fn start(&self, command: &str, line: usize) -> Background {
        let script = format!("{}exec {command}\n", self.prelude());
        let mut child = self
            .command(&script)
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("run bash");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut background = Background {
            command: format!("{command} (README line {line})"),
            child: Some(child),
            lines,
            seen: Vec::new(),
            shown: 0,
        };
        let mut n = 0;
        while !background.line(n).contains(READY) {
            n += 1;
        }
        background
    }
}

/// Variables `cargo test` sets for the test process.
fn set_by_cargo_test(key: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_TARGET_TMPDIR",
        "CARGO_PRIMARY_PACKAGE",
        "__CARGO",
    ];
    key == "CARGO" || key == "OUT_DIR" || PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Ports and rewriting for one `## ` section.
struct Section {
    gateway: String,
    redis_port: u16,
}

impl Section {
    fn rewrite(&self, text: &str) -> String {
        text.replace(README_GATEWAY, &self.gateway)
            .replace("redis-cli ", &format!("redis-cli -p {} ", self.redis_port))
    }
}

#[test]
fn every_readme_command_works_as_written() {
    let markdown = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let blocks = blocks(&markdown);
    let redis = RedisServer::start();
    let scratch = tempfile::Builder::new()
        .prefix("topicgate-readme-")
        .tempdir()
        .expect("temp dir");
    let state = scratch.path().join("shell-state");
    std::fs::write(&state, "").expect("write the shell state");

    // The user's environment, without the test's own settings: cargo gives
    // a test CARGO_PKG_NAME and the like, which a shell does not have and
    // which would make a nested cargo rebuild crates whose build scripts
    // watch them.
    let mut env: HashMap<String, String> = std::env::vars()
        .filter(|(key, _)| !key.starts_with("TOPICGATE") && !set_by_cargo_test(key))
        .collect();
    // `cargo` itself must be found, as in the user's shell.
    if let Some(dir) =
        std::env::var_os("CARGO").and_then(|c| Path::new(&c).parent().map(Path::to_path_buf))
    {
        let path = env.get("PATH").cloned().unwrap_or_default();
        env.insert("PATH".into(), format!("{}:{path}", dir.display()));
    }
    let mut shell = Shell {
        state,
        env,
        overrides: Vec::new(),
    };

    let mut section_name = None;
    let mut section: Option<Section> = None;
    let mut running: Vec<Background> = Vec::new();
    let mut last_output: Option<(Vec<String>, usize)> = None;
    let (mut ran, mut compared) = (0, 0);

    for block in &blocks {
        assert!(
            !block.info.is_empty(),
            "README line {}: say what the block is (```sh, ```text, ```toml…)",
            block.line
        );
        if SKIPPED_SECTIONS.contains(&block.section.as_str()) {
            continue;
        }
        if section_name.as_ref() != Some(&block.section) {
            for background in running.drain(..) {
                background.stop();
            }
            let gateway = format!("127.0.0.1:{}", free_port());
            shell.overrides = vec![
                ("TOPICGATE__SERVER__BIND", gateway.clone()),
                ("TOPICGATE__REDIS__URL", redis.url()),
                ("TOPICGATE_URL", format!("http://{gateway}")),
            ];
            section = Some(Section {
                gateway,
                redis_port: redis.port,
            });
            section_name = Some(block.section.clone());
            last_output = None;
        }
        let section = section.as_ref().expect("a section");
        let mut words = block.info.split_whitespace();
        match words.next() {
            Some("sh") => {
                let mut pending: Vec<String> = Vec::new();
                let mut output = Vec::new();
                let run_pending = |pending: &mut Vec<String>| {
                    let printed = shell.run(pending, block.line);
                    pending.clear();
                    printed
                };
                for command in commands(block) {
                    if SKIPPED_LINES.contains(&command.split('#').next().unwrap_or_default().trim())
                    {
                        continue;
                    }
                    let command = section.rewrite(&command);
                    ran += 1;
                    if comment(&command).is_some_and(|c| c.contains("keeps running")) {
                        if !pending.is_empty() {
                            run_pending(&mut pending);
                        }
                        running.push(shell.start(&command, block.line));
                        output.clear();
                    } else {
                        pending.push(command);
                    }
                }
                if !pending.is_empty() {
                    // Output blocks show the last command's lines: run it alone.
                    let last = pending.pop().unwrap_or_default();
                    if !pending.is_empty() {
                        run_pending(&mut pending);
                    }
                    output = shell.run(&[last], block.line);
                }
                last_output = Some((output, block.line));
            }
            Some("text") => {
                let expected: Vec<String> = block.body.iter().map(|l| section.rewrite(l)).collect();
                compared += 1;
                match words.next().and_then(|w| w.strip_prefix("from=")) {
                    Some(word) => {
                        let background = running
                            .iter_mut()
                            .rev()
                            .find(|b| b.command.contains(word))
                            .unwrap_or_else(|| {
                                panic!(
                                    "README line {}: no running command contains {word:?}",
                                    block.line
                                )
                            });
                        let actual: Vec<String> =
                            expected.iter().map(|_| background.next_line()).collect();
                        assert_output(
                            &expected,
                            &actual,
                            &format!("README line {}, from `{}`", block.line, background.command),
                        );
                    }
                    None => {
                        let (actual, line) = last_output.take().unwrap_or_else(|| {
                            panic!("README line {}: output of which command?", block.line)
                        });
                        assert_output(
                            &expected,
                            &actual,
                            &format!(
                                "README line {}, output of the block at line {line}",
                                block.line
                            ),
                        );
                    }
                }
            }
            Some("bash" | "shell" | "console" | "zsh") => panic!(
                "README line {}: write shell commands as ```sh so that this test runs them",
                block.line
            ),
            _ => {}
        }
    }
    for background in running.drain(..) {
        background.stop();
    }
    // README shows a dozen commands and their output; a parser that found
    // none would pass silently.
    assert!(ran >= 12, "only {ran} commands found in README");
    assert!(compared >= 6, "only {compared} outputs found in README");
}

/// Relative links of README and docs/ name files (and headings) that exist.
#[test]
fn readme_and_docs_link_only_to_what_exists() {
    let mut files = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/") {
        let path = entry.expect("docs entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read markdown");
        for (_, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let linked = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("a parent dir").join(path)
            };
            if !linked.exists() {
                broken.push(format!("{}: {target}", file.display()));
            } else if !anchor.is_empty() && linked.extension().is_some_and(|e| e == "md") {
                let heading_text = std::fs::read_to_string(&linked).expect("read linked file");
                if !heading_text
                    .lines()
                    .any(|l| slug(l).as_deref() == Some(anchor))
                {
                    broken.push(format!("{}: {target} (no such heading)", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// `[text](target)` links of a markdown text, outside code spans.
fn links(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(open) = rest.find("](") {
            let after = &rest[open + 2..];
            let Some(close) = after.find(')') else { break };
            let label_start = rest[..open].rfind('[').unwrap_or(0);
            let in_code = rest[..open].matches('`').count() % 2 == 1;
            if !in_code {
                found.push((
                    rest[label_start..open].to_string(),
                    after[..close].to_string(),
                ));
            }
            rest = &after[close..];
        }
    }
    found
}

/// GitHub's anchor of a heading line: lowercase, spaces to `-`,
/// punctuation other than `-` and `_` dropped.
fn slug(line: &str) -> Option<String> {
    let heading = line.trim_start_matches('#');
    if heading.len() == line.len() || !heading.starts_with(' ') {
        return None;
    }
    Some(
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect(),
    )
}

#[test]
fn output_patterns_match_as_documented() {
    assert!(line_matches("a…c", "abbbc"));
    assert!(line_matches(
        r#"{"session":"…"}"#,
        r#"{"session":"0b8e-1"}"#
    ));
    assert!(!line_matches("a…c", "abbbd"));
    assert!(!line_matches("abc", "abcd"));
    assert!(line_matches("…", "anything"));
    assert_eq!(comment("run # keeps running"), Some(" keeps running"));
    assert_eq!(comment("echo '# not a comment'"), None);
    assert_eq!(comment("a#b"), None);
}
