//! One error type for every refusal, rendered as `application/problem+json`
//! (RFC 9457). Internal errors are logged with their cause chain; the client
//! sees only a generic detail.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ota_core::wire::Problem;

pub const PROBLEM_JSON: &str = "application/problem+json";
/// Seconds a client is asked to wait after a 503.
const UNAVAILABLE_RETRY_AFTER: u64 = 5;

pub type ApiResult<T, E = ApiError> = Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// No credentials were sent.
    #[error("{0}")]
    MissingCredentials(String),
    /// Credentials were sent but are not valid.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("the range starts past the end of the {size}-byte file")]
    RangeNotSatisfiable { size: u64 },
    #[error("{detail}")]
    Invalid {
        field: Option<&'static str>,
        detail: String,
    },
    #[error("too many requests; retry in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// A refusal with a status of its own (405, 415, ...), from the framework.
    #[error("{detail}")]
    Status { status: StatusCode, detail: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: &'static str, detail: impl std::fmt::Display) -> Self {
        ApiError::Invalid {
            field: Some(field),
            detail: format!("{field}: {detail}"),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MissingCredentials(_) | ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Status { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            ref e if is_busy(e) => {
                tracing::warn!(error = %error, "the database is busy");
                ApiError::Unavailable("the database is busy; try again shortly".into())
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                tracing::error!(error = %error, "the database is unreachable");
                ApiError::Unavailable("the database is not reachable right now; try again shortly".into())
            }
            other => ApiError::Internal(anyhow::Error::new(other).context("database query failed")),
        }
    }
}

/// A database that could not serve the statement now, though it may soon:
/// SQLITE_BUSY and SQLITE_LOCKED (and their extended codes) outlasting the
/// busy timeout; on PostgreSQL a lock timeout, a deadlock or serialization
/// failure, too many connections, or a server shutting down or starting.
fn is_busy(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(e) = error else { return false };
    let Some(code) = e.code() else { return false };
    if e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
        return matches!(
            code.as_ref(),
            "55P03" | "40P01" | "40001" | "53300" | "57014" | "57P01" | "57P02" | "57P03"
        );
    }
    code.parse::<u32>().is_ok_and(|code| matches!(code & 0xff, 5 | 6))
}

/// The problem document for a status and detail.
pub fn problem(status: StatusCode, detail: String, field: Option<&str>) -> Response {
    let slug = match status.as_u16() {
        400 => "bad-request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not-found",
        405 => "method-not-allowed",
        409 => "conflict",
        413 => "payload-too-large",
        415 => "unsupported-media-type",
        416 => "range-not-satisfiable",
        422 => "invalid-value",
        429 => "too-many-requests",
        503 => "unavailable",
        _ => "internal-error",
    };
    let body = Problem {
        kind: format!("urn:ota-server:problem:{slug}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        field: field.map(str::to_owned),
    };
    let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        json,
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "request failed");
                "the server could not complete this request".to_owned()
            }
            other => other.to_string(),
        };
        let field = match &self {
            ApiError::Invalid { field, .. } => *field,
            _ => None,
        };
        let mut response = problem(status, detail, field);
        let headers = response.headers_mut();
        match self {
            ApiError::MissingCredentials(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"ota\""),
                );
            }
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"ota\", error=\"invalid_token\""),
                );
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(UNAVAILABLE_RETRY_AFTER));
            }
            ApiError::TooManyRequests { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            }
            ApiError::RangeNotSatisfiable { size } => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
            }
            _ => {}
        }
        response
    }
}
