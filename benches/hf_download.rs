//! Downloading a 1 GiB safetensors file through the service, from the
//! loopback fake hub (LFS redirect to its CDN host), side by side with
//! `curl -L -o FILE` of the same URL onto the same disk, in the same run.
//! The service runs as its own process (the release binary), so its peak
//! RSS (VmHWM) is its own. Run with `cargo bench --bench hf_download`;
//! `VECTORIZE_BENCH_MIB` changes the file size (default 1024).

#[path = "../tests/api/support/fake_hub.rs"]
#[allow(dead_code)]
mod fake_hub;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_hub::{FakeHub, HubFile, HubRepo, random_commit, safetensors_bytes};

const ROUNDS: usize = 3;

#[tokio::main]
async fn main() {
    let mib: usize = std::env::var("VECTORIZE_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let hub = FakeHub::start().await;
    let floats = mib * 1024 * 1024 / 4;
    let weights = safetensors_bytes(&[("weights", &[floats])]);
    let size = weights.len() as u64;
    hub.add_repo(HubRepo {
        id: "bench/model".into(),
        commit: random_commit(),
        revisions: vec!["main".into()],
        files: vec![
            HubFile {
                path: "config.json".into(),
                bytes: b"{}".to_vec(),
                lfs: false,
            },
            HubFile {
                path: "model.safetensors".into(),
                bytes: weights,
                lfs: true,
            },
        ],
        ..Default::default()
    });

    let scratch = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let data_dir = scratch.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut service = Command::new(env!("CARGO_BIN_EXE_vectorize"))
        .arg("serve")
        .env("VECTORIZE_ADDR", format!("127.0.0.1:{port}"))
        .env("VECTORIZE_DATA_DIR", &data_dir)
        .env("HF_ENDPOINT", hub.url())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the service binary starts");
    let client = reqwest::Client::new();
    wait_healthy(&client, &base).await;

    let mut curl_times = Vec::new();
    let mut service_times = Vec::new();
    for round in 0..ROUNDS {
        let target = scratch.path().join(format!("curl-{round}.safetensors"));
        let url = format!("{}/bench/model/resolve/main/model.safetensors", hub.url());
        let started = Instant::now();
        let status = Command::new("curl")
            .args(["-sfL", "-o"])
            .arg(&target)
            .arg(&url)
            .status()
            .unwrap();
        curl_times.push(started.elapsed());
        assert!(status.success());
        assert_eq!(std::fs::metadata(&target).unwrap().len(), size);
        std::fs::remove_file(&target).unwrap();

        let started = Instant::now();
        let response = client
            .post(format!("{base}/v1/upload/huggingface"))
            .json(&serde_json::json!({"model_tag": "bench/model"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let task: serde_json::Value = response.json().await.unwrap();
        let id = task["id"].as_str().unwrap().to_string();
        loop {
            let task: serde_json::Value = client
                .get(format!("{base}/v1/upload/tasks/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            match task["task_status"].as_str() {
                Some("DONE") => break,
                Some("FAILED" | "CANCELLED") => panic!("the download failed: {task}"),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        service_times.push(started.elapsed());
        // The next round downloads the same model again.
        let model_id = task_model_id(&client, &base, &id).await;
        let deleted = client
            .delete(format!("{base}/v1/models/{model_id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 204);
    }
    let hwm = peak_rss_kib(service.id());
    service.kill().ok();
    service.wait().ok();

    let curl = median(&mut curl_times);
    let ours = median(&mut service_times);
    println!("hf_download: {mib} MiB safetensors over loopback (LFS redirect), median of {ROUNDS}");
    println!("| what | time | MiB/s |");
    println!("| --- | --- | --- |");
    println!(
        "| curl -L -o | {:.3} s | {:.0} |",
        curl.as_secs_f64(),
        mib as f64 / curl.as_secs_f64()
    );
    println!(
        "| vectorize POST→DONE (sha256 verified) | {:.3} s | {:.0} |",
        ours.as_secs_f64(),
        mib as f64 / ours.as_secs_f64()
    );
    println!(
        "ratio service/curl: {:.2} (goal ≤ 1.20)",
        ours.as_secs_f64() / curl.as_secs_f64()
    );
    println!(
        "service peak RSS (VmHWM): {:.1} MiB (goal < 100)",
        hwm as f64 / 1024.0
    );
}

async fn task_model_id(client: &reqwest::Client, base: &str, id: &str) -> String {
    let task: serde_json::Value = client
        .get(format!("{base}/v1/upload/tasks/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    task["model_id"].as_str().unwrap().to_string()
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

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
