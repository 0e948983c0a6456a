//! What every benchmark shares: the service under test started as its own
//! process (the release binary, so its peak RSS is its own), a readiness
//! wait, the peak RSS read from /proc, and medians.

#![allow(dead_code)] // each benchmark uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The service in a child process, killed on drop.
pub struct Service {
    pub base: String,
    child: Child,
}

impl Service {
    /// Starts `vectorize serve` on a free port with a data dir and extra environment.
    pub async fn start(data_dir: &std::path::Path, env: &[(&str, String)]) -> Service {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_vectorize"))
            .arg("serve")
            .env("VECTORIZE_ADDR", format!("127.0.0.1:{port}"))
            .env("VECTORIZE_DATA_DIR", data_dir)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .spawn()
            .expect("the service binary starts");
        let service = Service {
            base: format!("http://127.0.0.1:{port}"),
            child,
        };
        service.wait_healthy().await;
        service
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let health = client.get(format!("{}/health", self.base)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the service did not become healthy");
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// CPU time (user and system) the service has used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name, which is in parentheses: utime
        // and stime are the 12th and 13th, in clock ticks (100 a second).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
            .sum();
        ticks / 100.0
    }

    /// Peak resident memory (VmHWM) so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }

    /// Posts a remote upload to `route` (e.g. `/v1/upload/github`), expects
    /// 201 and waits for the task to be DONE; returns the model id.
    pub async fn upload_and_wait(
        &self,
        client: &reqwest::Client,
        route: &str,
        body: serde_json::Value,
    ) -> String {
        let response = client
            .post(format!("{}{route}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let task: serde_json::Value = response.json().await.unwrap();
        self.wait_done(client, task["id"].as_str().unwrap()).await
    }

    /// One timed round: uploads (see `upload_and_wait`), answers the time
    /// from POST to DONE, then deletes the model so that the next round
    /// can upload it again.
    pub async fn timed_upload(
        &self,
        client: &reqwest::Client,
        route: &str,
        body: serde_json::Value,
    ) -> Duration {
        let started = Instant::now();
        let model_id = self.upload_and_wait(client, route, body).await;
        let took = started.elapsed();
        self.delete_model(client, &model_id).await;
        took
    }

    /// Polls a task until DONE and returns its model id; panics on FAILED or CANCELLED.
    async fn wait_done(&self, client: &reqwest::Client, task_id: &str) -> String {
        loop {
            let url = format!("{}/v1/upload/tasks/{task_id}", self.base);
            let task: serde_json::Value =
                client.get(url).send().await.unwrap().json().await.unwrap();
            match task["task_status"].as_str() {
                Some("DONE") => return task["model_id"].as_str().unwrap().to_string(),
                Some("FAILED" | "CANCELLED") => panic!("the upload did not finish: {task}"),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// Deletes a model so that the next round can upload it again.
    pub async fn delete_model(&self, client: &reqwest::Client, model_id: &str) {
        let deleted = client
            .delete(format!("{}/v1/models/{model_id}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 204);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

pub fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// An integer from the environment, for shrinking a benchmark.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The Python of the huggingface_hub venv that `.ci/interop.sh` builds.
pub fn interop_python() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let cache = Path::new(&home).join(".cache");
    std::fs::read_dir(&cache)
        .ok()?
        .flatten()
        .map(|entry| entry.path().join("bin/python"))
        .find(|python| {
            python
                .to_str()
                .is_some_and(|p| p.contains("vectorize-interop-hf"))
                && python.exists()
        })
}
