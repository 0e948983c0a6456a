//! The download engine against single-stream clients, side by side in the
//! same run, on the fake hub of the tests:
//!
//! - **throttled link**: one LFS file (256 MiB, `VECTORIZE_BENCH_MIB`),
//!   the hub holding each connection to about 16 MiB/s as a CDN does:
//!   `curl -o FILE` against the service (ranged parts over 8 connections,
//!   sha256 verified), POST to DONE;
//! - **many files**: 200 files of 100 KiB, the hub answering each request
//!   20 ms late: `huggingface_hub.snapshot_download` (8 workers, from the
//!   venv `.ci/interop.sh` builds; skipped when it is missing) against the
//!   service.
//!
//! Run with `cargo bench --bench download_engine`. The service's peak RSS
//! is read after each part.

mod common;
#[path = "../tests/api/support/fake_hub.rs"]
#[allow(dead_code)]
mod fake_hub;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Service, env_or, interop_python, median};
use fake_hub::{FakeHub, HubFile, safetensors_bytes, tiny_repo};

/// What each connection of the throttled link carries, bytes per second.
const LINK: u64 = 16 << 20;
const ROUNDS: usize = 2;

#[tokio::main]
async fn main() {
    let scratch = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    throttled_link(scratch.path()).await;
    many_files(scratch.path()).await;
}

async fn throttled_link(scratch: &Path) {
    let mib = env_or("VECTORIZE_BENCH_MIB", 256) as usize;
    let hub = FakeHub::start().await;
    let mut repo = tiny_repo("bench/throttled");
    repo.files[1].bytes = safetensors_bytes(&[("weights", &[mib * 1024 * 1024 / 4])]);
    let size = repo.files[1].bytes.len() as u64;
    hub.add_repo(repo);
    hub.slow_downloads(LINK);
    let data = scratch.join("throttled");
    let service = Service::start(&data, &[("HF_ENDPOINT", hub.url())]).await;
    let client = reqwest::Client::new();
    let url = format!(
        "{}/bench/throttled/resolve/main/model.safetensors",
        hub.url()
    );

    let (mut curl_times, mut service_times) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        curl_times.push(curl(&url, &scratch.join(format!("curl-{round}")), size));
        let took = service
            .timed_upload(
                &client,
                "/v1/upload/huggingface",
                serde_json::json!({"model_tag": "bench/throttled"}),
            )
            .await;
        service_times.push(took);
    }
    let (curl, ours) = (median(&mut curl_times), median(&mut service_times));
    println!(
        "throttled link: {mib} MiB LFS file, each connection held to {} MiB/s, median of {ROUNDS}",
        LINK >> 20
    );
    println!("| what | time | MiB/s |");
    println!("| --- | --- | --- |");
    row("curl -L -o (one connection)", curl, mib as f64);
    row(
        "vectorize POST→DONE (parts, sha256 verified)",
        ours,
        mib as f64,
    );
    println!(
        "speed-up over curl: {:.2}× (goal ≥ 4); service peak RSS {:.1} MiB (goal < 100)\n",
        curl.as_secs_f64() / ours.as_secs_f64(),
        service.peak_rss_mib()
    );
}

async fn many_files(scratch: &Path) {
    const FILES: usize = 200;
    let Some(python) = interop_python() else {
        println!("many files: skipped (no huggingface_hub venv; run .ci/interop.sh once)");
        return;
    };
    let hub = FakeHub::start().await;
    let mut repo = tiny_repo("bench/many");
    repo.files[1].bytes = safetensors_bytes(&[("w", &[25 * 1024])]);
    // Text, so that no file reads as a pickle; 100 KiB each.
    for i in 0..FILES - repo.files.len() {
        let line = format!("line of file {i:03} of the many-files benchmark\n");
        let bytes = line.repeat(100 * 1024 / line.len() + 1).as_bytes()[..100 * 1024].to_vec();
        repo.files.push(HubFile {
            path: format!("data/part-{i:03}.txt"),
            bytes,
            lfs: false,
        });
    }
    hub.add_repo(repo);
    hub.set_latency(Duration::from_millis(20));
    let data = scratch.join("many");
    let service = Service::start(&data, &[("HF_ENDPOINT", hub.url())]).await;
    let client = reqwest::Client::new();

    let (mut python_times, mut service_times) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let cache = scratch.join(format!("hf-cache-{round}"));
        let script = format!(
            "from huggingface_hub import snapshot_download\n\
             snapshot_download('bench/many', cache_dir={cache:?}, max_workers=8)\n"
        );
        let started = Instant::now();
        let status = Command::new(&python)
            .args(["-c", &script])
            .env("HF_ENDPOINT", hub.url())
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            .status()
            .unwrap();
        python_times.push(started.elapsed());
        assert!(status.success(), "snapshot_download failed");
        std::fs::remove_dir_all(&cache).unwrap();

        let took = service
            .timed_upload(
                &client,
                "/v1/upload/huggingface",
                serde_json::json!({"model_tag": "bench/many"}),
            )
            .await;
        service_times.push(took);
    }
    let (python, ours) = (median(&mut python_times), median(&mut service_times));
    println!("many files: {FILES} files of 100 KiB, 20 ms per request, median of {ROUNDS}");
    println!("| what | time |");
    println!("| --- | --- |");
    println!(
        "| huggingface_hub snapshot_download (8 workers) | {:.3} s |",
        python.as_secs_f64()
    );
    println!("| vectorize POST→DONE | {:.3} s |", ours.as_secs_f64());
    println!(
        "speed-up over snapshot_download: {:.2}× (goal > 1); service peak RSS {:.1} MiB",
        python.as_secs_f64() / ours.as_secs_f64(),
        service.peak_rss_mib()
    );
}

/// Times `curl -sfL -o` of `url`; checks the size and removes the file.
fn curl(url: &str, target: &Path, size: u64) -> Duration {
    let started = Instant::now();
    let status = Command::new("curl")
        .args(["-sfL", "-o"])
        .arg(target)
        .arg(url)
        .status()
        .unwrap();
    let took = started.elapsed();
    assert!(status.success());
    assert_eq!(std::fs::metadata(target).unwrap().len(), size);
    std::fs::remove_file(target).unwrap();
    took
}

fn row(what: &str, took: Duration, mib: f64) {
    println!(
        "| {what} | {:.3} s | {:.0} |",
        took.as_secs_f64(),
        mib / took.as_secs_f64()
    );
}
