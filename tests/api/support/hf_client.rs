//! The real Hugging Face client, `huggingface_hub` (pinned, in the same
//! cached venv `.ci/interop.sh` uses), run as a child process against an
//! endpoint: `hf_pull.py` for the Python API, the venv's `hf` for the
//! command line. The venv is built on first use when missing
//! (`support::venv`), once per test process.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use tokio::process::Command;
use tokio::sync::OnceCell;

/// The pins of `.ci/interop.sh`; the venv's folder name carries them.
const PINS: [&str; 3] = [
    "huggingface_hub==2.4.0",
    "safetensors==0.8.0",
    "numpy==2.4.6",
];
const VENV: &str = "vectorize-interop-hf2.4.0-st0.8.0-np2.4.6";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/support/hf_pull.py");

static READY: OnceCell<PathBuf> = OnceCell::const_new();

/// The venv, built if missing.
async fn venv() -> &'static Path {
    READY
        .get_or_init(|| {
            super::venv::pinned(VENV, &PINS, "import huggingface_hub, safetensors, numpy")
        })
        .await
}

/// One client machine: an empty cache of its own, pointed at `endpoint`.
pub struct HfClient {
    endpoint: String,
    token: Option<String>,
    home: tempfile::TempDir,
}

#[allow(dead_code)]
impl HfClient {
    pub fn new(endpoint: &str) -> HfClient {
        HfClient {
            endpoint: endpoint.to_string(),
            token: None,
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// Sends `token` as the Hugging Face token (`HF_TOKEN`).
    pub fn with_token(mut self, token: &str) -> HfClient {
        self.token = Some(token.to_string());
        self
    }

    /// The client's cache (`HF_HUB_CACHE`).
    pub fn cache(&self) -> PathBuf {
        self.home.path().join("hub")
    }

    /// `snapshot_download(repo_id, revision=…)`: the snapshot folder.
    pub async fn snapshot(&self, repo_id: &str, revision: &str) -> PathBuf {
        let answer = self.pull(&["snapshot", repo_id, revision]).await;
        PathBuf::from(answer["folder"].as_str().unwrap())
    }

    /// `hf_hub_download(repo_id, filename, revision=…)`: the file's path.
    pub async fn file(&self, repo_id: &str, revision: &str, filename: &str) -> PathBuf {
        let answer = self.pull(&["file", repo_id, revision, filename]).await;
        PathBuf::from(answer["path"].as_str().unwrap())
    }

    /// The exception `hf_hub_download` raises, if any: its class and the
    /// classes it derives from.
    pub async fn error(&self, repo_id: &str, revision: &str, filename: &str) -> Vec<String> {
        let answer = self.pull(&["error", repo_id, revision, filename]).await;
        serde_json::from_value(answer["raised"].clone()).unwrap()
    }

    /// `hf download --quiet {args}`: the local path it printed.
    pub async fn cli(&self, args: &[&str]) -> PathBuf {
        let venv = venv().await;
        // Run by the venv's python (see `support::venv`).
        let output = self
            .command(venv.join("bin/python"))
            .arg(venv.join("bin/hf"))
            .args(["download", "--quiet"])
            .args(args)
            .output()
            .await
            .unwrap();
        let printed = String::from_utf8(succeeded(output, args)).unwrap();
        PathBuf::from(printed.trim())
    }

    async fn pull(&self, args: &[&str]) -> Value {
        let venv = venv().await;
        let output = self
            .command(venv.join("bin/python"))
            .arg(SCRIPT)
            .args(args)
            .output()
            .await
            .unwrap();
        let stdout = succeeded(output, args);
        serde_json::from_slice(stdout.trim_ascii()).unwrap()
    }

    /// The program with exactly this client's Hugging Face settings.
    fn command(&self, program: PathBuf) -> Command {
        let mut command = Command::new(program);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("HF_") {
                command.env_remove(name);
            }
        }
        command
            .env("HF_ENDPOINT", &self.endpoint)
            .env("HF_HOME", self.home.path())
            .env("HF_HUB_CACHE", self.cache())
            .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            // A loaded CI machine answers slower than the client's 10 s defaults.
            .env("HF_HUB_ETAG_TIMEOUT", "60")
            .env("HF_HUB_DOWNLOAD_TIMEOUT", "60")
            .kill_on_drop(true);
        if let Some(token) = &self.token {
            command.env("HF_TOKEN", token);
        }
        command
    }
}

fn succeeded(output: Output, args: &[&str]) -> Vec<u8> {
    assert!(
        output.status.success(),
        "{args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}
