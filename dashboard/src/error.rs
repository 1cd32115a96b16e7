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
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
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
            AppError::Unavailable(internal) => {
                tracing::error!(error = %internal, "Store read failed.");
                (StatusCode::SERVICE_UNAVAILABLE, json!({"error": "storage unavailable", "detail": "retry later"}))
            }
        };
        (status, Json(body)).into_response()
    }
}

impl From<synchealth_store::Error> for AppError {
    fn from(e: synchealth_store::Error) -> Self {
        AppError::Unavailable(e.to_string())
    }
}
