//! topicgate-baseline: the minimal Redis Pub/Sub to WebSocket bridge that
//! topicgate's benchmarks measure the gateway against (docs/BENCHMARKS.md).
//!
//! It is what a competent engineer writes in an afternoon with
//! tokio-tungstenite: one task per connection reading requests and one
//! writing a bounded queue, a mutex-guarded map of topic -> subscribers,
//! one Redis Pub/Sub connection, each message encoded once and its bytes
//! shared by every subscriber. It speaks exactly the part of
//! docs/PROTOCOL.md that `topicgate-bench` uses, with the gateway's frames
//! byte for byte: the greeting, `authorization` (HS256), `subscribe` and
//! `unsubscribe` (confirmed once Redis holds the topic), and deliveries
//! without history positions. So the gateway's CPU per delivery, latency,
//! memory per connection and connection-storm cost can be set against it in
//! the same run, with the same load tool.
//!
//! What it leaves out: ACLs and claims, history and recovery, rate and
//! subscription limits, slow-consumer disconnects (a full queue just loses
//! that client's message; the count is printed at exit), auth timeouts,
//! token expiry after authorization, heartbeats and idle timeouts, config
//! files and reload, metrics, health endpoints, TLS, Redis Cluster, a
//! reconnect to Redis (the process exits when its Redis connection ends)
//! and a graceful shutdown (SIGINT/SIGTERM exit at once).

mod auth;
mod connection;
mod frame;
mod hub;
mod pubsub;

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::auth::Auth;
use crate::hub::Hub;

#[derive(Parser)]
#[command(
    name = "topicgate-baseline",
    version,
    about = "Minimal Redis Pub/Sub to WebSocket bridge, for benchmarks"
)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:3901")]
    bind: SocketAddr,
    /// Redis to subscribe to.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis: String,
    /// HS256 secret of the clients' tokens.
    #[arg(long)]
    secret: String,
}

#[tokio::main]
async fn main() {
    let code = match run(Args::parse()).await {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("topicgate-baseline: {err}");
            1
        }
    };
    // Exit from here: returning would drop the runtime, tearing every
    // connection down and failing the Redis commands still queued, for
    // nothing but noise on stderr.
    std::process::exit(code)
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let auth = Arc::new(Auth::new(&args.secret).map_err(|e| format!("--secret: {e}"))?);
    let (sink, messages) = pubsub::connect(&args.redis)
        .await
        .map_err(|e| format!("redis {}: {e}", args.redis))?;
    let (commands, inbox) = mpsc::unbounded_channel();
    tokio::spawn(pubsub::run_commands(sink, inbox));
    let hub = Arc::new(Hub::new(commands));
    let listener = bind(args.bind)?;
    println!("listening on {}", listener.local_addr()?);
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    // A task of its own, so that a signal leaves the Redis link alone
    // until the process exits.
    let pump = tokio::spawn(pubsub::pump(messages, hub.clone()));
    let outcome = tokio::select! {
        () = accept(listener, hub.clone(), auth) => Ok(()),
        _ = pump => Err("the redis connection ended".into()),
        _ = interrupt.recv() => Ok(()),
        _ = terminate.recv() => Ok(()),
    };
    eprintln!("{} deliveries dropped on full queues", hub.dropped());
    outcome
}

/// A listener with a backlog of 4096 (tokio's `TcpListener::bind` asks for
/// 1024, which a connection storm overflows).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn accept(listener: TcpListener, hub: Arc<Hub>, auth: Arc<Auth>) {
    let mut next_id = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Deliveries are small frames; Nagle would hold them back.
                let _ = stream.set_nodelay(true);
                next_id += 1;
                tokio::spawn(connection::serve(
                    stream,
                    next_id,
                    hub.clone(),
                    auth.clone(),
                ));
            }
            Err(err) => {
                // Out of file descriptors, usually: back off rather than spin.
                eprintln!("accept: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
