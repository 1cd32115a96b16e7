//! Sending batches to the collector: `POST {endpoint}/v1/events`, gzip,
//! `Authorization: Bearer <ingest key>`, `sent_at` stamped at send, with the
//! probe's cumulative telemetry-loss report attached. A small blocking HTTP
//! client (`ureq`) on the worker thread: no async runtime in the host app.
//!
//! The answer decides what happens to the batch ([`Outcome`]): a 2xx takes
//! it out of the buffer (events the collector rejected as invalid are
//! dropped and counted, never retried); network errors, 5xx, 429 and 503 keep
//! it for a retry after a backoff ([`backoff`]); a 413 halves the batch; a
//! 400 (the body is not a batch: a probe bug) drops it rather than retrying
//! it forever; 401/403 keep it and wait the longest backoff, since a key can
//! be fixed by an app update while the events wait.

pub(crate) mod backoff;

use std::io::Write;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Deserialize;
use synchealth_schema::TelemetryLossReport;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use self::backoff::parse_retry_after;

/// Largest answer body read: the collector's answers are small.
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;

/// One event the collector refused as invalid.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct RejectedEvent {
    /// Position in the batch.
    pub(crate) index: usize,
    /// The field at fault.
    #[serde(default)]
    pub(crate) field: String,
    /// Why.
    #[serde(default)]
    pub(crate) reason: String,
}

/// What one upload came to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// 2xx: the batch is safe (or refused for good, event by event).
    Accepted {
        /// Newly stored.
        accepted: u64,
        /// Stored before (a retry after a lost answer).
        duplicates: u64,
        /// Refused as invalid.
        rejected: Vec<RejectedEvent>,
    },
    /// Try again later, not before `retry_after` when given.
    Retry { retry_after: Option<Duration>, reason: String },
    /// 413: the batch is too large for this collector.
    TooLarge,
    /// 400: the body is not a batch; retrying cannot help.
    NotABatch { reason: String },
    /// 401/403: the key is refused; keep the events and wait long.
    Unauthorized { status: u16 },
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    accepted: u64,
    #[serde(default)]
    duplicates: u64,
    #[serde(default)]
    rejected: Vec<RejectedEvent>,
}

/// The HTTP side of uploading.
#[derive(Debug)]
pub(crate) struct Uploader {
    agent: ureq::Agent,
    url: String,
    authorization: String,
}

impl Uploader {
    pub(crate) fn new(url: String, ingest_key: &str, timeout: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // Statuses are outcomes here, not errors.
            .http_status_as_error(false)
            .user_agent(concat!("synchealth-probe/", env!("CARGO_PKG_VERSION")))
            .max_idle_connections(1)
            .build()
            .into();
        Uploader { agent, url, authorization: format!("Bearer {ingest_key}") }
    }

    /// Posts one gzip'd body and classifies the answer.
    #[tracing::instrument(skip_all, fields(url = %self.url, bytes = body.len()))]
    pub(crate) fn send(&self, body: &[u8]) -> Outcome {
        let post = || {
            self.agent
                .post(&self.url)
                .header("Authorization", &self.authorization)
                .header("Content-Type", "application/json")
                .header("Content-Encoding", "gzip")
                .send(body)
        };
        // A kept-alive connection the server (or a load balancer) closed
        // while idle fails the next request at once; that is no outage, so
        // the request goes again on a new connection before any backoff.
        // Safe: the collector counts a resent event once.
        let response = match post() {
            Err(error) if closed_while_idle(&error) => post(),
            other => other,
        };
        let mut response = match response {
            Ok(response) => response,
            Err(error) => return Outcome::Retry { retry_after: None, reason: error.to_string() },
        };
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let text = response.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_string().unwrap_or_default();
        classify(status, retry_after, &text)
    }
}

/// Whether a request failed because its reused connection had been closed
/// by the other side (reset, broken pipe, end of stream before an answer).
fn closed_while_idle(error: &ureq::Error) -> bool {
    use std::io::ErrorKind;
    match error {
        ureq::Error::Io(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
        ),
        other => other.to_string().contains("disconnected"),
    }
}

fn classify(status: u16, retry_after: Option<Duration>, text: &str) -> Outcome {
    match status {
        200..=299 => match serde_json::from_str::<Answer>(text) {
            Ok(answer) => Outcome::Accepted {
                accepted: answer.accepted,
                duplicates: answer.duplicates,
                rejected: answer.rejected,
            },
            // A 2xx means stored; an answer we cannot read changes nothing.
            Err(_) => Outcome::Accepted { accepted: 0, duplicates: 0, rejected: Vec::new() },
        },
        400 => Outcome::NotABatch { reason: text.chars().take(300).collect() },
        401 | 403 => Outcome::Unauthorized { status },
        413 => Outcome::TooLarge,
        _ => Outcome::Retry {
            retry_after,
            reason: format!("status {status}: {}", text.chars().take(200).collect::<String>()),
        },
    }
}

/// The gzip'd JSON batch: the events' stored JSON spliced in as is.
pub(crate) fn gzip_body(
    sent_at: OffsetDateTime,
    events: &[(u64, Vec<u8>)],
    loss: Option<&TelemetryLossReport>,
) -> std::io::Result<Vec<u8>> {
    let sent_at = sent_at.format(&Rfc3339).map_err(std::io::Error::other)?;
    let json_len: usize = events.iter().map(|(_, j)| j.len() + 1).sum();
    let mut gz = GzEncoder::new(Vec::with_capacity(json_len / 4 + 64), Compression::default());
    write!(gz, "{{\"sent_at\":\"{sent_at}\",\"events\":[")?;
    for (i, (_, json)) in events.iter().enumerate() {
        if i > 0 {
            gz.write_all(b",")?;
        }
        gz.write_all(json)?;
    }
    gz.write_all(b"]")?;
    if let Some(report) = loss {
        gz.write_all(b",\"telemetry_loss\":")?;
        serde_json::to_writer(&mut gz, report).map_err(std::io::Error::other)?;
    }
    gz.write_all(b"}")?;
    gz.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn answers_are_classified_by_status() {
        let ok = classify(
            200,
            None,
            r#"{"accepted":2,"duplicates":1,"rejected":[{"index":3,"field":"os","reason":"missing"}]}"#,
        );
        assert_eq!(
            ok,
            Outcome::Accepted {
                accepted: 2,
                duplicates: 1,
                rejected: vec![RejectedEvent { index: 3, field: "os".into(), reason: "missing".into() }]
            }
        );
        let busy = classify(503, Some(Duration::from_secs(4)), "{}");
        assert!(matches!(busy, Outcome::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(4)));
        assert!(matches!(classify(429, None, ""), Outcome::Retry { .. }));
        assert!(matches!(classify(500, None, ""), Outcome::Retry { .. }));
        assert_eq!(classify(413, None, ""), Outcome::TooLarge);
        assert_eq!(classify(401, None, ""), Outcome::Unauthorized { status: 401 });
        assert!(matches!(classify(400, None, "bad"), Outcome::NotABatch { .. }));
    }

    #[test]
    fn the_body_is_a_batch_the_contract_parses() {
        let events = vec![(1, br#"{"x":1}"#.to_vec()), (2, br#"{"x":2}"#.to_vec())];
        let loss = TelemetryLossReport { device_id: "d".into(), dropped: [("expired".to_string(), 4)].into() };
        let body = gzip_body(OffsetDateTime::UNIX_EPOCH, &events, Some(&loss)).unwrap();
        let mut json = String::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut json).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["sent_at"], "1970-01-01T00:00:00Z");
        assert_eq!(value["events"][1]["x"], 2);
        assert_eq!(value["telemetry_loss"]["dropped"]["expired"], 4);
        let parsed = synchealth_schema::parse_batch(json.as_bytes()).unwrap();
        assert_eq!(parsed.telemetry_loss, Some(loss));
        assert_eq!(parsed.rejected.len(), 2, "the stand-in events are not SyncEvents");
    }

    /// Reads one HTTP request (headers and a Content-Length body) and
    /// answers 200 with a keep-alive batch answer.
    fn answer_one(stream: &mut std::net::TcpStream) {
        use std::io::{BufRead, BufReader, Write};
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let answer = r#"{"accepted":1,"duplicates":0,"rejected":[]}"#;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        )
        .unwrap();
    }

    /// The server closes the kept-alive connection just as the next upload
    /// arrives on it, as one whose idle timeout fires at that moment does:
    /// the upload goes again on a new connection at once instead of
    /// waiting out a backoff.
    #[test]
    fn a_connection_closed_while_idle_is_retried_at_once_on_a_new_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/events", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut first = listener.accept().unwrap().0;
            answer_one(&mut first);
            // The second request's first bytes arrive; the server closes instead of answering.
            let mut some = [0u8; 16];
            first.read_exact(&mut some).unwrap();
            drop(first);
            let mut second = listener.accept().unwrap().0;
            answer_one(&mut second);
            2
        });
        let uploader = Uploader::new(url, "shk_test", Duration::from_secs(5));
        for attempt in 0..2 {
            std::thread::sleep(Duration::from_millis(100));
            match uploader.send(b"{}") {
                Outcome::Accepted { accepted: 1, .. } => {}
                other => panic!("upload {attempt}: {other:?}"),
            }
        }
        assert_eq!(server.join().unwrap(), 2, "the second upload went on a connection of its own");
    }
}
