//! What a connector may hold: checks of every field, each failure a 422 naming the field.

use std::collections::BTreeMap;

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};

use crate::error::AppError;

/// Longest name, in characters.
pub const MAX_NAME: usize = 64;
const MAX_DESCRIPTION: usize = 500;
const MAX_COMMAND: usize = 1024;
const MAX_ARGS: usize = 64;
const MAX_ARG: usize = 4096;
const MAX_ENTRIES: usize = 64;
const MAX_SECRET_NAME: usize = 128;
const MAX_SECRET_VALUE: usize = 8192;
const MAX_URL: usize = 2048;

/// Headers drydock sets itself when speaking MCP; a connector may not override them.
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "content-type",
    "accept",
    "connection",
    "transfer-encoding",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// A connector's complete settings, plain, as about to be stored.
#[derive(Clone, Default)]
pub struct Draft {
    /// Unique per user.
    pub name: String,
    /// Free text.
    pub description: String,
    /// `stdio` or `http`.
    pub transport: String,
    /// stdio: the program.
    pub command: Option<String>,
    /// stdio: its arguments.
    pub args: Vec<String>,
    /// stdio: environment (secret values).
    pub env: BTreeMap<String, String>,
    /// http: the endpoint.
    pub url: Option<String>,
    /// http: headers (secret values).
    pub headers: BTreeMap<String, String>,
    /// Used by tasks by default.
    pub enabled: bool,
}

/// Checks every field of `draft`.
pub fn check(draft: &Draft) -> Result<(), AppError> {
    check_name(&draft.name)?;
    if draft.description.chars().count() > MAX_DESCRIPTION {
        return Err(AppError::invalid(
            "description",
            format!("the description is longer than {MAX_DESCRIPTION} characters"),
        ));
    }
    if draft
        .description
        .chars()
        .any(|c| c.is_control() && c != '\n')
    {
        return Err(AppError::invalid(
            "description",
            "the description contains control characters",
        ));
    }
    match draft.transport.as_str() {
        "stdio" => check_stdio(draft),
        "http" => check_http(draft),
        _ => Err(AppError::invalid(
            "transport",
            "the transport must be stdio (a command) or http (a URL)",
        )),
    }
}

fn check_name(name: &str) -> Result<(), AppError> {
    if name.is_empty() {
        return Err(AppError::invalid("name", "the name is empty"));
    }
    if name.chars().count() > MAX_NAME {
        return Err(AppError::invalid(
            "name",
            format!("the name is longer than {MAX_NAME} characters"),
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(AppError::invalid(
            "name",
            "the name may contain only letters, digits, - and _",
        ));
    }
    Ok(())
}

fn check_stdio(draft: &Draft) -> Result<(), AppError> {
    if draft.url.is_some() {
        return Err(AppError::invalid(
            "url",
            "a stdio connector runs a command and has no URL; use transport http for a URL",
        ));
    }
    if !draft.headers.is_empty() {
        return Err(AppError::invalid(
            "headers",
            "a stdio connector has no HTTP headers; pass secrets in env",
        ));
    }
    let command = draft.command.as_deref().unwrap_or_default();
    if command.trim().is_empty() {
        return Err(AppError::invalid(
            "command",
            "a stdio connector needs a command, e.g. npx",
        ));
    }
    if command.len() > MAX_COMMAND || command.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "command",
            "the command must be one line of at most 1024 bytes",
        ));
    }
    if command != command.trim() {
        return Err(AppError::invalid(
            "command",
            "the command has leading or trailing spaces; put arguments in args",
        ));
    }
    if draft.args.len() > MAX_ARGS {
        return Err(AppError::invalid(
            "args",
            format!("at most {MAX_ARGS} arguments"),
        ));
    }
    if draft
        .args
        .iter()
        .any(|a| a.len() > MAX_ARG || a.contains('\0'))
    {
        return Err(AppError::invalid(
            "args",
            "each argument must be at most 4096 bytes, without NUL characters",
        ));
    }
    check_entries("env", &draft.env, |name| {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        (first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then_some(())
            .ok_or(
                "environment variable names are letters, digits and _, not starting with a digit",
            )
    })?;
    for (name, value) in &draft.env {
        if value.contains('\0') {
            return Err(AppError::invalid(
                format!("env.{name}"),
                "the value contains a NUL character",
            ));
        }
    }
    Ok(())
}

fn check_http(draft: &Draft) -> Result<(), AppError> {
    if draft.command.is_some() || !draft.args.is_empty() {
        let field = if draft.command.is_some() {
            "command"
        } else {
            "args"
        };
        return Err(AppError::invalid(
            field,
            "an http connector has a URL and no command; use transport stdio for a command",
        ));
    }
    if !draft.env.is_empty() {
        return Err(AppError::invalid(
            "env",
            "an http connector has no environment; pass secrets in headers",
        ));
    }
    let url = draft.url.as_deref().unwrap_or_default();
    check_url(url)?;
    check_entries("headers", &draft.headers, |name| {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err("not a valid HTTP header name");
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err("drydock sets this header itself");
        }
        Ok(())
    })?;
    for (name, value) in &draft.headers {
        if HeaderValue::from_str(value).is_err() {
            return Err(AppError::invalid(
                format!("headers.{name}"),
                "the value is not a valid HTTP header value (line breaks or control characters)",
            ));
        }
    }
    Ok(())
}

/// Checks an MCP server URL; answers it parsed.
pub fn check_url(url: &str) -> Result<Url, AppError> {
    let invalid = |message: &str| AppError::invalid("url", message);
    if url.trim().is_empty() {
        return Err(invalid(
            "an http connector needs a URL, e.g. https://example.com/mcp",
        ));
    }
    if url.len() > MAX_URL {
        return Err(invalid("the URL is longer than 2048 bytes"));
    }
    let parsed =
        Url::parse(url.trim()).map_err(|err| invalid(&format!("the URL is not valid: {err}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("the URL must start with https:// or http://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "put credentials in a header (e.g. Authorization), not in the URL",
        ));
    }
    if parsed.fragment().is_some() {
        return Err(invalid("the URL must not have a #fragment"));
    }
    Ok(parsed)
}

fn check_entries(
    field: &str,
    entries: &BTreeMap<String, String>,
    check_name: impl Fn(&str) -> Result<(), &'static str>,
) -> Result<(), AppError> {
    if entries.len() > MAX_ENTRIES {
        return Err(AppError::invalid(
            field,
            format!("at most {MAX_ENTRIES} entries"),
        ));
    }
    for (name, value) in entries {
        if name.is_empty() || name.len() > MAX_SECRET_NAME {
            return Err(AppError::invalid(
                field,
                format!("names must be 1 to {MAX_SECRET_NAME} characters"),
            ));
        }
        check_name(name).map_err(|why| AppError::invalid(format!("{field}.{name}"), why))?;
        if value.is_empty() {
            return Err(AppError::invalid(
                format!("{field}.{name}"),
                "the value is empty; send null to remove an entry",
            ));
        }
        if value.len() > MAX_SECRET_VALUE {
            return Err(AppError::invalid(
                format!("{field}.{name}"),
                "the value is longer than 8 KiB",
            ));
        }
    }
    Ok(())
}

/// The hint shown for a secret value: its last four characters, only when it is long enough
/// (at least 8) that four of them give nothing away.
pub fn hint_of(value: &str) -> Option<String> {
    let chars: Vec<char> = value.chars().collect();
    (chars.len() >= 8).then(|| chars[chars.len() - 4..].iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str) -> Draft {
        Draft {
            name: "ok".into(),
            transport: "http".into(),
            url: Some(url.into()),
            ..Draft::default()
        }
    }

    fn field_of(result: Result<(), AppError>) -> Option<String> {
        match result {
            Err(AppError::Invalid { field, .. }) => field,
            _ => None,
        }
    }

    #[test]
    fn names_are_short_words() {
        assert!(check_name("github_2-x").is_ok());
        for bad in ["", "has space", "slash/x", "ünï", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_http_without_credentials() {
        assert!(check(&http("https://example.com/mcp")).is_ok());
        for bad in [
            "",
            "ftp://example.com",
            "https://user:pw@example.com/mcp",
            "not a url",
            "https://example.com/#x",
        ] {
            assert_eq!(field_of(check(&http(bad))).as_deref(), Some("url"), "{bad}");
        }
    }

    #[test]
    fn headers_are_checked_by_name() {
        let mut draft = http("https://example.com/mcp");
        draft.headers.insert("Accept".into(), "x".into());
        assert_eq!(field_of(check(&draft)).as_deref(), Some("headers.Accept"));
        draft.headers.clear();
        draft
            .headers
            .insert("Authorization".into(), "Bearer a\nb".into());
        assert_eq!(
            field_of(check(&draft)).as_deref(),
            Some("headers.Authorization")
        );
    }

    #[test]
    fn hints_need_long_values() {
        assert_eq!(hint_of("1"), None);
        assert_eq!(hint_of("Bearer abcd1234").as_deref(), Some("1234"));
    }
}
