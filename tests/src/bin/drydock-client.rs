//! The `drydock` binary's client subcommands (`login`, `task …`) as their own binary, so the
//! end-to-end tests can run the real client code as a separate process (Cargo builds binaries
//! of this package for its integration tests, not those of the `drydock` package).

use clap::Parser;

/// `drydock-client login|task …`, as `drydock login|task …`.
#[derive(Parser)]
#[command(name = "drydock")]
struct Client {
    #[command(subcommand)]
    command: drydock::cli::ClientCommand,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    drydock::cli::run(Client::parse().command).await
}
