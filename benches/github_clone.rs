//! A GitHub upload of a repository with a 256 MiB weights file, served by
//! the test git server (`git http-backend` over smart HTTP), from POST to
//! DONE through the service, side by side with `git clone` of the same URL
//! into a temp folder, in the same run. The service runs as its own
//! process (the release binary). Run with `cargo bench --bench
//! github_clone`; `VECTORIZE_BENCH_MIB` changes the size (default 256).

#[path = "../tests/api/support/fake_hub.rs"]
#[allow(dead_code)]
mod fake_hub;
#[path = "../tests/api/support/git_server.rs"]
#[allow(dead_code)]
mod git_server;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 3;

#[tokio::main]
async fn main() {
    let mib: usize = std::env::var("VECTORIZE_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let server = git_server::GitServer::start().await;
    let repo = server.repo("bench", "model");
    repo.file("config.json", b"{}")
        .file("tokenizer.json", b"{}")
        .file(
            "model.safetensors",
            &fake_hub::safetensors_bytes(&[("weights", &[mib * 1024 * 1024 / 4])]),
        );
    repo.commit("weights");

    let scratch = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut service = Command::new(env!("CARGO_BIN_EXE_vectorize"))
        .arg("serve")
        .env("VECTORIZE_ADDR", format!("127.0.0.1:{port}"))
        .env("VECTORIZE_DATA_DIR", scratch.path().join("data"))
        .env("GITHUB_API_URL", server.api_url())
        .env("GITHUB_SERVER_URL", server.server_url())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the service binary starts");
    let client = reqwest::Client::new();
    wait_healthy(&client, &base).await;

    let url = format!("{}/bench/model.git", server.server_url());
    let (mut clones, mut uploads) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let target = scratch.path().join(format!("clone-{round}"));
        let started = Instant::now();
        let status = Command::new("git")
            .args(["clone", "-q", &url])
            .arg(&target)
            .status()
            .unwrap();
        clones.push(started.elapsed());
        assert!(status.success());
        std::fs::remove_dir_all(&target).unwrap();

        let started = Instant::now();
        let response = client
            .post(format!("{base}/v1/upload/github"))
            .json(&serde_json::json!({"owner": "bench", "repo_name": "model"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let task: serde_json::Value = response.json().await.unwrap();
        let id = task["id"].as_str().unwrap().to_string();
        let model_id = loop {
            let task: serde_json::Value = client
                .get(format!("{base}/v1/upload/tasks/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            match task["task_status"].as_str() {
                Some("DONE") => break task["model_id"].as_str().unwrap().to_string(),
                Some("FAILED" | "CANCELLED") => panic!("the upload failed: {task}"),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        uploads.push(started.elapsed());
        let deleted = client
            .delete(format!("{base}/v1/models/{model_id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 204);
    }
    service.kill().ok();
    service.wait().ok();
    let (clone, upload) = (median(&mut clones), median(&mut uploads));
    println!("github_clone: {mib} MiB weights over git smart HTTP, median of {ROUNDS}");
    println!("| what | time |");
    println!("| --- | --- |");
    println!("| git clone | {:.3} s |", clone.as_secs_f64());
    println!(
        "| vectorize POST→DONE (clone, validate, sha256, install) | {:.3} s |",
        upload.as_secs_f64()
    );
    println!(
        "ratio service/git clone: {:.2} (goal ≤ 1.30)",
        upload.as_secs_f64() / clone.as_secs_f64()
    );
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client
            .get(format!("{base}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service did not become healthy");
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
