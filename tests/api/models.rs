//! The model routes: list, get, delete (and what delete leaves on disk).

use serde_json::json;

use crate::helpers::{assert_error, small_model, spawn_app};

#[tokio::test]
async fn models_are_listed_fetched_and_deleted_with_their_files() {
    let app = spawn_app().await;
    let repo = small_model("acme/keep");
    app.hub.add_repo(repo.clone());
    let first = app.upload_hf("acme/keep").await;
    let first = app.wait_task(&first).await;
    // A second revision name for the same commit shares the snapshot.
    let mut with_tag = repo.clone();
    with_tag.revisions.push("v1".into());
    app.hub.add_repo(with_tag);
    let response = app
        .post_hf(json!({"model_tag": "acme/keep", "revision": "v1"}))
        .await;
    assert_eq!(response.status(), 201);
    let second: serde_json::Value = response.json().await.unwrap();
    let second = app.wait_task(second["id"].as_str().unwrap()).await;
    assert_eq!(second["task_status"], "DONE", "{second}");

    let models = app.list_models("").await;
    assert_eq!(models["total"], 2);
    let hf = app.list_models("?source=HUGGINGFACE&limit=1").await;
    assert_eq!(hf["total"], 2);
    assert_eq!(hf["items"].as_array().unwrap().len(), 1);
    assert_eq!(app.list_models("?source=LOCAL").await["total"], 0);
    assert_error(
        app.client
            .get(app.at("/v1/models?limit=0"))
            .send()
            .await
            .unwrap(),
        422,
        "VALIDATION_ERROR",
    )
    .await;

    let repo_dir = app.hf_cache().join("models--acme--keep");
    let snapshot = repo_dir.join("snapshots").join(&repo.commit);
    let first_model = first["model_id"].as_str().unwrap();
    assert_eq!(app.delete_model(first_model).await.status(), 204);
    assert_error(app.get_model(first_model).await, 404, "NOT_FOUND").await;
    assert!(
        snapshot.join("model.safetensors").exists(),
        "the shared snapshot must stay"
    );
    assert!(!repo_dir.join("refs/main").exists());
    assert!(repo_dir.join("refs/v1").exists());

    assert_eq!(
        app.delete_model(second["model_id"].as_str().unwrap())
            .await
            .status(),
        204
    );
    assert!(
        !repo_dir.exists(),
        "the last model of a repo takes its blobs with it"
    );
    assert_eq!(app.list_models("").await["total"], 0);
    assert_error(app.delete_model(first_model).await, 404, "NOT_FOUND").await;
    assert_error(app.get_model("nope").await, 422, "VALIDATION_ERROR").await;
}
