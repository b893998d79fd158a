//! Paced PUBLISHes to Redis: each publisher task owns every `n`-th sequence
//! number and sends it at its scheduled time, so together they offer the
//! requested rate; lateness against the schedule is recorded, so a run can
//! tell "the bench could not offer the load" from "the gateway lost it".
//!
//! The publishers run on a thread and runtime of their own: on the reader
//! runtime, thousands of reader tasks woken by one fan-out would run before
//! a publisher's timer, and the schedule would slip by tens of milliseconds.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinSet;
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
    /// PUBLISH or FCALL.
    pub method: Method,
}

/// Longest wait for a Redis connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A publishing run on its own thread.
pub struct Running {
    /// When the schedule starts, once every publisher is connected.
    pub started: oneshot::Receiver<Result<Instant, String>>,
    /// Resolves when every publisher has finished its share.
    pub finished: oneshot::Receiver<()>,
}

/// How a message is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// `PUBLISH` (`SPUBLISH` on a cluster): unrecorded, answers receivers.
    Publish,
    /// `FCALL topicgate_publish 1 <channel> <payload>`: recorded in the
    /// topic's history, answers the offset (docs/PROTOCOL.md, "Positions
    /// and recovery"). The gateway must have loaded the function.
    Fcall,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Publish => "publish",
            Method::Fcall => "fcall",
        }
    }
}

/// One publisher's connection: to a Redis, or through a Redis Cluster
/// connection (which routes each channel, or FCALL's key, to its shard).
enum Connection {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Connection {
    /// Publishes `body`; the reply is the receiver count (PUBLISH) or the
    /// offset (FCALL).
    async fn publish(
        &mut self,
        method: Method,
        topic: &str,
        body: String,
    ) -> redis::RedisResult<i64> {
        let mut command = match (method, &self) {
            (Method::Publish, Self::Single(_)) => redis::cmd("PUBLISH"),
            (Method::Publish, Self::Cluster(_)) => redis::cmd("SPUBLISH"),
            (Method::Fcall, _) => {
                let mut command = redis::cmd("FCALL");
                command.arg("topicgate_publish").arg(1);
                command
            }
        };
        command.arg(topic).arg(body);
        match self {
            Self::Single(conn) => command.query_async(conn).await,
            Self::Cluster(conn) => command.query_async(conn).await,
        }
    }
}

async fn connect(redis_url: &str, cluster: bool) -> redis::RedisResult<Connection> {
    if cluster {
        let client = redis::cluster::ClusterClient::new(vec![redis_url])?;
        Ok(Connection::Cluster(client.get_async_connection().await?))
    } else {
        let client = redis::Client::open(redis_url)?;
        Ok(Connection::Single(
            client.get_multiplexed_async_connection().await?,
        ))
    }
}

/// Connects `schedule.publishers` Redis connections (cluster connections
/// when `cluster`), then publishes on schedule from a dedicated thread.
pub fn spawn(
    redis_url: String,
    cluster: bool,
    schedule: Arc<Schedule>,
    topics: Arc<Vec<String>>,
    stats: Arc<Stats>,
    epoch: Instant,
) -> Result<Running, String> {
    let (started_tx, started) = oneshot::channel();
    let (finished_tx, finished) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("publisher runtime: {e}"))?;
    let publishers = schedule.publishers;
    let work = async move {
        let mut conns = Vec::new();
        for _ in 0..publishers {
            let conn = timeout(CONNECT_TIMEOUT, connect(&redis_url, cluster))
                .await
                .map_err(|_| "redis: connect timed out".to_string())?
                .map_err(|e| format!("redis: {e}"))?;
            conns.push(conn);
        }
        Ok(conns)
    };
    std::thread::Builder::new()
        .name("publishers".into())
        .spawn(move || {
            runtime.block_on(async move {
                let conns = match work.await {
                    Ok(conns) => conns,
                    Err(err) => {
                        let _ = started_tx.send(Err(err));
                        return;
                    }
                };
                let start = Instant::now() + Duration::from_millis(20);
                let _ = started_tx.send(Ok(start));
                let mut publishers = JoinSet::new();
                for (index, conn) in conns.into_iter().enumerate() {
                    publishers.spawn(run(
                        index as u64,
                        schedule.clone(),
                        topics.clone(),
                        conn,
                        stats.clone(),
                        epoch,
                        start,
                    ));
                }
                // Bounded by the schedule plus one PUBLISH timeout per
                // message at worst; the run's deadline caps it anyway.
                while publishers.join_next().await.is_some() {}
                let _ = finished_tx.send(());
            })
        })
        .map_err(|e| format!("publisher thread: {e}"))?;
    Ok(Running { started, finished })
}

/// Publishes sequence numbers `index, index + publishers, ...` at their
/// scheduled times from `start`; `topics[seq % topics.len()]` names the
/// channel, so one topic gets everything and many topics are served
/// round-robin.
async fn run(
    index: u64,
    schedule: Arc<Schedule>,
    topics: Arc<Vec<String>>,
    mut conn: Connection,
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
        let call = Instant::now();
        let outcome = timeout(PUBLISH_TIMEOUT, conn.publish(schedule.method, topic, body)).await;
        stats.publish_call.record(call.elapsed().as_nanos() as u64);
        match outcome {
            Ok(Ok(reply)) => {
                stats.published[seq as usize].store(true, Relaxed);
                if schedule.method == Method::Publish && reply == 0 {
                    stats.publish_no_receivers.fetch_add(1, Relaxed);
                }
            }
            Ok(Err(e)) => stats.error(format!("publish: {:?}", e.kind())),
            Err(_) => stats.error("publish: timed out"),
        }
        seq += schedule.publishers;
    }
}

/// Records one unrelated message (`{"warmup":true}`) on each topic with
/// FCALL, so every topic has a history and every subscribe reply carries
/// a position before the run's first message.
pub async fn warm_up(redis_url: &str, cluster: bool, topics: &[String]) -> Result<(), String> {
    let mut conn = timeout(CONNECT_TIMEOUT, connect(redis_url, cluster))
        .await
        .map_err(|_| "redis: connect timed out".to_string())?
        .map_err(|e| format!("redis: {e}"))?;
    for topic in topics {
        let body = r#"{"warmup":true}"#.to_string();
        timeout(PUBLISH_TIMEOUT, conn.publish(Method::Fcall, topic, body))
            .await
            .map_err(|_| "warm-up FCALL timed out".to_string())?
            .map_err(|e| format!("warm-up FCALL on {topic}: {e} (is the gateway's history on?)"))?;
    }
    Ok(())
}
