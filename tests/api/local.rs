//! `POST /v1/upload/local` and `GET /v1/upload/local/{id}`: the original
//! service's cases, and the archives built to escape the store, exhaust the
//! disk or run code. After every case: nothing written outside the data
//! dir and no temporary file left.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::helpers::{Options, TestApp, assert_error, small_model, spawn_app, spawn_app_with};
use crate::support::archives::{
    Archive, multipart_body, multipart_content_type, multipart_head, multipart_tail,
    pickle_calling, safetensors, torch_checkpoint,
};

impl TestApp {
    /// Posts `bytes` as the multipart field `file` named `file_name`.
    pub async fn post_local(
        &self,
        file_name: &str,
        bytes: &[u8],
        query: &str,
    ) -> reqwest::Response {
        self.client
            .post(self.at(&format!("/v1/upload/local{query}")))
            .header("content-type", multipart_content_type())
            .body(multipart_body(file_name, bytes))
            .send()
            .await
            .unwrap()
    }

    /// Uploads an archive, asserts 201 and returns the answer's body.
    pub async fn upload_local(&self, file_name: &str, bytes: &[u8]) -> Value {
        let response = self.post_local(file_name, bytes, "").await;
        let status = response.status();
        let location = response.headers().get("location").cloned();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        let first = body["models"][0]["id"].as_str().unwrap();
        assert_eq!(
            location.unwrap().to_str().unwrap(),
            format!("/v1/upload/local/{first}")
        );
        body
    }

    pub async fn get_local_model(&self, id: &str) -> reqwest::Response {
        self.client
            .get(self.at(&format!("/v1/upload/local/{id}")))
            .send()
            .await
            .unwrap()
    }

    fn local_model_dir(&self, tag: &str) -> PathBuf {
        self.data_dir.join("models").join("local").join(tag)
    }

    /// No temporary file is left, and no file named `escapee` exists in the
    /// data dir or in the folders an escaping entry would reach.
    fn assert_clean(&self, escapee: Option<&str>) {
        assert_eq!(self.leftover_tmp_files(), Vec::<PathBuf>::new());
        let Some(name) = escapee else { return };
        let mut found = Vec::new();
        find_named(&self.data_dir, name, &mut found);
        assert!(found.is_empty(), "{found:?}");
        let mut reachable = vec![PathBuf::from("/tmp"), PathBuf::from("/")];
        reachable.extend(self.data_dir.ancestors().map(Path::to_path_buf));
        for dir in reachable {
            assert!(
                !dir.join(name).exists(),
                "{} escaped",
                dir.join(name).display()
            );
        }
    }
}

fn find_named(dir: &Path, name: &str, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_name() == name {
            found.push(path.clone());
        }
        if entry.file_type().unwrap().is_dir() {
            find_named(&path, name, found);
        }
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}.json", uuid::Uuid::new_v4().simple())
}

/// One valid model in the folder `bert`.
fn bert_archive() -> Vec<u8> {
    Archive::new()
        .dir("bert/")
        .file("bert/config.json", br#"{"model_type":"bert"}"#)
        .file("bert/model.safetensors", &safetensors())
        .finish()
}

#[tokio::test]
async fn a_valid_archive_is_stored_under_its_folder_name() {
    let app = spawn_app().await;
    let body = app.upload_local("models.zip", &bert_archive()).await;
    assert_eq!(body["total_models"], 1);
    assert_eq!(body["existing_models"], serde_json::json!([]));
    assert_eq!(body["rejected"], serde_json::json!([]));
    let model = &body["models"][0];
    assert_eq!(model["model_tag"], "bert");
    assert_eq!(model["name"], "bert");
    assert_eq!(model["source"], "LOCAL");
    assert_eq!(model["revision"], Value::Null);
    assert_eq!(model["path"], "models/local/bert");
    let dir = app.local_model_dir("bert");
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        safetensors()
    );
    assert!(dir.join("config.json").is_file());
    let id = model["id"].as_str().unwrap();
    let found: Value = app.get_local_model(id).await.json().await.unwrap();
    assert_eq!(&found, model);
    let same: Value = app.get_model(id).await.json().await.unwrap();
    assert_eq!(&same, model);
    let files = model["files"].as_array().unwrap();
    let weights = files
        .iter()
        .find(|f| f["path"] == "model.safetensors")
        .unwrap();
    assert_eq!(weights["size"], safetensors().len());
    assert_eq!(weights["sha256"].as_str().unwrap().len(), 64);
    app.assert_clean(None);
}

#[tokio::test]
async fn root_files_form_a_model_named_by_the_query_or_the_archive() {
    let app = spawn_app().await;
    let archive = Archive::new()
        .file("model.safetensors", &safetensors())
        .finish();
    let response = app
        .post_local("my-model.v2.zip", &archive, "?model_name=tiny%20net")
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["models"][0]["name"], "tiny net");
    assert_eq!(body["models"][0]["model_tag"], "tiny_net");
    let body = app.upload_local("my-model.v2.ZIP", &archive).await;
    assert_eq!(body["models"][0]["model_tag"], "my_model_v2");
    assert!(
        app.local_model_dir("my_model_v2")
            .join("model.safetensors")
            .is_file()
    );
    app.assert_clean(None);
}

#[tokio::test]
async fn a_file_that_is_not_a_zip_is_refused() {
    let app = spawn_app().await;
    let message = assert_error(
        app.post_local("notes.txt", b"just some text", "").await,
        400,
        "INVALID_FILE",
    )
    .await;
    assert!(message.contains("notes.txt"), "{message}");
    let message = assert_error(
        app.post_local("model.zip", b"just some text", "").await,
        400,
        "INVALID_FILE",
    )
    .await;
    assert!(message.contains("ZIP"), "{message}");
    app.assert_clean(None);
}

#[tokio::test]
async fn an_empty_archive_is_refused() {
    let app = spawn_app().await;
    let response = app
        .post_local("empty.zip", &Archive::new().finish(), "")
        .await;
    assert_error(response, 400, "EMPTY_FILE").await;
    app.assert_clean(None);
}

#[tokio::test]
async fn a_truncated_archive_is_refused() {
    let app = spawn_app().await;
    let archive = bert_archive();
    let truncated = &archive[..archive.len() / 2];
    assert_error(
        app.post_local("cut.zip", truncated, "").await,
        400,
        "INVALID_FILE",
    )
    .await;
    app.assert_clean(None);
}

#[tokio::test]
async fn an_archive_without_model_files_has_no_valid_models() {
    let app = spawn_app().await;
    let archive = Archive::new()
        .file("docs/readme.txt", b"hello")
        .file("script.py", b"print('hi')")
        .finish();
    let message = assert_error(
        app.post_local("docs.zip", &archive, "").await,
        404,
        "NO_VALID_MODELS",
    )
    .await;
    assert!(
        message.contains("'docs'") && message.contains("no model files"),
        "{message}"
    );
    let archive = Archive::new()
        .file("bad/model.safetensors", b"not weights")
        .finish();
    let message = assert_error(
        app.post_local("bad.zip", &archive, "").await,
        404,
        "NO_VALID_MODELS",
    )
    .await;
    assert!(
        message.contains("'bad'") && message.contains("safetensors"),
        "{message}"
    );
    assert!(!app.local_model_dir("bad").exists());
    app.assert_clean(None);
}

#[tokio::test]
async fn the_same_archive_twice_is_a_conflict() {
    let app = spawn_app().await;
    app.upload_local("models.zip", &bert_archive()).await;
    let message = assert_error(
        app.post_local("models.zip", &bert_archive(), "").await,
        409,
        "MODEL_ALREADY_EXISTS",
    )
    .await;
    assert!(message.contains("bert"), "{message}");
    app.assert_clean(None);
}

#[tokio::test]
async fn a_new_model_beside_an_existing_one_is_stored_and_the_other_listed() {
    let app = spawn_app().await;
    app.upload_local("models.zip", &bert_archive()).await;
    let archive = Archive::new()
        .file("bert/model.safetensors", &safetensors())
        .file("gpt/model.safetensors", &safetensors())
        .finish();
    let body = app.upload_local("more.zip", &archive).await;
    assert_eq!(body["total_models"], 1);
    assert_eq!(body["models"][0]["model_tag"], "gpt");
    assert_eq!(body["existing_models"], serde_json::json!(["bert"]));
    app.assert_clean(None);
}

#[tokio::test]
async fn two_model_folders_are_two_more_models() {
    let app = spawn_app().await;
    let before = app.list_models("?source=LOCAL").await["total"]
        .as_u64()
        .unwrap();
    let archive = Archive::new()
        .file("first-model/model.safetensors", &safetensors())
        .file(
            "second_model/weights/pytorch_model.bin",
            &torch_checkpoint(&[1.0, 2.0]),
        )
        .finish();
    let body = app.upload_local("two.zip", &archive).await;
    assert_eq!(body["total_models"], 2);
    let after = app.list_models("?source=LOCAL").await["total"]
        .as_u64()
        .unwrap();
    assert_eq!(after, before + 2);
    let nested = app
        .local_model_dir("second_model")
        .join("weights/pytorch_model.bin");
    assert!(nested.is_file());
    app.assert_clean(None);
}

#[tokio::test]
async fn only_model_files_are_extracted() {
    let app = spawn_app().await;
    let archive = Archive::new()
        .file("mixed/model.bin", &torch_checkpoint(&[0.5; 4]))
        .file("mixed/config.json", b"{}")
        .file("mixed/invalid_file.txt", b"skip me")
        .file("mixed/script.py", b"import os")
        .finish();
    let body = app.upload_local("mixed.zip", &archive).await;
    let mut paths: Vec<&str> = body["models"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(paths, ["config.json", "model.bin"]);
    let dir = app.local_model_dir("mixed");
    assert!(dir.join("model.bin").is_file() && dir.join("config.json").is_file());
    assert!(!dir.join("invalid_file.txt").exists() && !dir.join("script.py").exists());
    app.assert_clean(None);
}

#[tokio::test]
async fn a_torch_checkpoint_is_accepted_without_being_loaded() {
    let app = spawn_app().await;
    let archive = Archive::new()
        .file(
            "torchy/pytorch_model.bin",
            &torch_checkpoint(&[1.0, 2.0, 3.0]),
        )
        .file("torchy/config.json", b"{}")
        .finish();
    let body = app.upload_local("torchy.zip", &archive).await;
    assert_eq!(body["models"][0]["model_tag"], "torchy");
    app.assert_clean(None);
}

#[tokio::test]
async fn a_malicious_pickle_rejects_its_model_naming_the_global() {
    let app = spawn_app().await;
    let archive = Archive::new()
        .file("evil/model.bin", &pickle_calling("posix", "system"))
        .finish();
    let message = assert_error(
        app.post_local("evil.zip", &archive, "").await,
        404,
        "NO_VALID_MODELS",
    )
    .await;
    assert!(
        message.contains("'evil'") && message.contains("posix.system"),
        "{message}"
    );
    let archive = Archive::new()
        .file("evil/model.pt", &pickle_calling("builtins", "eval"))
        .file("evil/model.safetensors", &safetensors())
        .file("good/model.safetensors", &safetensors())
        .finish();
    let body = app.upload_local("mixed.zip", &archive).await;
    assert_eq!(body["models"][0]["model_tag"], "good");
    assert_eq!(body["rejected"][0]["name"], "evil");
    let reason = body["rejected"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("builtins.eval"), "{reason}");
    assert!(!app.local_model_dir("evil").exists());
    app.assert_clean(None);
}

#[tokio::test]
async fn entries_that_climb_out_or_are_absolute_refuse_the_archive() {
    let app = spawn_app().await;
    for prefix in ["../../", "/tmp/", "bert/../../../"] {
        let escapee = unique("evil");
        let entry = format!("{prefix}{escapee}");
        let archive = Archive::new()
            .file("bert/model.safetensors", &safetensors())
            .file(&entry, b"{}")
            .finish();
        let message = assert_error(
            app.post_local("evil.zip", &archive, "").await,
            400,
            "INVALID_FILE",
        )
        .await;
        assert!(message.contains(&entry), "{message}");
        assert!(
            !app.local_model_dir("bert").exists(),
            "nothing is extracted"
        );
        app.assert_clean(Some(&escapee));
    }
}

#[tokio::test]
async fn entries_that_share_a_path_or_cannot_be_named_refuse_the_archive() {
    let app = spawn_app().await;
    let long = format!("bert/{}.json", "a".repeat(300));
    for (entry, why) in [
        ("bert\\config.json", "same path"),
        (long.as_str(), "cannot hold"),
    ] {
        let archive = Archive::new()
            .file("bert/model.safetensors", &safetensors())
            .file("bert/config.json", b"{}")
            .file(entry, b"{}")
            .finish();
        let message = assert_error(
            app.post_local("clash.zip", &archive, "").await,
            400,
            "INVALID_FILE",
        )
        .await;
        assert!(
            message.contains(entry) && message.contains(why),
            "{message}"
        );
        assert!(!app.local_model_dir("bert").exists());
        app.assert_clean(None);
    }
}

#[tokio::test]
async fn a_symlink_entry_refuses_the_archive() {
    let app = spawn_app().await;
    let archive = Archive::new()
        .file("bert/model.safetensors", &safetensors())
        .symlink("bert/config.json", "/etc/passwd")
        .finish();
    let message = assert_error(
        app.post_local("link.zip", &archive, "").await,
        400,
        "INVALID_FILE",
    )
    .await;
    assert!(
        message.contains("bert/config.json") && message.contains("symbolic link"),
        "{message}"
    );
    app.assert_clean(None);
}

#[tokio::test]
async fn an_encrypted_entry_refuses_the_archive() {
    let app = spawn_app().await;
    let archive = Archive::new()
        .encrypted("bert/model.safetensors", &safetensors())
        .finish();
    let message = assert_error(
        app.post_local("secret.zip", &archive, "").await,
        400,
        "INVALID_FILE",
    )
    .await;
    assert!(
        message.contains("bert/model.safetensors") && message.contains("encrypted"),
        "{message}"
    );
    app.assert_clean(None);
}

#[tokio::test]
async fn a_deflate_bomb_is_refused_naming_the_entry() {
    let app = spawn_app().await;
    let archive = Archive::new().zeros("bomb/model.bin", 300).finish();
    assert!(archive.len() < 2 << 20, "{} bytes", archive.len());
    let message = assert_error(
        app.post_local("bomb.zip", &archive, "").await,
        400,
        "INVALID_FILE",
    )
    .await;
    assert!(
        message.contains("bomb/model.bin") && message.contains("200:1"),
        "{message}"
    );
    assert!(!app.local_model_dir("bomb").exists());
    app.assert_clean(None);
}

#[tokio::test]
async fn more_than_ten_thousand_entries_refuse_the_archive() {
    let app = spawn_app().await;
    let mut archive = Archive::new();
    for i in 0..10_001 {
        archive = archive.stored(&format!("many/{i}.json"), b"");
    }
    let message = assert_error(
        app.post_local("many.zip", &archive.finish(), "").await,
        400,
        "INVALID_FILE",
    )
    .await;
    assert!(
        message.contains("10001") && message.contains("10000"),
        "{message}"
    );
    app.assert_clean(None);
}

#[tokio::test]
async fn an_extraction_past_the_byte_limit_is_refused() {
    let app = spawn_app_with(Options {
        max_upload_bytes: Some(256 * 1024),
        ..Default::default()
    })
    .await;
    // 300 KiB of safetensors deflates to far less than the limit.
    let big = crate::support::archives::safetensors_bytes(&[("w", &[300, 256])]);
    let archive = Archive::new().file("big/model.safetensors", &big).finish();
    assert!(archive.len() < 200 * 1024);
    let message = assert_error(
        app.post_local("big.zip", &archive, "").await,
        400,
        "INVALID_FILE",
    )
    .await;
    assert!(message.contains("big/model.safetensors"), "{message}");
    assert!(!app.local_model_dir("big").exists());
    app.assert_clean(None);
}

#[tokio::test]
async fn a_chunked_body_past_the_limit_is_413_and_leaves_nothing() {
    let app = spawn_app_with(Options {
        max_upload_bytes: Some(256 * 1024),
        ..Default::default()
    })
    .await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        std::iter::once(Ok(multipart_head("big.zip")))
            .chain((0..64).map(|_| Ok(vec![0u8; 16 * 1024])))
            .chain(std::iter::once(Ok(multipart_tail())))
            .collect();
    let response = app
        .client
        .post(app.at("/v1/upload/local"))
        .header("content-type", multipart_content_type())
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "PAYLOAD_TOO_LARGE").await;
    app.assert_clean(None);
    // A declared length past the limit is refused before the body is read.
    let body = multipart_body("big.zip", &vec![0u8; 512 * 1024]);
    let response = app
        .client
        .post(app.at("/v1/upload/local"))
        .header("content-type", multipart_content_type())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "PAYLOAD_TOO_LARGE").await;
    app.assert_clean(None);
    // Under the limit, the same service accepts an upload.
    app.upload_local("models.zip", &bert_archive()).await;
    app.assert_clean(None);
}

#[tokio::test]
async fn a_form_without_the_file_field_is_a_validation_error() {
    let app = spawn_app().await;
    let body = String::from_utf8_lossy(&multipart_body("x.zip", b"PK"))
        .replace("name=\"file\"", "name=\"other\"");
    let response = app
        .client
        .post(app.at("/v1/upload/local"))
        .header("content-type", multipart_content_type())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(response, 422, "VALIDATION_ERROR").await;
    let response = app
        .client
        .post(app.at("/v1/upload/local"))
        .json(&serde_json::json!({"file": "x.zip"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 422, "VALIDATION_ERROR").await;
    app.assert_clean(None);
}

#[tokio::test]
async fn get_answers_404_for_an_unknown_or_non_local_model() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4();
    assert_error(app.get_local_model(&id.to_string()).await, 404, "NOT_FOUND").await;
    assert_error(
        app.get_local_model("not-a-uuid").await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    app.hub.add_repo(small_model("acme/remote"));
    let task = app.upload_hf("acme/remote").await;
    let task = app.wait_task(&task).await;
    let remote = task["model_id"].as_str().unwrap();
    assert_eq!(app.get_model(remote).await.status(), 200);
    assert_error(app.get_local_model(remote).await, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn a_deleted_local_model_can_be_uploaded_again() {
    let app = spawn_app().await;
    let body = app.upload_local("models.zip", &bert_archive()).await;
    let id = body["models"][0]["id"].as_str().unwrap();
    assert_eq!(app.delete_model(id).await.status(), 204);
    assert!(!app.local_model_dir("bert").exists());
    assert_error(app.get_local_model(id).await, 404, "NOT_FOUND").await;
    app.upload_local("models.zip", &bert_archive()).await;
    app.assert_clean(None);
}

#[tokio::test]
async fn a_leftover_folder_without_a_record_is_replaced() {
    let app = spawn_app().await;
    let leftover = app.local_model_dir("bert");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("half-written.bin"), b"x").unwrap();
    app.upload_local("models.zip", &bert_archive()).await;
    assert!(!leftover.join("half-written.bin").exists());
    assert!(leftover.join("model.safetensors").is_file());
    app.assert_clean(None);
}

#[tokio::test]
async fn two_uploads_of_one_model_at_once_store_it_once() {
    let app = spawn_app().await;
    let archive = bert_archive();
    let (first, second) = tokio::join!(
        app.post_local("a.zip", &archive, ""),
        app.post_local("b.zip", &archive, "")
    );
    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    assert_eq!(app.list_models("?source=LOCAL").await["total"], 1);
    app.assert_clean(None);
}

#[tokio::test]
async fn the_openapi_document_describes_the_multipart_form() {
    let app = spawn_app().await;
    let spec: Value = app
        .client
        .get(app.at("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operation = &spec["paths"]["/v1/upload/local"]["post"];
    let form = &operation["requestBody"]["content"]["multipart/form-data"]["schema"];
    assert_eq!(
        form["properties"]["file"]["format"], "binary",
        "{operation}"
    );
    assert_eq!(form["required"], serde_json::json!(["file"]));
    let params = operation["parameters"].as_array().unwrap();
    assert!(
        params
            .iter()
            .any(|p| p["name"] == "model_name" && p["in"] == "query")
    );
    assert!(operation["responses"]["201"].is_object());
    assert!(spec["paths"]["/v1/upload/local/{model_id}"]["get"].is_object());
}
