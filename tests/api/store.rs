//! The store on a real embedded SurrealDB: the unique model index is
//! reported as a duplicate naming the index, which the API answers as 409.

use chrono::Utc;
use uuid::Uuid;
use vectorize::error::ErrorCode;
use vectorize::store::{DbOptions, MODEL_IDENTITY_INDEX, ModelRecord, Source, Store, StoreError};

fn model(tag: &str) -> ModelRecord {
    ModelRecord {
        model_id: Uuid::now_v7(),
        model_tag: tag.into(),
        name: tag.into(),
        source: Source::Local,
        revision: None,
        commit_sha: None,
        path: format!("models/local/{tag}"),
        size_bytes: 3,
        files: vec![],
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

#[tokio::test]
async fn the_unique_model_index_means_409() {
    let store = Store::open(&DbOptions::embedded("mem://")).await.unwrap();
    store.insert_model(&model("bert")).await.unwrap();
    let err = store.insert_model(&model("bert")).await.unwrap_err();
    match &err {
        StoreError::Duplicate { index } => assert_eq!(index, MODEL_IDENTITY_INDEX),
        other => panic!("expected a duplicate, got {other}"),
    }
    assert_eq!(err.to_app_error().code, ErrorCode::ModelAlreadyExists);
    // Another source may use the same tag.
    let mut hf = model("bert");
    hf.source = Source::Huggingface;
    store.insert_model(&hf).await.unwrap();
    assert_eq!(store.list_models(None, 10, 0).await.unwrap().1, 2);
}

#[tokio::test]
async fn the_schema_can_be_defined_twice() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("surrealkv://{}", dir.path().join("db").display());
    let store = Store::open(&DbOptions::embedded(endpoint.clone()))
        .await
        .unwrap();
    store.insert_model(&model("kept")).await.unwrap();
    drop(store);
    // The engine closes in the background once its last handle is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let reopened = loop {
        match Store::open(&DbOptions::embedded(endpoint.clone())).await {
            Ok(store) => break store,
            Err(e) if e.to_string().contains("locked") && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(
        reopened
            .find_model(Source::Local, "kept")
            .await
            .unwrap()
            .is_some()
    );
}
