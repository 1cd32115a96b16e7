//! Reading an ingest request's body: after the key is checked, within the
//! per-request limit, within a budget of bytes in flight across all requests,
//! and decompressed with the same rules on every ingest path.
//!
//! Why by hand rather than axum's `Bytes` extractor: an extractor reads the
//! body before the handler runs, so a sender with a wrong key could make the
//! collector buffer megabytes per request (300 concurrent 5 MB bodies pushed
//! RSS to 895 MiB); here the handler authenticates first and reads second.

use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use flate2::bufread::GzDecoder;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ingest::header_str;
use crate::AppError;

/// Bytes of request bodies held at once across all ingest requests: a
/// semaphore of bytes, taken as frames arrive and given back when the
/// request is answered.
#[derive(Debug, Clone)]
pub struct InFlightBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl InFlightBudget {
    /// A budget of `total` bytes (at least one byte).
    pub fn new(total: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        InFlightBudget { bytes: Arc::new(Semaphore::new(total)), total }
    }

    /// Bytes currently held by requests being read or handled.
    pub fn in_use(&self) -> usize {
        self.total - self.bytes.available_permits()
    }

    fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(bytes).ok()?;
        self.bytes.clone().try_acquire_many_owned(n).ok()
    }
}

/// A body read within its limits; holds its share of the in-flight budget
/// until dropped (when the request has been answered).
#[derive(Debug)]
pub(crate) struct ReadBody {
    pub(crate) bytes: Bytes,
    _held: Vec<OwnedSemaphorePermit>,
}

/// How long a request waits before a full budget is answered 503.
const RETRY_AFTER_SECONDS: u64 = 1;

/// Reads `body` (the caller has authenticated the request already): a
/// declared `Content-Length` over `limit` is refused before a byte is read,
/// every frame takes its bytes from `budget` or the request gets 503, and
/// the result is decompressed (gzip or identity) within `limit` as well.
pub(crate) async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    budget: &InFlightBudget,
) -> Result<ReadBody, AppError> {
    let declared = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(AppError::PayloadTooLarge { limit });
    }
    let busy = || AppError::BodiesInFlight { retry_after_seconds: RETRY_AFTER_SECONDS, budget_bytes: budget.total };
    let mut held = Vec::new();
    let mut raw = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| AppError::BadRequest(format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if raw.len() + data.len() > limit {
            return Err(AppError::PayloadTooLarge { limit });
        }
        held.push(budget.take(data.len()).ok_or_else(busy)?);
        raw.extend_from_slice(&data);
    }
    let bytes = decode(headers, Bytes::from(raw), limit)?;
    Ok(ReadBody { bytes, _held: held })
}

/// The body, decompressed, within `limit` both before and after: a small
/// gzip bomb is stopped once its output passes the limit, not after. Bytes
/// after the gzip member are an error, not silently dropped.
pub(crate) fn decode(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, AppError> {
    if body.len() > limit {
        return Err(AppError::PayloadTooLarge { limit });
    }
    match header_str(headers, header::CONTENT_ENCODING).map(|e| e.trim().to_ascii_lowercase()) {
        // Uncompressed bodies are parsed where they are: no copy of up to
        // `limit` bytes per request.
        None => Ok(body),
        Some(e) if e == "identity" => Ok(body),
        Some(e) if e == "gzip" => {
            let mut out = Vec::with_capacity(body.len() * 4);
            // The buffered decoder over the slice reads no further than the
            // member's end, so what is left of the slice afterwards is
            // exactly what followed the member.
            let mut decoder = GzDecoder::new(&body[..]);
            decoder
                .by_ref()
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| AppError::BadRequest(format!("body is not valid gzip: {e}")))?;
            if out.len() > limit {
                return Err(AppError::PayloadTooLarge { limit });
            }
            let trailing = decoder.into_inner().len();
            if trailing > 0 {
                return Err(AppError::BadRequest(format!(
                    "{trailing} bytes follow the gzip member; send one gzip member and nothing after it"
                )));
            }
            Ok(Bytes::from(out))
        }
        Some(other) => {
            Err(AppError::UnsupportedMediaType(format!("content-encoding {other:?}; send gzip or identity")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use axum::http::HeaderValue;
    use flate2::write::GzEncoder;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn gzip_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h
    }

    #[test]
    fn a_gzip_member_decodes_and_bytes_after_it_are_a_bad_request() {
        let member = gzip(b"{\"events\":[]}");
        assert_eq!(&decode(&gzip_headers(), Bytes::from(member.clone()), 1000).unwrap()[..], b"{\"events\":[]}");
        let mut trailing = member.clone();
        trailing.extend_from_slice(b"junk");
        match decode(&gzip_headers(), Bytes::from(trailing), 1000) {
            Err(AppError::BadRequest(detail)) => assert!(detail.contains("4 bytes follow the gzip member"), "{detail}"),
            other => panic!("expected a 400, got {other:?}"),
        }
        let mut two = member.clone();
        two.extend_from_slice(&member);
        assert!(matches!(decode(&gzip_headers(), Bytes::from(two), 1000), Err(AppError::BadRequest(_))));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 100_000]);
        assert!(matches!(
            decode(&gzip_headers(), Bytes::from(bomb), 10_000),
            Err(AppError::PayloadTooLarge { limit: 10_000 })
        ));
    }

    #[tokio::test]
    async fn a_body_over_the_budget_in_flight_is_a_503_and_the_budget_comes_back_after_the_answer() {
        let budget = InFlightBudget::new(100);
        let first = read(&HeaderMap::new(), Body::from(vec![b'x'; 80]), 1000, &budget).await.unwrap();
        assert_eq!(budget.in_use(), 80);
        match read(&HeaderMap::new(), Body::from(vec![b'x'; 30]), 1000, &budget).await {
            Err(AppError::BodiesInFlight { retry_after_seconds: 1, budget_bytes: 100 }) => {}
            other => panic!("expected a 503, got {other:?}"),
        }
        assert_eq!(budget.in_use(), 80, "a refused body gives its bytes back at once");
        drop(first);
        assert_eq!(budget.in_use(), 0);
        assert!(read(&HeaderMap::new(), Body::from(vec![b'x'; 30]), 1000, &budget).await.is_ok());
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5000"));
        let budget = InFlightBudget::new(10);
        // A body that would fail the budget: the length check comes first.
        let outcome = read(&headers, Body::from(vec![b'x'; 5000]), 1000, &budget).await;
        assert!(matches!(outcome, Err(AppError::PayloadTooLarge { limit: 1000 })), "{outcome:?}");
    }
}
