//! `POST /v1/upload/github` against real git over smart HTTP, with the
//! REST and LFS endpoints faked in the same test server.

use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, assert_error, spawn_app_with};
use crate::support::fake_hub::safetensors_bytes;
use crate::support::git_server::GitServer;

const CONFIG: &[u8] = br#"{"model_type": "bert"}"#;
const TOKENIZER: &[u8] = br#"{"version": "1.0"}"#;

/// `pickle.dumps(collections.OrderedDict(), protocol=2)`, or any global.
fn pickle_naming(module: &str, name: &str) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'c'];
    p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    p.extend_from_slice(b")R.");
    p
}

struct Fixture {
    server: GitServer,
    main_weights: Vec<u8>,
    small_weights: Vec<u8>,
    small_commit: String,
    lfs_weights: Vec<u8>,
}

async fn fixture() -> Fixture {
    let server = GitServer::start().await;
    let main_weights = safetensors_bytes(&[("w", &[16, 16])]);
    let small_weights = safetensors_bytes(&[("w", &[4, 4])]);
    let bert = server.repo("acme", "bert");
    bert.file("config.json", CONFIG)
        .file("tokenizer.json", TOKENIZER)
        .file("model.safetensors", &main_weights)
        .file("README.md", b"# bert");
    bert.commit("first");
    bert.tag("v1");
    bert.branch("small")
        .file("model.safetensors", &small_weights);
    let small_commit = bert.commit("smaller weights");
    bert.checkout("main");

    let lfs_weights = safetensors_bytes(&[("w", &[64, 64])]);
    let lfs = server.repo("acme", "lfs-bert");
    lfs.file("config.json", CONFIG)
        .file("tokenizer.json", TOKENIZER)
        .lfs_file("model.safetensors", &lfs_weights);
    lfs.commit("weights in LFS");

    let no_tokenizer = server.repo("acme", "no-tokenizer");
    no_tokenizer
        .file("config.json", CONFIG)
        .file("model.safetensors", &main_weights);
    no_tokenizer.commit("no tokenizer");

    let two_configs = server.repo("acme", "two-configs");
    two_configs
        .file("config.json", CONFIG)
        .file("old/config.json", CONFIG)
        .file("tokenizer.json", TOKENIZER)
        .file("model.safetensors", &main_weights);
    two_configs.commit("two configs");

    let both = server.repo("acme", "both-weights");
    both.file("model/config.json", CONFIG)
        .file("model/tokenizer.json", TOKENIZER)
        .file("model/model.safetensors", &main_weights)
        .file(
            "model/pytorch_model.bin",
            &pickle_naming("collections", "OrderedDict"),
        )
        .file("model/extra/notes.txt", b"not installed");
    both.commit("both kinds of weights");

    let unsafe_repo = server.repo("acme", "unsafe");
    unsafe_repo
        .file("config.json", CONFIG)
        .file("tokenizer.json", TOKENIZER)
        .file("pytorch_model.bin", &pickle_naming("os", "system"));
    unsafe_repo.commit("a pickle that runs a command");

    Fixture {
        server,
        main_weights,
        small_weights,
        small_commit,
        lfs_weights,
    }
}

async fn app_for(server: &GitServer, token: Option<&str>) -> TestApp {
    spawn_app_with(Options {
        github: Some(server.clone()),
        github_token: token.map(str::to_string),
        ..Default::default()
    })
    .await
}

async fn upload(app: &TestApp, body: Value) -> Value {
    let response = app.post_github(body).await;
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let task: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/upload/tasks/{}", task["id"].as_str().unwrap())
    );
    assert_eq!(task["source"], "GITHUB");
    app.wait_task(task["id"].as_str().unwrap()).await
}

async fn model_of(app: &TestApp, task: &Value) -> Value {
    app.get_model(task["model_id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_requests_are_422_or_400() {
    let f = fixture().await;
    let app = app_for(&f.server, None).await;
    for body in [
        json!({}),
        json!({"repo_name": "bert"}),
        json!({"owner": "acme"}),
        json!({"owner": "", "repo_name": "bert"}),
        json!({"owner": "acme", "repo_name": ""}),
        json!({"owner": "acme", "repo_name": "bert", "revision": "main", "tag": "v1"}),
        json!({"owner": "acme", "repo_name": 5}),
    ] {
        assert_error(app.post_github(body).await, 422, "VALIDATION_ERROR").await;
    }
    for body in [
        json!({"owner": "-acme", "repo_name": "bert"}),
        json!({"owner": "acme", "repo_name": "a/b"}),
        json!({"owner": "acme", "repo_name": ".."}),
        json!({"owner": "acme", "repo_name": "bert", "revision": "a..b"}),
        json!({"owner": "acme", "repo_name": "bert", "tag": "bad ref"}),
    ] {
        assert_error(app.post_github(body).await, 400, "INVALID_URL").await;
    }
}

#[tokio::test]
async fn missing_repositories_and_branches_are_404() {
    let f = fixture().await;
    let app = app_for(&f.server, None).await;
    let repo = app
        .post_github(json!({"owner": "acme", "repo_name": "nothing"}))
        .await;
    assert_error(repo, 404, "NOT_FOUND").await;
    let branch = app
        .post_github(json!({"owner": "acme", "repo_name": "bert", "revision": "no-such-branch"}))
        .await;
    assert_error(branch, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn branches_tags_and_commits_are_cloned_and_installed() {
    let f = fixture().await;
    let app = app_for(&f.server, None).await;
    let main = upload(
        &app,
        json!({"owner": "acme", "repo_name": "bert", "tag": "main"}),
    )
    .await;
    assert_eq!(main["task_status"], "DONE", "{main}");
    let model = model_of(&app, &main).await;
    assert_eq!(model["model_tag"], "acme/bert@main");
    let commit = model["commit_sha"].as_str().unwrap();
    assert_eq!(model["path"], format!("models/github/acme/bert/{commit}"));
    let folder = app.data_dir.join(model["path"].as_str().unwrap());
    assert_eq!(
        std::fs::read(folder.join("model.safetensors")).unwrap(),
        f.main_weights
    );
    assert!(folder.join("README.md").exists() && !folder.join(".git").exists());

    let again = app
        .post_github(json!({"owner": "acme", "repo_name": "bert", "tag": ""}))
        .await;
    assert_error(again, 409, "MODEL_ALREADY_EXISTS").await;

    let small = upload(
        &app,
        json!({"owner": "acme", "repo_name": "bert", "revision": "small"}),
    )
    .await;
    assert_eq!(small["task_status"], "DONE", "{small}");
    let small_model = model_of(&app, &small).await;
    assert_eq!(small_model["commit_sha"], f.small_commit.as_str());
    let small_folder = app.data_dir.join(small_model["path"].as_str().unwrap());
    assert_eq!(
        std::fs::read(small_folder.join("model.safetensors")).unwrap(),
        f.small_weights
    );

    let tagged = upload(
        &app,
        json!({"owner": "acme", "repo_name": "bert", "revision": "v1"}),
    )
    .await;
    assert_eq!(tagged["task_status"], "DONE", "{tagged}");
    let by_commit = upload(
        &app,
        json!({"owner": "acme", "repo_name": "bert", "revision": f.small_commit}),
    )
    .await;
    assert_eq!(by_commit["task_status"], "DONE", "{by_commit}");
    let short = upload(
        &app,
        json!({"owner": "acme", "repo_name": "bert", "revision": &f.small_commit[..7]}),
    )
    .await;
    assert_eq!(short["task_status"], "DONE", "{short}");
    assert_eq!(short["attempts"], 1, "{short}");
    assert!(
        app.leftover_tmp_files().is_empty(),
        "{:?}",
        app.leftover_tmp_files()
    );
}

#[tokio::test]
async fn lfs_weights_arrive_as_their_real_bytes() {
    let f = fixture().await;
    let app = app_for(&f.server, None).await;
    let done = upload(&app, json!({"owner": "acme", "repo_name": "lfs-bert"})).await;
    assert_eq!(done["task_status"], "DONE", "{done}");
    let model = model_of(&app, &done).await;
    let weights = app
        .data_dir
        .join(model["path"].as_str().unwrap())
        .join("model.safetensors");
    assert_eq!(
        std::fs::read(weights).unwrap(),
        f.lfs_weights,
        "the pointer was installed, not the object"
    );
    assert!(
        f.server
            .log()
            .iter()
            .any(|l| l.ends_with("/info/lfs/objects/batch"))
    );
}

#[tokio::test]
async fn missing_duplicate_and_unsafe_files_fail_at_once() {
    let f = fixture().await;
    let app = app_for(&f.server, None).await;
    for (repo, needle, code) in [
        (
            "no-tokenizer",
            "exactly one tokenizer.json; it holds 0",
            "MISSING_FILES",
        ),
        (
            "two-configs",
            "exactly one config.json; it holds 2",
            "MISSING_FILES",
        ),
        ("unsafe", "os.system", "UNSAFE_PICKLE"),
    ] {
        let task = upload(&app, json!({"owner": "acme", "repo_name": repo})).await;
        assert_eq!(task["task_status"], "FAILED", "{repo}: {task}");
        assert_eq!(task["attempts"], 1, "{repo}: {task}");
        assert_eq!(task["error_code"], code, "{repo}: {task}");
        assert!(
            task["error_msg"].as_str().unwrap().contains(needle),
            "{repo}: {task}"
        );
    }
    assert!(app.leftover_tmp_files().is_empty());
}

#[tokio::test]
async fn both_kinds_of_weights_are_kept_from_the_weights_folder() {
    let f = fixture().await;
    let app = app_for(&f.server, None).await;
    let done = upload(&app, json!({"owner": "acme", "repo_name": "both-weights"})).await;
    assert_eq!(done["task_status"], "DONE", "{done}");
    let model = model_of(&app, &done).await;
    let mut names: Vec<&str> = model["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "tokenizer.json"
        ]
    );
}

#[tokio::test]
async fn rate_limits_and_unreachable_github_are_502() {
    let f = fixture().await;
    let app = app_for(&f.server, None).await;
    f.server.rate_limit(true);
    let message = assert_error(
        app.post_github(json!({"owner": "acme", "repo_name": "bert"}))
            .await,
        502,
        "UPSTREAM_ERROR",
    )
    .await;
    assert!(message.contains("GITHUB_TOKEN"), "{message}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let app = spawn_app_with(Options {
        github_api_url: Some(closed),
        ..Default::default()
    })
    .await;
    let message = assert_error(
        app.post_github(json!({"owner": "acme", "repo_name": "bert"}))
            .await,
        502,
        "UPSTREAM_ERROR",
    )
    .await;
    assert!(message.contains("connect"), "{message}");
}

#[tokio::test]
async fn a_flaky_git_server_is_retried_and_a_refused_token_is_not() {
    let f = fixture().await;
    let app = app_for(&f.server, Some("ghp_bad")).await;
    f.server.fail_next_git(1);
    let done = upload(&app, json!({"owner": "acme", "repo_name": "bert"})).await;
    assert_eq!(done["task_status"], "DONE", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");

    f.server.require_git_token("ghp_good");
    let before = f.server.log().len();
    let refused = upload(&app, json!({"owner": "acme", "repo_name": "lfs-bert"})).await;
    assert_eq!(refused["task_status"], "FAILED", "{refused}");
    assert_eq!(refused["error_code"], "UNAUTHORIZED", "{refused}");
    assert_eq!(
        refused["attempts"], 1,
        "a refused token is not retried: {refused}"
    );
    let asked = f.server.log()[before..]
        .iter()
        .filter(|l| l.contains("info/refs"))
        .count();
    assert!(
        asked <= 3,
        "libgit2 kept asking with the refused token: {asked} requests"
    );
}

#[tokio::test]
async fn a_git_server_that_redirects_elsewhere_gets_no_token() {
    let f = fixture().await;
    let elsewhere = GitServer::start().await;
    elsewhere.require_git_token("ghp_secret");
    f.server.redirect_git_to(&elsewhere.server_url());
    let app = app_for(&f.server, Some("ghp_secret")).await;
    let failed = upload(&app, json!({"owner": "acme", "repo_name": "bert"})).await;
    assert_eq!(failed["task_status"], "FAILED", "{failed}");
    let log = elsewhere.log();
    assert!(
        log.iter().any(|l| l.contains("info/refs")),
        "libgit2 followed the redirect: {log:?}"
    );
    assert!(
        log.iter().all(|l| !l.ends_with("+auth")),
        "the token went to the other host: {log:?}"
    );
    assert!(
        !failed["error_msg"].as_str().unwrap().contains("ghp_secret"),
        "{failed}"
    );
}

#[tokio::test]
async fn the_token_opens_private_repositories_for_the_api_git_and_lfs() {
    let f = fixture().await;
    f.server.require_token("ghp_good");
    let anonymous = app_for(&f.server, None).await;
    assert_error(
        anonymous
            .post_github(json!({"owner": "acme", "repo_name": "lfs-bert"}))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    let app = app_for(&f.server, Some("ghp_good")).await;
    let done = upload(&app, json!({"owner": "acme", "repo_name": "lfs-bert"})).await;
    assert_eq!(done["task_status"], "DONE", "{done}");
}
