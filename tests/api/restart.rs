//! A task survives a restart of the service on the same `surrealkv://`
//! data dir, and its partial download resumes with `Range`.

use std::time::Duration;

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
    let resumed = hub
        .log()
        .into_iter()
        .any(|r| r.range.as_deref().is_some_and(|range| range != "bytes=0-"));
    assert!(
        resumed,
        "the download did not resume with Range: {:?}",
        hub.log()
    );
    assert!(second.leftover_tmp_files().is_empty());
}
