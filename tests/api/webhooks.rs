//! Webhooks: a receiver in the test process gets one signed notice per
//! finished task — the task and model objects as the API answers them —
//! again with the same `delivery_id` while it fails, after a restart while
//! it was down, and from exactly one of several nodes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use vectorize::store::{DbOptions, Store};
use vectorize::{App, ConfigArgs};

use crate::helpers::{Options, TestApp, small_model, spawn_app_with};
use crate::support::fake_hub::FakeHub;
use crate::support::process::ServiceProcess;
use crate::support::webhook_receiver::{Notice, WebhookReceiver, unused_addr};

const SECRET: &str = "webhook-s3cret";

fn webhook_config(receiver: &WebhookReceiver) -> ConfigArgs {
    ConfigArgs {
        webhook_url: Some(receiver.url().into()),
        webhook_secret: Some(SECRET.into()),
        ..Default::default()
    }
}

async fn spawn_notifying(receiver: &WebhookReceiver, hub: FakeHub) -> TestApp {
    spawn_app_with(Options {
        hub: Some(hub),
        config: webhook_config(receiver),
        ..Default::default()
    })
    .await
}

/// The receiver's check: HMAC-SHA256 of the raw body under the secret.
fn assert_signed(notice: &Notice) {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&notice.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(notice.signature.as_deref(), Some(expected.as_str()));
}

/// DONE, FAILED and CANCELLED are each announced once, signed, with the
/// task (and for DONE the model) exactly as the API answers them.
#[tokio::test]
async fn each_finished_task_is_announced_once_signed_with_its_task_and_model() {
    let receiver = WebhookReceiver::start().await;
    let hub = FakeHub::start().await;
    for repo in ["acme/done", "acme/failed", "acme/cancelled"] {
        hub.add_repo(small_model(repo));
    }
    let app = spawn_notifying(&receiver, hub).await;

    let done = app.upload_hf("acme/done").await;
    app.wait_task(&done).await;
    // Every weights body arrives spoiled: FAILED once the retries run out.
    app.hub.corrupt_every_download();
    let failed = app.upload_hf("acme/failed").await;
    assert_eq!(app.wait_task(&failed).await["task_status"], "FAILED");
    app.hub.clear_faults();
    app.hub.slow_downloads(1024);
    let cancelled = app.upload_hf("acme/cancelled").await;
    assert_eq!(app.cancel_task(&cancelled).await.status(), 200);
    let notices = receiver.wait_for(3, Duration::from_secs(30)).await;
    let mut events: Vec<(String, String)> = Vec::new();
    for notice in &notices {
        assert_signed(notice);
        assert_eq!(notice.content_type.as_deref(), Some("application/json"));
        let body = notice.json();
        assert_eq!(notice.delivery.as_deref(), body["delivery_id"].as_str());
        assert_eq!(notice.event.as_deref(), body["event"].as_str());
        assert!(body["sent_at"].as_str().is_some_and(|t| t.ends_with('Z')));
        let id = body["task"]["id"].as_str().unwrap().to_string();
        assert_eq!(
            body["task"],
            app.task(&id).await,
            "the task as the API answers it"
        );
        if id == done {
            let model_id = body["task"]["model_id"].as_str().unwrap();
            let model: Value = app.get_model(model_id).await.json().await.unwrap();
            assert_eq!(body["model"], model);
        } else {
            assert_eq!(body["model"], Value::Null);
        }
        events.push((id, body["event"].as_str().unwrap().to_string()));
    }
    events.sort();
    let mut expected = vec![
        (done, "task.done".to_string()),
        (failed, "task.failed".to_string()),
        (cancelled, "task.cancelled".to_string()),
    ];
    expected.sort();
    assert_eq!(events, expected);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("vectorize_webhook_deliveries_total 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vectorize_webhook_pending 0\n"),
        "{metrics}"
    );
}

/// Two failed attempts (a 500 and a 503), then a 200: three requests with
/// one `delivery_id` and the same task, each signed; then nothing more.
#[tokio::test]
async fn a_failing_receiver_gets_the_same_notice_until_it_answers_2xx() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_next(&[500, 503]);
    let hub = FakeHub::start().await;
    hub.add_repo(small_model("acme/retried"));
    let app = spawn_notifying(&receiver, hub).await;
    let id = app.upload_hf("acme/retried").await;
    app.wait_task(&id).await;
    let notices = receiver.wait_for(3, Duration::from_secs(30)).await;
    let answered: Vec<u16> = notices.iter().map(|n| n.answered).collect();
    assert_eq!(answered, [500, 503, 200]);
    for notice in &notices {
        assert_signed(notice);
        assert_eq!(notice.delivery, notices[0].delivery);
        assert_eq!(notice.json()["task"], notices[0].json()["task"]);
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("vectorize_webhook_failures_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vectorize_webhook_deliveries_total 1\n"),
        "{metrics}"
    );
    // Delivered: it is not sent again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.notices().len(), 3);
}

/// A receiver that hangs holds up nothing: while the first notice waits
/// for its answer, the next upload runs to DONE and its notice is sent
/// too; once the receiver answers, both are delivered.
#[tokio::test]
async fn a_hanging_receiver_holds_up_neither_uploads_nor_other_notices() {
    let receiver = WebhookReceiver::start().await;
    receiver.hold();
    let hub = FakeHub::start().await;
    hub.add_repo(small_model("acme/first"));
    hub.add_repo(small_model("acme/second"));
    let app = spawn_notifying(&receiver, hub).await;
    let first = app.upload_hf("acme/first").await;
    app.wait_task(&first).await;
    receiver.wait_held(1, Duration::from_secs(30)).await;
    let second = app.upload_hf("acme/second").await;
    assert_eq!(app.wait_task(&second).await["task_status"], "DONE");
    receiver.wait_held(2, Duration::from_secs(30)).await;
    receiver.release();
    let notices = receiver.wait_for(2, Duration::from_secs(30)).await;
    // At least once: an attempt held past its 10 s timeout is sent again.
    let announced: BTreeSet<String> = (notices.iter())
        .map(|n| n.json()["task"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(announced, BTreeSet::from([first, second]));
}

/// The receiver is down while a task finishes and the service restarts:
/// the notice waits in the database and arrives once the receiver is back.
#[tokio::test]
async fn a_notice_waits_out_a_restart_while_the_receiver_is_down() {
    let data = tempfile::tempdir().unwrap();
    let mut receiver = WebhookReceiver::down(unused_addr());
    let hub = FakeHub::start().await;
    hub.add_repo(small_model("acme/patient"));
    let options = |hub: FakeHub| Options {
        hub: Some(hub),
        data_dir: Some(data.path().to_path_buf()),
        config: webhook_config(&receiver),
        ..Default::default()
    };
    let mut app = spawn_app_with(options(hub.clone())).await;
    let id = app.upload_hf("acme/patient").await;
    app.wait_task(&id).await;
    // At least one attempt has failed against the closed port.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !app
        .metrics()
        .await
        .contains("vectorize_webhook_failures_total 1")
    {
        assert!(Instant::now() < deadline, "no attempt was made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;

    let app = spawn_app_with(options(hub)).await;
    receiver.listen().await;
    let back = Instant::now();
    let notices = receiver.wait_for(1, Duration::from_secs(60)).await;
    eprintln!(
        "webhook latency after the receiver came back: {:?}",
        notices[0].at - back
    );
    assert_eq!(notices[0].json()["task"]["id"], json!(id));
    assert_eq!(notices[0].json()["event"], "task.done");
    assert_signed(&notices[0]);
    drop(app);
}

/// Two nodes on one database, both with the webhook: each finished task is
/// announced by exactly one of them.
#[tokio::test]
async fn with_two_nodes_each_notice_is_sent_once() {
    let receiver = WebhookReceiver::start().await;
    let hub = FakeHub::start().await;
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(&DbOptions::embedded("mem://")).await.unwrap();
    let mut nodes = Vec::new();
    for node in ["webhook-a", "webhook-b"] {
        let config = ConfigArgs {
            addr: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(data.path().to_path_buf()),
            node_id: Some(node.into()),
            hf_endpoint: Some(hub.url()),
            retry_base_ms: Some(20),
            ..webhook_config(&receiver)
        };
        let app = App::start_on(config.resolve().unwrap(), store.clone(), false)
            .await
            .unwrap();
        nodes.push(app);
    }
    const TASKS: usize = 12;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..TASKS {
        hub.add_repo(small_model(&format!("acme/pair-{i}")));
        let node = &nodes[i % 2];
        let answer = client
            .post(format!("{}/v1/upload/huggingface", node.url()))
            .json(&json!({"model_tag": format!("acme/pair-{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
        let task: Value = answer.json().await.unwrap();
        ids.push(task["id"].as_str().unwrap().to_string());
    }
    receiver.wait_for(TASKS, Duration::from_secs(60)).await;
    // Two nodes that both claimed a notice would both send it at once:
    // give such a second copy time to arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut announced: Vec<String> = (receiver.notices().iter())
        .map(|n| n.json()["task"]["id"].as_str().unwrap().to_string())
        .collect();
    announced.sort();
    ids.sort();
    assert_eq!(announced, ids, "one notice per task, none twice");
    for node in nodes {
        node.shutdown().await;
    }
}

/// The URL (which may carry a token) and the secret stay out of the log,
/// at debug level too, through failed attempts, a delivery, and a refused
/// start.
#[tokio::test]
async fn the_webhook_url_and_secret_never_reach_the_log() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_next(&[500]);
    let hub = FakeHub::start().await;
    hub.add_repo(small_model("acme/quiet"));
    let data = tempfile::tempdir().unwrap();
    let url = format!("{}?token=t0ken-in-the-url", receiver.url());
    let env = [
        ("RUST_LOG", "debug"),
        ("VECTORIZE_WEBHOOK_URL", url.as_str()),
        ("VECTORIZE_WEBHOOK_SECRET", SECRET),
    ];
    let service = ServiceProcess::start(data.path(), &hub, &env).await;
    let id = service.upload_hf("acme/quiet").await;
    service.wait_task(&id).await;
    let notices = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(notices[1].answered, 200);
    let log = service.output();
    assert!(log.contains("webhook attempt failed"), "{log}");
    for secret in ["t0ken-in-the-url", SECRET] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    let refused = ServiceProcess::start_refused(
        data.path(),
        &hub,
        &[(
            "VECTORIZE_WEBHOOK_URL",
            "ftp://hooks.example/t0ken-in-the-url",
        )],
    )
    .await;
    assert!(refused.contains("VECTORIZE_WEBHOOK_URL"), "{refused}");
    assert!(!refused.contains("t0ken-in-the-url"), "{refused}");
}
