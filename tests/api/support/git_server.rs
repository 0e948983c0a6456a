//! A test GitHub: real git over smart HTTP (`git http-backend` run as a
//! CGI for `info/refs` and `git-upload-pack`, gzip request bodies
//! included), and in the same process fakes of the REST endpoints the
//! service calls (`/api/repos/{o}/{r}`, `/api/repos/{o}/{r}/commits/{ref}`)
//! and of the Git LFS batch API with its object downloads. Repositories are
//! built in temp folders with the git CLI and pushed to bare repositories.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use poem::http::StatusCode;
use poem::{Body, Request, Response};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The header the LFS batch answer asks object downloads to carry.
const LFS_AUTH: &str = "RemoteAuth lfs-download-ticket";

#[derive(Default)]
struct GitState {
    lfs_objects: HashMap<String, Arc<Vec<u8>>>,
    token: Option<String>,
    /// A token only git and LFS ask for (the REST API stays open).
    git_token: Option<String>,
    rate_limited: bool,
    /// The next n git requests answer 500.
    git_failures: usize,
    /// Git requests answer a redirect to the same path on this server.
    redirect_git_to: Option<String>,
    log: Vec<String>,
}

/// The server; cheap to clone.
#[derive(Clone)]
pub struct GitServer {
    url: String,
    root: Arc<tempfile::TempDir>,
    state: Arc<Mutex<GitState>>,
}

impl GitServer {
    pub async fn start() -> GitServer {
        let root = Arc::new(tempfile::tempdir().unwrap());
        let state = Arc::new(Mutex::new(GitState::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = GitServer { url, root, state };
        let handler = server.clone();
        let endpoint = poem::endpoint::make(move |req: Request| {
            let handler = handler.clone();
            async move { handler.handle(req).await }
        });
        let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(endpoint));
        server
    }

    /// `GITHUB_API_URL` for the service.
    pub fn api_url(&self) -> String {
        format!("{}/api", self.url)
    }

    /// `GITHUB_SERVER_URL` for the service.
    pub fn server_url(&self) -> String {
        self.url.clone()
    }

    /// From now on the API, git and LFS need this token.
    pub fn require_token(&self, token: &str) {
        self.state.lock().unwrap().token = Some(token.into());
    }

    /// From now on git and LFS (not the REST API) need this token.
    pub fn require_git_token(&self, token: &str) {
        self.state.lock().unwrap().git_token = Some(token.into());
    }

    /// The next `n` git requests answer 500, as a flaky server would.
    pub fn fail_next_git(&self, n: usize) {
        self.state.lock().unwrap().git_failures = n;
    }

    /// From now on git requests are redirected to the same path on `url`.
    pub fn redirect_git_to(&self, url: &str) {
        self.state.lock().unwrap().redirect_git_to = Some(url.into());
    }

    /// Makes the REST API answer 403 with `X-RateLimit-Remaining: 0`.
    pub fn rate_limit(&self, on: bool) {
        self.state.lock().unwrap().rate_limited = on;
    }

    /// `METHOD path` of every request so far, `+auth` when it carried an
    /// `Authorization` header.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// A new repository `owner/name` with a work tree to build commits in.
    pub fn repo(&self, owner: &str, name: &str) -> TestRepo {
        let bare = self.root.path().join(owner).join(format!("{name}.git"));
        let work = self.root.path().join("work").join(owner).join(name);
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["config", "user.email", "t@example.com"]);
        git(&work, &["config", "user.name", "Test"]);
        git(
            self.root.path(),
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
        );
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        TestRepo {
            work,
            state: self.state.clone(),
        }
    }

    async fn handle(&self, req: Request) -> Response {
        let path = req.uri().path().to_string();
        self.state.lock().unwrap().log.push(format!(
            "{} {path}{}",
            req.method(),
            if header(&req, "authorization").is_some() {
                " +auth"
            } else {
                ""
            }
        ));
        let (token, git_token) = {
            let state = self.state.lock().unwrap();
            (state.token.clone(), state.git_token.clone())
        };
        if let Some(rest) = path.strip_prefix("/api/repos/") {
            return self.rest(rest, &req, token.as_deref());
        }
        if let Some(oid) = path.strip_prefix("/lfs-objects/") {
            return self.lfs_object(oid, &req);
        }
        {
            let mut state = self.state.lock().unwrap();
            if let Some(target) = &state.redirect_git_to {
                let query = req
                    .uri()
                    .query()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default();
                return Response::builder()
                    .status(StatusCode::FOUND)
                    .header("Location", format!("{target}{path}{query}"))
                    .body(());
            }
            if state.git_failures > 0 {
                state.git_failures -= 1;
                return Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .body("try again");
            }
        }
        if let Some(token) = token.or(git_token) {
            let expected = format!("Basic {}", base64(&format!("x-access-token:{token}")));
            if header(&req, "authorization").as_deref() != Some(expected.as_str()) {
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header("WWW-Authenticate", "Basic realm=\"GitHub\"")
                    .body("authentication required");
            }
        }
        if path.ends_with(".git/info/lfs/objects/batch") {
            return self.lfs_batch(req).await;
        }
        self.http_backend(req).await
    }

    fn rest(&self, rest: &str, req: &Request, token: Option<&str>) -> Response {
        if self.state.lock().unwrap().rate_limited {
            return Response::builder()
                .status(StatusCode::FORBIDDEN)
                .header("X-RateLimit-Remaining", "0")
                .content_type("application/json")
                .body(r#"{"message": "API rate limit exceeded"}"#);
        }
        let not_found = || {
            json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"message": "Not Found"}),
            )
        };
        if token.is_some_and(|t| header(req, "authorization") != Some(format!("Bearer {t}"))) {
            return not_found();
        }
        let mut parts = rest.splitn(4, '/');
        let (Some(owner), Some(name)) = (parts.next(), parts.next()) else {
            return not_found();
        };
        let bare = self.root.path().join(owner).join(format!("{name}.git"));
        if !bare.exists() {
            return not_found();
        }
        match (parts.next(), parts.next()) {
            (None, _) => json(
                StatusCode::OK,
                serde_json::json!({"full_name": format!("{owner}/{name}"), "default_branch": "main"}),
            ),
            (Some("commits"), Some(reference)) => {
                let out = Command::new("git")
                    .arg("--git-dir")
                    .arg(&bare)
                    .args([
                        "rev-parse",
                        "--verify",
                        "--quiet",
                        &format!("{reference}^{{commit}}"),
                    ])
                    .output()
                    .unwrap();
                if out.status.success() {
                    let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    json(StatusCode::OK, serde_json::json!({"sha": sha}))
                } else {
                    json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        serde_json::json!({"message": format!("No commit found for SHA: {reference}")}),
                    )
                }
            }
            _ => not_found(),
        }
    }

    async fn lfs_batch(&self, req: Request) -> Response {
        let body: serde_json::Value = match req.into_body().into_json().await {
            Ok(body) => body,
            Err(_) => {
                return json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    serde_json::json!({"message": "bad batch"}),
                );
            }
        };
        let known = self.state.lock().unwrap().lfs_objects.clone();
        let objects: Vec<serde_json::Value> = body["objects"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|o| {
                let oid = o["oid"].as_str().unwrap_or_default().to_string();
                match known.get(&oid) {
                    Some(bytes) => serde_json::json!({
                        "oid": oid, "size": bytes.len(), "authenticated": true,
                        "actions": {"download": {
                            "href": format!("{}/lfs-objects/{oid}", self.url),
                            "header": {"Authorization": LFS_AUTH},
                            "expires_in": 3600
                        }}
                    }),
                    None => serde_json::json!({"oid": oid, "size": o["size"], "error": {"code": 404, "message": "Object does not exist"}}),
                }
            })
            .collect();
        Response::builder()
            .content_type("application/vnd.git-lfs+json")
            .body(serde_json::json!({"transfer": "basic", "objects": objects}).to_string())
    }

    fn lfs_object(&self, oid: &str, req: &Request) -> Response {
        if header(req, "authorization").as_deref() != Some(LFS_AUTH) {
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .finish();
        }
        let Some(bytes) = self.state.lock().unwrap().lfs_objects.get(oid).cloned() else {
            return Response::builder().status(StatusCode::NOT_FOUND).finish();
        };
        let start: usize = header(req, "range")
            .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
            .unwrap_or(0)
            .min(bytes.len());
        let body = Body::from_bytes_stream(futures_util::stream::iter(
            (start..bytes.len())
                .step_by(1 << 20)
                .map(move |at| {
                    Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(
                        &bytes[at..(at + (1 << 20)).min(bytes.len())],
                    ))
                })
                .collect::<Vec<_>>(),
        ));
        let status = if start > 0 {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        Response::builder().status(status).body(body)
    }

    /// Runs `git http-backend` as a CGI: request body to its stdin, its
    /// CGI headers parsed, the rest of its output streamed back.
    async fn http_backend(&self, req: Request) -> Response {
        let mut command = tokio::process::Command::new("git");
        command
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", self.root.path())
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("PATH_INFO", req.uri().path())
            .env("QUERY_STRING", req.uri().query().unwrap_or(""))
            .env("REQUEST_METHOD", req.method().as_str())
            .env("REMOTE_ADDR", "127.0.0.1")
            .env(
                "CONTENT_TYPE",
                header(&req, "content-type").unwrap_or_default(),
            )
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if let Some(encoding) = header(&req, "content-encoding") {
            command.env("HTTP_CONTENT_ENCODING", encoding);
        }
        if let Some(protocol) = header(&req, "git-protocol") {
            command.env("GIT_PROTOCOL", protocol);
        }
        let body = req.into_body().into_vec().await.unwrap_or_default();
        let mut child = command.spawn().expect("git http-backend runs");
        let mut stdin = child.stdin.take().unwrap();
        tokio::spawn(async move {
            let _ = stdin.write_all(&body).await;
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut response = Response::builder();
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).await.unwrap_or(0) == 0 {
                break;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("status") {
                    let code = value
                        .split(' ')
                        .next()
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(500);
                    response = response.status(StatusCode::from_u16(code).unwrap());
                } else {
                    response = response.header(name, value);
                }
            }
        }
        let stream = futures_util::stream::unfold((stdout, child), |(mut out, child)| async move {
            let mut buf = vec![0u8; 1 << 16];
            match out.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
                        (out, child),
                    ))
                }
            }
        });
        response.body(Body::from_bytes_stream(stream))
    }
}

/// A work tree whose commits are pushed to the server's bare repository.
pub struct TestRepo {
    work: PathBuf,
    state: Arc<Mutex<GitState>>,
}

impl TestRepo {
    pub fn file(&self, path: &str, bytes: &[u8]) -> &Self {
        let target = self.work.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
        self
    }

    /// Commits a Git LFS pointer in place of `bytes`, and serves `bytes` as its LFS object.
    pub fn lfs_file(&self, path: &str, bytes: &[u8]) -> &Self {
        let oid = hex::encode(Sha256::digest(bytes));
        let pointer = format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {}\n",
            bytes.len()
        );
        self.state
            .lock()
            .unwrap()
            .lfs_objects
            .insert(oid, Arc::new(bytes.to_vec()));
        self.file(path, pointer.as_bytes())
    }

    /// Commits everything and pushes every branch and tag; returns the commit.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        self.push();
        git_output(&self.work, &["rev-parse", "HEAD"])
    }

    /// Creates and switches to a new branch.
    pub fn branch(&self, name: &str) -> &Self {
        git(&self.work, &["checkout", "-q", "-b", name]);
        self
    }

    pub fn checkout(&self, name: &str) -> &Self {
        git(&self.work, &["checkout", "-q", name]);
        self
    }

    pub fn tag(&self, name: &str) -> &Self {
        git(&self.work, &["tag", name]);
        self.push();
        self
    }

    fn push(&self) {
        git(&self.work, &["push", "-q", "--all", "--force", "origin"]);
        git(&self.work, &["push", "-q", "--tags", "--force", "origin"]);
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(dir)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?} failed in {}", dir.display());
}

fn git_output(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
