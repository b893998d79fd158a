//! The `topicgate` binary: `run` (default), `check`, `token`, `publish`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hyper::body::Bytes;
use serde_json::{Map, Value};
use topicgate::{
    AuthMode, Config, ConfigError, Gateway, LogFormat, Reloader, load_config, resolve_config_path,
    shutdown_signal, unix_now, watch_config,
};

#[derive(Parser)]
#[command(version, about = "WebSocket gateway for Redis Pub/Sub")]
struct Cli {
    /// Config file (default: $TOPICGATE_CONFIG, else config/config.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format: text or json (overrides server.log_format).
    #[arg(long, global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the config and print it with secrets masked; exit 0 or 2.
    Check,
    /// Publish through a running gateway's HTTP API (POST /publish).
    Publish {
        topic: String,
        /// Sent as JSON when it parses as JSON, else as a string.
        payload: String,
        /// The gateway's base URL.
        #[arg(long, env = "TOPICGATE_URL", default_value = "http://127.0.0.1:3000")]
        url: String,
        /// The gateway's api.key.
        #[arg(long, env = "TOPICGATE__API__KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// Print a token signed with the configured HS secret (for testing).
    Token {
        /// The `sub` claim.
        #[arg(long)]
        sub: String,
        /// Extra claim `key=value`; the value is JSON when it parses, else a string.
        #[arg(long = "claim", value_name = "KEY=VALUE")]
        claims: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Publish {
        topic,
        payload,
        url,
        key,
    }) = &cli.command
    {
        return publish(topic, payload, url, key.as_deref());
    }
    let path = resolve_config_path(cli.config.as_deref());
    let loaded = load_config(&path, None);
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => match loaded {
            Ok(config) => {
                print!("{}", config.raw.to_masked_toml());
                for warning in config.warnings() {
                    eprintln!("warning: {}: {}", warning.key, warning.reason);
                }
                eprintln!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(err) => config_failure(&err),
        },
        Command::Token { sub, claims, ttl } => match loaded {
            Ok(config) => token(&config, sub, &claims, ttl),
            Err(err) => config_failure(&err),
        },
        Command::Publish { .. } => ExitCode::SUCCESS,
        Command::Run => match loaded {
            Ok(config) => run(config, path, cli.log_format.as_deref()),
            Err(err) => config_failure(&err),
        },
    }
}

fn config_failure(err: &ConfigError) -> ExitCode {
    eprintln!("{err}");
    ExitCode::from(2)
}

fn token(config: &Config, sub: String, claims: &[String], ttl: u64) -> ExitCode {
    let mut map = Map::new();
    for claim in claims {
        let Some((key, value)) = claim.split_once('=') else {
            eprintln!("--claim {claim:?}: expected KEY=VALUE");
            return ExitCode::from(2);
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        map.insert(key.to_string(), value);
    }
    let now = unix_now();
    map.insert("sub".into(), Value::String(sub));
    map.insert("iat".into(), now.into());
    map.insert("exp".into(), now.saturating_add(ttl).into());
    match config.auth.sign(map) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(2)
        }
    }
}

/// `topicgate publish`: one POST /publish over HTTP/1.1.
fn publish(topic: &str, payload: &str, url: &str, key: Option<&str>) -> ExitCode {
    let data = serde_json::from_str(payload).unwrap_or_else(|_| Value::String(payload.into()));
    let body = serde_json::json!({"topic": topic, "data": data}).to_string();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(post_publish(url, key, body)) {
        Ok((status, body)) if (200..300).contains(&status) => {
            println!("{}", published(&body));
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!(
                "{}/publish answered {status}: {}",
                url.trim_end_matches('/'),
                refusal(status, &body, key.is_some())
            );
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("cannot publish through {url}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The success line: the position when the gateway recorded the message.
fn published(body: &[u8]) -> String {
    let reply: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match (&reply["offset"], &reply["epoch"]) {
        (Value::Number(offset), Value::String(epoch)) => {
            format!("published at offset {offset} (epoch {epoch})")
        }
        _ => "published".into(),
    }
}

/// Why the gateway refused, from its reply body, with a hint where the
/// status alone says what to do.
fn refusal(status: u16, body: &[u8], sent_key: bool) -> String {
    let text = String::from_utf8_lossy(body);
    let reason = match serde_json::from_str::<Value>(&text) {
        Ok(reply) => [&reply["error"], &reply["detail"]]
            .iter()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(": "),
        Err(_) => text.trim().to_string(),
    };
    let hint = match status {
        404 => " (publishing is off: set api.key in the gateway's config)",
        401 if !sent_key => " (pass --key or set TOPICGATE__API__KEY)",
        _ => "",
    };
    format!("{reason}{hint}")
}

/// Longest reply body read back; the gateway's replies are a few bytes.
const REPLY_LIMIT: usize = 64 * 1024;

async fn post_publish(url: &str, key: Option<&str>, body: String) -> Result<(u16, Bytes), String> {
    use http_body_util::{BodyExt, Full, Limited};
    let base: hyper::Uri = url.parse().map_err(|e| format!("bad --url: {e}"))?;
    if base.scheme_str() != Some("http") {
        return Err("--url must be an http:// URL".into());
    }
    let host = base.host().ok_or("--url has no host")?;
    let port = base.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let path = format!("{}/publish", base.path().trim_end_matches('/'));
    let mut request = hyper::Request::post(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), REPLY_LIMIT)
        .collect()
        .await
        .map_err(|e| format!("reading the reply: {e}"))?
        .to_bytes();
    Ok((status, body))
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only where a terminal renders them, never into log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(config: Config, path: PathBuf, log_format: Option<&str>) -> ExitCode {
    let format = match log_format {
        None => config.server.log_format,
        Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(other) => {
            eprintln!("--log-format {other:?}: expected text or json");
            return ExitCode::from(2);
        }
    };
    init_tracing(format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        for warning in config.warnings() {
            tracing::warn!(key = %warning.key, "{}", warning.reason);
        }
        if config.auth.mode == AuthMode::Bypass {
            tracing::warn!(
                "auth.mode = \"bypass\": any client may authorize; never use this in production"
            );
        }
        let bind = config.server.bind;
        let listener = match listen(bind) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(%bind, error = %err, "cannot bind");
                return ExitCode::FAILURE;
            }
        };
        let gateway = match Gateway::start(listener, config) {
            Ok(gateway) => gateway,
            Err(err) => {
                tracing::error!(error = %err, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        // Handlers first: the "listening" line tells scripts and tests that
        // a SIGTERM from now on drains.
        let stop = shutdown_signal();
        tracing::info!(addr = %gateway.addr, "topicgate listening");
        let reloader = Reloader::new(path, None, gateway.config_sender(), gateway.metrics());
        // Without a watcher the gateway still serves; reloads need a restart.
        let _watcher = watch_config(reloader)
            .map_err(|err| tracing::error!(error = %err, "cannot watch the config file"))
            .ok();
        let left = gateway.run_until(stop).await;
        if left > 0 {
            tracing::warn!(connections = left, "shutdown grace ran out");
        }
        ExitCode::SUCCESS
    })
}

/// Binds the gateway's listener with a listen queue of 4,096 (the kernel
/// caps it at `net.core.somaxconn`): tokio's default of 1,024 overflows
/// when thousands of clients reconnect at once, and each overflowed SYN
/// costs its client a one-second retransmit (docs/BENCHMARKS.md,
/// reconnect storm).
fn listen(bind: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if bind.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restart may reuse a port whose old
    // connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(bind)?;
    socket.listen(4096)
}
