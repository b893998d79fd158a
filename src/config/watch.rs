//! Hot reload (docs/CONFIG.md, "Reload"): watch, settle, reload, swap.
//!
//! The watch is on the file's *directory*, not the file: an editor's atomic
//! save renames a new file over the old one and a Kubernetes ConfigMap
//! update swaps a `..data` symlink, and a watch on the file itself dies with
//! the first of either. Events are debounced (writes settle for 200 ms);
//! then the file is re-read by its path and applied only when its content
//! changed, whatever the events named. A reload goes through the same loader
//! as start-up (environment overrides included) and is swapped in whole
//! through the `watch` channel, so a request sees the old config or the new
//! one, never a mix. An invalid file is rejected whole; the running config
//! stays. SIGHUP forces a reload.
//!
//! Key material is live too: the files `auth.jwt.secret_file` and
//! `auth.jwt.public_key_file` name are part of what is hashed, and their
//! directories are watched the same way, so a rotated key reloads the
//! config like an edit of the file would.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{Config, load};
use crate::metrics::Metrics;

/// How long writes must settle before the file is re-read.
pub const SETTLE: Duration = Duration::from_millis(200);

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file is byte-for-byte what was last seen.
    Unchanged,
    /// A new config is live.
    Applied,
    /// The file is invalid; the running config stays. Holds the error text.
    Rejected(String),
}

/// Reloads one config file into a gateway's config channel.
pub struct Reloader {
    path: PathBuf,
    /// Environment overrides; `None` reads the process environment.
    env: Option<HashMap<String, String>>,
    config: watch::Sender<Arc<Config>>,
    metrics: Arc<Metrics>,
    /// Hash of the content last read (the config file and the key files
    /// it names), valid or not: a change is a new hash.
    last_seen: u64,
    /// Every attempt's outcome with a sequence number, for tests and logs.
    outcomes: watch::Sender<(u64, Outcome)>,
}

impl Reloader {
    /// `config` must already hold the config loaded from `path`.
    pub fn new(
        path: PathBuf,
        env: Option<HashMap<String, String>>,
        config: watch::Sender<Arc<Config>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut reloader = Self {
            path,
            env,
            config,
            metrics,
            last_seen: 0,
            outcomes: watch::Sender::new((0, Outcome::Unchanged)),
        };
        reloader.last_seen = content_hash(&reloader.watched_files());
        reloader
    }

    /// The files a reload reads: the config file, and the key files the
    /// running config names (resolved as the loader resolves them).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        let base = self.path.parent().unwrap_or(Path::new("."));
        let config = self.config.borrow();
        let jwt = &config.raw.auth.jwt;
        for name in [&jwt.secret_file, &jwt.public_key_file] {
            if !name.is_empty() {
                files.push(base.join(name));
            }
        }
        files
    }

    /// Outcomes of reload attempts as they happen.
    pub fn outcomes(&self) -> watch::Receiver<(u64, Outcome)> {
        self.outcomes.subscribe()
    }

    /// Re-reads the file; applies it when its content changed, or always
    /// when `force` (SIGHUP).
    pub fn reload(&mut self, force: bool) -> Outcome {
        let hash = content_hash(&self.watched_files());
        if !force && hash == self.last_seen {
            return Outcome::Unchanged;
        }
        self.last_seen = hash;
        let outcome = match load(&self.path, self.env.clone()) {
            Ok(config) => {
                self.warn_restart_only(&config);
                for warning in config.warnings() {
                    tracing::warn!(key = %warning.key, "{}", warning.reason);
                }
                if config.auth.mode == crate::auth::Mode::Bypass {
                    tracing::warn!(
                        "auth.mode = \"bypass\": any client may authorize; never use this in production"
                    );
                }
                self.config.send_replace(Arc::new(config));
                // The new config may name other key files.
                self.last_seen = content_hash(&self.watched_files());
                self.metrics.config_reloads.inc();
                tracing::info!(file = %self.path.display(), "config reloaded");
                Outcome::Applied
            }
            Err(err) => {
                self.metrics.config_reload_failures.inc();
                // One line: "invalid config FILE: key: why; key: why".
                let full = err.to_string();
                let mut lines = full.lines().map(str::trim);
                let head = lines.next().unwrap_or_default();
                let text = format!("{head} {}", lines.collect::<Vec<_>>().join("; "));
                tracing::error!(error = %text, "config reload rejected; the running config stays");
                Outcome::Rejected(text)
            }
        };
        self.outcomes
            .send_modify(|(seq, last)| (*seq, *last) = (*seq + 1, outcome.clone()));
        outcome
    }

    fn warn_restart_only(&self, new: &Config) {
        let old = self.config.borrow();
        if old.server.bind != new.server.bind {
            tracing::warn!(
                running = %old.server.bind,
                configured = %new.server.bind,
                "server.bind changed: it applies after a restart"
            );
        }
        if old.broker != new.broker {
            tracing::warn!(
                running = ?old.broker,
                configured = ?new.broker,
                "broker.kind changed: it applies after a restart"
            );
        }
    }
}

/// One hash over the content of `files`; an unreadable file counts as
/// absent, so its coming back is a change too.
fn content_hash(files: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(file).ok().hash(&mut hasher);
    }
    hasher.finish()
}

/// The directory a file is watched through.
fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A running watcher; dropping it stops watching (the task owns the
/// notify thread).
pub struct Watcher {
    task: JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches `reloader`'s file (through its directory) and SIGHUP.
pub fn spawn(mut reloader: Reloader) -> Result<Watcher, notify::Error> {
    let dir = parent_dir(&reloader.path);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut debouncer = new_debouncer(SETTLE, None, move |result: DebounceEventResult| {
        match result {
            // Which file an event names does not matter: the content decides.
            Ok(events) if !events.is_empty() => {
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(errors) => {
                for err in errors {
                    tracing::warn!(error = %err, "config watch error");
                }
            }
        }
    })?;
    debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
    let mut watched = vec![dir.clone()];
    // Key files may live elsewhere (a mounted secret): watch their
    // directories too, now and whenever a reload names new ones.
    let mut watch_key_dirs = move |reloader: &Reloader| {
        for dir in reloader.watched_files().iter().map(|f| parent_dir(f)) {
            if watched.contains(&dir) {
                continue;
            }
            match debouncer.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => tracing::info!(dir = %dir.display(), "watching key files for changes"),
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), error = %err, "cannot watch key files")
                }
            }
            watched.push(dir);
        }
    };
    watch_key_dirs(&reloader);
    // Installed before the log line below: until then SIGHUP still has its
    // default action and would end the process.
    let mut hangup = hangup_signal();
    tracing::info!(dir = %dir.display(), "watching config for changes");
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(()) => {
                        // Coalesce what piled up while the last reload ran.
                        while rx.try_recv().is_ok() {}
                        reloader.reload(false);
                    }
                    None => break,
                },
                Some(()) = next_hangup(&mut hangup) => {
                    tracing::info!("SIGHUP: reloading config");
                    reloader.reload(true);
                }
            }
            watch_key_dirs(&reloader);
        }
    });
    Ok(Watcher { task })
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .map_err(|err| tracing::warn!(error = %err, "cannot listen for SIGHUP"))
        .ok()
}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}
