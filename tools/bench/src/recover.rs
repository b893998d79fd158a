//! The history scenarios: clients that lose their connection and come
//! back with `since` (docs/PROTOCOL.md, "Positions and recovery").
//!
//! - `drop`: each client's TCP connection is aborted (RST) every few
//!   seconds and reopened after `--reconnect-ms`, while FCALL publishes
//!   flow at `--rate`; at the end every client should hold every message of
//!   its topic once, in offset order.
//! - `recovery-storm`: every client is aborted at once, `--messages` are
//!   published, and every client comes back at once; the figure is the time
//!   until each has recovered all of them.
//!
//! Each client keeps a [`Tracker`] and its last position; a message that
//! arrives after a `recovered:true` reply with an offset at or below the
//! reply's is a replayed one, timed into its own histogram.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

use crate::client::{self, Target, Ws};
use crate::publisher::{self, Method, Schedule};
use crate::stats::{Histogram, Stats};
use crate::track::{Jitter, Tracker};
use crate::{Args, Plan, Scenario};

mod report;
mod session;

use session::{Client, abort};

/// Run phases, in order; clients wait on a `watch` of the current one.
/// The drop test uses HOLD (publishing, clients dropping), RECONNECT
/// (publishing over: come back one last time) and STOP.
const HOLD: u8 = 0;
const DROP: u8 = 1;
const RECONNECT: u8 = 2;
const STOP: u8 = 3;

/// Event counts over all clients.
#[derive(Default)]
pub struct Counters {
    pub drops: AtomicU64,
    pub reconnects: AtomicU64,
    pub reconnect_failures: AtomicU64,
    pub recovered: AtomicU64,
    pub not_recovered: AtomicU64,
    pub plain_subscribes: AtomicU64,
    pub gaps: AtomicU64,
    pub replayed: AtomicU64,
    pub unique: AtomicU64,
    pub completed: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    pub server_closes: AtomicU64,
    /// recovery-storm: clients whose connection is gone.
    pub away: AtomicU64,
}

/// What every client task shares.
pub struct Shared {
    pub target: Target,
    pub stats: Arc<Stats>,
    pub counters: Counters,
    /// Publish-to-receipt time of messages that came through a replay.
    pub replay: Histogram,
    /// Time from the `recovered:true` reply to each replayed message: what
    /// the replay itself adds, without the time the client was away.
    pub replay_after_reply: Histogram,
    /// recovery-storm: time from the reconnect signal until a client had
    /// every message it missed.
    pub completion: Histogram,
    /// recovery-storm: per topic, messages each of its clients must get
    /// (0 until the publishes are done).
    pub goals: Vec<AtomicU64>,
    /// Bench-clock time of the reconnect signal, in ns.
    pub reconnect_at_ns: AtomicU64,
    /// Whether resubscribes carry `since`.
    pub recover: bool,
    pub epoch: Instant,
    pub setup_timeout: Duration,
    pub reconnect_delay: Duration,
}

/// Waits until the phase is at least `at`; false when the run is gone.
/// The `watch` borrow is released before returning.
pub async fn reached(phase: &mut watch::Receiver<u8>, at: u8) -> bool {
    phase.wait_for(|p| *p >= at).await.is_ok()
}

/// drop: live for a jittered while, abort, come back, until publishing
/// ends; then hold the connection through the drain.
async fn drop_loop(
    mut c: Client,
    mut ws: Ws,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<u8>,
    (min_ms, max_ms, seed): (u64, u64, u64),
) -> Client {
    let mut jitter = Jitter::new(seed);
    loop {
        let live = Duration::from_millis(jitter.between(min_ms, max_ms));
        let mut watch_end = phase.clone();
        let until = async {
            tokio::select! {
                _ = sleep(live) => false,
                _ = reached(&mut watch_end, RECONNECT) => true,
            }
        };
        match c.read(&mut ws, &shared, until).await {
            Some(true) => break,
            Some(false) => {
                shared.counters.drops.fetch_add(1, Relaxed);
                abort(ws);
            }
            None => {}
        }
        match c.reconnect(&shared, &mut phase).await {
            Some(next) => ws = next,
            None => return c,
        }
    }
    // Publishing is over: read what is still due, then leave politely.
    c.read(&mut ws, &shared, reached(&mut phase, STOP)).await;
    client::close(ws).await;
    c
}

/// recovery-storm: hold, abort on DROP, come back on RECONNECT, read
/// until STOP.
async fn storm_loop(
    mut c: Client,
    mut ws: Ws,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<u8>,
    permits: Arc<Semaphore>,
) -> Client {
    let mut watch_drop = phase.clone();
    if c.read(&mut ws, &shared, reached(&mut watch_drop, DROP))
        .await
        .is_some()
    {
        shared.counters.drops.fetch_add(1, Relaxed);
        abort(ws);
    }
    shared.counters.away.fetch_add(1, Relaxed);
    if !reached(&mut phase, RECONNECT).await || *phase.borrow() >= STOP {
        return c;
    }
    let mut ws = loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return c;
        };
        let outcome = timeout(shared.setup_timeout, c.connect(&shared)).await;
        drop(permit);
        match outcome {
            Ok(Ok(ws)) => {
                shared.counters.reconnects.fetch_add(1, Relaxed);
                break ws;
            }
            Ok(Err(err)) => shared.stats.error(format!("reconnect {}", err.0)),
            Err(_) => shared.stats.error("reconnect: timed out"),
        }
        shared.counters.reconnect_failures.fetch_add(1, Relaxed);
        tokio::select! {
            _ = sleep(shared.reconnect_delay) => {}
            _ = reached(&mut phase, STOP) => return c,
        }
    };
    c.read(&mut ws, &shared, reached(&mut phase, STOP)).await;
    client::close(ws).await;
    c
}

/// Runs `drop` or `recovery-storm` and fills `report`.
pub async fn run(
    args: &Args,
    plan: &Plan,
    stats: &Arc<Stats>,
    report: &mut Map<String, Value>,
) -> Result<(), String> {
    let epoch = Instant::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let topics: Vec<String> = (0..args.topics)
        .map(|k| format!("bench.{run_id}.h{k}"))
        .collect();
    report.insert("run_id".into(), json!(run_id));
    report.insert("url".into(), json!(plan.target.url));
    publisher::warm_up(&args.redis, args.redis_cluster, &topics).await?;

    let shared = Arc::new(Shared {
        target: Target {
            addr: plan.target.addr,
            url: plan.target.url.clone(),
            connect_timeout: plan.target.connect_timeout,
        },
        stats: stats.clone(),
        counters: Counters::default(),
        replay: Histogram::new(),
        replay_after_reply: Histogram::new(),
        completion: Histogram::new(),
        goals: topics.iter().map(|_| AtomicU64::new(0)).collect(),
        reconnect_at_ns: AtomicU64::new(0),
        recover: !args.no_recover || args.scenario == Scenario::RecoveryStorm,
        epoch,
        setup_timeout: Duration::from_secs(args.setup_timeout),
        reconnect_delay: Duration::from_millis(args.reconnect_ms),
    });
    let key = jsonwebtoken::EncodingKey::from_secret(args.secret.as_bytes())
        .map_err(|e| format!("--secret: {e}"))?;
    let expires = crate::run::sys_now() + 3600 + args.deadline.unwrap_or(600) + args.duration;
    let (phase_tx, phase_rx) = watch::channel(HOLD);
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let mut clients = JoinSet::new();
    let setup_start = Instant::now();
    for i in 0..args.connections {
        let claims = crate::run::claims(i, &run_id, expires, args);
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
            .map_err(|e| format!("sign: {e}"))?;
        let mut c = Client {
            topic: topics[i % topics.len()].clone(),
            topic_index: i % topics.len(),
            token,
            source: plan.source(i),
            tracker: Tracker::new(plan.publishes as u64),
            position: None,
            replay_until: None,
            reply_at_ns: 0,
            complete: false,
        };
        let (shared, phase, permits, ready) = (
            shared.clone(),
            phase_rx.clone(),
            permits.clone(),
            ready_tx.clone(),
        );
        let drops = (args.drop_min_ms, args.drop_max_ms, i as u64 + 1);
        let storm = args.scenario == Scenario::RecoveryStorm;
        clients.spawn(async move {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return None;
            };
            let started = Instant::now();
            let outcome = timeout(shared.setup_timeout, c.connect(&shared)).await;
            drop(permit);
            let ws = match outcome {
                Ok(Ok(ws)) => ws,
                Ok(Err(err)) => {
                    shared.stats.error(format!("setup {}", err.0));
                    let _ = ready.send(false);
                    return None;
                }
                Err(_) => {
                    shared.stats.error("setup: timed out");
                    let _ = ready.send(false);
                    return None;
                }
            };
            shared
                .stats
                .setup
                .record(started.elapsed().as_nanos() as u64);
            let _ = ready.send(true);
            Some(if storm {
                storm_loop(c, ws, shared, phase, permits).await
            } else {
                drop_loop(c, ws, shared, phase, drops).await
            })
        });
    }
    drop(ready_tx);
    let mut established = 0;
    for _ in 0..args.connections {
        match ready_rx.recv().await {
            Some(true) => established += 1,
            Some(false) => {}
            None => break,
        }
    }
    let setup_secs = setup_start.elapsed().as_secs_f64();
    eprintln!(
        "setup: {established}/{} established in {setup_secs:.2}s",
        args.connections
    );
    report.insert(
        "connections".into(),
        json!({"requested": args.connections, "established": established, "topics": topics.len()}),
    );
    report.insert(
        "setup".into(),
        json!({"secs": crate::run::round3(setup_secs), "latency_ms": stats.setup.summary_ms()}),
    );
    if established == 0 {
        let _ = phase_tx.send(STOP);
        clients.abort_all();
        return Err("no connection could be established".into());
    }
    let schedule = Schedule {
        rate: args.rate,
        total: plan.publishes as u64,
        publishers: args.publishers,
        padding: "x".repeat(args.payload_bytes),
        method: Method::Fcall,
    };
    let ctx = report::Context {
        args,
        shared: &shared,
        phase: &phase_tx,
        topics: &topics,
        established: established as u64,
    };
    let outcome = match args.scenario {
        Scenario::RecoveryStorm => report::storm(&ctx, schedule, report).await,
        _ => report::drop_test(&ctx, schedule, report).await,
    };
    let _ = phase_tx.send(STOP);
    let mut trackers = Vec::new();
    let joined = timeout(Duration::from_secs(15), async {
        while let Some(done) = clients.join_next().await {
            if let Ok(Some(c)) = done {
                trackers.push((c.topic_index, c.tracker));
            }
        }
    })
    .await;
    if joined.is_err() {
        stats.error("teardown: connections still open after 15s (aborted)");
        clients.abort_all();
    }
    report::accounting(&ctx, &trackers, report);
    outcome
}
