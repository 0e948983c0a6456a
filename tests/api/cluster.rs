//! Several nodes as users run them: `vectorize serve` processes on one
//! SurrealDB server (this repo's `examples/surreal_server`) and one data
//! dir, signed in as root, each with its own node id. Nodes die with
//! SIGKILL, freeze with SIGSTOP past their lease and wake with SIGCONT;
//! the tests check the 409s, takeovers with `Range` resumes, fencing,
//! events and cancel across nodes, and a long run of short tasks under
//! that chaos. The test opens the service's store on the same server for
//! what the HTTP API cannot show.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use vectorize::store::{Lease, ModelRecord, Source, StoreError};

use crate::crash::{
    SLOW, assert_clean, assert_installed, assert_resumed_from, big_model, journal_ranges,
    partial_weights,
};
use crate::helpers::{is_finished, small_model};
use crate::support::fake_hub::{FakeHub, tiny_repo};
use crate::support::hygiene::task_staging;
use crate::support::process::ServiceProcess;
use crate::support::surreal_server::SurrealServer;

/// Lease of the test nodes: short, so a takeover comes quickly.
const LEASE_MS: u64 = 1_000;
/// Lease in the chaos test: long enough that renewals of debug builds on
/// a machine busy with the other tests do not miss it.
const CHAOS_LEASE_MS: u64 = 5_000;

/// The cluster tests run one at a time: each starts a SurrealDB server and
/// three debug builds, and on two cores several at once starve each
/// other's lease renewals.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Nodes `node-0`, `node-1`, … on one SurrealDB server and one data dir.
struct Cluster {
    /// `None` while a node is down.
    nodes: Vec<Option<ServiceProcess>>,
    max_concurrent_tasks: usize,
    lease_ms: u64,
    server: SurrealServer,
    hub: FakeHub,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(nodes: usize, max_concurrent_tasks: usize) -> Self {
        Self::start_with_lease(nodes, max_concurrent_tasks, LEASE_MS).await
    }

    async fn start_with_lease(nodes: usize, max_concurrent_tasks: usize, lease_ms: u64) -> Self {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            max_concurrent_tasks,
            lease_ms,
            server: SurrealServer::start().await,
            hub: FakeHub::start().await,
            dir: tempfile::tempdir().unwrap(),
        };
        for index in 0..nodes {
            cluster.nodes.push(None);
            cluster.start_node(index).await;
        }
        cluster
    }

    /// Starts node `index` (again), under its old id.
    async fn start_node(&mut self, index: usize) {
        let mut env = self.server.node_env();
        env.extend([
            ("VECTORIZE_NODE_ID", format!("node-{index}")),
            ("VECTORIZE_LEASE_MS", self.lease_ms.to_string()),
            // Attempts and lost leases are logged at info: the failure
            // message of a test shows them.
            ("RUST_LOG", "info".to_string()),
            (
                "VECTORIZE_MAX_CONCURRENT_TASKS",
                self.max_concurrent_tasks.to_string(),
            ),
        ]);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let node = ServiceProcess::start(self.dir.path(), &self.hub, &env).await;
        self.nodes[index] = Some(node);
    }

    /// Node `index`, which must be up.
    fn node(&self, index: usize) -> &ServiceProcess {
        self.nodes[index].as_ref().expect("the node is up")
    }

    /// The index of the node named `name` (`node-N`).
    fn index_of(name: &str) -> usize {
        name.trim_start_matches("node-").parse().unwrap()
    }

    /// The last lines of every running node's log, for failure messages.
    fn logs(&self) -> String {
        let mut logs = String::new();
        for (index, node) in self.nodes.iter().enumerate() {
            if let Some(node) = node {
                let output = node.output();
                let lines: Vec<&str> = output.lines().rev().take(30).collect();
                logs.push_str(&format!("--- node-{index}\n"));
                lines
                    .iter()
                    .rev()
                    .for_each(|l| logs.push_str(&format!("{l}\n")));
            }
        }
        logs
    }

    fn kill9(&mut self, index: usize) {
        if let Some(mut node) = self.nodes[index].take() {
            node.kill9();
        }
    }

    /// Stops every node that is up with SIGTERM.
    async fn stop_all(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            node.sigterm().await;
        }
    }

    fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// 50 identical uploads spread over three nodes at once: the database's
/// unique index lets exactly one through; the rest learn why.
#[tokio::test]
async fn fifty_identical_uploads_over_three_nodes_make_exactly_one_task() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, 4).await;
    cluster.hub.add_repo(big_model("acme/once"));
    cluster.hub.slow_downloads(SLOW);
    let posts = (0..50).map(|i| {
        let node = cluster.node(i % 3);
        async move {
            let response = node.post_hf("acme/once").await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }
    });
    let answers = futures_util::future::join_all(posts).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(body["code"], "UPLOAD_IN_PROGRESS", "{body}");
    }
    let tasks = cluster.node(2).get_json("/v1/upload/tasks").await;
    assert_eq!(tasks["total"], 1, "{tasks}");
}

/// A node is killed in the middle of a throttled download: another node
/// takes the task over once the lease lapses, resumes the partial file
/// with a `Range` request, and installs byte-identical files. The dead
/// node's fence is gone: a completion under its lease is refused.
#[tokio::test]
async fn a_killed_nodes_download_is_taken_over_and_resumed_with_range() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, 2).await;
    let repo = big_model("acme/takeover");
    cluster.hub.add_repo(repo.clone());
    cluster.hub.slow_downloads(SLOW);
    let id = cluster.node(0).upload_hf(&repo.id).await;
    let running = cluster
        .node(1)
        .wait_for(&id, Duration::from_secs(15), |t| {
            t["task_status"] == "RUNNING" && t["progress"]["bytes_done"].as_u64() > Some(200_000)
        })
        .await;
    let holder = running["node"].as_str().unwrap().to_string();
    let index = Cluster::index_of(&holder);
    let store = cluster.server.store().await;
    let stale = store.get_task(id.parse().unwrap()).await.unwrap().unwrap();

    let killed = Instant::now();
    cluster.kill9(index);
    let partial = partial_weights(cluster.data_dir(), &id, &repo);
    let held = journal_ranges(&partial);
    cluster.hub.clear_faults();
    cluster.hub.clear_log();

    let other = cluster.node((index + 1) % 3);
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
        "the attempt cut by the kill counts: {done}"
    );
    assert!(done["node"].is_null(), "{done}");
    assert_installed(cluster.data_dir(), &repo);
    assert_resumed_from(&cluster.hub, &repo, &held);

    // The dead node's lease is fenced off: a write under it matches nothing.
    let lease = Lease {
        task_id: stale.task_id,
        node: holder,
        epoch: stale.lease_epoch,
    };
    assert!(!store.holds(&lease).await.unwrap());
    let model = small_model("acme/never");
    let record = ModelRecord::new(
        Source::Huggingface,
        format!("{}@main", model.id),
        model.id.clone(),
        None,
        "models/nowhere".into(),
        Vec::new(),
    );
    let refused = store
        .complete_task(&lease, Default::default(), &record)
        .await;
    assert!(matches!(refused, Err(StoreError::LeaseLost)), "{refused:?}");
    cluster.stop_all().await;
    assert_clean(cluster.data_dir());
}

/// A task runs on one node; another node's event stream follows it, and a
/// cancel sent to a third node stops the worker where it runs and removes
/// its partial files within a few seconds.
#[tokio::test]
async fn events_and_cancel_reach_the_node_that_runs_the_task() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, 2).await;
    let repo = big_model("acme/followed");
    cluster.hub.add_repo(repo.clone());
    cluster.hub.slow_downloads(SLOW / 3);
    let id = cluster.node(0).upload_hf(&repo.id).await;
    let running = cluster
        .node(0)
        .wait_for(&id, Duration::from_secs(15), |t| {
            t["task_status"] == "RUNNING" && t["progress"]["bytes_done"].as_u64() > Some(50_000)
        })
        .await;
    let holder = Cluster::index_of(running["node"].as_str().unwrap());
    let others: Vec<usize> = (0..3).filter(|i| *i != holder).collect();
    let (follower, canceller) = (cluster.node(others[0]), cluster.node(others[1]));

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
    while task_staging(cluster.data_dir(), &id).is_some()
        && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "cancel across nodes: files gone after {:?}",
        started.elapsed()
    );
    assert!(task_staging(cluster.data_dir(), &id).is_none());
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
    let task = cluster.node(holder).task(&id).await;
    assert_eq!(task["task_status"], "CANCELLED", "{task}");
    assert_eq!(cluster.node(0).list_models("").await["total"], 0);
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

/// 300 short tasks over three nodes while, every few seconds, a random
/// node is killed and started again, or frozen past its lease and woken
/// (so it wakes holding leases that others have taken over), leases 5 s. Bodies are
/// throttled so each task takes a few hundred milliseconds and the chaos
/// lands on running tasks. Every task ends DONE with one model each and
/// its files in place, no staging is left, and no task changes after it
/// was seen DONE: no write under a stale epoch was accepted.
#[tokio::test]
async fn three_hundred_tasks_survive_nodes_killed_frozen_and_restarted() {
    const TASKS: usize = 300;
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start_with_lease(3, 4, CHAOS_LEASE_MS).await;
    let repos: Vec<_> = (0..TASKS)
        .map(|i| tiny_repo(&format!("acme/chaos-{i}")))
        .collect();
    for repo in &repos {
        cluster.hub.add_repo(repo.clone());
    }
    cluster.hub.slow_downloads(1_000);
    let started = Instant::now();
    let ids: Vec<String> = futures_util::stream::iter(repos.iter().enumerate())
        .map(|(i, repo)| cluster.node(i % 3).upload_hf(&repo.id))
        .buffered(16)
        .collect()
        .await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), TASKS);
    eprintln!("chaos: {TASKS} submitted after {:?}", started.elapsed());

    let seed = rand::random::<u64>();
    eprintln!("chaos seed {seed}");
    let mut rng = Rng(seed | 1);
    let mut done_seen: HashMap<String, Value> = HashMap::new();
    let (mut kills, mut freezes) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut victim = rng.below(3);
    while done_seen.len() < TASKS {
        assert!(
            Instant::now() < deadline,
            "{} of {TASKS} tasks DONE after 180 s",
            done_seen.len()
        );
        // Never the same node twice running: a node that comes back takes
        // its lapsed tasks up first, and hitting it again at once would cut
        // the same tasks again (four cuts end a task INTERRUPTED, as they
        // should, which is not what this test is after).
        victim = (victim + 1 + rng.below(2)) % 3;
        if rng.below(2) == 0 {
            cluster.kill9(victim);
            cluster.start_node(victim).await;
            kills += 1;
        } else {
            let node = cluster.node(victim);
            node.signal("STOP");
            tokio::time::sleep(Duration::from_millis(CHAOS_LEASE_MS + 1_000)).await;
            node.signal("CONT");
            freezes += 1;
        }
        // Room between blows: a task hit in four attempts running fails
        // INTERRUPTED, as it should, which is not what this test is after.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let observer = cluster.node((victim + 1) % 3);
        let tasks = observer.get_json("/v1/upload/tasks?limit=1000").await;
        for task in tasks["items"].as_array().unwrap() {
            assert!(
                matches!(
                    task["task_status"].as_str(),
                    Some("PENDING" | "RUNNING" | "DONE")
                ),
                "{task}\n{}",
                cluster.logs()
            );
            let id = task["id"].as_str().unwrap();
            if task["task_status"] == "DONE" && !done_seen.contains_key(id) {
                done_seen.insert(id.to_string(), task.clone());
            }
        }
    }
    eprintln!(
        "chaos: {kills} kills, {freezes} freezes, all {TASKS} tasks DONE after {:?}",
        started.elapsed()
    );
    assert!(kills + freezes >= 3, "the chaos hardly started");

    // Let every frozen-and-woken worker find out it lost its lease.
    tokio::time::sleep(Duration::from_millis(CHAOS_LEASE_MS * 2)).await;
    for (id, first) in &done_seen {
        let now = cluster.node(0).task(id).await;
        assert_eq!(&now, first, "task {id} changed after it was DONE");
    }
    let models = cluster.node(1).list_models("?limit=1000").await;
    assert_eq!(models["total"], TASKS as u64);
    let tags: HashSet<&str> = models["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model_tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags.len(), TASKS);
    for repo in &repos {
        assert_installed(cluster.data_dir(), repo);
    }
    cluster.stop_all().await;
    assert_clean(cluster.data_dir());
}

/// A xorshift generator: a failing run prints its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n) as usize
    }
}

/// The database goes away under a running node: `/health` answers 503
/// naming the node while it is gone, and once the server is back the node
/// reconnects on its own and takes uploads again.
#[tokio::test]
async fn a_node_reconnects_after_the_database_restarts() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = SurrealServer::start_on_disk(dir.path()).await;
    let hub = FakeHub::start().await;
    hub.add_repo(tiny_repo("acme/before"));
    hub.add_repo(tiny_repo("acme/after"));
    let mut env = server.node_env();
    env.push(("VECTORIZE_NODE_ID", "node-lonely".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let node = ServiceProcess::start(&dir.path().join("data"), &hub, &env).await;
    let before = node.upload_hf("acme/before").await;
    assert_eq!(node.wait_task(&before).await["task_status"], "DONE");

    server.kill();
    let health = wait_health(&node, 503).await;
    assert_eq!(health["node"], "node-lonely", "{health}");
    assert_eq!(health["reason"], "the database does not answer", "{health}");

    server.restart().await;
    wait_health(&node, 200).await;
    let after = node.upload_hf("acme/after").await;
    assert_eq!(node.wait_task(&after).await["task_status"], "DONE");
    assert_eq!(node.list_models("").await["total"], 2);
}

/// Polls `/health` until it answers `status`, within 15 s; answers the body.
async fn wait_health(node: &ServiceProcess, status: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(response) = node.client.get(node.at("/health")).send().await
            && response.status() == status
        {
            return response.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "/health never answered {status}:\n{}",
            node.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A namespace user (not root) runs a node; a wrong password stops the
/// node at startup with a message that names the user, not the password.
#[tokio::test]
async fn a_namespace_user_signs_in_and_a_wrong_password_is_refused() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let server = SurrealServer::start().await;
    let db = surrealdb::engine::any::connect(server.endpoint())
        .await
        .unwrap();
    db.signin(surrealdb::opt::auth::Root {
        username: "root".into(),
        password: "root".into(),
    })
    .await
    .unwrap();
    db.query(
        "DEFINE NAMESPACE vectorize; USE NS vectorize;
         DEFINE USER app ON NAMESPACE PASSWORD 'app-secret-1' ROLES EDITOR;",
    )
    .await
    .unwrap()
    .check()
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hub = FakeHub::start().await;
    hub.add_repo(tiny_repo("acme/by-app"));
    let user = |pass| {
        vec![
            ("VECTORIZE_DB", server.endpoint()),
            ("VECTORIZE_DB_USER", "app".to_string()),
            ("VECTORIZE_DB_PASS", pass),
        ]
    };

    let env = user("wrong-secret-2".into());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let log = ServiceProcess::start_refused(dir.path(), &hub, &env).await;
    assert!(log.contains("app"), "{log}");
    assert!(
        !log.contains("wrong-secret-2"),
        "the password leaked: {log}"
    );

    let env = user("app-secret-1".into());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let node = ServiceProcess::start(dir.path(), &hub, &env).await;
    let id = node.upload_hf("acme/by-app").await;
    assert_eq!(node.wait_task(&id).await["task_status"], "DONE");
}
