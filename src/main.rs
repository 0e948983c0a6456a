//! The `vectorize` command: `vectorize serve` runs the service until
//! SIGTERM or Ctrl-C, then stops gracefully; the other subcommands are the
//! command-line client of a running service (`cli`).

mod cli;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use vectorize::config::LogFormat;
use vectorize::{App, ConfigArgs};

#[derive(Parser)]
#[command(
    name = "vectorize",
    version,
    about = "Model-ingestion service, and its command-line client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve {
        /// A TOML file with any of the settings below (keys as the flag names, with `_`).
        #[arg(long, env = "VECTORIZE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Box<ConfigArgs>,
    },
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, settings) = match Cli::parse().command {
        Command::Serve { config, settings } => (config, settings),
        Command::Client(command) => {
            let exit = cli::run(command).await;
            // Exit now: a question left unanswered after a second Ctrl-C
            // must not keep the process waiting for its input.
            std::process::exit(exit.code().into());
        }
    };
    let file = match config {
        Some(path) => ConfigArgs::from_toml_file(&path)?,
        None => ConfigArgs::default(),
    };
    let config = (*settings).or(file).resolve()?;
    init_logging(config.log_format);
    let app = App::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    app.shutdown().await;
    // Exit now rather than let the runtime wait for blocking jobs (hashing a
    // large partial file, a libgit2 checkout) that ignore cancellation: what
    // they leave behind is resumed at the next start, and the contract wants
    // the process gone within 10 s.
    std::process::exit(0);
}

fn init_logging(format: LogFormat) {
    // Without RUST_LOG: `info` for the service, and the embedded database's
    // start-up chatter only from `warn` up.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,surrealdb=warn,surrealkv=warn")
    });
    // The log goes to stderr, coloured only when a person watches it there.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves at the first SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM can be watched");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
