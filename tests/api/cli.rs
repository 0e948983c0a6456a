//! The command-line client (`vectorize upload|tasks|watch|cancel|models`)
//! run as the real binary against a live service: each command's `--json`
//! output, the exit codes (0 DONE, 1 FAILED or CANCELLED or refused, 2
//! usage or connection, 130 Ctrl-C leaving the task running), `--no-wait`,
//! and the plain progress lines written when stderr is not a terminal.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::helpers::{Options, TestApp, small_model, spawn_app, spawn_app_with};
use crate::support::archives::{Archive, safetensors};
use crate::support::fake_hub::{HubFile, HubRepo, random_commit, safetensors_bytes};
use crate::support::git_server::GitServer;

/// How long any one run of the client may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// What a finished run of the client left.
struct CliRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl CliRun {
    /// Stdout as one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// The client with `VECTORIZE_URL` at `url`, no key unless given, and no
/// terminal: stdin closed, stdout and stderr piped.
fn client(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vectorize"));
    command
        .args(args)
        .env("VECTORIZE_URL", url)
        .env_remove("VECTORIZE_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn finish(child: Child) -> CliRun {
    let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("the client ends within the limit")
        .expect("the client's output can be read");
    CliRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn run_at(url: &str, args: &[&str]) -> CliRun {
    finish(client(url, args).spawn().expect("the binary runs")).await
}

async fn run(app: &TestApp, args: &[&str]) -> CliRun {
    run_at(&app.url, args).await
}

/// A repository without weights: its task fails at once, for want of a
/// safetensors file.
fn model_without_weights(id: &str) -> HubRepo {
    HubRepo {
        id: id.into(),
        commit: random_commit(),
        revisions: vec!["main".into()],
        files: vec![HubFile {
            path: "config.json".into(),
            bytes: br#"{"model_type":"bert"}"#.to_vec(),
            lfs: false,
        }],
        ..Default::default()
    }
}

/// An app whose hub sends file bodies slowly enough that a task stays
/// RUNNING for the test to act on it.
async fn slow_app(repo: &str) -> TestApp {
    let app = spawn_app().await;
    let mut model = small_model(repo);
    let weights = model
        .files
        .iter_mut()
        .find(|f| f.path == "model.safetensors");
    weights.expect("small_model has weights").bytes = safetensors_bytes(&[("w", &[256, 1024])]);
    app.hub.add_repo(model);
    app.hub.slow_downloads(64 * 1024);
    app
}

#[tokio::test]
async fn upload_waits_for_done_and_every_read_command_prints_json() {
    let app = spawn_app().await;
    app.hub.add_repo(small_model("acme/cli-bert"));

    let upload = run(&app, &["upload", "huggingface", "acme/cli-bert", "--json"]).await;
    upload.assert_code(0);
    assert!(
        upload.stderr.is_empty(),
        "--json off a terminal is quiet: {}",
        upload.stderr
    );
    let task = upload.json();
    assert_eq!(task["task_status"], "DONE", "{task}");
    assert_eq!(task["model_tag"], "acme/cli-bert@main");
    let (task_id, model_id) = (
        task["id"].as_str().unwrap(),
        task["model_id"].as_str().unwrap(),
    );

    let shown = run(&app, &["tasks", task_id, "--json"]).await;
    assert_eq!(shown.assert_code(0).json(), app.task(task_id).await);
    let tasks = run(
        &app,
        &[
            "tasks",
            "--status",
            "done",
            "--source",
            "huggingface",
            "--json",
        ],
    )
    .await;
    let tasks = tasks.assert_code(0).json();
    assert_eq!(tasks["total"], 1, "{tasks}");
    assert_eq!(tasks["items"][0]["id"], task_id);
    let none = run(&app, &["tasks", "--status", "failed", "--json"]).await;
    assert_eq!(none.assert_code(0).json()["total"], 0);

    let model = run(&app, &["models", model_id, "--json"]).await;
    let model = model.assert_code(0).json();
    assert_eq!(model["model_tag"], "acme/cli-bert@main");
    assert_eq!(model["files"].as_array().unwrap().len(), 3, "{model}");
    let models = run(&app, &["models", "--source", "HUGGINGFACE", "--json"]).await;
    let models = models.assert_code(0).json();
    assert_eq!(
        (models["total"].clone(), models["items"][0]["id"].clone()),
        (1.into(), model_id.into())
    );

    let deleted = run(&app, &["models", "delete", model_id, "--json"]).await;
    assert_eq!(
        deleted.assert_code(0).json(),
        serde_json::json!({"id": model_id, "deleted": true})
    );
    assert_eq!(app.get_model(model_id).await.status(), 404);
    let gone = run(&app, &["models", model_id, "--json"]).await;
    gone.assert_code(1);
    assert!(
        gone.stdout.is_empty() && gone.stderr.contains("NOT_FOUND"),
        "{}",
        gone.stderr
    );
}

#[tokio::test]
async fn without_json_results_go_to_stdout_and_progress_lines_to_stderr() {
    let app = spawn_app().await;
    app.hub.add_repo(small_model("acme/plain-bert"));

    let upload = run(&app, &["upload", "hf", "acme/plain-bert"]).await;
    upload.assert_code(0);
    let first = upload.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("acme/plain-bert@main: "),
        "{}",
        upload.stderr
    );
    assert!(
        !upload.stderr.contains('\u{1b}'),
        "no terminal, no escape codes"
    );
    assert!(
        upload
            .stdout
            .starts_with("done: acme/plain-bert@main is model "),
        "{}",
        upload.stdout
    );
    assert!(
        upload
            .stdout
            .contains("models--acme--plain-bert/snapshots/"),
        "{}",
        upload.stdout
    );

    let tasks = run(&app, &["tasks"]).await;
    let header = tasks
        .assert_code(0)
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        header.starts_with("ID") && header.contains("STATUS"),
        "{}",
        tasks.stdout
    );
    assert!(
        tasks.stdout.contains("DONE") && tasks.stdout.ends_with("\n1 task\n"),
        "{}",
        tasks.stdout
    );
}

#[tokio::test]
async fn a_failed_task_exits_1_with_the_services_reason() {
    let app = spawn_app().await;
    app.hub.add_repo(model_without_weights("acme/no-weights"));

    let upload = run(
        &app,
        &["upload", "huggingface", "acme/no-weights", "--json"],
    )
    .await;
    let task = upload.assert_code(1).json();
    assert_eq!(task["task_status"], "FAILED", "{task}");
    let reason = task["error_msg"].as_str().unwrap();
    assert!(
        upload.stderr.contains("failed: acme/no-weights@main"),
        "{}",
        upload.stderr
    );
    assert!(upload.stderr.contains(reason), "{}", upload.stderr);

    let watched = run(&app, &["watch", task["id"].as_str().unwrap()]).await;
    watched.assert_code(1);
    assert!(watched.stderr.contains(reason), "{}", watched.stderr);
}

#[tokio::test]
async fn no_wait_prints_the_queued_task_and_cancel_ends_it() {
    let app = slow_app("acme/slow-bert").await;

    let queued = run(
        &app,
        &[
            "upload",
            "huggingface",
            "acme/slow-bert",
            "--no-wait",
            "--json",
        ],
    )
    .await;
    let task = queued.assert_code(0).json();
    assert!(
        matches!(task["task_status"].as_str(), Some("PENDING" | "RUNNING")),
        "{task}"
    );
    let id = task["id"].as_str().unwrap().to_string();

    let text = run(&app, &["tasks", &id]).await;
    assert!(text.assert_code(0).stdout.contains(&id), "{}", text.stdout);

    let cancelled = run(&app, &["cancel", &id, "--json"]).await;
    assert_eq!(cancelled.assert_code(0).json()["task_status"], "CANCELLED");
    let again = run(&app, &["cancel", &id]).await;
    again.assert_code(1);
    assert!(again.stderr.contains("TASK_FINISHED"), "{}", again.stderr);

    let watched = run(&app, &["watch", &id, "--json"]).await;
    assert_eq!(watched.assert_code(1).json()["task_status"], "CANCELLED");
    assert!(
        watched.stderr.contains("cancelled: acme/slow-bert@main"),
        "{}",
        watched.stderr
    );
}

#[tokio::test]
async fn a_waiting_client_sees_a_cancel_from_elsewhere_and_a_second_upload_follows_the_first() {
    let app = slow_app("acme/shared-bert").await;
    let args = ["upload", "huggingface", "acme/shared-bert", "--json"];
    let first = client(&app.url, &args).spawn().unwrap();
    let id = wait_for_running_task(&app).await;

    // The same model again: 409 UPLOAD_IN_PROGRESS, and the client follows that task.
    let mut second = client(&app.url, &args).spawn().unwrap();
    let (line, _rest) = first_stderr_line(&mut second).await;
    assert!(line.contains("following that upload"), "{line}");

    assert_eq!(app.cancel_task(&id).await.status(), 200);
    for run in [finish(first).await, finish(second).await] {
        let task = run.assert_code(1).json();
        assert_eq!(
            (task["id"].as_str(), task["task_status"].as_str()),
            (Some(id.as_str()), Some("CANCELLED"))
        );
    }
}

#[tokio::test]
async fn ctrl_c_without_a_terminal_leaves_the_task_running() {
    let app = slow_app("acme/left-bert").await;
    let mut waiting = client(&app.url, &["upload", "huggingface", "acme/left-bert"])
        .spawn()
        .unwrap();
    // The first progress line comes after the client took over Ctrl-C.
    let (line, rest) = first_stderr_line(&mut waiting).await;
    assert!(line.starts_with("acme/left-bert@main: "), "{line}");
    let pid = waiting.id().unwrap().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());

    finish(waiting).await.assert_code(130);
    let rest = rest.await.unwrap();
    assert!(rest.contains("left running: task "), "{rest}");
    let id = wait_for_running_task(&app).await;
    let task = app.task(&id).await;
    assert!(
        matches!(task["task_status"].as_str(), Some("PENDING" | "RUNNING")),
        "{task}"
    );
    app.cancel_task(&id).await;
}

#[tokio::test]
async fn usage_and_connection_errors_exit_2() {
    let app = spawn_app().await;
    let unreachable = run_at("http://127.0.0.1:1", &["tasks"]).await;
    unreachable.assert_code(2);
    assert!(
        unreachable
            .stderr
            .contains("cannot reach the vectorize service at http://127.0.0.1:1"),
        "{}",
        unreachable.stderr
    );

    let not_a_url = run(&app, &["models", "--url", "127.0.0.1 8000"]).await;
    not_a_url.assert_code(2);
    assert!(
        not_a_url
            .stderr
            .contains("is not the URL of a vectorize service"),
        "{}",
        not_a_url.stderr
    );

    // Something answers, but not as vectorize does.
    let not_vectorize = run_at(&app.hub.url(), &["tasks", "--json"]).await;
    not_vectorize.assert_code(2);
    assert!(
        not_vectorize.stderr.contains("is it a vectorize service?"),
        "{}",
        not_vectorize.stderr
    );

    run(&app, &["tasks", "not-a-uuid"]).await.assert_code(2);
    run(&app, &["upload", "github", "no-slash"])
        .await
        .assert_code(2);
    let bad_tag = run(&app, &["upload", "huggingface", "bad!!name"]).await;
    bad_tag.assert_code(2);
    assert!(
        bad_tag.stderr.contains("INVALID_MODEL_TAG"),
        "{}",
        bad_tag.stderr
    );
    run(&app, &["upload", "local", "/no/such/archive.zip"])
        .await
        .assert_code(2);
}

#[tokio::test]
async fn the_api_key_comes_from_the_flag_or_the_environment() {
    let app = spawn_app_with(Options {
        api_key: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let refused = run(&app, &["tasks", "--json"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("UNAUTHORIZED"),
        "{}",
        refused.stderr
    );

    let flag = run(&app, &["tasks", "--json", "--api-key", "s3cret"]).await;
    assert_eq!(flag.assert_code(0).json()["total"], 0);
    let mut command = client(&app.url, &["models", "--json"]);
    command.env("VECTORIZE_API_KEY", "s3cret");
    let env = finish(command.spawn().unwrap()).await;
    assert_eq!(env.assert_code(0).json()["total"], 0);
}

#[tokio::test]
async fn upload_github_waits_for_the_clone() {
    let git = GitServer::start().await;
    let repo = git.repo("acme", "cli-bert");
    repo.file("config.json", br#"{"model_type": "bert"}"#)
        .file("tokenizer.json", br#"{"version": "1.0"}"#)
        .lfs_file("model.safetensors", &safetensors());
    repo.commit("weights in LFS");
    let app = spawn_app_with(Options {
        github: Some(git),
        ..Default::default()
    })
    .await;

    let upload = run(&app, &["upload", "github", "acme/cli-bert", "--json"]).await;
    let task = upload.assert_code(0).json();
    assert_eq!(
        (task["source"].as_str(), task["task_status"].as_str()),
        (Some("GITHUB"), Some("DONE")),
        "{task}"
    );
    assert_eq!(task["model_tag"], "acme/cli-bert@main");
}

#[tokio::test]
async fn upload_local_streams_the_archive_and_prints_the_report() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("tiny.zip");
    let bytes = Archive::new()
        .file("model.safetensors", &safetensors())
        .file("encoder/model.safetensors", &safetensors())
        .finish();
    std::fs::write(&archive, bytes).unwrap();
    let path = archive.to_str().unwrap();

    let upload = run(
        &app,
        &[
            "upload",
            "local",
            path,
            "--model-name",
            "tiny root",
            "--json",
        ],
    )
    .await;
    let report = upload.assert_code(0).json();
    assert_eq!(report["total_models"], 2, "{report}");
    let mut tags: Vec<&str> = report["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model_tag"].as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["encoder", "tiny_root"]);

    // Again, in text: both exist now, so the service answers 409.
    let again = run(
        &app,
        &["upload", "local", path, "--model-name", "tiny root"],
    )
    .await;
    again.assert_code(1);
    assert!(
        again.stderr.starts_with("sending tiny.zip ("),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("MODEL_ALREADY_EXISTS"),
        "{}",
        again.stderr
    );

    let not_zip = dir.path().join("notes.zip");
    std::fs::write(&not_zip, b"not a zip archive").unwrap();
    let refused = run(&app, &["upload", "local", not_zip.to_str().unwrap()]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("INVALID_FILE"),
        "{}",
        refused.stderr
    );
}

/// The id of the one task on the app, once it is RUNNING.
async fn wait_for_running_task(app: &TestApp) -> String {
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        let list: Value = app
            .list_tasks("?status=RUNNING")
            .await
            .json()
            .await
            .unwrap();
        if let Some(id) = list["items"][0]["id"].as_str() {
            return id.to_string();
        }
        assert!(Instant::now() < deadline, "no task got to RUNNING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Takes the child's stderr: answers its first line, and a task that
/// collects the rest (which `finish` then no longer sees).
async fn first_stderr_line(child: &mut Child) -> (String, JoinHandle<String>) {
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    tokio::time::timeout(RUN_LIMIT, reader.read_line(&mut line))
        .await
        .expect("a first line within the limit")
        .expect("stderr can be read");
    let rest = tokio::spawn(async move {
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest).await;
        rest
    });
    (line.trim_end().to_string(), rest)
}
