//! `AppError`: every way a request can fail, and how each looks on the wire.
//!
//! Errors are JSON `{ "error": { "code", "message" } }` with the matching status. Server-side
//! failures (5xx) answer with a generic message; their detail is logged once, here.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::secrets::SecretsError;
use crate::store::StoreError;

/// A request failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid session.
    #[error("sign in to continue")]
    Unauthorized,
    /// 401: credentials came with the request but are refused (an API token that is unknown,
    /// revoked or expired; a webhook signature that does not match); the message says which.
    #[error("{0}")]
    Rejected(String),
    /// 401: the session is fine but GitHub no longer accepts the user's token.
    #[error("{0}")]
    SignInAgain(String),
    /// 403: refused, e.g. a cross-site request.
    #[error("{0}")]
    Forbidden(String),
    /// 404: the thing does not exist or is not the caller's (the two are never told apart).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409: clashes with existing state.
    #[error("{0}")]
    Conflict(String),
    /// 422: well-formed but invalid; `field` names the input at fault.
    #[error("{message}")]
    Invalid {
        /// The field at fault, if one.
        field: Option<String>,
        /// What is wrong, for people.
        message: String,
    },
    /// 429: over a limit.
    #[error("{message}")]
    RateLimited {
        /// What limit, for people.
        message: String,
        /// Extra fields for clients (e.g. `remaining`, `reset_at`).
        details: serde_json::Value,
    },
    /// 502: a service drydock depends on (GitHub, an MCP server) failed; the message is safe to show.
    #[error("{0}")]
    Upstream(String),
    /// 503: not ready (database or Docker unreachable); the message is safe to show.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure; the detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    /// A 422 naming the field at fault.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A 500 from any error.
    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        AppError::Internal(err.into())
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized | AppError::Rejected(_) | AppError::SignInAgain(_) => {
                StatusCode::UNAUTHORIZED
            }
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Upstream(_) => StatusCode::BAD_GATEWAY,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::Unauthorized | AppError::Rejected(_) => "unauthorized",
            AppError::SignInAgain(_) => "sign_in_again",
            AppError::Forbidden(_) => "forbidden",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::Invalid { .. } => "invalid",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::Upstream(_) => "upstream_error",
            AppError::Unavailable(_) => "unavailable",
            AppError::Internal(_) => "internal",
        }
    }
}

/// The JSON error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `invalid`.
    pub code: String,
    /// Explanation for people.
    pub message: String,
    /// The input field at fault, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Extra machine-readable details, e.g. `remaining` and `reset_at` for rate limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        let message = match &self {
            AppError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                "something went wrong on the server; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let (field, details) = match self {
            AppError::Invalid { field, .. } => (field, None),
            AppError::RateLimited { details, .. } => (None, Some(details)),
            _ => (None, None),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                field,
                details,
            },
        };
        (status, Json(body)).into_response()
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        AppError::internal(err)
    }
}

impl From<SecretsError> for AppError {
    fn from(err: SecretsError) -> Self {
        AppError::internal(err)
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => AppError::BadRequest(
                "send the body as JSON with Content-Type: application/json".into(),
            ),
            JsonRejection::JsonSyntaxError(err) => {
                AppError::BadRequest(format!("the body is not valid JSON: {}", err.body_text()))
            }
            JsonRejection::JsonDataError(err) => AppError::Invalid {
                field: None,
                message: err.body_text(),
            },
            other => AppError::BadRequest(other.body_text()),
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        AppError::BadRequest(rejection.body_text())
    }
}

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        AppError::BadRequest(rejection.body_text())
    }
}

/// `axum::Json` whose rejections are drydock's JSON errors.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `axum::extract::Query` whose rejections are drydock's JSON errors.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct ApiQuery<T>(pub T);

/// `axum::extract::Path` whose rejections are drydock's JSON errors.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct ApiPath<T>(pub T);
