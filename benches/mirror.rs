//! The mirror (`/mirror/huggingface`) serving a stored model, side by side
//! in the same run with what it is measured against:
//! - one weights file (default 1 GiB) fetched with `curl -o /dev/null`
//!   from the mirror and from a minimal poem `StaticFilesEndpoint` serving
//!   the same blob folder; goal: the mirror at ≥ 0.9× its throughput,
//!   service peak RSS under 100 MiB;
//! - `huggingface_hub.snapshot_download` of a model (default 512 MiB of
//!   weights) from the mirror and from the fake hub it came from (the venv
//!   `.ci/interop.sh` builds; skipped when it is missing).
//!
//! Run with `cargo bench --bench mirror`; `VECTORIZE_BENCH_MIB` and
//! `VECTORIZE_BENCH_SNAPSHOT_MIB` change the sizes.

mod common;
#[path = "../tests/api/support/fake_hub.rs"]
#[allow(dead_code)]
mod fake_hub;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Service, env_or, interop_python, median};
use fake_hub::{FakeHub, safetensors_bytes, tiny_repo};
use poem::endpoint::StaticFilesEndpoint;
use poem::listener::TcpListener;

const ROUNDS: usize = 3;

#[tokio::main]
async fn main() {
    let mib = env_or("VECTORIZE_BENCH_MIB", 1024) as usize;
    let snapshot_mib = env_or("VECTORIZE_BENCH_SNAPSHOT_MIB", 512) as usize;
    let hub = FakeHub::start().await;
    hub.add_repo(repo_with_weights("bench/big", mib));
    hub.add_repo(repo_with_weights("bench/snapshot", snapshot_mib));
    let scratch = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let data = scratch.path().join("data");
    let service = Service::start(&data, &[("HF_ENDPOINT", hub.url())]).await;
    let client = reqwest::Client::new();
    for repo in ["bench/big", "bench/snapshot"] {
        let body = serde_json::json!({"model_tag": repo});
        service
            .upload_and_wait(&client, "/v1/upload/huggingface", body)
            .await;
    }

    one_file(&service, &data, mib).await;
    snapshot(&service, &hub, scratch.path(), snapshot_mib);
}

/// The tiny model with its weights made `mib` MiB.
fn repo_with_weights(id: &str, mib: usize) -> fake_hub::HubRepo {
    let mut repo = tiny_repo(id);
    repo.files[1].bytes = safetensors_bytes(&[("weights", &[mib * 1024 * 1024 / 4])]);
    repo
}

async fn one_file(service: &Service, data: &Path, mib: usize) {
    let blobs = data.join("models/huggingface/models--bench--big/blobs");
    let (blob, size) = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                e.metadata().unwrap().len(),
            )
        })
        .max_by_key(|(_, size)| *size)
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let files = StaticFilesEndpoint::new(&blobs);
    tokio::spawn(poem::Server::new(TcpListener::bind(format!("127.0.0.1:{port}"))).run(files));
    let static_url = format!("http://127.0.0.1:{port}/{blob}");
    wait_listening(port).await;
    let mirror_url = format!(
        "{}/mirror/huggingface/bench/big/resolve/main/model.safetensors",
        service.base
    );

    let (mut static_times, mut mirror_times) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        static_times.push(curl_to_null(&static_url, size));
        mirror_times.push(curl_to_null(&mirror_url, size));
    }
    let (baseline, ours) = (median(&mut static_times), median(&mut mirror_times));
    println!("mirror: one {mib} MiB weights file to `curl -o /dev/null`, median of {ROUNDS}");
    println!("| server | time | MiB/s |");
    println!("| --- | --- | --- |");
    let rate = |took: Duration| mib as f64 / took.as_secs_f64();
    println!(
        "| poem StaticFilesEndpoint | {:.3} s | {:.0} |",
        baseline.as_secs_f64(),
        rate(baseline)
    );
    println!(
        "| vectorize /mirror/huggingface | {:.3} s | {:.0} |",
        ours.as_secs_f64(),
        rate(ours)
    );
    println!(
        "mirror throughput / StaticFilesEndpoint's: {:.2} (goal ≥ 0.9); service peak RSS {:.1} MiB (goal < 100)\n",
        baseline.as_secs_f64() / ours.as_secs_f64(),
        service.peak_rss_mib()
    );
}

fn snapshot(service: &Service, hub: &FakeHub, scratch: &Path, mib: usize) {
    let Some(python) = interop_python() else {
        println!("snapshot_download: skipped (no huggingface_hub venv; run .ci/interop.sh once)");
        return;
    };
    let mirror = format!("{}/mirror/huggingface", service.base);
    let (mut hub_times, mut mirror_times) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for (endpoint, times) in [
            (hub.url(), &mut hub_times),
            (mirror.clone(), &mut mirror_times),
        ] {
            let cache = scratch.join(format!("hf-cache-{round}"));
            let script = format!(
                "from huggingface_hub import snapshot_download\n\
                 snapshot_download('bench/snapshot', cache_dir={cache:?})\n"
            );
            let started = Instant::now();
            let status = Command::new(&python)
                .args(["-c", &script])
                .env("HF_ENDPOINT", endpoint)
                .env("HF_HUB_DISABLE_TELEMETRY", "1")
                .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                .status()
                .unwrap();
            times.push(started.elapsed());
            assert!(status.success(), "snapshot_download failed");
            std::fs::remove_dir_all(&cache).unwrap();
        }
    }
    let (from_hub, ours) = (median(&mut hub_times), median(&mut mirror_times));
    println!("snapshot_download of a model with {mib} MiB of weights, median of {ROUNDS}");
    println!("| HF_ENDPOINT | time |");
    println!("| --- | --- |");
    println!(
        "| the fake hub it came from | {:.3} s |",
        from_hub.as_secs_f64()
    );
    println!(
        "| vectorize /mirror/huggingface | {:.3} s |",
        ours.as_secs_f64()
    );
    println!(
        "mirror time / hub time: {:.2}; service peak RSS {:.1} MiB",
        ours.as_secs_f64() / from_hub.as_secs_f64(),
        service.peak_rss_mib()
    );
}

/// Times `curl -o /dev/null` of `url`, checking that `size` bytes came.
fn curl_to_null(url: &str, size: u64) -> Duration {
    let started = Instant::now();
    let output = Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-w", "%{size_download}"])
        .arg(url)
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(output.status.success(), "curl {url} failed");
    assert_eq!(String::from_utf8_lossy(&output.stdout), size.to_string());
    took
}

/// Waits until the static server on `port` accepts connections.
async fn wait_listening(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the static file server on port {port} does not listen");
}
