//! The `shoprank` command line: `serve`, `train`, `eval`, `embed`. It parses
//! arguments, sets up logging and the thread pool, and calls the library.
//! `anyhow` lives here, at the edge; the library has typed errors.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
#[cfg(feature = "offline")]
use shoprank::OfflineCommand;
use shoprank::{configure_threads, serve, shutdown_signal, Settings};

/// mimalloc keeps freed tensor buffers for reuse; with the system allocator
/// every large activation was a fresh mmap whose pages the kernel had to zero
/// (6% of encoder time in a profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "shoprank", version, about = "Product ranking with a BERT encoder and a trained scoring head")]
struct Cli {
    /// Configuration file layered over the built-in defaults (env: SHOPRANK_CONFIG).
    #[arg(long, global = true, env = "SHOPRANK_CONFIG")]
    config: Option<PathBuf>,
    /// Encoder preset, overriding encoder.preset: `all-MiniLM-L6-v2`
    /// (English, the default) or `m3e-small` (Chinese). It picks the
    /// encoder, its window, the bundle trained on it and the search thresholds.
    #[arg(long, global = true)]
    preset: Option<String>,
    /// Log line format: `text` (coloured only on a terminal) or `json` (one
    /// object per line, for log collectors).
    #[arg(long, global = true, env = "SHOPRANK_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        /// Bind address, overriding server.addr.
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
    // `train`, `eval`, `eval-search`, `embed`, `scale-data`, `store` and
    // `report`: the library's `OfflineCommand`, listed after `serve`.
    #[cfg(feature = "offline")]
    #[command(flatten)]
    Offline(Box<OfflineCommand>),
}

/// Errors end the process with one line naming every cause once.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ", skipping a cause whose text
/// the message just before it already includes (many errors quote their
/// source).
fn error_chain(error: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut previous = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !previous.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        previous = text;
    }
    line
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let mut settings =
        Settings::load_with_preset(cli.config.as_deref(), cli.preset.as_deref()).context("loading configuration")?;
    configure_threads(settings.encoder.threads).context("starting the thread pool")?;
    match cli.command {
        Command::Serve { addr } => {
            if let Some(addr) = addr {
                settings.server.addr = addr;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .max_blocking_threads(settings.server.blocking_threads)
                .enable_all()
                .build()?;
            Ok(runtime.block_on(serve(settings, shutdown_signal()))?)
        }
        #[cfg(feature = "offline")]
        Command::Offline(command) => command.run(&settings),
    }
}

/// Logs go to standard error, filtered by `SHOPRANK_LOG` (default
/// `shoprank=info,warn`). Colour codes only when standard error is a terminal,
/// so a log file or a collector gets plain text.
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("SHOPRANK_LOG").unwrap_or_else(|_| "shoprank=info,warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}
