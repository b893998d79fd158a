//! The measured part of the history scenarios: publishing, waiting for
//! recovery, sampling the gateway and Redis, and the final accounting.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};

use super::{DROP, RECONNECT, Shared};
use crate::Args;
use crate::publisher::{self, Schedule};
use crate::run::{redis_cpu, round3};
use crate::sys::{self, Sample};
use crate::track::Tracker;

/// What the measured part needs from the setup.
pub struct Context<'a> {
    pub args: &'a Args,
    pub shared: &'a Arc<Shared>,
    pub phase: &'a watch::Sender<u8>,
    pub topics: &'a [String],
    pub established: u64,
}

impl Context<'_> {
    fn sample(&self, pid: Option<u32>) -> Option<Sample> {
        pid.and_then(|pid| sys::sample(pid).ok())
    }

    /// Publishes Redis accepted, per topic index.
    fn published_per_topic(&self) -> Vec<u64> {
        let mut per = vec![0; self.topics.len()];
        for (seq, ok) in self.shared.stats.published.iter().enumerate() {
            if ok.load(Relaxed) {
                per[seq % self.topics.len()] += 1;
            }
        }
        per
    }

    /// Publishes with FCALL on the publisher thread until done; returns
    /// when the schedule started and how long publishing took.
    async fn publish(&self, schedule: Schedule) -> Result<(Instant, Duration), String> {
        let running = publisher::spawn(
            self.args.redis.clone(),
            self.args.redis_cluster,
            Arc::new(schedule),
            Arc::new(self.topics.to_vec()),
            self.shared.stats.clone(),
            self.shared.epoch,
        )?;
        let start = running
            .started
            .await
            .map_err(|_| "publisher thread ended early".to_string())??;
        let _ = running.finished.await;
        Ok((start, start.elapsed()))
    }

    fn publish_report(&self, took: Duration, report: &mut Map<String, Value>) {
        let stats = &self.shared.stats;
        let ok: u64 = self.published_per_topic().iter().sum();
        report.insert(
            "publish".into(),
            json!({
                "method": "fcall",
                "rate": self.args.rate,
                "planned": stats.published.len(),
                "ok": ok,
                "secs": round3(took.as_secs_f64()),
                "lag_max_ms": round3(stats.publish_lag_max_ns.load(Relaxed) as f64 / 1e6),
                "call_ms": stats.publish_call.summary_ms(),
            }),
        );
    }

    fn cpu_report(
        &self,
        key: &str,
        window: Duration,
        gateway: (Option<Sample>, Option<Sample>),
        redis: (Option<Sample>, Option<Sample>),
        report: &mut Map<String, Value>,
    ) {
        // Per-publish figures only where the window holds the publishing.
        let publishing = key == "window";
        let received = self.shared.stats.received.load(Relaxed) * u64::from(publishing);
        if let (Some(b), Some(a)) = gateway {
            let cpu = a.cpu_secs - b.cpu_secs;
            report.insert(
                format!("gateway_{key}"),
                json!({
                    "secs": round3(window.as_secs_f64()),
                    "cpu_secs": round3(cpu),
                    "cpu_sys_secs": round3(a.sys_secs - b.sys_secs),
                    "cpu_util": round3(sys::utilisation(b, a, window)),
                    "rss_kib_start": b.rss_kib,
                    "rss_kib_end": a.rss_kib,
                }),
            );
        }
        if let (Some(b), Some(a)) = redis {
            let ok = self.published_per_topic().iter().sum::<u64>() * u64::from(publishing);
            report.insert(
                format!("redis_{key}"),
                redis_cpu(b, a, window, ok, received),
            );
        }
    }
}

/// drop: publish for `--duration` while the clients drop and come back,
/// then wait up to `--drain` plus one reconnect delay for stragglers.
pub async fn drop_test(
    ctx: &Context<'_>,
    schedule: Schedule,
    report: &mut Map<String, Value>,
) -> Result<(), String> {
    let (gw, redis) = (ctx.sample(ctx.args.pid), ctx.sample(ctx.args.redis_pid));
    let cores = sys::cores();
    eprintln!(
        "publish: {} FCALLs over {}s; clients drop every {}-{} ms",
        schedule.total, ctx.args.duration, ctx.args.drop_min_ms, ctx.args.drop_max_ms
    );
    let (start, took) = ctx.publish(schedule).await?;
    // Publishing is over: clients stop dropping and come back one last time.
    let _ = ctx.phase.send(RECONNECT);
    let per_topic = ctx.published_per_topic();
    let clients = ctx.args.connections as u64;
    let topics = per_topic.len() as u64;
    // Clients i take topic i % topics.
    let expected: u64 = (0..topics)
        .map(|k| per_topic[k as usize] * (clients / topics + u64::from(k < clients % topics)))
        .sum();
    let until = Instant::now()
        + Duration::from_secs(ctx.args.drain)
        + Duration::from_millis(ctx.args.reconnect_ms);
    while ctx.shared.counters.unique.load(Relaxed) < expected && Instant::now() < until {
        sleep(Duration::from_millis(10)).await;
    }
    let window = start.elapsed();
    let (gw_end, redis_end) = (ctx.sample(ctx.args.pid), ctx.sample(ctx.args.redis_pid));
    report.insert(
        "cores_busy_window".into(),
        json!(sys::cores_busy(&cores, &sys::cores())),
    );
    ctx.publish_report(took, report);
    ctx.cpu_report("window", window, (gw, gw_end), (redis, redis_end), report);
    Ok(())
}

/// recovery-storm: drop everyone, publish `--messages`, bring everyone
/// back at once and time until each client has all of them.
pub async fn storm(
    ctx: &Context<'_>,
    schedule: Schedule,
    report: &mut Map<String, Value>,
) -> Result<(), String> {
    let counters = &ctx.shared.counters;
    let _ = ctx.phase.send(DROP);
    let bound = Instant::now() + ctx.shared.setup_timeout;
    while counters.away.load(Relaxed) < ctx.established && Instant::now() < bound {
        sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "storm: {} clients away; publishing {} FCALLs",
        counters.away.load(Relaxed),
        schedule.total
    );
    let (_, took) = ctx.publish(schedule).await?;
    ctx.publish_report(took, report);
    for (goal, n) in ctx.shared.goals.iter().zip(ctx.published_per_topic()) {
        goal.store(n, Relaxed);
    }
    let (gw, redis) = (ctx.sample(ctx.args.pid), ctx.sample(ctx.args.redis_pid));
    let cores = sys::cores();
    let reconnect = Instant::now();
    ctx.shared
        .reconnect_at_ns
        .store(ctx.shared.epoch.elapsed().as_nanos() as u64, Relaxed);
    let _ = ctx.phase.send(RECONNECT);
    let bound = reconnect + ctx.shared.setup_timeout + Duration::from_secs(ctx.args.drain);
    while counters.completed.load(Relaxed) < ctx.established && Instant::now() < bound {
        sleep(Duration::from_millis(5)).await;
    }
    let window = reconnect.elapsed();
    let (gw_end, redis_end) = (ctx.sample(ctx.args.pid), ctx.sample(ctx.args.redis_pid));
    report.insert(
        "cores_busy_window".into(),
        json!(sys::cores_busy(&cores, &sys::cores())),
    );
    let completed = counters.completed.load(Relaxed);
    report.insert(
        "storm".into(),
        json!({
            "clients_away": counters.away.load(Relaxed),
            "clients_recovered_all": completed,
            "all_recovered": completed >= ctx.established,
            "secs_until_all_recovered": (completed >= ctx.established)
                .then(|| round3(window.as_secs_f64())),
            "per_client_recovered_ms": ctx.shared.completion.summary_ms(),
            "reconnect_concurrency": ctx.args.concurrency,
        }),
    );
    ctx.cpu_report("recovery", window, (gw, gw_end), (redis, redis_end), report);
    Ok(())
}

/// Every client's messages against what was published on its topic.
pub fn accounting(
    ctx: &Context<'_>,
    trackers: &[(usize, Tracker)],
    report: &mut Map<String, Value>,
) {
    let stats = &ctx.shared.stats;
    let counters = &ctx.shared.counters;
    let topics = ctx.topics.len();
    let (mut expected, mut delivered, mut complete) = (0u64, 0u64, 0u64);
    let (mut duplicates, mut out_of_order) = (0u64, 0u64);
    for (topic, tracker) in trackers {
        let (mut want, mut got) = (0u64, 0u64);
        for (seq, ok) in stats.published.iter().enumerate() {
            if seq % topics == *topic && ok.load(Relaxed) {
                want += 1;
                got += u64::from(tracker.has(seq as u64));
            }
        }
        expected += want;
        delivered += got;
        complete += u64::from(got == want);
        duplicates += tracker.duplicates;
        out_of_order += tracker.out_of_order;
    }
    let pct = if expected > 0 {
        delivered as f64 * 100.0 / expected as f64
    } else {
        0.0
    };
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
    report.insert(
        "recovery".into(),
        json!({
            "mode": if ctx.shared.recover { "since" } else { "plain" },
            "clients_accounted": trackers.len(),
            "clients_with_every_message": complete,
            "expected": expected,
            "delivered": delivered,
            "missing": expected - delivered.min(expected),
            "delivery_pct": (pct * 1000.0).round() / 1000.0,
            "duplicates": duplicates,
            "out_of_order": out_of_order,
            "drops": n(&counters.drops),
            "reconnects": n(&counters.reconnects),
            "reconnect_failures": n(&counters.reconnect_failures),
            "replies_recovered_true": n(&counters.recovered),
            "replies_recovered_false": n(&counters.not_recovered),
            "replies_without_since": n(&counters.plain_subscribes),
            "gap_frames": n(&counters.gaps),
            "replayed": n(&counters.replayed),
            "replay_latency_ms": ctx.shared.replay.summary_ms(),
            "replay_after_reply_ms": ctx.shared.replay_after_reply.summary_ms(),
            "live_latency_ms": stats.latency.summary_ms(),
            "server_closes": n(&counters.server_closes),
            "slow_consumer_closes_1013": n(&counters.slow_consumer_closes),
            "unparsed": stats.unparsed.load(Relaxed),
        }),
    );
}
