//! A 1 GiB model archive (stored entries) uploaded to `POST
//! /v1/upload/local`, from the start of the upload to 201, side by side
//! with the baseline on the same bytes in the same run: `curl` posting the
//! same file to a sink that discards it, plus `unzip -q` of it. The service
//! is the release binary in its own process; its peak RSS (VmHWM) is
//! reported. Run with `cargo bench --bench local_upload`;
//! `VECTORIZE_BENCH_MIB` changes the size (default 1024).

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use common::{Service, env_or, median};

const ROUNDS: usize = 3;

#[tokio::main]
async fn main() {
    let mib = env_or("VECTORIZE_BENCH_MIB", 1024) as usize;
    let scratch = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let archive = scratch.path().join("bench-model.zip");
    write_archive(&archive, mib);

    let service = Service::start(&scratch.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let sink = start_sink().await;

    let (mut baseline, mut ours) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let started = Instant::now();
        curl_post(&archive, &sink, 200);
        let unzipped = scratch.path().join(format!("unzip-{round}"));
        let status = Command::new("unzip")
            .arg("-q")
            .arg(&archive)
            .arg("-d")
            .arg(&unzipped)
            .status()
            .unwrap();
        assert!(status.success());
        baseline.push(started.elapsed());
        std::fs::remove_dir_all(&unzipped).unwrap();

        let started = Instant::now();
        let body = curl_post(&archive, &format!("{}/v1/upload/local", service.base), 201);
        ours.push(started.elapsed());
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        let model_id = answer["models"][0]["id"].as_str().unwrap();
        service.delete_model(&client, model_id).await;
    }
    let rss = service.peak_rss_mib();
    let (baseline, ours) = (median(&mut baseline), median(&mut ours));
    println!("local_upload: {mib} MiB archive (stored entries), median of {ROUNDS}");
    println!("| what | time |");
    println!("| --- | --- |");
    println!(
        "| curl -F to a sink + unzip -q | {:.3} s |",
        baseline.as_secs_f64()
    );
    println!(
        "| vectorize upload → 201 (guard, extract, validate, sha256, install) | {:.3} s |",
        ours.as_secs_f64()
    );
    println!(
        "ratio service/baseline: {:.2} (goal ≤ 1.30)",
        ours.as_secs_f64() / baseline.as_secs_f64()
    );
    println!("service peak RSS (VmHWM): {rss:.1} MiB (goal < 100)");
}

/// `bench-model/config.json` and a `bench-model/model.safetensors` of `mib` MiB, stored.
fn write_archive(path: &std::path::Path, mib: usize) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    zip.start_file("bench-model/config.json", stored).unwrap();
    zip.write_all(b"{}").unwrap();
    zip.start_file("bench-model/model.safetensors", stored)
        .unwrap();
    let data_len = mib * 1024 * 1024;
    let header =
        format!(r#"{{"w":{{"dtype":"U8","shape":[{data_len}],"data_offsets":[0,{data_len}]}}}}"#);
    zip.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    zip.write_all(header.as_bytes()).unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
    for _ in 0..mib {
        zip.write_all(&chunk).unwrap();
    }
    zip.finish().unwrap();
}

/// Posts the archive as the multipart field `file` with curl; returns the body.
fn curl_post(archive: &std::path::Path, url: &str, expected: u16) -> String {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-F"])
        .arg(format!("file=@{}", archive.display()))
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    assert_eq!(status, expected.to_string(), "{body}");
    body.to_string()
}

/// A server that reads every request body to the end and answers 200.
async fn start_sink() -> String {
    use futures_util::StreamExt;
    use poem::{Body, handler, post};
    #[handler]
    async fn sink(body: Body) -> &'static str {
        let mut stream = body.into_bytes_stream();
        while stream.next().await.is_some() {}
        "ok"
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sink", listener.local_addr().unwrap());
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
    tokio::spawn(
        poem::Server::new_with_acceptor(acceptor).run(poem::Route::new().at("/sink", post(sink))),
    );
    url
}
