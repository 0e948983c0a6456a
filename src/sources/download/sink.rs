//! Where the bytes of one file go: a writer thread that puts each piece at
//! its offset (positioned writes into one preallocated file) and keeps the
//! journal, and a hasher thread that runs sha256 in order over the
//! contiguous prefix as it completes. Pieces that arrive in order are
//! hashed from memory; a part that finished ahead of the prefix is read
//! back from the page cache once the prefix reaches it. So the file is
//! never read again once it is complete, and memory stays bounded by the
//! two small channels whatever the file size.
//!
//! Once the task is cancelled the writer writes nothing more, and
//! `finish` returns only when both threads have stopped.

use std::fs::File;
use std::io::IoSlice;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc as sync_mpsc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::journal::{Coverage, Journal};
use crate::metrics::Metrics;
use crate::sources::ProgressSink;

/// Pieces queued for the writer.
const WRITE_QUEUE: usize = 4;
/// Work queued for the hasher.
const HASH_QUEUE: usize = 4;
/// Buffer for reading a finished part back to hash it.
const READ_BUFFER: usize = 1 << 20;

/// Bytes received for `[offset, offset + len)`.
pub struct Piece {
    pub offset: u64,
    pub chunks: Vec<Bytes>,
}

/// The hasher's next step.
enum HashWork {
    /// The next bytes of the prefix, as they arrived.
    Bytes(Vec<Bytes>),
    /// The next bytes of the prefix, already on disk: `[from, to)`.
    ReadBack(u64, u64),
}

/// What the threads leave when they stop.
pub struct Sunk {
    /// The bytes on disk.
    pub coverage: Coverage,
    /// Bytes hashed: the contiguous prefix.
    pub hashed: u64,
    pub sha256: String,
}

/// A file being written: send `Piece`s, then `finish`.
pub struct FileSink {
    pieces: mpsc::Sender<Piece>,
    writer: tokio::task::JoinHandle<std::io::Result<Coverage>>,
    hasher: tokio::task::JoinHandle<std::io::Result<(u64, String)>>,
}

/// What the file is and what is known of it.
pub struct SinkTarget<'a> {
    pub path: &'a Path,
    /// The listed size, when known: the file is preallocated to it, the
    /// journal kept, and no byte written past it.
    pub size: Option<u64>,
    /// What is on disk already (from the journal).
    pub coverage: Coverage,
}

impl FileSink {
    /// Opens (and, when fresh, preallocates) the file, rewrites its
    /// journal, counts what it already holds as progress and starts the
    /// two threads.
    pub fn start(
        target: SinkTarget<'_>,
        progress: &ProgressSink,
        metrics: &Arc<Metrics>,
        cancel: &CancellationToken,
    ) -> std::io::Result<FileSink> {
        let SinkTarget {
            path,
            size,
            coverage,
        } = target;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        let journal = match size {
            Some(size) => {
                if coverage.covered() == 0 {
                    preallocate(&file, size)?;
                }
                Some(Journal::create(path, size, &coverage)?)
            }
            None => {
                file.set_len(0)?;
                Journal::remove(path);
                None
            }
        };
        progress.add_bytes(coverage.covered());
        let reader = file.try_clone()?;
        let (pieces, received) = mpsc::channel(WRITE_QUEUE);
        let (work, to_hash) = sync_mpsc::sync_channel(HASH_QUEUE);
        let hasher = tokio::task::spawn_blocking({
            let cancel = cancel.clone();
            move || hash_in_order(&reader, to_hash, &cancel)
        });
        let writer = tokio::task::spawn_blocking({
            let (progress, cancel) = (progress.clone(), cancel.clone());
            let mut writer = Writer {
                file,
                size,
                journal,
                coverage,
                fed: 0,
                work,
                progress,
                metrics: metrics.clone(),
            };
            move || writer.run(received, &cancel)
        });
        Ok(FileSink {
            pieces,
            writer,
            hasher,
        })
    }

    /// Where pieces go; dropping every sender (and `finish`) ends the writer.
    pub fn pieces(&self) -> mpsc::Sender<Piece> {
        self.pieces.clone()
    }

    /// Waits for both threads to stop and answers what they left.
    pub async fn finish(self) -> std::io::Result<Sunk> {
        drop(self.pieces);
        let coverage = self.writer.await.map_err(std::io::Error::other)?;
        let hashed = self.hasher.await.map_err(std::io::Error::other)?;
        let coverage = coverage?;
        let (hashed, sha256) = hashed?;
        Ok(Sunk {
            coverage,
            hashed,
            sha256,
        })
    }
}

/// Gives the file its full length and reserves its blocks in one call, so
/// that the file system does not allocate block by block as parts arrive
/// all over it. A file system without fallocate allocates as writes come.
fn preallocate(file: &File, size: u64) -> std::io::Result<()> {
    file.set_len(0)?;
    file.set_len(size)?;
    if size > 0 {
        let _ = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size);
    }
    Ok(())
}

struct Writer {
    file: File,
    size: Option<u64>,
    journal: Option<Journal>,
    coverage: Coverage,
    /// The hasher has been given `[0, fed)`.
    fed: u64,
    work: sync_mpsc::SyncSender<HashWork>,
    progress: ProgressSink,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn run(
        &mut self,
        mut received: mpsc::Receiver<Piece>,
        cancel: &CancellationToken,
    ) -> std::io::Result<Coverage> {
        self.feed_prefix();
        while let Some(piece) = received.blocking_recv() {
            if cancel.is_cancelled() {
                break;
            }
            self.write(piece)?;
        }
        Ok(std::mem::take(&mut self.coverage))
    }

    fn write(&mut self, piece: Piece) -> std::io::Result<()> {
        let len: u64 = piece.chunks.iter().map(|c| c.len() as u64).sum();
        let (start, end) = (piece.offset, piece.offset + len);
        if self.size.is_some_and(|size| end > size) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the server sent more bytes than the file's listed size",
            ));
        }
        write_all_at(&self.file, &piece.chunks, start)?;
        let new = self.coverage.insert(start, end);
        self.progress.add_bytes(new);
        self.metrics.bytes_downloaded.add(len);
        if let Some(journal) = &mut self.journal {
            journal.record(start, end)?;
        }
        if start == self.fed {
            self.fed = end;
            // A hasher that stopped (cancelled) reports that itself.
            let _ = self.work.send(HashWork::Bytes(piece.chunks));
        }
        self.feed_prefix();
        Ok(())
    }

    /// Hands the hasher the part of the prefix it has not had, from disk.
    fn feed_prefix(&mut self) {
        let prefix = self.coverage.prefix();
        if prefix > self.fed {
            let _ = self.work.send(HashWork::ReadBack(self.fed, prefix));
            self.fed = prefix;
        }
    }
}

/// Writes every chunk at `offset` on, as few system calls as the kernel allows.
fn write_all_at(file: &File, chunks: &[Bytes], mut offset: u64) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = rustix::io::pwritev(file, rest, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        offset += n as u64;
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Hashes the prefix in order until the writer stops; answers the bytes
/// hashed and the sha256. A cancelled task stops it at the next buffer.
fn hash_in_order(
    file: &File,
    work: sync_mpsc::Receiver<HashWork>,
    cancel: &CancellationToken,
) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut hashed = 0u64;
    let mut buf = Vec::new();
    for step in work {
        match step {
            HashWork::Bytes(chunks) => {
                for chunk in &chunks {
                    hasher.update(chunk);
                    hashed += chunk.len() as u64;
                }
            }
            HashWork::ReadBack(from, to) => {
                buf.resize(READ_BUFFER, 0);
                let mut at = from;
                while at < to {
                    if cancel.is_cancelled() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::Interrupted,
                            "the task was cancelled",
                        ));
                    }
                    let want = (to - at).min(READ_BUFFER as u64) as usize;
                    file.read_exact_at(&mut buf[..want], at)?;
                    hasher.update(&buf[..want]);
                    at += want as u64;
                }
                hashed += to - from;
            }
        }
    }
    Ok((hashed, hex::encode(hasher.finalize())))
}

/// Size and sha256 of a whole file on disk (blocking); stops early, with
/// an `Interrupted` error, once `cancel` fires.
pub fn hash_file(path: &Path, cancel: &CancellationToken) -> std::io::Result<(u64, String)> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let (work, to_hash) = sync_mpsc::sync_channel(1);
    work.send(HashWork::ReadBack(0, size))
        .expect("the receiver is alive");
    drop(work);
    hash_in_order(&file, to_hash, cancel)
}
