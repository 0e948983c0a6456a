//! A task survives a restart of the service on the same `surrealkv://`
//! data dir, and its partial download, in parts over four connections,
//! resumes with only the ranges its journal lacks.

use std::time::Duration;

use vectorize::ConfigArgs;

use crate::crash::{assert_resumed_from, covered, journal_ranges, partial_weights};
use crate::helpers::{Options, small_model, spawn_app_with};
use crate::support::fake_hub::{FakeHub, safetensors_bytes};

#[tokio::test]
async fn an_unfinished_task_completes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hub = FakeHub::start().await;
    let mut repo = small_model("acme/restart");
    repo.files[3].bytes = safetensors_bytes(&[("w", &[256, 1024])]);
    hub.add_repo(repo.clone());
    hub.slow_downloads(300_000);

    let options = || Options {
        hub: Some(hub.clone()),
        data_dir: Some(dir.path().to_path_buf()),
        config: ConfigArgs {
            download_connections: Some(4),
            part_bytes: Some(64 * 1024),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut first = spawn_app_with(options()).await;
    let id = first.upload_hf("acme/restart").await;
    first
        .wait_for(&id, Duration::from_secs(10), |t| {
            t["progress"]["bytes_done"].as_u64() > Some(100_000)
        })
        .await;
    first.stop().await;
    let held = journal_ranges(&partial_weights(dir.path(), &id, &repo));
    let size = repo.files[3].bytes.len() as u64;
    assert!(
        covered(&held) > 0 && covered(&held) < size,
        "the journal holds {held:?} of {size} bytes"
    );
    hub.clear_faults();
    hub.clear_log();

    let second = spawn_app_with(options()).await;
    let done = second.wait_task(&id).await;
    assert_eq!(done["task_status"], "DONE", "{done}");
    let snapshot = second
        .hf_cache()
        .join("models--acme--restart/snapshots")
        .join(&repo.commit);
    assert_eq!(
        std::fs::read(snapshot.join("model.safetensors")).unwrap(),
        repo.files[3].bytes
    );
    assert_resumed_from(&hub, &repo, &held);
    assert!(second.leftover_tmp_files().is_empty());
}
