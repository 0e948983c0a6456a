//! The several-nodes benchmark of issue 10, run with `cargo bench --bench
//! cluster`: 1,000 Hugging Face uploads of small repositories against the
//! fast fake hub, submitted by 64 concurrent clients spread over the nodes
//! and drained (submit → every task DONE), by (a) one node on its embedded
//! `surrealkv://` database, as `cargo run -- serve` runs, (b) one node and
//! (c) three nodes sharing one embedded `mem://` database in this process;
//! then (d) the takeover time after a node halts in the middle of a
//! throttled download: from the halt to the first byte another node
//! writes. Nodes run in this process (`App::start_on`), so they share its
//! two cores. `VECTORIZE_CLUSTER_UPLOADS` shrinks it.

mod common;
#[path = "../tests/api/support/fake_hub.rs"]
#[allow(dead_code)]
mod fake_hub;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::env_or;
use fake_hub::{FakeHub, safetensors_bytes, tiny_repo};
use futures_util::future::join_all;
use serde_json::Value;
use vectorize::store::{DbOptions, Store};
use vectorize::{App, ConfigArgs};

const CLIENTS: usize = 64;
/// The lease of the takeover run.
const LEASE_MS: u64 = 5_000;

#[tokio::main]
async fn main() {
    let uploads = env_or("VECTORIZE_CLUSTER_UPLOADS", 1000) as usize;
    let hub = FakeHub::start().await;
    for run in ["a", "b", "c"] {
        for i in 0..uploads {
            hub.add_repo(tiny_repo(&format!("{run}/model-{i}")));
        }
    }

    let scratch = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let embedded = {
        let dir = scratch.path().join("a");
        let db = format!("surrealkv://{}", dir.join("db").display());
        let app = App::start(config(&hub, &dir, &db, "node-a", LEASE_MS))
            .await
            .unwrap();
        let time = drain(&[app.url()], "a", uploads).await;
        app.shutdown().await;
        time
    };
    let one_shared = {
        let nodes = shared_nodes(&hub, &scratch.path().join("b"), 1).await;
        let time = drain(&urls(&nodes), "b", uploads).await;
        stop(nodes).await;
        time
    };
    let three_shared = {
        let nodes = shared_nodes(&hub, &scratch.path().join("c"), 3).await;
        let time = drain(&urls(&nodes), "c", uploads).await;
        stop(nodes).await;
        time
    };
    let takeover = takeover(&hub, &scratch.path().join("d")).await;

    let rate = |d: Duration| uploads as f64 / d.as_secs_f64();
    println!("cluster: {uploads} uploads by {CLIENTS} clients, drained (submit → all DONE)");
    println!("| run | drain | tasks/s |");
    println!("| --- | --- | --- |");
    for (name, time) in [
        ("(a) one node, embedded surrealkv", embedded),
        ("(b) one node, shared mem:// database", one_shared),
        ("(c) three nodes, shared mem:// database", three_shared),
    ] {
        println!(
            "| {name} | {:.2} s | {:.0} |",
            time.as_secs_f64(),
            rate(time)
        );
    }
    println!(
        "| (d) takeover after a halt, lease {LEASE_MS} ms | {:.2} s | |",
        takeover.as_secs_f64()
    );
}

fn config(
    hub: &FakeHub,
    dir: &std::path::Path,
    db: &str,
    node: &str,
    lease_ms: u64,
) -> vectorize::Config {
    ConfigArgs {
        addr: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(dir.to_path_buf()),
        db: Some(db.into()),
        node_id: Some(node.into()),
        lease_ms: Some(lease_ms),
        hf_endpoint: Some(hub.url()),
        ..Default::default()
    }
    .resolve()
    .unwrap()
}

/// `count` nodes on one new embedded database and one data dir.
async fn shared_nodes(hub: &FakeHub, dir: &std::path::Path, count: usize) -> Vec<App> {
    let store = Store::open(&DbOptions::embedded("mem://")).await.unwrap();
    let mut nodes = Vec::new();
    for n in 0..count {
        let config = config(hub, dir, "mem://", &format!("node-{n}"), LEASE_MS);
        nodes.push(App::start_on(config, store.clone(), false).await.unwrap());
    }
    nodes
}

fn urls(nodes: &[App]) -> Vec<String> {
    nodes.iter().map(App::url).collect()
}

async fn stop(nodes: Vec<App>) {
    for node in nodes {
        node.shutdown().await;
    }
}

/// Submits `uploads` uploads of `{run}/model-{i}` by `CLIENTS` clients,
/// client `c` on node `c % nodes`, and waits until every task is DONE.
async fn drain(nodes: &[String], run: &str, uploads: usize) -> Duration {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    join_all((0..CLIENTS).map(|c| {
        let (client, next) = (client.clone(), next.clone());
        let base = nodes[c % nodes.len()].clone();
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= uploads {
                    return;
                }
                let response = client
                    .post(format!("{base}/v1/upload/huggingface"))
                    .json(&serde_json::json!({"model_tag": format!("{run}/model-{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201, "{:?}", response.text().await);
            }
        }
    }))
    .await;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let done = count(
            &client,
            &format!("{}/v1/upload/tasks?status=DONE&limit=1", nodes[0]),
        )
        .await;
        let failed = count(
            &client,
            &format!("{}/v1/upload/tasks?status=FAILED&limit=1", nodes[0]),
        )
        .await;
        assert_eq!(failed, 0, "some uploads failed");
        if done as usize == uploads {
            return started.elapsed();
        }
        assert!(Instant::now() < deadline, "stuck: {done} of {uploads} DONE");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn count(client: &reqwest::Client, url: &str) -> u64 {
    get_json(client, url).await["total"].as_u64().unwrap()
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Two nodes; the one running a throttled download halts; the time from
/// the halt until the other node has written a byte of the task.
async fn takeover(hub: &FakeHub, dir: &std::path::Path) -> Duration {
    let mut repo = tiny_repo("d/slow");
    repo.files[1].bytes = safetensors_bytes(&[("w", &[1024, 1024])]);
    hub.add_repo(repo);
    hub.slow_downloads(500_000);
    let mut nodes = shared_nodes(hub, dir, 2).await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/v1/upload/huggingface", nodes[0].url()))
        .json(&serde_json::json!({"model_tag": "d/slow"}))
        .send()
        .await
        .unwrap();
    let task: Value = response.json().await.unwrap();
    let url = |node: &App| {
        format!(
            "{}/v1/upload/tasks/{}",
            node.url(),
            task["id"].as_str().unwrap()
        )
    };
    let running = loop {
        let t = get_json(&client, &url(&nodes[0])).await;
        if t["progress"]["bytes_done"].as_u64() > Some(100_000) {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let holder = running["node"].as_str().unwrap().to_string();
    let index = usize::from(holder == "node-1");
    let survivor = nodes.remove(1 - index);
    let halted = Instant::now();
    nodes.remove(0).halt().await;
    let mut offset = None;
    let took = loop {
        let t = get_json(&client, &url(&survivor)).await;
        let bytes = t["progress"]["bytes_done"].as_u64().unwrap_or(0);
        if t["node"] == survivor_name(index) {
            let start = *offset.get_or_insert(bytes);
            if bytes > start {
                break halted.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    hub.clear_faults();
    survivor.shutdown().await;
    took
}

fn survivor_name(halted_index: usize) -> &'static str {
    if halted_index == 0 {
        "node-1"
    } else {
        "node-0"
    }
}
