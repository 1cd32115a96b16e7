//! The HTTP server loop: HTTP/1.1 connections with limits an anonymous
//! client cannot outgrow.
//!
//! - A header-read timeout (`server.header_read_timeout_ms`): a connection
//!   that does not complete a request's headers in time is closed. hyper
//!   starts the same timer again when a response is done, so it is also the
//!   idle keep-alive timeout (hyper 1.x has one timer for both).
//! - A cap on open connections (`server.max_connections`). Beyond it a
//!   connection is still accepted, into a small overflow of
//!   [`OVERFLOW_CONNECTIONS`] with a short header timeout and no
//!   keep-alive, where `/healthz` is answered as usual and everything else
//!   gets 503 with `Retry-After`, so a liveness probe still sees a live
//!   process while the cap holds. Past the overflow too, a connection is
//!   closed at once, which frees its descriptor instead of leaving it in
//!   the kernel's backlog.
//! - The open-files limit raised to the hard limit at start
//!   ([`raise_open_files_limit`]); the cap is lowered to fit under it.
//!
//! Why not `axum::serve`: it offers neither a header-read timeout nor a
//! connection cap. Why HTTP/1.1 only: hyper-util's automatic version
//! detection waits, without a timeout, for the bytes that tell HTTP/2 from
//! HTTP/1, and no client of ours speaks cleartext HTTP/2.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Connections accepted beyond the cap, to answer `/healthz` and 503s.
pub const OVERFLOW_CONNECTIONS: usize = 64;

/// The header-read timeout of an overflow connection: it is there to
/// answer one short request.
const OVERFLOW_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Descriptors kept for everything but client connections (the store,
/// the spool, outgoing connections, the overflow).
const RESERVED_DESCRIPTORS: u64 = 256 + OVERFLOW_CONNECTIONS as u64;

/// How long shutdown waits for open connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(30);

/// The connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at most (before the overflow).
    pub max_connections: usize,
    /// Time allowed for a request's headers, and for a keep-alive
    /// connection to send its next request.
    pub header_read_timeout: Duration,
}

/// Raises the soft open-files limit to the hard limit and logs both;
/// returns the soft limit now in force (`None` where it cannot be read).
pub fn raise_open_files_limit() -> Option<u64> {
    let (before, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "Could not read the open-files limit.");
            return None;
        }
    };
    match rlimit::increase_nofile_limit(hard) {
        Ok(now) => {
            tracing::info!(soft_before = before, soft = now, hard, "Open-files limit.");
            Some(now)
        }
        Err(e) => {
            tracing::warn!(error = %e, soft = before, hard, "Could not raise the open-files limit.");
            Some(before)
        }
    }
}

impl ConnectionLimits {
    /// These limits with the cap lowered, if need be, to fit under an
    /// open-files limit of `nofile` (with room for everything else).
    pub fn fitted_to(self, nofile: Option<u64>) -> ConnectionLimits {
        let Some(nofile) = nofile else { return self };
        let room = usize::try_from(nofile.saturating_sub(RESERVED_DESCRIPTORS).max(16)).unwrap_or(usize::MAX);
        if self.max_connections <= room {
            return self;
        }
        tracing::warn!(
            max_connections = self.max_connections,
            open_files_limit = nofile,
            lowered_to = room,
            "server.max_connections does not fit under the open-files limit; lowered."
        );
        ConnectionLimits { max_connections: room, ..self }
    }
}

fn busy() -> Response<Body> {
    let body = r#"{"error":"busy","detail":"too many open connections; retry shortly","retry_after_seconds":1}"#;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open
/// connections finish their requests (up to [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut regular = hyper::server::conn::http1::Builder::new();
    regular.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let mut overflowing = hyper::server::conn::http1::Builder::new();
    overflowing
        .timer(TokioTimer::new())
        .header_read_timeout(OVERFLOW_HEADER_READ_TIMEOUT.min(limits.header_read_timeout))
        .keep_alive(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset
                    // before it was accepted: pause, so a full table does
                    // not spin the loop, and go on.
                    tracing::warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (slot, builder, over) = match Arc::clone(&open).try_acquire_owned() {
            Ok(slot) => (slot, &regular, false),
            Err(_) => match Arc::clone(&overflow).try_acquire_owned() {
                Ok(slot) => (slot, &overflowing, true),
                Err(_) => {
                    tracing::warn!(%peer, "Refused a connection: the connection cap and its overflow are full.");
                    continue;
                }
            },
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                if over && request.uri().path() != "/healthz" {
                    return Ok::<_, Infallible>(busy());
                }
                router.oneshot(request).await
            }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client closing early or timing out is its business, not an error of ours.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("Connections still open after {DRAIN:?}; stopping anyway.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_lowered_to_fit_under_the_open_files_limit() {
        let limits = ConnectionLimits { max_connections: 4096, header_read_timeout: Duration::from_secs(10) };
        assert_eq!(limits.fitted_to(Some(1_048_576)), limits);
        assert_eq!(limits.fitted_to(None), limits);
        assert_eq!(limits.fitted_to(Some(1024)).max_connections, 1024 - 256 - 64);
        assert_eq!(limits.fitted_to(Some(100)).max_connections, 16);
    }
}
