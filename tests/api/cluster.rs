//! Several nodes on one database and one data dir, in one process: each
//! node is the real service (its own actors, HTTP listener and node id)
//! on a shared embedded database, so the leases, fences, 409s and
//! reservations are exercised exactly as on a SurrealDB server. A node
//! "crashes" with `App::halt`: it stops renewing and gives nothing back.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use vectorize::store::{DbOptions, Store};
use vectorize::{App, ConfigArgs};

use crate::crash::{
    SLOW, assert_clean, assert_installed, assert_resumed_from, big_model, partial_weights,
};
use crate::helpers::{TestApp, is_finished, small_model};
use crate::support::fake_hub::{FakeHub, tiny_repo};
use crate::support::hygiene::task_staging;

/// Lease of the test nodes: short, so a takeover comes quickly.
const LEASE_MS: u64 = 1_000;

/// Nodes sharing one database and one data dir.
struct Cluster {
    nodes: Vec<TestApp>,
    store: Store,
    hub: FakeHub,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(nodes: usize, max_concurrent_tasks: usize) -> Self {
        let store = Store::open(&DbOptions::embedded("mem://")).await.unwrap();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            store,
            hub: FakeHub::start().await,
            dir: tempfile::tempdir().unwrap(),
        };
        for n in 0..nodes {
            cluster
                .add_node(&format!("node-{n}"), max_concurrent_tasks)
                .await;
        }
        cluster
    }

    /// Starts one more node named `name` on the shared database.
    async fn add_node(&mut self, name: &str, max_concurrent_tasks: usize) {
        let config = ConfigArgs {
            addr: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(self.dir.path().to_path_buf()),
            db: Some("mem://".into()),
            node_id: Some(name.into()),
            lease_ms: Some(LEASE_MS),
            retry_base_ms: Some(20),
            max_concurrent_tasks: Some(max_concurrent_tasks),
            hf_endpoint: Some(self.hub.url()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let app = App::start_on(config, self.store.clone(), false)
            .await
            .unwrap();
        self.nodes.push(TestApp {
            url: app.url(),
            app: Some(app),
            client: reqwest::Client::new(),
            hub: self.hub.clone(),
            data_dir: self.dir.path().to_path_buf(),
            _tmp: None,
        });
    }

    /// The node whose id is `name`.
    fn node(&self, name: &str) -> &TestApp {
        let index: usize = name.trim_start_matches("node-").parse().unwrap();
        &self.nodes[index]
    }

    /// "Crashes" node `index`: no lease given back, partial files kept.
    async fn halt(&mut self, index: usize) {
        if let Some(app) = self.nodes[index].app.take() {
            app.halt().await;
        }
    }

    async fn stop_all(&mut self) {
        for node in &mut self.nodes {
            node.stop().await;
        }
    }
}

/// 50 identical uploads spread over three nodes at once: the database's
/// unique index lets exactly one through; the rest learn why.
#[tokio::test]
async fn fifty_identical_uploads_over_three_nodes_make_exactly_one_task() {
    let cluster = Cluster::start(3, 4).await;
    cluster.hub.add_repo(big_model("acme/once"));
    cluster.hub.slow_downloads(SLOW);
    let posts = (0..50).map(|i| {
        let node = &cluster.nodes[i % 3];
        async move {
            let response = node.post_hf(json!({"model_tag": "acme/once"})).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }
    });
    let answers = futures_util::future::join_all(posts).await;
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(body["code"], "UPLOAD_IN_PROGRESS", "{body}");
    }
    let (tasks, total) = cluster
        .store
        .list_tasks(&vectorize::store::TaskFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((tasks.len(), total), (1, 1));
}

/// A node dies in the middle of a throttled download: another node takes
/// the task over once the lease lapses, resumes the partial file with a
/// `Range` request, and installs byte-identical files. The dead node's
/// fence is gone: nothing it could still write is accepted.
#[tokio::test]
async fn a_dead_nodes_download_is_taken_over_and_resumed_with_range() {
    let mut cluster = Cluster::start(3, 2).await;
    let repo = big_model("acme/takeover");
    cluster.hub.add_repo(repo.clone());
    cluster.hub.slow_downloads(SLOW);
    let id = cluster.nodes[0].upload_hf(&repo.id).await;
    let running = cluster.nodes[1]
        .wait_for(&id, Duration::from_secs(15), |t| {
            t["task_status"] == "RUNNING" && t["progress"]["bytes_done"].as_u64() > Some(200_000)
        })
        .await;
    let holder = running["node"].as_str().unwrap().to_string();
    let index: usize = holder.trim_start_matches("node-").parse().unwrap();
    let stale = cluster
        .store
        .get_task(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();

    let killed = Instant::now();
    cluster.halt(index).await;
    // Bytes the dead node had written, once its worker has stopped writing;
    // the takeover asks for the rest.
    let partial = partial_weights(cluster.dir.path(), &id, &repo);
    let offset = settled_size(&partial).await;
    cluster.hub.clear_faults();
    cluster.hub.clear_log();

    let other = &cluster.nodes[(index + 1) % 3];
    let taken = other
        .wait_for(&id, Duration::from_secs(15), |t| {
            t["node"].as_str().is_some_and(|n| n != holder) || is_finished(t)
        })
        .await;
    eprintln!(
        "takeover after {:?} (lease {LEASE_MS} ms) by {}",
        killed.elapsed(),
        taken["node"]
    );
    let done = other.wait_task(&id).await;
    assert_eq!(done["task_status"], "DONE", "{done}");
    assert_eq!(
        done["attempts"], 2,
        "the attempt cut by the crash counts: {done}"
    );
    assert!(done["node"].is_null(), "{done}");
    assert_installed(cluster.dir.path(), &repo);
    assert_resumed_from(&cluster.hub, &repo, offset);

    // The dead node's lease is fenced off: a write under it matches nothing.
    let lease = vectorize::store::Lease {
        task_id: stale.task_id,
        node: holder,
        epoch: stale.lease_epoch,
    };
    assert!(!cluster.store.holds(&lease).await.unwrap());
    let model = small_model("acme/never");
    let record = vectorize::store::ModelRecord::new(
        vectorize::store::Source::Huggingface,
        format!("{}@main", model.id),
        model.id.clone(),
        None,
        "models/nowhere".into(),
        Vec::new(),
    );
    let refused = cluster
        .store
        .complete_task(&lease, Default::default(), &record)
        .await;
    assert!(
        matches!(refused, Err(vectorize::store::StoreError::LeaseLost)),
        "{refused:?}"
    );
    cluster.stop_all().await;
    assert_clean(cluster.dir.path());
}

/// A task runs on one node; another node's event stream follows it, and a
/// cancel sent to a third node stops the worker where it runs and removes
/// its partial files within a few seconds.
#[tokio::test]
async fn events_and_cancel_reach_the_node_that_runs_the_task() {
    let cluster = Cluster::start(3, 2).await;
    let repo = big_model("acme/followed");
    cluster.hub.add_repo(repo.clone());
    cluster.hub.slow_downloads(SLOW / 3);
    let id = cluster.nodes[0].upload_hf(&repo.id).await;
    let running = cluster.nodes[0]
        .wait_for(&id, Duration::from_secs(15), |t| {
            t["task_status"] == "RUNNING" && t["progress"]["bytes_done"].as_u64() > Some(50_000)
        })
        .await;
    let holder = running["node"].as_str().unwrap().to_string();
    let others: Vec<&TestApp> = (0..3)
        .map(|i| &cluster.nodes[i])
        .filter(|n| !std::ptr::eq(*n, cluster.node(&holder)))
        .collect();
    let (follower, canceller) = (others[0], others[1]);

    let stream = follower
        .client
        .get(follower.at(&format!("/v1/upload/tasks/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let events = tokio::spawn(read_events(stream));
    // The holder saves progress at most once a second: two saves past the
    // one seen above leave the stream's 500 ms poll time to see one.
    let mut seen = running["progress"]["bytes_done"].as_u64().unwrap();
    for _ in 0..2 {
        let moved = follower
            .wait_for(&id, Duration::from_secs(10), |t| {
                t["progress"]["bytes_done"].as_u64() > Some(seen)
            })
            .await;
        seen = moved["progress"]["bytes_done"].as_u64().unwrap();
    }

    let started = Instant::now();
    let cancelled = canceller.cancel_task(&id).await;
    assert_eq!(cancelled.status(), 200);
    let body: Value = cancelled.json().await.unwrap();
    assert_eq!(body["task_status"], "CANCELLED", "{body}");
    while task_staging(cluster.dir.path(), &id).is_some()
        && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "cancel across nodes: files gone after {:?}",
        started.elapsed()
    );
    assert!(task_staging(cluster.dir.path(), &id).is_none());
    assert!(started.elapsed() < Duration::from_secs(5));

    let seen = tokio::time::timeout(Duration::from_secs(10), events)
        .await
        .expect("the stream ends after the cancel")
        .unwrap();
    let statuses: Vec<&str> = seen
        .iter()
        .filter_map(|t| t["task_status"].as_str())
        .collect();
    assert_eq!(statuses.last(), Some(&"CANCELLED"), "{statuses:?}");
    let moved: HashSet<u64> = seen
        .iter()
        .filter_map(|t| t["progress"]["bytes_done"].as_u64())
        .collect();
    assert!(moved.len() > 1, "the follower saw no progress: {seen:?}");
    // The holder's worker stopped: the task stays CANCELLED, no model. An
    // absence cannot be polled for; this waits past the holder's heartbeat.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let task = cluster.node(&holder).task(&id).await;
    assert_eq!(task["task_status"], "CANCELLED", "{task}");
    assert_eq!(cluster.nodes[0].list_models("").await["total"], 0);
}

/// The size of a file once it has stopped growing (two reads 100 ms
/// apart agree), within 5 s.
async fn settled_size(path: &std::path::Path) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = std::fs::metadata(path).unwrap().len();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = std::fs::metadata(path).unwrap().len();
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{} keeps growing",
            path.display()
        );
        last = now;
    }
}

/// The `task` events of a stream, until it ends.
async fn read_events(response: reqwest::Response) -> Vec<Value> {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Many short tasks over three nodes while one node dies and a new one
/// joins: every task ends DONE with one model each, and no staging is left.
#[tokio::test]
async fn many_tasks_survive_a_node_dying_and_another_joining() {
    const TASKS: usize = 60;
    let mut cluster = Cluster::start(3, 2).await;
    let mut ids = Vec::new();
    for i in 0..TASKS {
        cluster.hub.add_repo(tiny_repo(&format!("acme/many-{i}")));
        let live: Vec<&TestApp> = cluster.nodes.iter().filter(|n| n.app.is_some()).collect();
        let node = live[i % live.len()];
        ids.push(node.upload_hf(&format!("acme/many-{i}")).await);
        if i == TASKS / 3 {
            cluster.halt(2).await;
        }
        if i == TASKS / 2 {
            cluster.add_node("node-3", 2).await;
        }
    }
    let live = &cluster.nodes[0];
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        let task = live
            .wait_for(
                id,
                deadline.saturating_duration_since(Instant::now()),
                is_finished,
            )
            .await;
        assert_eq!(task["task_status"], "DONE", "{task}");
    }
    let models = live.list_models("?limit=1000").await;
    assert_eq!(models["total"], TASKS as u64);
    let tags: HashSet<&str> = models["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model_tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags.len(), TASKS);
    cluster.stop_all().await;
    assert_clean(cluster.dir.path());
}
