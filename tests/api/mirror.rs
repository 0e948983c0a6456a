//! The store served back to Hugging Face clients (`/mirror/{root}`): the
//! real `huggingface_hub` and `hf` CLI pull from each root into empty
//! caches and get the store's bytes; the Hub's errors, `Range` resumes and
//! the API key are checked with the client and at the HTTP level.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{
    Options, TestApp, assert_error, is_finished, poll_task, small_model, spawn_app, spawn_app_with,
};
use crate::support::archives::Archive;
use crate::support::cutting_proxy::CuttingProxy;
use crate::support::fake_hub::{FakeHub, HubFile, safetensors_bytes};
use crate::support::git_server::GitServer;
use crate::support::hf_client::HfClient;

impl TestApp {
    /// `HF_ENDPOINT` for one mirror root.
    fn mirror(&self, root: &str) -> String {
        self.at(&format!("/mirror/{root}"))
    }

    async fn upload_hf_at(&self, repo: &str, revision: &str) -> Value {
        let response = self
            .post_hf(json!({"model_tag": repo, "revision": revision}))
            .await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        let task: Value = response.json().await.unwrap();
        let task = self.wait_task(task["id"].as_str().unwrap()).await;
        assert_eq!(task["task_status"], "DONE", "{task}");
        self.stored_model(&task).await
    }

    async fn upload_github_at(&self, owner_repo: &str, revision: &str) -> Value {
        let (owner, repo) = owner_repo.split_once('/').unwrap();
        let body = json!({"owner": owner, "repo_name": repo, "revision": revision});
        let response = self.post_github(body).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        let task: Value = response.json().await.unwrap();
        let task = self.wait_task(task["id"].as_str().unwrap()).await;
        assert_eq!(task["task_status"], "DONE", "{task}");
        self.stored_model(&task).await
    }

    async fn stored_model(&self, task: &Value) -> Value {
        let id = task["model_id"].as_str().unwrap();
        self.get_model(id).await.json().await.unwrap()
    }
}

/// Path → sha256 of every file under `folder` (links followed).
fn tree_of(folder: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut stack = vec![folder.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir);
        for entry in entries
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
        {
            let path = entry.path();
            let meta = std::fs::metadata(&path);
            if meta
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .is_dir()
            {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(folder).unwrap().to_string_lossy();
                let bytes = std::fs::read(&path).unwrap();
                found.insert(relative.into_owned(), hex::encode(Sha256::digest(bytes)));
            }
        }
    }
    found
}

/// Path → sha256 of a stored model's files, as the API lists them.
fn files_of(model: &Value) -> BTreeMap<String, String> {
    model["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A model whose repo also holds a nested file and a revision with a
/// slash; answers its weights.
fn bert(hub: &FakeHub) -> Vec<u8> {
    bert_with(
        hub,
        safetensors_bytes(&[("embeddings", &[64, 32]), ("bias", &[32])]),
    )
}

/// `bert` with these weights.
fn bert_with(hub: &FakeHub, weights: Vec<u8>) -> Vec<u8> {
    let mut repo = small_model("acme/bert");
    repo.files[3].bytes = weights;
    repo.revisions = vec!["main".into(), "v1.0".into(), "refs/pr/1".into()];
    repo.files.push(HubFile {
        path: "onnx/config.json".into(),
        bytes: br#"{"opset": 17}"#.to_vec(),
        lfs: false,
    });
    let weights = repo.files[3].bytes.clone();
    hub.add_repo(repo);
    weights
}

#[tokio::test]
async fn hugging_face_models_pull_by_branch_tag_and_commit_byte_identical() {
    let app = spawn_app().await;
    bert(&app.hub);
    let main = app.upload_hf_at("acme/bert", "main").await;
    let tagged = app.upload_hf_at("acme/bert", "v1.0").await;
    let commit = main["commit_sha"].as_str().unwrap().to_string();
    let endpoint = app.mirror("huggingface");

    for (revision, model) in [("main", &main), ("v1.0", &tagged), (commit.as_str(), &main)] {
        let client = HfClient::new(&endpoint);
        let snapshot = client.snapshot("acme/bert", revision).await;
        assert_eq!(tree_of(&snapshot), files_of(model), "at {revision}");
        assert!(snapshot.ends_with(&commit), "{}", snapshot.display());
    }

    // One file, and the command line.
    let client = HfClient::new(&endpoint);
    let config = client.file("acme/bert", "v1.0", "onnx/config.json").await;
    assert_eq!(std::fs::read(config).unwrap(), br#"{"opset": 17}"#);
    let folder = client.cli(&["acme/bert", "--revision", "main"]).await;
    assert_eq!(tree_of(&folder), files_of(&main));

    // A client's cache names each blob from the mirror as it names the
    // same blob from the Hub: the same ETags. (From the Hub it gets every
    // file; the store holds those its allow_patterns chose.)
    let from_hub = HfClient::new(&app.hub.url());
    from_hub.snapshot("acme/bert", "main").await;
    let blobs = |client: &HfClient| -> Vec<String> {
        let folder = client.cache().join("models--acme--bert").join("blobs");
        let mut names: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let from_mirror = HfClient::new(&endpoint);
    from_mirror.snapshot("acme/bert", "main").await;
    let (mirrored, hubbed) = (blobs(&from_mirror), blobs(&from_hub));
    assert_eq!(mirrored.len(), main["files"].as_array().unwrap().len());
    for blob in &mirrored {
        assert!(hubbed.contains(blob), "{blob} is not among {hubbed:?}");
    }
}

#[tokio::test]
async fn github_and_local_models_pull_from_their_own_roots() {
    let server = GitServer::start().await;
    let weights = safetensors_bytes(&[("w", &[32, 32])]);
    let repo = server.repo("acme", "vision");
    repo.file("config.json", br#"{"model_type": "vit"}"#)
        .file("tokenizer.json", br#"{"version": "1.0"}"#)
        .lfs_file("model.safetensors", &weights);
    let first = repo.commit("weights");
    repo.tag("v1");
    repo.lfs_file("model.safetensors", &safetensors_bytes(&[("w", &[8, 8])]));
    let second = repo.commit("smaller weights");
    let app = spawn_app_with(Options {
        github: Some(server),
        ..Default::default()
    })
    .await;
    let tagged = app.upload_github_at("acme/vision", "v1").await;
    assert_eq!(tagged["commit_sha"], first.as_str());
    let main = app.upload_github_at("acme/vision", "main").await;
    assert_eq!(main["commit_sha"], second.as_str());

    let endpoint = app.mirror("github");
    for (revision, model) in [("main", &main), ("v1", &tagged), (first.as_str(), &tagged)] {
        let client = HfClient::new(&endpoint);
        let snapshot = client.snapshot("acme/vision", revision).await;
        assert_eq!(tree_of(&snapshot), files_of(model), "at {revision}");
    }

    let archive = Archive::new()
        .file("tiny-net/config.json", br#"{"model_type":"bert"}"#)
        .file("tiny-net/model.safetensors", &weights)
        .finish();
    let stored = app.upload_local("tiny.zip", &archive).await;
    let id = stored["models"][0]["id"].as_str().unwrap();
    let local: Value = app.get_model(id).await.json().await.unwrap();
    assert_eq!(local["model_tag"], "tiny_net");
    let info = app
        .get_json("/mirror/local/api/models/local/tiny_net")
        .await;
    let commit = info["sha"].as_str().unwrap();
    for revision in ["main", commit] {
        let client = HfClient::new(&app.mirror("local"));
        let snapshot = client.snapshot("local/tiny_net", revision).await;
        assert_eq!(tree_of(&snapshot), files_of(&local), "at {revision}");
    }
    // Each root serves only its own source.
    let missing = HfClient::new(&app.mirror("huggingface"))
        .error("local/tiny_net", "main", "config.json")
        .await;
    assert!(
        missing.contains(&"RepositoryNotFoundError".into()),
        "{missing:?}"
    );
}

#[tokio::test]
async fn unknown_repos_revisions_and_files_raise_the_clients_own_errors() {
    let app = spawn_app().await;
    bert(&app.hub);
    app.upload_hf_at("acme/bert", "main").await;
    let client = HfClient::new(&app.mirror("huggingface"));
    for (repo, revision, file, raised) in [
        (
            "acme/nothing",
            "main",
            "config.json",
            "RepositoryNotFoundError",
        ),
        ("acme/bert", "v9", "config.json", "RevisionNotFoundError"),
        ("acme/bert", "main", "missing.json", "EntryNotFoundError"),
    ] {
        let classes = client.error(repo, revision, file).await;
        assert!(
            classes.contains(&raised.to_string()),
            "{repo}@{revision}/{file}: {classes:?}"
        );
    }
}

#[tokio::test]
async fn a_download_cut_mid_file_resumes_with_a_range() {
    let app = spawn_app().await;
    // 12 MiB: the client writes what it received in 10 MiB pieces, so it
    // can resume only past the first 10 MiB.
    let weights = bert_with(&app.hub, safetensors_bytes(&[("w", &[3 << 20])]));
    app.upload_hf_at("acme/bert", "main").await;
    // The client's link drops once, 11 MiB into the answers it receives.
    let link = CuttingProxy::start(&app.url).await;
    link.cut_once_after(11 << 20);
    let client = HfClient::new(&format!("{}/mirror/huggingface", link.url()));
    let path = client.file("acme/bert", "main", "model.safetensors").await;
    assert_eq!(std::fs::read(path).unwrap(), weights);
    let requests = link.requests().to_ascii_lowercase();
    let resumed_at: Vec<u64> = requests
        .lines()
        .filter_map(|line| line.strip_prefix("range: bytes="))
        .map(|range| range.trim().trim_end_matches('-').parse().unwrap())
        .collect();
    assert_eq!(resumed_at, [10 << 20], "{requests}");
}

#[tokio::test]
async fn files_answer_with_the_hubs_headers_and_ranges() {
    let app = spawn_app().await;
    let weights = bert(&app.hub);
    let model = app.upload_hf_at("acme/bert", "refs/pr/1").await;
    let commit = model["commit_sha"].as_str().unwrap();
    let size = weights.len();
    let file = app.at("/mirror/huggingface/acme/bert/resolve/refs%2Fpr%2F1/model.safetensors");

    let head = app.client.head(&file).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let h = head.headers();
    let quoted_sha256 = format!("\"{}\"", hex::encode(Sha256::digest(&weights)));
    assert_eq!(h["x-repo-commit"], commit);
    assert_eq!(h["etag"].to_str().unwrap(), quoted_sha256);
    assert_eq!(h["x-linked-etag"].to_str().unwrap(), quoted_sha256);
    assert_eq!(h["x-linked-size"].to_str().unwrap(), size.to_string());
    assert_eq!(h["content-length"].to_str().unwrap(), size.to_string());
    assert_eq!(h["accept-ranges"], "bytes");

    let whole = app.client.get(&file).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.unwrap(), weights);

    let part = app.get_range(&file, "bytes=10-19").await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().unwrap(),
        format!("bytes 10-19/{size}")
    );
    assert_eq!(part.bytes().await.unwrap(), weights[10..20]);

    let tail = app.get_range(&file, "bytes=-5").await;
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap(), weights[size - 5..]);

    let past = app.get_range(&file, &format!("bytes={size}-")).await;
    assert_eq!(
        past.headers()["content-range"].to_str().unwrap(),
        format!("bytes */{size}")
    );
    assert_error(past, 416, "RANGE_NOT_SATISFIABLE").await;

    // A regular file's ETag is its git blob id, as on the Hub.
    let config = app
        .client
        .head(app.at(&format!(
            "/mirror/huggingface/acme/bert/resolve/{commit}/config.json"
        )))
        .send()
        .await
        .unwrap();
    let blob = app.hub_etag("acme/bert", "config.json").await;
    assert_eq!(config.headers()["etag"].to_str().unwrap(), blob);
    assert!(config.headers().get("x-linked-etag").is_none());
}

#[tokio::test]
async fn many_clients_download_at_once() {
    let app = spawn_app().await;
    let weights = bert_with(&app.hub, safetensors_bytes(&[("w", &[1 << 18])]));
    app.upload_hf_at("acme/bert", "main").await;
    let file = app.at("/mirror/huggingface/acme/bert/resolve/main/model.safetensors");
    let downloads = (0..32).map(|_| async {
        let response = app.client.get(&file).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap()
    });
    for body in futures_util::future::join_all(downloads).await {
        assert!(body == weights, "a download differs from the stored file");
    }
}

#[tokio::test]
async fn the_model_info_and_the_tree_name_the_stored_files() {
    let app = spawn_app().await;
    let weights = bert(&app.hub);
    let model = app.upload_hf_at("acme/bert", "refs/pr/1").await;
    let commit = model["commit_sha"].as_str().unwrap();

    let info = app
        .get_json("/mirror/huggingface/api/models/acme/bert/revision/refs%2Fpr%2F1")
        .await;
    assert_eq!(info["id"], "acme/bert");
    assert_eq!(info["sha"], commit);
    let siblings = info["siblings"].as_array().unwrap();
    assert_eq!(siblings.len(), model["files"].as_array().unwrap().len());
    let weights_entry = siblings
        .iter()
        .find(|s| s["rfilename"] == "model.safetensors")
        .unwrap();
    assert_eq!(
        weights_entry["lfs"]["sha256"],
        hex::encode(Sha256::digest(&weights))
    );
    assert_eq!(weights_entry["size"], weights.len());

    let tree = app
        .get_json(&format!(
            "/mirror/huggingface/api/models/acme/bert/tree/{commit}?recursive=true&expand=false"
        ))
        .await;
    assert_eq!(tree.as_array().unwrap().len(), siblings.len());
    let onnx = app
        .get_json(&format!(
            "/mirror/huggingface/api/models/acme/bert/tree/{commit}/onnx"
        ))
        .await;
    let blob = app.hub_etag("acme/bert", "onnx/config.json").await;
    assert_eq!(
        onnx,
        json!([{"type": "file", "path": "onnx/config.json", "size": 13,
            "oid": blob.trim_matches('"')}])
    );
}

#[tokio::test]
async fn paths_that_try_to_leave_a_model_name_nothing() {
    let app = spawn_app().await;
    bert(&app.hub);
    app.upload_hf_at("acme/bert", "main").await;
    let (status, answer) = app
        .raw_get(
            "/mirror/huggingface/acme/bert/resolve/main/config.json",
            None,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    // Sent as written: no client library normalises these paths first.
    for path in [
        "/mirror/huggingface/acme/bert/resolve/main/..%2F..%2F..%2Fdb",
        "/mirror/huggingface/acme/bert/resolve/main/%2E%2E/%2E%2E/%2E%2E/db",
        "/mirror/huggingface/acme/bert/resolve/main/../../../../db",
        "/mirror/huggingface/acme/bert/resolve/main//config.json",
        "/mirror/huggingface/acme/bert/resolve/main/./config.json",
        "/mirror/huggingface/acme/bert/resolve/main/onnx/../config.json",
        "/mirror/huggingface/acme/bert/resolve/main/%2Fetc%2Fpasswd",
        "/mirror/elsewhere/acme/bert/resolve/main/config.json",
    ] {
        let (status, answer) = app.raw_get(path, None).await;
        assert_eq!(status, 404, "{path}: {answer}");
    }
}

impl TestApp {
    async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(self.at(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    }

    async fn get_range(&self, url: &str, range: &str) -> reqwest::Response {
        let request = self.client.get(url).header("range", range);
        request.send().await.unwrap()
    }

    /// The ETag the fake hub gives one file of a repo at `main`.
    async fn hub_etag(&self, repo: &str, path: &str) -> String {
        let response = self
            .client
            .head(format!("{}/{repo}/resolve/main/{path}", self.hub.url()))
            .send()
            .await
            .unwrap();
        response.headers()["etag"].to_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn with_an_api_key_the_mirror_takes_it_as_the_clients_token() {
    let app = spawn_app_with(Options {
        api_key: Some("s3cret-key".into()),
        ..Default::default()
    })
    .await;
    bert(&app.hub);
    let response = app
        .client
        .post(app.at("/v1/upload/huggingface"))
        .bearer_auth("s3cret-key")
        .json(&json!({"model_tag": "acme/bert"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let task: Value = response.json().await.unwrap();
    let id = task["id"].as_str().unwrap();
    let url = app.at(&format!("/v1/upload/tasks/{id}"));
    let fetch = || async {
        let answer = app.client.get(&url).bearer_auth("s3cret-key").send().await;
        answer.unwrap().json::<Value>().await.unwrap()
    };
    let task = poll_task(id, Duration::from_secs(30), fetch, is_finished, String::new).await;
    assert_eq!(task["task_status"], "DONE", "{task}");

    let endpoint = app.mirror("huggingface");
    let refused = HfClient::new(&endpoint)
        .error("acme/bert", "main", "config.json")
        .await;
    assert!(!refused.is_empty(), "a client without the key got the file");
    let wrong = HfClient::new(&endpoint)
        .with_token("not-the-key")
        .error("acme/bert", "main", "config.json")
        .await;
    assert!(!wrong.is_empty(), "a client with a wrong key got the file");
    let client = HfClient::new(&endpoint).with_token("s3cret-key");
    let path = client.file("acme/bert", "main", "config.json").await;
    assert_eq!(std::fs::read(path).unwrap(), br#"{"model_type":"bert"}"#);
    // Whatever the spelling, no byte of the model leaves without the key.
    for path in [
        "/mirror/huggingface/api/models/acme/bert",
        "/mirror/huggingface/acme/bert/resolve/main/config.json",
        "//mirror/huggingface/acme/bert/resolve/main/config.json",
        "/mirror//huggingface/acme/bert/resolve/main/config.json",
        "/x/../mirror/huggingface/acme/bert/resolve/main/config.json",
        "/health/../mirror/huggingface/acme/bert/resolve/main/config.json",
        "/%6Dirror/huggingface/acme/bert/resolve/main/config.json",
        "/mirror%2Fhuggingface%2Facme%2Fbert%2Fresolve%2Fmain%2Fconfig.json",
        "/mirror/huggingface/nothing/resolve/main/x",
    ] {
        let (status, answer) = app.raw_get(path, None).await;
        assert!(matches!(status, 401 | 404 | 400), "{path}: {answer}");
        assert!(!answer.contains("model_type"), "{path} leaked: {answer}");
    }
}
