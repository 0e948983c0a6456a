//! The load benchmark of issue 5, run with `cargo bench --bench load`:
//! (a) 1,000 Hugging Face uploads of small repositories submitted by 64
//! concurrent clients against the fake hub, then drained: every task DONE,
//! exactly 1,000 more models, no duplicate, none stuck; (b) `GET
//! /v1/upload/tasks/{id}` from 64 concurrent connections for 10 s, side by
//! side with a minimal poem handler answering the same JSON from memory,
//! measured the same way in the same run (the ceiling); (c) the service's
//! peak RSS during (a). The service is the release binary in its own
//! process. `VECTORIZE_LOAD_UPLOADS` and `VECTORIZE_LOAD_SECONDS` shrink it.

mod common;
#[path = "../tests/api/support/fake_hub.rs"]
#[allow(dead_code)]
mod fake_hub;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Service, env_or};
use fake_hub::{FakeHub, tiny_repo};
use futures_util::future::join_all;
use serde_json::Value;

const CLIENTS: usize = 64;

#[tokio::main]
async fn main() {
    let uploads = env_or("VECTORIZE_LOAD_UPLOADS", 1000) as usize;
    let seconds = env_or("VECTORIZE_LOAD_SECONDS", 10);
    let hub = FakeHub::start().await;
    for i in 0..uploads {
        hub.add_repo(tiny_repo(&format!("load/model-{i}")));
    }
    let scratch = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let service = Service::start(&scratch.path().join("data"), &[("HF_ENDPOINT", hub.url())]).await;
    let base = service.base.clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let models_before = count(&client, &format!("{base}/v1/models?limit=1")).await;

    // (a) submit and drain.
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let submitted: Vec<Vec<String>> = join_all((0..CLIENTS).map(|_| {
        let (client, base, next) = (client.clone(), base.clone(), next.clone());
        async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= uploads {
                    return ids;
                }
                let response = client
                    .post(format!("{base}/v1/upload/huggingface"))
                    .json(&serde_json::json!({"model_tag": format!("load/model-{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201, "{:?}", response.text().await);
                let task: Value = response.json().await.unwrap();
                ids.push(task["id"].as_str().unwrap().to_string());
            }
        }
    }))
    .await;
    let submit_time = started.elapsed();
    let ids: Vec<String> = submitted.into_iter().flatten().collect();
    let drain_deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = count(
            &client,
            &format!("{base}/v1/upload/tasks?status=DONE&limit=1"),
        )
        .await;
        let failed = count(
            &client,
            &format!("{base}/v1/upload/tasks?status=FAILED&limit=1"),
        )
        .await;
        assert_eq!(failed, 0, "some uploads failed");
        if done as usize == uploads {
            break;
        }
        assert!(
            Instant::now() < drain_deadline,
            "stuck: {done} of {uploads} DONE after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_time = started.elapsed();
    let peak_rss = service.peak_rss_mib();
    let models_after = count(&client, &format!("{base}/v1/models?limit=1")).await;
    assert_eq!(
        models_after - models_before,
        uploads as u64,
        "the model count is not exactly {uploads} more"
    );
    let tags = model_tags(&client, &base).await;
    assert_eq!(tags.len(), uploads, "duplicate models");

    // (b) task status under load, against the ceiling of a minimal handler.
    let url = format!("{base}/v1/upload/tasks/{}", ids[0]);
    let body = client.get(&url).send().await.unwrap().text().await.unwrap();
    let ours = hammer(&client, &url, seconds).await;
    let ceiling_url = serve_from_memory(body).await;
    let ceiling = hammer(&client, &ceiling_url, seconds).await;
    drop(service);

    println!(
        "load: {uploads} uploads by {CLIENTS} clients; GET task by {CLIENTS} connections for {seconds} s"
    );
    println!("| measure | value |");
    println!("| --- | --- |");
    println!(
        "| (a) submit {uploads} uploads (all 201) | {:.2} s |",
        submit_time.as_secs_f64()
    );
    println!(
        "| (a) time to drain (submit → all DONE) | {:.2} s |",
        drain_time.as_secs_f64()
    );
    println!(
        "| (a) models added / duplicates / FAILED | {} / 0 / 0 |",
        models_after - models_before
    );
    println!(
        "| (b) GET task: vectorize | {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms |",
        ours.rps, ours.p50_ms, ours.p99_ms
    );
    println!(
        "| (b) GET task: minimal poem handler | {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms |",
        ceiling.rps, ceiling.p50_ms, ceiling.p99_ms
    );
    println!(
        "| (b) ratio vectorize / ceiling | {:.2} (goal ≥ 0.5) |",
        ours.rps / ceiling.rps
    );
    println!("| (c) service peak RSS during (a) | {peak_rss:.1} MiB |");
}

struct Throughput {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `CLIENTS` loops of GET for `seconds`; every answer must be 200.
async fn hammer(client: &reqwest::Client, url: &str, seconds: u64) -> Throughput {
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let latencies: Vec<Vec<u32>> = join_all((0..CLIENTS).map(|_| {
        let (client, url) = (client.clone(), url.to_string());
        async move {
            let mut mine = Vec::new();
            while Instant::now() < until {
                let sent = Instant::now();
                let response = client.get(&url).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
                mine.push(sent.elapsed().as_micros() as u32);
            }
            mine
        }
    }))
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut all: Vec<u32> = latencies.into_iter().flatten().collect();
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)] as f64 / 1000.0;
    Throughput {
        rps: all.len() as f64 / elapsed,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

/// The ceiling: poem answering the same JSON from memory, nothing else.
async fn serve_from_memory(body: String) -> String {
    use poem::{EndpointExt, Route, get, handler, web::Data};
    #[handler]
    fn task(body: Data<&Arc<String>>) -> poem::Response {
        poem::Response::builder()
            .content_type("application/json; charset=utf-8")
            .body(body.as_str().to_string())
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/upload/tasks/x",
        listener.local_addr().unwrap()
    );
    let app = Route::new()
        .at("/v1/upload/tasks/:id", get(task))
        .data(Arc::new(body));
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    url
}

async fn count(client: &reqwest::Client, url: &str) -> u64 {
    let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
    page["total"].as_u64().unwrap()
}

async fn model_tags(client: &reqwest::Client, base: &str) -> HashSet<String> {
    let mut tags = HashSet::new();
    let mut offset = 0;
    loop {
        let page: Value = client
            .get(format!("{base}/v1/models?limit=1000&offset={offset}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            return tags;
        }
        offset += items.len();
        tags.extend(
            items
                .iter()
                .map(|m| m["model_tag"].as_str().unwrap().to_string()),
        );
    }
}
