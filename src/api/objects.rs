//! The objects of the HTTP contract (API.md), as poem-openapi types, and
//! their conversions from store records. Nothing here touches the database.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use uuid::Uuid;

use super::strict::{
    FileGlob, GitHubOwner, GitHubRepoName, HfRepoIdText, NonEmptyList, Revision, StrictString,
};
pub use crate::store::{ModelFile, Source, TaskStatus};
use crate::store::{ModelRecord, UploadTask};

/// The body of every error answer.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// Machine-readable error code, e.g. `MODEL_ALREADY_EXISTS`.
    pub code: String,
    /// What went wrong, in a sentence a person can act on.
    pub message: String,
}

/// Bytes and files moved by the running attempt.
#[derive(Debug, Clone, Object)]
pub struct Progress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
}

/// A background upload task.
#[derive(Debug, Clone, Object)]
pub struct Task {
    pub id: Uuid,
    /// `{repo_id}@{revision}` or `{owner}/{repo}@{revision}`.
    pub model_tag: String,
    pub source: Source,
    pub task_status: TaskStatus,
    /// Why the task failed; set once it is FAILED.
    #[oai(nullable)]
    pub error_msg: Option<String>,
    /// A stable code beside `error_msg`, e.g. `INTERRUPTED` when the node
    /// running the last attempt died.
    #[oai(nullable)]
    pub error_code: Option<String>,
    /// The service node holding the task while it is RUNNING.
    #[oai(nullable)]
    pub node: Option<String>,
    /// Attempts started so far (at most 4).
    pub attempts: u32,
    pub progress: Progress,
    /// The model this task stored; set once it is DONE.
    #[oai(nullable)]
    pub model_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[oai(nullable)]
    pub started_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<UploadTask> for Task {
    fn from(task: UploadTask) -> Self {
        Self {
            id: task.task_id,
            model_tag: task.model_tag,
            source: task.source,
            task_status: task.task_status,
            error_msg: task.error_msg,
            error_code: task.error_code,
            node: task.lease_owner,
            attempts: task.attempts,
            progress: Progress {
                bytes_done: task.progress.bytes_done,
                bytes_total: task.progress.bytes_total,
                files_done: task.progress.files_done,
                files_total: task.progress.files_total,
            },
            model_id: task.model_id,
            created_at: task.created_at,
            updated_at: task.updated_at,
            started_at: task.started_at,
            finished_at: task.finished_at,
        }
    }
}

/// Items on a page of a list when `limit` is not given.
pub fn default_page_size() -> u32 {
    100
}

/// A page of tasks, newest first.
#[derive(Debug, Clone, Object)]
pub struct TaskList {
    pub items: Vec<Task>,
    /// Tasks matching the filter, over all pages.
    pub total: u64,
}

/// The statuses of a finished task: what `DELETE /v1/upload/tasks` may
/// name (a task in flight is cancelled, never deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FinishedStatus {
    Done,
    Failed,
    Cancelled,
}

impl FinishedStatus {
    /// All three: what a deletion takes when `status` is not given.
    pub fn all() -> Vec<FinishedStatus> {
        vec![
            FinishedStatus::Done,
            FinishedStatus::Failed,
            FinishedStatus::Cancelled,
        ]
    }
}

impl From<FinishedStatus> for TaskStatus {
    fn from(status: FinishedStatus) -> Self {
        match status {
            FinishedStatus::Done => TaskStatus::Done,
            FinishedStatus::Failed => TaskStatus::Failed,
            FinishedStatus::Cancelled => TaskStatus::Cancelled,
        }
    }
}

/// The answer of `DELETE /v1/upload/tasks`.
#[derive(Debug, Clone, Object)]
pub struct DeletedTasks {
    /// Finished tasks deleted.
    pub deleted: u64,
}

/// A model in the store.
#[derive(Debug, Clone, Object)]
pub struct Model {
    pub id: Uuid,
    pub model_tag: String,
    pub name: String,
    pub source: Source,
    /// Null for local uploads.
    #[oai(nullable)]
    pub revision: Option<String>,
    /// Null for local uploads.
    #[oai(nullable)]
    pub commit_sha: Option<String>,
    /// The folder holding the files, relative to the data dir.
    pub path: String,
    pub size_bytes: u64,
    pub files: Vec<ModelFile>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ModelRecord> for Model {
    fn from(model: ModelRecord) -> Self {
        Self {
            id: model.model_id,
            model_tag: model.model_tag,
            name: model.name,
            source: model.source,
            revision: model.revision,
            commit_sha: model.commit_sha,
            path: model.path,
            size_bytes: model.size_bytes,
            files: model.files,
            created_at: model.created_at,
            updated_at: model.updated_at,
        }
    }
}

/// A page of models, newest first.
#[derive(Debug, Clone, Object)]
pub struct ModelList {
    pub items: Vec<Model>,
    pub total: u64,
}

/// `POST /v1/upload/github`.
#[derive(Debug, Clone, Object)]
pub struct GitHubUpload {
    /// The repository's owner, a GitHub login: 1-39 letters, digits or
    /// `-`, not starting with `-`.
    #[oai(validator(min_length = 1))]
    pub owner: StrictString<GitHubOwner>,
    /// The repository's name: 1-100 letters, digits, `.`, `_` or `-`,
    /// other than `.` and `..`.
    #[oai(validator(min_length = 1))]
    pub repo_name: StrictString<GitHubRepoName>,
    /// Branch, tag or commit sha, at most 255 characters: components of
    /// letters, digits, `_`, `-` and dots joined by `/`, where a component
    /// does not start or end with a dot, hold `..` or end in `.lock`; empty,
    /// null or missing means `main`.
    #[oai(nullable)]
    pub revision: Option<StrictString<Revision>>,
    /// A synonym of `revision`; give one of the two, not both.
    #[oai(nullable)]
    pub tag: Option<StrictString<Revision>>,
}

/// `POST /v1/upload/huggingface`.
#[derive(Debug, Clone, Object)]
pub struct HuggingFaceUpload {
    /// A Hugging Face repo id, `name` or `namespace/name`: each part 1-96
    /// letters, digits, `_`, `.` or `-`, not starting or ending with `-` or
    /// `.`, without `--` or `..`.
    #[oai(validator(min_length = 1))]
    pub model_tag: StrictString<HfRepoIdText>,
    /// Branch, tag or commit, named as for a GitHub upload; empty, null or
    /// missing means `main`.
    #[oai(nullable)]
    pub revision: Option<StrictString<Revision>>,
    /// Glob patterns of the files to fetch, of letters, digits,
    /// `_ . - / + @ =` and the wildcards `*` and `?`; null or missing means
    /// `["*.safetensors", "*.json", "*.txt", "*.model"]`.
    #[oai(nullable)]
    pub allow_patterns: Option<NonEmptyList<StrictString<FileGlob>>>,
}
