//! A GitHub upload of a repository with a 256 MiB weights file, served by
//! the test git server (`git http-backend` over smart HTTP), from POST to
//! DONE through the service, side by side with `git clone` of the same URL
//! into a temp folder, in the same run. Run with `cargo bench --bench
//! github_clone`; `VECTORIZE_BENCH_MIB` changes the size (default 256).

mod common;
#[path = "../tests/api/support/fake_hub.rs"]
#[allow(dead_code)]
mod fake_hub;
#[path = "../tests/api/support/git_server.rs"]
#[allow(dead_code)]
mod git_server;

use std::process::Command;
use std::time::Instant;

use common::{Service, env_or, median};

const ROUNDS: usize = 3;

#[tokio::main]
async fn main() {
    let mib = env_or("VECTORIZE_BENCH_MIB", 256) as usize;
    let server = git_server::GitServer::start().await;
    let weights = fake_hub::safetensors_bytes(&[("weights", &[mib * 1024 * 1024 / 4])]);
    let repo = server.repo("bench", "model");
    repo.file("config.json", b"{}")
        .file("tokenizer.json", b"{}")
        .file("model.safetensors", &weights);
    repo.commit("weights");

    let scratch = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let env = [
        ("GITHUB_API_URL", server.api_url()),
        ("GITHUB_SERVER_URL", server.server_url()),
    ];
    let service = Service::start(&scratch.path().join("data"), &env).await;
    let client = reqwest::Client::new();

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

        let took = service
            .timed_upload(
                &client,
                "/v1/upload/github",
                serde_json::json!({"owner": "bench", "repo_name": "model"}),
            )
            .await;
        uploads.push(took);
    }
    let rss = service.peak_rss_mib();
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
    println!("service peak RSS (VmHWM): {rss:.1} MiB");
}
