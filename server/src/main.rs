//! The `drydock` binary: parse settings, start logging, run.

use clap::Parser;
use drydock::cli::ClientCommand;
use drydock::config::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The client subcommands talk to a server; they write no server logs.
    if let Some(client) = cli.command.clone().and_then(ClientCommand::from_command) {
        return drydock::cli::run(client).await;
    }
    drydock::telemetry::init(&cli.config);
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => drydock::migrate(&cli.config).await,
        Command::Serve => serve(cli.config).await,
        Command::Login(_) | Command::Task(_) => Ok(()),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("drydock: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: drydock::config::Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {}: {err}", config.addr))?;
    drydock::run(config, listener, shutdown_signal()).await
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
