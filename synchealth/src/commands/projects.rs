//! `synchealth projects dimensions NAME [KEYS]`: the custom dimensions a
//! project keeps (issue 19), on the configured store. Events may carry up to
//! 8 `dimensions`; collectors store only the declared keys and count the
//! others in their answer, so declaring is what makes a dimension kept.
//! Running collectors read the list through a cache and apply a change
//! within [`synchealth_collector::DIMENSIONS_CACHE_TTL`].

use anyhow::{bail, Context};
use synchealth_schema::ProjectName;
use synchealth_store::SharedStore;

use crate::cli::ProjectsCommand;
use crate::{open_store, Settings};

/// Runs one `projects` subcommand and prints its answer.
pub async fn run(settings: &Settings, command: ProjectsCommand) -> anyhow::Result<()> {
    match command {
        ProjectsCommand::Dimensions { name, keys } => {
            let project = ProjectName::parse(&name).context("the project name")?;
            // Checked before the store is opened: a typo fails fast, by name.
            let keys = keys.as_deref().map(parse_keys).transpose()?;
            let store = open_store(settings).await?;
            let declared = match keys {
                Some(keys) => {
                    let declared = set_dimensions(&store, &project, &keys).await?;
                    eprintln!(
                        "synchealth: project \"{project}\" keeps {}; running collectors apply it within {} s",
                        describe(&declared),
                        synchealth_collector::DIMENSIONS_CACHE_TTL.as_secs()
                    );
                    declared
                }
                None => {
                    let declared = dimensions(&store, &project).await?;
                    if declared.is_empty() {
                        eprintln!(
                            "synchealth: project \"{project}\" keeps no dimensions: events' dimensions are not stored"
                        );
                    }
                    declared
                }
            };
            // Alone on stdout, in the form the command takes.
            if !declared.is_empty() {
                println!("{}", declared.join(","));
            }
        }
    }
    Ok(())
}

/// The keys of a comma-separated list as an operator typed them (spaces
/// around a key ignored, empty entries dropped, so `""` is no keys), checked
/// against the contract's rule; the error names the first bad key.
pub fn parse_keys(list: &str) -> anyhow::Result<Vec<String>> {
    let keys: Vec<String> = list.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_string).collect();
    synchealth_store::dimensions::declared_keys(&keys)?;
    Ok(keys)
}

/// Declares `keys` as the dimensions an existing project keeps, replacing
/// its list; returns the list as stored (sorted, each once).
pub async fn set_dimensions(
    store: &SharedStore,
    project: &ProjectName,
    keys: &[String],
) -> anyhow::Result<Vec<String>> {
    ensure_exists(store, project).await?;
    store
        .set_project_dimensions(project, keys)
        .await
        .with_context(|| format!("declaring the dimensions of project \"{project}\""))?;
    dimensions(store, project).await
}

/// The dimensions an existing project keeps, sorted.
pub async fn dimensions(store: &SharedStore, project: &ProjectName) -> anyhow::Result<Vec<String>> {
    ensure_exists(store, project).await?;
    store.project_dimensions(project).await.with_context(|| format!("reading the dimensions of project \"{project}\""))
}

async fn ensure_exists(store: &SharedStore, project: &ProjectName) -> anyhow::Result<()> {
    let projects = store.projects().await.context("listing projects")?;
    if !projects.contains(project) {
        bail!("no project named \"{project}\" (`synchealth keys create --project {project}` creates it)");
    }
    Ok(())
}

fn describe(declared: &[String]) -> String {
    if declared.is_empty() {
        "no dimensions (events' dimensions are not stored)".to_string()
    } else {
        format!("the dimensions {}", declared.join(", "))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::commands::test_store as store;

    #[tokio::test]
    async fn declared_dimensions_are_stored_sorted_and_replaced_by_the_next_list() {
        let (_dir, store) = store().await;
        let project = ProjectName::parse("mobile").unwrap();
        store.ensure_project(&project).await.unwrap();
        assert!(dimensions(&store, &project).await.unwrap().is_empty());
        let keys = parse_keys(" region, engine,plan,,").unwrap();
        assert_eq!(set_dimensions(&store, &project, &keys).await.unwrap(), ["engine", "plan", "region"]);
        assert_eq!(set_dimensions(&store, &project, &parse_keys("tier").unwrap()).await.unwrap(), ["tier"]);
        assert!(set_dimensions(&store, &project, &parse_keys("").unwrap()).await.unwrap().is_empty());
    }

    #[test]
    fn a_bad_key_or_a_ninth_one_is_an_error_naming_it() {
        let err = parse_keys("engine,Plan").unwrap_err();
        assert!(err.to_string().contains("dimension key \"Plan\" is not a lowercase identifier"), "{err}");
        let err = parse_keys("engine,plan-tier").unwrap_err();
        assert!(err.to_string().contains("\"plan-tier\""), "{err}");
        let err = parse_keys("a,b,c,d,e,f,g,h,i").unwrap_err();
        assert!(err.to_string().contains("at most 8 dimensions, got 9"), "{err}");
    }

    #[tokio::test]
    async fn an_unknown_project_is_an_error_naming_it() {
        let (_dir, store) = store().await;
        let project = ProjectName::parse("nope").unwrap();
        let err = dimensions(&store, &project).await.unwrap_err();
        assert!(err.to_string().contains("no project named \"nope\""), "{err}");
        assert!(set_dimensions(&store, &project, &[]).await.is_err());
    }
}
