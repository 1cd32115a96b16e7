//! The real `synchealth` binary as a newcomer runs it: first start prints the
//! generated secrets once; events survive kill -9 and a restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{batch, clickhouse_url, event};

struct Running {
    child: Child,
    base: String,
    stdout_lines: Vec<String>,
}

/// Starts `synchealth up` and reads its stdout until it says where it listens.
fn start(data_dir: &std::path::Path, extra: &[&str]) -> Running {
    #[allow(clippy::zombie_processes)] // callers kill and wait
    let mut child = Command::new(env!("CARGO_BIN_EXE_synchealth"))
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("reads stdout");
        assert!(n > 0, "synchealth exited before listening; stdout: {lines:?}");
        let line = line.trim_end().to_string();
        if let Some(url) = line.strip_prefix("synchealth: listening on ") {
            let base = url.to_string();
            lines.push(line);
            return Running { child, base, stdout_lines: lines };
        }
        lines.push(line);
    }
}

/// The secret printed on the line after `marker`.
fn printed_after(lines: &[String], marker: &str) -> Option<String> {
    let at = lines.iter().position(|l| l.contains(marker))?;
    lines.get(at + 1).map(|l| l.trim().to_string())
}

async fn post(base: &str, key: &str, body: &Value) -> Value {
    let response =
        reqwest::Client::new().post(format!("{base}/v1/events")).bearer_auth(key).json(body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The summary of the default window, read as `admin` from a running binary.
pub(crate) async fn summary(base: &str, password: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{base}/api/v1/summary"))
        .basic_auth("admin", Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn first_start_prints_the_secrets_once_and_events_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(dir.path(), &[]);
    let key = printed_after(&first.stdout_lines, "ingest key").expect("ingest key printed at first start");
    let password = printed_after(&first.stdout_lines, "password").expect("admin password printed at first start");
    assert!(key.starts_with("shk_"));

    let body = batch((0..20).map(|i| event(&format!("d{i}"), 2, i % 4 != 0, 1000)).collect());
    assert_eq!(post(&first.base, &key, &body).await["accepted"], 20);
    first.child.kill().unwrap(); // SIGKILL: no graceful shutdown
    first.child.wait().unwrap();

    let mut second = start(dir.path(), &[]);
    assert!(
        !second.stdout_lines.iter().any(|l| l.contains("generated")),
        "secrets are printed only once: {:?}",
        second.stdout_lines
    );
    let after = summary(&second.base, &password).await;
    assert_eq!(after["events"], 20);
    assert_eq!(after["success_rate"], 0.75);
    assert_eq!(post(&second.base, &key, &body).await["duplicates"], 20);
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}

#[tokio::test]
async fn the_binary_runs_against_clickhouse_with_a_configured_key() {
    let Some(url) = clickhouse_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let database = format!("it_binary_{}", std::process::id());
    let args = [
        "--clickhouse-url",
        url.as_str(),
        "--clickhouse-database",
        database.as_str(),
        "--ingest-key",
        "shk_configured",
        "--admin-password",
        "pw-configured",
    ];
    let migrate = Command::new(env!("CARGO_BIN_EXE_synchealth")).arg("migrate").args(args).output().unwrap();
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));

    let mut running = start(dir.path(), &args);
    assert!(!running.stdout_lines.iter().any(|l| l.contains("generated")));
    let body = batch(vec![event("c1", 1, true, 10), event("c2", 1, false, 20)]);
    assert_eq!(post(&running.base, "shk_configured", &body).await["accepted"], 2);
    running.child.kill().unwrap();
    running.child.wait().unwrap();

    let mut again = start(dir.path(), &args);
    // On ClickHouse the answer comes once the events are spooled (the
    // default), so a repeat is only recognised at insert: the answer counts
    // both events, the store keeps one copy of each.
    let answer = post(&again.base, "shk_configured", &body).await;
    assert_eq!(answer["accepted"].as_u64().unwrap() + answer["duplicates"].as_u64().unwrap(), 2, "{answer}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = summary(&again.base, "pw-configured").await;
        if s["events"] == 2 || std::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s["events"], 2);
    assert_eq!(s["success_rate"], 0.5);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(summary(&again.base, "pw-configured").await["events"], 2, "the repeat was not stored twice");
    again.child.kill().unwrap();
    again.child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
}
