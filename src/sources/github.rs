//! The GitHub source: checks a repository and revision on the REST API
//! before a task is accepted; in the background clones it with libgit2 at
//! the resolved commit (shallow when the revision is a branch or tag),
//! finds the model's files, replaces Git LFS pointer files by their objects
//! through the LFS batch API, validates the weights, and stages the folder
//! holding the weights (its files only) for installation.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::download::{self, FileDownload, header_map};
use super::{ProgressSink, SourceError, http_client};
use crate::store::{ModelFile, UploadRequest};
use crate::validate;

/// A GitHub repository, checked against GitHub's naming rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubRepo {
    pub owner: String,
    pub name: String,
}

impl GithubRepo {
    /// `owner` is a GitHub login (`[A-Za-z0-9-]`, 1–39, not starting with
    /// `-`); `name` a repository name (`[A-Za-z0-9._-]`, 1–100, not `.` or `..`).
    pub fn parse(owner: &str, name: &str) -> Result<Self, String> {
        let owner_ok = (1..=39).contains(&owner.len())
            && !owner.starts_with('-')
            && owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !owner_ok {
            return Err(format!(
                "'{owner}' is not a GitHub owner: use 1-39 letters, digits or '-', not starting with '-'"
            ));
        }
        let name_ok = (1..=100).contains(&name.len())
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !name_ok {
            return Err(format!(
                "'{name}' is not a GitHub repository name: use 1-100 letters, digits, '.', '_' or '-'"
            ));
        }
        Ok(Self {
            owner: owner.into(),
            name: name.into(),
        })
    }

    /// `owner/name`, as stored in an upload request.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    fn from_full_name(full: &str) -> Result<Self, SourceError> {
        let (owner, name) = full
            .split_once('/')
            .ok_or_else(|| SourceError::Permanent(format!("'{full}' is not owner/repository")))?;
        Self::parse(owner, name).map_err(SourceError::Permanent)
    }
}

/// Whether `revision` can name a branch, tag or commit in git.
pub fn is_valid_revision(revision: &str) -> bool {
    git2::Reference::is_valid_name(&format!("refs/heads/{revision}"))
}

fn is_commit_sha(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

/// What one successful attempt staged: the commit and the model's folder.
#[derive(Debug, Clone)]
pub struct FetchedRepo {
    pub commit: String,
    /// A folder in the staging area holding the model's files, ready to be renamed into place.
    pub folder: PathBuf,
    pub files: Vec<ModelFile>,
}

/// A client of one GitHub (REST API, git server and LFS).
#[derive(Debug, Clone)]
pub struct GitHub {
    api_url: String,
    server_url: String,
    token: Option<String>,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct CommitInfo {
    sha: String,
}

impl GitHub {
    pub fn new(api_url: &str, server_url: &str, token: Option<&str>) -> Self {
        Self {
            api_url: api_url.trim_end_matches('/').into(),
            server_url: server_url.trim_end_matches('/').into(),
            token: token.map(str::to_string),
            client: http_client(),
        }
    }

    async fn api_get(&self, path: &str, what: &str) -> Result<reqwest::Response, SourceError> {
        let mut request = self
            .client
            .get(format!("{}{path}", self.api_url))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| SourceError::from_request(&e, "GitHub"))?;
        let status = response.status();
        let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::FORBIDDEN
                && response
                    .headers()
                    .get("x-ratelimit-remaining")
                    .is_some_and(|v| v == "0"));
        if rate_limited {
            return Err(SourceError::Transient(
                "GitHub's API rate limit is exhausted; set GITHUB_TOKEN to raise it, or try again later".into(),
            ));
        }
        match status {
            s if s.is_success() => Ok(response),
            StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY => Err(
                SourceError::Permanent(format!("{what} was not found on GitHub")),
            ),
            s => Err(SourceError::from_status(s, what, None)),
        }
    }

    /// Checks that the repository and revision exist and returns the commit
    /// the revision resolves to.
    pub async fn resolve(&self, repo: &GithubRepo, revision: &str) -> Result<String, SourceError> {
        let full = repo.full_name();
        self.api_get(&format!("/repos/{full}"), &format!("repository {full}"))
            .await?;
        let what = format!("revision '{revision}' of {full}");
        let commit: CommitInfo = self
            .api_get(&format!("/repos/{full}/commits/{revision}"), &what)
            .await?
            .json()
            .await
            .map_err(|e| {
                SourceError::Transient(format!("GitHub's answer about {what} did not parse: {e}"))
            })?;
        Ok(commit.sha)
    }

    /// One attempt: resolve, clone, find the model, fetch LFS objects,
    /// validate, and stage the model's folder under `staging/model`.
    pub async fn fetch(
        &self,
        request: &UploadRequest,
        staging: &Path,
        progress: &ProgressSink,
        cancel: &CancellationToken,
    ) -> Result<FetchedRepo, SourceError> {
        let repo = GithubRepo::from_full_name(&request.repo)?;
        let commit = self.resolve(&repo, &request.revision).await?;
        let clone_dir = staging.join("clone");
        let clone = CloneJob {
            url: format!("{}/{}.git", self.server_url, repo.full_name()),
            revision: request.revision.clone(),
            commit: commit.clone(),
            dir: clone_dir.clone(),
            token: self.token.clone(),
            progress: progress.clone(),
            cancel: cancel.clone(),
        };
        tokio::task::spawn_blocking(move || clone.run())
            .await
            .map_err(|e| SourceError::Transient(format!("the clone stopped: {e}")))??;
        let weights_dir = find_model_folder(&clone_dir)?;
        let pointers = lfs_pointers(&weights_dir)?;
        if !pointers.is_empty() {
            self.fetch_lfs(
                &repo,
                &request.revision,
                &pointers,
                staging,
                progress,
                cancel,
            )
            .await?;
        }
        let folder = staging.join("model");
        let files = stage_folder(&weights_dir, &folder).await?;
        Ok(FetchedRepo {
            commit,
            folder,
            files,
        })
    }

    /// Replaces each pointer file by its object, downloaded through the LFS
    /// batch API with the shared resumable, sha256-verifying download.
    async fn fetch_lfs(
        &self,
        repo: &GithubRepo,
        revision: &str,
        pointers: &[(PathBuf, LfsPointer)],
        staging: &Path,
        progress: &ProgressSink,
        cancel: &CancellationToken,
    ) -> Result<(), SourceError> {
        let total: u64 = pointers.iter().map(|(_, p)| p.size).sum();
        progress.start(total, pointers.len() as u64);
        let reference = if is_commit_sha(revision) {
            revision.to_string()
        } else {
            format!("refs/heads/{revision}")
        };
        let body = serde_json::json!({
            "operation": "download",
            "transfers": ["basic"],
            "ref": {"name": reference},
            "objects": pointers.iter().map(|(_, p)| serde_json::json!({"oid": p.oid, "size": p.size})).collect::<Vec<_>>(),
        });
        let url = format!(
            "{}/{}.git/info/lfs/objects/batch",
            self.server_url,
            repo.full_name()
        );
        let mut request = self
            .client
            .post(&url)
            .header("Accept", "application/vnd.git-lfs+json")
            .header("Content-Type", "application/vnd.git-lfs+json")
            .body(body.to_string());
        if let Some(token) = &self.token {
            request = request.basic_auth("x-access-token", Some(token));
        }
        let what = format!("the Git LFS objects of {}", repo.full_name());
        let response = request
            .send()
            .await
            .map_err(|e| SourceError::from_request(&e, &what))?;
        if !response.status().is_success() {
            return Err(SourceError::from_status(response.status(), &what, None));
        }
        let batch: LfsBatch = response.json().await.map_err(|e| {
            SourceError::Transient(format!("the LFS batch answer did not parse: {e}"))
        })?;
        for (path, pointer) in pointers {
            let object = batch
                .objects
                .iter()
                .find(|o| o.oid == pointer.oid)
                .ok_or_else(|| {
                    SourceError::Permanent(format!(
                        "the LFS server did not answer for {}",
                        file_name(path)
                    ))
                })?;
            if let Some(error) = &object.error {
                return Err(SourceError::Permanent(format!(
                    "the LFS object of {} is not available ({}: {})",
                    file_name(path),
                    error.code,
                    error.message
                )));
            }
            let action = object
                .actions
                .as_ref()
                .and_then(|a| a.download.as_ref())
                .ok_or_else(|| {
                    SourceError::Permanent(format!(
                        "the LFS server gave no download for {}",
                        file_name(path)
                    ))
                })?;
            let file = FileDownload {
                url: action.href.clone(),
                dest: staging.join("lfs").join(&pointer.oid),
                expected_size: Some(pointer.size),
                expected_sha256: Some(pointer.oid.clone()),
                token: None,
                headers: header_map(action.header.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                what: format!("LFS object of {}", file_name(path)),
            };
            download::fetch(&self.client, &file, progress, cancel).await?;
            tokio::fs::rename(&file.dest, path).await.map_err(|e| {
                SourceError::Transient(format!("could not place {}: {e}", file_name(path)))
            })?;
            progress.file_done();
        }
        Ok(())
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct LfsBatch {
    objects: Vec<LfsObject>,
}

#[derive(Deserialize)]
struct LfsObject {
    oid: String,
    actions: Option<LfsActions>,
    error: Option<LfsError>,
}

#[derive(Deserialize)]
struct LfsActions {
    download: Option<LfsAction>,
}

#[derive(Deserialize)]
struct LfsAction {
    href: String,
    #[serde(default)]
    header: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct LfsError {
    code: u16,
    message: String,
}

/// A Git LFS pointer file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfsPointer {
    pub oid: String,
    pub size: u64,
}

impl LfsPointer {
    /// Parses `version https://git-lfs.github.com/spec/v1\noid sha256:…\nsize …\n`.
    pub fn parse(text: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(text).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "version https://git-lfs.github.com/spec/v1" {
            return None;
        }
        let (mut oid, mut size) = (None, None);
        for line in lines {
            if let Some(hex) = line.strip_prefix("oid sha256:") {
                oid = Some(hex.to_string())
                    .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
            } else if let Some(n) = line.strip_prefix("size ") {
                size = n.parse().ok();
            }
        }
        Some(Self {
            oid: oid?,
            size: size?,
        })
    }
}

/// Pointer files among the regular files directly in `dir`.
fn lfs_pointers(dir: &Path) -> Result<Vec<(PathBuf, LfsPointer)>, SourceError> {
    let mut pointers = Vec::new();
    for path in regular_files(dir)? {
        let small = std::fs::metadata(&path).is_ok_and(|m| m.len() < 1024);
        if small
            && let Some(pointer) = std::fs::read(&path)
                .ok()
                .and_then(|bytes| LfsPointer::parse(&bytes))
        {
            pointers.push((path, pointer));
        }
    }
    Ok(pointers)
}

fn regular_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| SourceError::Transient(format!("cannot read the clone: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// Finds the required files and returns the folder holding the weights.
/// Exactly one `config.json`, one `tokenizer.json`, and exactly one
/// `model.safetensors` or, when there is none, exactly one `pytorch_model.bin`.
fn find_model_folder(root: &Path) -> Result<PathBuf, SourceError> {
    let mut found: std::collections::BTreeMap<&str, Vec<PathBuf>> = Default::default();
    let wanted = [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "pytorch_model.bin",
    ];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let kind = entry
                .file_type()
                .map_err(|e| SourceError::Transient(e.to_string()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if kind.is_dir() && name != ".git" {
                stack.push(entry.path());
            } else if kind.is_file()
                && let Some(known) = wanted.iter().find(|w| **w == name)
            {
                found.entry(known).or_default().push(entry.path());
            }
        }
    }
    let count = |name: &str| found.get(name).map_or(0, Vec::len);
    for required in ["config.json", "tokenizer.json"] {
        if count(required) != 1 {
            return Err(SourceError::Permanent(format!(
                "the repository must hold exactly one {required}; it holds {}",
                count(required)
            )));
        }
    }
    let weights = match (count("model.safetensors"), count("pytorch_model.bin")) {
        (1, _) => &found["model.safetensors"][0],
        (0, 1) => &found["pytorch_model.bin"][0],
        (0, 0) => {
            return Err(SourceError::Permanent(
                "the repository holds no model.safetensors and no pytorch_model.bin".into(),
            ));
        }
        (0, n) => {
            return Err(SourceError::Permanent(format!(
                "the repository must hold exactly one pytorch_model.bin; it holds {n}"
            )));
        }
        (n, _) => {
            return Err(SourceError::Permanent(format!(
                "the repository must hold exactly one model.safetensors; it holds {n}"
            )));
        }
    };
    Ok(weights.parent().unwrap_or(root).to_path_buf())
}

/// Validates the weights in `source` and moves its regular files into `dest`.
async fn stage_folder(source: &Path, dest: &Path) -> Result<Vec<ModelFile>, SourceError> {
    let (source, dest) = (source.to_path_buf(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || {
        for (name, check) in [
            (
                "model.safetensors",
                check_safetensors as fn(&Path, &str) -> Result<(), validate::InvalidWeights>,
            ),
            ("pytorch_model.bin", validate::pickle::check_checkpoint),
        ] {
            let path = source.join(name);
            if path.exists() {
                check(&path, name).map_err(|e| SourceError::Permanent(e.0))?;
            }
        }
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(|e| SourceError::Transient(e.to_string()))?;
        }
        std::fs::create_dir_all(&dest).map_err(|e| SourceError::Transient(e.to_string()))?;
        let mut files = Vec::new();
        for path in regular_files(&source)? {
            let name = file_name(&path);
            let target = dest.join(&name);
            std::fs::rename(&path, &target).map_err(|e| SourceError::Transient(e.to_string()))?;
            let (size, sha256) = sha256_of(&target)?;
            files.push(ModelFile {
                path: name,
                size,
                sha256,
            });
        }
        Ok(files)
    })
    .await
    .map_err(|e| SourceError::Transient(format!("staging stopped: {e}")))?
}

fn check_safetensors(path: &Path, name: &str) -> Result<(), validate::InvalidWeights> {
    validate::check_safetensors(path, name).map(|_| ())
}

fn sha256_of(path: &Path) -> Result<(u64, String), SourceError> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(path).map_err(|e| SourceError::Transient(e.to_string()))?;
    let size =
        std::io::copy(&mut file, &mut hasher).map_err(|e| SourceError::Transient(e.to_string()))?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// A clone of one commit into a fresh folder; runs on a blocking thread.
struct CloneJob {
    url: String,
    revision: String,
    commit: String,
    dir: PathBuf,
    token: Option<String>,
    progress: ProgressSink,
    cancel: CancellationToken,
}

impl CloneJob {
    fn run(self) -> Result<(), SourceError> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)
                .map_err(|e| SourceError::Transient(e.to_string()))?;
        }
        let repo = git2::Repository::init(&self.dir).map_err(|e| {
            SourceError::Transient(format!("cannot create the clone: {}", e.message()))
        })?;
        let mut fetch = git2::FetchOptions::new();
        fetch.remote_callbacks(self.callbacks());
        let refspecs: Vec<String> = if is_commit_sha(&self.revision) {
            vec![
                "+refs/heads/*:refs/remotes/origin/*".into(),
                "+refs/tags/*:refs/tags/*".into(),
            ]
        } else {
            fetch.depth(1);
            vec![
                format!("+refs/heads/{0}:refs/remotes/origin/{0}", self.revision),
                format!("+refs/tags/{0}:refs/tags/{0}", self.revision),
            ]
        };
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.git_error(e))?;
        remote
            .fetch(&refspecs, Some(&mut fetch), None)
            .map_err(|e| self.git_error(e))?;
        let oid = git2::Oid::from_str(&self.commit).map_err(|e| self.git_error(e))?;
        let commit = repo.find_commit(oid).map_err(|_| {
            SourceError::Transient(format!(
                "the clone does not hold commit {}; '{}' may have moved meanwhile",
                self.commit, self.revision
            ))
        })?;
        let mut checkout = git2::build::CheckoutBuilder::new();
        checkout.force();
        repo.checkout_tree(commit.as_object(), Some(&mut checkout))
            .map_err(|e| self.git_error(e))?;
        Ok(())
    }

    fn callbacks(&self) -> git2::RemoteCallbacks<'static> {
        let mut callbacks = git2::RemoteCallbacks::new();
        let (progress, cancel) = (self.progress.clone(), self.cancel.clone());
        callbacks.transfer_progress(move |stats| {
            progress.set_transfer(
                stats.received_bytes() as u64,
                stats.received_objects() as u64,
                stats.total_objects() as u64,
            );
            !cancel.is_cancelled()
        });
        let token = self.token.clone();
        let mut asked = false;
        callbacks.credentials(move |_url, _user, _allowed| match (&token, asked) {
            (Some(token), false) => {
                asked = true;
                git2::Cred::userpass_plaintext("x-access-token", token)
            }
            // libgit2 asks again after every rejection: give up at once.
            _ => Err(git2::Error::from_str(
                "the git server refused the credentials (set a valid GITHUB_TOKEN)",
            )),
        });
        callbacks
    }

    fn git_error(&self, err: git2::Error) -> SourceError {
        if self.cancel.is_cancelled() {
            return SourceError::Cancelled;
        }
        let message = err.message().to_string();
        let permanent = message.contains("404")
            || message.contains("401")
            || message.contains("403")
            || message.contains("credentials")
            || err.code() == git2::ErrorCode::Auth;
        let text = format!("cloning {} failed: {message}", self.url);
        if permanent {
            SourceError::Permanent(text)
        } else {
            SourceError::Transient(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_github_rules() {
        assert!(GithubRepo::parse("huggingface", "transformers").is_ok());
        assert!(GithubRepo::parse("a-b", "x.y_z-1").is_ok());
        for (owner, name) in [
            ("", "r"),
            ("-a", "r"),
            ("a_b", "r"),
            (&"o".repeat(40)[..], "r"),
            ("o", ""),
            ("o", ".."),
            ("o", "a/b"),
        ] {
            assert!(GithubRepo::parse(owner, name).is_err(), "{owner}/{name}");
        }
        assert!(
            is_valid_revision("main")
                && is_valid_revision("v1.0")
                && is_valid_revision("feature/x")
        );
        assert!(
            !is_valid_revision("a..b") && !is_valid_revision("x y") && !is_valid_revision("bad~1")
        );
    }

    #[test]
    fn pointer_files_parse() {
        let oid = "a".repeat(64);
        let text =
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 1234\n");
        assert_eq!(
            LfsPointer::parse(text.as_bytes()),
            Some(LfsPointer { oid, size: 1234 })
        );
        assert_eq!(LfsPointer::parse(b"{\"model_type\": \"bert\"}"), None);
        assert_eq!(
            LfsPointer::parse(
                b"version https://git-lfs.github.com/spec/v1\noid sha256:xyz\nsize 1\n"
            ),
            None
        );
    }
}
