//! A real SurrealDB server for the multi-node tests: the repo's
//! `examples/surreal_server` (built by `cargo test` with the other
//! examples, from the same `surrealdb-server` crate as the official
//! `surreal` binary), started on a free loopback port with root
//! credentials, in memory or on disk. It can be killed and started again
//! on the same port and storage, to test reconnects. The child is killed
//! when the value is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vectorize::store::{DbOptions, Store};

/// The root user's name and password on the test server.
pub const ROOT: &str = "root";
const ROOT_PASS: &str = "root";

/// A running `surreal_server start`.
pub struct SurrealServer {
    child: Option<Child>,
    port: u16,
    /// `memory`, or `surrealkv:{path}` for a server whose data outlives it.
    storage: String,
    log: tempfile::NamedTempFile,
}

impl SurrealServer {
    /// A server that keeps its data in memory.
    pub async fn start() -> Self {
        Self::start_with("memory".into()).await
    }

    /// A server that keeps its data under `dir`, so a restart finds it.
    pub async fn start_on_disk(dir: &Path) -> Self {
        Self::start_with(format!("surrealkv:{}", dir.join("surreal").display())).await
    }

    async fn start_with(storage: String) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut server = SurrealServer {
            child: None,
            port,
            storage,
            log: tempfile::NamedTempFile::new().unwrap(),
        };
        server.run().await;
        server
    }

    /// `ws://127.0.0.1:PORT`, what a node's `VECTORIZE_DB` is set to.
    pub fn endpoint(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The environment of a node on this server, signed in as root.
    pub fn node_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("VECTORIZE_DB", self.endpoint()),
            ("VECTORIZE_DB_USER", ROOT.into()),
            ("VECTORIZE_DB_PASS", ROOT_PASS.into()),
        ]
    }

    /// The service's store on this server, signed in as root, for checks
    /// the HTTP API cannot make.
    pub async fn store(&self) -> Store {
        let options = DbOptions {
            user: Some(ROOT.into()),
            pass: Some(ROOT_PASS.to_string().into()),
            ..DbOptions::embedded(self.endpoint())
        };
        Store::open(&options).await.unwrap()
    }

    /// SIGKILL: the server is gone until `restart`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL is delivered");
            child.wait().expect("the killed server is reaped");
        }
    }

    /// Starts the server again on the same port and storage.
    pub async fn restart(&mut self) {
        self.kill();
        self.run().await;
    }

    async fn run(&mut self) {
        let log = self.log.reopen().unwrap();
        let child = Command::new(binary())
            .args(["start", "--log", "warn", "--bind"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--user", ROOT, "--pass", ROOT_PASS])
            .arg(&self.storage)
            .env("SURREAL_ONLINE_VERSION_CHECK", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the surreal_server example runs");
        self.child = Some(child);
        let health = format!("http://127.0.0.1:{}/health", self.port);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if client
                .get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the SurrealDB server did not start ({exited:?}):\n{}",
                std::fs::read_to_string(self.log.path()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SurrealServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `target/{profile}/examples/surreal_server`, beside this test binary's
/// `deps/` folder: `cargo test` builds every example before it runs tests.
fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile.join("examples/surreal_server");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test` builds it, or run `cargo build --example surreal_server`",
        binary.display()
    );
    binary
}
