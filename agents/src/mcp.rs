//! MCP servers (connectors) and how each CLI's config file is written for them.
//!
//! Files are built as `serde_json` / `toml` values and serialized, never pasted
//! together as strings. Some CLIs expand `$VAR`-like text inside their config;
//! values are escaped for exactly those CLIs so that what the MCP server
//! receives is what the user typed.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::definition::McpFormat;
use crate::error::AgentError;
use crate::registry::is_env_name;

/// One MCP server a task runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct McpServer {
    /// The connector's name as the user gave it; sanitized per CLI when written.
    pub name: String,
    /// How the CLI reaches it.
    pub transport: McpTransport,
}

/// How a CLI reaches an MCP server.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "transport", rename_all = "lowercase")]
pub enum McpTransport {
    /// A process the CLI starts and talks to over stdin/stdout.
    Stdio {
        /// Program to run (looked up on the sandbox's PATH).
        command: String,
        /// Its arguments, each passed as its own argv element.
        args: Vec<String>,
        /// Extra environment for the process; values are secrets.
        env: BTreeMap<String, String>,
    },
    /// A Streamable HTTP endpoint.
    Http {
        /// The endpoint, `http://` or `https://`.
        url: String,
        /// Extra request headers; values are secrets.
        headers: BTreeMap<String, String>,
    },
}

impl McpServer {
    /// A stdio server without extra environment.
    pub fn stdio(name: impl Into<String>, command: impl Into<String>, args: Vec<String>) -> Self {
        Self {
            name: name.into(),
            transport: McpTransport::Stdio {
                command: command.into(),
                args,
                env: BTreeMap::new(),
            },
        }
    }

    /// An HTTP server without extra headers.
    pub fn http(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            transport: McpTransport::Http {
                url: url.into(),
                headers: BTreeMap::new(),
            },
        }
    }

    /// Adds an environment variable (stdio servers; ignored for HTTP).
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let McpTransport::Stdio { env, .. } = &mut self.transport {
            env.insert(name.into(), value.into());
        }
        self
    }

    /// Adds a request header (HTTP servers; ignored for stdio).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let McpTransport::Http { headers, .. } = &mut self.transport {
            headers.insert(name.into(), value.into());
        }
        self
    }

    /// Whether this is an HTTP server.
    pub fn is_http(&self) -> bool {
        matches!(self.transport, McpTransport::Http { .. })
    }

    /// The secret values this server carries (env and header values).
    pub fn secrets(&self) -> Vec<&str> {
        let values: Vec<&str> = match &self.transport {
            McpTransport::Stdio { env, .. } => env.values().map(String::as_str).collect(),
            // The credential of `Bearer <token>` on its own too: an agent may print just that.
            McpTransport::Http { headers, .. } => headers
                .values()
                .flat_map(|v| {
                    let token = v
                        .split_once(' ')
                        .filter(|(scheme, _)| {
                            ["bearer", "basic", "token"]
                                .contains(&scheme.to_ascii_lowercase().as_str())
                        })
                        .map(|(_, rest)| rest.trim());
                    std::iter::once(v.as_str()).chain(token)
                })
                .collect(),
        };
        values.into_iter().filter(|v| !v.is_empty()).collect()
    }

    /// Refuses what no CLI can carry safely: NUL bytes, bad env or header
    /// names, header values with line breaks (header injection), odd URLs.
    pub fn validate(&self) -> Result<(), AgentError> {
        let fail = |message: String| AgentError::InvalidConnector {
            server: self.name.clone(),
            message,
        };
        if self.name.contains('\0') {
            return Err(fail("the name contains a NUL byte".into()));
        }
        match &self.transport {
            McpTransport::Stdio { command, args, env } => {
                if command.trim().is_empty() {
                    return Err(fail("the command is empty".into()));
                }
                if command.contains('\0') || args.iter().any(|a| a.contains('\0')) {
                    return Err(fail(
                        "the command or an argument contains a NUL byte".into(),
                    ));
                }
                for (name, value) in env {
                    if !is_env_name(name) {
                        return Err(fail(format!(
                            "`{name}` is not a valid environment variable name"
                        )));
                    }
                    if value.contains('\0') {
                        return Err(fail(format!("the value of `{name}` contains a NUL byte")));
                    }
                }
            }
            McpTransport::Http { url, headers } => {
                let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
                if !scheme_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(fail(
                        "the URL must start with http:// or https:// and contain no spaces".into(),
                    ));
                }
                for (name, value) in headers {
                    if name.is_empty() || !name.chars().all(is_header_name_char) {
                        return Err(fail(format!("`{name}` is not a valid header name")));
                    }
                    // Line breaks would inject headers; anything beyond
                    // printable ASCII cannot be sent portably (Node's fetch,
                    // used by most of these CLIs, refuses it, and the CLI then
                    // reports the server as failed without saying why).
                    if !value.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
                        return Err(fail(format!(
                            "the value of header `{name}` must be printable ASCII (no line breaks)"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// RFC 9110 `tchar`.
fn is_header_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Longest server name written; keeps `mcp__<server>__<tool>` tool names
/// under the 64-character limit model APIs put on tool names.
const MAX_NAME_LEN: usize = 32;

/// Names as the CLI will see them: only `A-Z a-z 0-9 - _` (no `_` for
/// Gemini CLI, whose policy parser splits `mcp_<server>_<tool>` on the first
/// underscore), at most 32 characters, unique ignoring case (`-2`, `-3`... suffixes).
pub fn sanitized_names(servers: &[McpServer], format: McpFormat) -> Vec<String> {
    let allow_underscore = format != McpFormat::Gemini;
    let mut taken: HashSet<String> = HashSet::new();
    let mut names = Vec::with_capacity(servers.len());
    for server in servers {
        let mut base = String::new();
        for c in server.name.trim().chars() {
            let keep = c.is_ascii_alphanumeric() || c == '-' || (c == '_' && allow_underscore);
            let c = if keep { c } else { '-' };
            if c == '-' && base.ends_with('-') {
                continue;
            }
            base.push(c);
        }
        let mut base = base.trim_matches(|c| c == '-' || c == '_').to_owned();
        base.truncate(MAX_NAME_LEN);
        let mut base = base.trim_end_matches(['-', '_']).to_owned();
        if base.is_empty() {
            base = "server".to_owned();
        }
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(&name.to_ascii_lowercase()) {
            let suffix = format!("-{n}");
            let mut stem = base.clone();
            stem.truncate(MAX_NAME_LEN - suffix.len());
            name = format!("{stem}{suffix}");
            n += 1;
        }
        taken.insert(name.to_ascii_lowercase());
        names.push(name);
    }
    names
}

/// Renders the CLI's config file for these servers and, for the CLIs that
/// take a gateway from their config file (Codex, opencode), the provider's
/// base URL. `base_url` is `(provider, url)` for the provider in use.
/// Returns `None` when the CLI needs no file.
pub fn render_config(
    format: McpFormat,
    path: &str,
    servers: &[McpServer],
    base_url: Option<(&str, &str)>,
) -> Result<Option<String>, AgentError> {
    let names = sanitized_names(servers, format);
    let named: Vec<(&str, &McpServer)> = names.iter().map(String::as_str).zip(servers).collect();
    let render_err = |message: String| AgentError::Render {
        path: path.to_owned(),
        message,
    };
    let text = match format {
        McpFormat::Codex => {
            let openai_url = base_url.filter(|(p, _)| *p == "openai").map(|(_, u)| u);
            if named.is_empty() && openai_url.is_none() {
                return Ok(None);
            }
            render_codex(&named, openai_url).map_err(|e| render_err(e.to_string()))?
        }
        McpFormat::Opencode => {
            if named.is_empty() && base_url.is_none() {
                return Ok(None);
            }
            render_opencode(&named, base_url).map_err(|e| render_err(e.to_string()))?
        }
        _ => {
            // Gemini CLI always gets its settings file: it must be told to use
            // the API key, because with GOOGLE_GEMINI_BASE_URL set it picks a
            // `gateway` auth type that its own headless check rejects
            // ("Invalid auth method selected", 0.61).
            if named.is_empty() && format != McpFormat::Gemini {
                return Ok(None);
            }
            let value = match format {
                McpFormat::Claude => claude_json(&named),
                McpFormat::Gemini => gemini_json(&named),
                McpFormat::Cursor | McpFormat::McpServersJson => plain_json(&named),
                McpFormat::Copilot => copilot_json(&named),
                McpFormat::Codex | McpFormat::Opencode => Value::Null,
            };
            let mut text =
                serde_json::to_string_pretty(&value).map_err(|e| render_err(e.to_string()))?;
            text.push('\n');
            text
        }
    };
    Ok(Some(text))
}

fn map_strings(map: &BTreeMap<String, String>, escape: impl Fn(&str) -> String) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(escape(v))))
            .collect(),
    )
}

/// Claude Code expands `${VAR}` and `${VAR:-default}` in command, args, env,
/// url and headers of every MCP server. A literal `${` is written as
/// `${__DRYDOCK_LITERAL_DOLLAR:-$}{`, which expands back to `${` (the
/// variable is never set, so the default `$` is used, and expansion is one pass).
pub fn escape_claude(value: &str) -> String {
    value.replace("${", "${__DRYDOCK_LITERAL_DOLLAR:-$}{")
}

fn claude_json(servers: &[(&str, &McpServer)]) -> Value {
    let mut out = Map::new();
    for (name, server) in servers {
        let entry = match &server.transport {
            McpTransport::Stdio { command, args, env } => json!({
                "type": "stdio",
                "command": escape_claude(command),
                "args": args.iter().map(|a| escape_claude(a)).collect::<Vec<_>>(),
                "env": map_strings(env, escape_claude),
            }),
            // Header values are expanded twice (once when the config is
            // loaded, once more when the HTTP transport is built; seen with
            // Claude Code 2.1.197), so they are escaped twice.
            McpTransport::Http { url, headers } => json!({
                "type": "http",
                "url": escape_claude(url),
                "headers": map_strings(headers, |v| escape_claude(&escape_claude(v))),
            }),
        };
        out.insert((*name).to_owned(), entry);
    }
    json!({ "mcpServers": out })
}

/// Gemini CLI expands `$VAR`, `${VAR}` and `${VAR:-default}` in every string
/// of settings.json when it loads the file (no escape exists), so each `$` is
/// written as `${__DRYDOCK_LITERAL_DOLLAR:-$}`.
pub fn escape_gemini_settings(value: &str) -> String {
    value.replace('$', "${__DRYDOCK_LITERAL_DOLLAR:-$}")
}

/// Gemini CLI expands env and header values a second time (dotenv-expand,
/// which honours `\$`), so those are escaped for that pass first.
pub fn escape_gemini_env(value: &str) -> String {
    escape_gemini_settings(&value.replace('$', "\\$"))
}

fn gemini_json(servers: &[(&str, &McpServer)]) -> Value {
    let mut out = Map::new();
    for (name, server) in servers {
        let s = |v: &str| escape_gemini_settings(v);
        // `trust` skips per-tool confirmation; the run is already --yolo, this
        // keeps MCP tools from being the one thing that still asks.
        let entry = match &server.transport {
            McpTransport::Stdio { command, args, env } => json!({
                "command": s(command),
                "args": args.iter().map(|a| s(a)).collect::<Vec<_>>(),
                "env": map_strings(env, escape_gemini_env),
                "trust": true,
            }),
            McpTransport::Http { url, headers } => json!({
                "httpUrl": s(url),
                "headers": map_strings(headers, escape_gemini_env),
                "trust": true,
            }),
        };
        out.insert((*name).to_owned(), entry);
    }
    // Usage statistics go to play.googleapis.com whatever the base URL; only this setting
    // (no environment variable) turns them off.
    json!({
        "security": { "auth": { "selectedType": "gemini-api-key" } },
        "privacy": { "usageStatisticsEnabled": false },
        "mcpServers": out,
    })
}

/// The common `mcpServers` shape (Cursor, generic): `command`/`args`/`env`
/// or `url`/`headers`, values as given. (Cursor's editor documents
/// `${env:NAME}`-style interpolation in mcp.json; whether `cursor-agent`
/// applies it, and how to escape it, could not be checked: its CLI is not
/// installable here.)
fn plain_json(servers: &[(&str, &McpServer)]) -> Value {
    let mut out = Map::new();
    for (name, server) in servers {
        let entry = match &server.transport {
            McpTransport::Stdio { command, args, env } => json!({
                "command": command,
                "args": args,
                "env": env,
            }),
            McpTransport::Http { url, headers } => json!({
                "url": url,
                "headers": headers,
            }),
        };
        out.insert((*name).to_owned(), entry);
    }
    json!({ "mcpServers": out })
}

/// Copilot CLI expands `$VAR`, `${VAR}` and `${VAR:-default}` once in
/// command, args, env, url and headers (leaving unset names alone, with no
/// escape), so each `$` is written as `${__DRYDOCK_LITERAL_DOLLAR:-$}`
/// (checked against Copilot CLI 1.0.102).
pub fn escape_copilot(value: &str) -> String {
    escape_gemini_settings(value)
}

/// Copilot CLI: the shape `copilot mcp add` writes (`type: local|http`, `tools: ["*"]`).
fn copilot_json(servers: &[(&str, &McpServer)]) -> Value {
    let mut out = Map::new();
    for (name, server) in servers {
        let e = |v: &str| escape_copilot(v);
        let entry = match &server.transport {
            McpTransport::Stdio { command, args, env } => json!({
                "type": "local",
                "command": e(command),
                "args": args.iter().map(|a| e(a)).collect::<Vec<_>>(),
                "env": map_strings(env, escape_copilot),
                "tools": ["*"],
            }),
            McpTransport::Http { url, headers } => json!({
                "type": "http",
                "url": e(url),
                "headers": map_strings(headers, escape_copilot),
                "tools": ["*"],
            }),
        };
        out.insert((*name).to_owned(), entry);
    }
    json!({ "mcpServers": out })
}

/// Codex `config.toml`: `[mcp_servers.NAME]` tables and, behind a gateway, a
/// custom provider (the built-in `openai` provider cannot be overridden from
/// the file). The key stays in the environment (`env_key`).
fn render_codex(
    servers: &[(&str, &McpServer)],
    openai_base_url: Option<&str>,
) -> Result<String, toml::ser::Error> {
    let mut root = toml::Table::new();
    if let Some(url) = openai_base_url {
        root.insert("model_provider".into(), "drydock-openai".into());
        let mut provider = toml::Table::new();
        provider.insert("name".into(), "OpenAI via drydock gateway".into());
        provider.insert("base_url".into(), url.into());
        provider.insert("env_key".into(), "OPENAI_API_KEY".into());
        provider.insert("wire_api".into(), "responses".into());
        // Gateways rarely speak the Responses WebSocket; Codex falls back
        // anyway, but only after failing once per turn.
        provider.insert("supports_websockets".into(), false.into());
        let mut providers = toml::Table::new();
        providers.insert("drydock-openai".into(), provider.into());
        root.insert("model_providers".into(), providers.into());
    }
    if !servers.is_empty() {
        let mut tables = toml::Table::new();
        for (name, server) in servers {
            let mut t = toml::Table::new();
            match &server.transport {
                McpTransport::Stdio { command, args, env } => {
                    t.insert("command".into(), command.as_str().into());
                    t.insert(
                        "args".into(),
                        toml::Value::Array(args.iter().map(|a| a.as_str().into()).collect()),
                    );
                    if !env.is_empty() {
                        t.insert("env".into(), string_table(env).into());
                    }
                }
                McpTransport::Http { url, headers } => {
                    t.insert("url".into(), url.as_str().into());
                    if !headers.is_empty() {
                        t.insert("http_headers".into(), string_table(headers).into());
                    }
                }
            }
            tables.insert((*name).to_owned(), t.into());
        }
        root.insert("mcp_servers".into(), tables.into());
    }
    toml::to_string(&root)
}

fn string_table(map: &BTreeMap<String, String>) -> toml::Table {
    map.iter()
        .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
        .collect()
}

/// opencode's provider id and `baseURL` for a drydock gateway setting.
///
/// drydock's base URLs follow each vendor's own CLI: Anthropic and Gemini
/// without the API version (`ANTHROPIC_BASE_URL`, `GOOGLE_GEMINI_BASE_URL`),
/// OpenAI with `/v1` (`OPENAI_BASE_URL`, Codex `base_url`). opencode's SDK
/// providers want the versioned URL, so the version is appended where the
/// vendor convention leaves it out.
fn opencode_provider(provider: &str, url: &str) -> (String, String) {
    let url = url.trim_end_matches('/');
    match provider {
        "anthropic" => ("anthropic".into(), format!("{url}/v1")),
        "gemini" => ("google".into(), format!("{url}/v1beta")),
        other => (other.into(), url.into()),
    }
}

/// opencode `opencode.json`: `mcp` with `type: local|remote` and, behind a
/// gateway, `provider.<id>.options.baseURL`. opencode substitutes `{env:..}`
/// and `{file:..}` in the raw text before parsing, so every `{` inside a
/// string is written as the JSON escape `\u007b`, which that pass cannot see.
fn render_opencode(
    servers: &[(&str, &McpServer)],
    base_url: Option<(&str, &str)>,
) -> Result<String, serde_json::Error> {
    let mut root = Map::new();
    root.insert("$schema".into(), json!("https://opencode.ai/config.json"));
    root.insert("autoupdate".into(), json!(false));
    if let Some((provider, url)) = base_url {
        let (id, url) = opencode_provider(provider, url);
        root.insert(
            "provider".into(),
            json!({ id: { "options": { "baseURL": url } } }),
        );
    }
    if !servers.is_empty() {
        let mut mcp = Map::new();
        for (name, server) in servers {
            let entry = match &server.transport {
                McpTransport::Stdio { command, args, env } => {
                    let mut cmd = vec![command.clone()];
                    cmd.extend(args.iter().cloned());
                    json!({ "type": "local", "command": cmd, "environment": env, "enabled": true })
                }
                McpTransport::Http { url, headers } => {
                    json!({ "type": "remote", "url": url, "headers": headers, "enabled": true })
                }
            };
            mcp.insert((*name).to_owned(), entry);
        }
        root.insert("mcp".into(), Value::Object(mcp));
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, BraceEscaping::default());
    Value::Object(root).serialize(&mut ser)?;
    out.push(b'\n');
    // The formatter only ever writes UTF-8 it was given plus ASCII.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Pretty JSON that writes `{` inside strings as `\u007b`.
#[derive(Default)]
struct BraceEscaping {
    pretty: serde_json::ser::PrettyFormatter<'static>,
}

impl serde_json::ser::Formatter for BraceEscaping {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut parts = fragment.split('{');
        if let Some(first) = parts.next() {
            writer.write_all(first.as_bytes())?;
        }
        for part in parts {
            writer.write_all(b"\\u007b")?;
            writer.write_all(part.as_bytes())?;
        }
        Ok(())
    }
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.begin_array(w)
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.end_array(w)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.pretty.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.end_array_value(w)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.begin_object(w)
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.end_object(w)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.pretty.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.end_object_value(w)
    }
}

impl std::fmt::Debug for McpTransport {
    // Hand-written: env and header values are secrets; show their names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            McpTransport::Stdio { command, args, env } => f
                .debug_struct("Stdio")
                .field("command", command)
                .field("args", &args.len())
                .field("env", &env.keys().collect::<Vec<_>>())
                .finish(),
            McpTransport::Http { url, headers } => f
                .debug_struct("Http")
                .field("url", url)
                .field("headers", &headers.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized_and_unique() {
        let servers = vec![
            McpServer::http("My Server", "https://a"),
            McpServer::http("my-server", "https://b"),
            McpServer::http("my_server", "https://c"),
            McpServer::http("$(rm -rf /)", "https://d"),
            McpServer::http("", "https://e"),
            McpServer::http("日本", "https://f"),
            McpServer::http("x".repeat(60), "https://g"),
            McpServer::http("x".repeat(60), "https://h"),
        ];
        let names = sanitized_names(&servers, McpFormat::Claude);
        assert_eq!(
            names,
            [
                "My-Server",
                "my-server-2",
                "my_server",
                "rm-rf",
                "server",
                "server-2",
                "x".repeat(32).as_str(),
                format!("{}-2", "x".repeat(30)).as_str(),
            ]
        );
        let gemini = sanitized_names(&servers, McpFormat::Gemini);
        assert_eq!(gemini[2], "my-server-3");
    }

    #[test]
    fn opencode_escapes_braces_and_stays_valid_json() {
        let servers = [McpServer::stdio("a", "echo", vec!["{env:HOME}".into()])];
        let named: Vec<_> = servers.iter().map(|s| ("a", s)).collect();
        let text = render_opencode(&named, None).unwrap();
        assert!(!text.contains("{env:"), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["mcp"]["a"]["command"][1], "{env:HOME}");
    }

    #[test]
    fn header_injection_is_refused() {
        let s = McpServer::http("a", "https://x").with_header("X", "a\r\nEvil: 1");
        assert!(matches!(
            s.validate(),
            Err(AgentError::InvalidConnector { .. })
        ));
        let s = McpServer::http("a", "https://x").with_header("X", "snow \u{2603}");
        assert!(s.validate().is_err());
        let s = McpServer::http("a", "https://x").with_header("X", "Bearer a\tb ~!");
        assert!(s.validate().is_ok());
        let s = McpServer::stdio("a", "x", vec![]).with_env("A=B", "1");
        assert!(s.validate().is_err());
        assert!(
            McpServer::http("a", "file:///etc/passwd")
                .validate()
                .is_err()
        );
    }
}
