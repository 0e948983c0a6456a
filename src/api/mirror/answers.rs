//! What the mirror answers, one type per route: each is the response the
//! router sends and, through `docs`, its description in the OpenAPI
//! document, so the two cannot drift apart. Errors keep the contract's
//! `{code, message}` body and add the Hub's `X-Error-Code` header, which
//! its clients turn into `RepositoryNotFoundError`,
//! `RevisionNotFoundError` and `EntryNotFoundError`.

use poem::Body;
use poem_openapi::ApiResponse;
use poem_openapi::payload::{Binary, Json};

use super::files::HubFile;
use super::hub::{ModelInfo, TreeEntry};
use super::repo::Snapshot;
use crate::api::objects::ErrorBody;
use crate::error::{AppError, ErrorCode};

#[derive(ApiResponse)]
pub enum InfoAnswer {
    /// The model at that revision, with its files (`siblings`).
    #[oai(status = 200)]
    Ok(Json<ModelInfo>),
}

#[derive(ApiResponse)]
pub enum TreeAnswer {
    /// Every file at that revision (under the folder, if one is given).
    #[oai(status = 200)]
    Ok(Json<Vec<TreeEntry>>),
}

#[derive(ApiResponse)]
pub enum FileAnswer {
    /// The whole file (no body for `HEAD`).
    #[oai(status = 200, content_type = "application/octet-stream")]
    Whole(
        Binary<Body>,
        /// The file's size.
        #[oai(header = "Content-Length")]
        u64,
        /// The commit the revision resolves to.
        #[oai(header = "X-Repo-Commit")]
        String,
        /// Quoted: the git blob id, or the sha256 for an LFS file.
        #[oai(header = "ETag")]
        String,
        /// Quoted sha256, for LFS files (weights).
        #[oai(header = "X-Linked-Etag")]
        Option<String>,
        /// The file's size, for LFS files.
        #[oai(header = "X-Linked-Size")]
        Option<u64>,
        /// Always `bytes`.
        #[oai(header = "Accept-Ranges")]
        String,
    ),
    /// The bytes of one satisfiable `Range`.
    #[oai(status = 206, content_type = "application/octet-stream")]
    Part(
        Binary<Body>,
        /// The bytes sent.
        #[oai(header = "Content-Length")]
        u64,
        /// `bytes {first}-{last}/{size}`.
        #[oai(header = "Content-Range")]
        String,
        /// The commit the revision resolves to.
        #[oai(header = "X-Repo-Commit")]
        String,
        /// Quoted: the git blob id, or the sha256 for an LFS file.
        #[oai(header = "ETag")]
        String,
        /// Always `bytes`.
        #[oai(header = "Accept-Ranges")]
        String,
    ),
}

impl FileAnswer {
    /// `file` at `commit`: the bytes `[start, end)` when a range was asked
    /// for (`part`), the whole file otherwise; `body` holds them, or
    /// nothing for `HEAD`.
    pub fn new(file: &HubFile, commit: &str, part: Option<(u64, u64)>, body: Body) -> FileAnswer {
        let etag = format!("\"{}\"", file.etag());
        let ranges = "bytes".to_string();
        match part {
            None => FileAnswer::Whole(
                Binary(body),
                file.size,
                commit.to_string(),
                etag,
                file.lfs.then(|| format!("\"{}\"", file.sha256)),
                file.lfs.then_some(file.size),
                ranges,
            ),
            Some((start, end)) => FileAnswer::Part(
                Binary(body),
                end - start,
                format!("bytes {start}-{}/{}", end - 1, file.size),
                commit.to_string(),
                etag,
                ranges,
            ),
        }
    }
}

#[derive(ApiResponse)]
pub enum MirrorRefusal {
    /// `VECTORIZE_API_KEY` is set and the request lacks it (as the client's Hugging Face token).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// No such repo, revision or file; `X-Error-Code` says which, as on the Hub.
    #[oai(status = 404)]
    NotFound(
        Json<ErrorBody>,
        /// `RepoNotFound`, `RevisionNotFound` or `EntryNotFound`.
        #[oai(header = "X-Error-Code")]
        Option<String>,
        /// For `EntryNotFound`: the commit that was searched.
        #[oai(header = "X-Repo-Commit")]
        Option<String>,
    ),
    /// The `Range` lies outside the file.
    #[oai(status = 416)]
    RangeNotSatisfiable(
        Json<ErrorBody>,
        /// `bytes */{size}`.
        #[oai(header = "Content-Range")]
        String,
    ),
    /// An unexpected error; the detail is in the server's log.
    #[oai(status = 500)]
    Server(Json<ErrorBody>),
}

/// Why the mirror cannot answer: an error of the one table, and what the
/// Hub's clients need beside it.
#[derive(Debug)]
pub struct MirrorError {
    error: AppError,
    /// The commit searched, for `EntryNotFound`.
    repo_commit: Option<String>,
    /// The file's size, for `RANGE_NOT_SATISFIABLE`.
    size: Option<u64>,
}

impl From<AppError> for MirrorError {
    fn from(error: AppError) -> Self {
        Self {
            error,
            repo_commit: None,
            size: None,
        }
    }
}

impl MirrorError {
    pub fn repo_not_found(repo_id: &str) -> Self {
        AppError::new(
            ErrorCode::RepoNotFound,
            format!("no model in the store is served as '{repo_id}' on this mirror root"),
        )
        .into()
    }

    pub fn revision_not_found(repo_id: &str, revision: &str) -> Self {
        AppError::new(
            ErrorCode::RevisionNotFound,
            format!(
                "'{repo_id}' is stored, but not at revision '{revision}': ask for a revision it \
                 was uploaded with, or its commit"
            ),
        )
        .into()
    }

    pub fn entry_not_found(snapshot: &Snapshot, path: &str) -> Self {
        let error = AppError::new(
            ErrorCode::EntryNotFound,
            format!(
                "'{}' at {} has no file '{path}'",
                snapshot.repo_id, snapshot.commit
            ),
        );
        Self {
            repo_commit: Some(snapshot.commit.clone()),
            ..error.into()
        }
    }

    pub fn range_not_satisfiable(file: &HubFile, range: &str) -> Self {
        let error = AppError::new(
            ErrorCode::RangeNotSatisfiable,
            format!(
                "the range '{range}' lies outside '{}', which has {} bytes",
                file.path, file.size
            ),
        );
        Self {
            size: Some(file.size),
            ..error.into()
        }
    }

    pub fn no_route() -> Self {
        AppError::new(
            ErrorCode::NotFound,
            "the mirror has no such route: it answers /api/models/{repo_id}[/revision/{revision}], \
             /api/models/{repo_id}/tree/{revision} and /{repo_id}/resolve/{revision}/{path} \
             under /mirror/huggingface, /mirror/github and /mirror/local",
        )
        .into()
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        AppError::internal(detail).into()
    }
}

impl From<MirrorError> for MirrorRefusal {
    fn from(refused: MirrorError) -> Self {
        let MirrorError {
            error,
            repo_commit,
            size,
        } = refused;
        let hub_code = match error.code {
            ErrorCode::RepoNotFound => Some("RepoNotFound"),
            ErrorCode::RevisionNotFound => Some("RevisionNotFound"),
            ErrorCode::EntryNotFound => Some("EntryNotFound"),
            _ => None,
        };
        let status = error.code.status().as_u16();
        let body = Json(ErrorBody {
            code: error.code.as_str().to_string(),
            message: error.message,
        });
        match status {
            401 => MirrorRefusal::Unauthorized(body),
            404 => MirrorRefusal::NotFound(body, hub_code.map(String::from), repo_commit),
            416 => MirrorRefusal::RangeNotSatisfiable(
                body,
                format!("bytes */{}", size.unwrap_or_default()),
            ),
            _ => MirrorRefusal::Server(body),
        }
    }
}
