//! Service configuration: API.md's environment variables, mirrored by the
//! flags of `vectorize serve` and by an optional TOML file (`--config`).
//! A flag or variable wins over the file; the file wins over the defaults.
//! This module only reads settings; it opens nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::secret::Secret;
use crate::sources::download::DownloadSettings;
use crate::store::DbOptions;
use crate::webhooks::WebhookSettings;

/// Settings as given on the command line or in the environment; all optional
/// so that the TOML file and the defaults can fill the gaps.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigArgs {
    /// Listen address.
    #[arg(long, env = "VECTORIZE_ADDR")]
    pub addr: Option<SocketAddr>,
    /// Model store, database and temporary files.
    #[arg(long, env = "VECTORIZE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// SurrealDB endpoint: surrealkv://path, mem:// or ws://host:port.
    #[arg(long, env = "VECTORIZE_DB")]
    pub db: Option<String>,
    /// SurrealDB server user (root or namespace user); never logged.
    #[arg(long, env = "VECTORIZE_DB_USER")]
    pub db_user: Option<String>,
    /// Password of `db_user`.
    #[arg(long, env = "VECTORIZE_DB_PASS", hide_env_values = true)]
    pub db_pass: Option<Secret>,
    /// SurrealDB namespace.
    #[arg(long, env = "VECTORIZE_DB_NS")]
    pub db_ns: Option<String>,
    /// SurrealDB database.
    #[arg(long, env = "VECTORIZE_DB_NAME")]
    pub db_name: Option<String>,
    /// This node's name in task leases, `node` and `/health`; default: a new id per process.
    #[arg(long, env = "VECTORIZE_NODE_ID")]
    pub node_id: Option<String>,
    /// Task lease in milliseconds; renewed about every third of it.
    #[arg(long, env = "VECTORIZE_LEASE_MS")]
    pub lease_ms: Option<u64>,
    /// Largest accepted request body and largest extraction, in bytes.
    #[arg(long, env = "VECTORIZE_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Upload tasks running at once.
    #[arg(long, env = "VECTORIZE_MAX_CONCURRENT_TASKS")]
    pub max_concurrent_tasks: Option<usize>,
    /// First retry delay in milliseconds; it doubles on each retry.
    #[arg(long, env = "VECTORIZE_RETRY_BASE_MS")]
    pub retry_base_ms: Option<u64>,
    /// Bearer key required on /v1 routes; unset means no authentication.
    #[arg(long, env = "VECTORIZE_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,
    /// Connections all downloads of this node use at once.
    #[arg(long, env = "VECTORIZE_DOWNLOAD_CONNECTIONS")]
    pub download_connections: Option<usize>,
    /// Files larger than this are fetched as ranged parts of this size.
    #[arg(long, env = "VECTORIZE_PART_BYTES")]
    pub part_bytes: Option<u64>,
    /// Bandwidth cap for all downloads of this node; unset: none.
    #[arg(long, env = "VECTORIZE_MAX_BYTES_PER_SEC")]
    pub max_bytes_per_sec: Option<u64>,
    /// Free space kept on the store's file system; uploads that would eat into it are refused.
    #[arg(long, env = "VECTORIZE_MIN_FREE_BYTES")]
    pub min_free_bytes: Option<u64>,
    /// Hugging Face Hub endpoint.
    #[arg(long, env = "HF_ENDPOINT")]
    pub hf_endpoint: Option<String>,
    /// Hugging Face token, sent to the hub only.
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    pub hf_token: Option<Secret>,
    /// GitHub REST API endpoint.
    #[arg(long, env = "GITHUB_API_URL")]
    pub github_api_url: Option<String>,
    /// GitHub git server.
    #[arg(long, env = "GITHUB_SERVER_URL")]
    pub github_server_url: Option<String>,
    /// GitHub token for the API, clones and LFS.
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<Secret>,
    /// Log format: text or json.
    #[arg(long, env = "VECTORIZE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Finished tasks are kept this many days (fractions allowed); 0 keeps them forever.
    #[arg(long, env = "VECTORIZE_TASK_RETENTION_DAYS")]
    pub task_retention_days: Option<f64>,
    /// Where task notifications are posted; unset: none. Never logged.
    #[arg(long, env = "VECTORIZE_WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<Secret>,
    /// Signs each notification with HMAC-SHA256 (`X-Vectorize-Signature`).
    #[arg(long, env = "VECTORIZE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The resolved configuration the service runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub db: DbOptions,
    pub node_id: String,
    pub lease_ms: u64,
    pub max_upload_bytes: u64,
    pub max_concurrent_tasks: usize,
    pub retry_base_ms: u64,
    pub download: DownloadSettings,
    pub api_key: Option<Secret>,
    pub hf_endpoint: String,
    pub hf_token: Option<Secret>,
    pub github_api_url: String,
    pub github_server_url: String,
    pub github_token: Option<Secret>,
    pub log_format: LogFormat,
    /// How long finished tasks are kept; `None` keeps them forever.
    pub task_retention: Option<Duration>,
    /// Task notifications; `None` when no URL is set.
    pub webhook: Option<WebhookSettings>,
}

impl ConfigArgs {
    /// Reads a TOML file whose keys are the flag names with `_` (e.g. `data_dir`).
    pub fn from_toml_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    /// Fills every field this one lacks from `fallback`.
    pub fn or(self, fallback: ConfigArgs) -> ConfigArgs {
        ConfigArgs {
            addr: self.addr.or(fallback.addr),
            data_dir: self.data_dir.or(fallback.data_dir),
            db: self.db.or(fallback.db),
            db_user: self.db_user.or(fallback.db_user),
            db_pass: self.db_pass.or(fallback.db_pass),
            db_ns: self.db_ns.or(fallback.db_ns),
            db_name: self.db_name.or(fallback.db_name),
            node_id: self.node_id.or(fallback.node_id),
            lease_ms: self.lease_ms.or(fallback.lease_ms),
            max_upload_bytes: self.max_upload_bytes.or(fallback.max_upload_bytes),
            max_concurrent_tasks: self.max_concurrent_tasks.or(fallback.max_concurrent_tasks),
            retry_base_ms: self.retry_base_ms.or(fallback.retry_base_ms),
            download_connections: self.download_connections.or(fallback.download_connections),
            part_bytes: self.part_bytes.or(fallback.part_bytes),
            max_bytes_per_sec: self.max_bytes_per_sec.or(fallback.max_bytes_per_sec),
            min_free_bytes: self.min_free_bytes.or(fallback.min_free_bytes),
            api_key: self.api_key.or(fallback.api_key),
            hf_endpoint: self.hf_endpoint.or(fallback.hf_endpoint),
            hf_token: self.hf_token.or(fallback.hf_token),
            github_api_url: self.github_api_url.or(fallback.github_api_url),
            github_server_url: self.github_server_url.or(fallback.github_server_url),
            github_token: self.github_token.or(fallback.github_token),
            log_format: self.log_format.or(fallback.log_format),
            task_retention_days: self.task_retention_days.or(fallback.task_retention_days),
            webhook_url: self.webhook_url.or(fallback.webhook_url),
            webhook_secret: self.webhook_secret.or(fallback.webhook_secret),
        }
    }

    /// Applies the defaults of API.md to whatever is still unset.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
        let db = self
            .db
            .unwrap_or_else(|| format!("surrealkv://{}", data_dir.join("db").display()));
        let max_concurrent_tasks = self.max_concurrent_tasks.unwrap_or(4);
        anyhow::ensure!(
            max_concurrent_tasks > 0,
            "max_concurrent_tasks must be at least 1"
        );
        let non_empty = |v: Option<Secret>| v.and_then(Secret::non_empty);
        let node_id = self
            .node_id
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
            });
        anyhow::ensure!(
            node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "the node id '{node_id}' may only hold letters, digits, '-', '_' and '.' (it names a folder)"
        );
        let lease_ms = self.lease_ms.unwrap_or(15_000);
        anyhow::ensure!(lease_ms >= 300, "lease_ms must be at least 300");
        let defaults = DownloadSettings::default();
        let download = DownloadSettings {
            connections: self.download_connections.unwrap_or(defaults.connections),
            part_bytes: self.part_bytes.unwrap_or(defaults.part_bytes),
            max_bytes_per_sec: self.max_bytes_per_sec.filter(|&rate| rate > 0),
            min_free_bytes: self.min_free_bytes.unwrap_or(defaults.min_free_bytes),
        };
        anyhow::ensure!(
            download.connections > 0,
            "download_connections must be at least 1"
        );
        anyhow::ensure!(
            download.part_bytes >= 64 * 1024,
            "part_bytes must be at least 65536"
        );
        let trim = |s: String| s.trim_end_matches('/').to_string();
        let retry_base_ms = self.retry_base_ms.unwrap_or(1000);
        let webhook = match non_empty(self.webhook_url) {
            Some(url) => Some(WebhookSettings {
                url: checked_webhook_url(url)?,
                secret: non_empty(self.webhook_secret),
                retry_base: Duration::from_millis(retry_base_ms),
            }),
            None => None,
        };
        Ok(Config {
            addr: self
                .addr
                .unwrap_or_else(|| "127.0.0.1:8000".parse().expect("valid default")),
            data_dir,
            db: DbOptions {
                endpoint: db,
                user: self.db_user.filter(|u| !u.is_empty()),
                pass: non_empty(self.db_pass),
                namespace: self.db_ns.unwrap_or_else(|| "vectorize".into()),
                database: self.db_name.unwrap_or_else(|| "vectorize".into()),
            },
            node_id,
            lease_ms,
            max_upload_bytes: self.max_upload_bytes.unwrap_or(50 * 1024 * 1024 * 1024),
            max_concurrent_tasks,
            retry_base_ms,
            download,
            api_key: non_empty(self.api_key),
            hf_endpoint: trim(
                self.hf_endpoint
                    .unwrap_or_else(|| "https://huggingface.co".into()),
            ),
            hf_token: non_empty(self.hf_token),
            github_api_url: trim(
                self.github_api_url
                    .unwrap_or_else(|| "https://api.github.com".into()),
            ),
            github_server_url: trim(
                self.github_server_url
                    .unwrap_or_else(|| "https://github.com".into()),
            ),
            github_token: non_empty(self.github_token),
            log_format: self.log_format.unwrap_or_default(),
            task_retention: retention(self.task_retention_days.unwrap_or(90.0))?,
            webhook,
        })
    }
}

/// The retention of finished tasks: `days` of them, or forever for 0.
fn retention(days: f64) -> anyhow::Result<Option<Duration>> {
    anyhow::ensure!(
        (0.0..=36_500.0).contains(&days),
        "task_retention_days must be 0 (keep forever) or a number of days up to 36500 (100 years)"
    );
    Ok((days > 0.0).then(|| Duration::from_secs_f64(days * 86_400.0)))
}

/// The webhook URL, if it is an absolute http(s) URL. The message never
/// repeats it: such URLs often carry a token.
fn checked_webhook_url(url: Secret) -> anyhow::Result<Secret> {
    let parsed = reqwest::Url::parse(url.expose());
    anyhow::ensure!(
        parsed.is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()),
        "VECTORIZE_WEBHOOK_URL must be an absolute http:// or https:// URL"
    );
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let config = ConfigArgs::default().resolve().unwrap();
        assert_eq!(config.addr.to_string(), "127.0.0.1:8000");
        assert_eq!(config.db.endpoint, "surrealkv://./data/db");
        assert_eq!(config.db.namespace, "vectorize");
        assert_eq!(config.lease_ms, 15_000);
        assert!(config.node_id.starts_with("node-"));
        assert_eq!(config.max_upload_bytes, 53_687_091_200);
        assert_eq!(config.max_concurrent_tasks, 4);
        assert_eq!(config.hf_endpoint, "https://huggingface.co");
        assert_eq!(config.download.connections, 8);
        assert_eq!(config.download.part_bytes, 32 << 20);
        assert_eq!(config.download.max_bytes_per_sec, None);
        assert_eq!(config.download.min_free_bytes, 1 << 30);
        assert_eq!(
            config.task_retention,
            Some(Duration::from_secs(90 * 86_400))
        );
        assert!(config.webhook.is_none());
    }

    #[test]
    fn a_bad_webhook_url_is_refused_without_being_repeated() {
        for url in [
            "ftp://hooks.example/t0ken",
            "/relative/t0ken",
            "not a url t0ken",
        ] {
            let args = ConfigArgs {
                webhook_url: Some(url.into()),
                ..Default::default()
            };
            let refused = args.resolve().unwrap_err().to_string();
            assert!(refused.contains("VECTORIZE_WEBHOOK_URL"), "{refused}");
            assert!(!refused.contains("t0ken"), "{refused}");
        }
        let kept = ConfigArgs {
            task_retention_days: Some(0.0),
            webhook_url: Some("https://hooks.example/t0ken".into()),
            ..Default::default()
        };
        let config = kept.resolve().unwrap();
        assert_eq!(config.task_retention, None);
        for days in [-1.0, f64::NAN, 1e300] {
            let args = ConfigArgs {
                task_retention_days: Some(days),
                ..Default::default()
            };
            assert!(args.resolve().is_err(), "{days} days");
        }
        assert!(!format!("{config:?}").contains("t0ken"));
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: ConfigArgs = toml::from_str("data_dir = \"/srv/v\"\nretry_base_ms = 5").unwrap();
        let flags = ConfigArgs {
            retry_base_ms: Some(7),
            ..Default::default()
        };
        let config = flags.or(file).resolve().unwrap();
        assert_eq!(config.retry_base_ms, 7);
        assert_eq!(config.data_dir, PathBuf::from("/srv/v"));
        assert_eq!(config.db.endpoint, "surrealkv:///srv/v/db");
    }
}
