//! `synchealth keys create|list|revoke`: a project's ingest keys, on the
//! configured store. A new key is printed once; the store keeps only its
//! SHA-256 ([`hash_ingest_key`]), so `list` shows hash prefixes and `revoke`
//! takes either the key or a hash prefix. Running collectors stop accepting a
//! revoked key within [`synchealth_collector::KEY_CACHE_TTL`].

use anyhow::{bail, Context};
use synchealth_collector::hash_ingest_key;
use synchealth_schema::{unix_ms, ProjectName};
use synchealth_store::{IngestKey, SharedStore};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::bootstrap::generate_ingest_key;
use crate::cli::KeysCommand;
use crate::{open_store, Settings};

/// Hex characters of a key hash shown by `keys list`.
pub const HASH_PREFIX_LEN: usize = 12;
/// The shortest hash prefix `keys revoke` accepts.
pub const MIN_REVOKE_PREFIX_LEN: usize = 6;

/// Runs one `keys` subcommand and prints its answer.
pub async fn run(settings: &Settings, command: KeysCommand) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    match command {
        KeysCommand::Create { project, label, allowed_origins } => {
            let project = parse_project(&project)?;
            let origins = parse_origins(&allowed_origins)?;
            let (key, record) = create(&store, &project, &label, &origins).await?;
            eprintln!(
                "synchealth: created ingest key {} of project \"{project}\"; it is shown only now (the store keeps its hash):",
                short(&record.key_hash)
            );
            // Alone on stdout, so `KEY=$(synchealth keys create ...)` works.
            println!("{key}");
        }
        KeysCommand::List { project } => {
            let project = parse_project(&project)?;
            let keys = list(&store, &project).await?;
            if keys.is_empty() {
                eprintln!("synchealth: project \"{project}\" has no ingest keys");
            }
            println!("{:<14} {:<8} {:<21} LABEL", "HASH PREFIX", "STATUS", "CREATED (UTC)");
            for key in &keys {
                let origins = if key.allowed_origins.is_empty() {
                    String::new()
                } else {
                    format!(" (browser origins: {})", key.allowed_origins.join(", "))
                };
                println!("{:<14} {:<8} {:<21} {}{origins}", short(&key.key_hash), status(key), created(key), key.label);
            }
        }
        KeysCommand::Revoke { project, key } => {
            let project = parse_project(&project)?;
            match revoke(&store, &project, &key).await? {
                Revoked::Now(record) => println!(
                    "synchealth: revoked ingest key {} of project \"{project}\" ({}); collectors refuse it within {} s",
                    short(&record.key_hash),
                    if record.label.is_empty() { "no label" } else { &record.label },
                    synchealth_collector::KEY_CACHE_TTL.as_secs()
                ),
                Revoked::Already(record) => {
                    println!(
                        "synchealth: ingest key {} of project \"{project}\" was already revoked",
                        short(&record.key_hash)
                    )
                }
            }
        }
    }
    Ok(())
}

/// Browser origins as an operator typed them, normalized
/// ([`synchealth_collector::parse_allowed_origin`]); one that is not an
/// origin is an error naming it.
pub fn parse_origins(given: &[String]) -> anyhow::Result<Vec<String>> {
    let mut origins = Vec::with_capacity(given.len());
    for origin in given {
        match synchealth_collector::parse_allowed_origin(origin) {
            Some(o) if !origins.contains(&o) => origins.push(o),
            Some(_) => {}
            None => bail!(
                "{origin:?} is not a browser origin: give scheme://host[:port] (https://app.example.com), or * for any"
            ),
        }
    }
    Ok(origins)
}

/// Creates a key for `project` (and the project if it does not exist),
/// usable from the browser `origins` (already parsed); returns the key,
/// which is not stored, and its stored record.
pub async fn create(
    store: &SharedStore,
    project: &ProjectName,
    label: &str,
    origins: &[String],
) -> anyhow::Result<(String, IngestKey)> {
    store.ensure_project(project).await.with_context(|| format!("creating project \"{project}\""))?;
    let key = generate_ingest_key();
    let record = IngestKey {
        key_hash: hash_ingest_key(&key),
        project: project.clone(),
        label: label.to_string(),
        created_at_ms: unix_ms(OffsetDateTime::now_utc()),
        revoked: false,
        allowed_origins: origins.to_vec(),
    };
    store.put_ingest_key(&record).await.context("storing the new ingest key")?;
    Ok((key, record))
}

/// Every key record of an existing project, oldest first.
pub async fn list(store: &SharedStore, project: &ProjectName) -> anyhow::Result<Vec<IngestKey>> {
    ensure_exists(store, project).await?;
    let mut keys =
        store.ingest_keys(project).await.with_context(|| format!("listing the keys of project \"{project}\""))?;
    keys.sort_by(|a, b| (a.created_at_ms, &a.key_hash).cmp(&(b.created_at_ms, &b.key_hash)));
    Ok(keys)
}

/// What `revoke` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// The key was active and is revoked now.
    Now(IngestKey),
    /// The key was revoked before; nothing changed.
    Already(IngestKey),
}

/// Revokes the key of `project` given as the key itself or as a prefix of
/// its hash (at least [`MIN_REVOKE_PREFIX_LEN`] hex characters, matching
/// exactly one key of the project).
pub async fn revoke(store: &SharedStore, project: &ProjectName, key_or_prefix: &str) -> anyhow::Result<Revoked> {
    let keys = list(store, project).await?;
    let given = key_or_prefix.trim();
    let hash = hash_ingest_key(given);
    let record = match keys.iter().find(|k| k.key_hash == hash) {
        Some(record) => record.clone(),
        None => find_by_prefix(&keys, project, given)?,
    };
    if record.revoked {
        return Ok(Revoked::Already(record));
    }
    let revoked = IngestKey { revoked: true, ..record };
    store.put_ingest_key(&revoked).await.context("storing the revocation")?;
    Ok(Revoked::Now(revoked))
}

fn find_by_prefix(keys: &[IngestKey], project: &ProjectName, given: &str) -> anyhow::Result<IngestKey> {
    let prefix = given.to_ascii_lowercase();
    let is_hex = !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_hex || prefix.len() < MIN_REVOKE_PREFIX_LEN {
        bail!(
            "no key of project \"{project}\" is {given:?}; give the key itself or at least {MIN_REVOKE_PREFIX_LEN} characters of its hash prefix (see `synchealth keys list --project {project}`)"
        );
    }
    let matching: Vec<&IngestKey> = keys.iter().filter(|k| k.key_hash.starts_with(&prefix)).collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no key of project \"{project}\" has a hash starting with {prefix:?} (see `synchealth keys list --project {project}`)"),
        many => bail!("{} keys of project \"{project}\" have a hash starting with {prefix:?}; give more characters", many.len()),
    }
}

fn parse_project(name: &str) -> anyhow::Result<ProjectName> {
    ProjectName::parse(name).context("--project")
}

async fn ensure_exists(store: &SharedStore, project: &ProjectName) -> anyhow::Result<()> {
    let projects = store.projects().await.context("listing projects")?;
    if !projects.contains(project) {
        bail!("no project named \"{project}\" (`synchealth keys create --project {project}` creates it)");
    }
    Ok(())
}

fn short(hash: &str) -> &str {
    hash.get(..HASH_PREFIX_LEN).unwrap_or(hash)
}

fn status(key: &IngestKey) -> &'static str {
    if key.revoked {
        "revoked"
    } else {
        "active"
    }
}

fn created(key: &IngestKey) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(key.created_at_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.replace_millisecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| key.created_at_ms.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::commands::test_store as store;

    #[tokio::test]
    async fn a_created_key_is_stored_only_as_its_hash_and_listed_by_it() {
        let (_dir, store) = store().await;
        let project = ProjectName::parse("ios").unwrap();
        let (key, record) = create(&store, &project, "ios app", &[]).await.unwrap();
        assert!(key.starts_with("shk_"));
        assert_eq!(record.key_hash, hash_ingest_key(&key));
        assert!(store.projects().await.unwrap().contains(&project));
        let keys = list(&store, &project).await.unwrap();
        assert_eq!(keys, vec![record]);
        assert!(created(&keys[0]).ends_with('Z'), "{}", created(&keys[0]));
    }

    #[tokio::test]
    async fn a_key_keeps_its_browser_origins_normalized_and_a_non_origin_is_refused() {
        let (_dir, store) = store().await;
        let project = ProjectName::parse("web").unwrap();
        let given = ["https://App.example.com/".to_string(), "https://app.example.com".into(), "*".into()];
        let origins = parse_origins(&given).unwrap();
        assert_eq!(origins, ["https://app.example.com", "*"]);
        let (key, _) = create(&store, &project, "web app", &origins).await.unwrap();
        let stored = store.find_ingest_key(&hash_ingest_key(&key)).await.unwrap().unwrap();
        assert_eq!(stored.allowed_origins, origins);
        let err = parse_origins(&["app.example.com".to_string()]).unwrap_err();
        assert!(err.to_string().contains("not a browser origin"), "{err}");
    }

    #[tokio::test]
    async fn revoke_takes_the_key_or_a_unique_hash_prefix_and_is_idempotent() {
        let (_dir, store) = store().await;
        let project = ProjectName::parse("web").unwrap();
        let (first, _) = create(&store, &project, "one", &[]).await.unwrap();
        let (_, second) = create(&store, &project, "two", &[]).await.unwrap();
        assert!(matches!(revoke(&store, &project, &first).await.unwrap(), Revoked::Now(k) if k.label == "one"));
        assert!(matches!(revoke(&store, &project, &first).await.unwrap(), Revoked::Already(_)));
        let prefix = &second.key_hash[..8];
        assert!(matches!(revoke(&store, &project, prefix).await.unwrap(), Revoked::Now(k) if k.label == "two"));
        assert!(list(&store, &project).await.unwrap().iter().all(|k| k.revoked));

        let err = revoke(&store, &project, "abc").await.unwrap_err();
        assert!(err.to_string().contains("at least 6"), "{err}");
        let err = revoke(&store, &project, "shk_not_a_key_of_this_project").await.unwrap_err();
        assert!(err.to_string().contains("no key of project"), "{err}");
    }

    #[tokio::test]
    async fn a_key_of_another_project_cannot_be_revoked_through_this_one() {
        let (_dir, store) = store().await;
        let a = ProjectName::parse("a").unwrap();
        let b = ProjectName::parse("b").unwrap();
        let (key_a, _) = create(&store, &a, "", &[]).await.unwrap();
        create(&store, &b, "", &[]).await.unwrap();
        assert!(revoke(&store, &b, &key_a).await.is_err());
        assert!(!store.find_ingest_key(&hash_ingest_key(&key_a)).await.unwrap().unwrap().revoked);
        let err = list(&store, &ProjectName::parse("nope").unwrap()).await.unwrap_err();
        assert!(err.to_string().contains("no project named"), "{err}");
    }
}
