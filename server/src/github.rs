//! GitHub: the OAuth web flow endpoints (reqwest) and the REST API (octocrab), at the URLs the
//! operator configured, so GitHub Enterprise Server works the same as github.com.
//!
//! Tokens pass through here as `&SecretString` and are never logged or put into errors.

use std::time::Duration;

use octocrab::Octocrab;
use serde::{Deserialize, Serialize};

use crate::config::{Config, SecretString};

/// Scopes drydock asks for: repositories (clone, push, pull requests), workflows (so an agent's
/// change to `.github/workflows/*` can be pushed; GitHub refuses it otherwise) and the profile.
pub const OAUTH_SCOPES: &str = "repo workflow read:user user:email";
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// How a call to GitHub failed, in terms a person can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GithubError {
    /// OAuth is not set up: no client id or secret.
    #[error("GitHub sign-in is not configured on this server")]
    NotConfigured,
    /// GitHub refused the token (expired or revoked): the user must sign in again.
    #[error("GitHub no longer accepts your sign-in; sign in again")]
    Unauthorized,
    /// The thing asked for does not exist or the token cannot see it.
    #[error("not found on GitHub")]
    NotFound,
    /// GitHub refused the OAuth code exchange.
    #[error("GitHub refused the sign-in: {0}")]
    OAuth(String),
    /// GitHub answered with another error status.
    #[error("GitHub answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// GitHub's message.
        message: String,
    },
    /// GitHub could not be reached or answered something unreadable.
    #[error("GitHub could not be reached: {0}")]
    Unreachable(String),
}

/// Where GitHub is and how drydock identifies itself to it.
#[derive(Debug, Clone)]
pub struct Github {
    web_url: String,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    http: reqwest::Client,
    api: Octocrab,
}

/// A token from the OAuth code exchange.
#[derive(Debug)]
pub struct OAuthToken {
    /// The access token.
    pub access_token: SecretString,
    /// Scopes granted, comma-separated.
    pub scopes: String,
    /// Seconds until it expires, for expiring user tokens.
    pub expires_in: Option<i64>,
    /// Refresh token, for expiring user tokens.
    pub refresh_token: Option<SecretString>,
}

/// The signed-in user's GitHub profile.
#[derive(Debug, Clone, Deserialize)]
pub struct GithubUser {
    /// Numeric id.
    pub id: i64,
    /// Login.
    pub login: String,
    /// Display name.
    pub name: Option<String>,
    /// Public email, if any.
    pub email: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GithubEmail {
    email: String,
    primary: bool,
    verified: bool,
}

/// A repository as drydock shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Repo {
    /// `owner/name`.
    pub full_name: String,
    /// Owner login.
    pub owner: String,
    /// Name.
    pub name: String,
    /// Private repository.
    pub private: bool,
    /// Default branch.
    pub default_branch: Option<String>,
    /// Last update, RFC 3339.
    pub updated_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawRepo {
    name: String,
    full_name: String,
    owner: RawOwner,
    #[serde(default)]
    private: bool,
    default_branch: Option<String>,
    updated_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawOwner {
    login: String,
}

impl From<RawRepo> for Repo {
    fn from(raw: RawRepo) -> Self {
        Repo {
            full_name: raw.full_name,
            owner: raw.owner.login,
            name: raw.name,
            private: raw.private,
            default_branch: raw.default_branch,
            updated_at: raw.updated_at,
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    scope: Option<String>,
    expires_in: Option<i64>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl Github {
    /// A client for the configured GitHub.
    pub fn new(config: &Config) -> Result<Self, GithubError> {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .user_agent(concat!("drydock/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| GithubError::Unreachable(err.to_string()))?;
        let api = Octocrab::builder()
            .base_uri(config.github_api_url.trim_end_matches('/'))
            .and_then(|builder| {
                builder
                    .set_connect_timeout(Some(HTTP_TIMEOUT))
                    .set_read_timeout(Some(HTTP_TIMEOUT))
                    .build()
            })
            .map_err(|err| GithubError::Unreachable(format!("bad GITHUB_API_URL: {err}")))?;
        Ok(Self {
            web_url: config.github_url.trim_end_matches('/').to_owned(),
            client_id: config.github_client_id.clone().filter(|id| !id.is_empty()),
            client_secret: config.github_client_secret.clone(),
            http,
            api,
        })
    }

    /// Whether sign-in is configured (client id and secret present).
    pub fn oauth_configured(&self) -> bool {
        self.client_id.is_some() && self.client_secret.is_some()
    }

    /// GitHub's web URL (where OAuth apps are registered).
    pub fn web_url(&self) -> &str {
        &self.web_url
    }

    /// The authorize URL to send the browser to.
    pub fn authorize_url(
        &self,
        redirect_uri: &str,
        state: &str,
        code_challenge: &str,
    ) -> Result<String, GithubError> {
        let client_id = self
            .client_id
            .as_deref()
            .ok_or(GithubError::NotConfigured)?;
        let query = serde_urlencoded_pairs(&[
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("scope", OAUTH_SCOPES),
            ("state", state),
            ("code_challenge", code_challenge),
            ("code_challenge_method", "S256"),
            ("allow_signup", "false"),
        ]);
        Ok(format!("{}/login/oauth/authorize?{query}", self.web_url))
    }

    /// Exchanges an authorization code (with its PKCE verifier) for a token.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<OAuthToken, GithubError> {
        self.token_endpoint(&[
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// Renews an expiring user token with its refresh token (GitHub's
    /// `grant_type=refresh_token`, RFC 6749 §6); GitHub answers a new access token and a new
    /// refresh token (the old refresh token is then spent).
    ///
    /// # Errors
    /// [`GithubError::OAuth`] when GitHub refuses the refresh token (`bad_refresh_token`).
    pub async fn refresh_token(&self, refresh: &SecretString) -> Result<OAuthToken, GithubError> {
        self.token_endpoint(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose()),
        ])
        .await
    }

    /// A call to `/login/oauth/access_token` with the app's credentials and `params`.
    async fn token_endpoint(&self, params: &[(&str, &str)]) -> Result<OAuthToken, GithubError> {
        let (Some(client_id), Some(secret)) = (&self.client_id, &self.client_secret) else {
            return Err(GithubError::NotConfigured);
        };
        let mut form = vec![
            ("client_id", client_id.as_str()),
            ("client_secret", secret.expose()),
        ];
        form.extend_from_slice(params);
        let response = self
            .http
            .post(format!("{}/login/oauth/access_token", self.web_url))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|err| GithubError::Unreachable(describe_reqwest(&err)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(GithubError::Status {
                status: status.as_u16(),
                message: "the token endpoint failed".into(),
            });
        }
        let body: TokenResponse = response.json().await.map_err(|_| {
            GithubError::Unreachable(
                "the token endpoint answered something that is not JSON".into(),
            )
        })?;
        if let Some(error) = body.error {
            let detail = body.error_description.unwrap_or(error);
            return Err(GithubError::OAuth(detail));
        }
        let access_token = body
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| GithubError::OAuth("no access token in the answer".into()))?;
        Ok(OAuthToken {
            access_token: SecretString::new(access_token),
            scopes: body.scope.unwrap_or_default(),
            expires_in: body.expires_in,
            refresh_token: body
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(SecretString::new),
        })
    }

    fn as_user(&self, token: &SecretString) -> Result<Octocrab, GithubError> {
        self.api
            .user_access_token(token.expose().to_owned())
            .map_err(|err| GithubError::Unreachable(err.to_string()))
    }

    /// The token owner's profile, with their primary verified email when the profile has none.
    pub async fn user(&self, token: &SecretString) -> Result<GithubUser, GithubError> {
        let api = self.as_user(token)?;
        let mut user: GithubUser = api.get("/user", None::<&()>).await.map_err(map_octocrab)?;
        if user.email.as_deref().is_none_or(str::is_empty) {
            // The emails endpoint needs user:email; without it, go on without an email.
            let emails: Vec<GithubEmail> = match api.get("/user/emails", None::<&()>).await {
                Ok(emails) => emails,
                Err(err) => {
                    tracing::info!(error = %map_octocrab(err), "could not read the user's emails");
                    Vec::new()
                }
            };
            user.email = emails
                .into_iter()
                .find(|e| e.primary && e.verified)
                .map(|e| e.email);
        }
        Ok(user)
    }

    /// One page of the repositories the token's owner can access, most recently updated first.
    pub async fn repos_page(
        &self,
        token: &SecretString,
        page: u32,
        per_page: u8,
    ) -> Result<(Vec<Repo>, bool), GithubError> {
        #[derive(Serialize)]
        struct Params {
            sort: &'static str,
            per_page: u8,
            page: u32,
        }
        let api = self.as_user(token)?;
        let params = Params {
            sort: "updated",
            per_page,
            page,
        };
        let page: octocrab::Page<RawRepo> = api
            .get("/user/repos", Some(&params))
            .await
            .map_err(map_octocrab)?;
        let has_next = page.next.is_some();
        Ok((page.items.into_iter().map(Repo::from).collect(), has_next))
    }
}

impl Github {
    /// The repository `owner/name` as the token's owner sees it; [`GithubError::NotFound`] when
    /// it does not exist or they cannot read it.
    pub async fn repo(&self, token: &SecretString, repo: &str) -> Result<Repo, GithubError> {
        let api = self.as_user(token)?;
        let raw: RawRepo = api
            .get(format!("/repos/{repo}"), None::<&()>)
            .await
            .map_err(map_octocrab)?;
        Ok(raw.into())
    }

    /// Opens a pull request of `head` into `base` on `repo` (`owner/name`); answers its URL and number.
    pub async fn create_pull(
        &self,
        token: &SecretString,
        repo: &str,
        title: &str,
        body: &str,
        head: &str,
        base: &str,
    ) -> Result<(String, i64), GithubError> {
        #[derive(Serialize)]
        struct NewPull<'a> {
            title: &'a str,
            body: &'a str,
            head: &'a str,
            base: &'a str,
        }
        #[derive(Deserialize)]
        struct Pull {
            html_url: String,
            number: i64,
        }
        let api = self.as_user(token)?;
        let pull: Pull = api
            .post(
                format!("/repos/{repo}/pulls"),
                Some(&NewPull {
                    title,
                    body,
                    head,
                    base,
                }),
            )
            .await
            .map_err(map_octocrab)?;
        Ok((pull.html_url, pull.number))
    }
}

impl Github {
    /// The open pull request whose head is `head` (a branch of `repo`, `owner/name`): its URL
    /// and number, or `None`.
    pub async fn open_pull_for(
        &self,
        token: &SecretString,
        repo: &str,
        head: &str,
    ) -> Result<Option<(String, i64)>, GithubError> {
        #[derive(Serialize)]
        struct Filter<'a> {
            state: &'static str,
            head: &'a str,
        }
        #[derive(Deserialize)]
        struct Pull {
            html_url: String,
            number: i64,
        }
        let owner = repo.split('/').next().unwrap_or_default();
        let api = self.as_user(token)?;
        let pulls: Vec<Pull> = api
            .get(
                format!("/repos/{repo}/pulls"),
                Some(&Filter {
                    state: "open",
                    head: &format!("{owner}:{head}"),
                }),
            )
            .await
            .map_err(map_octocrab)?;
        Ok(pulls.into_iter().next().map(|p| (p.html_url, p.number)))
    }
}

/// Whether GitHub refused to open a pull request because one is already open for its head (a 422
/// "Validation Failed" whose error says "A pull request already exists for owner:branch.").
pub fn is_pull_already_open(err: &GithubError) -> bool {
    matches!(err, GithubError::Status { status: 422, message } if message.contains("already exists"))
}

fn serde_urlencoded_pairs(pairs: &[(&str, &str)]) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A reqwest error without its URL (which is ours, but keep errors short and uniform).
fn describe_reqwest(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".into()
    } else if err.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

fn map_octocrab(err: octocrab::Error) -> GithubError {
    match err {
        octocrab::Error::GitHub { source, .. } => match source.status_code.as_u16() {
            401 => GithubError::Unauthorized,
            404 => GithubError::NotFound,
            status => {
                // A 422 says what was wrong in `errors` ("A pull request already exists for …").
                let details: Vec<String> = source
                    .errors
                    .iter()
                    .flatten()
                    .filter_map(|e| match e {
                        serde_json::Value::String(text) => Some(text.clone()),
                        other => other["message"].as_str().map(str::to_owned).or_else(|| {
                            Some(format!(
                                "{} {}",
                                other["field"].as_str()?,
                                other["code"].as_str().unwrap_or("invalid")
                            ))
                        }),
                    })
                    .collect();
                let message = if details.is_empty() {
                    source.message.clone()
                } else {
                    format!("{}: {}", source.message, details.join("; "))
                };
                GithubError::Status {
                    status,
                    message: message.chars().take(300).collect(),
                }
            }
        },
        octocrab::Error::Serde { .. } | octocrab::Error::Json { .. } => {
            GithubError::Unreachable("GitHub answered something drydock could not read".into())
        }
        other => {
            tracing::debug!(error = %other, "GitHub request failed");
            GithubError::Unreachable("the request failed".into())
        }
    }
}

/// What the token's owner may do with a repository (`permissions` of `GET /repos/{owner}/{repo}`).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct RepoPermissions {
    /// Administer it.
    #[serde(default)]
    pub admin: bool,
    /// Push to it (write access).
    #[serde(default)]
    pub push: bool,
    /// Read it.
    #[serde(default)]
    pub pull: bool,
}

impl Github {
    /// The token owner's permissions on `repo` (`owner/name`); all false when GitHub gives none.
    pub async fn repo_permissions(
        &self,
        token: &SecretString,
        repo: &str,
    ) -> Result<RepoPermissions, GithubError> {
        #[derive(Deserialize)]
        struct WithPermissions {
            permissions: Option<RepoPermissions>,
        }
        let api = self.as_user(token)?;
        let raw: WithPermissions = api
            .get(format!("/repos/{repo}"), None::<&()>)
            .await
            .map_err(map_octocrab)?;
        Ok(raw.permissions.unwrap_or_default())
    }

    /// Comments on issue or pull request `number` of `repo`; answers the comment's URL.
    pub async fn comment_on_issue(
        &self,
        token: &SecretString,
        repo: &str,
        number: i64,
        body: &str,
    ) -> Result<String, GithubError> {
        #[derive(Serialize)]
        struct NewComment<'a> {
            body: &'a str,
        }
        #[derive(Deserialize)]
        struct Comment {
            html_url: String,
        }
        let api = self.as_user(token)?;
        let comment: Comment = api
            .post(
                format!("/repos/{repo}/issues/{number}/comments"),
                Some(&NewComment { body }),
            )
            .await
            .map_err(map_octocrab)?;
        Ok(comment.html_url)
    }

    /// Reacts with `content` (e.g. `eyes`) on an issue comment, or on the issue itself when
    /// `comment_id` is `None`.
    pub async fn add_reaction(
        &self,
        token: &SecretString,
        repo: &str,
        issue_number: i64,
        comment_id: Option<i64>,
        content: &str,
    ) -> Result<(), GithubError> {
        #[derive(Serialize)]
        struct NewReaction<'a> {
            content: &'a str,
        }
        let path = match comment_id {
            Some(id) => format!("/repos/{repo}/issues/comments/{id}/reactions"),
            None => format!("/repos/{repo}/issues/{issue_number}/reactions"),
        };
        let api = self.as_user(token)?;
        let _: serde_json::Value = api
            .post(path, Some(&NewReaction { content }))
            .await
            .map_err(map_octocrab)?;
        Ok(())
    }
}
