//! `GET/POST /login` and `POST /logout`.
//!
//! A failed login says only "wrong username or password" (which of the two
//! is not revealed) and costs one argon2 verification either way, so
//! timing does not tell existing users apart either. Failures count
//! towards the lockout of the user name and of the client address
//! ([`crate::throttle`]), shared with HTTP Basic.

use askama::Template;
use axum::extract::{Form, Query as UrlQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{render_with, PageError, STYLE};
use crate::auth::ClientAddress;
use crate::session::{
    self, constant_time_eq, cookie, safe_next, set_cookie, Viewer, LOGIN_CSRF_COOKIE, SESSION_COOKIE,
};
use crate::{AppError, DashboardState};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    style: &'static str,
    csrf: String,
    next: String,
    username: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// `GET /login`: the form (or straight on, when already logged in).
pub(crate) async fn form(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    UrlQuery(query): UrlQuery<LoginQuery>,
) -> Result<Response, PageError> {
    let next = safe_next(query.next.as_deref());
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        if session::user_of(&state, &token).await?.is_some() {
            return Ok(Redirect::to(&next).into_response());
        }
    }
    login_page(&state, &headers, StatusCode::OK, next, String::new(), None)
}

fn login_page(
    state: &DashboardState,
    headers: &HeaderMap,
    status: StatusCode,
    next: String,
    username: String,
    error: Option<String>,
) -> Result<Response, PageError> {
    // Double-submit: the same random value in a cookie only our pages can
    // set and in the form; a login form posted from elsewhere lacks one.
    let csrf = session::random_token();
    let mut response = render_with(status, &LoginPage { style: STYLE, csrf: csrf.clone(), next, username, error })?;
    if let Ok(value) = set_cookie(state, headers, LOGIN_CSRF_COOKIE, &csrf, "/login", 3600).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`: checks the password, opens a session, goes to `next`.
pub(crate) async fn submit(
    State(state): State<DashboardState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    session::check_origin(&headers)?;
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !constant_time_eq(&expected, &form.csrf) {
        return Err(PageError(AppError::Csrf));
    }
    let next = safe_next(Some(&form.next));
    let username = form.username.trim();
    state.auth.throttle.check(username, address).map_err(AppError::too_many_attempts)?;
    let user = state.store.find_user(username).await.map_err(AppError::from)?;
    let verified = state.auth.verifier.verify(&form.password, user.as_ref().map(|u| u.password_hash.as_str())).await?;
    let Some(user) = user.filter(|_| verified) else {
        state.auth.throttle.failed(username, address);
        tracing::warn!(username = ?form.username, address = ?address, "Failed dashboard login.");
        return login_page(
            &state,
            &headers,
            StatusCode::UNAUTHORIZED,
            next,
            form.username,
            Some("Wrong username or password.".into()),
        );
    };
    state.auth.throttle.succeeded(username, address);
    let token = session::open(&state, &user).await?;
    let max_age = session::SESSION_TTL.as_secs();
    let mut response = Redirect::to(&next).into_response();
    for value in [
        set_cookie(&state, &headers, SESSION_COOKIE, &token, "/", max_age),
        set_cookie(&state, &headers, LOGIN_CSRF_COOKIE, "", "/login", 0),
    ] {
        if let Ok(value) = value.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session in the store (every replica) and
/// clears the cookie.
pub(crate) async fn logout(
    State(state): State<DashboardState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Result<Response, PageError> {
    viewer.check_form(&headers, &form.csrf)?;
    session::close(&state, &viewer.token).await?;
    tracing::info!(username = ?viewer.user.0.username, "Closed a dashboard session.");
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = set_cookie(&state, &headers, SESSION_COOKIE, "", "/", 0).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}
