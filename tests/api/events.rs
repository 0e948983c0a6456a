//! `GET /v1/upload/events`, the one stream of every task's changes: two
//! tasks followed on one connection to the end, the tasks in flight sent
//! first, the API key asked for, and a task that another node runs
//! followed from a node that does not run it (two real nodes on one
//! SurrealDB server).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;

use crate::crash::{SLOW, big_model};
use crate::helpers::{Options, assert_error, is_finished, small_model, spawn_app, spawn_app_with};
use crate::support::fake_hub::FakeHub;
use crate::support::process::ServiceProcess;
use crate::support::surreal_server::SurrealServer;

/// The `task` events of one open stream, read as they come.
struct TaskEvents {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl TaskEvents {
    /// Opens the stream at `url`, asserting a 200 `text/event-stream`.
    async fn open(client: &reqwest::Client, url: &str) -> TaskEvents {
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        TaskEvents {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next `task` event, or `None` when `deadline` passes first.
    async fn next(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut event = "message";
                let mut data = None;
                for line in frame.lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event = name;
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data = Some(value.to_string());
                    }
                }
                match data {
                    Some(data) if event == "task" => {
                        return Some(serde_json::from_str(&data).unwrap());
                    }
                    Some(_) => panic!("an event that is not a task: {frame}"),
                    // A comment line that keeps the connection open.
                    None => continue,
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.body.next()).await {
                Ok(Some(chunk)) => self
                    .buffer
                    .push_str(&String::from_utf8_lossy(&chunk.unwrap())),
                Ok(None) => panic!("the stream ended"),
                Err(_) => return None,
            }
        }
    }

    /// Every event until `done` holds for what was seen, by task id in
    /// order of arrival; fails after `within`.
    async fn until(
        &mut self,
        within: Duration,
        done: impl Fn(&HashMap<String, Vec<Value>>) -> bool,
    ) -> HashMap<String, Vec<Value>> {
        let deadline = Instant::now() + within;
        let mut seen: HashMap<String, Vec<Value>> = HashMap::new();
        while !done(&seen) {
            let Some(task) = self.next(deadline).await else {
                panic!("the events did not get there in {within:?}: {seen:#?}");
            };
            let id = task["id"].as_str().unwrap().to_string();
            seen.entry(id).or_default().push(task);
        }
        seen
    }
}

/// Whether every task in `ids` was seen finished.
fn all_finished(seen: &HashMap<String, Vec<Value>>, ids: &[&str]) -> bool {
    ids.iter().all(|id| {
        seen.get(*id)
            .and_then(|events| events.last())
            .is_some_and(is_finished)
    })
}

/// A task's events never go back from a terminal state, nor in time.
fn assert_in_order(events: &[Value]) {
    for pair in events.windows(2) {
        assert!(
            !is_finished(&pair[0]) || is_finished(&pair[1]),
            "a finished task ran again: {events:#?}"
        );
        let times: Vec<chrono::DateTime<chrono::Utc>> = pair
            .iter()
            .map(|t| t["updated_at"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(times[0] <= times[1], "went back in time: {events:#?}");
    }
}

#[tokio::test]
async fn two_tasks_changes_arrive_on_one_connection() {
    let app = spawn_app().await;
    app.hub.add_repo(small_model("acme/first"));
    app.hub.add_repo(small_model("acme/second"));
    let mut events = TaskEvents::open(&app.client, &app.at("/v1/upload/events")).await;
    let first = app.upload_hf("acme/first").await;
    let second = app.upload_hf("acme/second").await;
    let ids = [first.as_str(), second.as_str()];
    let seen = events
        .until(Duration::from_secs(30), |seen| all_finished(seen, &ids))
        .await;
    for id in ids {
        let task_events = &seen[id];
        assert_in_order(task_events);
        let statuses: Vec<&str> = task_events
            .iter()
            .map(|t| t["task_status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses.first(), Some(&"PENDING"), "{statuses:?}");
        assert!(statuses.contains(&"RUNNING"), "{statuses:?}");
        assert_eq!(statuses.last(), Some(&"DONE"), "{statuses:?}");
        // The event carries the task exactly as its own route answers it.
        assert_eq!(task_events.last().unwrap(), &app.task(id).await);
    }
}

#[tokio::test]
async fn the_stream_opens_with_the_tasks_in_flight() {
    let hub = FakeHub::start().await;
    let repo = big_model("acme/in-flight");
    hub.add_repo(repo.clone());
    hub.add_repo(small_model("acme/done-before"));
    hub.slow_downloads(SLOW);
    let app = spawn_app_with(Options {
        hub: Some(hub),
        ..Default::default()
    })
    .await;
    let done_before = app.upload_hf("acme/done-before").await;
    let running = app.upload_hf(&repo.id).await;
    app.wait_task(&done_before).await;
    let now = app
        .wait_for(&running, Duration::from_secs(15), |t| {
            t["task_status"] == "RUNNING" && t["progress"]["bytes_done"].as_u64() > Some(0)
        })
        .await;

    let mut events = TaskEvents::open(&app.client, &app.at("/v1/upload/events")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = events.next(deadline).await.expect("the task in flight");
    assert_eq!(first["id"], now["id"], "{first}");
    assert_eq!(first["task_status"], "RUNNING", "{first}");
    // Progress moves on the same connection; the finished task is not sent again.
    let moved = events
        .until(Duration::from_secs(15), |seen| {
            seen.get(&running).is_some_and(|e| {
                e.iter().any(|t| {
                    t["progress"]["bytes_done"].as_u64() > first["progress"]["bytes_done"].as_u64()
                })
            })
        })
        .await;
    assert!(!moved.contains_key(&done_before), "{moved:#?}");
    assert_eq!(app.cancel_task(&running).await.status(), 200);
    let seen = events
        .until(Duration::from_secs(15), |seen| {
            all_finished(seen, &[&running])
        })
        .await;
    assert_eq!(seen[&running].last().unwrap()["task_status"], "CANCELLED");
}

#[tokio::test]
async fn with_a_key_the_stream_asks_for_it() {
    let app = spawn_app_with(Options {
        api_key: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let refused = app.client.get(app.at("/v1/upload/events")).send().await;
    assert_error(refused.unwrap(), 401, "UNAUTHORIZED").await;
    let wrong = app
        .client
        .get(app.at("/v1/upload/events"))
        .bearer_auth("wrong")
        .send()
        .await;
    assert_error(wrong.unwrap(), 401, "UNAUTHORIZED").await;
    let keyed = reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                "Bearer s3cret".parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();
    TaskEvents::open(&keyed, &app.at("/v1/upload/events")).await;
}

/// Two nodes on one SurrealDB server, a stream open on each: the node
/// that does not run the task sees its progress move and its end.
#[tokio::test]
async fn the_stream_follows_a_task_that_another_node_runs() {
    let server = SurrealServer::start().await;
    let hub = FakeHub::start().await;
    let repo = big_model("acme/elsewhere");
    hub.add_repo(repo.clone());
    hub.slow_downloads(SLOW);
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for index in 0..2 {
        let mut env = server.node_env();
        env.push(("VECTORIZE_NODE_ID", format!("node-{index}")));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        nodes.push(ServiceProcess::start(dir.path(), &hub, &env).await);
    }
    let mut streams = Vec::new();
    for node in &nodes {
        streams.push(TaskEvents::open(&node.client, &node.at("/v1/upload/events")).await);
    }
    let id = nodes[0].upload_hf(&repo.id).await;
    let running = nodes[0]
        .wait_for(&id, Duration::from_secs(15), |t| {
            t["task_status"] == "RUNNING"
        })
        .await;
    let holder = running["node"].as_str().unwrap();
    let other = if holder == "node-0" { 1 } else { 0 };
    let seen = streams[other]
        .until(Duration::from_secs(60), |seen| all_finished(seen, &[&id]))
        .await;
    let task_events = &seen[&id];
    assert_in_order(task_events);
    assert_eq!(task_events.last().unwrap()["task_status"], "DONE");
    let progress: std::collections::HashSet<u64> = task_events
        .iter()
        .filter(|t| t["task_status"] == "RUNNING")
        .filter_map(|t| t["progress"]["bytes_done"].as_u64())
        .collect();
    assert!(
        progress.len() > 1,
        "node-{other} saw no progress of the task node {holder} ran: {task_events:#?}"
    );
    assert!(
        task_events.iter().any(|t| t["node"] == holder),
        "{task_events:#?}"
    );
}
