//! Settings of every role: defaults, then an optional TOML file (`--config`),
//! then `SYNCHEALTH_*` environment variables, then command-line flags. The
//! `///` lines on the fields are the configuration reference.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use synchealth_alerts::Rule;

/// A secret: deserialized like a string, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret text, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Every setting of a synchealth process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server listens on (ingest API, JSON API and pages).
    pub listen: SocketAddr,
    /// Directory of the embedded store (used when no ClickHouse URL is set).
    pub data_dir: PathBuf,
    /// ClickHouse connection; without `url`, the embedded SQLite store is used.
    pub clickhouse: ClickHouseSettings,
    /// The default project's ingest key. If unset and the project has no key
    /// yet, one is generated and printed once at first start.
    pub ingest_key: Option<Secret>,
    /// Password of the dashboard user `admin`. If unset and there is no admin
    /// yet, one is generated and printed once at first start.
    pub admin_password: Option<Secret>,
    /// Days of events kept; older ones are deleted (whole day partitions on ClickHouse).
    pub retention_days: u32,
    /// Largest ingest request body in bytes, compressed and decompressed.
    pub max_body_bytes: usize,
    /// Alert evaluation.
    pub alerts: AlertSettings,
}

/// Alert evaluation settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// How often every rule is evaluated, e.g. `"15s"`.
    pub evaluation_interval: String,
    /// The rules (`[[alerts.rules]]`); giving any replaces the shipped defaults.
    pub rules: Vec<Rule>,
}

impl AlertSettings {
    /// The evaluation interval as a duration.
    pub fn interval(&self) -> anyhow::Result<std::time::Duration> {
        let d = synchealth_alerts::duration::parse(&self.evaluation_interval).context("alerts.evaluation_interval")?;
        anyhow::ensure!(d.is_positive(), "alerts.evaluation_interval must be positive");
        Ok(d.unsigned_abs())
    }
}

/// How to reach ClickHouse.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSettings {
    /// HTTP interface URL, e.g. `http://127.0.0.1:8123`; unset = embedded store.
    pub url: Option<String>,
    /// ClickHouse user.
    pub user: String,
    /// ClickHouse password.
    pub password: Option<Secret>,
    /// Database (created by `migrate` if missing).
    pub database: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            clickhouse: ClickHouseSettings {
                url: None,
                user: "default".into(),
                password: None,
                database: "synchealth".into(),
            },
            ingest_key: None,
            admin_password: None,
            retention_days: 30,
            max_body_bytes: 5 * 1024 * 1024,
            alerts: AlertSettings { evaluation_interval: "15s".into(), rules: Rule::defaults() },
        }
    }
}

/// Flags common to every subcommand; each is also `SYNCHEALTH_<NAME>` in the
/// environment and a key of the `--config` file.
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, env = "SYNCHEALTH_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "SYNCHEALTH_LISTEN", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Embedded store directory [default: ./data].
    #[arg(long, env = "SYNCHEALTH_DATA_DIR", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// ClickHouse HTTP URL; without it the embedded store is used.
    #[arg(long, env = "SYNCHEALTH_CLICKHOUSE_URL", global = true)]
    #[serde(skip)]
    pub clickhouse_url: Option<String>,
    /// ClickHouse user [default: default].
    #[arg(long, env = "SYNCHEALTH_CLICKHOUSE_USER", global = true)]
    #[serde(skip)]
    pub clickhouse_user: Option<String>,
    /// ClickHouse password.
    #[arg(long, env = "SYNCHEALTH_CLICKHOUSE_PASSWORD", global = true, hide_env_values = true)]
    #[serde(skip)]
    pub clickhouse_password: Option<String>,
    /// ClickHouse database [default: synchealth].
    #[arg(long, env = "SYNCHEALTH_CLICKHOUSE_DATABASE", global = true)]
    #[serde(skip)]
    pub clickhouse_database: Option<String>,
    /// The default project's ingest key (generated and printed once if not given).
    #[arg(long, env = "SYNCHEALTH_INGEST_KEY", global = true, hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_key: Option<String>,
    /// Password of dashboard user `admin` (generated and printed once if not given).
    #[arg(long, env = "SYNCHEALTH_ADMIN_PASSWORD", global = true, hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_password: Option<String>,
    /// Days of events kept [default: 30].
    #[arg(long, env = "SYNCHEALTH_RETENTION_DAYS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// Largest ingest body in bytes [default: 5242880].
    #[arg(long, env = "SYNCHEALTH_MAX_BODY_BYTES", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
}

impl Settings {
    /// Defaults, then the config file, then environment and flags (clap has
    /// already put the environment under the flags).
    pub fn load(args: &CommonArgs) -> anyhow::Result<Settings> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = &args.config {
            anyhow::ensure!(Path::new(path).is_file(), "config file {} does not exist", path.display());
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Serialized::defaults(args));
        let clickhouse = [
            ("clickhouse.url", &args.clickhouse_url),
            ("clickhouse.user", &args.clickhouse_user),
            ("clickhouse.password", &args.clickhouse_password),
            ("clickhouse.database", &args.clickhouse_database),
        ];
        for (key, value) in clickhouse {
            if let Some(value) = value {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        let settings: Settings = figment.extract().context("invalid configuration")?;
        synchealth_alerts::validate_all(&settings.alerts.rules).context("invalid alert rule")?;
        settings.alerts.interval()?;
        Ok(settings)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("synchealth.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\nretention_days = 7\n[clickhouse]\nurl = \"http://127.0.0.1:8123\"\n").unwrap();
        let args = CommonArgs { config: Some(file), retention_days: Some(3), ..Default::default() };
        let settings = Settings::load(&args).unwrap();
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(settings.retention_days, 3);
        assert_eq!(settings.clickhouse.url.as_deref(), Some("http://127.0.0.1:8123"));
        assert_eq!(settings.clickhouse.database, "synchealth");
        assert_eq!(settings.alerts.rules.len(), 3, "the shipped default rules stay when the file names none");
    }

    #[test]
    fn rules_in_the_file_replace_the_defaults_and_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("synchealth.toml");
        let rule = "[[alerts.rules]]\nname = \"ios-success\"\nmetric = \"success_rate\"\ncomparison = \"<\"\nthreshold = 0.9\nwindow = \"5m\"\nfor = \"1m\"\nseverity = \"page\"\nchannels = [\"email\"]\nfilters = { os = \"ios\" }\n";
        std::fs::write(&file, format!("[alerts]\nevaluation_interval = \"5s\"\n{rule}")).unwrap();
        let settings = Settings::load(&CommonArgs { config: Some(file.clone()), ..Default::default() }).unwrap();
        assert_eq!(settings.alerts.rules.len(), 1);
        assert_eq!(settings.alerts.rules[0].name, "ios-success");
        assert_eq!(settings.alerts.interval().unwrap(), std::time::Duration::from_secs(5));
        std::fs::write(&file, rule.replace("0.9", "90")).unwrap();
        let err = Settings::load(&CommonArgs { config: Some(file), ..Default::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("ios-success"), "{err:#}");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("synchealth.toml");
        std::fs::write(&file, "retention_dayz = 7\n").unwrap();
        let err = Settings::load(&CommonArgs { config: Some(file), ..Default::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("retention_dayz"), "{err:#}");
    }

    #[test]
    fn secrets_never_print() {
        let settings = Settings { admin_password: Some(Secret("hunter2".into())), ..Default::default() };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
