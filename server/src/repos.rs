//! `GET /api/repos`: the signed-in user's GitHub repositories, searchable and paginated.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::config::SecretString;
use crate::error::{ApiQuery, AppError, ErrorBody};
use crate::github::{GithubError, Repo};
use crate::state::AppState;

/// Repositories per page of the answer.
const PAGE_SIZE: usize = 30;
/// Pages of 100 read from GitHub when searching; past this the answer says it is truncated.
const SEARCH_SCAN_PAGES: u32 = 10;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_repos))
}

/// Query of `GET /api/repos`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RepoQuery {
    /// Case-insensitive text the `owner/name` must contain.
    pub q: Option<String>,
    /// Page, from 1.
    pub page: Option<u32>,
}

/// A page of repositories.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RepoList {
    /// The repositories, most recently updated first.
    pub repos: Vec<Repo>,
    /// This page's number.
    pub page: u32,
    /// Whether another page follows.
    pub has_next: bool,
    /// A search stopped after the first 1,000 repositories; refine `q` to find others.
    pub truncated: bool,
}

/// The user's GitHub token, opened (and renewed first when it expires within a minute).
pub async fn github_token(state: &AppState, user_id: &str) -> Result<SecretString, AppError> {
    use crate::auth::TokenError;
    state
        .github_tokens
        .current(user_id)
        .await
        .map_err(|err| match err {
            TokenError::Store => AppError::internal("could not read the GitHub sign-in"),
            other => AppError::SignInAgain(other.to_string()),
        })
}

/// Lists the signed-in user's repositories.
#[utoipa::path(get, path = "/api/repos", tag = "repos", params(RepoQuery),
    responses((status = 200, body = RepoList), (status = 401, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn list_repos(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(query): ApiQuery<RepoQuery>,
) -> Result<Json<RepoList>, AppError> {
    let page = query.page.unwrap_or(1);
    if !(1..=1000).contains(&page) {
        return Err(AppError::invalid("page", "page must be between 1 and 1000"));
    }
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if q.is_some_and(|q| q.len() > 100) {
        return Err(AppError::invalid(
            "q",
            "the search text must be at most 100 characters",
        ));
    }
    let token = github_token(&state, &user.user.id).await?;
    let list = match q {
        None => {
            let (repos, has_next) = state
                .github
                .repos_page(&token, page, PAGE_SIZE as u8)
                .await?;
            RepoList {
                repos,
                page,
                has_next,
                truncated: false,
            }
        }
        Some(q) => search(&state, &token, q, page).await?,
    };
    Ok(Json(list))
}

/// GitHub's `/user/repos` cannot filter by name, so read up to [`SEARCH_SCAN_PAGES`] pages of
/// 100 and filter here.
async fn search(
    state: &AppState,
    token: &SecretString,
    q: &str,
    page: u32,
) -> Result<RepoList, AppError> {
    let needle = q.to_lowercase();
    let mut matches = Vec::new();
    let mut truncated = false;
    for github_page in 1..=SEARCH_SCAN_PAGES {
        let (repos, has_next) = state.github.repos_page(token, github_page, 100).await?;
        matches.extend(
            repos
                .into_iter()
                .filter(|r| r.full_name.to_lowercase().contains(&needle)),
        );
        if !has_next {
            break;
        }
        truncated = github_page == SEARCH_SCAN_PAGES;
    }
    let start = (page as usize - 1) * PAGE_SIZE;
    let has_next = matches.len() > start + PAGE_SIZE;
    let repos = matches.into_iter().skip(start).take(PAGE_SIZE).collect();
    Ok(RepoList {
        repos,
        page,
        has_next,
        truncated,
    })
}

impl From<GithubError> for AppError {
    fn from(err: GithubError) -> Self {
        match err {
            GithubError::Unauthorized => AppError::SignInAgain(err.to_string()),
            GithubError::NotFound => AppError::NotFound("repository"),
            GithubError::NotConfigured => AppError::Unavailable(err.to_string()),
            other => AppError::Upstream(other.to_string()),
        }
    }
}
