//! A command-line subscriber: connects to a topicgate, authorizes, subscribes
//! to the topics given and prints every frame the gateway sends, one JSON
//! object per line on stdout (pipe it to `jq`).
//!
//! ```sh
//! # config/dev.toml (bypass mode): no token needed
//! cargo run --example subscribe -- ws://127.0.0.1:3000/ws test-channel
//! # config/config.toml (jwt mode): pass a token
//! TOKEN=$(target/release/topicgate token --sub alice --config config/config.toml)
//! cargo run --example subscribe -- --token "$TOKEN" ws://127.0.0.1:3000/ws test-channel
//! # back after a drop: replay what was recorded after offset 2 of epoch k3x9
//! cargo run --example subscribe -- --since k3x9:2 ws://127.0.0.1:3000/ws chat-room
//! ```
//!
//! It exits (status 1) when no topic could be subscribed, e.g. without a
//! token in jwt mode, rather than wait for messages that cannot come.
//!
//! Plain `ws://` only: the crate is built without TLS for its client side;
//! reach a `wss://` endpoint through a local TLS-terminating proxy.

use std::error::Error;
use std::process::ExitCode;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const USAGE: &str = "usage: subscribe [--token TOKEN] [--since EPOCH:OFFSET] ws://HOST:PORT/ws TOPIC...\n\
                     The token may also come from TOPICGATE_TOKEN; without one, no \
                     authorization is sent (enough in bypass mode). --since asks every \
                     topic for the recorded messages after that position.";

type Socket = WebSocketStream<TcpStream>;

struct Args {
    url: String,
    topics: Vec<String>,
    token: Option<String>,
    /// `since` of every subscribe: the last position seen before a drop.
    since: Option<Value>,
}

fn parse_args() -> Result<Args, String> {
    let mut token = std::env::var("TOPICGATE_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let mut positional = Vec::new();
    let mut since = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--token" => token = Some(args.next().ok_or("--token needs a value")?),
            "--since" => {
                let value = args.next().ok_or("--since needs EPOCH:OFFSET")?;
                since = Some(parse_since(&value)?);
            }
            "-h" | "--help" => return Err(String::new()),
            _ => positional.push(arg),
        }
    }
    let mut positional = positional.into_iter();
    let url = positional.next().ok_or("missing the gateway URL")?;
    let topics: Vec<String> = positional.collect();
    if topics.is_empty() {
        return Err("name at least one topic".into());
    }
    Ok(Args {
        url,
        topics,
        token,
        since,
    })
}

/// `EPOCH:OFFSET` -> `{"epoch": EPOCH, "offset": OFFSET}`.
fn parse_since(value: &str) -> Result<Value, String> {
    let bad = || format!("--since {value:?}: expected EPOCH:OFFSET, e.g. k3x9:40");
    let (epoch, offset) = value.rsplit_once(':').ok_or_else(bad)?;
    let offset: u64 = offset.parse().map_err(|_| bad())?;
    Ok(json!({"epoch": epoch, "offset": offset}))
}

/// `ws://host:port/path` -> `host:port` to open the TCP connection to.
fn tcp_address(url: &str) -> Result<String, String> {
    if url.starts_with("wss://") {
        return Err("wss:// is not supported by this example; use ws://".into());
    }
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url:?} is not a ws:// URL"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    // Default port 80 unless one is given (IPv6 literals end in `]`).
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.contains(']'));
    Ok(if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    })
}

async fn send(socket: &mut Socket, frame: Value) -> Result<(), Box<dyn Error>> {
    eprintln!("> {frame}");
    socket.send(Message::text(frame.to_string())).await?;
    Ok(())
}

/// Reads the next text frame, printing it; `None` once the socket closed.
async fn next_frame(socket: &mut Socket) -> Result<Option<Value>, Box<dyn Error>> {
    while let Some(message) = socket.next().await {
        match message? {
            Message::Text(text) => {
                println!("{text}");
                return Ok(Some(serde_json::from_str(&text)?));
            }
            Message::Close(frame) => {
                match frame {
                    Some(frame) => {
                        eprintln!("closed by the gateway: {} {}", frame.code, frame.reason)
                    }
                    None => eprintln!("closed by the gateway"),
                }
                return Ok(None);
            }
            // Pings are answered by the library as frames are read.
            _ => {}
        }
    }
    Ok(None)
}

/// Reads frames until the reply carrying `id`; deliveries in between are
/// printed like any other frame.
async fn reply(socket: &mut Socket, id: &str) -> Result<Value, Box<dyn Error>> {
    loop {
        match next_frame(socket).await? {
            Some(frame) if frame["id"] == id => return Ok(frame),
            Some(_) => continue,
            None => return Err("connection closed before the reply".into()),
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let address = tcp_address(&args.url)?;
    let tcp = TcpStream::connect(&address).await?;
    let (mut socket, _) = tokio_tungstenite::client_async(args.url.as_str(), tcp).await?;
    eprintln!("connected to {}", args.url);

    // The greeting's second frame carries the session id (docs/PROTOCOL.md "Connect").
    let session = loop {
        let frame = next_frame(&mut socket)
            .await?
            .ok_or("connection closed before the session id")?;
        if let Some(session) = frame["session"].as_str() {
            break session.to_string();
        }
    };

    if let Some(token) = &args.token {
        let request =
            json!({"action": "authorization", "session": session, "context": token, "id": "auth"});
        socket.send(Message::text(request.to_string())).await?;
        eprintln!("> authorization (token not shown)");
        let answer = reply(&mut socket, "auth").await?;
        if let Some(error) = answer["error"].as_str() {
            return Err(format!("authorization refused: {error}: {}", answer["detail"]).into());
        }
    }
    let mut subscribed = 0;
    for (n, topic) in args.topics.iter().enumerate() {
        let id = format!("sub-{n}");
        let mut request =
            json!({"action": "subscribe", "session": session, "context": topic, "id": id});
        if let Some(since) = &args.since {
            request["since"] = since.clone();
        }
        send(&mut socket, request).await?;
        let answer = reply(&mut socket, &id).await?;
        match answer["error"].as_str() {
            Some(error) => eprintln!("subscribe {topic}: {error}: {}", answer["detail"]),
            None => subscribed += 1,
        }
    }
    if subscribed == 0 {
        return Err("no topic could be subscribed".into());
    }

    eprintln!("listening; Ctrl-C to stop");
    loop {
        tokio::select! {
            frame = next_frame(&mut socket) => {
                if frame?.is_none() {
                    return Ok(());
                }
            }
            _ = tokio::signal::ctrl_c() => {
                socket.close(None).await?;
                // Drain until the gateway hangs up, so it has seen our close;
                // how it hangs up does not matter any more.
                while let Some(Ok(_)) = socket.next().await {}
                return Ok(());
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(problem) => {
            if !problem.is_empty() {
                eprintln!("{problem}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
