//! What a service must not leave behind, checked on its data dir and on
//! the process' file descriptors: files in `tmp/` (staging folders,
//! partial downloads, upload bodies), Hugging Face blobs that no snapshot
//! links to, and descriptors that stay open after the service stopped.
//! Shared by the crash tests (a child process) and the concurrency tests
//! (in process).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Every file (not folder) under `{data_dir}/tmp`.
#[allow(dead_code)]
pub fn leftover_tmp_files(data_dir: &Path) -> Vec<PathBuf> {
    files_under(&data_dir.join("tmp"))
}

/// The staging folder of a task on whichever node has it:
/// `tmp/nodes/{node}/tasks/{task_id}`.
#[allow(dead_code)]
pub fn task_staging(data_dir: &Path, task_id: &str) -> Option<PathBuf> {
    std::fs::read_dir(data_dir.join("tmp").join("nodes"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|node| node.path().join("tasks").join(task_id))
        .find(|dir| dir.is_dir())
}

/// Blobs under `{data_dir}/models/huggingface/*/blobs/` that no snapshot
/// symlink of the same repository points to.
#[allow(dead_code)]
pub fn orphaned_blobs(data_dir: &Path) -> Vec<PathBuf> {
    let cache = data_dir.join("models").join("huggingface");
    let mut orphans = Vec::new();
    for repo in std::fs::read_dir(&cache).into_iter().flatten().flatten() {
        let blobs = repo.path().join("blobs");
        let mut linked = HashSet::new();
        for link in entries_under(&repo.path().join("snapshots")) {
            if link.is_symlink() {
                let target = std::fs::read_link(&link).unwrap();
                let resolved = link.parent().unwrap().join(target);
                linked.insert(normalize(&resolved));
            }
        }
        for blob in files_under(&blobs) {
            if !linked.contains(&normalize(&blob)) {
                orphans.push(blob);
            }
        }
    }
    orphans
}

/// Regular files (and symlinks) under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    entries_under(dir)
        .into_iter()
        .filter(|p| !p.symlink_metadata().unwrap().is_dir())
        .collect()
}

/// Every entry under `dir`, recursively, without following symlinks.
fn entries_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
            found.push(entry.path());
        }
    }
    found
}

/// Resolves `.` and `..` lexically (blob links are relative).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The open file descriptors of this process, as `fd -> target` lines
/// (`socket:[inode]`, a path, `anon_inode:[eventpoll]`, …).
#[allow(dead_code)]
pub fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| {
            let target = std::fs::read_link(entry.path())
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".into());
            format!("{} -> {target}", entry.file_name().to_string_lossy())
        })
        .collect();
    fds.sort();
    fds
}

/// The descriptors of this process that a stopped service instance could
/// still hold: files under its data dir, any TCP socket on its own port
/// (its listener, its connections), and connections (not the listener) on
/// its upstream's port. Other tests running in this process at the same
/// time never match, since each has its own data dir and ports.
#[allow(dead_code)]
pub fn fds_held_for(data_dir: &Path, app_port: u16, upstream_port: u16) -> Vec<String> {
    let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let sockets = tcp_sockets();
    open_fds()
        .into_iter()
        .filter(|line| {
            let target = line.split_once(" -> ").map_or("", |(_, t)| t);
            if Path::new(target).starts_with(&data_dir) {
                return true;
            }
            let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            else {
                return false;
            };
            sockets.iter().any(|s| {
                s.inode == inode
                    && (s.local_port == app_port
                        || s.remote_port == app_port
                        || (!s.listening
                            && (s.local_port == upstream_port || s.remote_port == upstream_port)))
            })
        })
        .collect()
}

/// One line of `/proc/self/net/tcp{,6}`.
struct TcpSocket {
    inode: String,
    local_port: u16,
    remote_port: u16,
    listening: bool,
}

fn tcp_sockets() -> Vec<TcpSocket> {
    let port = |address: &str| {
        let hex = address.rsplit(':').next().unwrap_or("0");
        u16::from_str_radix(hex, 16).unwrap_or(0)
    };
    ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    Some(TcpSocket {
                        inode: fields.get(9)?.to_string(),
                        local_port: port(fields.get(1)?),
                        remote_port: port(fields.get(2)?),
                        listening: *fields.get(3)? == "0A",
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect()
}
