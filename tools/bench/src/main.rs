//! topicgate-bench: load for a running gateway, one JSON result on stdout.
//!
//! Opens `--connections` WebSocket clients to the gateway, authorizes each
//! with an HS256 token it signs itself, subscribes them per `--scenario`,
//! publishes to Redis at `--rate` for `--duration` seconds and measures what
//! arrives (sequence number and send time travel in each payload). Given
//! `--pid`, it also reads the gateway's RSS and CPU time from /proc.
//!
//! Scenarios:
//! - `fanout`: every client on one topic; each publish reaches all of them.
//! - `spread`: one topic per client; publishes go round-robin over them.
//! - `idle`: connect, authorize, subscribe, hold `--duration` seconds;
//!   reports the gateway's RSS per connection.
//! - `storm`: connect, authorize, subscribe as fast as `--concurrency`
//!   allows; reports the gateway's CPU time per connection.
//! - `drop`: clients on `--topics` topics, each client's TCP connection
//!   aborted every `--drop-min-ms`..`--drop-max-ms` and reopened after
//!   `--reconnect-ms`, resubscribing with `since` (or without, given
//!   `--no-recover`) while FCALL publishes flow; reports delivery %,
//!   duplicates, out-of-order deliveries and replay latency.
//! - `recovery-storm`: every client dropped at once, `--messages` published
//!   with FCALL, every client back at once with `since`; reports the time
//!   until all have recovered, gateway and Redis CPU, 1013 closes.
//!
//! `--publish-with fcall` makes fanout and spread record every message
//! (the cost of history); drop and recovery-storm always use FCALL.
//!
//! Everything is bounded: each connection's setup (`--setup-timeout`), the
//! drain after the last publish (`--drain`) and the whole run
//! (`--deadline`). Only loopback targets are accepted. Progress goes to
//! stderr; the JSON result is the only thing on stdout.

mod client;
mod publisher;
mod recover;
mod run;
mod stats;
mod sys;
mod track;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use redis::IntoConnectionInfo;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Fanout,
    Spread,
    Idle,
    Storm,
    Drop,
    RecoveryStorm,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Spread => "spread",
            Scenario::Idle => "idle",
            Scenario::Storm => "storm",
            Scenario::Drop => "drop",
            Scenario::RecoveryStorm => "recovery-storm",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "topicgate-bench",
    version,
    about = "Load a running topicgate and report one JSON result"
)]
pub struct Args {
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// The gateway's WebSocket URL (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:3000/ws")]
    pub url: String,
    /// Where to PUBLISH (loopback only); the gateway must use the same Redis.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    pub redis: String,
    /// `--redis` is a seed node of a Redis Cluster: publish with SPUBLISH,
    /// routed to each channel's shard (for `broker.kind = "redis-cluster"`).
    #[arg(long)]
    pub redis_cluster: bool,
    /// WebSocket connections to open.
    #[arg(long, short = 'c', default_value_t = 100)]
    pub connections: usize,
    /// Publishes per second, all publishers together (fanout, spread).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of publishing (fanout, spread) or of holding (idle).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// The gateway's HS256 secret (`auth.jwt.secret`).
    #[arg(long, env = "TOPICGATE_BENCH_SECRET")]
    pub secret: String,
    /// `iss` claim, when the gateway checks `auth.jwt.issuer`.
    #[arg(long)]
    pub issuer: Option<String>,
    /// `aud` claim, when the gateway checks `auth.jwt.audience`.
    #[arg(long)]
    pub audience: Option<String>,
    /// The gateway's process id, for RSS and CPU figures from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Publisher tasks (each with its own Redis connection).
    #[arg(long, default_value_t = 4)]
    pub publishers: u64,
    /// Connection setups in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Extra bytes of padding in each payload.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Source addresses 127.0.0.2.. to spread connections over (each binds
    /// with IP_BIND_ADDRESS_NO_PORT); default: none up to 20,000
    /// connections, then one per 20,000.
    #[arg(long)]
    pub source_addrs: Option<u8>,
    /// idle/storm: every client on one topic instead of one topic each.
    #[arg(long)]
    pub shared_topic: bool,
    /// How to publish: `publish` (plain PUBLISH) or `fcall` (FCALL
    /// topicgate_publish, recorded). drop and recovery-storm always use fcall.
    #[arg(long, value_enum, default_value_t = publisher::Method::Publish)]
    pub publish_with: publisher::Method,
    /// Redis's process id, for its CPU time from /proc.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// drop: resubscribe without `since` (the baseline without recovery).
    #[arg(long)]
    pub no_recover: bool,
    /// drop, recovery-storm: topics the clients are spread over.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// drop: shortest time a connection lives before it is aborted, in ms.
    #[arg(long, default_value_t = 3000)]
    pub drop_min_ms: u64,
    /// drop: longest time a connection lives before it is aborted, in ms.
    #[arg(long, default_value_t = 5000)]
    pub drop_max_ms: u64,
    /// drop: time between an abort and the reconnect, in ms.
    #[arg(long, default_value_t = 2000)]
    pub reconnect_ms: u64,
    /// recovery-storm: messages published while every client is away.
    #[arg(long, default_value_t = 50)]
    pub messages: u64,
    /// Seconds one TCP connect may take.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Seconds one connection's connect + authorize + subscribe may take.
    #[arg(long, default_value_t = 30)]
    pub setup_timeout: u64,
    /// Seconds to wait for outstanding deliveries after the last publish.
    #[arg(long, default_value_t = 5)]
    pub drain: u64,
    /// Hard limit on the whole run, in seconds (default: 120 + duration + drain).
    #[arg(long)]
    pub deadline: Option<u64>,
    /// Runtime worker threads (default: the CPUs this process may use).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Connections one source address serves before another is added.
const PER_SOURCE_ADDR: usize = 20_000;
/// File descriptors kept free for Redis, the runtime and stdio.
const SPARE_FDS: u64 = 64;
/// Bound on the per-client message bitmaps of drop and recovery-storm
/// (8 Gbit = 1 GiB).
const MAX_TRACKED_BITS: u64 = 8 << 30;

fn main() -> ExitCode {
    let args = Args::parse();
    let mut report = Map::new();
    report.insert("scenario".into(), json!(args.scenario.name()));
    let nofile = sys::raise_nofile_limit();
    let plan = match plan(&args, &nofile) {
        Ok(plan) => plan,
        Err(err) => {
            report.insert("error".into(), json!(err));
            println!("{}", Value::Object(report));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            report.insert("error".into(), json!(format!("runtime: {err}")));
            println!("{}", Value::Object(report));
            return ExitCode::FAILURE;
        }
    };
    let deadline = Duration::from_secs(args.deadline.unwrap_or(120 + args.duration + args.drain));
    let stats = Arc::new(stats::Stats::new(plan.publishes));
    let outcome = runtime.block_on(async {
        tokio::time::timeout(deadline, run::run(&args, &plan, &stats, &mut report)).await
    });
    let failed = match outcome {
        Ok(Ok(())) => false,
        Ok(Err(err)) => {
            report.insert("error".into(), json!(err));
            true
        }
        Err(_) => {
            let err = format!("deadline of {}s exceeded", deadline.as_secs());
            report.insert("error".into(), json!(err));
            true
        }
    };
    report.insert(
        "bench".into(),
        json!({
            "threads": plan.threads,
            "source_addrs": plan.source_addrs,
            "nofile_limit": nofile.as_ref().ok(),
            "cpu_util_window": report.get("bench_cpu_util").cloned(),
        }),
    );
    report.remove("bench_cpu_util");
    report.insert("errors".into(), json!(stats.errors()));
    println!("{}", Value::Object(report));
    runtime.shutdown_timeout(Duration::from_secs(1));
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What [`Args`] resolve to once checked.
pub struct Plan {
    pub target: client::Target,
    pub threads: usize,
    pub source_addrs: u8,
    /// Publishes the run will attempt (fanout, spread), 0 otherwise.
    pub publishes: usize,
}

impl Plan {
    /// The source address of connection `i`, when spreading.
    pub fn source(&self, i: usize) -> Option<IpAddr> {
        match (self.source_addrs, self.target.addr) {
            (0, _) | (_, SocketAddr::V6(_)) => None,
            (n, _) => {
                let last = 2 + (i % usize::from(n)) as u8;
                Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
            }
        }
    }
}

fn plan(args: &Args, nofile: &Result<u64, String>) -> Result<Plan, String> {
    let target = parse_ws_url(&args.url, Duration::from_secs(args.connect_timeout))?;
    check_redis_url(&args.redis)?;
    if let Ok(limit) = nofile
        && args.connections as u64 + SPARE_FDS > *limit
    {
        return Err(format!(
            "{} connections need about {} open files but the limit is {limit}: raise `ulimit -n`",
            args.connections,
            args.connections as u64 + SPARE_FDS
        ));
    }
    if args.connections == 0 || args.concurrency == 0 || args.publishers == 0 {
        return Err("--connections, --concurrency and --publishers must be positive".into());
    }
    let publishing = matches!(
        args.scenario,
        Scenario::Fanout | Scenario::Spread | Scenario::Drop | Scenario::RecoveryStorm
    );
    if publishing && !(args.rate > 0.0 && args.rate <= 1e6) {
        return Err("--rate must be in (0, 1000000]".into());
    }
    if args.topics == 0 || args.topics > args.connections {
        return Err("--topics must be in 1..=--connections".into());
    }
    if args.drop_min_ms == 0 || args.drop_max_ms < args.drop_min_ms || args.drop_max_ms > 600_000 {
        return Err("--drop-min-ms must be positive and at most --drop-max-ms (≤ 600000)".into());
    }
    if args.reconnect_ms > 600_000 || !(1..=1_000_000).contains(&args.messages) {
        return Err("--reconnect-ms must be ≤ 600000 and --messages in 1..=1000000".into());
    }
    let publishes = match args.scenario {
        Scenario::RecoveryStorm => args.messages as usize,
        _ if publishing => (args.rate * args.duration as f64).round() as usize,
        _ => 0,
    };
    // drop and recovery-storm keep one bit per message per client.
    let tracked = matches!(args.scenario, Scenario::Drop | Scenario::RecoveryStorm);
    if tracked && (publishes as u64).saturating_mul(args.connections as u64) > MAX_TRACKED_BITS {
        return Err(format!(
            "{publishes} messages × {} clients is more to track than {} MiB: lower --rate, --duration or -c",
            args.connections,
            MAX_TRACKED_BITS / 8 / 1024 / 1024
        ));
    }
    let source_addrs = match args.source_addrs {
        Some(n) if n > 250 => return Err("--source-addrs must be at most 250".into()),
        Some(n) => n,
        // The kernel's ephemeral ports (about 28k here) are plenty for one
        // address up to PER_SOURCE_ADDR; beyond, one address per step.
        None if args.connections <= PER_SOURCE_ADDR => 0,
        None => args.connections.div_ceil(PER_SOURCE_ADDR).min(250) as u8,
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    Ok(Plan {
        target,
        threads: threads.max(1),
        source_addrs,
        publishes,
    })
}

/// `ws://HOST:PORT/PATH` with a loopback HOST.
fn parse_ws_url(url: &str, connect_timeout: Duration) -> Result<client::Target, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("--url {url}: expected ws://host:port/path"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = loopback_addr(authority, 80).map_err(|e| format!("--url {url}: {e}"))?;
    let path = if path.is_empty() { "/" } else { path };
    Ok(client::Target {
        addr,
        url: format!("ws://{authority}{path}"),
        connect_timeout,
    })
}

/// `host[:port]` as a loopback socket address; anything else is refused:
/// the bench only ever loads this machine.
fn loopback_addr(authority: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return require_loopback(addr);
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| "bad port".to_string())?),
        None => (authority, default_port),
    };
    let ip = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other
            .trim_matches(['[', ']'])
            .parse()
            .map_err(|_| format!("host {other} is not an IP address or localhost"))?,
    };
    require_loopback(SocketAddr::new(ip, port))
}

fn require_loopback(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(format!("{addr} is not a loopback address"))
    }
}

fn check_redis_url(url: &str) -> Result<(), String> {
    let info = url
        .into_connection_info()
        .map_err(|e| format!("--redis {url}: {e}"))?;
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => {
            loopback_addr(&format!("{host}:{port}"), *port).map(|_| ())
        }
        redis::ConnectionAddr::Unix(_) => Ok(()),
        _ => Err(format!(
            "--redis {url}: only plain TCP to loopback or a unix socket"
        )),
    }
    .map_err(|e| format!("--redis: {e}"))
}
