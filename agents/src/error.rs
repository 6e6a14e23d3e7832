//! The one error type of the crate.

/// Everything that can go wrong while loading agent definitions or building a launch plan.
///
/// Messages are written for the person who has to act on them: an operator
/// fixing the agents file, or a user choosing a model or a connector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The agents file is not valid TOML or does not match the schema; `line`
    /// and `column` are 1-based and point at the offending spot.
    #[error("agents file, line {line}, column {column}: {message}")]
    AgentsFile {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// An agent definition parses but makes no sense (no models, no argv, a
    /// template without `{prompt}`...).
    #[error("agent `{agent}`: {message}")]
    InvalidDefinition {
        /// The agent's id.
        agent: String,
        /// What is wrong with it.
        message: String,
    },
    /// No agent with this id is registered.
    #[error("unknown agent `{0}`")]
    UnknownAgent(String),
    /// The agent does not offer the requested model.
    #[error("agent `{agent}` does not offer model `{model}`")]
    UnknownModel {
        /// The agent's id.
        agent: String,
        /// The model that was asked for.
        model: String,
    },
    /// The key the agent needs for the chosen model was not handed over.
    #[error("agent `{agent}` needs a `{provider}` API key")]
    MissingKey {
        /// The agent's id.
        agent: String,
        /// The key provider, e.g. `anthropic`.
        provider: String,
    },
    /// The agent cannot use this connector (e.g. it has no MCP support, or no
    /// HTTP transport). Returned instead of silently dropping the connector.
    #[error("agent `{agent}` cannot use connector `{server}`: {reason}")]
    UnsupportedConnector {
        /// The agent's id.
        agent: String,
        /// The connector's name as the user gave it.
        server: String,
        /// Why not.
        reason: String,
    },
    /// A connector definition cannot be written safely (empty command, an env
    /// var name with `=`, a header value with a newline...).
    #[error("connector `{server}`: {message}")]
    InvalidConnector {
        /// The connector's name as the user gave it.
        server: String,
        /// What is wrong with it.
        message: String,
    },
    /// The request cannot be turned into a process (e.g. a NUL byte in the
    /// prompt, which no argv element can carry).
    #[error("invalid launch request: {0}")]
    InvalidRequest(String),
    /// A config file could not be serialized.
    #[error("could not render {path}: {message}")]
    Render {
        /// Path of the file inside the sandbox.
        path: String,
        /// The serializer's message.
        message: String,
    },
}
