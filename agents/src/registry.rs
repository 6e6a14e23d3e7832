//! The registry: built-in agents plus the operator's agents file, merged and validated.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::definition::{AgentDefinition, KeySpec, McpConfigSpec, ModelDefinition, ParserKind};
use crate::error::AgentError;

/// The built-in agents, kept in the agents-file format so both go through one
/// parser and one set of checks.
const BUILTIN_AGENTS: &str = include_str!("builtin.toml");

/// All agents drydock can run, in a stable order (built-ins first, then the
/// operator's additions in file order).
#[derive(Debug, Clone)]
pub struct AgentRegistry {
    agents: Vec<AgentDefinition>,
}

/// The agents file: a list of `[[agents]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    #[serde(default)]
    agents: Vec<AgentSpec>,
}

/// One `[[agents]]` table. Every field but `id` is optional so that a table
/// can override only some fields of a built-in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentSpec {
    id: Spanned<String>,
    name: Option<String>,
    keys: Option<Vec<KeySpec>>,
    models: Option<Vec<ModelDefinition>>,
    argv: Option<Vec<String>>,
    resume: Option<Vec<String>>,
    mcp_args: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    mcp: Option<McpConfigSpec>,
    base_urls: Option<BTreeMap<String, String>>,
    parser: Option<ParserKind>,
}

impl AgentRegistry {
    /// The built-in agents only.
    pub fn builtin() -> Result<Self, AgentError> {
        let mut registry = Self { agents: Vec::new() };
        registry.merge_file(BUILTIN_AGENTS)?;
        Ok(registry)
    }

    /// The built-in agents with the operator's agents file (its text, as read
    /// from `DRYDOCK_AGENTS_FILE`) merged over them: a table whose `id` names
    /// a built-in overrides the fields it sets, any other table adds an agent.
    pub fn with_agents_file(text: &str) -> Result<Self, AgentError> {
        let mut registry = Self::builtin()?;
        registry.merge_file(text)?;
        Ok(registry)
    }

    /// All agents, built-ins first.
    pub fn agents(&self) -> &[AgentDefinition] {
        &self.agents
    }

    /// The agent with this id.
    pub fn get(&self, id: &str) -> Result<&AgentDefinition, AgentError> {
        self.agents
            .iter()
            .find(|a| a.id == id)
            .ok_or_else(|| AgentError::UnknownAgent(id.to_owned()))
    }

    fn merge_file(&mut self, text: &str) -> Result<(), AgentError> {
        let file: AgentsFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            AgentError::AgentsFile {
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        for spec in file.agents {
            let (line, column) = line_column(text, spec.id.span().start);
            let id = spec.id.get_ref().clone();
            let at_id = |message: String| AgentError::AgentsFile {
                line,
                column,
                message: format!("agent `{id}`: {message}"),
            };
            let existing = self.agents.iter().position(|a| a.id == id);
            let merged = match existing {
                Some(index) => spec.apply_to(self.agents[index].clone()),
                None => spec.into_new().map_err(at_id)?,
            };
            validate(&merged).map_err(at_id)?;
            match existing {
                Some(index) => self.agents[index] = merged,
                None => self.agents.push(merged),
            }
        }
        Ok(())
    }
}

impl AgentSpec {
    /// Overrides the fields this table sets.
    fn apply_to(self, mut agent: AgentDefinition) -> AgentDefinition {
        if let Some(v) = self.name {
            agent.name = v;
        }
        if let Some(v) = self.keys {
            agent.keys = v;
        }
        if let Some(v) = self.models {
            agent.models = v;
        }
        if let Some(v) = self.argv {
            agent.argv = v;
        }
        if let Some(v) = self.resume {
            agent.resume = v;
        }
        if let Some(v) = self.mcp_args {
            agent.mcp_args = v;
        }
        // env merges: an operator adding a variable (a proxy, say) must not drop the ones the
        // built-in needs; an empty value removes a variable.
        if let Some(v) = self.env {
            for (name, value) in v {
                if value.is_empty() {
                    agent.env.remove(&name);
                } else {
                    agent.env.insert(name, value);
                }
            }
        }
        if let Some(v) = self.mcp {
            agent.mcp = Some(v);
        }
        if let Some(v) = self.base_urls {
            agent.base_urls = v;
        }
        if let Some(v) = self.parser {
            agent.parser = v;
        }
        agent
    }

    /// A new agent; the fields without a sensible default must be present.
    fn into_new(self) -> Result<AgentDefinition, String> {
        fn required<T>(value: Option<T>, field: &str) -> Result<T, String> {
            value.ok_or_else(|| format!("missing field `{field}` (required for a new agent)"))
        }
        Ok(AgentDefinition {
            id: self.id.into_inner(),
            name: required(self.name, "name")?,
            keys: required(self.keys, "keys")?,
            models: required(self.models, "models")?,
            argv: required(self.argv, "argv")?,
            resume: self.resume.unwrap_or_default(),
            mcp_args: self.mcp_args.unwrap_or_default(),
            env: self.env.unwrap_or_default(),
            mcp: self.mcp,
            base_urls: self.base_urls.unwrap_or_default(),
            parser: self.parser.unwrap_or(ParserKind::Text),
        })
    }
}

/// Checks what serde cannot: the definition must be runnable.
fn validate(agent: &AgentDefinition) -> Result<(), String> {
    let id_ok = agent
        .id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && agent
            .id
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !id_ok {
        return Err("`id` must be lowercase letters, digits, `-` or `_`".into());
    }
    if agent.name.trim().is_empty() {
        return Err("`name` must not be empty".into());
    }
    if agent
        .argv
        .first()
        .is_none_or(|a| a.trim().is_empty() || a.starts_with('{'))
    {
        return Err("`argv` must start with the CLI's program name".into());
    }
    let prompts = agent
        .argv
        .iter()
        .filter(|a| a.contains("{prompt}") || *a == "{prompt_words}")
        .count();
    if prompts != 1 {
        return Err(
            "`argv` must pass the prompt exactly once, in a `{prompt}` or `{prompt_words}` element"
                .into(),
        );
    }
    if agent.models.is_empty() {
        return Err("`models` must offer at least one model".into());
    }
    if agent.keys.is_empty() {
        return Err("`keys` must name at least one key provider".into());
    }
    for key in &agent.keys {
        if key.provider.trim().is_empty() {
            return Err("a key's `provider` must not be empty".into());
        }
        if key.env.is_empty() {
            return Err(format!(
                "key `{}` must name at least one env var",
                key.provider
            ));
        }
        for name in key
            .env
            .iter()
            .chain(key.base_url_env.iter())
            .chain(key.vars.keys())
        {
            if !is_env_name(name) {
                return Err(format!("`{name}` is not a valid environment variable name"));
            }
        }
    }
    for model in &agent.models {
        if model.id.is_empty() {
            return Err("a model's `id` must not be empty".into());
        }
        if let Some(provider) = &model.provider
            && agent.key(provider).is_none()
        {
            return Err(format!(
                "model `{}` needs provider `{provider}`, which is not in `keys`",
                model.id
            ));
        }
    }
    for name in agent.env.keys() {
        if !is_env_name(name) {
            return Err(format!("`{name}` is not a valid environment variable name"));
        }
    }
    match &agent.mcp {
        Some(mcp) => {
            if !mcp.path.starts_with('/') {
                return Err("`mcp.path` must be an absolute path".into());
            }
        }
        None => {
            if !agent.mcp_args.is_empty() {
                return Err("`mcp_args` is set but `mcp` is not".into());
            }
        }
    }
    Ok(())
}

/// Whether `name` is a portable environment variable name.
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_validate() {
        let registry = AgentRegistry::builtin().unwrap();
        let ids: Vec<_> = registry.agents().iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            ids,
            ["claude", "codex", "gemini", "cursor", "copilot", "opencode"]
        );
    }

    #[test]
    fn line_column_counts_chars() {
        assert_eq!(line_column("ab\ncé\nx", 6), (2, 3));
        assert_eq!(line_column("", 10), (1, 1));
    }
}
