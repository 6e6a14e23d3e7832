//! The agent registry of drydock: launch plans, MCP config files and output
//! parsers for agent CLIs.
//!
//! Pure code: it turns (agent, model, prompt, key, connectors, options) into a
//! [`LaunchPlan`], and an agent's output lines into [`AgentEvent`]s. No
//! Docker, SQL, HTTP or environment reading; the server hands it everything.

mod definition;
mod error;
mod launch;
mod mcp;
mod parser;
mod registry;

pub use definition::{
    AGENT_HOME, AGENT_UID, AGENT_USER, AgentDefinition, KeySpec, McpConfigSpec, McpFormat,
    ModelDefinition, ParserKind, WORKDIR,
};
pub use error::AgentError;
pub use launch::{LaunchPlan, LaunchRequest, PlanFile, plan_for};
pub use mcp::{
    McpServer, McpTransport, escape_claude, escape_copilot, escape_gemini_env,
    escape_gemini_settings, render_config, sanitized_names,
};
pub use parser::{AgentEvent, EventKind, OutputParser, Verdict};
pub use registry::AgentRegistry;
