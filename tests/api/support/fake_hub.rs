//! An in-process fake of the Hugging Face Hub, for integration tests that cannot reach
//! huggingface.co. One poem server on `127.0.0.1:0` answers as the hub when reached as
//! `http://127.0.0.1:PORT` — model info (`GET /api/models/{repo}[/revision/{rev}][?blobs=true]`),
//! the file tree (`GET /api/models/{repo}/tree/{rev}[?recursive=true]`) and files
//! (`HEAD`/`GET /{repo}/resolve/{rev}/{path}`), with the real hub's headers and `X-Error-Code`
//! errors — and as the LFS CDN when reached as `http://localhost:PORT` (`/cdn/{sha256}`, no
//! auth, Range support): LFS files answer a 302 to it, as the real hub redirects to a CDN on
//! another host. The official Python client (huggingface_hub 2.4) downloads from it. Tests can
//! inject faults (fixed statuses, a connection broken mid-body, a corrupted body, bodies
//! throttled per connection, `Range` ignored, latency) and read a log of every request
//! received. Bodies are streamed in 64 KiB slices of shared `Bytes`, so a
//! GiB file costs no copy per request.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use percent_encoding::percent_decode_str;
use poem::http::{Method, StatusCode, header};
use poem::{Body, Request, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CHUNK: usize = 64 * 1024;

/// A running fake hub and CDN. Clones share one server and its state; the server lives until
/// the tokio runtime that started it shuts down.
#[derive(Clone)]
#[allow(dead_code)]
pub struct FakeHub {
    inner: Arc<Inner>,
}

/// A file published in a [`HubRepo`].
#[derive(Clone, Debug)]
#[allow(dead_code)]
pub struct HubFile {
    /// Path inside the repo, `/`-separated (e.g. `"onnx/model.onnx"`).
    pub path: String,
    /// The file's content.
    pub bytes: Vec<u8>,
    /// Stored in LFS: resolved through a 302 to the CDN; its ETag is its sha256.
    pub lfs: bool,
}

/// A model repository as the fake hub publishes it.
#[derive(Clone, Debug, Default)]
#[allow(dead_code)]
pub struct HubRepo {
    /// `"org/name"` or `"name"`.
    pub id: String,
    /// The commit (40 lowercase hex) every revision resolves to; the commit itself resolves too.
    pub commit: String,
    /// Branch/tag names that resolve to `commit`, e.g. `["main"]` or `["refs/pr/1"]`.
    pub revisions: Vec<String>,
    /// The files at `commit`.
    pub files: Vec<HubFile>,
    /// `None`, `Some("auto")` or `Some("manual")`: files need the valid token.
    pub gated: Option<&'static str>,
    /// Every route answers 401 `RepoNotFound` without the valid token.
    pub private: bool,
}

/// One request as the fake received it; logged before answering, faulted requests included.
#[derive(Clone, Debug)]
#[allow(dead_code)]
pub struct LoggedRequest {
    /// `"GET"`, `"HEAD"`, …
    pub method: String,
    /// The `Host` header: `127.0.0.1:PORT` for the hub, `localhost:PORT` for the CDN.
    pub host: String,
    /// The path as sent (still percent-encoded), without the query.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

struct Inner {
    port: u16,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    repos: Vec<Arc<Repo>>,
    token: Option<String>,
    fail_next: (usize, u16),
    fail_matching: (usize, u16, String),
    fail_always: Option<u16>,
    cut_after: Option<u64>,
    /// LFS bodies still to be sent spoiled.
    corrupt: usize,
    ignore_range: bool,
    latency: Duration,
    bytes_sent: u64,
    bytes_per_sec: u64,
    /// Sizes the listings give instead of the real ones, by LFS sha256.
    declared_sizes: std::collections::HashMap<String, u64>,
    log: Vec<LoggedRequest>,
}

/// A published repo: its `HubRepo` (with `files` moved out) and its files with their hashes.
struct Repo {
    info: HubRepo,
    files: Vec<File>,
}

struct File {
    path: String,
    bytes: Bytes,
    lfs: bool,
    sha256: String,
    /// Stands in for the git blob sha1 (sha1 is not among the crate's dependencies): the first
    /// 40 hex digits of the sha256 of the content — of the LFS pointer file for an LFS file,
    /// as the real hub's blobId of an LFS file is its pointer's.
    blob_id: String,
    pointer_size: usize,
}

#[allow(dead_code)]
impl FakeHub {
    /// Binds `127.0.0.1:0` and serves the fake hub (and its CDN) on the current runtime.
    pub async fn start() -> FakeHub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let listener = listener.expect("bind the fake hub");
        let port = listener.local_addr().expect("fake hub address").port();
        let state = Mutex::new(State::default());
        let inner = Arc::new(Inner { port, state });
        let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).expect("acceptor");
        let shared = inner.clone();
        let endpoint = poem::endpoint::make(move |req: Request| handle(shared.clone(), req));
        let server = poem::Server::new_with_acceptor(acceptor);
        tokio::spawn(async move { server.run(endpoint).await });
        FakeHub { inner }
    }

    /// The hub endpoint, `http://127.0.0.1:PORT` (what `HF_ENDPOINT` should be set to).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.port)
    }

    /// Publishes `repo`, replacing a repo with the same id (e.g. to move `main` to a new commit).
    pub fn add_repo(&self, mut repo: HubRepo) {
        let files = std::mem::take(&mut repo.files);
        let files = files.into_iter().map(File::new).collect();
        let mut state = self.state();
        state.repos.retain(|r| r.info.id != repo.id);
        state.repos.push(Arc::new(Repo { info: repo, files }));
    }

    /// Sets the only token (`Authorization: Bearer <token>`) that opens private and gated repos.
    pub fn set_valid_token(&self, token: &str) {
        self.state().token = Some(token.to_owned());
    }

    /// The next `n` requests (any route, hub or CDN) answer `status` with an empty body.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.state().fail_next = (n, status);
    }

    /// The next `n` requests whose `"{METHOD} {path}"` (path as sent, without the query)
    /// contains `path_part` — e.g. `"GET /org/name/resolve/"`, which the HEAD probe
    /// before an upload's 201 does not match —
    /// answer `status` with an empty body; others pass. `usize::MAX`: until `clear_faults`.
    /// Replaces the previous such rule; it is checked before (and apart from) `fail_next`.
    pub fn fail_next_matching(&self, n: usize, status: u16, path_part: &str) {
        self.state().fail_matching = (n, status, path_part.to_owned());
    }

    /// Every request answers `status` with an empty body until [`FakeHub::clear_faults`].
    pub fn fail_always(&self, status: u16) {
        self.state().fail_always = Some(status);
    }

    /// The next file-body GET (hub or CDN) whose body is longer than `bytes` sends `bytes` bytes
    /// of it, then breaks the connection; the declared `Content-Length` stays the full length.
    /// Shorter bodies, sent before it, pass untouched.
    pub fn cut_next_download_after(&self, bytes: u64) {
        self.state().cut_after = Some(bytes);
    }

    /// Throttles each file body (hub and CDN) — so each connection, as a CDN holds each
    /// connection to a rate — to about `bytes_per_sec`, bodies already streaming included;
    /// 0 = unthrottled.
    pub fn slow_downloads(&self, bytes_per_sec: u64) {
        self.state().bytes_per_sec = bytes_per_sec;
    }

    /// The next LFS body (from the CDN) is sent with one byte changed, as a faulty cache on the
    /// way would: the client only finds out from the sha256.
    pub fn corrupt_next_download(&self) {
        self.state().corrupt = 1;
    }

    /// Every LFS body from now on is spoiled as `corrupt_next_download` spoils one.
    pub fn corrupt_every_download(&self) {
        self.state().corrupt = usize::MAX;
    }

    /// File bodies ignore `Range` and answer 200 with the whole file, as some servers do.
    pub fn ignore_range(&self, ignore: bool) {
        self.state().ignore_range = ignore;
    }

    /// Every request waits `latency` before it is answered, as a far-away hub would.
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// Bytes of file bodies sent so far (hub and CDN).
    pub fn bytes_sent(&self) -> u64 {
        self.state().bytes_sent
    }

    /// The listings give `size` for the LFS file with this sha256 (the
    /// bytes served stay the real ones): a test can make the service expect
    /// gigabytes the hub does not hold.
    pub fn declare_size(&self, sha256: &str, size: u64) {
        self.state().declared_sizes.insert(sha256.into(), size);
    }

    /// Removes every fault: pending failures, `fail_always`, a pending cut and the throttle.
    pub fn clear_faults(&self) {
        let mut state = self.state();
        state.fail_next = (0, 0);
        state.fail_matching = (0, 0, String::new());
        state.fail_always = None;
        state.cut_after = None;
        state.corrupt = 0;
        state.ignore_range = false;
        state.latency = Duration::ZERO;
        state.bytes_per_sec = 0;
    }

    /// Every request received so far, oldest first.
    pub fn log(&self) -> Vec<LoggedRequest> {
        self.state().log.clone()
    }

    /// Forgets the logged requests.
    pub fn clear_log(&self) {
        self.state().log.clear();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap()
    }
}

/// Builds a valid safetensors file: an F32 tensor per (name, shape), values 0.0, 1.0, 2.0, …
/// (counting from 0 in each tensor), with `__metadata__` `{"format": "pt"}`.
#[allow(dead_code)]
pub fn safetensors_bytes(tensors: &[(&str, &[usize])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut data = Vec::new();
    for (name, shape) in tensors {
        let start = data.len();
        for i in 0..shape.iter().product::<usize>() {
            data.extend_from_slice(&(i as f32).to_le_bytes());
        }
        let offsets = [start, data.len()];
        let entry = json!({"dtype": "F32", "shape": shape, "data_offsets": offsets});
        header.insert((*name).into(), entry);
    }
    let mut header = Value::Object(header).to_string().into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    out
}

/// A fresh random 40-hex commit id.
#[allow(dead_code)]
/// The smallest valid model: a config and an 8×8 safetensors file (LFS);
/// what load tests and benchmarks upload by the dozen or the thousand.
pub fn tiny_repo(id: &str) -> HubRepo {
    HubRepo {
        id: id.into(),
        commit: random_commit(),
        revisions: vec!["main".into()],
        files: vec![
            HubFile {
                path: "config.json".into(),
                bytes: b"{}".to_vec(),
                lfs: false,
            },
            HubFile {
                path: "model.safetensors".into(),
                bytes: safetensors_bytes(&[("w", &[8, 8])]),
                lfs: true,
            },
        ],
        ..Default::default()
    }
}

pub fn random_commit() -> String {
    hex::encode(rand::random::<[u8; 20]>())
}

impl File {
    fn new(file: HubFile) -> File {
        let sha256 = hex::encode(Sha256::digest(&file.bytes));
        let size = file.bytes.len();
        let pointer = format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
        );
        let blob_source = if file.lfs {
            pointer.as_bytes()
        } else {
            &file.bytes[..]
        };
        File {
            blob_id: hex::encode(Sha256::digest(blob_source))[..40].to_owned(),
            pointer_size: pointer.len(),
            path: file.path,
            lfs: file.lfs,
            bytes: file.bytes.into(),
            sha256,
        }
    }
}

/// A request as the routes see it.
struct Ctx {
    inner: Arc<Inner>,
    url: String,
    head: bool,
    range: Option<String>,
    has_auth: bool,
    token_ok: bool,
}

/// A route's answer; error answers come as `Err` so that `?` works.
type Answer = Result<Response, Box<Response>>;

async fn handle(inner: Arc<Inner>, req: Request) -> Response {
    let get = |name: header::HeaderName| {
        let value = req.headers().get(name)?.to_str().ok()?;
        Some(value.to_owned())
    };
    let host = get(header::HOST).unwrap_or_default();
    let (range, auth) = (get(header::RANGE), get(header::AUTHORIZATION));
    let path = req.uri().path().to_owned();
    let latency = inner.state.lock().unwrap().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (fault, token) = {
        let mut state = inner.state.lock().unwrap();
        state.log.push(LoggedRequest {
            method: req.method().as_str().to_owned(),
            host: host.clone(),
            path: path.clone(),
            range: range.clone(),
            authorization: auth.clone(),
        });
        let mut fault = state.fail_always;
        let matching = &mut state.fail_matching;
        let request_line = format!("{} {path}", req.method());
        if fault.is_none() && matching.0 > 0 && request_line.contains(matching.2.as_str()) {
            matching.0 -= 1;
            fault = Some(matching.1);
        }
        if fault.is_none() && state.fail_next.0 > 0 {
            state.fail_next.0 -= 1;
            fault = Some(state.fail_next.1);
        }
        (fault, state.token.clone())
    };
    if let Some(code) = fault {
        return empty(code);
    }
    let head = req.method() == Method::HEAD;
    let bearer = auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
    let token_ok = bearer.is_some_and(|t| token.as_deref() == Some(t));
    let path_and_query = req.uri().path_and_query().map_or("", |p| p.as_str());
    let url = format!("http://{host}{path_and_query}");
    let (has_auth, query) = (auth.is_some(), req.uri().query().unwrap_or(""));
    let flag = |name: &str| query.split('&').any(|kv| kv == format!("{name}=true"));
    let cx = Ctx {
        inner,
        url,
        head,
        range,
        has_auth,
        token_ok,
    };
    let answer = if host.split(':').next() == Some("localhost") {
        cdn(&cx, &path)
    } else if let Some(rest) = path.strip_prefix("/api/models/") {
        match split_repo(rest, "tree") {
            Some((repo_id, after)) => tree(&cx, &repo_id, after, flag("recursive")),
            None => model_info(&cx, rest, flag("blobs")),
        }
    } else {
        resolve(&cx, &path[1..])
    };
    answer.unwrap_or_else(|error| *error)
}

/// `GET`/`HEAD /cdn/{sha256}` on the CDN host: any LFS file's bytes, no auth.
fn cdn(cx: &Ctx, path: &str) -> Answer {
    let sha = path.strip_prefix("/cdn/").unwrap_or_default();
    let state = cx.inner.state.lock().unwrap();
    let mut files = state.repos.iter().flat_map(|r| &r.files);
    let file = files
        .find(|f| f.lfs && f.sha256 == sha)
        .ok_or_else(|| empty(404))?;
    let bytes = file.bytes.clone();
    drop(state);
    Ok(serve_body(cx, bytes, sha, None))
}

/// A file's size as the listings give it (see `FakeHub::declare_size`).
fn listed_size(cx: &Ctx, f: &File) -> u64 {
    let state = cx.inner.state.lock().unwrap();
    let declared = state.declared_sizes.get(&f.sha256).copied();
    declared.unwrap_or(f.bytes.len() as u64)
}

/// `GET /api/models/{repo_id}[/revision/{revision}][?blobs=true]`.
fn model_info(cx: &Ctx, rest: &str, blobs: bool) -> Answer {
    let repo = match split_repo(rest, "revision") {
        Some((repo_id, revision)) => find_repo(cx, &repo_id, Some(&decode(revision)))?,
        None => find_repo(cx, &decode(rest.trim_end_matches('/')), None)?,
    };
    let sibling = |f: &File| {
        let mut sibling = json!({ "rfilename": f.path });
        if blobs {
            sibling["size"] = json!(listed_size(cx, f));
            sibling["blobId"] = json!(f.blob_id);
            if f.lfs {
                let size = listed_size(cx, f);
                let lfs = json!({"sha256": f.sha256, "size": size, "pointerSize": f.pointer_size});
                sibling["lfs"] = lfs;
            }
        }
        sibling
    };
    let info = &repo.info;
    let body = json!({
        "id": info.id,
        "sha": info.commit,
        "private": info.private,
        "gated": info.gated.map_or(json!(false), |g| json!(g)),
        "siblings": repo.files.iter().map(sibling).collect::<Vec<_>>(),
    });
    Ok(json_response(body))
}

/// `GET /api/models/{repo_id}/tree/{revision}[/{dir}][?recursive=true]`: the files and
/// directories under `dir` (all descendants when recursive), in one page.
fn tree(cx: &Ctx, repo_id: &str, after: &str, recursive: bool) -> Answer {
    let (revision, dir) = after.split_once('/').unwrap_or((after, ""));
    let repo = find_repo(cx, repo_id, Some(&decode(revision)))?;
    let dir = decode(dir.trim_end_matches('/'));
    let base = if dir.is_empty() {
        dir
    } else {
        format!("{dir}/")
    };
    let mut items: Vec<Value> = Vec::new();
    for f in repo.files.iter().filter(|f| f.path.starts_with(&base)) {
        let rel = &f.path[base.len()..];
        let depth = if recursive { usize::MAX } else { 1 };
        for (i, _) in rel.match_indices('/').take(depth) {
            let path = format!("{base}{}", &rel[..i]);
            if !items.iter().any(|item| item["path"] == path.as_str()) {
                let oid = &hex::encode(Sha256::digest(&path))[..40];
                items.push(json!({"type": "directory", "oid": oid, "size": 0, "path": path}));
            }
        }
        if recursive || !rel.contains('/') {
            let size = f.bytes.len();
            let mut item = json!({"type": "file", "oid": f.blob_id, "size": size, "path": f.path});
            if f.lfs {
                item["lfs"] = json!({"oid": f.sha256, "size": size, "pointerSize": f.pointer_size});
            }
            items.push(item);
        }
    }
    Ok(json_response(Value::Array(items)))
}

fn json_response(body: Value) -> Response {
    let response = Response::builder().content_type("application/json");
    response.body(body.to_string())
}

/// `HEAD`/`GET /{repo_id}/resolve/{revision}/{path}`: regular files served here, LFS files
/// redirected to the CDN.
fn resolve(cx: &Ctx, rest: &str) -> Answer {
    let (repo_id, after) = split_repo(rest, "resolve").ok_or_else(|| empty(404))?;
    let (revision, path) = after.split_once('/').unwrap_or((after, ""));
    let repo = find_repo(cx, &repo_id, Some(&decode(revision)))?;
    if repo.info.gated.is_some() && !cx.token_ok {
        let (code, why) = match cx.has_auth {
            false => (
                401,
                "You must be authenticated to access it. Please log in.",
            ),
            true => (403, "You are not in the authorized list. Ask for access."),
        };
        let message = format!("Access to model {repo_id} is restricted. {why}");
        return Err(hub_error(code, "GatedRepo", &message).into());
    }
    let path = decode(path);
    let Some(file) = repo.files.iter().find(|f| f.path == path) else {
        let message = format!("Entry not found for url: {}", cx.url);
        return Err(hub_error(404, "EntryNotFound", &message).into());
    };
    if !file.lfs {
        let commit = Some(repo.info.commit.as_str());
        return Ok(serve_body(cx, file.bytes.clone(), &file.blob_id, commit));
    }
    let quoted = format!("\"{}\"", file.sha256);
    let location = format!("http://localhost:{}/cdn/{}", cx.inner.port, file.sha256);
    Ok(Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location)
        .header("X-Repo-Commit", &repo.info.commit)
        .header(header::ETAG, &quoted)
        .header("X-Linked-Etag", &quoted)
        .header("X-Linked-Size", file.bytes.len())
        .finish())
}

/// The hub's repo checks: 401 `RepoNotFound` when missing or private without the token;
/// 404 `RevisionNotFound` when `revision` is neither one of its revisions nor its commit
/// (`None`: the default branch, taken to be the commit).
fn find_repo(cx: &Ctx, id: &str, revision: Option<&str>) -> Result<Arc<Repo>, Box<Response>> {
    let state = cx.inner.state.lock().unwrap();
    let repo = state.repos.iter().find(|r| r.info.id == id).cloned();
    drop(state);
    let Some(repo) = repo.filter(|r| !r.info.private || cx.token_ok) else {
        let message = format!("Repository Not Found for url: {}.", cx.url);
        return Err(hub_error(401, "RepoNotFound", &message).into());
    };
    let info = &repo.info;
    let revision = revision.unwrap_or(&info.commit);
    if revision != info.commit && !info.revisions.iter().any(|r| r == revision) {
        let message = format!("Invalid rev id: {revision}");
        return Err(hub_error(404, "RevisionNotFound", &message).into());
    }
    Ok(repo)
}

/// Splits `{repo_id}/{keyword}/{after}`, the repo id having one or two segments.
fn split_repo<'a>(rest: &'a str, keyword: &str) -> Option<(String, &'a str)> {
    let marker = format!("/{keyword}/");
    let first = rest.find('/')?;
    if let Some(after) = rest[first..].strip_prefix(&marker) {
        return Some((decode(&rest[..first]), after));
    }
    let second = first + 1 + rest[first + 1..].find('/')?;
    let after = rest[second..].strip_prefix(&marker)?;
    Some((decode(&rest[..second]), after))
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn empty(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Response::builder().status(status).finish()
}

/// An error as the hub words it: `X-Error-Code`, `X-Error-Message` and `{"error": message}`.
fn hub_error(code: u16, error_code: &str, message: &str) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("X-Error-Code", error_code)
        .header("X-Error-Message", message)
        .content_type("application/json")
        .body(json!({ "error": message }).to_string())
}

/// Answers a file body with `ETag`, `Accept-Ranges: bytes` and Range support (206 / 416),
/// streamed through the throttle and the pending cut.
fn serve_body(cx: &Ctx, data: Bytes, etag: &str, commit: Option<&str>) -> Response {
    let total = data.len() as u64;
    let mut response = Response::builder()
        .header(header::ETAG, format!("\"{etag}\""))
        .header(header::ACCEPT_RANGES, "bytes")
        .content_type("application/octet-stream");
    if let Some(commit) = commit {
        response = response.header("X-Repo-Commit", commit);
    }
    let ignore_range = cx.inner.state.lock().unwrap().ignore_range;
    let range = cx.range.as_deref().filter(|_| !ignore_range);
    let (start, end) = match range.and_then(|r| parse_range(r, total)) {
        None => (0, total),
        Some(Some((start, end))) => {
            let content_range = format!("bytes {start}-{}/{total}", end - 1);
            response = response
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, content_range);
            (start, end)
        }
        Some(None) => {
            return response
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{total}"))
                .finish();
        }
    };
    let response = response.header(header::CONTENT_LENGTH, end - start);
    if cx.head {
        return response.finish();
    }
    let mut state = cx.inner.state.lock().unwrap();
    let cut = match state.cut_after {
        Some(cut) if cut < end - start => state.cut_after.take(),
        _ => None,
    };
    let from_cdn = commit.is_none();
    let corrupt = from_cdn && end > start && state.corrupt > 0;
    if corrupt {
        state.corrupt -= 1;
    }
    drop(state);
    let mut body = data.slice(start as usize..end as usize);
    if corrupt {
        let mut spoiled = body.to_vec();
        let middle = spoiled.len() / 2;
        spoiled[middle] ^= 0xff;
        body = spoiled.into();
    }
    response.body(body_stream(cx.inner.clone(), body, cut))
}

/// `None`: no usable range (send the whole file); `Some(None)`: unsatisfiable (416);
/// `Some(Some((start, end)))`: the half-open span to send.
fn parse_range(range: &str, total: u64) -> Option<Option<(u64, u64)>> {
    let (first, last) = range.trim().strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = first.trim().parse().ok()?;
    let end = match last.trim() {
        "" => total,
        last => last.parse::<u64>().ok()?.saturating_add(1).min(total),
    };
    if start >= total {
        return Some(None);
    }
    (start < end).then_some(Some((start, end)))
}

/// Streams `data` in chunks (smaller when throttled). With a cut, sends `cut` bytes, then ends
/// in an I/O error so that the client sees a broken connection rather than a clean short body.
fn body_stream(inner: Arc<Inner>, data: Bytes, cut: Option<u64>) -> Body {
    let len = cut.map_or(data.len(), |cut| data.len().min(cut as usize));
    let chunks = futures_util::stream::unfold(0, move |pos| {
        let (inner, data) = (inner.clone(), data.clone());
        async move {
            let rate = inner.state.lock().unwrap().bytes_per_sec;
            let chunk = match rate {
                0 => CHUNK,
                rate => (rate as usize / 8).clamp(1, CHUNK),
            };
            let n = chunk.min(len.checked_sub(pos).filter(|&n| n > 0)?);
            if rate > 0 {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
            }
            inner.state.lock().unwrap().bytes_sent += n as u64;
            Some((Ok(data.slice(pos..pos + n)), pos + n))
        }
    });
    let broken = futures_util::stream::once(async {
        // Give hyper time to flush what was sent before breaking the connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "fake hub: cut",
        ))
    });
    Body::from_bytes_stream(chunks.chain(broken.take(cut.is_some() as usize)))
}
