//! Downloading a 1 GiB safetensors file through the service, from the
//! loopback fake hub (LFS redirect to its CDN host), side by side with
//! `curl -L -o FILE` of the same URL onto the same disk, in the same run.
//! Run with `cargo bench --bench hf_download`; `VECTORIZE_BENCH_MIB`
//! changes the file size (default 1024).

mod common;
#[path = "../tests/api/support/fake_hub.rs"]
#[allow(dead_code)]
mod fake_hub;

use std::process::Command;
use std::time::Instant;

use common::{Service, env_or, median};
use fake_hub::{FakeHub, safetensors_bytes, tiny_repo};

const ROUNDS: usize = 3;

#[tokio::main]
async fn main() {
    let mib = env_or("VECTORIZE_BENCH_MIB", 1024) as usize;
    let hub = FakeHub::start().await;
    let weights = safetensors_bytes(&[("weights", &[mib * 1024 * 1024 / 4])]);
    let size = weights.len() as u64;
    // The tiny model with its weights made big.
    let mut repo = tiny_repo("bench/model");
    repo.files[1].bytes = weights;
    hub.add_repo(repo);
    let scratch = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let service = Service::start(&scratch.path().join("data"), &[("HF_ENDPOINT", hub.url())]).await;
    let client = reqwest::Client::new();

    let (mut curl_times, mut service_times) = (Vec::new(), Vec::new());
    let mut service_cpu: Vec<f64> = Vec::new();
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

        let cpu_before = service.cpu_seconds();
        let took = service
            .timed_upload(
                &client,
                "/v1/upload/huggingface",
                serde_json::json!({"model_tag": "bench/model"}),
            )
            .await;
        service_times.push(took);
        service_cpu.push(service.cpu_seconds() - cpu_before);
    }
    let rss = service.peak_rss_mib();
    let (curl, ours) = (median(&mut curl_times), median(&mut service_times));
    println!("hf_download: {mib} MiB safetensors over loopback (LFS redirect), median of {ROUNDS}");
    println!("| what | time | MiB/s |");
    println!("| --- | --- | --- |");
    println!(
        "| curl -L -o | {:.3} s | {:.0} |",
        curl.as_secs_f64(),
        mib as f64 / curl.as_secs_f64()
    );
    let rate = mib as f64 / ours.as_secs_f64();
    println!(
        "| vectorize POST→DONE (sha256 verified) | {:.3} s | {rate:.0} |",
        ours.as_secs_f64()
    );
    println!(
        "ratio service/curl: {:.2} (goal ≤ 1.10)",
        ours.as_secs_f64() / curl.as_secs_f64()
    );
    println!("service peak RSS (VmHWM): {rss:.1} MiB (goal < 100)");
    println!("service CPU per round (user + system, includes its delete): {service_cpu:.2?} s");
}
