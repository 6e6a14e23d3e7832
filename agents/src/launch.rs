//! Launch plans: what the runner executes in the sandbox for one agent turn.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::definition::{AGENT_HOME, AGENT_UID, AGENT_USER, AgentDefinition, ParserKind, WORKDIR};
use crate::error::AgentError;
use crate::mcp::{McpServer, render_config, sanitized_names};
use crate::parser::OutputParser;
use crate::registry::AgentRegistry;

/// Everything needed to plan one agent run. The server fills it from the
/// task, the user's stored keys and connectors, and its settings.
#[derive(Clone, Default)]
pub struct LaunchRequest {
    /// Agent id, e.g. `claude`.
    pub agent: String,
    /// The CLI's model id; `None` for the agent's default.
    pub model: Option<String>,
    /// The user's prompt, passed as one argv element.
    pub prompt: String,
    /// API keys by provider (`anthropic` → key). Only the one the model needs is used.
    pub keys: BTreeMap<String, String>,
    /// Server-wide gateway base URLs by provider (`DRYDOCK_ANTHROPIC_BASE_URL`
    /// → `anthropic`, `DRYDOCK_OPENAI_BASE_URL` → `openai`,
    /// `DRYDOCK_GEMINI_BASE_URL` → `gemini`); the agents file's per-agent
    /// `base_urls` win over these.
    pub base_urls: BTreeMap<String, String>,
    /// Model-gateway base URLs by provider (drydock's own gateway under a network policy): they
    /// win over both of the above, whose URL then is the gateway's upstream.
    pub gateway_urls: BTreeMap<String, String>,
    /// The connectors enabled for the task.
    pub mcp_servers: Vec<McpServer>,
    /// A follow-up message: continue the previous session where the CLI can.
    /// CLIs keep sessions under the agent's home, so set this only when the
    /// previous run's home survives into this one (e.g. a kept-alive
    /// sandbox): Gemini CLI fails ("No previous sessions found") when there
    /// is nothing to resume; Claude Code, Codex and Copilot CLI start afresh.
    pub resume: bool,
}

/// A file the runner writes into the sandbox before starting the agent.
/// Parent directories are created owned by the agent user.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct PlanFile {
    /// Absolute path inside the sandbox.
    pub path: String,
    /// The bytes to write.
    pub contents: Vec<u8>,
    /// Unix mode; 0o600 for every file that may hold a secret.
    pub mode: u32,
}

/// What to run, as whom, where, with which environment and files.
///
/// Secrets appear only in [`Self::env`] and in files of mode 0600; every
/// secret value is listed in [`Self::secrets`] for the task's redaction set.
///
/// Run it with stdin closed or empty (`/dev/null`): Codex, Gemini CLI and
/// opencode read piped stdin and add it to the prompt, and would wait on an
/// open pipe. No TTY is needed; every argv is the CLI's headless mode.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct LaunchPlan {
    /// Program and arguments, executed directly (no shell).
    pub argv: Vec<String>,
    /// Environment of the process (in addition to the image's PATH).
    pub env: BTreeMap<String, String>,
    /// Files to write first.
    pub files: Vec<PlanFile>,
    /// Working directory.
    pub workdir: String,
    /// User to run as (never root: Claude Code refuses to skip permissions as root).
    pub user: String,
    /// That user's uid.
    pub uid: u32,
    /// That user's home.
    pub home: String,
    /// Which parser reads stdout.
    pub parser: ParserKind,
    /// Connector names as written for the CLI, by the user's name, for logs.
    pub mcp_names: Vec<(String, String)>,
    /// Whether the follow-up continues the previous session (false when the
    /// CLI cannot resume and the run starts afresh).
    pub resumes: bool,
    secrets: Vec<String>,
}

impl LaunchPlan {
    /// Every secret value in the plan (keys, connector env and header values).
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// A fresh parser for this run's stdout.
    pub fn output_parser(&self) -> OutputParser {
        OutputParser::new(self.parser)
    }
}

/// Mode of every file a plan writes: they may hold keys or connector secrets.
const SECRET_FILE_MODE: u32 = 0o600;

impl AgentRegistry {
    /// Plans one run of `request.agent`.
    pub fn plan(&self, request: &LaunchRequest) -> Result<LaunchPlan, AgentError> {
        let agent = self.get(&request.agent)?;
        plan_for(agent, request)
    }
}

/// Plans one run of `agent` (see [`AgentRegistry::plan`]).
pub fn plan_for(
    agent: &AgentDefinition,
    request: &LaunchRequest,
) -> Result<LaunchPlan, AgentError> {
    let model = agent.resolve_model(request.model.as_deref())?;
    let provider = agent.required_provider(Some(&model.id))?.to_owned();
    let missing_key = || AgentError::MissingKey {
        agent: agent.id.clone(),
        provider: provider.clone(),
    };
    let key_spec = agent.key(&provider).ok_or_else(missing_key)?;
    let key = request
        .keys
        .get(&provider)
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(missing_key)?;
    if request.prompt.contains('\0') || key.contains('\0') {
        return Err(AgentError::InvalidRequest(
            "the prompt or the key contains a NUL byte".into(),
        ));
    }

    let mut env = BTreeMap::new();
    env.insert("HOME".to_owned(), AGENT_HOME.to_owned());
    env.extend(agent.env.clone());
    env.extend(key_spec.vars.clone());
    for name in &key_spec.env {
        env.insert(name.clone(), key.clone());
    }
    let base_url = request
        .gateway_urls
        .get(&provider)
        .or_else(|| agent.base_urls.get(&provider))
        .or_else(|| request.base_urls.get(&provider))
        .filter(|u| !u.trim().is_empty());
    if let (Some(url), Some(name)) = (base_url, &key_spec.base_url_env) {
        env.insert(name.clone(), url.clone());
    }

    let mut secrets: Vec<String> = vec![key.clone()];
    let servers = &request.mcp_servers;
    for server in servers {
        server.validate()?;
        let unsupported = |reason: &str| AgentError::UnsupportedConnector {
            agent: agent.id.clone(),
            server: server.name.clone(),
            reason: reason.to_owned(),
        };
        match &agent.mcp {
            None => return Err(unsupported("this agent has no MCP support")),
            Some(spec) if server.is_http() && !spec.http => {
                return Err(unsupported(
                    "this agent supports only stdio (command) connectors",
                ));
            }
            Some(_) => {}
        }
        secrets.extend(server.secrets().into_iter().map(str::to_owned));
    }

    let mut files = Vec::new();
    let mut mcp_names = Vec::new();
    let mut mcp_path = None;
    if let Some(spec) = &agent.mcp {
        let base = base_url.map(|u| (provider.as_str(), u.as_str()));
        if let Some(text) = render_config(spec.format, &spec.path, servers, base)? {
            files.push(PlanFile {
                path: spec.path.clone(),
                contents: text.into_bytes(),
                mode: SECRET_FILE_MODE,
            });
        }
        mcp_names = servers
            .iter()
            .map(|s| s.name.clone())
            .zip(sanitized_names(servers, spec.format))
            .collect();
        mcp_path = Some(spec.path.as_str());
    }

    let resumes = request.resume && agent.supports_resume();
    let values = Values {
        model: &model.id,
        prompt: &request.prompt,
        mcp_config: mcp_path.unwrap_or_default(),
    };
    let mut argv = Vec::new();
    for element in &agent.argv {
        match element.as_str() {
            "{resume}" => {
                if resumes {
                    argv.extend(agent.resume.iter().map(|a| values.fill(a)));
                }
            }
            // opencode joins its message words with spaces and wraps any word
            // that contains a space in quotes; words split at spaces come
            // back together exactly.
            "{prompt_words}" => argv.extend(request.prompt.split(' ').map(str::to_owned)),
            "{mcp}" => {
                if !servers.is_empty() {
                    argv.extend(agent.mcp_args.iter().map(|a| values.fill(a)));
                }
            }
            _ => argv.push(values.fill(element)),
        }
    }

    secrets.sort();
    secrets.dedup();
    Ok(LaunchPlan {
        argv,
        env,
        files,
        workdir: WORKDIR.to_owned(),
        user: AGENT_USER.to_owned(),
        uid: AGENT_UID,
        home: AGENT_HOME.to_owned(),
        parser: agent.parser,
        mcp_names,
        resumes,
        secrets,
    })
}

/// Values for the argv placeholders.
struct Values<'a> {
    model: &'a str,
    prompt: &'a str,
    mcp_config: &'a str,
}

impl Values<'_> {
    /// Replaces placeholders in one pass, so a prompt that contains
    /// `{model}` is not itself rewritten.
    fn fill(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + self.prompt.len());
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let tail = &rest[start..];
            let (value, len) = if tail.starts_with("{prompt}") {
                (Some(self.prompt), "{prompt}".len())
            } else if tail.starts_with("{model}") {
                (Some(self.model), "{model}".len())
            } else if tail.starts_with("{mcp_config}") {
                (Some(self.mcp_config), "{mcp_config}".len())
            } else {
                (None, 1)
            };
            out.push_str(value.unwrap_or("{"));
            rest = &tail[len..];
        }
        out.push_str(rest);
        out
    }
}

// Hand-written Debug: these hold API keys, connector secrets and config files with secrets, so
// a `{:?}` anywhere (a log line, a panic message) shows names, never values.

impl std::fmt::Debug for LaunchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchRequest")
            .field("agent", &self.agent)
            .field("model", &self.model)
            .field("prompt_len", &self.prompt.len())
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("base_urls", &self.base_urls)
            .field("gateway_urls", &self.gateway_urls)
            .field("mcp_servers", &self.mcp_servers)
            .field("resume", &self.resume)
            .finish()
    }
}

impl std::fmt::Debug for PlanFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanFile")
            .field("path", &self.path)
            .field("bytes", &self.contents.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

impl std::fmt::Debug for LaunchPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchPlan")
            .field("argv0", &self.argv.first())
            .field("args", &self.argv.len().saturating_sub(1))
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("files", &self.files)
            .field("workdir", &self.workdir)
            .field("user", &self.user)
            .field("parser", &self.parser)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_single_pass() {
        let v = Values {
            model: "m",
            prompt: "say {model} {",
            mcp_config: "/p",
        };
        assert_eq!(v.fill("--prompt={prompt}"), "--prompt=say {model} {");
        assert_eq!(v.fill("{model}{x}{mcp_config}"), "m{x}/p");
    }
}
