//! The zero-trust guards tried from outside, on the real service: floods of
//! pickle opcodes cost bounded memory, `/health` answers while a large
//! checkpoint is checked, and a cancel stops even the hashing of a
//! multi-GiB resumed partial file. (The API key's route check is in
//! `operations.rs`, the git token's host scope in `github.rs`, the pickle
//! corpus in the crate's unit tests.)

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use vectorize::sources::ProgressSink;
use vectorize::sources::download::{DownloadSettings, Downloader, FileDownload};
use zip::write::SimpleFileOptions;

use crate::helpers::small_model;
use crate::support::archives::{multipart_content_type, multipart_head, multipart_tail};
use crate::support::fake_hub::{FakeHub, safetensors_bytes};
use crate::support::hygiene::task_staging;
use crate::support::process::ServiceProcess;

/// Peak resident memory of a process so far (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Writes a ZIP of stored entries to `path`, each entry's bytes streamed
/// from a reader, so that no archive is ever held in memory.
fn write_archive(path: &Path, entries: Vec<(&str, Box<dyn std::io::Read>)>) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    for (name, mut reader) in entries {
        zip.start_file(name, options).unwrap();
        std::io::copy(&mut reader, &mut zip).unwrap();
    }
    zip.finish().unwrap().flush().unwrap();
}

/// Posts the archive at `path`, streamed from disk.
async fn upload_file(service: &ServiceProcess, path: &Path) -> (u16, Value) {
    let file = tokio::fs::File::open(path).await.unwrap();
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(
        multipart_head("big.zip"),
    ))])
    .chain(tokio_util::io::ReaderStream::new(file))
    .chain(futures_util::stream::iter([Ok(bytes::Bytes::from(
        multipart_tail(),
    ))]));
    let response = service
        .client
        .post(service.at("/v1/upload/local"))
        .header("content-type", multipart_content_type())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `head`, then `unit` repeated `times` times, generated as it is read.
fn repeated(unit: &'static [u8], times: usize, head: &'static [u8]) -> Box<dyn std::io::Read> {
    struct Cycle(&'static [u8], usize);
    impl std::io::Read for Cycle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            for b in buf.iter_mut() {
                *b = self.0[self.1];
                self.1 = (self.1 + 1) % self.0.len();
            }
            Ok(buf.len())
        }
    }
    let body = std::io::Read::take(Cycle(unit, 0), (unit.len() * times) as u64);
    Box::new(std::io::Read::chain(head, body))
}

#[tokio::test]
async fn pickle_floods_cost_bounded_memory_and_health_answers_during_a_large_check() {
    let hub = FakeHub::start().await;
    let data = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start(data.path(), &hub, &[]).await;
    let work = tempfile::tempdir().unwrap();
    // Let the idle service settle, then take its peak as the baseline.
    for _ in 0..5 {
        service.get_json("/v1/upload/tasks").await;
    }
    let idle = peak_rss(service.pid());

    // The floods of the issue, each beside valid weights so that only the
    // pickle can be the reason a model is refused.
    let floods = work.path().join("floods.zip");
    let weights = safetensors_bytes(&[("w", &[2])]);
    let valid = || -> Box<dyn std::io::Read> { Box::new(std::io::Cursor::new(weights.clone())) };
    write_archive(
        &floods,
        vec![
            ("memoize/model.safetensors", valid()),
            // 40 M MEMOIZE after PROTO 4, as weights: refused at the first MEMOIZE.
            (
                "memoize/weights.bin",
                repeated(b"\x94", 40_000_000, b"\x80\x04N"),
            ),
            ("memo_sniffed/model.safetensors", valid()),
            // Without PROTO, read as Python would until the memo budget is spent.
            (
                "memo_sniffed/extra.model",
                repeated(b"\x94", 40_000_000, b"N"),
            ),
            ("marks/model.safetensors", valid()),
            ("marks/extra.model", repeated(b"(", 40_000_000, b"")),
            ("none_pop/model.safetensors", valid()),
            // 20 M NONE,POP pairs as weights: POP is no checkpoint opcode.
            (
                "none_pop/weights.bin",
                repeated(b"N0", 20_000_000, b"\x80\x02"),
            ),
        ],
    );
    let (status, report) = upload_file(&service, &floods).await;
    assert_eq!(status, 404, "every flood is refused: {report}");
    let message = report["message"].as_str().unwrap();
    for reason in ["MEMOIZE", "MiB of values", "POP"] {
        assert!(message.contains(reason), "{message}");
    }
    let after_floods = peak_rss(service.pid());

    // A 1 GiB checkpoint: /health is polled while it is received, extracted,
    // hashed and scanned.
    let big = work.path().join("big.zip");
    let pickle = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/pickle/safe/state_dict_zip.pt"),
    )
    .unwrap();
    write_archive(
        &big,
        vec![
            ("big/model.pt", Box::new(std::io::Cursor::new(pickle))),
            ("big/shard.bin.safetensors", {
                let header =
                    br#"{"w":{"dtype":"U8","shape":[1073741824],"data_offsets":[0,1073741824]}}"#;
                let mut head = (header.len() as u64).to_le_bytes().to_vec();
                head.extend_from_slice(header);
                Box::new(std::io::Read::chain(
                    std::io::Cursor::new(head),
                    std::io::Read::take(std::io::repeat(7), 1 << 30),
                ))
            }),
        ],
    );
    let stop = CancellationToken::new();
    let prober = tokio::spawn({
        let (client, url, stop) = (service.client.clone(), service.at("/health"), stop.clone());
        async move {
            let mut latencies = Vec::new();
            while !stop.is_cancelled() {
                let started = Instant::now();
                let response = client.get(&url).send().await.unwrap();
                assert_eq!(response.status(), 200);
                latencies.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            latencies
        }
    });
    let (status, report) = upload_file(&service, &big).await;
    stop.cancel();
    let mut latencies = prober.await.unwrap();
    assert_eq!(status, 201, "{report}");
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    let max = *latencies.last().unwrap();
    let after_big = peak_rss(service.pid());
    eprintln!(
        "health during a 1 GiB check: {} probes, p99 {p99:?}, max {max:?}; peak RSS idle {} MiB, \
         after floods {} MiB, after 1 GiB {} MiB",
        latencies.len(),
        idle >> 20,
        after_floods >> 20,
        after_big >> 20
    );
    // Generous bounds for a loaded CI machine; the figures above are the measurement.
    assert!(latencies.len() > 20, "the check took long enough to probe");
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
    assert!(
        after_big.saturating_sub(idle) <= 64 << 20,
        "peak RSS grew by {} MiB",
        (after_big - idle) >> 20
    );
}

/// A server that answers every ranged GET with the last 16 bytes of a file
/// of `total` bytes, slowly.
async fn ranged_server(total: u64) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/file", listener.local_addr().unwrap());
    let endpoint = poem::endpoint::make(move |_req: poem::Request| async move {
        poem::Response::builder()
            .status(poem::http::StatusCode::PARTIAL_CONTENT)
            .header(
                "Content-Range",
                format!("bytes {}-{}/{total}", total - 16, total - 1),
            )
            .body(vec![0u8; 16])
    });
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(endpoint));
    url
}

#[tokio::test]
async fn a_cancel_stops_the_hashing_of_a_huge_partial_file() {
    const PARTIAL: u64 = 16 << 30; // sparse: no disk is used
    let dir = tempfile::tempdir().unwrap();
    for (name, expected) in [("resumed", PARTIAL + 16), ("complete", PARTIAL)] {
        // A partial file the length of the whole, whose journal says its
        // first 16 GiB are on disk.
        let dest = dir.path().join(name);
        std::fs::File::create(&dest)
            .unwrap()
            .set_len(expected)
            .unwrap();
        let journal = format!("vectorize-journal 1 {expected}\n0 {PARTIAL}\n");
        std::fs::write(dir.path().join(format!("{name}.journal")), journal).unwrap();
        let file = FileDownload {
            url: ranged_server(PARTIAL + 16).await,
            dest: dest.clone(),
            expected_size: Some(expected),
            expected_sha256: None,
            token: None,
            headers: Default::default(),
            what: format!("the {name} file"),
        };
        let cancel = CancellationToken::new();
        let fetch = tokio::spawn({
            let cancel = cancel.clone();
            let downloader =
                Downloader::new(DownloadSettings::default(), dir.path(), Default::default());
            async move {
                downloader
                    .fetch(&file, &ProgressSink::default(), &cancel)
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !fetch.is_finished(),
            "{name}: 16 GiB take longer than 300 ms to hash"
        );
        let cancelled_at = Instant::now();
        cancel.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(30), fetch)
            .await
            .expect("the fetch ends")
            .unwrap();
        let took = cancelled_at.elapsed();
        eprintln!("{name}: the fetch ended {took:?} after the cancel");
        assert!(
            matches!(outcome, Err(vectorize::sources::SourceError::Cancelled)),
            "{name}: {outcome:?}"
        );
        assert!(took < Duration::from_secs(5), "{name}: {took:?}");
    }
}

/// Two tasks whose weights the hub lists at 8 GiB; each first attempt
/// fails (the hub holds a few bytes) and waits out a backoff of some
/// seconds, its partial file's journal is then made to say all 8 GiB are
/// on disk, and after a restart the retries take both up again: each
/// worker starts by hashing 8 GiB it finds complete.
#[tokio::test]
async fn cancel_and_sigterm_answer_while_a_multi_gib_partial_is_hashed() {
    const HUGE: u64 = 8 << 30;
    let hub = FakeHub::start().await;
    let mut ids = Vec::new();
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("VECTORIZE_RETRY_BASE_MS", "5000"),
        ("VECTORIZE_MAX_CONCURRENT_TASKS", "2"),
    ];
    let mut service = ServiceProcess::start(data.path(), &hub, &env).await;
    for name in ["acme/huge-a", "acme/huge-b"] {
        let repo = small_model(name);
        let weights = repo.files.iter().find(|f| f.lfs).unwrap();
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&weights.bytes));
        hub.declare_size(&sha, HUGE);
        hub.add_repo(repo);
        let id = service.upload_hf(name).await;
        service
            .wait_for(&id, Duration::from_secs(30), |t| {
                t["task_status"] == "PENDING" && t["attempts"] == 1
            })
            .await;
        let staging = task_staging(data.path(), &id).expect("the first attempt's staging folder");
        let partial = staging.join(&sha);
        std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&partial)
            .unwrap()
            .set_len(HUGE)
            .unwrap();
        let journal = format!("vectorize-journal 1 {HUGE}\n0 {HUGE}\n");
        std::fs::write(staging.join(format!("{sha}.journal")), journal).unwrap();
        ids.push(id);
    }
    service.sigterm().await;
    let mut service = ServiceProcess::start(data.path(), &hub, &env).await;
    for id in &ids {
        service
            .wait_for(id, Duration::from_secs(30), |t| {
                t["task_status"] == "RUNNING" && t["attempts"] == 2
            })
            .await;
    }
    // Not a wait for a state: RUNNING is reached; this lets the workers get
    // well into hashing their 8 GiB before the cancel arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A cancel answers, and the partial file goes, within 5 s.
    let started = Instant::now();
    let response = service
        .client
        .delete(service.at(&format!("/v1/upload/tasks/{}", ids[0])))
        .send()
        .await
        .unwrap();
    let answered = started.elapsed();
    assert_eq!(response.status(), 200);
    while task_staging(data.path(), &ids[0]).is_some()
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let removed = started.elapsed();
    eprintln!("cancel while hashing 8 GiB: answered in {answered:?}, files gone in {removed:?}");
    assert!(answered < Duration::from_secs(5), "{answered:?}");
    assert!(removed < Duration::from_secs(5), "{removed:?}");

    // SIGTERM while the other still hashes: the process exits within 10 s
    // (`sigterm` fails the test past that) and keeps the partial to resume.
    let started = Instant::now();
    service.sigterm().await;
    eprintln!(
        "SIGTERM while hashing 8 GiB: exited in {:?}",
        started.elapsed()
    );
    assert!(task_staging(data.path(), &ids[1]).is_some());
}
