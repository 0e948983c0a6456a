//! The download engine every remote source shares (Hugging Face files and
//! Git LFS objects): a file is fetched as ranged parts over several
//! connections into one preallocated file (`parts`), written in place and
//! hashed in order as its prefix completes (`sink`), with a journal of what
//! is on disk so that a retry or a restart fetches only what is missing
//! (`journal`). One `Downloader` per node holds what all downloads share:
//! the HTTP client, the connection permits and the bandwidth cap
//! (`throttle`). Redirects are followed by hand so that a bearer token
//! only ever goes to its own origin (`request`).

mod journal;
mod parts;
mod request;
mod sink;
mod space;
mod throttle;

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use reqwest::header::HeaderMap;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use self::journal::Journal;
pub use self::request::{ScopedToken, error_detail, header_map};
use self::sink::{FileSink, SinkTarget};
use self::space::DiskSpace;
use self::throttle::Throttle;
use super::{ProgressSink, SourceError, http_client};
use crate::error::ErrorCode;
use crate::metrics::Metrics;

/// How the node downloads: `VECTORIZE_DOWNLOAD_CONNECTIONS`,
/// `VECTORIZE_PART_BYTES` and `VECTORIZE_MAX_BYTES_PER_SEC`.
#[derive(Debug, Clone, Copy)]
pub struct DownloadSettings {
    /// Connections open at once for all downloads of the node.
    pub connections: usize,
    /// Files larger than this come in parts of this size.
    pub part_bytes: u64,
    /// Bytes per second all downloads of the node take together; `None`: no cap.
    pub max_bytes_per_sec: Option<u64>,
    /// Space a download must leave free on the store's file system.
    pub min_free_bytes: u64,
}

impl Default for DownloadSettings {
    fn default() -> Self {
        Self {
            connections: 8,
            part_bytes: 32 << 20,
            max_bytes_per_sec: None,
            min_free_bytes: 1 << 30,
        }
    }
}

/// What every download of the node shares. Clones share it too.
#[derive(Debug, Clone)]
pub struct Downloader {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    client: reqwest::Client,
    settings: DownloadSettings,
    connections: Arc<Semaphore>,
    throttle: Option<Throttle>,
    space: DiskSpace,
    metrics: Arc<Metrics>,
}

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct FileDownload {
    pub url: String,
    /// The partial file; it is the finished file once `fetch` returns Ok.
    pub dest: PathBuf,
    pub expected_size: Option<u64>,
    /// Checked when given (LFS files); computed in any case.
    pub expected_sha256: Option<String>,
    pub token: Option<ScopedToken>,
    /// Extra headers, e.g. those an LFS batch answer asks for.
    pub headers: HeaderMap,
    /// Names the file in error messages.
    pub what: String,
}

/// A finished, verified file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub size: u64,
    pub sha256: String,
}

impl Downloader {
    /// The downloader of a node whose store lives under `store_root`.
    pub fn new(
        settings: DownloadSettings,
        store_root: &std::path::Path,
        metrics: Arc<Metrics>,
    ) -> Self {
        let connections = settings.connections.max(1);
        Self {
            inner: Arc::new(Shared {
                client: http_client(),
                connections: Arc::new(Semaphore::new(connections)),
                throttle: settings.max_bytes_per_sec.map(Throttle::new),
                space: DiskSpace::new(store_root.to_path_buf(), settings.min_free_bytes),
                metrics,
                settings: DownloadSettings {
                    connections,
                    part_bytes: settings.part_bytes.max(1),
                    ..settings
                },
            }),
        }
    }

    /// The node's HTTP client, for the small API calls around downloads.
    pub fn client(&self) -> &reqwest::Client {
        &self.inner.client
    }

    fn part_bytes(&self) -> u64 {
        self.inner.settings.part_bytes
    }

    fn max_connections(&self) -> usize {
        self.inner.settings.connections
    }

    fn connections(&self) -> Arc<Semaphore> {
        self.inner.connections.clone()
    }

    fn throttle(&self) -> Option<&Throttle> {
        self.inner.throttle.as_ref()
    }

    /// Disk admission: `InsufficientStorage` when the bytes `files` still
    /// need (their sizes less what their partial files hold) do not fit in
    /// the store's free space. `what` names the upload in the refusal.
    pub async fn admit(&self, files: &[FileDownload], what: &str) -> Result<(), SourceError> {
        let sizes: Vec<_> = files
            .iter()
            .map(|f| (f.dest.clone(), f.expected_size))
            .collect();
        let needed = tokio::task::spawn_blocking(move || {
            sizes
                .into_iter()
                .filter_map(|(dest, size)| {
                    let size = size?;
                    Some(size - Journal::load(&dest, size).covered().min(size))
                })
                .fold(0u64, u64::saturating_add)
        })
        .await
        .map_err(|e| SourceError::Transient(format!("checking the free space stopped: {e}")))?;
        self.admit_bytes(needed, what)
    }

    /// Disk admission of `needed` more bytes (see `admit`).
    pub fn admit_bytes(&self, needed: u64, what: &str) -> Result<(), SourceError> {
        self.inner
            .space
            .admit(needed, what)
            .map_err(|m| SourceError::refused(ErrorCode::InsufficientStorage, m))
    }

    /// Fetches every file, several at once within the node's connection
    /// budget; counts each finished file in `progress`. On the first
    /// failure the others are stopped (their partial files kept for the
    /// next attempt) and that failure is answered.
    pub async fn fetch_all(
        &self,
        files: &[FileDownload],
        progress: &ProgressSink,
        cancel: &CancellationToken,
    ) -> Result<Vec<Downloaded>, SourceError> {
        let stop = cancel.child_token();
        let mut running: FuturesUnordered<_> = files
            .iter()
            .enumerate()
            .map(|(i, file)| {
                let stop = &stop;
                async move { (i, self.fetch(file, progress, stop).await) }
            })
            .collect();
        let mut done = vec![None; files.len()];
        let mut failure = None;
        while let Some((i, fetched)) = running.next().await {
            match fetched {
                Ok(file) => {
                    progress.file_done();
                    done[i] = Some(file);
                }
                // Stopped because another file failed: that failure counts.
                Err(SourceError::Cancelled) if !cancel.is_cancelled() && failure.is_some() => {}
                Err(error) => {
                    stop.cancel();
                    failure.get_or_insert(error);
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(done.into_iter().flatten().collect()),
        }
    }

    /// Fetches one file, resuming what its partial file holds, and checks
    /// its size and sha256. A transient failure keeps the partial file and
    /// its journal for the next attempt; a verification failure removes them.
    pub async fn fetch(
        &self,
        file: &FileDownload,
        progress: &ProgressSink,
        cancel: &CancellationToken,
    ) -> Result<Downloaded, SourceError> {
        let size = file.expected_size;
        // Reading the journal, and opening and preallocating a file that
        // may be gigabytes, is file system work: off the async runtime.
        let opened = tokio::task::spawn_blocking({
            let (dest, progress, cancel) = (file.dest.clone(), progress.clone(), cancel.clone());
            let metrics = self.inner.metrics.clone();
            move || {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let coverage = size
                    .map(|size| Journal::load(&dest, size))
                    .unwrap_or_default();
                let missing =
                    size.map_or_else(|| vec![(0, u64::MAX)], |size| coverage.missing(size));
                let target = SinkTarget {
                    path: &dest,
                    size,
                    coverage,
                };
                FileSink::start(target, &progress, &metrics, &cancel).map(|sink| (sink, missing))
            }
        })
        .await
        .map_err(|e| SourceError::Transient(format!("{}: {e}", file.what)))?;
        let (sink, missing) = opened.map_err(|e| local_io(&file.what, &e))?;
        let job = parts::Job {
            downloader: self,
            file,
            size,
            pieces: sink.pieces(),
            cancel,
            received: Default::default(),
        };
        let fetched = parts::fetch_missing(&job, missing).await;
        drop(job);
        let sunk = sink.finish().await;
        if cancel.is_cancelled() {
            return Err(SourceError::Cancelled);
        }
        let sunk = match (sunk, fetched) {
            (Ok(sunk), Ok(())) => sunk,
            (Err(e), _) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(discard(file, &e.to_string()));
            }
            (Err(e), _) => return Err(local_io(&file.what, &e)),
            (Ok(_), Err(e)) => return Err(e),
        };
        let got = Downloaded {
            size: sunk.hashed,
            sha256: sunk.sha256,
        };
        let complete = size.is_none_or(|size| sunk.coverage.covered() == size && got.size == size);
        if !complete {
            return Err(SourceError::Transient(format!(
                "{}: {} of {} bytes arrived",
                file.what,
                sunk.coverage.covered(),
                size.unwrap_or_default()
            )));
        }
        if let Some(sha) = &file.expected_sha256
            && !sha.eq_ignore_ascii_case(&got.sha256)
        {
            let why = format!("has sha256 {}, {sha} expected", got.sha256);
            return Err(discard(file, &why));
        }
        Journal::remove(&file.dest);
        Ok(got)
    }
}

/// Removes a spoiled partial file and its journal, so that the next
/// attempt fetches the file afresh; answers the attempt's (transient) error.
fn discard(file: &FileDownload, why: &str) -> SourceError {
    let _ = std::fs::remove_file(&file.dest);
    Journal::remove(&file.dest);
    SourceError::Corrupt(format!("{} {why}; it will be downloaded again", file.what))
}

/// Size and sha256 of a whole file on disk (blocking); stops early, with
/// an `Interrupted` error, once `cancel` fires.
pub fn sha256_file(
    path: &std::path::Path,
    cancel: &CancellationToken,
) -> std::io::Result<Downloaded> {
    let (size, sha256) = sink::hash_file(path, cancel)?;
    Ok(Downloaded { size, sha256 })
}

/// A local disk error: the data dir may be full or unwritable; retrying may help.
fn local_io(what: &str, err: &std::io::Error) -> SourceError {
    SourceError::Transient(format!("{what}: could not write to the data dir: {err}"))
}
