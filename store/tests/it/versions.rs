//! The version gates on ClickHouse: the suite runs against 18.16 and a
//! current engine (`scripts/test`), and this checks that each run really took
//! the path its server's version calls for, so a gate that never switches on
//! (or a second pass silently against the old server) fails here.

use crate::helpers::{fresh_store, Backend};

#[tokio::test]
async fn clickhouse_label_columns_follow_the_servers_version() {
    let Some(fresh) = fresh_store(Backend::ClickHouse, "versions").await else { return };
    let (url, database) = fresh.clickhouse.clone().expect("a ClickHouse test store");
    let server = clickhouse::Client::default().with_url(&url).with_user("default").with_validation(false);
    let version = server.query("SELECT version()").fetch_one::<String>().await.expect("version");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let types = server
        .query("SELECT name, type FROM system.columns WHERE database = ? AND table = 'events' AND name IN ('app_version', 'os', 'network') ORDER BY name")
        .bind(&database)
        .fetch_all::<(String, String)>()
        .await
        .expect("column types");
    assert_eq!(types.len(), 3, "{types:?}");
    let expected = if (major, minor) >= (20, 1) { "LowCardinality(String)" } else { "String" };
    for (name, kind) in &types {
        assert_eq!(kind, expected, "events.{name} on ClickHouse {version}");
    }
    eprintln!("ClickHouse {version}: label columns are {expected}");
    fresh.cleanup().await;
}
