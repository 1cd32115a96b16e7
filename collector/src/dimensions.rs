//! Declared dimensions (issue 19): an event may carry up to 8 custom
//! `dimensions`, but a project keeps only the keys it declared
//! (`synchealth projects dimensions NAME engine,plan`); the others are
//! removed before the event is stored and counted in the answer, so a client
//! learns that a key it sends is not kept and nothing bounds a project's
//! stored keys but its own declaration.
//!
//! **Where.** Events are filtered in the request, before the pipeline
//! acknowledges them (stored, or fsync'd in the spool): what an answer
//! acknowledges is exactly what is stored, and a spooled event is replayed
//! as it was acknowledged, never filtered again by a declaration made
//! later. Filtering at store time instead would change acknowledged data
//! after the answer (a key declared then undeclared while the store was down
//! would vanish from events already acknowledged with it), and the answer
//! could not say what was ignored. Events spooled by an older collector,
//! which kept every dimension, are replayed with them for the same reason.
//!
//! **How fresh.** The declared keys are read through [`DimensionCache`], a
//! per-project cache trusted for [`DIMENSIONS_CACHE_TTL`] (5 s): a change
//! made with the command line (another process, so the cache cannot be
//! told) applies to every running collector within 5 s; until then events
//! are kept by the previous list. Ingest reads the store at most once per
//! project per TTL, and not at all for a batch without dimensions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use synchealth_schema::{ProjectName, StoredEvent};
use synchealth_store::SharedStore;

use crate::AppError;

/// How long a project's declared keys are trusted: the longest a change
/// takes to apply to a running collector.
pub const DIMENSIONS_CACHE_TTL: Duration = Duration::from_secs(5);
/// How long a look-up may take before the last known list is used.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// A project's declared keys.
type Declared = Arc<BTreeSet<String>>;

/// Undeclared keys of one request: events per key.
pub type IgnoredDimensions = BTreeMap<String, u64>;

/// Caches `project → declared dimension keys`.
#[derive(Debug)]
pub struct DimensionCache {
    store: SharedStore,
    ttl: Duration,
    entries: Mutex<HashMap<ProjectName, (Instant, Declared)>>,
}

impl DimensionCache {
    /// An empty cache over a store, trusting look-ups for [`DIMENSIONS_CACHE_TTL`].
    pub fn new(store: SharedStore) -> Self {
        Self::with_ttl(store, DIMENSIONS_CACHE_TTL)
    }

    /// An empty cache trusting look-ups for `ttl` (zero: no caching).
    pub fn with_ttl(store: SharedStore, ttl: Duration) -> Self {
        DimensionCache { store, ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// Removes from each event the dimensions `project` did not declare, and
    /// counts, per removed key, the events that carried it. Reads nothing
    /// when no event has dimensions.
    pub async fn keep_declared(
        &self,
        project: &ProjectName,
        events: &mut [StoredEvent],
    ) -> Result<IgnoredDimensions, AppError> {
        if events.iter().all(|e| e.event.dimensions.is_empty()) {
            return Ok(IgnoredDimensions::new());
        }
        let declared = self.declared(project).await?;
        let mut ignored = IgnoredDimensions::new();
        for event in events {
            event.event.dimensions.retain(|key, _| {
                let keep = declared.contains(key);
                if !keep {
                    *ignored.entry(key.clone()).or_default() += 1;
                }
                keep
            });
        }
        Ok(ignored)
    }

    /// The keys `project` declared, from the cache while fresh.
    async fn declared(&self, project: &ProjectName) -> Result<Declared, AppError> {
        if let Some(declared) = self.cached(project, true) {
            return Ok(declared);
        }
        let declared = match tokio::time::timeout(LOOKUP_TIMEOUT, self.store.project_dimensions(project)).await {
            Ok(Ok(keys)) => Arc::new(keys.into_iter().collect::<BTreeSet<_>>()),
            // The store is down or hung: the last list it gave keeps
            // applying, so the events reach the spool rather than a 503
            // (as the key cache does, `auth.rs`). Without one, the batch is
            // refused and retried: keeping every dimension would store keys
            // the project never declared, dropping them all would lose
            // declared ones from acknowledged events.
            failed => match self.cached(project, false) {
                Some(declared) => {
                    let outcome = failed.map(|r| r.map(|_| ()));
                    tracing::warn!(%project, ?outcome, "Declared dimensions look-up failed; using the last list.");
                    return Ok(declared);
                }
                None => {
                    let reason = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("declared dimensions look-up took longer than {LOOKUP_TIMEOUT:?}"),
                    };
                    return Err(AppError::Unavailable(reason));
                }
            },
        };
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() > 10_000 {
                entries.clear();
            }
            entries.insert(project.clone(), (Instant::now(), declared.clone()));
        }
        Ok(declared)
    }

    /// The cached list of `project`: only a fresh one when `fresh`, else the
    /// last known however old.
    fn cached(&self, project: &ProjectName, fresh: bool) -> Option<Declared> {
        let entries = self.entries.lock().ok()?;
        let (at, declared) = entries.get(project)?;
        (!fresh || at.elapsed() < self.ttl).then(|| declared.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use synchealth_store::SqliteStore;

    fn event(dimensions: &[(&str, &str)]) -> StoredEvent {
        let json = serde_json::json!({
            "event_id": uuid::Uuid::new_v4().to_string(), "device_id": "d1",
            "occurred_at": "2024-05-01T10:00:00Z", "success": true, "duration_ms": 10,
            "app_version": "1.0.0", "os": "ios",
            "dimensions": dimensions.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                .collect::<serde_json::Map<_, _>>(),
        });
        let event = synchealth_schema::SyncEvent::from_json(json).unwrap();
        let at = time::macros::datetime!(2024-05-01 10:00 UTC);
        StoredEvent::new(ProjectName::parse("default").unwrap(), event, at, at)
    }

    async fn store() -> (tempfile::TempDir, SharedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        store.migrate().await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn undeclared_keys_are_removed_and_counted_per_event() {
        let (_dir, store) = store().await;
        let project = ProjectName::parse("default").unwrap();
        store.set_project_dimensions(&project, &["engine".into(), "plan".into()]).await.unwrap();
        let cache = DimensionCache::new(store);
        let mut events = vec![
            event(&[("engine", "powersync"), ("plan", "pro"), ("region", "eu")]),
            event(&[("region", "us"), ("tier", "gold")]),
            event(&[]),
        ];
        let ignored = cache.keep_declared(&project, &mut events).await.unwrap();
        assert_eq!(ignored, [("region".to_string(), 2), ("tier".to_string(), 1)].into());
        let kept: Vec<Vec<&str>> =
            events.iter().map(|e| e.event.dimensions.keys().map(String::as_str).collect()).collect();
        assert_eq!(kept, [vec!["engine", "plan"], vec![], vec![]]);
    }

    #[tokio::test]
    async fn a_project_that_declared_nothing_keeps_no_dimension() {
        let (_dir, store) = store().await;
        let project = ProjectName::parse("default").unwrap();
        let mut events = vec![event(&[("engine", "powersync")])];
        let ignored = DimensionCache::new(store).keep_declared(&project, &mut events).await.unwrap();
        assert_eq!(ignored, [("engine".to_string(), 1)].into());
        assert!(events[0].event.dimensions.is_empty());
    }

    #[tokio::test]
    async fn a_change_applies_once_the_cached_list_expires() {
        let (_dir, store) = store().await;
        let project = ProjectName::parse("default").unwrap();
        store.set_project_dimensions(&project, &["engine".into()]).await.unwrap();
        let cache = DimensionCache::with_ttl(store.clone(), Duration::from_millis(200));
        let ignored = cache.keep_declared(&project, &mut [event(&[("plan", "pro")])]).await.unwrap();
        assert_eq!(ignored.len(), 1);
        store.set_project_dimensions(&project, &["engine".into(), "plan".into()]).await.unwrap();
        let ignored = cache.keep_declared(&project, &mut [event(&[("plan", "pro")])]).await.unwrap();
        assert_eq!(ignored.len(), 1, "within the TTL the cached list applies");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let ignored = cache.keep_declared(&project, &mut [event(&[("plan", "pro")])]).await.unwrap();
        assert!(ignored.is_empty(), "{ignored:?}");
    }
}
