//! `spawn_app()` builds the real service on port 0 with a fresh embedded
//! database and its upstream URLs at an in-process fake hub; `TestApp` has
//! one method per endpoint, and `wait_task` polls with a deadline.

use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vectorize::{App, ConfigArgs};

use crate::support::fake_hub::{FakeHub, HubFile, HubRepo, random_commit, safetensors_bytes};
use crate::support::git_server::GitServer;

/// Options of a test service; `Default` is a fresh `mem://` database.
#[derive(Default)]
pub struct Options {
    pub hub: Option<FakeHub>,
    pub hf_token: Option<String>,
    pub api_key: Option<String>,
    /// Keep the database in a `surrealkv://` folder here (restart tests).
    pub data_dir: Option<PathBuf>,
    pub max_concurrent_tasks: Option<usize>,
    /// `VECTORIZE_MAX_UPLOAD_BYTES`; default 50 GiB.
    pub max_upload_bytes: Option<u64>,
    /// Point the service at this hub URL instead of the fake's.
    pub hf_endpoint: Option<String>,
    /// The test GitHub (REST, git and LFS) the service talks to.
    pub github: Option<GitServer>,
    pub github_token: Option<String>,
    /// Point the service at this GitHub API URL instead of the test server's.
    pub github_api_url: Option<String>,
    /// Settings that win over the test defaults (download engine, retries, …).
    pub config: ConfigArgs,
}

pub struct TestApp {
    pub app: Option<App>,
    pub url: String,
    pub client: reqwest::Client,
    pub hub: FakeHub,
    pub data_dir: PathBuf,
    /// The data dir's owner, when the test did not bring its own.
    pub _tmp: Option<tempfile::TempDir>,
}

static LOGGING: Once = Once::new();

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    LOGGING.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .init();
        }
    });
    let hub = match options.hub {
        Some(hub) => hub,
        None => FakeHub::start().await,
    };
    let (tmp, data_dir, db) = match options.data_dir {
        Some(dir) => {
            let db = format!("surrealkv://{}", dir.join("db").display());
            (None, dir, db)
        }
        None => {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_path_buf();
            (Some(tmp), dir, "mem://".to_string())
        }
    };
    let config = options
        .config
        .or(ConfigArgs {
            addr: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(data_dir.clone()),
            db: Some(db),
            retry_base_ms: Some(20),
            max_concurrent_tasks: options.max_concurrent_tasks,
            max_upload_bytes: options.max_upload_bytes,
            api_key: options.api_key.map(Into::into),
            hf_endpoint: Some(options.hf_endpoint.unwrap_or_else(|| hub.url())),
            hf_token: options.hf_token.map(Into::into),
            github_api_url: options
                .github_api_url
                .or(options.github.as_ref().map(GitServer::api_url)),
            github_server_url: options.github.as_ref().map(GitServer::server_url),
            github_token: options.github_token.map(Into::into),
            ..Default::default()
        })
        .resolve()
        .unwrap();
    let app = start_when_unlocked(config).await;
    TestApp {
        url: app.url(),
        app: Some(app),
        client: reqwest::Client::new(),
        hub,
        data_dir,
        _tmp: tmp,
    }
}

/// Starts the service; a restart test may find the embedded database of the
/// previous instance still closing (it closes in the background once its
/// last handle is dropped), so a locked database is retried for a while.
async fn start_when_unlocked(config: vectorize::Config) -> App {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match App::start(config.clone()).await {
            Ok(app) => return app,
            Err(e) if e.to_string().contains("locked") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the service does not start: {e}"),
        }
    }
}

/// A small valid model: config, tokenizer and one safetensors file (LFS).
pub fn small_model(id: &str) -> HubRepo {
    HubRepo {
        id: id.into(),
        commit: random_commit(),
        revisions: vec!["main".into()],
        files: vec![
            HubFile {
                path: "config.json".into(),
                bytes: br#"{"model_type":"bert"}"#.to_vec(),
                lfs: false,
            },
            HubFile {
                path: "tokenizer.json".into(),
                bytes: br#"{"version":"1.0"}"#.to_vec(),
                lfs: false,
            },
            HubFile {
                path: "README.md".into(),
                bytes: b"# a model".to_vec(),
                lfs: false,
            },
            HubFile {
                path: "model.safetensors".into(),
                bytes: safetensors_bytes(&[("embeddings", &[64, 32]), ("bias", &[32])]),
                lfs: true,
            },
        ],
        ..Default::default()
    }
}

impl TestApp {
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn post_github(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.at("/v1/upload/github"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_hf(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.at("/v1/upload/huggingface"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Posts `repo@main` and returns the new task's id, asserting 201.
    pub async fn upload_hf(&self, repo: &str) -> String {
        let response = self.post_hf(json!({"model_tag": repo})).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        let task: Value = response.json().await.unwrap();
        task["id"].as_str().unwrap().to_string()
    }

    pub async fn get_task(&self, id: &str) -> reqwest::Response {
        self.client
            .get(self.at(&format!("/v1/upload/tasks/{id}")))
            .send()
            .await
            .unwrap()
    }

    pub async fn task(&self, id: &str) -> Value {
        self.get_task(id).await.json().await.unwrap()
    }

    pub async fn list_tasks(&self, query: &str) -> reqwest::Response {
        self.client
            .get(self.at(&format!("/v1/upload/tasks{query}")))
            .send()
            .await
            .unwrap()
    }

    pub async fn cancel_task(&self, id: &str) -> reqwest::Response {
        self.client
            .delete(self.at(&format!("/v1/upload/tasks/{id}")))
            .send()
            .await
            .unwrap()
    }

    pub async fn get_model(&self, id: &str) -> reqwest::Response {
        self.client
            .get(self.at(&format!("/v1/models/{id}")))
            .send()
            .await
            .unwrap()
    }

    pub async fn list_models(&self, query: &str) -> Value {
        let response = self
            .client
            .get(self.at(&format!("/v1/models{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn delete_model(&self, id: &str) -> reqwest::Response {
        self.client
            .delete(self.at(&format!("/v1/models/{id}")))
            .send()
            .await
            .unwrap()
    }

    /// `DELETE /v1/upload/tasks{query}`: deletes finished tasks.
    pub async fn delete_tasks(&self, query: &str) -> reqwest::Response {
        self.client
            .delete(self.at(&format!("/v1/upload/tasks{query}")))
            .send()
            .await
            .unwrap()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.at("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Polls the task until `done(task)` holds, failing after `within`.
    pub async fn wait_for(
        &self,
        id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        poll_task(id, within, || self.task(id), done, String::new).await
    }

    /// Polls until the task is DONE, FAILED or CANCELLED.
    pub async fn wait_task(&self, id: &str) -> Value {
        self.wait_for(id, Duration::from_secs(30), is_finished)
            .await
    }

    /// Stops the service as SIGTERM would.
    pub async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }

    /// Files left in the data dir's temporary area.
    pub fn leftover_tmp_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![self.data_dir.join("tmp")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().unwrap().is_dir() {
                    stack.push(entry.path());
                } else {
                    found.push(entry.path());
                }
            }
        }
        found
    }

    /// Sends `GET {target}` as written, with no client library to normalise
    /// the path; answers the status and the body.
    pub async fn raw_get(&self, target: &str, key: Option<&str>) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let auth = key
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {answer}"));
        (status, answer)
    }

    pub fn hf_cache(&self) -> PathBuf {
        self.data_dir.join("models").join("huggingface")
    }
}

/// Whether a task is DONE, FAILED or CANCELLED.
pub fn is_finished(task: &Value) -> bool {
    matches!(
        task["task_status"].as_str(),
        Some("DONE" | "FAILED" | "CANCELLED")
    )
}

/// Polls `fetch` for task `id` until `done` holds, failing after `within`
/// with the last task seen and whatever `context` adds (a process' log).
pub async fn poll_task<Fut: std::future::Future<Output = Value>>(
    id: &str,
    within: Duration,
    mut fetch: impl FnMut() -> Fut,
    done: impl Fn(&Value) -> bool,
    context: impl Fn() -> String,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let task = fetch().await;
        if done(&task) {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} did not get there in {within:?}: {task}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts an error answer: status, JSON content type and code; returns the message.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(
        response.status(),
        status,
        "unexpected status for {}",
        response.url()
    );
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    let message = body["message"].as_str().unwrap().to_string();
    assert!(!message.is_empty());
    message
}
