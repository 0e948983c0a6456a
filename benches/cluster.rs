//! The several-nodes benchmark of issue 10, run with `cargo bench --bench
//! cluster`: 1,000 Hugging Face uploads of small repositories against the
//! fast fake hub, submitted by 64 concurrent clients spread over the nodes
//! and drained (submit → every task DONE), by (a) one node on its embedded
//! `surrealkv://` database, as `cargo run --release -- serve` runs, (b) one
//! node and (c) three nodes on one SurrealDB server (this repository's
//! `examples/surreal_server`, in memory); then (d) the takeover time after
//! `kill -9` of the node running a throttled download: from the kill to the
//! first byte another node writes. Every node is the release binary in its
//! own process; all of them, the server and the fake hub share this
//! machine's cores. `VECTORIZE_CLUSTER_UPLOADS` shrinks it.

mod common;
#[path = "../tests/api/support/fake_hub.rs"]
#[allow(dead_code)]
mod fake_hub;
#[path = "../tests/api/support/surreal_server.rs"]
#[allow(dead_code)]
mod surreal_server;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Service, env_or};
use fake_hub::{FakeHub, safetensors_bytes, tiny_repo};
use futures_util::future::join_all;
use serde_json::Value;
use surreal_server::SurrealServer;

const CLIENTS: usize = 64;
/// The lease of the takeover run.
const LEASE_MS: u64 = 5_000;

#[tokio::main]
async fn main() {
    let uploads = env_or("VECTORIZE_CLUSTER_UPLOADS", 1000) as usize;
    build_server();
    let hub = FakeHub::start().await;
    for run in ["a", "b", "c"] {
        for i in 0..uploads {
            hub.add_repo(tiny_repo(&format!("{run}/model-{i}")));
        }
    }
    let scratch = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();

    let embedded = {
        let node = Service::start(&scratch.path().join("a"), &hub_env(&hub)).await;
        drain(std::slice::from_ref(&node.base), "a", uploads).await
    };
    let one = {
        let server = SurrealServer::start().await;
        let nodes = start_nodes(&server, &hub, &scratch.path().join("b"), 1).await;
        drain(&urls(&nodes), "b", uploads).await
    };
    let three = {
        let server = SurrealServer::start().await;
        let nodes = start_nodes(&server, &hub, &scratch.path().join("c"), 3).await;
        drain(&urls(&nodes), "c", uploads).await
    };
    let takeover = takeover(&hub, &scratch.path().join("d")).await;

    let rate = |d: Duration| uploads as f64 / d.as_secs_f64();
    println!("cluster: {uploads} uploads by {CLIENTS} clients, drained (submit → all DONE)");
    println!("| run | drain | tasks/s |");
    println!("| --- | --- | --- |");
    for (name, time) in [
        ("(a) one node, embedded surrealkv", embedded),
        ("(b) one node, SurrealDB server", one),
        ("(c) three nodes, SurrealDB server", three),
    ] {
        println!(
            "| {name} | {:.2} s | {:.0} |",
            time.as_secs_f64(),
            rate(time)
        );
    }
    println!(
        "three nodes against one on the server: {:.2}×",
        one.as_secs_f64() / three.as_secs_f64()
    );
    println!(
        "| (d) takeover after kill -9, lease {LEASE_MS} ms | {:.2} s | |",
        takeover.as_secs_f64()
    );
}

/// `cargo bench` builds no examples: the optimized server is built here,
/// in the `bench` profile, by a cargo that sees the environment a
/// top-level `cargo bench` would. Started from inside a bench, it inherits
/// what cargo adds for running one (`LD_LIBRARY_PATH` pointing into the
/// target dir, `CARGO_*` of this package); if a build script of the
/// SurrealDB stack tracks one of those, the stack is rebuilt in place
/// (about 25 minutes here), and again by the next `cargo bench`.
fn build_server() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let added_by_cargo = |name: &str| {
        name == "LD_LIBRARY_PATH"
            || (name.starts_with("CARGO_") && !matches!(name, "CARGO_HOME" | "CARGO_TARGET_DIR"))
    };
    let built = std::process::Command::new(cargo)
        .args(["build", "--profile", "bench", "--example", "surreal_server"])
        .env_clear()
        .envs(std::env::vars().filter(|(name, _)| !added_by_cargo(name)))
        .status()
        .expect("cargo runs");
    assert!(built.success(), "could not build examples/surreal_server");
}

fn hub_env(hub: &FakeHub) -> Vec<(&'static str, String)> {
    vec![("HF_ENDPOINT", hub.url())]
}

/// `count` nodes (`node-0`, …) on `server`, sharing the data dir `dir`.
async fn start_nodes(
    server: &SurrealServer,
    hub: &FakeHub,
    dir: &std::path::Path,
    count: usize,
) -> Vec<Service> {
    let mut nodes = Vec::new();
    for n in 0..count {
        let mut env = hub_env(hub);
        env.extend(server.node_env());
        env.push(("VECTORIZE_NODE_ID", format!("node-{n}")));
        env.push(("VECTORIZE_LEASE_MS", LEASE_MS.to_string()));
        nodes.push(Service::start(dir, &env).await);
    }
    nodes
}

fn urls(nodes: &[Service]) -> Vec<String> {
    nodes.iter().map(|n| n.base.clone()).collect()
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

/// Two nodes on a server; the one running a throttled download is killed
/// with SIGKILL; the time from the kill until the other node has written
/// a byte of the task.
async fn takeover(hub: &FakeHub, dir: &std::path::Path) -> Duration {
    let mut repo = tiny_repo("d/slow");
    repo.files[1].bytes = safetensors_bytes(&[("w", &[1024, 1024])]);
    hub.add_repo(repo);
    hub.slow_downloads(500_000);
    let server = SurrealServer::start().await;
    let mut nodes = start_nodes(&server, hub, dir, 2).await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/v1/upload/huggingface", nodes[0].base))
        .json(&serde_json::json!({"model_tag": "d/slow"}))
        .send()
        .await
        .unwrap();
    let task: Value = response.json().await.unwrap();
    let url = |node: &Service| {
        format!(
            "{}/v1/upload/tasks/{}",
            node.base,
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
    let holder: usize = running["node"].as_str().unwrap()[5..].parse().unwrap();
    let mut dead = nodes.remove(holder);
    let survivor = nodes.remove(0);
    let killed = Instant::now();
    dead.kill9();
    let mut offset = None;
    let took = loop {
        let t = get_json(&client, &url(&survivor)).await;
        let bytes = t["progress"]["bytes_done"].as_u64().unwrap_or(0);
        if t["node"] == format!("node-{}", 1 - holder) {
            let start = *offset.get_or_insert(bytes);
            if bytes > start {
                break killed.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    hub.clear_faults();
    took
}
