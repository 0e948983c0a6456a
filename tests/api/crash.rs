//! Crash and restart on the real binary: `vectorize serve` runs as a child
//! process on a temporary data dir (the default `surrealkv://{data dir}/db`),
//! is killed with SIGKILL or stopped with SIGTERM in the middle of a slowed
//! Hugging Face download, and is started again on the same data dir. The
//! task must end DONE with byte-identical files, the download must ask only
//! for the ranges the partial file's journal does not hold, a task that was
//! PENDING at the kill must run after the restart, a task DONE before it
//! must be untouched, and nothing may be left in `tmp/` or as an orphaned
//! blob.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::small_model;
use crate::support::fake_hub::{FakeHub, HubRepo, safetensors_bytes};
use crate::support::hygiene::{leftover_tmp_files, orphaned_blobs, task_staging};
use crate::support::process::ServiceProcess;

/// Body throttle while the first process runs: the 1 MiB weights take a
/// few seconds, so the kill lands in the middle of them.
pub(crate) const SLOW: u64 = 300_000;

/// A model whose weights (1 MiB, LFS) take a while at `SLOW`.
pub(crate) fn big_model(id: &str) -> HubRepo {
    let mut repo = small_model(id);
    repo.files[3].bytes = safetensors_bytes(&[("w", &[256, 1024])]);
    repo
}

fn weights(repo: &HubRepo) -> &[u8] {
    &repo.files[3].bytes
}

/// Where the partial weights of `task_id` wait between attempts: the
/// task's staging folder, under the blob name (the LFS sha256).
pub(crate) fn partial_weights(data_dir: &Path, task_id: &str, repo: &HubRepo) -> PathBuf {
    let sha = hex::encode(Sha256::digest(weights(repo)));
    task_staging(data_dir, task_id)
        .unwrap_or_else(|| data_dir.join("tmp/nodes/none"))
        .join(sha)
}

/// Waits until the task is RUNNING and has received more than `bytes`.
async fn wait_bytes(service: &ServiceProcess, id: &str, bytes: u64) {
    service
        .wait_for(id, Duration::from_secs(15), |t| {
            t["task_status"] == "RUNNING" && t["progress"]["bytes_done"].as_u64() > Some(bytes)
        })
        .await;
}

/// Asserts that every file the default patterns select is in the snapshot,
/// byte for byte.
pub(crate) fn assert_installed(data_dir: &Path, repo: &HubRepo) {
    let snapshot = data_dir
        .join("models/huggingface")
        .join(format!("models--{}", repo.id.replace('/', "--")))
        .join("snapshots")
        .join(&repo.commit);
    for file in repo.files.iter().filter(|f| f.path != "README.md") {
        let got = std::fs::read(snapshot.join(&file.path))
            .unwrap_or_else(|e| panic!("{} of {}: {e}", file.path, repo.id));
        assert!(got == file.bytes, "{} of {} differs", file.path, repo.id);
    }
}

/// The byte ranges `[start, end)` the journal beside a partial file says
/// are on disk (the download engine's `{file}.journal`: a header line,
/// then one `start end` line per write).
pub(crate) fn journal_ranges(partial: &Path) -> Vec<(u64, u64)> {
    let mut journal = partial.as_os_str().to_owned();
    journal.push(".journal");
    let text = std::fs::read_to_string(&journal).unwrap_or_default();
    let mut ranges: Vec<(u64, u64)> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (start, end) = line.split_once(' ')?;
            Some((start.parse().ok()?, end.parse().ok()?))
        })
        .collect();
    ranges.sort();
    ranges
}

/// Bytes the ranges cover together.
pub(crate) fn covered(ranges: &[(u64, u64)]) -> u64 {
    let mut total = 0;
    let mut reached = 0;
    for &(start, end) in ranges {
        total += end.saturating_sub(start.max(reached));
        reached = reached.max(end);
    }
    total
}

/// Asserts that, after the restart, the weights were asked for (at the
/// hub's resolve URL and the CDN it redirects to) only in ranges the
/// partial file did not hold (`held`, from its journal), and all of them.
pub(crate) fn assert_resumed_from(hub: &FakeHub, repo: &HubRepo, held: &[(u64, u64)]) {
    let sha = hex::encode(Sha256::digest(weights(repo)));
    let size = weights(repo).len() as u64;
    let gets: Vec<_> = hub
        .log()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&sha))
        .collect();
    assert!(!gets.is_empty(), "the weights were not fetched again");
    let mut asked = Vec::new();
    for request in &gets {
        let range = request.range.as_deref().unwrap_or("bytes=0-");
        let (start, end) = range
            .strip_prefix("bytes=")
            .unwrap()
            .split_once('-')
            .unwrap();
        let start: u64 = start.parse().unwrap();
        let end = end.parse::<u64>().map_or(size, |last| last + 1);
        assert!(
            held.iter().all(|&(s, e)| end <= s || start >= e),
            "[{start}, {end}) was asked for again though the journal held {held:?}: {gets:?}"
        );
        asked.push((start, end));
    }
    asked.extend_from_slice(held);
    asked.sort();
    assert_eq!(
        covered(&asked),
        size,
        "not every missing byte was asked for: {gets:?}"
    );
}

/// Asserts that the data dir holds no temporary file and no orphaned blob.
pub(crate) fn assert_clean(data_dir: &Path) {
    assert_eq!(leftover_tmp_files(data_dir), Vec::<PathBuf>::new());
    assert_eq!(orphaned_blobs(data_dir), Vec::<PathBuf>::new());
}

/// Kills or stops the service in the middle of the weights, restarts it,
/// and checks the task ends DONE from where the partial file stopped.
async fn interrupted_download_resumes(stop: Stop) {
    let dir = tempfile::tempdir().unwrap();
    let hub = FakeHub::start().await;
    let repo = big_model(&format!("acme/{}", stop.name()));
    hub.add_repo(repo.clone());
    hub.slow_downloads(SLOW);

    let mut first = ServiceProcess::start(dir.path(), &hub, &[]).await;
    let id = first.upload_hf(&repo.id).await;
    wait_bytes(&first, &id, 200_000).await;
    match stop {
        Stop::Kill => first.kill9(),
        Stop::Term => {
            // A client following the task must not hold the stop up.
            let events = first
                .client
                .get(first.at(&format!("/v1/upload/tasks/{id}/events")))
                .send()
                .await
                .unwrap();
            assert_eq!(events.status(), 200);
            let status = first.sigterm().await;
            drop(events);
            assert!(status.success(), "SIGTERM: {status}\n{}", first.output());
        }
    }
    drop(first);

    let partial = partial_weights(dir.path(), &id, &repo);
    let held = journal_ranges(&partial);
    let offset = covered(&held);
    assert!(
        offset > 0 && offset < weights(&repo).len() as u64,
        "after {stop:?} the partial weights hold {offset} bytes at {}",
        partial.display()
    );
    hub.clear_faults();
    hub.clear_log();

    let second = ServiceProcess::start(dir.path(), &hub, &[]).await;
    let done = second.wait_task(&id).await;
    assert_eq!(done["task_status"], "DONE", "{done}\n{}", second.output());
    // A crash cuts an attempt that counts; a clean stop gives it back.
    let attempts = match stop {
        Stop::Kill => 2,
        Stop::Term => 1,
    };
    assert_eq!(done["attempts"], attempts, "{done}");
    assert_installed(dir.path(), &repo);
    assert_resumed_from(&hub, &repo, &held);
    let model = second
        .get_json(&format!(
            "/v1/models/{}",
            done["model_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(model["model_tag"], format!("{}@main", repo.id));
    assert_clean(dir.path());
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGKILL: no chance to flush or persist anything.
    Kill,
    /// SIGTERM: a graceful stop, which must exit 0 within 10 seconds.
    Term,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Kill => "killed",
            Stop::Term => "terminated",
        }
    }
}

#[tokio::test]
async fn a_download_killed_with_sigkill_resumes_from_its_partial_file() {
    interrupted_download_resumes(Stop::Kill).await;
}

#[tokio::test]
async fn sigterm_exits_0_in_time_and_the_download_resumes_at_the_next_start() {
    interrupted_download_resumes(Stop::Term).await;
}

#[tokio::test]
async fn pending_tasks_run_after_a_kill_and_finished_ones_are_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let hub = FakeHub::start().await;
    let finished = small_model("acme/finished");
    let running = big_model("acme/running");
    let queued = small_model("acme/queued");
    for repo in [&finished, &running, &queued] {
        hub.add_repo(repo.clone());
    }
    let one_at_a_time = [("VECTORIZE_MAX_CONCURRENT_TASKS", "1")];

    let mut first = ServiceProcess::start(dir.path(), &hub, &one_at_a_time).await;
    let finished_id = first.upload_hf(&finished.id).await;
    let finished_task = first.wait_task(&finished_id).await;
    assert_eq!(finished_task["task_status"], "DONE", "{finished_task}");
    let model_path = format!("/v1/models/{}", finished_task["model_id"].as_str().unwrap());
    let finished_model = first.get_json(&model_path).await;

    hub.slow_downloads(SLOW);
    let running_id = first.upload_hf(&running.id).await;
    let queued_id = first.upload_hf(&queued.id).await;
    wait_bytes(&first, &running_id, 100_000).await;
    let waiting = first.task(&queued_id).await;
    assert_eq!(waiting["task_status"], "PENDING", "{waiting}");
    first.kill9();
    drop(first);
    hub.clear_faults();

    let second = ServiceProcess::start(dir.path(), &hub, &one_at_a_time).await;
    for id in [&running_id, &queued_id] {
        let done = second.wait_task(id).await;
        assert_eq!(done["task_status"], "DONE", "{done}\n{}", second.output());
    }
    assert_eq!(second.task(&queued_id).await["attempts"], 1);
    // The task that ended before the kill reads exactly as it did, and so
    // does its model; its files are still in place.
    assert_eq!(second.task(&finished_id).await, finished_task);
    assert_eq!(second.get_json(&model_path).await, finished_model);
    for repo in [&finished, &running, &queued] {
        assert_installed(dir.path(), repo);
    }
    // No task is left RUNNING (or PENDING) without a worker: all three ended.
    let tasks = second.get_json("/v1/upload/tasks?limit=1000").await;
    assert_eq!(tasks["total"], 3, "{tasks}");
    let statuses: Vec<&Value> = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["task_status"])
        .collect();
    assert!(statuses.iter().all(|s| *s == "DONE"), "{tasks}");
    let models = second.get_json("/v1/models").await;
    assert_eq!(models["total"], 3, "{models}");
    assert_clean(dir.path());
}
