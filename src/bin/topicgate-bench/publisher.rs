//! Paced PUBLISHes to Redis: each publisher task owns every `n`-th sequence
//! number and sends it at its scheduled time, so together they offer the
//! requested rate; lateness against the schedule is recorded, so a run can
//! tell "the bench could not offer the load" from "the gateway lost it".

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout};

use crate::stats::{Stats, payload};

/// Longest wait for Redis to answer one PUBLISH.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Schedule {
    /// Publishes per second, all publishers together.
    pub rate: f64,
    /// Total publishes; sequence numbers are `0..total`.
    pub total: u64,
    /// How many publisher tasks share the sequence numbers.
    pub publishers: u64,
    /// Padding added to each payload, to vary the message size.
    pub padding: String,
}

/// Publishes sequence numbers `index, index + publishers, ...` at their
/// scheduled times from `start`; `topics[seq % topics.len()]` names the
/// channel, so one topic gets everything and many topics are served
/// round-robin.
pub async fn run(
    index: u64,
    schedule: Arc<Schedule>,
    topics: Arc<Vec<String>>,
    mut conn: redis::aio::MultiplexedConnection,
    stats: Arc<Stats>,
    epoch: Instant,
    start: Instant,
) {
    let mut seq = index;
    while seq < schedule.total {
        let due = start + Duration::from_secs_f64(seq as f64 / schedule.rate);
        let now = Instant::now();
        if due > now {
            sleep_until(due).await;
        } else {
            let lag = now.duration_since(due).as_nanos() as u64;
            stats.publish_lag_max_ns.fetch_max(lag, Relaxed);
        }
        let topic = &topics[(seq % topics.len() as u64) as usize];
        let sent = epoch.elapsed().as_nanos() as u64;
        let body = payload(seq, sent, &schedule.padding);
        let mut command = redis::cmd("PUBLISH");
        command.arg(topic).arg(body);
        let publish = command.query_async::<i64>(&mut conn);
        match timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(receivers)) => {
                stats.published[seq as usize].store(true, Relaxed);
                if receivers == 0 {
                    stats.publish_no_receivers.fetch_add(1, Relaxed);
                }
            }
            Ok(Err(e)) => stats.error(format!("publish: {:?}", e.kind())),
            Err(_) => stats.error("publish: timed out"),
        }
        seq += schedule.publishers;
    }
}
