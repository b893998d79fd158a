//! The `topicgate` binary: `run` (default), `check`, `token`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Map, Value};
use topicgate::config::watch::{self, Reloader};
use topicgate::config::{self, Config, LogFormat};
use topicgate::server::Gateway;

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
    let path = config::resolve_path(cli.config.as_deref());
    let loaded = config::load(&path, None);
    let path_for_run = path.clone();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => match loaded {
            Ok(config) => {
                print!("{}", config.raw.to_masked_toml());
                eprintln!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(err) => config_failure(&err),
        },
        Command::Token { sub, claims, ttl } => match loaded {
            Ok(config) => token(&config, sub, &claims, ttl),
            Err(err) => config_failure(&err),
        },
        Command::Run => match loaded {
            Ok(config) => run(config, path_for_run, cli.log_format.as_deref()),
            Err(err) => config_failure(&err),
        },
    }
}

fn config_failure(err: &config::ConfigError) -> ExitCode {
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
    let now = topicgate::auth::now();
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

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
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
        if config.auth.mode == topicgate::auth::Mode::Bypass {
            tracing::warn!(
                "auth.mode = \"bypass\": any client may authorize; never use this in production"
            );
        }
        let bind = config.server.bind;
        let listener = match tokio::net::TcpListener::bind(bind).await {
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
        tracing::info!(addr = %gateway.addr, "topicgate listening");
        let reloader = Reloader::new(
            path,
            None,
            gateway.config.clone(),
            gateway.shared.metrics.clone(),
        );
        // Without a watcher the gateway still serves; reloads need a restart.
        let _watcher = watch::spawn(reloader)
            .map_err(|err| tracing::error!(error = %err, "cannot watch the config file"))
            .ok();
        let left = gateway.run_until(topicgate::shutdown::signal()).await;
        if left > 0 {
            tracing::warn!(connections = left, "shutdown grace ran out");
        }
        ExitCode::SUCCESS
    })
}
