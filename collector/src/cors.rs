//! Browser ingest: CORS on `/v1/events` and `/v1/logs`.
//!
//! Which origins may post is a property of the ingest key
//! (`IngestKey::allowed_origins`, `synchealth keys create --allowed-origin`),
//! but a preflight (`OPTIONS`) carries no key: browsers never send
//! `Authorization` on it. So the check is split:
//!
//! - the **preflight** is answered for any origin (the origin mirrored, with
//!   the methods, headers and [`MAX_AGE_SECONDS`]). It grants nothing by
//!   itself: it only lets the browser send the real request;
//! - the **real request** is refused with 403 and *without*
//!   `Access-Control-Allow-Origin` when its `Origin` is not on its key's
//!   list ([`check_origin`]), after the key check and before a byte of the
//!   body is read; the browser then hides the answer from the page (a CORS
//!   error), and nothing is stored.
//!
//! The trade-off: a page on a disallowed origin costs the collector one
//! refused request per attempt instead of none (answering preflights only
//! for the union of all keys' origins would stop it in the browser, but
//! needs a scan of every key per deployment and still could not tell which
//! key the page will use). Beacons (`text/plain`, key in the query) have no
//! preflight at all, so the check on the real request is needed anyway.
//! `Origin` is a browser's statement, not proof: a program can send any
//! origin or none, so an allow-list keeps other sites' pages from posting
//! with a key (keys are public), and is no authentication. A request without
//! `Origin` (a native app, curl) is not a browser's and is not checked.
//!
//! Hand-written rather than `tower_http::cors::CorsLayer`: that layer decides
//! from the request alone and adds the allow headers to every answer, while
//! here the decision depends on the key the handler looks up, and a refused
//! origin must get no allow header at all.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{AppError, Authenticated};

/// How long a browser may reuse a preflight's answer: Chromium caps it at
/// two hours (Firefox at a day), so more would only be ignored.
pub const MAX_AGE_SECONDS: u32 = 7200;

/// The request headers a probe sends beyond the CORS-safelisted ones.
const ALLOWED_HEADERS: &str = "authorization, content-type, content-encoding";

/// Marks an answer to a refused origin: [`headers`] then adds no allow header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OriginRefused;

/// Whether `origin` (as the browser sent it) is on `allowed` (`*`: any).
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// Refuses a browser request whose `Origin` its key does not allow.
pub(crate) fn check_origin(headers: &HeaderMap, who: &Authenticated) -> Result<(), AppError> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or("");
    if origin_allowed(origin, &who.allowed_origins) {
        Ok(())
    } else {
        Err(AppError::OriginNotAllowed(origin.to_string()))
    }
}

/// A browser origin as an operator gives it (`https://app.example.com`,
/// `http://localhost:5173`, or `*`), normalized to what browsers send:
/// lowercase scheme and host, no trailing slash, no path. `None` when it is
/// not an origin.
pub fn parse_allowed_origin(given: &str) -> Option<String> {
    let given = given.trim();
    if given == "*" {
        return Some(given.to_string());
    }
    let (scheme, rest) = given.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let host = rest.strip_suffix('/').unwrap_or(rest);
    let valid_host = !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        && !host.starts_with(':');
    ((scheme == "http" || scheme == "https") && valid_host).then(|| format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// `OPTIONS /v1/events` and `/v1/logs`: the preflight, for any origin (see
/// the module's note); [`headers`] adds the mirrored origin.
pub(crate) async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(MAX_AGE_SECONDS));
    response
}

/// Adds the allow headers to every answer of a browser request (errors too,
/// so a page's probe can read a 429's `Retry-After`), except to an answer
/// that refused the origin.
pub(crate) async fn headers(request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let mut response = next.run(request).await;
    if let Some(origin) = origin {
        let refused = response.extensions().get::<OriginRefused>().is_some();
        let h = response.headers_mut();
        if !refused {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            // Not CORS-safelisted: without this a page cannot read it.
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after"));
        }
        // The answer depends on the origin: caches must not share it.
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized_and_non_origins_refused() {
        assert_eq!(parse_allowed_origin("https://App.Example.com/").as_deref(), Some("https://app.example.com"));
        assert_eq!(parse_allowed_origin("http://localhost:5173").as_deref(), Some("http://localhost:5173"));
        assert_eq!(parse_allowed_origin("*").as_deref(), Some("*"));
        for bad in ["app.example.com", "https://app.example.com/path", "ftp://x", "https://", "https://a b", ""] {
            assert_eq!(parse_allowed_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_star_allows_any_origin_and_a_list_only_its_own() {
        let list = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed("https://app.example.com", &list));
        assert!(!origin_allowed("https://evil.example.com", &list));
        assert!(!origin_allowed("https://app.example.com", &[]));
        assert!(origin_allowed("null", &["*".to_string()]));
    }
}
