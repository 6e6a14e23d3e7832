//! What an agent is: its CLI, keys, models, argv template, MCP config and parser.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::AgentError;

/// The home directory of the sandbox user that runs every agent (uid 1000).
pub const AGENT_HOME: &str = "/home/agent";
/// The sandbox user's name.
pub const AGENT_USER: &str = "agent";
/// The uid of the sandbox user; Claude Code refuses to skip permissions as root.
pub const AGENT_UID: u32 = 1000;
/// Where the repository is checked out inside the sandbox.
pub const WORKDIR: &str = "/workspace";

/// One agent CLI the registry knows how to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDefinition {
    /// Stable id used in the API and the database (`claude`, `codex`, ...).
    pub id: String,
    /// Name shown to users.
    pub name: String,
    /// The API keys this agent can use, in order of preference; the first is
    /// the one needed when a model does not name its own provider.
    pub keys: Vec<KeySpec>,
    /// The models offered; the first is the default.
    pub models: Vec<ModelDefinition>,
    /// The argv template. Elements may contain `{model}` and `{prompt}`; the
    /// whole-element tokens `{resume}` and `{mcp}` expand to [`Self::resume`]
    /// and [`Self::mcp_args`] (or to nothing), and `{prompt_words}` to the
    /// prompt split at spaces (for CLIs that re-join their arguments).
    pub argv: Vec<String>,
    /// Arguments that make a follow-up continue the previous session; empty
    /// when the CLI cannot resume (the follow-up then starts afresh).
    pub resume: Vec<String>,
    /// Arguments added when MCP servers are configured; `{mcp_config}` is
    /// replaced by the config file's path.
    pub mcp_args: Vec<String>,
    /// Plain environment variables always set for this CLI (never secrets).
    pub env: BTreeMap<String, String>,
    /// Where and how MCP servers are written; `None` when the CLI has no MCP support.
    pub mcp: Option<McpConfigSpec>,
    /// Base URLs set for this agent in the agents file, by provider; they win
    /// over the server-wide `DRYDOCK_*_BASE_URL` settings.
    pub base_urls: BTreeMap<String, String>,
    /// Which output parser reads this CLI's stdout.
    pub parser: ParserKind,
}

/// An API key an agent reads, and how the CLI receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// Key provider as stored per user (`anthropic`, `openai`, `gemini`, `cursor`, `copilot`, ...).
    pub provider: String,
    /// Environment variables the key is written to (some CLIs read several names).
    pub env: Vec<String>,
    /// Environment variable that carries a gateway base URL for this provider,
    /// when the CLI takes it from the environment (Codex and opencode take it
    /// from their config file instead, see [`McpFormat`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url_env: Option<String>,
    /// Plain environment variables (never secrets) set when this key is the one a run uses,
    /// before the key and the base URL: the mode a CLI needs for this provider (Copilot CLI's
    /// `COPILOT_PROVIDER_TYPE`, say) and the provider's own base URL, which a configured or
    /// gateway base URL in `base_url_env` replaces.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
}

/// A model offered by an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDefinition {
    /// The CLI's own model id, passed as `{model}`.
    pub id: String,
    /// Name shown to users.
    pub name: String,
    /// The key provider this model needs; defaults to the agent's first key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// Where an agent's MCP configuration goes and in which format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfigSpec {
    /// The file's format (which also decides escaping and naming rules).
    pub format: McpFormat,
    /// Absolute path of the file inside the sandbox.
    pub path: String,
    /// Whether the CLI can talk to HTTP (streamable HTTP) servers.
    #[serde(default = "yes")]
    pub http: bool,
}

fn yes() -> bool {
    true
}

/// The MCP config dialects drydock can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum McpFormat {
    /// Claude Code `--mcp-config` JSON: `mcpServers`, `type: stdio|http`.
    Claude,
    /// Codex `~/.codex/config.toml`: `[mcp_servers.NAME]`, plus the gateway provider.
    Codex,
    /// Gemini CLI `~/.gemini/settings.json`: `mcpServers`, `httpUrl` for HTTP.
    Gemini,
    /// Cursor `~/.cursor/mcp.json`: `mcpServers`, `url` for HTTP.
    Cursor,
    /// Copilot CLI `~/.copilot/mcp-config.json`: `type: local|http`, `tools`.
    Copilot,
    /// opencode `opencode.json`: `mcp`, `type: local|remote`, plus provider base URLs.
    Opencode,
    /// Generic `mcpServers` JSON (the common Claude Desktop shape) for operator-defined agents.
    McpServersJson,
}

/// Which parser turns an agent's stdout lines into [`crate::AgentEvent`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ParserKind {
    /// Claude Code `-p --output-format stream-json --verbose`.
    ClaudeStreamJson,
    /// Cursor CLI `-p --output-format stream-json`.
    CursorStreamJson,
    /// `codex exec --json` JSONL.
    CodexJson,
    /// Copilot CLI `--output-format json` JSONL.
    CopilotJson,
    /// Gemini CLI `-o stream-json` (also reads single-line `-o json`).
    GeminiStreamJson,
    /// `opencode run --format json`.
    OpencodeJson,
    /// Anything else: each line is text.
    Text,
}

impl AgentDefinition {
    /// Whether this agent's CLI can be pointed at a gateway for `provider`'s API: its key has a
    /// base-URL variable, or its config file carries the base URL (Codex for OpenAI, opencode
    /// for any of its providers). Cursor CLI cannot, nor Copilot CLI with a GitHub token (its
    /// bring-your-own-key providers can: their keys have `COPILOT_PROVIDER_BASE_URL`).
    pub fn takes_base_url(&self, provider: &str) -> bool {
        let Some(key) = self.key(provider) else {
            return false;
        };
        key.base_url_env.is_some()
            || match self.mcp.as_ref().map(|m| m.format) {
                Some(McpFormat::Codex) => provider == "openai",
                Some(McpFormat::Opencode) => true,
                _ => false,
            }
    }

    /// The default model (the first one offered).
    pub fn default_model(&self) -> Option<&ModelDefinition> {
        self.models.first()
    }

    /// Finds a model by its CLI id.
    pub fn model(&self, id: &str) -> Option<&ModelDefinition> {
        self.models.iter().find(|m| m.id == id)
    }

    /// The key provider a model needs: its own, or the agent's first.
    pub fn provider_for<'a>(&'a self, model: &'a ModelDefinition) -> Option<&'a str> {
        model
            .provider
            .as_deref()
            .or_else(|| self.keys.first().map(|k| k.provider.as_str()))
    }

    /// The model a request means: `id`, or the default when `None`.
    pub fn resolve_model(&self, id: Option<&str>) -> Result<&ModelDefinition, AgentError> {
        match id {
            Some(id) => self.model(id).ok_or_else(|| AgentError::UnknownModel {
                agent: self.id.clone(),
                model: id.to_owned(),
            }),
            None => self
                .default_model()
                .ok_or_else(|| AgentError::InvalidDefinition {
                    agent: self.id.clone(),
                    message: "no models".into(),
                }),
        }
    }

    /// The key provider a run with this model (default when `None`) needs,
    /// e.g. to tell a user which key is missing before they start a task.
    pub fn required_provider(&self, model: Option<&str>) -> Result<&str, AgentError> {
        let model = self.resolve_model(model)?;
        self.provider_for(model)
            .ok_or_else(|| AgentError::InvalidDefinition {
                agent: self.id.clone(),
                message: "no key providers".into(),
            })
    }

    /// The key spec for a provider.
    pub fn key(&self, provider: &str) -> Option<&KeySpec> {
        self.keys.iter().find(|k| k.provider == provider)
    }

    /// Whether a follow-up can continue the previous session.
    pub fn supports_resume(&self) -> bool {
        !self.resume.is_empty()
    }
}
