//! Task retention: `DELETE /v1/upload/tasks` removes finished tasks by
//! status, source and age and never a task in flight or a model; tasks
//! past `VECTORIZE_TASK_RETENTION_DAYS` are pruned on their own.

use std::time::{Duration, Instant};

use vectorize::ConfigArgs;

use crate::helpers::{Options, assert_error, small_model, spawn_app_with};
use crate::support::fake_hub::FakeHub;

#[tokio::test]
async fn deleting_finished_tasks_keeps_their_models_and_refuses_tasks_in_flight() {
    let hub = FakeHub::start().await;
    for repo in ["acme/kept", "acme/spoiled", "acme/slow"] {
        hub.add_repo(small_model(repo));
    }
    let app = spawn_app_with(Options {
        hub: Some(hub),
        ..Default::default()
    })
    .await;
    let done = app.upload_hf("acme/kept").await;
    let model_id = app.wait_task(&done).await["model_id"].clone();
    app.hub.corrupt_every_download();
    let failed = app.upload_hf("acme/spoiled").await;
    assert_eq!(app.wait_task(&failed).await["task_status"], "FAILED");
    app.hub.clear_faults();
    app.hub.slow_downloads(1024);
    let running = app.upload_hf("acme/slow").await;

    let refusals = [
        ("?status=RUNNING", "cancel a task in flight"),
        ("?status=DONE,PENDING", "DONE, FAILED and CANCELLED"),
        ("?status=done", "in capitals"),
        ("?status=", "DONE, FAILED and CANCELLED"),
        ("?before=yesterday", "RFC 3339"),
    ];
    for (asked, hint) in refusals {
        let refused = app.delete_tasks(asked).await;
        let message = assert_error(refused, 422, "VALIDATION_ERROR").await;
        assert!(message.contains(hint), "{asked}: {message}");
    }
    let deleted = |n: u64| serde_json::json!({"deleted": n});
    let answer = app.delete_tasks("?before=2020-01-01T00:00:00Z").await;
    assert_eq!(
        answer.json::<serde_json::Value>().await.unwrap(),
        deleted(0)
    );
    let answer = app.delete_tasks("?source=GITHUB").await;
    assert_eq!(
        answer.json::<serde_json::Value>().await.unwrap(),
        deleted(0)
    );
    let answer = app
        .delete_tasks("?status=FAILED,CANCELLED&source=HUGGINGFACE")
        .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.json::<serde_json::Value>().await.unwrap(),
        deleted(1)
    );
    assert_eq!(app.get_task(&failed).await.status(), 404);
    assert_eq!(app.get_task(&done).await.status(), 200);
    let answer = app.delete_tasks("").await;
    assert_eq!(
        answer.json::<serde_json::Value>().await.unwrap(),
        deleted(1)
    );
    assert_eq!(app.get_task(&done).await.status(), 404);
    // The model stays; the task in flight stays and runs on.
    let model = app.get_model(model_id.as_str().unwrap()).await;
    assert_eq!(model.status(), 200);
    let in_flight = app.task(&running).await;
    assert!(
        ["PENDING", "RUNNING"].contains(&in_flight["task_status"].as_str().unwrap()),
        "{in_flight}"
    );
    let listed = app
        .list_tasks("")
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(listed["total"], 1, "{listed}");
}

/// With a retention of two seconds, a finished task disappears on its own
/// and its model stays.
#[tokio::test]
async fn finished_tasks_past_their_retention_are_pruned() {
    let hub = FakeHub::start().await;
    hub.add_repo(small_model("acme/fleeting"));
    let app = spawn_app_with(Options {
        hub: Some(hub),
        config: ConfigArgs {
            task_retention_days: Some(2.0 / 86_400.0),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let id = app.upload_hf("acme/fleeting").await;
    let model_id = app.wait_task(&id).await["model_id"].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.get_task(&id).await.status() != 404 {
        assert!(Instant::now() < deadline, "the task was never pruned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.get_model(model_id.as_str().unwrap()).await.status(),
        200
    );
}
