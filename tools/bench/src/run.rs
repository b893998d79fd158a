//! One run: set the connections up, play the scenario, measure, tear down.
//! Figures go into the report as soon as they are known, so a run cut by
//! the deadline still reports what it measured.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

use crate::publisher::{self, Schedule};
use crate::stats::Stats;
use crate::sys::{self, Sample};
use crate::{Args, Plan, Scenario, client};

/// Longest wait for the readers to close their connections at the end.
const TEARDOWN: Duration = Duration::from_secs(15);

pub async fn run(
    args: &Args,
    plan: &Plan,
    stats: &Arc<Stats>,
    report: &mut Map<String, Value>,
) -> Result<(), String> {
    if matches!(args.scenario, Scenario::Drop | Scenario::RecoveryStorm) {
        return crate::recover::run(args, plan, stats, report).await;
    }
    let epoch = Instant::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let prefix = format!("bench.{run_id}");
    let shared_topic = args.scenario == Scenario::Fanout
        || (args.shared_topic && matches!(args.scenario, Scenario::Idle | Scenario::Storm));
    let topic_of = |i: usize| {
        if shared_topic {
            format!("{prefix}.all")
        } else {
            format!("{prefix}.{i}")
        }
    };
    report.insert("run_id".into(), json!(run_id));
    report.insert("url".into(), json!(plan.target.url));

    let gateway = |report: &mut Map<String, Value>, key: &str| -> Option<Sample> {
        let pid = args.pid?;
        match sys::sample(pid) {
            Ok(sample) => Some(sample),
            Err(err) => {
                report.insert(format!("gateway_{key}_error"), json!(err));
                None
            }
        }
    };
    let before = gateway(report, "before");
    let cores_before = sys::cores();

    // Setup: every connection is its own task from here to teardown.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Option<usize>>();
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let target = Arc::new(client::Target {
        addr: plan.target.addr,
        url: plan.target.url.clone(),
        connect_timeout: plan.target.connect_timeout,
    });
    let key =
        EncodingKey::from_secret(args.secret.as_bytes()).map_err(|e| format!("--secret: {e}"))?;
    let key = Arc::new(key);
    let expires = sys_now() + 3600 + args.deadline.unwrap_or(600) + args.duration;
    let setup_timeout = Duration::from_secs(args.setup_timeout);
    let mut readers = JoinSet::new();
    let setup_start = Instant::now();
    for i in 0..args.connections {
        let claims = claims(i, &run_id, expires, args);
        let (target, key, permits, stats) =
            (target.clone(), key.clone(), permits.clone(), stats.clone());
        let (done, stop, topic, source) = (
            done_tx.clone(),
            stop_rx.clone(),
            topic_of(i),
            plan.source(i),
        );
        readers.spawn(async move {
            let Ok(permit) = permits.acquire_owned().await else {
                return;
            };
            let started = Instant::now();
            let setup = async {
                let token = jsonwebtoken::encode(&Header::default(), &claims, &key)
                    .map_err(|e| client::SetupError(format!("sign: {e}")))?;
                client::establish(&target, source, &token, &[topic]).await
            };
            let outcome = timeout(setup_timeout, setup).await;
            drop(permit);
            match outcome {
                Ok(Ok(ws)) => {
                    stats.setup.record(started.elapsed().as_nanos() as u64);
                    let _ = done.send(Some(i));
                    client::read_until_stopped(ws, stats, epoch, stop).await;
                }
                Ok(Err(err)) => {
                    stats.error(format!("setup {}", err.0));
                    let _ = done.send(None);
                }
                Err(_) => {
                    stats.error("setup: timed out");
                    let _ = done.send(None);
                }
            }
        });
    }
    drop(done_tx);
    let mut established = Vec::with_capacity(args.connections);
    let mut finished = 0;
    let mut progress = tokio::time::interval(Duration::from_secs(2));
    while finished < args.connections {
        tokio::select! {
            done = done_rx.recv() => match done {
                Some(outcome) => {
                    finished += 1;
                    established.extend(outcome);
                }
                None => break,
            },
            _ = progress.tick() => eprintln!(
                "setup: {}/{} done, {} established",
                finished,
                args.connections,
                established.len()
            ),
        }
    }
    let setup_secs = setup_start.elapsed().as_secs_f64();
    let after_setup = gateway(report, "after_setup");
    report.insert(
        "cores_busy_setup".into(),
        json!(sys::cores_busy(&cores_before, &sys::cores())),
    );
    let ok = established.len();
    eprintln!(
        "setup: {ok}/{} established in {setup_secs:.2}s",
        args.connections
    );
    report.insert(
        "connections".into(),
        json!({"requested": args.connections, "established": ok, "failed": args.connections - ok}),
    );
    report.insert(
        "setup".into(),
        json!({
            "secs": round3(setup_secs),
            "per_sec": round3(ok as f64 / setup_secs.max(1e-9)),
            "latency_ms": stats.setup.summary_ms(),
        }),
    );
    if let (Some(b), Some(a)) = (before, after_setup) {
        let per_conn = |x: f64| if ok > 0 { x / ok as f64 } else { 0.0 };
        report.insert(
            "gateway_setup".into(),
            json!({
                "pid": args.pid,
                "clk_tck_assumed": sys::CLK_TCK,
                "rss_kib_before": b.rss_kib,
                "rss_kib_after": a.rss_kib,
                "rss_bytes_per_connection":
                    round3(per_conn((a.rss_kib as f64 - b.rss_kib as f64) * 1024.0)),
                "cpu_secs": round3(a.cpu_secs - b.cpu_secs),
                "cpu_sys_secs": round3(a.sys_secs - b.sys_secs),
                "cpu_ms_per_connection": round3(per_conn((a.cpu_secs - b.cpu_secs) * 1000.0)),
            }),
        );
    }
    let outcome = if ok == 0 {
        Err("no connection could be established".to_string())
    } else {
        match args.scenario {
            Scenario::Idle => hold(args, after_setup, report, &gateway).await,
            Scenario::Storm | Scenario::Drop | Scenario::RecoveryStorm => Ok(()),
            Scenario::Fanout | Scenario::Spread => {
                let topics: Vec<String> = if shared_topic {
                    vec![topic_of(0)]
                } else {
                    established.iter().map(|&i| topic_of(i)).collect()
                };
                let fanout = if shared_topic { ok as u32 } else { 1 };
                publish(args, topics, fanout, stats, epoch, report, &gateway).await
            }
        }
    };
    eprintln!("teardown: closing {ok} connections");
    let _ = stop_tx.send(true);
    let drained = timeout(TEARDOWN, async {
        while readers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        stats.error("teardown: connections still open after 15s (aborted)");
        readers.abort_all();
    }
    outcome
}

/// idle: hold the connections and report what they cost while idle.
async fn hold(
    args: &Args,
    after_setup: Option<Sample>,
    report: &mut Map<String, Value>,
    gateway: &impl Fn(&mut Map<String, Value>, &str) -> Option<Sample>,
) -> Result<(), String> {
    let held = Instant::now();
    sleep(Duration::from_secs(args.duration)).await;
    let end = gateway(report, "end");
    if let (Some(a), Some(e)) = (after_setup, end) {
        report.insert(
            "gateway_hold".into(),
            json!({
                "secs": round3(held.elapsed().as_secs_f64()),
                "rss_kib_end": e.rss_kib,
                "cpu_secs": round3(e.cpu_secs - a.cpu_secs),
                "cpu_sys_secs": round3(e.sys_secs - a.sys_secs),
                "cpu_util": round3(sys::utilisation(a, e, held.elapsed())),
            }),
        );
    }
    Ok(())
}

/// fanout/spread: publish on schedule, drain, and account for every delivery.
async fn publish(
    args: &Args,
    topics: Vec<String>,
    fanout: u32,
    stats: &Arc<Stats>,
    epoch: Instant,
    report: &mut Map<String, Value>,
    gateway: &impl Fn(&mut Map<String, Value>, &str) -> Option<Sample>,
) -> Result<(), String> {
    let schedule = Arc::new(Schedule {
        rate: args.rate,
        total: stats.per_seq.len() as u64,
        publishers: args.publishers,
        padding: "x".repeat(args.payload_bytes),
        method: args.publish_with,
    });
    let total = schedule.total;
    let topic_count = topics.len();
    let own = std::process::id();
    let (gw_before, self_before) = (gateway(report, "window_start"), sys::sample(own).ok());
    let redis_before = args.redis_pid.and_then(|pid| sys::sample(pid).ok());
    let cores_before = sys::cores();
    let running = publisher::spawn(
        args.redis.clone(),
        args.redis_cluster,
        schedule,
        Arc::new(topics),
        stats.clone(),
        epoch,
    )?;
    let start = running
        .started
        .await
        .map_err(|_| "publisher thread ended early".to_string())??;
    let start_ns = start.duration_since(epoch).as_nanos() as u64;
    eprintln!(
        "publish: {total} messages over {}s to {topic_count} topic(s)",
        args.duration
    );
    let _ = running.finished.await;
    let published_secs = start.elapsed().as_secs_f64();
    let (ok, _, _, _) = stats.publish_outcomes(fanout);
    let expected = ok * u64::from(fanout);
    let drain_until = Instant::now() + Duration::from_secs(args.drain);
    while stats.received.load(Relaxed) < expected && Instant::now() < drain_until {
        sleep(Duration::from_millis(10)).await;
    }
    let window = start.elapsed();
    let (gw_after, self_after) = (gateway(report, "window_end"), sys::sample(own).ok());
    let redis_after = args.redis_pid.and_then(|pid| sys::sample(pid).ok());
    report.insert(
        "cores_busy_window".into(),
        json!(sys::cores_busy(&cores_before, &sys::cores())),
    );
    let (ok, full, partial, none) = stats.publish_outcomes(fanout);
    let received = stats.received.load(Relaxed);
    let last = stats.last_delivery_ns.load(Relaxed);
    let delivery_secs = last.saturating_sub(start_ns) as f64 / 1e9;
    let lost = expected.saturating_sub(received);
    report.insert(
        "publish".into(),
        json!({
            "rate": args.rate,
            "duration_secs": args.duration,
            "planned": total,
            "ok": ok,
            "achieved_rate": round3(ok as f64 / published_secs.max(1e-9)),
            "lag_max_ms": round3(stats.publish_lag_max_ns.load(Relaxed) as f64 / 1e6),
            "no_receivers": stats.publish_no_receivers.load(Relaxed),
            "publishers": args.publishers,
            "payload_padding_bytes": args.payload_bytes,
            "method": args.publish_with.name(),
            "call_ms": stats.publish_call.summary_ms(),
        }),
    );
    if let (Some(b), Some(a)) = (redis_before, redis_after) {
        report.insert("redis_window".into(), redis_cpu(b, a, window, ok, received));
    }
    report.insert(
        "deliveries".into(),
        json!({
            "subscribers_per_publish": fanout,
            "expected": expected,
            "received": received,
            "lost": lost,
            "loss_ratio": if expected > 0 { lost as f64 / expected as f64 } else { 0.0 },
            "per_sec": round3(received as f64 / delivery_secs.max(1e-9)),
            "unparsed": stats.unparsed.load(Relaxed),
            "publishes_fully_delivered": full,
            "publishes_partially_delivered": partial,
            "publishes_not_delivered": none,
        }),
    );
    report.insert("latency_ms".into(), stats.latency.summary_ms());
    if let (Some(b), Some(a)) = (self_before, self_after) {
        report.insert(
            "bench_cpu_util".into(),
            json!(round3(sys::utilisation(b, a, window))),
        );
    }
    if let (Some(b), Some(a)) = (gw_before, gw_after) {
        let cpu = a.cpu_secs - b.cpu_secs;
        let per_million = if received > 0 {
            cpu / (received as f64 / 1e6)
        } else {
            0.0
        };
        report.insert(
            "gateway_window".into(),
            json!({
                "secs": round3(window.as_secs_f64()),
                "cpu_secs": round3(cpu),
                "cpu_sys_secs": round3(a.sys_secs - b.sys_secs),
                "cpu_util": round3(sys::utilisation(b, a, window)),
                "cpu_secs_per_million_deliveries": round3(per_million),
                "rss_kib_start": b.rss_kib,
                "rss_kib_end": a.rss_kib,
            }),
        );
    }
    Ok(())
}

/// Redis's CPU over a window in which it served `calls` publishes that
/// made `deliveries` deliveries.
pub fn redis_cpu(b: Sample, a: Sample, window: Duration, calls: u64, deliveries: u64) -> Value {
    let cpu = a.cpu_secs - b.cpu_secs;
    let per = |n: u64, scale: f64| {
        if n > 0 {
            round3(cpu / (n as f64 / scale))
        } else {
            0.0
        }
    };
    json!({
        "pid_cpu_secs": round3(cpu),
        "cpu_util": round3(sys::utilisation(b, a, window)),
        "cpu_us_per_publish": per(calls, 1e6),
        "cpu_secs_per_million_deliveries": per(deliveries, 1e6),
    })
}

/// The token claims of connection `i`.
pub fn claims(i: usize, run_id: &str, expires: u64, args: &Args) -> Value {
    let mut claims = json!({
        "sub": format!("bench-{run_id}-{i}"),
        "iat": sys_now(),
        "exp": expires,
    });
    if let Some(iss) = &args.issuer {
        claims["iss"] = json!(iss);
    }
    if let Some(aud) = &args.audience {
        claims["aud"] = json!(aud);
    }
    claims
}

pub fn sys_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
