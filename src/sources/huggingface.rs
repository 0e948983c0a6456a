//! The Hugging Face Hub source: checks a repository before a task is
//! accepted, and in the background resolves the revision to a commit, lists
//! the files with their sizes and LFS sha256, downloads those that match
//! `allow_patterns` (resumable, verified) into the task's staging folder, and
//! checks the safetensors weights. Installing into the cache layout is
//! `store::files`' job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSetBuilder};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::download::{Downloader, FileDownload, ScopedToken, error_detail};
use super::{ProgressSink, SourceError, names};
use crate::error::{ErrorCode, FailureCode};
use crate::secret::Secret;
use crate::store::UploadRequest;
use crate::store::files::StagedFile;
use crate::validate;

/// Characters kept as they are in a path segment of a URL.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A Hugging Face repo id, checked against the hub's grammar: an optional
/// `namespace/` then a name, each of `[A-Za-z0-9_.-]`, 1–96 characters, no
/// `--` or `..`, not starting or ending with `-` or `.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfRepoId(String);

impl HfRepoId {
    /// The id, when `text` follows `names::HF_REPO_ID` as it is (no
    /// trimming); otherwise a sentence saying the rule.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.split('/').count() > 2 {
            return Err(format!(
                "'{text}' is not a Hugging Face repo id: use 'name' or 'namespace/name'"
            ));
        }
        if !names::HF_REPO_ID.accepts(text) {
            return Err(format!(
                "'{text}' is not a Hugging Face repo id: each part must be 1-96 characters of \
                 letters, digits, '_', '.' or '-', not start or end with '-' or '.', and not contain '--' or '..'"
            ));
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The repository as `GET /api/models/{repo}/revision/{rev}?blobs=true` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct RepoInfo {
    pub sha: String,
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Sibling {
    pub rfilename: String,
    pub size: Option<u64>,
    #[serde(rename = "blobId")]
    pub blob_id: Option<String>,
    pub lfs: Option<LfsInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LfsInfo {
    pub sha256: String,
    pub size: u64,
}

/// What one successful attempt fetched: the commit and its staged files.
#[derive(Debug, Clone)]
pub struct FetchedSnapshot {
    pub commit: String,
    pub files: Vec<StagedFile>,
}

/// A client of one Hugging Face Hub endpoint.
#[derive(Debug, Clone)]
pub struct HfHub {
    endpoint: String,
    token: Option<ScopedToken>,
    downloader: Downloader,
}

impl HfHub {
    pub fn new(endpoint: &str, token: Option<Secret>, downloader: Downloader) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: token.and_then(|t| ScopedToken::new(t, endpoint)),
            downloader,
        }
    }

    fn client(&self) -> &reqwest::Client {
        self.downloader.client()
    }

    fn repo_url(&self, repo: &HfRepoId) -> String {
        let segments: Vec<String> = repo
            .as_str()
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        format!("{}/{}", self.endpoint, segments.join("/"))
    }

    fn file_url(&self, repo: &HfRepoId, commit: &str, path: &str) -> String {
        let path: Vec<String> = path
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        format!(
            "{}/resolve/{commit}/{}",
            self.repo_url(repo),
            path.join("/")
        )
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token.token.expose()),
            None => request,
        }
    }

    /// The repository at `revision`, with file sizes and LFS hashes.
    pub async fn repo_info(
        &self,
        repo: &HfRepoId,
        revision: &str,
    ) -> Result<RepoInfo, SourceError> {
        let url = format!(
            "{}/api/models/{}/revision/{}?blobs=true",
            self.endpoint,
            repo.as_str(),
            utf8_percent_encode(revision, SEGMENT)
        );
        let what = format!("repository {}@{revision}", repo.as_str());
        let response = self
            .authorized(self.client().get(&url))
            .send()
            .await
            .map_err(|e| SourceError::from_request(&e, &format!("the hub ({what})")))?;
        if !response.status().is_success() {
            return Err(SourceError::from_status(
                response.status(),
                &what,
                error_detail(&response).as_deref(),
            ));
        }
        response.json().await.map_err(|e| {
            SourceError::Transient(format!(
                "the hub's description of {what} did not parse: {e}"
            ))
        })
    }

    /// Checks, before a task is accepted, that the repository and revision
    /// exist and that its files can be read with the configured token: the
    /// hub shows a gated repo's description to anyone and refuses only its
    /// files, so one file is probed with `HEAD`.
    pub async fn check_access(
        &self,
        repo: &HfRepoId,
        revision: &str,
    ) -> Result<RepoInfo, SourceError> {
        let info = self.repo_info(repo, revision).await?;
        let Some(probe) = info.siblings.first() else {
            return Ok(info);
        };
        let url = self.file_url(repo, &info.sha, &probe.rfilename);
        let response = self
            .authorized(self.client().head(&url))
            .send()
            .await
            .map_err(|e| SourceError::from_request(&e, "the hub"))?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            return Ok(info);
        }
        let gated = response
            .headers()
            .get("x-error-code")
            .is_some_and(|code| code == "GatedRepo");
        if gated && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let hint = if self.token.is_some() {
                "the configured HF_TOKEN has not been granted access to it"
            } else {
                "set HF_TOKEN to a token that has been granted access"
            };
            return Err(SourceError::refused(
                ErrorCode::Unauthorized,
                format!("{} is a gated repository: {hint}", repo.as_str()),
            ));
        }
        Err(SourceError::from_status(
            status,
            &format!("repository {}", repo.as_str()),
            None,
        ))
    }

    /// Checks an upload before it is accepted: the repository, revision
    /// and file access (see `check_access`), then whether the files that
    /// `allow_patterns` selects and the cache does not hold fit on disk
    /// (`InsufficientStorage` otherwise).
    pub async fn check_upload(
        &self,
        repo: &HfRepoId,
        revision: &str,
        allow_patterns: &[String],
        cache_blobs: &Path,
    ) -> Result<(), SourceError> {
        let info = self.check_access(repo, revision).await?;
        let needed = select_files(&info.siblings, allow_patterns)?
            .into_iter()
            .map(Wanted::of)
            .filter(|wanted| !wanted.is_cached(cache_blobs))
            .filter_map(|wanted| wanted.size)
            .fold(0u64, u64::saturating_add);
        self.downloader
            .admit_bytes(needed, &format!("{}@{revision}", repo.as_str()))
    }

    /// One attempt: lists, downloads into `staging` (several files at once,
    /// after disk admission), verifies and validates. Files whose blob
    /// `cache_blobs` already holds are not downloaded again.
    pub async fn fetch(
        &self,
        request: &UploadRequest,
        staging: &Path,
        cache_blobs: &Path,
        progress: &ProgressSink,
        cancel: &CancellationToken,
    ) -> Result<FetchedSnapshot, SourceError> {
        let repo = &HfRepoId::parse(&request.repo)
            .map_err(|m| SourceError::refused(ErrorCode::InvalidModelTag, m))?;
        let (revision, allow_patterns) = (&request.revision, &request.allow_patterns);
        let info = self.repo_info(repo, revision).await?;
        let wanted: Vec<Wanted> = select_files(&info.siblings, allow_patterns)?
            .into_iter()
            .map(Wanted::of)
            .collect();
        if wanted.is_empty() {
            return Err(SourceError::Permanent(
                FailureCode::MissingFiles,
                format!(
                    "no file of {}@{revision} matches allow_patterns {allow_patterns:?}",
                    repo.as_str()
                ),
            ));
        }
        let total: u64 = wanted.iter().filter_map(|w| w.size).sum();
        progress.start(total, wanted.len() as u64);
        // Listing order is kept: cached files take their slot at once,
        // downloaded ones when they arrive.
        let mut files: Vec<Option<StagedFile>> = vec![None; wanted.len()];
        let (mut downloads, mut slots) = (Vec::new(), Vec::new());
        for (slot, wanted) in wanted.into_iter().enumerate() {
            let dest = staging.join(&wanted.blob_id);
            if wanted.is_cached(cache_blobs)
                && stage_cached(&cache_blobs.join(&wanted.blob_id), &dest).is_ok()
            {
                let size = wanted.size.unwrap_or_default();
                progress.add_bytes(size);
                progress.file_done();
                files[slot] =
                    Some(wanted.staged(dest, size, wanted.lfs_sha256.clone().unwrap_or_default()));
                continue;
            }
            downloads.push(FileDownload {
                url: self.file_url(repo, &info.sha, &wanted.path),
                dest,
                expected_size: wanted.size,
                expected_sha256: wanted.lfs_sha256.clone(),
                token: self.token.clone(),
                headers: Default::default(),
                what: format!("file {} of {}", wanted.path, repo.as_str()),
            });
            slots.push((slot, wanted));
        }
        let what = format!("{}@{revision}", repo.as_str());
        self.downloader.admit(&downloads, &what).await?;
        let fetched = self
            .downloader
            .fetch_all(&downloads, progress, cancel)
            .await?;
        for (((slot, wanted), download), got) in slots.into_iter().zip(downloads).zip(fetched) {
            files[slot] = Some(wanted.staged(download.dest, got.size, got.sha256));
        }
        let files: Vec<StagedFile> = files.into_iter().flatten().collect();
        let staged = files.clone();
        tokio::task::spawn_blocking(move || check_weights(&staged))
            .await
            .map_err(|e| SourceError::Transient(format!("checking the files stopped: {e}")))??;
        Ok(FetchedSnapshot {
            commit: info.sha,
            files,
        })
    }
}

/// A file the selection wants, as the listing describes it.
struct Wanted {
    path: String,
    /// The name of its blob in the cache.
    blob_id: String,
    size: Option<u64>,
    /// Set for LFS files, whose sha256 the listing gives.
    lfs_sha256: Option<String>,
}

impl Wanted {
    fn of(sibling: &Sibling) -> Self {
        Self {
            path: sibling.rfilename.clone(),
            blob_id: blob_id(sibling),
            size: sibling.lfs.as_ref().map(|l| l.size).or(sibling.size),
            lfs_sha256: sibling.lfs.as_ref().map(|l| l.sha256.clone()),
        }
    }

    /// Whether the cache holds its blob (LFS files only: their blob name
    /// is their sha256, checked when the blob was stored).
    fn is_cached(&self, cache_blobs: &Path) -> bool {
        let Some(size) = self.size.filter(|_| self.lfs_sha256.is_some()) else {
            return false;
        };
        std::fs::metadata(cache_blobs.join(&self.blob_id)).is_ok_and(|m| m.len() == size)
    }

    fn staged(&self, staged_at: PathBuf, size: u64, sha256: String) -> StagedFile {
        StagedFile {
            repo_path: self.path.clone(),
            blob_id: self.blob_id.clone(),
            staged_at,
            size,
            sha256,
        }
    }
}

/// Stages a blob the cache already holds (another revision brought it) as
/// a hard link in the task's staging folder: the install then sees the same
/// file even if a delete of that other model removes the cache's copy
/// meanwhile, or a node that lost this task's lease takes its files away.
/// The link shares the store's file: nothing may write to it in place (the
/// fetch skips it, being complete). A link that fails (another file
/// system) means downloading the blob again.
fn stage_cached(cached: &Path, dest: &Path) -> std::io::Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::hard_link(cached, dest) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(dest)?;
            std::fs::hard_link(cached, dest)
        }
        linked => linked,
    }
}

/// The blob name the cache uses: the LFS sha256, else the git blob id.
fn blob_id(sibling: &Sibling) -> String {
    match (&sibling.lfs, &sibling.blob_id) {
        (Some(lfs), _) => lfs.sha256.clone(),
        (None, Some(blob)) => blob.clone(),
        // The hub always sends a blob id; fall back to a stable name anyway.
        (None, None) => hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            sibling.rfilename.as_bytes(),
        )),
    }
}

fn select_files<'a>(
    siblings: &'a [Sibling],
    patterns: &[String],
) -> Result<Vec<&'a Sibling>, SourceError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern).map_err(|e| {
            SourceError::refused(
                ErrorCode::ValidationError,
                format!("allow pattern '{pattern}' is not a glob: {e}"),
            )
        })?;
        builder.add(glob);
    }
    let set = builder.build().map_err(|e| {
        SourceError::refused(ErrorCode::ValidationError, format!("allow patterns: {e}"))
    })?;
    Ok(siblings
        .iter()
        .filter(|s| set.is_match(&s.rfilename))
        .collect())
}

/// A snapshot is valid when it holds at least one safetensors file, every
/// safetensors file is consistent with its length, a sharded checkpoint's
/// index names only shards that are present, and no file holds an unsafe
/// pickle (checkpoints are scanned as such, every other file by content).
fn check_weights(files: &[StagedFile]) -> Result<(), SourceError> {
    // A staged file that is gone was taken by this service (a stopped
    // attempt's cleanup), not spoiled by the hub: fetch again.
    if let Some(gone) = files.iter().find(|f| !f.staged_at.exists()) {
        return Err(SourceError::Transient(format!(
            "{} disappeared from the staging folder before it was checked",
            gone.repo_path
        )));
    }
    let by_path: BTreeMap<&str, &StagedFile> =
        files.iter().map(|f| (f.repo_path.as_str(), f)).collect();
    let has = |ext: &[&str], f: &StagedFile| ext.iter().any(|e| f.repo_path.ends_with(e));
    // PyTorch checkpoints arrive only when allow_patterns asks for them, and
    // count only once their pickles are scanned; one unsafe file fails the task.
    let is_checkpoint = |f: &StagedFile| has(&[".bin", ".pt", ".pth"], f);
    let weights: Vec<&StagedFile> = files.iter().filter(|f| has(&[".safetensors"], f)).collect();
    if weights.is_empty() && !files.iter().any(is_checkpoint) {
        return Err(SourceError::Permanent(
            FailureCode::MissingFiles,
            "the repository has no .safetensors weights among the files fetched \
             (PyTorch .bin weights are fetched only when allow_patterns asks for them)"
                .into(),
        ));
    }
    for file in &weights {
        validate::check_safetensors(&file.staged_at, &file.repo_path)
            .map_err(|e| SourceError::Permanent(FailureCode::InvalidWeights, e.0))?;
    }
    for file in files {
        if is_checkpoint(file) {
            validate::pickle::check_checkpoint(&file.staged_at, &file.repo_path)
        } else {
            validate::pickle::check_stored_file(&file.staged_at, &file.repo_path)
        }
        .map_err(|e| SourceError::Permanent(FailureCode::UnsafePickle, e.0))?;
    }
    for index in files
        .iter()
        .filter(|f| f.repo_path.ends_with(".safetensors.index.json"))
    {
        let folder = index
            .repo_path
            .rsplit_once('/')
            .map(|(dir, _)| format!("{dir}/"))
            .unwrap_or_default();
        for shard in validate::check_sharded_index(&index.staged_at)
            .map_err(|e| SourceError::Permanent(FailureCode::InvalidWeights, e.0))?
        {
            if !by_path.contains_key(format!("{folder}{shard}").as_str()) {
                return Err(SourceError::Permanent(
                    FailureCode::MissingFiles,
                    format!(
                        "{} names the shard {shard}, which is not among the files fetched",
                        index.repo_path
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_follow_the_hub_grammar() {
        for good in [
            "bert-base-uncased",
            "sentence-transformers/all-MiniLM-L6-v2",
            "a",
            "org_1/m.v2",
        ] {
            assert!(HfRepoId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a/b/c",
            "-a",
            "a-",
            ".a",
            "a..b",
            "a--b",
            "a b",
            "org/",
            &"x".repeat(97),
        ] {
            assert!(HfRepoId::parse(bad).is_err(), "{bad}");
        }
    }
}
