//! The dashboard at `/`: the page and its assets as HTTP serves them
//! (headers, nothing from another host, 405 with `Allow`, open while the
//! API asks for its key), and the page as a person uses it, in real
//! Chromium against the real service and the fake hub
//! (`support/dashboard_check.py`): a Hugging Face upload from the form
//! watched to DONE, the model in the store with its pull command, a ZIP
//! with a stored and a rejected model, a slow upload cancelled, filters,
//! a delete, a refusal shown as text, and the API key asked for once.
//! Screenshots (desktop and narrow, a running upload on them) are saved
//! under `$CARGO_TARGET_DIR/dashboard/`.

use std::path::PathBuf;

use serde_json::json;

use crate::helpers::{Options, assert_error, small_model, spawn_app, spawn_app_with};
use crate::support::archives::{Archive, pickle_calling, safetensors};
use crate::support::dashboard_browser::run_check;
use crate::support::fake_hub::{FakeHub, safetensors_bytes};

const ASSETS: [(&str, &str); 3] = [
    ("/", "text/html"),
    ("/dashboard/app.js", "text/javascript"),
    ("/dashboard/app.css", "text/css"),
];

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_their_headers() {
    let app = spawn_app().await;
    for (path, content_type) in ASSETS {
        let response = app.client.get(app.at(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(content_type), "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        let policy = header("content-security-policy");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        let body = response.text().await.unwrap();
        // Nothing is fetched from another host: the service works offline.
        if path == "/" {
            for reference in body.split(['"', '\'']).filter(|s| s.contains("//")) {
                assert!(!reference.contains("http"), "{path} refers to {reference}");
            }
            assert!(body.contains(r#"<script src="/dashboard/app.js" defer>"#));
            assert!(
                !body.contains("<script>"),
                "inline scripts would need the CSP to allow them"
            );
        } else {
            assert!(
                !body.contains("@import") && !body.contains("url("),
                "{path}"
            );
            assert!(
                !body.contains("innerHTML"),
                "{path} writes HTML from strings"
            );
        }
        let head = app.client.head(app.at(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
    }
    let posted = app.client.post(app.at("/")).send().await.unwrap();
    let allow = posted.headers().get("allow").cloned();
    assert_error(posted, 405, "METHOD_NOT_ALLOWED").await;
    assert_eq!(allow.unwrap().to_str().unwrap(), "GET, HEAD");
}

#[tokio::test]
async fn the_page_is_open_while_its_data_asks_for_the_key() {
    let app = spawn_app_with(Options {
        api_key: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    for (path, _) in ASSETS {
        let response = app.client.get(app.at(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    for target in [
        "/v1/upload/tasks",
        "/dashboard/../v1/upload/tasks",
        "/dashboard/app.js/../../v1/upload/tasks",
        "/dashboard/",
        "/dashboard/other.js",
    ] {
        let (status, answer) = app.raw_get(target, None).await;
        assert!(
            matches!(status, 401 | 404 | 400),
            "{target} answered {status} without the key: {answer}"
        );
    }
}

/// The whole page in Chromium; see `support/dashboard_check.py`.
#[tokio::test]
async fn the_dashboard_works_in_chromium() {
    let hub = FakeHub::start().await;
    // About 3 MiB at 1 MiB/s: long enough to watch the bar move.
    let mut watched = small_model("acme/dash-bert");
    watched.files[3].bytes = safetensors_bytes(&[("w", &[768, 1024])]);
    hub.add_repo(watched);
    // About 24 MiB: still running when it is cancelled.
    let mut slow = small_model("acme/slow-bert");
    slow.files[3].bytes = safetensors_bytes(&[("w", &[6144, 1024])]);
    hub.add_repo(slow);
    hub.slow_downloads(1 << 20);
    let app = spawn_app_with(Options {
        hub: Some(hub),
        ..Default::default()
    })
    .await;
    let keyed = spawn_app_with(Options {
        api_key: Some("dashboard-key".into()),
        ..Default::default()
    })
    .await;

    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("two-models.zip");
    let zip = Archive::new()
        .file("good/model.safetensors", &safetensors())
        .file("good/config.json", br#"{"model_type": "bert"}"#)
        .file("evil/pytorch_model.bin", &pickle_calling("posix", "system"))
        .finish();
    std::fs::write(&archive, zip).unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let screenshots = target.join("dashboard");
    std::fs::create_dir_all(&screenshots).unwrap();

    let plan = json!({
        "url": app.url,
        "keyed_url": keyed.url,
        "key": "dashboard-key",
        "watched_repo": "acme/dash-bert",
        "slow_repo": "acme/slow-bert",
        "archive": archive,
        "stored_model": "good",
        "rejected_model": "evil",
        "screenshots": screenshots,
    });
    let output = run_check(&plan).await;
    println!("{}", String::from_utf8_lossy(&output.stdout));

    // What the browser did, as the API sees it.
    let models = app.list_models("").await;
    let tags: Vec<&str> = models["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model_tag"].as_str().unwrap())
        .collect();
    assert_eq!(
        tags,
        ["acme/dash-bert@main"],
        "the ZIP's model was deleted: {models}"
    );
    let tasks: serde_json::Value = app.list_tasks("").await.json().await.unwrap();
    let statuses: Vec<(&str, &str)> = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["model_tag"].as_str().unwrap(),
                t["task_status"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        statuses.contains(&("acme/dash-bert@main", "DONE")),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("acme/slow-bert@main", "CANCELLED")),
        "{statuses:?}"
    );
    for shot in ["dashboard-desktop.png", "dashboard-narrow.png"] {
        let size = std::fs::metadata(screenshots.join(shot)).unwrap().len();
        assert!(size > 10_000, "{shot} is {size} bytes");
    }
}
