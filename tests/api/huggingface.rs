//! `POST /v1/upload/huggingface` and the background download, end to end.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Options, assert_error, small_model, spawn_app, spawn_app_with};
use crate::support::fake_hub::{FakeHub, HubFile, HubRepo, safetensors_bytes};

#[tokio::test]
async fn an_upload_answers_201_and_lands_in_the_cache_layout() {
    let app = spawn_app().await;
    let repo = small_model("acme/tiny-bert");
    app.hub.add_repo(repo.clone());

    let response = app
        .post_hf(json!({"model_tag": "acme/tiny-bert", "revision": "main"}))
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let task: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/upload/tasks/{}", task["id"].as_str().unwrap())
    );
    assert_eq!(task["model_tag"], "acme/tiny-bert@main");
    assert_eq!(task["source"], "HUGGINGFACE");
    assert!(
        matches!(task["task_status"].as_str(), Some("PENDING" | "RUNNING")),
        "{task}"
    );
    assert!(task["error_msg"].is_null() && task["model_id"].is_null());

    let done = app.wait_task(task["id"].as_str().unwrap()).await;
    assert_eq!(done["task_status"], "DONE", "{done}");
    assert_eq!(done["attempts"], 1);
    // README.md does not match the default allow_patterns.
    assert_eq!(done["progress"]["files_total"], 3);
    assert_eq!(done["progress"]["files_done"], 3);
    assert!(done["finished_at"].is_string() && done["started_at"].is_string());

    let repo_dir = app.hf_cache().join("models--acme--tiny-bert");
    let snapshot = repo_dir.join("snapshots").join(&repo.commit);
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        repo.commit
    );
    for file in &repo.files {
        let path = snapshot.join(&file.path);
        if file.path == "README.md" {
            assert!(!path.exists());
            continue;
        }
        assert_eq!(std::fs::read(&path).unwrap(), file.bytes, "{}", file.path);
        let target = std::fs::read_link(&path).unwrap();
        assert!(target.starts_with("../../blobs/"), "{}", target.display());
    }

    let model: Value = app
        .get_model(done["model_id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(model["model_tag"], "acme/tiny-bert@main");
    assert_eq!(model["revision"], "main");
    assert_eq!(model["commit_sha"], repo.commit.as_str());
    assert_eq!(
        model["path"],
        format!(
            "models/huggingface/models--acme--tiny-bert/snapshots/{}",
            repo.commit
        )
    );
    assert_eq!(model["files"].as_array().unwrap().len(), 3);
    assert!(
        app.leftover_tmp_files().is_empty(),
        "{:?}",
        app.leftover_tmp_files()
    );
}

#[tokio::test]
async fn invalid_repo_ids_are_400() {
    let app = spawn_app().await;
    for revision in ["../../etc", "a b", "bad~1"] {
        let response = app
            .post_hf(json!({"model_tag": "acme/x", "revision": revision}))
            .await;
        assert_error(response, 400, "INVALID_MODEL_TAG").await;
    }
    for bad in [
        "a/b/c",
        "-leading",
        "trailing.",
        "double--dash",
        "dot..dot",
        "spa ce",
        "x/",
    ] {
        let message = assert_error(
            app.post_hf(json!({"model_tag": bad})).await,
            400,
            "INVALID_MODEL_TAG",
        )
        .await;
        assert!(message.contains(bad), "{message}");
    }
}

#[tokio::test]
async fn malformed_bodies_are_422() {
    let app = spawn_app().await;
    for body in [
        json!({}),
        json!({"model_tag": ""}),
        json!({"model_tag": 7}),
        json!({"revision": "main"}),
    ] {
        assert_error(app.post_hf(body).await, 422, "VALIDATION_ERROR").await;
    }
    let response = app
        .client
        .post(app.at("/v1/upload/huggingface"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(response, 422, "VALIDATION_ERROR").await;
    let patterns = app
        .post_hf(json!({"model_tag": "a/b", "allow_patterns": []}))
        .await;
    assert_error(patterns, 422, "VALIDATION_ERROR").await;
}

#[tokio::test]
async fn missing_repos_and_revisions_are_404_and_a_dead_hub_is_502() {
    let app = spawn_app().await;
    app.hub.add_repo(small_model("acme/exists"));
    assert_error(
        app.post_hf(json!({"model_tag": "acme/nope"})).await,
        404,
        "NOT_FOUND",
    )
    .await;
    let revision = app
        .post_hf(json!({"model_tag": "acme/exists", "revision": "no-such-branch"}))
        .await;
    assert_error(revision, 404, "NOT_FOUND").await;

    app.hub.fail_always(503);
    let message = assert_error(
        app.post_hf(json!({"model_tag": "acme/exists"})).await,
        502,
        "UPSTREAM_ERROR",
    )
    .await;
    assert!(message.contains("503"), "{message}");
}

#[tokio::test]
async fn an_unreachable_hub_is_502() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let hub = FakeHub::start().await;
    let app = spawn_app_with(Options {
        hub: Some(hub),
        hf_endpoint: Some(closed),
        ..Default::default()
    })
    .await;
    let message = assert_error(
        app.post_hf(json!({"model_tag": "acme/x"})).await,
        502,
        "UPSTREAM_ERROR",
    )
    .await;
    assert!(message.contains("connect"), "{message}");
}

#[tokio::test]
async fn an_existing_model_is_409_and_an_upload_in_flight_is_409_with_its_location() {
    let app = spawn_app().await;
    app.hub.add_repo(small_model("acme/dup"));
    app.hub.slow_downloads(2_000);
    let first = app.upload_hf("acme/dup").await;

    let second = app
        .post_hf(json!({"model_tag": "acme/dup", "revision": ""}))
        .await;
    assert_eq!(
        second.headers()["location"],
        format!("/v1/upload/tasks/{first}").as_str()
    );
    assert_error(second, 409, "UPLOAD_IN_PROGRESS").await;

    app.hub.clear_faults();
    assert_eq!(app.wait_task(&first).await["task_status"], "DONE");
    let again = app
        .post_hf(json!({"model_tag": "acme/dup", "revision": "main"}))
        .await;
    let message = assert_error(again, 409, "MODEL_ALREADY_EXISTS").await;
    assert!(message.contains("acme/dup@main"), "{message}");
}

#[tokio::test]
async fn transient_failures_are_retried_and_counted() {
    let app = spawn_app().await;
    // A file asked for again three times within the attempt …
    let (flaky, flakier) = (small_model("acme/flaky"), small_model("acme/flakier"));
    for (repo, failures, attempts) in [(flaky, 3, 1), (flakier, 4, 2)] {
        app.hub.add_repo(repo.clone());
        let config = format!("GET /{}/resolve/{}/config.json", repo.id, repo.commit);
        app.hub.fail_next_matching(failures, 503, &config);
        let id = app.upload_hf(&repo.id).await;
        let done = app.wait_task(&id).await;
        assert_eq!(done["task_status"], "DONE", "{done}");
        // … and once more fails the attempt, which is retried.
        assert_eq!(done["attempts"], attempts, "{failures} failures: {done}");
        let asked = app
            .hub
            .log()
            .iter()
            .filter(|r| format!("{} {}", r.method, r.path) == config)
            .count();
        assert_eq!(asked, failures + 1, "{failures} failures");
    }
}

#[tokio::test]
async fn a_hub_that_keeps_failing_ends_failed_after_four_attempts() {
    let app = spawn_app().await;
    app.hub.add_repo(small_model("acme/down"));
    app.hub
        .fail_next_matching(usize::MAX, 503, "GET /acme/down/resolve/");
    let id = app.upload_hf("acme/down").await;
    let failed = app.wait_task(&id).await;
    assert_eq!(failed["task_status"], "FAILED", "{failed}");
    assert_eq!(failed["attempts"], 4);
    assert_eq!(failed["error_code"], "UPSTREAM_UNAVAILABLE", "{failed}");
    let message = failed["error_msg"].as_str().unwrap();
    assert!(
        message.contains("503") && message.contains("4 attempts"),
        "{message}"
    );
    assert!(
        !message.contains("Error {") && !message.contains("kind:"),
        "debug dump: {message}"
    );
    assert!(app.leftover_tmp_files().is_empty());
}

#[tokio::test]
async fn a_cut_connection_resumes_with_range() {
    let app = spawn_app().await;
    let mut repo = small_model("acme/cut");
    repo.files.push(HubFile {
        path: "big.safetensors".into(),
        bytes: safetensors_bytes(&[("w", &[256, 1024])]),
        lfs: true,
    });
    app.hub.add_repo(repo.clone());
    app.hub.cut_next_download_after(100_000);
    let id = app.upload_hf("acme/cut").await;
    let done = app.wait_task(&id).await;
    assert_eq!(done["task_status"], "DONE", "{done}");
    // The file is asked for again from the cut, inside the same attempt.
    assert_eq!(done["attempts"], 1);
    let ranged: Vec<_> = app
        .hub
        .log()
        .into_iter()
        .filter(|r| r.range.is_some())
        .collect();
    assert!(
        ranged.iter().any(|r| r
            .range
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=100000-"))),
        "no resume from the cut offset: {ranged:?}"
    );
    let snapshot = app
        .hf_cache()
        .join("models--acme--cut/snapshots")
        .join(&repo.commit);
    assert_eq!(
        std::fs::read(snapshot.join("big.safetensors")).unwrap(),
        repo.files[4].bytes
    );
}

#[tokio::test]
async fn a_gated_repo_needs_a_token_and_the_token_stays_on_the_hub() {
    let hub = FakeHub::start().await;
    hub.set_valid_token("hf_good");
    let mut repo = small_model("acme/gated");
    repo.gated = Some("manual");
    hub.add_repo(repo);

    let anonymous = spawn_app_with(Options {
        hub: Some(hub.clone()),
        ..Default::default()
    })
    .await;
    let message = assert_error(
        anonymous.post_hf(json!({"model_tag": "acme/gated"})).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert!(message.contains("HF_TOKEN"), "{message}");

    let wrong = spawn_app_with(Options {
        hub: Some(hub.clone()),
        hf_token: Some("hf_bad".into()),
        ..Default::default()
    })
    .await;
    assert_error(
        wrong.post_hf(json!({"model_tag": "acme/gated"})).await,
        404,
        "NOT_FOUND",
    )
    .await;

    let app = spawn_app_with(Options {
        hub: Some(hub.clone()),
        hf_token: Some("hf_good".into()),
        ..Default::default()
    })
    .await;
    hub.clear_log();
    let id = app.upload_hf("acme/gated").await;
    assert_eq!(app.wait_task(&id).await["task_status"], "DONE");
    let log = hub.log();
    let (cdn, on_hub): (Vec<_>, Vec<_>) = log.iter().partition(|r| r.host.starts_with("localhost"));
    assert!(
        !cdn.is_empty(),
        "the LFS file did not go through the CDN: {log:?}"
    );
    assert!(
        cdn.iter().all(|r| r.authorization.is_none()),
        "the token reached the CDN: {cdn:?}"
    );
    assert!(
        on_hub
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer hf_good")),
        "{on_hub:?}"
    );
}

#[tokio::test]
async fn a_cancelled_download_leaves_no_partial_files() {
    let app = spawn_app().await;
    let mut repo = small_model("acme/slow");
    repo.files[3].bytes = safetensors_bytes(&[("w", &[512, 1024])]);
    app.hub.add_repo(repo);
    app.hub.slow_downloads(200_000);
    let id = app.upload_hf("acme/slow").await;
    app.wait_for(&id, Duration::from_secs(10), |t| {
        t["progress"]["bytes_done"].as_u64() > Some(0)
    })
    .await;

    let response = app.cancel_task(&id).await;
    assert_eq!(response.status(), 200);
    let task: Value = response.json().await.unwrap();
    assert_eq!(task["task_status"], "CANCELLED");
    assert_eq!(task["error_code"], "CANCELLED", "{task}");
    assert!(
        app.leftover_tmp_files().is_empty(),
        "{:?}",
        app.leftover_tmp_files()
    );
    assert!(!app.hf_cache().join("models--acme--slow/snapshots").exists());
    assert_eq!(app.task(&id).await["task_status"], "CANCELLED");

    assert_error(app.cancel_task(&id).await, 409, "TASK_FINISHED").await;
}

#[tokio::test]
async fn weights_are_validated() {
    let app = spawn_app().await;
    let mut corrupt = small_model("acme/corrupt");
    corrupt.files[3].bytes = b"\x10\x00\x00\x00\x00\x00\x00\x00{\"not\": \"valid\"}".to_vec();
    app.hub.add_repo(corrupt);
    let mut no_weights = small_model("acme/no-weights");
    no_weights.files.truncate(3);
    app.hub.add_repo(no_weights);
    let sharded = HubRepo {
        id: "acme/sharded".into(),
        files: vec![
            HubFile {
                path: "model.safetensors.index.json".into(),
                bytes: br#"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#.to_vec(),
                lfs: false,
            },
            HubFile { path: "model-00001-of-00002.safetensors".into(), bytes: safetensors_bytes(&[("a", &[4])]), lfs: true },
            HubFile { path: "model-00002-of-00002.safetensors".into(), bytes: safetensors_bytes(&[("b", &[4])]), lfs: true },
        ],
        ..small_model("acme/sharded")
    };
    let mut broken_shards = sharded.clone();
    broken_shards.id = "acme/missing-shard".into();
    broken_shards.files.pop();
    app.hub.add_repo(sharded);
    app.hub.add_repo(broken_shards);

    for (repo, status, needle, code) in [
        (
            "acme/corrupt",
            "FAILED",
            "model.safetensors",
            "INVALID_WEIGHTS",
        ),
        ("acme/no-weights", "FAILED", "safetensors", "MISSING_FILES"),
        ("acme/sharded", "DONE", "", ""),
        (
            "acme/missing-shard",
            "FAILED",
            "model-00002-of-00002.safetensors",
            "MISSING_FILES",
        ),
    ] {
        let id = app.upload_hf(repo).await;
        let task = app.wait_task(&id).await;
        assert_eq!(task["task_status"], status, "{repo}: {task}");
        if status == "FAILED" {
            assert_eq!(
                task["attempts"], 1,
                "a permanent failure is not retried: {task}"
            );
            assert!(
                task["error_msg"].as_str().unwrap().contains(needle),
                "{repo}: {task}"
            );
            assert_eq!(task["error_code"], code, "{repo}: {task}");
        }
    }
    assert!(app.leftover_tmp_files().is_empty());
}

#[tokio::test]
async fn pytorch_weights_come_only_when_asked_for_and_only_after_the_pickle_scan() {
    let app = spawn_app().await;
    let pickle = |module: &str, name: &str| {
        let mut p = vec![0x80, 2, b'c'];
        p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        p.extend_from_slice(b")R.");
        p
    };
    for (id, bytes) in [
        ("acme/bin-only", pickle("collections", "OrderedDict")),
        ("acme/bin-not-asked", pickle("collections", "OrderedDict")),
        ("acme/evil-bin", pickle("posix", "system")),
    ] {
        let mut repo = small_model(id);
        repo.files[3] = HubFile {
            path: "pytorch_model.bin".into(),
            bytes,
            lfs: true,
        };
        app.hub.add_repo(repo);
    }
    let with_bins = json!(["*.json", "*.bin"]);
    for (repo, patterns, status, needle, code) in [
        ("acme/bin-only", Some(&with_bins), "DONE", "", None),
        (
            "acme/evil-bin",
            Some(&with_bins),
            "FAILED",
            "posix.system",
            Some("UNSAFE_PICKLE"),
        ),
        (
            "acme/bin-not-asked",
            None,
            "FAILED",
            "allow_patterns",
            Some("MISSING_FILES"),
        ),
    ] {
        let mut body = json!({"model_tag": repo});
        if let Some(patterns) = patterns {
            body["allow_patterns"] = patterns.clone();
        }
        let response = app.post_hf(body).await;
        assert_eq!(response.status(), 201);
        let task: Value = response.json().await.unwrap();
        let task = app.wait_task(task["id"].as_str().unwrap()).await;
        assert_eq!(task["task_status"], status, "{repo}: {task}");
        assert!(
            task["error_msg"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{repo}: {task}"
        );
        assert_eq!(task["error_code"].as_str(), code, "{repo}: {task}");
    }
    assert!(app.leftover_tmp_files().is_empty());
}

#[tokio::test]
async fn the_event_stream_ends_after_the_terminal_state() {
    let app = spawn_app().await;
    app.hub.add_repo(small_model("acme/events"));
    app.hub.slow_downloads(20_000);
    let id = app.upload_hf("acme/events").await;
    let response = app
        .client
        .get(app.at(&format!("/v1/upload/tasks/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .expect("the stream ends")
        .unwrap();
    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(body.contains("event: task"), "{body}");
    assert!(events.len() >= 2, "{body}");
    assert_eq!(events.last().unwrap()["task_status"], "DONE");
    assert!(events.iter().all(|e| e["id"] == id.as_str()));

    let finished = app
        .client
        .get(app.at(&format!("/v1/upload/tasks/{id}/events")))
        .send()
        .await
        .unwrap();
    let body = finished.text().await.unwrap();
    assert_eq!(body.matches("event: task").count(), 1, "{body}");
}
