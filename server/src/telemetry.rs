//! Logging set-up for the binary: a filter from `RUST_LOG` and text or JSON lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global tracing subscriber. A bad filter falls back to `info` and says so.
pub fn init(config: &Config) {
    let (filter, bad_filter) = match EnvFilter::try_new(&config.log) {
        Ok(filter) => (filter, None),
        Err(err) => (EnvFilter::new("info"), Some(err.to_string())),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let (Ok(()), Some(err)) = (installed, bad_filter) {
        tracing::warn!(error = %err, "RUST_LOG is not a valid filter; logging at info");
    }
}
