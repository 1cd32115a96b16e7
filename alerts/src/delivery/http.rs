//! The one HTTP exchange every HTTP channel makes (webhooks, PagerDuty,
//! Opsgenie, Jira, Teams), so they all fail the same way: no answer, 408 and
//! 5xx are transient; 429 (and 503 with `Retry-After`) is [`Error::Throttled`]
//! with the service's `Retry-After`, which the dispatcher waits out before
//! retrying; any other status is permanent, with the service's own message
//! (truncated) in the error, as the delivery record's `last_error` shows it.
//!
//! Errors never carry the request (its URL may hold a token, its headers a
//! key): only the status and what the service answered.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;

use super::message::truncate;
use crate::error::{Error, Result};

/// How much of a service's error body an error keeps.
const BODY_IN_ERROR: usize = 300;

/// The longest `Retry-After` honoured: a service asking for an hour is
/// waited for an hour at most, within the retry policy's attempts.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Sends a request; a 2xx answer is returned, any other becomes the error
/// its status calls for.
pub async fn send(request: RequestBuilder) -> Result<Response> {
    // `without_url`: a Slack or Teams URL is a credential.
    let response = request.send().await.map_err(|e| Error::transient(format!("http: {}", e.without_url())))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    Err(failure(status, retry_after, &body))
}

/// Sends a request and reads its JSON answer (`Null` for an empty or
/// non-JSON body: Jira's transitions answer 204 with none).
pub async fn send_json(request: RequestBuilder) -> Result<Value> {
    let response = send(request).await?;
    let bytes = response.bytes().await.map_err(|e| Error::transient(format!("http: reading the answer: {e}")))?;
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The error for a non-2xx answer.
fn failure(status: StatusCode, retry_after: Option<Duration>, body: &str) -> Error {
    let message = service_message(body);
    let reason =
        if message.is_empty() { format!("http status {status}") } else { format!("http status {status}: {message}") };
    match (status.as_u16(), retry_after) {
        (429, retry_after) => Error::Throttled { retry_after: retry_after.unwrap_or_default(), reason },
        (503, Some(retry_after)) => Error::Throttled { retry_after, reason },
        (408, _) => Error::transient(reason),
        _ if status.is_server_error() => Error::transient(reason),
        _ => Error::permanent(reason),
    }
}

/// The service's own words, on one line and cut short: what a person
/// reading the delivery record needs ("Invalid routing key", "Field
/// 'priority' is invalid").
fn service_message(body: &str) -> String {
    truncate(&body.split_whitespace().collect::<Vec<_>>().join(" "), BODY_IN_ERROR)
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110), capped.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
            let wait = at - time::OffsetDateTime::now_utc();
            wait.try_into().unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_is_throttled_for_its_retry_after_and_a_400_is_permanent_with_the_services_message() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "2".parse().unwrap());
        let throttled = failure(StatusCode::TOO_MANY_REQUESTS, retry_after(&headers), "");
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(2)));
        assert!(throttled.is_transient());
        let bad = failure(StatusCode::BAD_REQUEST, None, "{\"status\":\"invalid event\",\n \"errors\":[\"x\"]}");
        assert!(!bad.is_transient());
        assert!(
            bad.to_string().contains("400 Bad Request: {\"status\":\"invalid event\", \"errors\":[\"x\"]}"),
            "{bad}"
        );
        assert!(failure(StatusCode::BAD_GATEWAY, None, "").is_transient());
        assert_eq!(failure(StatusCode::SERVICE_UNAVAILABLE, None, "").retry_after(), None);
    }

    #[test]
    fn a_long_error_body_is_cut_and_a_retry_after_date_becomes_a_wait() {
        assert_eq!(service_message(&"x".repeat(1000)).chars().count(), BODY_IN_ERROR);
        let mut headers = HeaderMap::new();
        let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
        let date = soon.format(&time::format_description::well_known::Rfc2822).unwrap();
        headers.insert(RETRY_AFTER, date.parse().unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
        headers.insert(RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
    }
}
