//! Fetching what a file still misses: the missing ranges are cut into
//! parts of at most `part_bytes`, fetched over up to `connections`
//! connections at once (each part holds one of the node's connection
//! permits while it streams), each part retried on its own from the byte
//! where it stopped. The first request is sent alone: a server that
//! answers it with the whole file instead of the range asked for does not
//! honour `Range`, and the file then comes over that one stream. The other
//! connections join a quarter second later, and only if that first stream
//! is slower than `ONE_STREAM_ENOUGH`: on a fast link, parallel parts
//! would cost CPU and win nothing.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use super::request::{self, Answered};
use super::sink::Piece;
use super::{Downloader, FileDownload};
use crate::sources::SourceError;

/// Times a part is asked for again after a transient failure before the
/// attempt fails.
const PART_RETRIES: u32 = 3;
/// First wait before a part is asked for again; it doubles each time.
const PART_BACKOFF: Duration = Duration::from_millis(250);
/// A batch is handed to the writer once it holds this much (or the network
/// has nothing more ready).
const BATCH_BYTES: usize = 1 << 20;
/// How long a file's first stream runs alone before its speed is judged.
const JUDGE_AFTER: Duration = Duration::from_millis(250);
/// A stream this fast (bytes per second) keeps the file to itself: more
/// connections would only cost CPU. Slower, as a CDN holds each connection
/// to tens of MiB/s, the other connections join.
const ONE_STREAM_ENOUGH: u64 = 64 << 20;

/// One file's fetch: where its bytes come from and where they go.
pub struct Job<'a> {
    pub downloader: &'a Downloader,
    pub file: &'a FileDownload,
    /// The listed size; `None`: one stream, read to its end.
    pub size: Option<u64>,
    pub pieces: mpsc::Sender<Piece>,
    pub cancel: &'a CancellationToken,
    /// Bytes handed to the writer so far, to judge the first stream's speed.
    pub received: AtomicU64,
}

/// A half-open byte range `[start, end)` of the file.
type Part = (u64, u64);

/// Fetches every byte of `missing` (half-open ranges, in order).
pub async fn fetch_missing(job: &Job<'_>, missing: Vec<Part>) -> Result<(), SourceError> {
    let whole = (0, job.size.unwrap_or(u64::MAX));
    let part_bytes = job.downloader.part_bytes();
    let mut parts: VecDeque<Part> = match job.size {
        None => VecDeque::from([whole]),
        Some(_) => split(&missing, part_bytes).into(),
    };
    let Some(first) = parts.pop_front() else {
        return Ok(());
    };
    let permit = job.connection().await?;
    // The probe: its answer says whether the server honours `Range`.
    let probe = match request::get(job.client(), job.file, job.range_of(first), job.cancel).await {
        Ok(response) => Some(response),
        Err(SourceError::Transient(why)) => {
            tracing::debug!(file = %job.file.what, %why, "first request failed; retrying it");
            None
        }
        Err(other) => return Err(other),
    };
    let ignores_range = probe.as_ref().is_some_and(|response| {
        first != whole
            && matches!(
                request::answered(response, job.file, first.0),
                Ok(Answered::Whole)
            )
    });
    if ignores_range {
        tracing::info!(file = %job.file.what, "the server ignores Range: one stream");
        return run_part(job, whole, probe).await;
    }
    let queue = PartQueue {
        parts: Mutex::new(parts),
        alone: AtomicBool::new(false),
    };
    let workers_wanted = job.downloader.max_connections().min(1 + queue.len());
    let mut workers = FuturesUnordered::new();
    workers.push(
        async {
            run_part(job, first, probe).await?;
            drop(permit);
            take_parts(job, &queue).await
        }
        .boxed(),
    );
    // One stream first: the other connections join only when it turns
    // out slow, so a fast link does not pay for parallel parts.
    let started = Instant::now();
    let judge = tokio::time::sleep(JUDGE_AFTER);
    tokio::pin!(judge);
    let mut judged = workers_wanted <= 1;
    loop {
        let mut spread = false;
        tokio::select! {
            // The first failure ends the fetch; dropping the others stops them.
            done = workers.next() => match done {
                Some(done) => done?,
                None => return Ok(()),
            },
            () = &mut judge, if !judged => {
                judged = true;
                let received = job.received.load(Ordering::Relaxed) as f64;
                let rate = received / started.elapsed().as_secs_f64();
                spread = rate < ONE_STREAM_ENOUGH as f64;
                queue.alone.store(!spread, Ordering::Relaxed);
                tracing::debug!(file = %job.file.what, rate, spread, "one stream judged");
            }
        }
        if spread {
            for _ in 1..workers_wanted {
                workers.push(take_parts(job, &queue).boxed());
            }
        }
    }
}

/// The parts of a file still to fetch, shared by its connections.
struct PartQueue {
    parts: Mutex<VecDeque<Part>>,
    /// Set once the first stream was judged fast enough to keep the file
    /// to itself.
    alone: AtomicBool,
}

impl PartQueue {
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// The next part; for a stream that keeps the file alone, the next
    /// part with every part that follows on from it, as one range: one
    /// request for the rest instead of one a part.
    fn next(&self) -> Option<Part> {
        let mut parts = self.lock();
        let (start, mut end) = parts.pop_front()?;
        while self.alone.load(Ordering::Relaxed)
            && let Some(&(next, next_end)) = parts.front()
            && next == end
        {
            end = next_end;
            parts.pop_front();
        }
        Some((start, end))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Part>> {
        self.parts
            .lock()
            .expect("the part queue's lock is never poisoned")
    }
}

/// Cuts ranges into parts of at most `part_bytes`.
fn split(ranges: &[Part], part_bytes: u64) -> Vec<Part> {
    let mut parts = Vec::new();
    for &(start, end) in ranges {
        let mut at = start;
        while at < end {
            let next = end.min(at.saturating_add(part_bytes));
            parts.push((at, next));
            at = next;
        }
    }
    parts
}

/// A connection's worth of work: takes parts from the queue until it is empty.
async fn take_parts(job: &Job<'_>, queue: &PartQueue) -> Result<(), SourceError> {
    loop {
        let Some(part) = queue.next() else {
            return Ok(());
        };
        let _permit = job.connection().await?;
        run_part(job, part, None).await?;
    }
}

/// Fetches one part, asking again from where it stopped after a transient
/// failure, up to `PART_RETRIES` times.
async fn run_part(
    job: &Job<'_>,
    (start, end): Part,
    mut response: Option<reqwest::Response>,
) -> Result<(), SourceError> {
    let mut at = start;
    let mut failures = 0;
    loop {
        let tried = async {
            let response = match response.take() {
                Some(response) => response,
                None => {
                    request::get(job.client(), job.file, job.range_of((at, end)), job.cancel)
                        .await?
                }
            };
            if request::answered(&response, job.file, at)? == Answered::Whole && at != 0 {
                return Err(SourceError::Transient(format!(
                    "{}: the server stopped honouring Range",
                    job.file.what
                )));
            }
            stream(job, response, &mut at, end).await
        }
        .await;
        match tried {
            Err(SourceError::Transient(why)) if failures < PART_RETRIES => {
                let wait = PART_BACKOFF * 2u32.pow(failures);
                failures += 1;
                tracing::debug!(file = %job.file.what, at, end, %why, "part failed; asking again");
                tokio::select! {
                    _ = job.cancel.cancelled() => return Err(SourceError::Cancelled),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            done => return done,
        }
    }
}

/// Streams a body into the writer from `*at` up to `end`, advancing `*at`
/// as batches are handed over. Bytes past `end` are never taken.
async fn stream(
    job: &Job<'_>,
    response: reqwest::Response,
    at: &mut u64,
    end: u64,
) -> Result<(), SourceError> {
    let mut body = response.bytes_stream();
    let mut batch = Batch::default();
    loop {
        // Take every chunk that is ready without waiting; hand the batch to
        // the writer when it is big, or before waiting for the network, so
        // a slow download still reaches the disk as it comes.
        let next = match body.next().now_or_never() {
            Some(next) => next,
            None => {
                batch.hand_over(job, at).await?;
                tokio::select! {
                    _ = job.cancel.cancelled() => return Err(SourceError::Cancelled),
                    next = body.next() => next,
                }
            }
        };
        match next {
            Some(Ok(mut chunk)) => {
                let room = end - *at - batch.bytes as u64;
                chunk.truncate(room.min(chunk.len() as u64) as usize);
                if let Some(throttle) = job.downloader.throttle() {
                    tokio::select! {
                        _ = job.cancel.cancelled() => return Err(SourceError::Cancelled),
                        _ = throttle.take(chunk.len() as u64) => {}
                    }
                }
                batch.push(chunk);
                if *at + batch.bytes as u64 == end {
                    return batch.hand_over(job, at).await;
                }
                if batch.bytes >= BATCH_BYTES {
                    batch.hand_over(job, at).await?;
                }
            }
            None => {
                batch.hand_over(job, at).await?;
                if job.size.is_some() && *at < end {
                    return Err(SourceError::Transient(format!(
                        "{}: the body ended at byte {}, before byte {end}",
                        job.file.what, *at
                    )));
                }
                return Ok(());
            }
            Some(Err(e)) => {
                batch.hand_over(job, at).await?;
                return Err(SourceError::from_request(&e, &job.file.what));
            }
        }
    }
}

impl Job<'_> {
    fn client(&self) -> &reqwest::Client {
        self.downloader.client()
    }

    /// The `Range` to ask for: none when the part is the whole file.
    fn range_of(&self, (start, end): Part) -> Option<Part> {
        match self.size {
            Some(size) if start > 0 || end < size => Some((start, end)),
            _ => None,
        }
    }

    /// One of the node's connection permits; waits for one to be free.
    async fn connection(&self) -> Result<OwnedSemaphorePermit, SourceError> {
        tokio::select! {
            _ = self.cancel.cancelled() => Err(SourceError::Cancelled),
            permit = self.downloader.connections().acquire_owned() => {
                permit.map_err(|_| SourceError::Cancelled)
            }
        }
    }
}

/// Chunks received and not yet handed to the writer.
#[derive(Default)]
struct Batch {
    chunks: Vec<Bytes>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.bytes += chunk.len();
            self.chunks.push(chunk);
        }
    }

    /// Hands the batch to the writer as the bytes at `*at`, and moves `*at` past them.
    async fn hand_over(&mut self, job: &Job<'_>, at: &mut u64) -> Result<(), SourceError> {
        if self.chunks.is_empty() {
            return Ok(());
        }
        let piece = Piece {
            offset: *at,
            chunks: std::mem::take(&mut self.chunks),
        };
        let bytes = std::mem::take(&mut self.bytes) as u64;
        *at += bytes;
        job.received.fetch_add(bytes, Ordering::Relaxed);
        job.pieces.send(piece).await.map_err(|_| {
            // The writer stopped: its own error says why.
            SourceError::Transient(format!("{}: the writer stopped", job.file.what))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_alone_takes_the_rest_in_one_range() {
        let queue = PartQueue {
            parts: Mutex::new(split(&[(0, 40), (50, 60)], 10).into()),
            alone: AtomicBool::new(false),
        };
        assert_eq!(queue.next(), Some((0, 10)));
        queue.alone.store(true, Ordering::Relaxed);
        assert_eq!(queue.next(), Some((10, 40)));
        assert_eq!(queue.next(), Some((50, 60)));
        assert_eq!(queue.next(), None);
    }

    #[test]
    fn ranges_are_cut_into_parts() {
        assert_eq!(
            split(&[(0, 10), (15, 16), (20, 45)], 10),
            vec![(0, 10), (15, 16), (20, 30), (30, 40), (40, 45)]
        );
        assert_eq!(split(&[], 10), vec![]);
    }
}
