//! The GitHub source: checks a repository and revision on the REST API
//! before a task is accepted; in the background clones it with libgit2 at
//! the resolved commit (shallow when the revision is a branch or tag),
//! finds the model's files, replaces Git LFS pointer files by their objects
//! through the LFS batch API, validates the weights, and stages the folder
//! holding the weights (its files only) for installation.

mod clone;
mod lfs;
mod model_folder;

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use self::clone::CloneJob;
pub use self::lfs::LfsPointer;
use self::lfs::lfs_pointers;
use self::model_folder::{find_model_folder, stage_folder};
use super::download::Downloader;
use super::{ProgressSink, SourceError, names};
use crate::error::ErrorCode;
use crate::secret::Secret;
use crate::store::{ModelFile, UploadRequest};

/// A GitHub repository, checked against GitHub's naming rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubRepo {
    pub owner: String,
    pub name: String,
}

impl GithubRepo {
    /// `owner` is a GitHub login (`[A-Za-z0-9-]`, 1–39, not starting with
    /// `-`); `name` a repository name (`[A-Za-z0-9._-]`, 1–100, not `.` or
    /// `..`): `names::GITHUB_OWNER` and `names::GITHUB_REPO_NAME`, which the
    /// OpenAPI document states too.
    pub fn parse(owner: &str, name: &str) -> Result<Self, String> {
        if !names::GITHUB_OWNER.accepts(owner) {
            return Err(format!(
                "'{owner}' is not a GitHub owner: use 1-39 letters, digits or '-', not starting with '-'"
            ));
        }
        if !names::GITHUB_REPO_NAME.accepts(name) {
            return Err(format!(
                "'{name}' is not a GitHub repository name: use 1-100 letters, digits, '.', '_' or '-', \
                 other than '.' and '..'"
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
        let (owner, name) = full.split_once('/').ok_or_else(|| {
            SourceError::refused(
                ErrorCode::InvalidUrl,
                format!("'{full}' is not owner/repository"),
            )
        })?;
        Self::parse(owner, name).map_err(|m| SourceError::refused(ErrorCode::InvalidUrl, m))
    }
}

fn is_commit_sha(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

/// Whether `revision` names `commit` by its sha, in full or abbreviated.
fn names_commit(revision: &str, commit: &str) -> bool {
    revision.len() >= 4
        && revision.chars().all(|c| c.is_ascii_hexdigit())
        && commit.starts_with(&revision.to_ascii_lowercase())
}

/// Characters kept as they are in a revision inside an API path (`/` too:
/// GitHub takes `commits/feature/x`).
const REF_IN_PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

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
    token: Option<Secret>,
    downloader: Downloader,
}

#[derive(Deserialize)]
struct CommitInfo {
    sha: String,
}

impl GitHub {
    pub fn new(
        api_url: &str,
        server_url: &str,
        token: Option<Secret>,
        downloader: Downloader,
    ) -> Self {
        Self {
            api_url: api_url.trim_end_matches('/').into(),
            server_url: server_url.trim_end_matches('/').into(),
            token,
            downloader,
        }
    }

    async fn api_get(&self, path: &str, what: &str) -> Result<reqwest::Response, SourceError> {
        let mut request = self
            .downloader
            .client()
            .get(format!("{}{path}", self.api_url))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
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
            StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY => Err(SourceError::refused(
                ErrorCode::NotFound,
                format!("{what} was not found on GitHub"),
            )),
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
            .api_get(
                &format!(
                    "/repos/{full}/commits/{}",
                    percent_encoding::utf8_percent_encode(revision, REF_IN_PATH)
                ),
                &what,
            )
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
        let files = stage_folder(&weights_dir, &folder, cancel).await?;
        Ok(FetchedRepo {
            commit,
            folder,
            files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::is_valid_revision;

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
        assert!(names_commit(
            "ABC1234",
            &format!("abc1234{}", "0".repeat(33))
        ));
        assert!(!names_commit("main", "abc") && !names_commit("abc", "abcdef"));
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
