//! The `drydock` binary: parse settings, start logging, run.

use drydock::cli::ClientCommand;
use drydock::config::{Cli, Command, ImageCommand, LogFormat};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse_process();
    // The client subcommands talk to a server; they write no server logs.
    if let Some(client) = cli.command.clone().and_then(ClientCommand::from_command) {
        return drydock::cli::run(client).await;
    }
    drydock::telemetry::init(&cli.config);
    let log_format = cli.config.log_format;
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => drydock::migrate(&cli.config).await,
        Command::Serve => serve(cli.config).await,
        Command::Image(ImageCommand::Build) => {
            drydock::sandbox_image::build_in_foreground(&cli.config).await
        }
        Command::Login(_) | Command::Task(_) => Ok(()),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // Said once: JSON logs are read by machines, so the error is a log record there; a
            // person at a terminal gets one plain line (the text log would repeat it with a
            // timestamp on the same stream).
            match log_format {
                LogFormat::Json => tracing::error!("{err:#}"),
                LogFormat::Text => eprintln!("drydock: {err:#}"),
            }
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

/// Resolves on SIGINT or SIGTERM. The handlers are installed now, not at the first poll, so a
/// signal that arrives right after start-up (before `run` polls this) still shuts down cleanly.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let interrupt = async {
            match interrupt {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        let terminate = async {
            match terminate {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = interrupt => {},
            () = terminate => {},
        }
    }
}
