//! A real browser for the dashboard test: Debian's `chromium` and
//! `chromium-driver`, driven by Python's `selenium` (pinned, in a cached
//! venv: `support::venv`). When Chromium or
//! its driver is missing, a root test run installs them with apt-get (as
//! `.ci/interop.sh` does); any other user gets a message that says what to
//! install. `dashboard_check.py` does the clicking; this file only gets
//! it ready and runs it.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use tokio::process::Command;
use tokio::sync::OnceCell;

/// The pin; the venv's folder name carries it.
const SELENIUM: &str = "selenium==4.51.0";
const VENV: &str = "vectorize-selenium-4.51.0";
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/api/support/dashboard_check.py"
);
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

static BROWSER: OnceCell<()> = OnceCell::const_new();
static VENV_READY: OnceCell<PathBuf> = OnceCell::const_new();

/// Chromium and its driver, installed when missing and this is root.
async fn browser() {
    BROWSER
        .get_or_init(|| async {
            if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
                return;
            }
            let uid = Command::new("id").arg("-u").output().await.unwrap();
            assert!(
                String::from_utf8_lossy(&uid.stdout).trim() == "0",
                "the dashboard test needs Debian's chromium and chromium-driver \
                 ({CHROMIUM}, {CHROMEDRIVER}); install them with \
                 `apt-get install chromium chromium-driver` (this user is not root, \
                 so the test cannot)"
            );
            for args in [
                &["update", "-qq"][..],
                &["install", "-y", "-qq", "chromium", "chromium-driver"][..],
            ] {
                let status = Command::new("apt-get")
                    .args(args)
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .status()
                    .await
                    .unwrap();
                assert!(status.success(), "apt-get {args:?} failed: {status}");
            }
        })
        .await;
}

/// The venv with selenium, built if missing.
async fn venv() -> &'static Path {
    VENV_READY
        .get_or_init(|| super::venv::pinned(VENV, &[SELENIUM], "import selenium"))
        .await
}

/// Runs `dashboard_check.py` with `plan` (what to open, upload and expect)
/// and answers its output; panics with the script's log when it fails.
pub async fn run_check(plan: &Value) -> Output {
    browser().await;
    let python = venv().await.join("bin/python");
    let output = Command::new(python)
        .arg(SCRIPT)
        .arg(plan.to_string())
        .env("CHROMIUM", CHROMIUM)
        .env("CHROMEDRIVER", CHROMEDRIVER)
        // Selenium Manager must not look for drivers on the network.
        .env("SE_OFFLINE", "true")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the dashboard check failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
