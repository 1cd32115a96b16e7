//! The collector's one error type: every failure leaves as a status code and
//! a JSON body `{"error": "..."}`; internals are logged, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// A failed ingest request.
#[derive(Debug)]
pub enum AppError {
    /// The body is not a batch (400).
    BadRequest(String),
    /// No, malformed, unknown or revoked ingest key (401).
    Unauthorized(&'static str),
    /// The body is larger than allowed, compressed or not (413).
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Not JSON, or an encoding other than gzip/identity (415).
    UnsupportedMediaType(String),
    /// The store failed; the client should retry (503).
    Unavailable(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            AppError::BadRequest(detail) => (StatusCode::BAD_REQUEST, json!({"error": "invalid batch", "detail": detail})),
            AppError::Unauthorized(why) => (StatusCode::UNAUTHORIZED, json!({"error": "unauthorized", "detail": why})),
            AppError::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "payload too large", "detail": format!("the body exceeds {limit} bytes (compressed or decompressed)"), "limit_bytes": limit}),
            ),
            AppError::UnsupportedMediaType(detail) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, json!({"error": "unsupported media type", "detail": detail}))
            }
            AppError::Unavailable(internal) => {
                tracing::error!(error = %internal, "Store write failed; asking the client to retry.");
                let mut response = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": "storage unavailable", "detail": "nothing was stored; retry later"})),
                )
                    .into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return response;
            }
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
