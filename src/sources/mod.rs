//! Sources do the work of one attempt of one upload: HTTP, git, zip. A
//! source takes a request, a staging folder, a progress sink and a
//! cancellation token, and returns what it fetched or a `SourceError` that
//! says whether retrying can help. Sources know nothing of actors or HTTP
//! routes, so they are tested directly against the fake upstreams.

pub mod download;
pub mod github;
pub mod huggingface;
pub mod local_zip;
pub mod names;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::StatusCode;

use crate::error::{ErrorCode, FailureCode};
use crate::store::Progress;

/// Why an attempt failed, and whether another attempt can help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// Worth retrying: connection errors, timeouts, 5xx, 429, a local disk
    /// error. `UPSTREAM_UNAVAILABLE` once the retries run out.
    #[error("{0}")]
    Transient(String),
    /// Worth retrying: bytes that do not match their sha256 or listed size.
    /// `CHECKSUM_MISMATCH` once the retries run out.
    #[error("{0}")]
    Corrupt(String),
    /// Retrying cannot help; the code says why (upstream 401/403/404, no
    /// valid weights, an unsafe pickle, missing files, no disk space).
    #[error("{1}")]
    Permanent(FailureCode, String),
    /// The task was cancelled while the attempt ran.
    #[error("the task was cancelled")]
    Cancelled,
}

impl SourceError {
    /// The task's `error_code` when this error ends it.
    pub fn code(&self) -> FailureCode {
        match self {
            SourceError::Transient(_) => FailureCode::UpstreamUnavailable,
            SourceError::Corrupt(_) => FailureCode::ChecksumMismatch,
            SourceError::Permanent(code, _) => *code,
            SourceError::Cancelled => FailureCode::Cancelled,
        }
    }

    /// A permanent error with a code of the error table.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        SourceError::Permanent(FailureCode::Table(code), message.into())
    }

    /// Classifies an upstream answer that was not a success. `what` names
    /// the thing asked for, e.g. "file config.json of bert-base-uncased".
    pub fn from_status(status: StatusCode, what: &str, detail: Option<&str>) -> Self {
        let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
        match status.as_u16() {
            401 | 403 => SourceError::refused(
                ErrorCode::Unauthorized,
                format!(
                    "access to {what} was refused with HTTP {status}{detail}; it may be private or \
                     gated, or the token lacks access"
                ),
            ),
            404 | 410 => SourceError::refused(
                ErrorCode::NotFound,
                format!("{what} was not found upstream{detail}"),
            ),
            429 => SourceError::Transient(format!("upstream rate-limited the request for {what}")),
            s if s >= 500 => SourceError::Transient(format!(
                "upstream answered HTTP {status} for {what}{detail}"
            )),
            _ => SourceError::refused(
                ErrorCode::UpstreamError,
                format!("upstream answered HTTP {status} for {what}{detail}"),
            ),
        }
    }

    /// A request that got no answer: connection refused or reset, timeout.
    pub fn from_request(err: &reqwest::Error, what: &str) -> Self {
        let why = if err.is_timeout() {
            "timed out".to_string()
        } else if err.is_connect() {
            "could not connect".to_string()
        } else {
            "the connection broke".to_string()
        };
        SourceError::Transient(format!("{what}: {why} ({})", root_cause(err)))
    }
}

/// The innermost cause of an error, which is usually the readable one.
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// Counters a source bumps as bytes and files move; the worker reads them
/// periodically and reports to the registry, so the download loop never
/// sends a message.
#[derive(Debug, Clone, Default)]
pub struct ProgressSink(Arc<ProgressCounters>);

#[derive(Debug, Default)]
struct ProgressCounters {
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    files_done: AtomicU64,
    files_total: AtomicU64,
}

impl ProgressSink {
    /// Sets the totals and clears the counts, at the start of an attempt.
    pub fn start(&self, bytes_total: u64, files_total: u64) {
        self.0.bytes_total.store(bytes_total, Ordering::Relaxed);
        self.0.files_total.store(files_total, Ordering::Relaxed);
        self.0.bytes_done.store(0, Ordering::Relaxed);
        self.0.files_done.store(0, Ordering::Relaxed);
    }

    /// Sets the counts from a transfer that reports totals so far (a git fetch).
    pub fn set_transfer(&self, bytes_done: u64, objects_done: u64, objects_total: u64) {
        self.0.bytes_done.store(bytes_done, Ordering::Relaxed);
        self.0.bytes_total.store(bytes_done, Ordering::Relaxed);
        self.0.files_done.store(objects_done, Ordering::Relaxed);
        self.0.files_total.store(objects_total, Ordering::Relaxed);
    }

    pub fn add_bytes(&self, n: u64) {
        self.0.bytes_done.fetch_add(n, Ordering::Relaxed);
    }

    pub fn file_done(&self) {
        self.0.files_done.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Progress {
        Progress {
            bytes_done: self.0.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.0.bytes_total.load(Ordering::Relaxed),
            files_done: self.0.files_done.load(Ordering::Relaxed),
            files_total: self.0.files_total.load(Ordering::Relaxed),
        }
    }
}

/// Whether `revision` is a branch, tag or commit name the service takes
/// (`names::REVISION`: dotted components of `[A-Za-z0-9_-]` joined by `/`,
/// a part of git's ref names; the empty text, which means `main`, too).
pub fn is_valid_revision(revision: &str) -> bool {
    names::REVISION.accepts(revision)
}

/// The HTTP client every source uses: no automatic redirects (the
/// downloader follows them itself, to keep tokens on their host), bounded
/// connect and read timeouts.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(60))
        .user_agent(concat!("vectorize/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client configuration is valid")
}
