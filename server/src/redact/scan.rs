//! Finding well-known token shapes in a text, line by line, for checks that must refuse rather
//! than redact (the secret check before a push). Built on the public redaction engine: a line
//! holds a token when redacting it adds a marker of one of [`TOKEN_KINDS`].

use std::sync::LazyLock;

use super::{RedactError, Redactor, SecretSet};

/// The shapes that are credentials by their form alone, so finding one is reason enough to
/// refuse: Anthropic, OpenAI, GitHub, Google API and Slack tokens, AWS access key ids and Slack
/// webhooks. Not included, because code and test fixtures hold them legitimately: JWTs, PEM
/// private keys, credentials in URLs, `Authorization`/`Bearer` values and `name = value` pairs.
pub const TOKEN_KINDS: &[&str] = &[
    "anthropic-key",
    "openai-key",
    "github-token",
    "google-api-key",
    "aws-access-key-id",
    "slack-token",
    "slack-webhook",
];

static SHAPES_ONLY: LazyLock<Result<Redactor, RedactError>> =
    LazyLock::new(|| Redactor::new(SecretSet::new()));

/// The kind (one of [`TOKEN_KINDS`]) of the first well-known token shape in `text`, or `None`.
///
/// # Errors
/// [`RedactError`] when the shape matchers cannot be built; callers must then fail closed.
pub fn token_kind_in(text: &str) -> Result<Option<&'static str>, RedactError> {
    let redactor = SHAPES_ONLY.as_ref().map_err(Clone::clone)?;
    let kind_in = |text: &str| {
        let redacted = redactor.redact(text);
        if redacted == text {
            return (false, None);
        }
        let kind = TOKEN_KINDS.iter().copied().find(|kind| {
            let marker = format!("[REDACTED:{kind}]");
            redacted.matches(&marker).count() > text.matches(&marker).count()
        });
        (true, kind)
    };
    match kind_in(text) {
        (false, _) => Ok(None),
        (true, Some(kind)) => Ok(Some(kind)),
        // A wider match won (`github_token: ghp_…` is redacted as a `name: value` secret): look
        // at each word on its own.
        (true, None) => Ok(text
            .split(|c: char| c.is_whitespace() || "\"'`=:,;()[]{}<>".contains(c))
            .filter(|word| word.len() >= 16)
            .find_map(|word| kind_in(word).1)),
    }
}

/// A token kind in words: "a GitHub token", "an AWS access key id".
pub fn describe_kind(kind: &str) -> &'static str {
    match kind {
        "anthropic-key" => "an Anthropic API key",
        "openai-key" => "an OpenAI API key",
        "github-token" => "a GitHub token",
        "google-api-key" => "a Google API key",
        "aws-access-key-id" => "an AWS access key id",
        "slack-token" => "a Slack token",
        "slack-webhook" => "a Slack webhook URL",
        _ => "a secret token",
    }
}

#[cfg(test)]
mod tests {
    use super::token_kind_in;

    #[test]
    fn token_shapes_are_found_and_names_are_not() {
        let token = format!(
            "ghp_{}",
            "a1B2c3D4e5".repeat(4).get(..36).unwrap_or_default()
        );
        assert_eq!(
            token_kind_in(&format!("token: {token}")).ok().flatten(),
            Some("github-token")
        );
        assert_eq!(
            token_kind_in("AKIAABCDEFGHIJKLMNOP").ok().flatten(),
            Some("aws-access-key-id")
        );
        for clean in [
            "let api_key = read_key(path);",
            "password: changeme",
            "already [REDACTED:github-token] here",
        ] {
            assert_eq!(token_kind_in(clean).ok().flatten(), None, "{clean}");
        }
    }
}
