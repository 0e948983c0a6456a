//! Pinned Python venvs under `~/.cache`, for the real Python clients the
//! tests run (huggingface_hub, selenium). A venv is built on first use from
//! the package registry into a temporary folder that is renamed into
//! place, so a half-built venv is never used. Python venvs do not move
//! well: the `#!` lines of their scripts keep the build folder, so run
//! programs through the venv's `bin/python`, never its scripts.

use std::path::PathBuf;

use tokio::process::Command;

/// `~/.cache/{name}`, with `pins` installed: built unless `python -c
/// {import}` already succeeds there.
pub async fn pinned(name: &str, pins: &[&str], import: &str) -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME is set");
    let venv = PathBuf::from(home).join(".cache").join(name);
    if run_ok(Command::new(venv.join("bin/python")).args(["-c", import])).await {
        return venv;
    }
    let building = venv.with_extension(format!("building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let built = run_ok(Command::new("python3").arg("-m").arg("venv").arg(&building)).await
        && run_ok(
            Command::new(building.join("bin/python"))
                .args(["-m", "pip", "install", "-q"])
                .args(pins),
        )
        .await;
    if !built {
        let _ = std::fs::remove_dir_all(&building);
        panic!("building a venv with {pins:?} failed (python3 -m venv, then pip from PyPI)");
    }
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::rename(&building, &venv).unwrap();
    venv
}

async fn run_ok(command: &mut Command) -> bool {
    command.status().await.is_ok_and(|s| s.success())
}
