//! The dashboard's one error type: a status and a JSON body, never internals.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// A failed dashboard request.
#[derive(Debug)]
pub enum AppError {
    /// A query parameter is wrong (400): which one and why.
    BadParameter {
        /// The parameter name.
        parameter: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No or wrong credentials (401).
    Unauthorized,
    /// The user may not read this project (403).
    Forbidden(String),
    /// The store failed (503).
    Unavailable(String),
    /// A form without this session's CSRF token, or from another origin (403).
    Csrf,
    /// No such page or record (404).
    NotFound(String),
    /// Too many failed logins for this user or address (429): retry after
    /// this many seconds.
    TooManyAttempts(u64),
    /// Every password-verification slot stayed busy (503): retry shortly.
    Busy,
}

impl AppError {
    /// A 429 for a lockout lasting `wait` more (in whole seconds, at least 1).
    pub fn too_many_attempts(wait: std::time::Duration) -> AppError {
        AppError::TooManyAttempts(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    }

    /// The `Retry-After` seconds of a 429 or 503 that has one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            AppError::TooManyAttempts(seconds) => Some(*seconds),
            AppError::Busy => Some(BUSY_RETRY_AFTER_SECONDS),
            _ => None,
        }
    }
}

/// A verification slot frees up within about one verification's time.
const BUSY_RETRY_AFTER_SECONDS: u64 = 1;

/// `Retry-After: seconds` on a response.
pub(crate) fn with_retry_after(mut response: Response, seconds: Option<u64>) -> Response {
    if let Some(value) = seconds.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let retry_after = self.retry_after();
        let (status, body) = match self {
            AppError::BadParameter { parameter, reason } => (
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid parameter", "parameter": parameter, "detail": reason}),
            ),
            AppError::Unauthorized => {
                let mut response = (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"error": "unauthorized", "detail": "log in, or send HTTP Basic credentials of a dashboard user"})),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"synchealth\""));
                return response;
            }
            AppError::Forbidden(project) => (
                StatusCode::FORBIDDEN,
                json!({"error": "forbidden", "detail": format!("no access to project {project:?}")}),
            ),
            AppError::Csrf => (
                StatusCode::FORBIDDEN,
                json!({"error": "forbidden", "detail": "the form's CSRF token is missing or wrong; reload the page and retry"}),
            ),
            AppError::NotFound(what) => (StatusCode::NOT_FOUND, json!({"error": "not found", "detail": what})),
            AppError::TooManyAttempts(seconds) => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": "too many failed logins", "detail": format!("retry in {seconds} s"), "retry_after_seconds": seconds}),
            ),
            AppError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "busy", "detail": "too many logins at once; retry shortly", "retry_after_seconds": BUSY_RETRY_AFTER_SECONDS}),
            ),
            AppError::Unavailable(internal) => {
                tracing::error!(error = %internal, "Store read failed.");
                (StatusCode::SERVICE_UNAVAILABLE, json!({"error": "storage unavailable", "detail": "retry later"}))
            }
        };
        with_retry_after((status, Json(body)).into_response(), retry_after)
    }
}

impl From<synchealth_store::Error> for AppError {
    fn from(e: synchealth_store::Error) -> Self {
        AppError::Unavailable(e.to_string())
    }
}
