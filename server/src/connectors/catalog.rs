//! Presets of well-known MCP servers that fill the connector form; the user supplies the secrets.

use serde::Serialize;

/// A secret (header or env value) a preset needs from the user.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PresetField {
    /// `header` (HTTP connectors) or `env` (stdio connectors).
    pub kind: &'static str,
    /// Header or variable name.
    pub name: &'static str,
    /// Whether the connector cannot work without it.
    pub required: bool,
    /// What to put there and where to get it.
    pub help: &'static str,
    /// The shape of the value, e.g. `Bearer <token>`.
    pub placeholder: &'static str,
}

/// A well-known MCP server.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Preset {
    /// Preset id.
    pub id: &'static str,
    /// Suggested connector name.
    pub name: &'static str,
    /// Display title.
    pub title: &'static str,
    /// Suggested description.
    pub description: &'static str,
    /// `stdio` or `http`.
    pub transport: &'static str,
    /// Endpoint of an HTTP server.
    pub url: Option<&'static str>,
    /// `headers` (the user supplies the fields) or `oauth` (the server follows the MCP
    /// authorization spec with dynamic registration: the user signs in with Connect).
    pub auth: &'static str,
    /// Command of a stdio server.
    pub command: Option<&'static str>,
    /// Arguments of a stdio server.
    pub args: Vec<&'static str>,
    /// The secrets the user supplies.
    pub fields: Vec<PresetField>,
    /// The server's documentation.
    pub docs_url: &'static str,
}

/// The catalog, in display order.
pub fn presets() -> Vec<Preset> {
    vec![
        Preset {
            id: "github",
            name: "github",
            title: "GitHub",
            description: "GitHub's official MCP server: repositories, issues, pull requests, Actions",
            transport: "http",
            url: Some("https://api.githubcopilot.com/mcp/"),
            auth: "headers",
            command: None,
            args: vec![],
            fields: vec![PresetField {
                kind: "header",
                name: "Authorization",
                required: true,
                help: "A GitHub personal access token with the scopes the agent needs",
                placeholder: "Bearer github_pat_…",
            }],
            docs_url: "https://github.com/github/github-mcp-server",
        },
        Preset {
            id: "context7",
            name: "context7",
            title: "Context7",
            description: "Up-to-date library documentation and code examples",
            transport: "http",
            url: Some("https://mcp.context7.com/mcp"),
            auth: "headers",
            command: None,
            args: vec![],
            fields: vec![PresetField {
                kind: "header",
                name: "CONTEXT7_API_KEY",
                required: false,
                help: "A Context7 API key for higher rate limits (works without one)",
                placeholder: "ctx7sk-…",
            }],
            docs_url: "https://github.com/upstash/context7",
        },
        Preset {
            id: "linear",
            name: "linear",
            title: "Linear",
            description: "Linear issues, projects and comments (sign in to Linear with Connect)",
            transport: "http",
            url: Some("https://mcp.linear.app/mcp"),
            auth: "oauth",
            command: None,
            args: vec![],
            fields: vec![],
            docs_url: "https://linear.app/docs/mcp",
        },
        Preset {
            id: "notion-hosted",
            name: "notion-hosted",
            title: "Notion (hosted)",
            description: "Notion's hosted MCP server: pages and databases (sign in to Notion with Connect)",
            transport: "http",
            url: Some("https://mcp.notion.com/mcp"),
            auth: "oauth",
            command: None,
            args: vec![],
            fields: vec![],
            docs_url: "https://developers.notion.com/docs/mcp",
        },
        Preset {
            id: "sentry-hosted",
            name: "sentry-hosted",
            title: "Sentry (hosted)",
            description: "Sentry's hosted MCP server: issues, events and releases (sign in to Sentry with Connect)",
            transport: "http",
            url: Some("https://mcp.sentry.dev/mcp"),
            auth: "oauth",
            command: None,
            args: vec![],
            fields: vec![],
            docs_url: "https://docs.sentry.io/product/sentry-mcp/",
        },
        Preset {
            id: "notion",
            name: "notion",
            title: "Notion",
            description: "Notion pages and databases through Notion's MCP server",
            transport: "stdio",
            url: None,
            auth: "headers",
            command: Some("npx"),
            args: vec!["-y", "@notionhq/notion-mcp-server"],
            fields: vec![PresetField {
                kind: "env",
                name: "NOTION_TOKEN",
                required: true,
                help: "The secret of a Notion internal integration shared with the pages to use",
                placeholder: "ntn_…",
            }],
            docs_url: "https://github.com/makenotion/notion-mcp-server",
        },
        Preset {
            id: "sentry",
            name: "sentry",
            title: "Sentry",
            description: "Sentry issues, events and releases",
            transport: "stdio",
            url: None,
            auth: "headers",
            command: Some("npx"),
            args: vec!["-y", "@sentry/mcp-server@latest"],
            fields: vec![
                PresetField {
                    kind: "env",
                    name: "SENTRY_ACCESS_TOKEN",
                    required: true,
                    help: "A Sentry user auth token with org:read, project:read and event:read",
                    placeholder: "sntryu_…",
                },
                PresetField {
                    kind: "env",
                    name: "SENTRY_HOST",
                    required: false,
                    help: "Host of a self-hosted Sentry (sentry.io when empty)",
                    placeholder: "sentry.example.com",
                },
            ],
            docs_url: "https://github.com/getsentry/sentry-mcp",
        },
        Preset {
            id: "playwright",
            name: "playwright",
            title: "Playwright",
            description: "Drive a headless browser: open pages, click, fill forms, take snapshots",
            transport: "stdio",
            url: None,
            auth: "headers",
            command: Some("npx"),
            args: vec!["-y", "@playwright/mcp@latest", "--headless"],
            fields: vec![],
            docs_url: "https://github.com/microsoft/playwright-mcp",
        },
    ]
}
