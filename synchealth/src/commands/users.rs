//! `synchealth users add|remove|passwd|list`: dashboard users, on the
//! configured store. Scriptable without a prompt: the password comes from
//! `--password`, `SYNCHEALTH_USER_PASSWORD` or (`--password-stdin`) the first
//! line of standard input. The store keeps only the argon2 hash. Changing a
//! password or removing a user ends their open sessions (a session is tied to
//! the password hash it was opened with).

use std::io::BufRead;

use anyhow::{bail, Context};
use synchealth_dashboard::hash_password;
use synchealth_schema::ProjectName;
use synchealth_store::{SharedStore, User};

use crate::cli::{PasswordArgs, UsersCommand};
use crate::{open_store, Settings};

/// The shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

/// Runs one `users` subcommand and prints its answer.
pub async fn run(settings: &Settings, command: UsersCommand) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    match command {
        UsersCommand::Add { username, admin, projects, password } => {
            let password = read_password(&password)?;
            let user = add(&store, &username, admin, &projects, &password).await?;
            println!("synchealth: added dashboard user \"{}\" ({})", user.username, grants(&user));
        }
        UsersCommand::Passwd { username, password } => {
            let password = read_password(&password)?;
            passwd(&store, &username, &password).await?;
            println!("synchealth: changed the password of \"{username}\"; their open sessions are ended");
        }
        UsersCommand::Remove { username } => {
            if store.remove_user(&username).await.with_context(|| format!("removing user \"{username}\""))? {
                println!("synchealth: removed dashboard user \"{username}\"; their open sessions are ended");
            } else {
                bail!("no dashboard user named \"{username}\"");
            }
        }
        UsersCommand::List => {
            println!("{:<24} ACCESS", "USERNAME");
            for user in store.users().await.context("listing users")? {
                println!("{:<24} {}", user.username, grants(&user));
            }
        }
    }
    Ok(())
}

/// Adds a user; refuses an existing name (use `passwd`) and a user without
/// any access.
pub async fn add(
    store: &SharedStore,
    username: &str,
    admin: bool,
    projects: &[String],
    password: &str,
) -> anyhow::Result<User> {
    let username = check_username(username)?;
    check_password(password)?;
    if !admin && projects.is_empty() {
        bail!("give --admin (every project) or --projects a,b (only those)");
    }
    let projects = projects
        .iter()
        .map(|p| ProjectName::parse(p.trim()).with_context(|| format!("--projects: {p:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if store.find_user(&username).await.context("looking up the user")?.is_some() {
        bail!("dashboard user \"{username}\" exists; change the password with `synchealth users passwd {username}`");
    }
    let hash = tokio::task::spawn_blocking({
        let password = password.to_string();
        move || hash_password(&password)
    })
    .await
    .context("hashing the password")?;
    let user = User { username, password_hash: hash, admin, projects };
    store.put_user(&user).await.context("storing the user")?;
    Ok(user)
}

/// Sets a user's password.
pub async fn passwd(store: &SharedStore, username: &str, password: &str) -> anyhow::Result<()> {
    check_password(password)?;
    let Some(user) = store.find_user(username).await.context("looking up the user")? else {
        bail!("no dashboard user named \"{username}\"");
    };
    let hash = tokio::task::spawn_blocking({
        let password = password.to_string();
        move || hash_password(&password)
    })
    .await
    .context("hashing the password")?;
    store.put_user(&User { password_hash: hash, ..user }).await.context("storing the new password")
}

fn check_username(name: &str) -> anyhow::Result<String> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !ok {
        bail!("a username is 1 to 64 letters, digits, '.', '_', '-' or '@', got {name:?}");
    }
    Ok(name.to_string())
}

fn check_password(password: &str) -> anyhow::Result<()> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        bail!("the password must have at least {MIN_PASSWORD_LEN} characters");
    }
    Ok(())
}

fn read_password(args: &PasswordArgs) -> anyhow::Result<String> {
    if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    match &args.password {
        Some(p) => Ok(p.clone()),
        None => bail!("give the password with --password, SYNCHEALTH_USER_PASSWORD or --password-stdin"),
    }
}

fn grants(user: &User) -> String {
    if user.admin {
        "admin: every project".into()
    } else {
        format!("projects: {}", user.projects.iter().map(ProjectName::as_str).collect::<Vec<_>>().join(", "))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::commands::test_store as store;

    #[tokio::test]
    async fn a_user_is_added_once_with_a_verifiable_hash_and_listed() {
        let (_dir, store) = store().await;
        let user = add(&store, "ana", false, &["ios".into(), "web".into()], "long enough").await.unwrap();
        assert!(synchealth_dashboard::verify_password("long enough", &user.password_hash));
        assert_eq!(user.projects.len(), 2);
        assert!(add(&store, "ana", true, &[], "long enough").await.is_err());
        let names: Vec<String> = store.users().await.unwrap().into_iter().map(|u| u.username).collect();
        assert!(names.contains(&"ana".to_string()));
    }

    #[tokio::test]
    async fn bad_input_is_refused_with_a_reason() {
        let (_dir, store) = store().await;
        let err = add(&store, "bo", false, &[], "long enough").await.unwrap_err();
        assert!(err.to_string().contains("--admin"), "{err}");
        let err = add(&store, "bo", true, &[], "short").await.unwrap_err();
        assert!(err.to_string().contains("at least 8"), "{err}");
        let err = add(&store, "b o", true, &[], "long enough").await.unwrap_err();
        assert!(err.to_string().contains("username"), "{err}");
        assert!(passwd(&store, "nobody", "long enough").await.is_err());
    }

    #[tokio::test]
    async fn passwd_replaces_the_hash() {
        let (_dir, store) = store().await;
        add(&store, "cy", true, &[], "first password").await.unwrap();
        passwd(&store, "cy", "second password").await.unwrap();
        let user = store.find_user("cy").await.unwrap().unwrap();
        assert!(synchealth_dashboard::verify_password("second password", &user.password_hash));
        assert!(!synchealth_dashboard::verify_password("first password", &user.password_hash));
    }
}
