//! The real `vectorize` binary as a child process, for the crash and
//! restart tests: `ServiceProcess::start` runs `vectorize serve` on a free
//! loopback port with its data dir (so the database is the default
//! `surrealkv://{data dir}/db`) and its hub set by environment variables,
//! waits for `/health`, and can kill it with SIGKILL or stop it with
//! SIGTERM. The child's output (log and stderr) is collected for failure messages, and the
//! child is killed when the value is dropped, so a failing test leaves no
//! process behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{is_finished, poll_task};
use crate::support::fake_hub::FakeHub;

/// How long a debug build gets to open its database and answer `/health`.
const STARTUP: Duration = Duration::from_secs(30);
/// The contract's bound on a graceful stop.
const SIGTERM_BOUND: Duration = Duration::from_secs(10);

/// A running `vectorize serve`.
#[allow(dead_code)]
pub struct ServiceProcess {
    child: Child,
    url: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    /// Its stdout (the log) and stderr, interleaved by line.
    output: Arc<Mutex<String>>,
}

#[allow(dead_code)]
impl ServiceProcess {
    /// Starts the binary on `data_dir` with `HF_ENDPOINT` at `hub`, a 20 ms
    /// retry base and `RUST_LOG=warn`; `extra_env` adds or overrides
    /// variables. Settings inherited from the test's environment
    /// (`VECTORIZE_*`, `HF_*`, `GITHUB_*`) are dropped first, so the child
    /// runs with exactly these. Retries on another port if the chosen one
    /// was taken between picking and binding it.
    pub async fn start(data_dir: &Path, hub: &FakeHub, extra_env: &[(&str, &str)]) -> Self {
        let deadline = Instant::now() + STARTUP;
        loop {
            match Self::try_start(data_dir, hub, extra_env, deadline).await {
                Ok(process) => return process,
                Err(log) if log.contains("in use") && Instant::now() < deadline => continue,
                Err(log) => panic!("vectorize serve did not start:\n{log}"),
            }
        }
    }

    /// Starts the binary expecting it to refuse to start; answers its
    /// stderr once it has exited.
    pub async fn start_refused(
        data_dir: &Path,
        hub: &FakeHub,
        extra_env: &[(&str, &str)],
    ) -> String {
        let deadline = Instant::now() + STARTUP;
        match Self::try_start(data_dir, hub, extra_env, deadline).await {
            Ok(process) => panic!("vectorize serve started:\n{}", process.output()),
            Err(log) => log,
        }
    }

    async fn try_start(
        data_dir: &Path,
        hub: &FakeHub,
        extra_env: &[(&str, &str)],
        deadline: Instant,
    ) -> Result<Self, String> {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_vectorize"));
        command.arg("serve");
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if ["VECTORIZE_", "HF_", "GITHUB_"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                command.env_remove(name.as_ref());
            }
        }
        command
            .env("VECTORIZE_ADDR", format!("127.0.0.1:{port}"))
            .env("VECTORIZE_DATA_DIR", data_dir)
            .env("HF_ENDPOINT", hub.url())
            .env("VECTORIZE_RETRY_BASE_MS", "20")
            .env("RUST_LOG", "warn")
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the vectorize binary runs");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        collect_lines(stdout, output.clone());
        collect_lines(stderr, output.clone());
        let mut process = ServiceProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            data_dir: data_dir.to_path_buf(),
            output,
        };
        loop {
            if let Some(status) = process.child.try_wait().unwrap() {
                // Let the reader thread collect the last lines.
                let log = process.wait_for_output_end();
                return Err(format!("exited with {status}:\n{log}"));
            }
            let health = process.client.get(process.at("/health")).send().await;
            if health.is_ok_and(|r| r.status() == 200) {
                return Ok(process);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no healthy answer within {STARTUP:?}:\n{}",
                    process.output()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The child's output once its pipes have closed (or after a short wait).
    fn wait_for_output_end(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Arc::strong_count(&self.output) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.output()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the child has written to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps the child.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL is delivered");
        self.child.wait().expect("the killed child is reaped");
    }

    /// Sends `signal` (`STOP`, `CONT`, …) with kill(1).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Sends SIGTERM and waits for the exit, failing the test if the process
    /// is still running after the contract's 10 seconds.
    pub async fn sigterm(&mut self) -> ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + SIGTERM_BOUND;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "vectorize did not exit within {SIGTERM_BOUND:?} of SIGTERM:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn post_hf(&self, repo: &str) -> reqwest::Response {
        self.client
            .post(self.at("/v1/upload/huggingface"))
            .json(&serde_json::json!({ "model_tag": repo }))
            .send()
            .await
            .unwrap()
    }

    /// Posts `repo@main` and returns the new task's id, asserting 201.
    pub async fn upload_hf(&self, repo: &str) -> String {
        let response = self.post_hf(repo).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        let task: Value = response.json().await.unwrap();
        task["id"].as_str().unwrap().to_string()
    }

    pub async fn task(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/upload/tasks/{id}")).await
    }

    /// `DELETE /v1/upload/tasks/{id}`.
    pub async fn cancel_task(&self, id: &str) -> reqwest::Response {
        let url = self.at(&format!("/v1/upload/tasks/{id}"));
        self.client.delete(url).send().await.unwrap()
    }

    /// `GET /v1/models{query}`.
    pub async fn list_models(&self, query: &str) -> Value {
        self.get_json(&format!("/v1/models{query}")).await
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(self.at(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Polls the task until `done(task)` holds, failing after `within`
    /// with the service's log.
    pub async fn wait_for(
        &self,
        id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        poll_task(id, within, || self.task(id), done, || self.output()).await
    }

    /// Polls until the task is DONE, FAILED or CANCELLED.
    pub async fn wait_task(&self, id: &str) -> Value {
        self.wait_for(id, Duration::from_secs(30), is_finished)
            .await
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Appends the lines of `pipe` to `output` on a thread of its own.
fn collect_lines(pipe: impl std::io::Read + Send + 'static, output: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut log = output.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}
