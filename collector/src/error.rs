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
    /// A browser's `Origin` is not on its key's allowed origins (403); the
    /// answer carries no CORS allow header, so the browser refuses it too.
    OriginNotAllowed(String),
    /// The body is larger than allowed, compressed or not (413).
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// More events in one batch than allowed (413).
    TooManyEvents {
        /// Events in the batch.
        count: usize,
        /// The most allowed.
        max: usize,
    },
    /// The ingest key sent more events than its rate limit allows (429).
    RateLimited {
        /// The limit and what to do, in words.
        detail: String,
        /// Whole seconds to wait before retrying (also the `Retry-After` header).
        retry_after_seconds: u64,
    },
    /// Not JSON, or an encoding other than gzip/identity (415).
    UnsupportedMediaType(String),
    /// The store failed; the client should retry (503).
    Unavailable(String),
    /// More request bytes are being read than `max_body_bytes_in_flight`
    /// allows: nothing was read or stored, retry after `Retry-After` (503).
    BodiesInFlight {
        /// Whole seconds to wait before retrying (also the `Retry-After` header).
        retry_after_seconds: u64,
        /// The configured budget in bytes.
        budget_bytes: usize,
    },
    /// The store cannot take events and the spool is full: nothing was
    /// stored, the client should retry after `Retry-After` (503).
    Overloaded {
        /// Whole seconds to wait before retrying (also the `Retry-After` header).
        retry_after_seconds: u64,
    },
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            AppError::BadRequest(detail) => {
                (StatusCode::BAD_REQUEST, json!({"error": "invalid batch", "detail": detail}))
            }
            AppError::Unauthorized(why) => (StatusCode::UNAUTHORIZED, json!({"error": "unauthorized", "detail": why})),
            AppError::OriginNotAllowed(origin) => {
                let detail = format!(
                    "origin {origin:?} is not among this ingest key's allowed origins (synchealth keys create --allowed-origin)"
                );
                let body = json!({"error": "origin not allowed", "detail": detail});
                let mut response = (StatusCode::FORBIDDEN, Json(body)).into_response();
                response.extensions_mut().insert(crate::cors::OriginRefused);
                return response;
            }
            AppError::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "payload too large", "detail": format!("the body exceeds {limit} bytes (compressed or decompressed)"), "limit_bytes": limit}),
            ),
            AppError::TooManyEvents { count, max } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "too many events", "detail": format!("{count} events in one batch, at most {max} allowed; split the batch"), "count": count, "max_events": max}),
            ),
            AppError::RateLimited { detail, retry_after_seconds } => {
                return retry_later(StatusCode::TOO_MANY_REQUESTS, "rate limited", detail, retry_after_seconds);
            }
            AppError::UnsupportedMediaType(detail) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, json!({"error": "unsupported media type", "detail": detail}))
            }
            AppError::BodiesInFlight { retry_after_seconds, budget_bytes } => {
                let detail = format!(
                    "the collector is reading {budget_bytes} bytes of request bodies already; nothing was stored; retry after {retry_after_seconds} s"
                );
                return retry_later(StatusCode::SERVICE_UNAVAILABLE, "busy", detail, retry_after_seconds);
            }
            AppError::Overloaded { retry_after_seconds } => {
                let detail = format!(
                    "the store is not keeping up and the collector's spool is full; nothing was stored; retry after {retry_after_seconds} s"
                );
                return retry_later(StatusCode::SERVICE_UNAVAILABLE, "overloaded", detail, retry_after_seconds);
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

/// A refusal the client should retry: the JSON body names the wait, and
/// `Retry-After` carries it.
fn retry_later(status: StatusCode, error: &str, detail: String, retry_after_seconds: u64) -> Response {
    let body = json!({"error": error, "detail": detail, "retry_after_seconds": retry_after_seconds});
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
    response
}

impl AppError {
    /// The answer to a body that did not parse as a batch.
    pub fn invalid_batch(error: synchealth_schema::Error) -> Self {
        match error {
            synchealth_schema::Error::TooManyEvents { count, max } => AppError::TooManyEvents { count, max },
            other => AppError::BadRequest(other.to_string()),
        }
    }
}
