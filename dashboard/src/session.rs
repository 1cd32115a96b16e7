//! Login sessions and CSRF protection for the pages.
//!
//! Why sessions in the store rather than signed cookies: a session must
//! survive a restart and work on every dashboard replica, which both designs
//! give, but only a stored session can be ended by a logout everywhere at
//! once (a signed cookie stays valid until it expires, whoever logged out).
//! The cost is one store read per page view, small next to the page's
//! aggregates. The cookie holds 32 random bytes; the store keeps their
//! SHA-256, so a copy of the database opens no session.
//!
//! Cookie: `sh_session`, `HttpOnly` (no script reads it), `SameSite=Strict`
//! (no other site's page sends it along), `Secure` when the request came
//! over TLS (see [`SecureCookies`]), 12 hours.
//!
//! CSRF: every state-changing form carries a synchronizer token derived from
//! the session token (`SHA-256("synchealth-csrf:" + token)`): bound to the
//! session, unknowable without the cookie, nothing more to store. The login
//! form, which has no session yet, uses a double-submit cookie. On top of
//! both, a POST whose `Origin` names another host is refused.

use std::time::Duration;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use synchealth_schema::unix_ms;
use synchealth_store::{Session, User};
use time::OffsetDateTime;

use crate::{AppError, CurrentUser, DashboardState};

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "sh_session";
/// The login form's double-submit cookie.
pub(crate) const LOGIN_CSRF_COOKIE: &str = "sh_login_csrf";
/// How long a session lasts: an on-call shift, not a week.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// When the cookies get the `Secure` attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecureCookies {
    /// When the request came over TLS as a reverse proxy reports it
    /// (`X-Forwarded-Proto: https`). Trusting the header can only make the
    /// cookie stricter, never weaker.
    #[default]
    Auto,
    /// Always (the dashboard is only ever reached over HTTPS).
    Always,
    /// Never (plain HTTP on a trusted network).
    Never,
}

impl SecureCookies {
    fn applies(self, headers: &HeaderMap) -> bool {
        match self {
            SecureCookies::Always => true,
            SecureCookies::Never => false,
            SecureCookies::Auto => headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))),
        }
    }
}

/// 32 random bytes, hex.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// What ties a session to the password it was opened with.
fn credential_tag(user: &User) -> String {
    sha256_hex(&user.password_hash)[..16].to_string()
}

/// The CSRF token of a session.
fn csrf_of(token: &str) -> String {
    sha256_hex(&format!("synchealth-csrf:{token}"))
}

/// Equal without an early exit, so timing does not reveal a prefix.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// A `Set-Cookie` value with our attributes.
pub(crate) fn set_cookie(
    state: &DashboardState,
    headers: &HeaderMap,
    name: &str,
    value: &str,
    path: &str,
    max_age_s: u64,
) -> String {
    let secure = if state.secure_cookies.applies(headers) { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
}

/// Opens a session for a verified user; returns the cookie's token.
pub(crate) async fn open(state: &DashboardState, user: &User) -> Result<String, AppError> {
    let token = random_token();
    let now_ms = unix_ms(OffsetDateTime::now_utc());
    let session = Session {
        token_hash: sha256_hex(&token),
        username: user.username.clone(),
        credential_tag: credential_tag(user),
        created_at_ms: now_ms,
        expires_at_ms: now_ms + i64::try_from(SESSION_TTL.as_millis()).unwrap_or(i64::MAX),
    };
    state.store.create_session(&session).await?;
    tracing::info!(username = ?user.username, "Opened a dashboard session.");
    Ok(token)
}

/// Ends the session of `token`, if any.
pub(crate) async fn close(state: &DashboardState, token: &str) -> Result<(), AppError> {
    state.store.delete_session(&sha256_hex(token)).await?;
    Ok(())
}

/// The user of a session token, if the session is open and the user still
/// exists with the same password.
pub(crate) async fn user_of(state: &DashboardState, token: &str) -> Result<Option<User>, AppError> {
    let now_ms = unix_ms(OffsetDateTime::now_utc());
    let Some(session) = state.store.find_session(&sha256_hex(token), now_ms).await? else {
        return Ok(None);
    };
    let user = state.store.find_user(&session.username).await?;
    Ok(user.filter(|u| constant_time_eq(&credential_tag(u), &session.credential_tag)))
}

/// The logged-in user of a page request, with the session's CSRF token.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// Who.
    pub user: CurrentUser,
    /// The token forms must send back.
    pub csrf: String,
    /// The session token (to log out).
    pub(crate) token: String,
}

impl Viewer {
    /// Refuses a form whose CSRF token is not this session's, or that was
    /// posted from another origin.
    pub fn check_form(&self, headers: &HeaderMap, sent: &str) -> Result<(), AppError> {
        check_origin(headers)?;
        if constant_time_eq(&self.csrf, sent) {
            Ok(())
        } else {
            tracing::warn!(username = ?self.user.0.username, "Refused a form with a wrong CSRF token.");
            Err(AppError::Csrf)
        }
    }
}

/// A browser sends `Origin` on every POST; if it names another host than the
/// one addressed, the form came from someone else's page.
pub(crate) fn check_origin(headers: &HeaderMap) -> Result<(), AppError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin);
    if origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        tracing::warn!(?origin, ?host, "Refused a cross-origin form.");
        Err(AppError::Csrf)
    }
}

/// Why a page request has no viewer.
#[derive(Debug)]
pub enum NoViewer {
    /// Not logged in: go to the login page, then come back to `next`.
    Login {
        /// Path and query of the page asked for.
        next: String,
        /// The navigation came from another site (a link in a chat or an
        /// incident channel): a `SameSite=Strict` cookie is not sent on it,
        /// even to a logged-in browser.
        cross_site: bool,
    },
    /// The store failed.
    Error(AppError),
}

impl FromRequestParts<DashboardState> for Viewer {
    type Rejection = NoViewer;

    async fn from_request_parts(parts: &mut Parts, state: &DashboardState) -> Result<Self, Self::Rejection> {
        // The same check as after login: `GET //evil.example` reaches the
        // fallback page, and its same-site reload must not leave the origin.
        let next = safe_next(parts.uri.path_and_query().map(|p| p.as_str()));
        let cross_site = parts.method == axum::http::Method::GET
            && parts.headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site");
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(NoViewer::Login { next, cross_site });
        };
        match user_of(state, &token).await {
            Ok(Some(user)) => Ok(Viewer { user: CurrentUser(user), csrf: csrf_of(&token), token }),
            Ok(None) => Err(NoViewer::Login { next, cross_site: false }),
            Err(e) => Err(NoViewer::Error(e)),
        }
    }
}

/// Where to go after logging in: a path on this origin, or `/`.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    next.and_then(same_origin_path).unwrap_or_else(|| "/".to_string())
}

/// `next` as a path on this origin, fit for a `Location` header; `None` when
/// a browser could read it as another origin (an open redirect) or as
/// anything but a plain path.
fn same_origin_path(next: &str) -> Option<String> {
    use std::fmt::Write;
    // Browsers drop tabs and newlines from a URL before parsing it and read
    // `\` as `/`, so `/\t/evil.example` and `/\evil.example` both become
    // `//evil.example`, another host. Refusing every control character and
    // backslash leaves nothing for a browser to strip or reinterpret, and
    // nothing that cannot go in a header (a 500).
    if next.chars().any(|c| c.is_control() || c == '\\') {
        return None;
    }
    let rest = next.strip_prefix('/')?;
    if rest.starts_with('/') || rest.starts_with("login") {
        return None;
    }
    // Anything but visible ASCII (a space, a device id in another script) is
    // percent-encoded, so the header value is plain ASCII.
    let mut path = String::with_capacity(next.len());
    for c in next.chars() {
        if c.is_ascii_graphic() {
            path.push(c);
        } else {
            for byte in c.encode_utf8(&mut [0; 4]).bytes() {
                let _ = write!(path, "%{byte:02X}");
            }
        }
    }
    // Belt and braces: it must read as an origin-form URI, with neither
    // scheme nor host.
    let uri: axum::http::Uri = path.parse().ok()?;
    (uri.scheme().is_none() && uri.authority().is_none()).then_some(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_same_origin_paths_are_followed_after_login() {
        let followed = [
            ("/breakdown?by=os", "/breakdown?by=os"),
            ("/devices/a1?project=ios&range=6h", "/devices/a1?project=ios&range=6h"),
            ("/%2F%2Fevil.example", "/%2F%2Fevil.example"),
            ("/devices/caf\u{e9} 1", "/devices/caf%C3%A9%201"),
        ];
        for (next, location) in followed {
            assert_eq!(safe_next(Some(next)), location, "{next:?}");
        }
        let refused = [
            "//evil.example/",
            "///evil.example",
            "https://evil.example/",
            "http:evil.example",
            "javascript:alert(1)",
            "evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "/\0",
            "/\n",
            "/\r\nSet-Cookie: a=b",
            "/\u{7f}",
            "/\u{85}/evil.example",
            "/login?next=/",
            "",
        ];
        for next in refused {
            assert_eq!(safe_next(Some(next)), "/", "{next:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_read_from_any_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; sh_session=abc".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "b"), None);
    }

    #[test]
    fn a_form_from_another_origin_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "dash.example:8080".parse().unwrap());
        headers.insert(header::ORIGIN, "http://dash.example:8080".parse().unwrap());
        assert!(check_origin(&headers).is_ok());
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(check_origin(&headers).is_err());
    }

    #[test]
    fn the_csrf_token_depends_on_the_session_and_compares_exactly() {
        assert_ne!(csrf_of("a"), csrf_of("b"));
        assert!(constant_time_eq(&csrf_of("a"), &csrf_of("a")));
        assert!(!constant_time_eq(&csrf_of("a"), ""));
    }
}
