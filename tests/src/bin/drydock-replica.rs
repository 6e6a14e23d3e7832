//! The `drydock serve` command as its own binary, so the replica tests can run several real
//! server processes and kill one with SIGKILL (Cargo builds binaries of this package for its
//! integration tests, not those of the `drydock` package). It runs the same `drydock::run` as
//! `drydock serve`, and prints `listening on ADDR` on standard output once bound. Given
//! `migrate`, it runs `drydock migrate`'s `drydock::migrate` instead.

use std::io::Write;

use drydock::config::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse_process();
    drydock::telemetry::init(&cli.config);
    if matches!(cli.command, Some(Command::Migrate)) {
        return match drydock::migrate(&cli.config).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("drydock: {err:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let listener = match tokio::net::TcpListener::bind(cli.config.addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("drydock: cannot listen on {}: {err}", cli.config.addr);
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        println!("listening on {addr}");
        let _ = std::io::stdout().flush();
    }
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match drydock::run(cli.config, listener, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("drydock: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
