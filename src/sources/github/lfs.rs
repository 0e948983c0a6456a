//! Git LFS for the GitHub source: pointer files are recognised in the
//! clone, and their objects fetched through the LFS batch API with the
//! shared download engine (parts, resume, sha256, disk admission),
//! replacing the pointers.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::model_folder::{file_name, regular_files};
use super::{GitHub, GithubRepo, is_commit_sha};
use crate::error::ErrorCode;
use crate::sources::download::{FileDownload, header_map};
use crate::sources::{ProgressSink, SourceError};

impl GitHub {
    /// Replaces each pointer file by its object, downloaded through the LFS
    /// batch API with the shared resumable, sha256-verifying download.
    pub(super) async fn fetch_lfs(
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
            .downloader
            .client()
            .post(&url)
            .header("Accept", "application/vnd.git-lfs+json")
            .header("Content-Type", "application/vnd.git-lfs+json")
            .body(body.to_string());
        if let Some(token) = &self.token {
            request = request.basic_auth("x-access-token", Some(token.expose()));
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
        let mut downloads = Vec::with_capacity(pointers.len());
        for (path, pointer) in pointers {
            let object = batch
                .objects
                .iter()
                .find(|o| o.oid == pointer.oid)
                .ok_or_else(|| {
                    SourceError::refused(
                        ErrorCode::UpstreamError,
                        format!("the LFS server did not answer for {}", file_name(path)),
                    )
                })?;
            if let Some(error) = &object.error {
                return Err(SourceError::refused(
                    ErrorCode::UpstreamError,
                    format!(
                        "the LFS object of {} is not available ({}: {})",
                        file_name(path),
                        error.code,
                        error.message
                    ),
                ));
            }
            let action = object
                .actions
                .as_ref()
                .and_then(|a| a.download.as_ref())
                .ok_or_else(|| {
                    SourceError::refused(
                        ErrorCode::UpstreamError,
                        format!("the LFS server gave no download for {}", file_name(path)),
                    )
                })?;
            downloads.push(FileDownload {
                url: action.href.clone(),
                dest: staging.join("lfs").join(&pointer.oid),
                expected_size: Some(pointer.size),
                expected_sha256: Some(pointer.oid.clone()),
                token: None,
                headers: header_map(action.header.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                what: format!("LFS object of {}", file_name(path)),
            });
        }
        self.downloader.admit(&downloads, &what).await?;
        self.downloader
            .fetch_all(&downloads, progress, cancel)
            .await?;
        for ((path, _), download) in pointers.iter().zip(&downloads) {
            tokio::fs::rename(&download.dest, path).await.map_err(|e| {
                SourceError::Transient(format!("could not place {}: {e}", file_name(path)))
            })?;
        }
        Ok(())
    }
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
pub(super) fn lfs_pointers(dir: &Path) -> Result<Vec<(PathBuf, LfsPointer)>, SourceError> {
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
