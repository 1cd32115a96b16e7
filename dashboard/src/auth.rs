//! Dashboard users: HTTP Basic or the pages' session cookie on the API
//! (sessions and the login page: [`crate::session`]).
//!
//! Passwords are argon2 hashes, slow and memory-hungry on purpose (19 MiB
//! each), so their verification is a resource an anonymous client can spend:
//! [`PasswordVerifier`] runs at most as many at once as there are cores
//! (the rest wait briefly, then get 503 + `Retry-After`), and verifies an
//! unknown user against a dummy hash, so that costs what a wrong password
//! does and timing tells no user names. Failures are counted by
//! [`crate::throttle`].
//!
//! A verified `Authorization` header is remembered by its SHA-256, so a
//! dashboard polling the API does not pay argon2 on every request; each
//! use still re-reads the user from the store and must find the same
//! password hash, so a removed user or a changed password ends HTTP Basic
//! access at once, on every replica.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderName};
use base64::Engine;
use sha2::{Digest, Sha256};
use synchealth_schema::ProjectName;
use synchealth_store::{SharedStore, User};
use tokio::sync::Semaphore;

use crate::throttle::{LoginThrottle, ThrottlePolicy};
use crate::{AppError, DashboardState};

/// How long a verified header is trusted without a new argon2 verification
/// (the user is re-read from the store on every use all the same).
const TTL: Duration = Duration::from_secs(60);

/// Verified headers remembered at most.
const CACHE_ENTRIES: usize = 1000;

/// An argon2id PHC string for a password.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        // Hashing only fails on parameters we do not set; an unusable hash
        // locks the account instead of crashing.
        .unwrap_or_default()
}

/// Whether `password` matches a PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A hash verified against when the user does not exist, made like every
/// user's (the default argon2id parameters), so an unknown name costs the
/// same as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&crate::session::random_token()))
}

/// How the dashboard authenticates: throttling, and how many password
/// verifications run at once.
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    /// Failed logins per user and per client address.
    pub throttle: ThrottlePolicy,
    /// Password verifications running at once at most.
    pub max_concurrent_verifications: usize,
    /// How long a login waits for a verification slot before a 503.
    pub verification_wait: Duration,
    /// Header naming the client address, set by a trusted reverse proxy
    /// (e.g. `x-forwarded-for`: its last entry is used); `None`: the peer
    /// address of the connection.
    pub client_address_header: Option<HeaderName>,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        AuthPolicy {
            throttle: ThrottlePolicy::default(),
            max_concurrent_verifications: std::thread::available_parallelism().map_or(1, |n| n.get()),
            verification_wait: Duration::from_secs(1),
            client_address_header: None,
        }
    }
}

/// Runs argon2 verifications, a bounded number at once (see the module
/// documentation), and counts them.
#[derive(Debug)]
pub struct PasswordVerifier {
    slots: Arc<Semaphore>,
    wait: Duration,
    verifications: AtomicU64,
}

impl PasswordVerifier {
    /// At most `max_concurrent` verifications at once (at least 1); a caller
    /// waits up to `wait` for a slot.
    pub fn new(max_concurrent: usize, wait: Duration) -> Self {
        PasswordVerifier {
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            wait,
            verifications: AtomicU64::new(0),
        }
    }

    /// Whether `password` matches `phc`; with no `phc` (no such user), a
    /// verification against the dummy hash that always fails, at the same
    /// cost. [`AppError::Busy`] when no slot freed up within the wait.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, AppError> {
        let slot = tokio::time::timeout(self.wait, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| AppError::Busy)?
            .map_err(|_| AppError::Busy)?;
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| dummy_hash()).to_string();
        let password = password.to_string();
        // The slot moves into the blocking task: a client hanging up drops
        // this future, not the verification, which holds its slot (and its
        // memory) until it is done.
        let matched = tokio::task::spawn_blocking(move || {
            let matched = verify_password(&password, &phc);
            drop(slot);
            matched
        })
        .await
        .unwrap_or(false);
        Ok(known && matched)
    }

    /// Verifications started so far.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }
}

/// The authenticated dashboard user of a request.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

impl CurrentUser {
    /// Whether the user may read a project.
    pub fn may_read(&self, project: &ProjectName) -> bool {
        self.0.admin || self.0.projects.contains(project)
    }
}

/// Basic authentication: verified headers by their SHA-256, the verifier
/// and the failed-login throttle (shared with the login form).
#[derive(Debug)]
pub struct AuthCache {
    store: SharedStore,
    verified: Mutex<HashMap<[u8; 32], (Instant, User)>>,
    /// Password verifications (the login form's too).
    pub verifier: PasswordVerifier,
    /// Failed logins (the login form's too).
    pub throttle: LoginThrottle,
    client_address_header: Option<HeaderName>,
}

impl AuthCache {
    /// An empty cache with the default policy.
    pub fn new(store: SharedStore) -> Self {
        AuthCache::with_policy(store, AuthPolicy::default())
    }

    /// An empty cache with `policy`.
    pub fn with_policy(store: SharedStore, policy: AuthPolicy) -> Self {
        AuthCache {
            store,
            verified: Mutex::new(HashMap::new()),
            verifier: PasswordVerifier::new(policy.max_concurrent_verifications, policy.verification_wait),
            throttle: LoginThrottle::new(policy.throttle),
            client_address_header: policy.client_address_header,
        }
    }

    /// The user behind an `Authorization: Basic` header value, from a
    /// client at `address`.
    pub async fn basic(&self, header_value: &str, address: Option<IpAddr>) -> Result<User, AppError> {
        let digest: [u8; 32] = Sha256::digest(header_value.as_bytes()).into();
        if let Some(cached) = self.cached(&digest) {
            // Proof the client knew the password: no argon2 and no throttle
            // (a locked-out name does not stop a poller that already
            // authenticated), but the user must still exist with the hash
            // that was verified.
            match self.store.find_user(&cached.username).await? {
                Some(user) if crate::session::constant_time_eq(&user.password_hash, &cached.password_hash) => {
                    return Ok(user)
                }
                _ => self.forget(&digest),
            }
        }
        let encoded = header_value.strip_prefix("Basic ").ok_or(AppError::Unauthorized)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or(AppError::Unauthorized)?;
        let (username, password) = decoded.split_once(':').ok_or(AppError::Unauthorized)?;
        self.throttle.check(username, address).map_err(AppError::too_many_attempts)?;
        let user = self.store.find_user(username).await?;
        let verified = self.verifier.verify(password, user.as_ref().map(|u| u.password_hash.as_str())).await?;
        let Some(user) = user.filter(|_| verified) else {
            self.throttle.failed(username, address);
            tracing::warn!(username = ?username, address = ?address, "Failed HTTP Basic authentication.");
            return Err(AppError::Unauthorized);
        };
        self.throttle.succeeded(username, address);
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= CACHE_ENTRIES {
                verified.clear();
            }
            verified.insert(digest, (Instant::now(), user.clone()));
        }
        Ok(user)
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<User> {
        let verified = self.verified.lock().ok()?;
        let (at, user) = verified.get(digest)?;
        (at.elapsed() < TTL).then(|| user.clone())
    }

    fn forget(&self, digest: &[u8; 32]) {
        if let Ok(mut verified) = self.verified.lock() {
            verified.remove(digest);
        }
    }

    /// The client's address: from the configured proxy header (its last
    /// entry, the one the proxy itself saw), else the connection's peer.
    pub(crate) fn client_address(&self, parts: &Parts) -> Option<IpAddr> {
        if let Some(name) = &self.client_address_header {
            let forwarded = parts.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).next_back();
            if let Some(ip) = forwarded.and_then(|v| v.rsplit(',').next()).and_then(|v| v.trim().parse().ok()) {
                return Some(ip);
            }
        }
        parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())
    }
}

/// The client address of a request (see [`AuthCache::client_address`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddress(pub(crate) Option<IpAddr>);

impl FromRequestParts<DashboardState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &DashboardState) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(state.auth.client_address(parts)))
    }
}

impl FromRequestParts<DashboardState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &DashboardState) -> Result<Self, Self::Rejection> {
        if let Some(header_value) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            let address = state.auth.client_address(parts);
            return state.auth.basic(header_value, address).await.map(CurrentUser);
        }
        // A logged-in browser reads the API with its session (the JSON
        // links on the pages); a GET changes nothing, so no CSRF token.
        let token =
            crate::session::cookie(&parts.headers, crate::session::SESSION_COOKIE).ok_or(AppError::Unauthorized)?;
        crate::session::user_of(state, &token).await?.map(CurrentUser).ok_or(AppError::Unauthorized)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use argon2::{Algorithm, Params, Version};
    use synchealth_store::SqliteStore;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let phc = hash_password("correct horse");
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong", &phc));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    async fn store_with_ana(dir: &tempfile::TempDir, phc: String) -> SharedStore {
        let store: SharedStore = Arc::new(SqliteStore::open(&dir.path().join("auth.db")).unwrap());
        store.migrate().await.unwrap();
        let user = User { username: "ana".into(), password_hash: phc, admin: true, projects: Vec::new() };
        store.put_user(&user).await.unwrap();
        store
    }

    fn basic(username: &str, password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")))
    }

    #[tokio::test]
    async fn an_unknown_user_costs_a_verification_like_a_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let auth = AuthCache::new(store_with_ana(&dir, hash_password("ana-password")).await);
        assert!(matches!(auth.basic(&basic("nobody", "whatever"), None).await, Err(AppError::Unauthorized)));
        assert_eq!(auth.verifier.verifications(), 1, "the unknown user was verified against the dummy hash");
        assert!(matches!(auth.basic(&basic("ana", "wrong"), None).await, Err(AppError::Unauthorized)));
        assert_eq!(auth.verifier.verifications(), 2);
        assert_eq!(auth.basic(&basic("ana", "ana-password"), None).await.unwrap().username, "ana");
        assert_eq!(auth.verifier.verifications(), 3);
        auth.basic(&basic("ana", "ana-password"), None).await.unwrap();
        assert_eq!(auth.verifier.verifications(), 3, "a verified header is remembered");
    }

    #[tokio::test]
    async fn a_remembered_header_stops_working_once_the_password_changes_or_the_user_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_ana(&dir, hash_password("ana-password")).await;
        let auth = AuthCache::new(store.clone());
        let header = basic("ana", "ana-password");
        auth.basic(&header, None).await.unwrap();
        let mut ana = store.find_user("ana").await.unwrap().unwrap();
        ana.password_hash = hash_password("a new password");
        store.put_user(&ana).await.unwrap();
        assert!(matches!(auth.basic(&header, None).await, Err(AppError::Unauthorized)));
        auth.basic(&basic("ana", "a new password"), None).await.unwrap();
        assert!(store.remove_user("ana").await.unwrap());
        assert!(matches!(auth.basic(&basic("ana", "a new password"), None).await, Err(AppError::Unauthorized)));
    }

    #[tokio::test]
    async fn verifications_beyond_the_cap_wait_briefly_then_are_refused_as_busy() {
        // A hundred times the default time cost (seconds, even optimized): a
        // verification that surely still runs while the second caller gives
        // up, however loaded the machine (six times failed once in CI).
        let params = Params::new(Params::DEFAULT_M_COST, 200, 1, None).unwrap();
        let salt = SaltString::generate(&mut OsRng);
        let slow = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"ana-password", &salt)
            .unwrap()
            .to_string();
        let dir = tempfile::tempdir().unwrap();
        let policy = AuthPolicy {
            max_concurrent_verifications: 1,
            verification_wait: Duration::from_millis(100),
            ..AuthPolicy::default()
        };
        let auth = Arc::new(AuthCache::with_policy(store_with_ana(&dir, slow).await, policy));
        let first = tokio::spawn({
            let auth = Arc::clone(&auth);
            async move { auth.basic(&basic("ana", "ana-password"), None).await }
        });
        while auth.verifier.verifications() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = Instant::now();
        let second = auth.basic(&basic("ana", "wrong"), None).await;
        assert!(matches!(second, Err(AppError::Busy)), "{second:?}");
        assert!(started.elapsed() >= Duration::from_millis(100), "it waited for a slot first");
        assert_eq!(auth.verifier.verifications(), 1, "the second never ran argon2");
        assert!(!first.is_finished(), "the first verification was still running");
        assert_eq!(first.await.unwrap().unwrap().username, "ana");
    }
}
