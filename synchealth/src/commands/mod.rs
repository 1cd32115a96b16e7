//! Admin commands of the binary that run once and exit (as opposed to the
//! roles, which serve until stopped).

pub mod alerts;
pub mod keys;
pub mod projects;
pub mod users;

/// A fresh, migrated embedded store in a temporary directory, for the
/// commands' unit tests (the directory goes when the guard drops).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
async fn test_store() -> (tempfile::TempDir, synchealth_store::SharedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store: synchealth_store::SharedStore =
        std::sync::Arc::new(synchealth_store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
    store.migrate().await.unwrap();
    (dir, store)
}
