//! The `tokengate` binary: parses the command line, sets up logging, runs one command
//! and maps its outcome to the exit code (0 ok/allowed, 1 denied/failed, 2 usage or
//! config error).

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokengate::cmd::{self, Exit};
use tokengate::telemetry::Telemetry;

/// Validates OAuth 2.0 bearer access tokens (JWTs) in front of APIs.
#[derive(Debug, Parser)]
#[command(name = "tokengate", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log level filter (e.g. info, debug, tokengate=debug).
    #[arg(long, global = true, default_value = "info", env = "TOKENGATE_LOG")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar.
    Serve {
        /// Config file (else TOKENGATE_CONFIG).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the embedded demo on loopback and print a token and curl lines.
    Demo {
        /// Address of the authz_http listener.
        #[arg(long, default_value = "127.0.0.1:8181")]
        authz_http: SocketAddr,
        /// Address of the admin listener.
        #[arg(long, default_value = "127.0.0.1:9464")]
        admin: SocketAddr,
    },
    /// Parse the config, load every key source once, print the key inventory.
    CheckConfig {
        /// Config file (else TOKENGATE_CONFIG).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate one token offline; exit 0 allowed, 1 denied.
    Verify {
        /// Config file (else TOKENGATE_CONFIG).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The token, or - (default) to read it from standard input.
        token: Option<String>,
        /// Method of the request to authorize.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Path of the request to authorize.
        #[arg(long, default_value = "/")]
        path: String,
        /// Present the token as this cookie (a session's `cookie`, SPEC §10) instead of
        /// as a bearer token.
        #[arg(long)]
        cookie: Option<String>,
        /// Judge the token as if it were this Unix time.
        #[arg(long)]
        now: Option<i64>,
    },
    /// Key rotation: `rotation plan` says whose tokens a candidate config would break.
    Rotation {
        #[command(subcommand)]
        action: RotationCommand,
    },
    /// Print the key inventory.
    Keys {
        /// Config file (else TOKENGATE_CONFIG).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Read the inventory of a running instance (its admin URL) instead.
        #[arg(long, conflicts_with = "config")]
        admin: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RotationCommand {
    /// Compare the live config's keys with a candidate's, with the traffic each live key
    /// verified in the window; exit 0 when no key in use is lost, 1 otherwise.
    Plan {
        /// The config in force.
        #[arg(long)]
        config: PathBuf,
        /// The config about to be applied.
        #[arg(long)]
        candidate: PathBuf,
        /// Admin URL of a running instance (repeat for several; counts are summed).
        #[arg(long)]
        admin: Vec<String>,
        /// Prometheus URL: traffic fleet-wide from tokengate_key_verifications_total.
        #[arg(long)]
        prometheus: Option<String>,
        /// How far back traffic counts.
        #[arg(long, default_value = "24h")]
        window: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tokengate")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(Exit::Usage as u8);
        }
    };
    let env = cmd::process_env();
    // `serve` loads its config before logging starts: traces need the subscriber, which
    // is set once, so `telemetry` is read here.
    let serve_config = match &cli.command {
        Command::Serve { config } => match cmd::load_config(config.clone(), &env) {
            Ok(c) => Some(c),
            Err(exit) => return ExitCode::from(exit as u8),
        },
        _ => None,
    };
    let telemetry = match serve_config.as_ref().and_then(|c| c.telemetry.as_ref()) {
        Some(t) => {
            let _in_runtime = runtime.enter();
            match Telemetry::start(t) {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(Exit::Usage as u8);
                }
            }
        }
        None => None,
    };
    init_logging(cli.log_format, &cli.log_level, telemetry.as_ref());
    let exit = runtime.block_on(async move {
        match cli.command {
            Command::Serve { .. } => match serve_config {
                Some(config) => cmd::serve::run(config, env).await,
                None => Exit::Usage,
            },
            Command::Demo { authz_http, admin } => cmd::demo::run(authz_http, admin, env).await,
            Command::CheckConfig { config } => cmd::check_config::run(config, env).await,
            Command::Verify {
                config,
                token,
                method,
                path,
                cookie,
                now,
            } => {
                let args = cmd::verify::Args {
                    config,
                    token,
                    method,
                    path,
                    cookie,
                    now,
                };
                cmd::verify::run(args, env).await
            }
            Command::Rotation {
                action:
                    RotationCommand::Plan {
                        config,
                        candidate,
                        admin,
                        prometheus,
                        window,
                        json,
                    },
            } => {
                let args = cmd::rotation::Args {
                    config,
                    candidate,
                    admin,
                    prometheus,
                    window,
                    json,
                };
                cmd::rotation::run(args, env).await
            }
            Command::Keys {
                config,
                admin,
                json,
            } => cmd::keys::run(config, admin, json, env).await,
        }
    });
    if let Some(t) = telemetry {
        t.shutdown();
    }
    // Background refresh loops may still be sleeping; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::from(exit as u8)
}

fn init_logging(format: LogFormat, level: &str, telemetry: Option<&Telemetry>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let mut filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Trace spans are exported, never logged (whatever the level says).
    if let Ok(off) = format!("{}=off", tokengate::telemetry::TARGET).parse() {
        filter = filter.add_directive(off);
    }
    // Colours only on a terminal: a log file or a container log gets plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(telemetry.map(Telemetry::layer))
        .init();
}
