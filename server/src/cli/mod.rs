//! The `drydock` command-line client: `login`, `task run|list|show|logs|diff|stop|message`,
//! talking to a drydock server's public API with a personal API token.

/// The client's User-Agent starts with this (the server records such tasks as `cli`).
pub const USER_AGENT_PREFIX: &str = "drydock-cli/";
