//! The resumable, verifying HTTP download every remote source shares.
//!
//! A download streams into a partial file in the task's staging folder. A
//! partial file left by an earlier attempt (a retry, or a restart) is resumed
//! with `Range: bytes=N-`; a server that answers 200 instead of 206 sent the
//! whole file, so the partial one is truncated. Redirects are followed by
//! hand so that a bearer token only ever goes to its own origin. Network
//! receive and disk write + sha256 run on separate threads, joined by a
//! small bounded channel: memory stays flat whatever the file size.

use std::io::{IoSlice, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ProgressSink, SourceError};
use crate::secret::Secret;

const MAX_REDIRECTS: usize = 10;
/// Buffer for reading back a partial file's prefix to hash it.
const READ_BUFFER: usize = 1 << 20;
/// Batches in flight between the network and the disk: with `BATCH_BYTES`,
/// bounds memory.
const CHANNEL_BATCHES: usize = 4;
/// A batch is handed to the writer once it holds this much (or the network
/// has nothing more ready).
const BATCH_BYTES: usize = 1 << 20;

/// A bearer token and the only origin (`scheme://host:port`) it may go to.
#[derive(Debug, Clone)]
pub struct ScopedToken {
    pub token: Secret,
    pub origin: String,
}

impl ScopedToken {
    pub fn new(token: Secret, endpoint: &str) -> Option<Self> {
        let origin = Url::parse(endpoint).ok()?.origin().ascii_serialization();
        Some(Self { token, origin })
    }

    fn applies_to(&self, url: &Url) -> bool {
        url.origin().ascii_serialization() == self.origin
    }
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

/// Fetches `file`, resuming a partial file and verifying size and sha256.
/// On a transient error the partial file is kept for the next attempt; on a
/// verification error it is removed.
pub async fn fetch(
    client: &reqwest::Client,
    file: &FileDownload,
    progress: &ProgressSink,
    cancel: &CancellationToken,
) -> Result<Downloaded, SourceError> {
    if let Some(parent) = file.dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| local_io(&file.what, &e))?;
    }
    let mut offset = tokio::fs::metadata(&file.dest)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    if file.expected_size.is_some_and(|size| offset > size) {
        offset = 0;
    }
    if offset > 0 && Some(offset) == file.expected_size {
        progress.add_bytes(offset);
        return finish(file, hash_file(file.dest.clone(), cancel).await?).await;
    }
    let response = send_following_redirects(client, file, offset, cancel).await?;
    let append = match response.status() {
        StatusCode::PARTIAL_CONTENT if content_range_start(&response) == Some(offset) => true,
        StatusCode::PARTIAL_CONTENT => {
            return Err(SourceError::Transient(format!(
                "{}: the server answered a range that does not start at byte {offset}",
                file.what
            )));
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            tokio::fs::remove_file(&file.dest).await.ok();
            return Err(SourceError::Transient(format!(
                "{}: the partial file no longer matches the server's; starting over",
                file.what
            )));
        }
        status if status.is_success() => false,
        status => {
            return Err(SourceError::from_status(
                status,
                &file.what,
                error_detail(&response).as_deref(),
            ));
        }
    };
    let start = if append { offset } else { 0 };
    progress.add_bytes(start);
    let written = stream_to_file(response, file, start, progress, cancel).await?;
    finish(file, written).await
}

/// Checks the finished file's size and sha256; removes it when they disagree.
async fn finish(file: &FileDownload, got: Downloaded) -> Result<Downloaded, SourceError> {
    let mismatch = match (&file.expected_size, &file.expected_sha256) {
        (Some(size), _) if got.size < *size => {
            return Err(SourceError::Transient(format!(
                "{}: the body ended after {} of {size} bytes",
                file.what, got.size
            )));
        }
        (Some(size), _) if got.size != *size => {
            Some(format!("is {} bytes, {size} expected", got.size))
        }
        (_, Some(sha)) if !sha.eq_ignore_ascii_case(&got.sha256) => {
            Some(format!("has sha256 {}, {sha} expected", got.sha256))
        }
        _ => None,
    };
    match mismatch {
        Some(why) => {
            tokio::fs::remove_file(&file.dest).await.ok();
            Err(SourceError::Transient(format!(
                "{} {why}; it will be downloaded again",
                file.what
            )))
        }
        None => Ok(got),
    }
}

async fn send_following_redirects(
    client: &reqwest::Client,
    file: &FileDownload,
    offset: u64,
    cancel: &CancellationToken,
) -> Result<reqwest::Response, SourceError> {
    let mut url = Url::parse(&file.url)
        .map_err(|e| SourceError::Permanent(format!("{}: bad URL {}: {e}", file.what, file.url)))?;
    let origin = url.origin();
    for _ in 0..MAX_REDIRECTS {
        let mut request = client.get(url.clone());
        // Headers an LFS server handed out are for its own origin only.
        if url.origin() == origin {
            request = request.headers(file.headers.clone());
        }
        if let Some(token) = file.token.as_ref().filter(|t| t.applies_to(&url)) {
            request = request.bearer_auth(token.token.expose());
        }
        if offset > 0 {
            request = request.header(header::RANGE, format!("bytes={offset}-"));
        }
        let response = tokio::select! {
            _ = cancel.cancelled() => return Err(SourceError::Cancelled),
            sent = request.send() => sent.map_err(|e| SourceError::from_request(&e, &file.what))?,
        };
        if !response.status().is_redirection() {
            return Ok(response);
        }
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                SourceError::Transient(format!("{}: a redirect without a Location", file.what))
            })?;
        url = url.join(location).map_err(|e| {
            SourceError::Permanent(format!("{}: bad redirect to {location}: {e}", file.what))
        })?;
    }
    Err(SourceError::Permanent(format!(
        "{}: more than {MAX_REDIRECTS} redirects",
        file.what
    )))
}

fn content_range_start(response: &reqwest::Response) -> Option<u64> {
    let value = response
        .headers()
        .get(header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let range = value.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// The hub's explanation of an error, from `X-Error-Message` or `X-Error-Code`.
pub fn error_detail(response: &reqwest::Response) -> Option<String> {
    let headers = response.headers();
    ["x-error-message", "x-error-code"].iter().find_map(|name| {
        headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

/// Streams the body into the partial file: the async side receives, a
/// blocking thread writes and hashes.
async fn stream_to_file(
    response: reqwest::Response,
    file: &FileDownload,
    start: u64,
    progress: &ProgressSink,
    cancel: &CancellationToken,
) -> Result<Downloaded, SourceError> {
    let (batches, receiver) = mpsc::channel::<Vec<Bytes>>(CHANNEL_BATCHES);
    let writer = tokio::task::spawn_blocking({
        let (dest, expected, cancel) = (file.dest.clone(), file.expected_size, cancel.clone());
        move || write_and_hash(&dest, start, expected, receiver, &cancel)
    });
    let mut body = response.bytes_stream();
    let mut batch = Batch::default();
    let outcome = loop {
        // Take every chunk that is ready without waiting; hand the batch to
        // the writer when it is big, or before waiting for the network, so
        // a slow download still reaches the disk as it comes.
        let next = match body.next().now_or_never() {
            Some(next) => next,
            None => {
                if batch.send(&batches).await.is_err() {
                    break Ok(()); // the writer failed; its error is reported below
                }
                tokio::select! {
                    _ = cancel.cancelled() => break Err(SourceError::Cancelled),
                    next = body.next() => next,
                }
            }
        };
        match next {
            None => {
                // A writer that failed reports its error below.
                let _ = batch.send(&batches).await;
                break Ok(());
            }
            Some(Ok(chunk)) => {
                progress.add_bytes(chunk.len() as u64);
                crate::metrics::BYTES_DOWNLOADED.add(chunk.len() as u64);
                batch.push(chunk);
                if batch.bytes >= BATCH_BYTES && batch.send(&batches).await.is_err() {
                    break Ok(());
                }
            }
            Some(Err(e)) => {
                let _ = batch.send(&batches).await;
                break Err(SourceError::from_request(&e, &file.what));
            }
        }
    };
    drop(batches);
    let written = writer
        .await
        .map_err(|e| SourceError::Transient(format!("{}: writer stopped: {e}", file.what)))?;
    if cancel.is_cancelled() {
        return Err(SourceError::Cancelled);
    }
    let written = written.map_err(|e| local_io(&file.what, &e))?;
    outcome.map(|()| written)
}

/// Chunks received and not yet handed to the writer.
#[derive(Default)]
struct Batch {
    chunks: Vec<Bytes>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, chunk: Bytes) {
        self.bytes += chunk.len();
        self.chunks.push(chunk);
    }

    async fn send(&mut self, to: &mpsc::Sender<Vec<Bytes>>) -> Result<(), ()> {
        if self.chunks.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        to.send(std::mem::take(&mut self.chunks))
            .await
            .map_err(|_| ())
    }
}

/// Hashes the `start` bytes already on disk, then appends and hashes every
/// batch received, one `writev` a batch. Whatever arrived is on disk when
/// the sender stops early, so the next attempt can resume from it, even
/// after a crash.
fn write_and_hash(
    dest: &Path,
    start: u64,
    expected: Option<u64>,
    mut batches: mpsc::Receiver<Vec<Bytes>>,
    cancel: &CancellationToken,
) -> std::io::Result<Downloaded> {
    let mut hasher = Sha256::new();
    let mut size = 0;
    if start > 0 {
        size = hash_prefix(dest, start, &mut hasher, cancel)?;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(dest)?;
    out.set_len(size)?;
    use std::io::Seek;
    out.seek(std::io::SeekFrom::Start(size))?;
    // Reserve the blocks the rest of the file needs in one call, keeping the
    // length (it is the resume offset): the file system then does not
    // allocate block by block as writes arrive. A file system without
    // fallocate just allocates as before.
    if let Some(total) = expected.filter(|t| *t > size) {
        let _ = rustix::fs::fallocate(
            &out,
            rustix::fs::FallocateFlags::KEEP_SIZE,
            size,
            total - size,
        );
    }
    while let Some(batch) = batches.blocking_recv() {
        for chunk in &batch {
            hasher.update(chunk);
            size += chunk.len() as u64;
        }
        write_all_vectored(&mut out, &batch)?;
    }
    Ok(Downloaded {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Writes every chunk, as few system calls as the kernel allows.
fn write_all_vectored(out: &mut std::fs::File, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = out.write_vectored(rest)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Hashes the first `len` bytes of a file; a cancelled task stops it at the
/// next buffer (a resumed prefix may be gigabytes long).
fn hash_prefix(
    path: &Path,
    len: u64,
    hasher: &mut Sha256,
    cancel: &CancellationToken,
) -> std::io::Result<u64> {
    let mut input = std::fs::File::open(path)?.take(len);
    let mut buf = vec![0u8; READ_BUFFER];
    let mut total = 0;
    loop {
        if cancel.is_cancelled() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the task was cancelled",
            ));
        }
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// Size and sha256 of a whole file on disk (blocking); stops early, with
/// an `Interrupted` error, once `cancel` fires.
pub fn sha256_file(path: &Path, cancel: &CancellationToken) -> std::io::Result<Downloaded> {
    let mut hasher = Sha256::new();
    let size = hash_prefix(path, u64::MAX, &mut hasher, cancel)?;
    Ok(Downloaded {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Size and sha256 of a file already on disk, hashed off the async runtime.
async fn hash_file(path: PathBuf, cancel: &CancellationToken) -> Result<Downloaded, SourceError> {
    let what = path.display().to_string();
    let stop = cancel.clone();
    let hashed = tokio::task::spawn_blocking(move || sha256_file(&path, &stop))
        .await
        .map_err(|e| SourceError::Transient(format!("hashing {what}: {e}")))?;
    if cancel.is_cancelled() {
        return Err(SourceError::Cancelled);
    }
    hashed.map_err(|e: std::io::Error| local_io(&what, &e))
}

/// A local disk error: the data dir may be full or unwritable; retrying may help.
fn local_io(what: &str, err: &std::io::Error) -> SourceError {
    SourceError::Transient(format!("{what}: could not write to the data dir: {err}"))
}

/// Builds a header map from name/value pairs, skipping any that are not valid HTTP.
pub fn header_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> HeaderMap {
    pairs
        .into_iter()
        .filter_map(|(name, value)| {
            Some((
                header::HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect()
}
