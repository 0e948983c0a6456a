//! The task routes: status, list with filters and paging, cancel.

use serde_json::{Value, json};

use crate::helpers::{assert_error, small_model, spawn_app};

#[tokio::test]
async fn unknown_and_malformed_task_ids() {
    let app = spawn_app().await;
    let unknown = "123e4567-e89b-12d3-a456-426614174000";
    assert_error(app.get_task(unknown).await, 404, "NOT_FOUND").await;
    assert_error(app.get_task("not-a-uuid").await, 422, "VALIDATION_ERROR").await;
    assert_error(app.cancel_task(unknown).await, 404, "NOT_FOUND").await;
    assert_error(app.cancel_task("42").await, 422, "VALIDATION_ERROR").await;
    let events = app
        .client
        .get(app.at(&format!("/v1/upload/tasks/{unknown}/events")))
        .send()
        .await
        .unwrap();
    assert_error(events, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn the_list_filters_and_pages_newest_first() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for name in ["acme/one", "acme/two", "acme/three"] {
        app.hub.add_repo(small_model(name));
        ids.push(app.upload_hf(name).await);
    }
    let missing = app.post_hf(json!({"model_tag": "acme/not-there"})).await;
    assert_eq!(missing.status(), 404);
    for id in &ids {
        assert_eq!(app.wait_task(id).await["task_status"], "DONE");
    }

    let all: Value = app.list_tasks("").await.json().await.unwrap();
    assert_eq!(all["total"], 3);
    let listed: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);

    let page: Value = app
        .list_tasks("?limit=1&offset=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 3);
    assert_eq!(page["items"][0]["id"], ids[1].as_str());

    let done: Value = app
        .list_tasks("?status=DONE&source=HUGGINGFACE")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["total"], 3);
    let failed: Value = app.list_tasks("?status=FAILED").await.json().await.unwrap();
    assert_eq!(failed["total"], 0);
    assert!(failed["items"].as_array().unwrap().is_empty());

    let metrics = app
        .client
        .get(app.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"vectorize_tasks{source="HUGGINGFACE",status="DONE"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"vectorize_tasks{source="HUGGINGFACE",status="RUNNING"} 0"#),
        "{metrics}"
    );

    for bad in [
        "?limit=0",
        "?limit=1001",
        "?status=BOGUS",
        "?source=ftp",
        "?offset=-1",
    ] {
        assert_error(app.list_tasks(bad).await, 422, "VALIDATION_ERROR").await;
    }
}
