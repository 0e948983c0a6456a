//! The download engine through the service: files in ranged parts over
//! several connections, a part cut mid-body fetched again on its own, a
//! server that ignores `Range`, a corrupt part, the bandwidth cap, disk
//! admission (507 at the POST, `INSUFFICIENT_STORAGE` at an attempt's
//! start), progress that never goes back within an attempt, and cancel
//! during a parallel download.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vectorize::ConfigArgs;

use crate::helpers::{Options, TestApp, assert_error, small_model, spawn_app_with};
use crate::support::fake_hub::{FakeHub, HubRepo, LoggedRequest, safetensors_bytes};

/// The part size the tests use (the smallest the service accepts).
const PART: u64 = 64 * 1024;

/// A service whose downloads use `connections` connections and parts of `PART` bytes.
async fn app_with(connections: usize, config: ConfigArgs) -> TestApp {
    let config = config.or(ConfigArgs {
        download_connections: Some(connections),
        part_bytes: Some(PART),
        ..Default::default()
    });
    spawn_app_with(Options {
        config,
        ..Default::default()
    })
    .await
}

/// A small model whose LFS weights hold `floats` f32 values.
fn model_with_weights(id: &str, floats: usize) -> HubRepo {
    let mut repo = small_model(id);
    let weights = repo.files.iter_mut().find(|f| f.lfs).unwrap();
    weights.bytes = safetensors_bytes(&[("w", &[floats])]);
    repo
}

fn weights(repo: &HubRepo) -> &[u8] {
    &repo.files.iter().find(|f| f.lfs).unwrap().bytes
}

fn weights_sha(repo: &HubRepo) -> String {
    hex::encode(Sha256::digest(weights(repo)))
}

/// The CDN's GETs of the weights, oldest first, as half-open byte ranges
/// (a GET without `Range` asks for the whole file).
fn weight_gets(hub: &FakeHub, repo: &HubRepo) -> Vec<(u64, u64)> {
    let (sha, size) = (weights_sha(repo), weights(repo).len() as u64);
    hub.log()
        .into_iter()
        .filter(|r| r.method == "GET" && r.host.starts_with("localhost:"))
        .filter(|r| r.path.ends_with(&sha))
        .map(|r| requested_range(&r, size))
        .collect()
}

fn requested_range(request: &LoggedRequest, size: u64) -> (u64, u64) {
    let Some(range) = &request.range else {
        return (0, size);
    };
    let (start, end) = range
        .strip_prefix("bytes=")
        .unwrap()
        .split_once('-')
        .unwrap();
    let end = if end.is_empty() {
        size
    } else {
        end.parse::<u64>().unwrap() + 1
    };
    (start.parse().unwrap(), end)
}

/// `[0, size)` cut into parts of `PART` bytes.
fn parts_of(size: u64) -> Vec<(u64, u64)> {
    (0..size.div_ceil(PART))
        .map(|i| (i * PART, ((i + 1) * PART).min(size)))
        .collect()
}

fn assert_weights_installed(app: &TestApp, repo: &HubRepo) {
    let snapshot = app
        .hf_cache()
        .join(format!("models--{}", repo.id.replace('/', "--")))
        .join("snapshots")
        .join(&repo.commit);
    let got = std::fs::read(snapshot.join("model.safetensors")).unwrap();
    assert!(got == weights(repo), "the installed weights differ");
}

#[tokio::test]
async fn a_large_file_comes_in_parts_and_a_cut_part_alone_is_fetched_again() {
    let token = ConfigArgs {
        hf_token: Some(String::from("hf_parts_token").into()),
        ..Default::default()
    };
    let app = app_with(4, token).await;
    let mut repo = model_with_weights("acme/parts", 150 * 1024);
    repo.gated = Some("auto");
    app.hub.set_valid_token("hf_parts_token");
    app.hub.add_repo(repo.clone());
    app.hub.cut_next_download_after(20_000);
    let id = app.upload_hf(&repo.id).await;
    let done = app.wait_task(&id).await;
    assert_eq!(done["task_status"], "DONE", "{done}");
    // The cut part was asked for again inside the same attempt.
    assert_eq!(done["attempts"], 1, "{done}");
    assert_weights_installed(&app, &repo);

    let size = weights(&repo).len() as u64;
    let parts = parts_of(size);
    assert!(parts.len() >= 8, "{} parts", parts.len());
    let mut asked: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for range in weight_gets(&app.hub, &repo) {
        *asked.entry(range).or_default() += 1;
    }
    let again: Vec<_> = asked
        .keys()
        .filter(|range| !parts.contains(range))
        .copied()
        .collect();
    for part in &parts {
        assert_eq!(asked.get(part), Some(&1), "part {part:?}: {asked:?}");
    }
    // Exactly one range more: the rest of the cut part, from the cut on.
    assert_eq!(again.len(), 1, "{asked:?}");
    let (start, end) = again[0];
    assert!(
        parts.iter().any(|&(s, e)| start == s + 20_000 && end == e),
        "{again:?} is not the rest of a cut part: {asked:?}"
    );
    // Each part followed the hub's redirect itself; the token went to the
    // hub every time and to the CDN never.
    for request in app.hub.log() {
        let to_cdn = request.host.starts_with("localhost:");
        let with_token = request.authorization.as_deref() == Some("Bearer hf_parts_token");
        assert_eq!(with_token, !to_cdn, "{request:?}");
    }
}

#[tokio::test]
async fn a_server_that_ignores_range_gets_one_stream() {
    let app = app_with(4, ConfigArgs::default()).await;
    let repo = model_with_weights("acme/no-range", 100 * 1024);
    app.hub.add_repo(repo.clone());
    app.hub.ignore_range(true);
    let id = app.upload_hf(&repo.id).await;
    let done = app.wait_task(&id).await;
    assert_eq!(done["task_status"], "DONE", "{done}");
    assert_eq!(done["attempts"], 1);
    assert_weights_installed(&app, &repo);
    let gets = weight_gets(&app.hub, &repo);
    assert_eq!(gets.len(), 1, "one request, answered whole: {gets:?}");
}

#[tokio::test]
async fn a_corrupt_part_fails_the_attempt_and_the_file_is_fetched_again() {
    let app = app_with(4, ConfigArgs::default()).await;
    let repo = model_with_weights("acme/corrupt", 100 * 1024);
    app.hub.add_repo(repo.clone());
    app.hub.corrupt_next_download();
    let id = app.upload_hf(&repo.id).await;
    let done = app.wait_task(&id).await;
    assert_eq!(done["task_status"], "DONE", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    assert_weights_installed(&app, &repo);
    // The spoiled file was not trusted in part: every part came twice.
    let size = weights(&repo).len() as u64;
    let gets = weight_gets(&app.hub, &repo);
    for part in parts_of(size) {
        let times = gets.iter().filter(|&&range| range == part).count();
        assert_eq!(times, 2, "part {part:?}: {gets:?}");
    }
}

#[tokio::test]
async fn bytes_that_never_match_their_sha256_fail_with_checksum_mismatch() {
    let app = app_with(4, ConfigArgs::default()).await;
    let repo = model_with_weights("acme/always-corrupt", 100 * 1024);
    app.hub.add_repo(repo.clone());
    app.hub.corrupt_every_download();
    let id = app.upload_hf(&repo.id).await;
    let failed = app.wait_task(&id).await;
    assert_eq!(failed["task_status"], "FAILED", "{failed}");
    assert_eq!(failed["attempts"], 4, "{failed}");
    assert_eq!(failed["error_code"], "CHECKSUM_MISMATCH", "{failed}");
    assert!(app.leftover_tmp_files().is_empty());
}

#[tokio::test]
async fn the_bandwidth_cap_holds_every_download_of_the_node() {
    const CAP: u64 = 2 << 20;
    let config = ConfigArgs {
        max_bytes_per_sec: Some(CAP),
        part_bytes: Some(1 << 20),
        ..Default::default()
    };
    let app = app_with(8, config).await;
    let repo = model_with_weights("acme/capped", 2 << 20);
    let size = weights(&repo).len() as u64;
    assert!(size >= 8 << 20);
    app.hub.add_repo(repo.clone());
    let started = Instant::now();
    let id = app.upload_hf(&repo.id).await;
    let done = app.wait_task(&id).await;
    let took = started.elapsed();
    assert_eq!(done["task_status"], "DONE", "{done}");
    assert_weights_installed(&app, &repo);
    // 8 MiB at 2 MiB/s, less the bucket's quarter-second burst.
    assert!(
        took >= Duration::from_secs(3),
        "8 MiB arrived in {took:?} under a 2 MiB/s cap"
    );
}

#[tokio::test]
async fn an_upload_that_cannot_fit_is_507_and_leaves_no_task() {
    let config = ConfigArgs {
        min_free_bytes: Some(1 << 62),
        ..Default::default()
    };
    let app = app_with(8, config).await;
    app.hub.add_repo(small_model("acme/too-big"));
    let response = app.post_hf(json!({"model_tag": "acme/too-big"})).await;
    let message = assert_error(response, 507, "INSUFFICIENT_STORAGE").await;
    assert!(
        message.contains("acme/too-big@main") && message.contains("VECTORIZE_MIN_FREE_BYTES"),
        "{message}"
    );
    let tasks: Value = app.list_tasks("").await.json().await.unwrap();
    assert_eq!(tasks["total"], 0, "{tasks}");
    assert!(
        app.hub
            .log()
            .iter()
            .all(|r| !r.host.starts_with("localhost:")),
        "nothing was downloaded"
    );
}

#[tokio::test]
async fn a_task_that_finds_too_little_space_fails_at_once_without_writing() {
    // The first attempt fails at the hub; before the retry (2 s later)
    // the hub lists the weights at an exabyte.
    let config = ConfigArgs {
        retry_base_ms: Some(2_000),
        ..Default::default()
    };
    let app = app_with(8, config).await;
    let repo = small_model("acme/grows");
    app.hub.add_repo(repo.clone());
    app.hub
        .fail_next_matching(usize::MAX, 503, "GET /acme/grows/resolve/");
    let id = app.upload_hf(&repo.id).await;
    app.wait_for(&id, Duration::from_secs(20), |t| {
        t["task_status"] == "PENDING" && t["attempts"] == 1
    })
    .await;
    app.hub.declare_size(&weights_sha(&repo), 1 << 60);
    app.hub.clear_faults();
    app.hub.clear_log();

    let failed = app.wait_task(&id).await;
    assert_eq!(failed["task_status"], "FAILED", "{failed}");
    assert_eq!(failed["error_code"], "INSUFFICIENT_STORAGE", "{failed}");
    assert_eq!(failed["attempts"], 2, "not retried: {failed}");
    let message = failed["error_msg"].as_str().unwrap();
    assert!(message.contains("VECTORIZE_MIN_FREE_BYTES"), "{message}");
    let files: Vec<_> = app
        .hub
        .log()
        .into_iter()
        .filter(|r| !r.path.starts_with("/api/"))
        .collect();
    assert!(files.is_empty(), "files were fetched: {files:?}");
    assert_eq!(app.leftover_tmp_files(), Vec::<std::path::PathBuf>::new());
}

#[tokio::test]
async fn progress_never_goes_back_within_an_attempt() {
    let app = app_with(4, ConfigArgs::default()).await;
    let repo = model_with_weights("acme/steady", 200 * 1024);
    app.hub.add_repo(repo.clone());
    // Each connection at 150 kB/s: the 800 KiB take a second or more an
    // attempt; the first attempt's file is spoiled, so a second one runs.
    app.hub.slow_downloads(150_000);
    app.hub.corrupt_next_download();
    let id = app.upload_hf(&repo.id).await;
    let mut seen: Vec<(u64, u64, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let task = app.task(&id).await;
        let progress = &task["progress"];
        let sample = (
            task["attempts"].as_u64().unwrap(),
            progress["bytes_done"].as_u64().unwrap(),
            progress["bytes_total"].as_u64().unwrap(),
        );
        if seen.last() != Some(&sample) {
            seen.push(sample);
        }
        if crate::helpers::is_finished(&task) || Instant::now() > deadline {
            break task;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(last["task_status"], "DONE", "{last}");
    assert_eq!(last["attempts"], 2, "{last}");
    for pair in seen.windows(2) {
        let ((a1, d1, _), (a2, d2, t2)) = (pair[0], pair[1]);
        assert!(d2 <= t2 || t2 == 0, "more done than total: {seen:?}");
        assert!(
            a2 > a1 || d2 >= d1,
            "progress went back within attempt {a2}: {seen:?}"
        );
    }
    for attempt in [1, 2] {
        let steps = seen.iter().filter(|s| s.0 == attempt && s.1 > 0).count();
        assert!(
            steps >= 3,
            "attempt {attempt} moved in {steps} steps: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_cancelled_parallel_download_stops_every_part() {
    let app = app_with(4, ConfigArgs::default()).await;
    let repo = model_with_weights("acme/stop-all", 400 * 1024);
    app.hub.add_repo(repo.clone());
    app.hub.slow_downloads(50_000);
    let id = app.upload_hf(&repo.id).await;
    app.wait_for(&id, Duration::from_secs(20), |t| {
        t["progress"]["bytes_done"].as_u64() > Some(100_000)
    })
    .await;
    let in_flight = weight_gets(&app.hub, &repo).len();
    assert!(in_flight >= 4, "{in_flight} parts asked for");
    assert_eq!(app.cancel_task(&id).await.status(), 200);
    let cancelled = app.wait_task(&id).await;
    assert_eq!(cancelled["task_status"], "CANCELLED", "{cancelled}");

    // The partial file goes, and no part moves another byte.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !app.leftover_tmp_files().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.leftover_tmp_files(), Vec::<std::path::PathBuf>::new());
    // The hub sends a chunk or two more into each socket before it sees
    // the connection closed; after that, silence.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = app.hub.bytes_sent();
    let asked = app.hub.log().len();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(app.hub.bytes_sent(), sent, "a part kept downloading");
    assert_eq!(
        app.hub.log().len(),
        asked,
        "a part was asked for after the cancel"
    );
}
