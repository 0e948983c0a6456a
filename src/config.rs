//! Service configuration: API.md's environment variables, mirrored by the
//! flags of `vectorize serve` and by an optional TOML file (`--config`).
//! A flag or variable wins over the file; the file wins over the defaults.
//! This module only reads settings; it opens nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use crate::secret::Secret;

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
    pub db: String,
    pub max_upload_bytes: u64,
    pub max_concurrent_tasks: usize,
    pub retry_base_ms: u64,
    pub api_key: Option<Secret>,
    pub hf_endpoint: String,
    pub hf_token: Option<Secret>,
    pub github_api_url: String,
    pub github_server_url: String,
    pub github_token: Option<Secret>,
    pub log_format: LogFormat,
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
            max_upload_bytes: self.max_upload_bytes.or(fallback.max_upload_bytes),
            max_concurrent_tasks: self.max_concurrent_tasks.or(fallback.max_concurrent_tasks),
            retry_base_ms: self.retry_base_ms.or(fallback.retry_base_ms),
            api_key: self.api_key.or(fallback.api_key),
            hf_endpoint: self.hf_endpoint.or(fallback.hf_endpoint),
            hf_token: self.hf_token.or(fallback.hf_token),
            github_api_url: self.github_api_url.or(fallback.github_api_url),
            github_server_url: self.github_server_url.or(fallback.github_server_url),
            github_token: self.github_token.or(fallback.github_token),
            log_format: self.log_format.or(fallback.log_format),
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
        let trim = |s: String| s.trim_end_matches('/').to_string();
        Ok(Config {
            addr: self
                .addr
                .unwrap_or_else(|| "127.0.0.1:8000".parse().expect("valid default")),
            data_dir,
            db,
            max_upload_bytes: self.max_upload_bytes.unwrap_or(50 * 1024 * 1024 * 1024),
            max_concurrent_tasks,
            retry_base_ms: self.retry_base_ms.unwrap_or(1000),
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let config = ConfigArgs::default().resolve().unwrap();
        assert_eq!(config.addr.to_string(), "127.0.0.1:8000");
        assert_eq!(config.db, "surrealkv://./data/db");
        assert_eq!(config.max_upload_bytes, 53_687_091_200);
        assert_eq!(config.max_concurrent_tasks, 4);
        assert_eq!(config.hf_endpoint, "https://huggingface.co");
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
        assert_eq!(config.db, "surrealkv:///srv/v/db");
    }
}
