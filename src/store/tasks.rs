//! Upload tasks as they are stored: the `task` table, keyed by the task's
//! UUID. Only the registry actor writes here; see `actors::registry`.

use chrono::{DateTime, Utc};
use surrealdb::types::SurrealValue;
use uuid::Uuid;

use super::{ModelRecord, Store, StoreError};

/// Where a model comes from; part of its identity with the model tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, SurrealValue)]
#[surreal(rename_all = "UPPERCASE")]
pub enum Source {
    Huggingface,
    Github,
    Local,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Huggingface => "HUGGINGFACE",
            Source::Github => "GITHUB",
            Source::Local => "LOCAL",
        }
    }
}

/// The life of a task: PENDING → RUNNING → DONE | FAILED | CANCELLED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, SurrealValue)]
#[surreal(rename_all = "UPPERCASE")]
pub enum TaskStatus {
    Pending,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl TaskStatus {
    /// Whether the task has ended and will never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Done | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "PENDING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Done => "DONE",
            TaskStatus::Failed => "FAILED",
            TaskStatus::Cancelled => "CANCELLED",
        }
    }

    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Pending,
        TaskStatus::Running,
        TaskStatus::Done,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];
}

/// Bytes and files moved so far by the running attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, SurrealValue)]
pub struct Progress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
}

/// What a remote task was asked to fetch; kept so that a restart can run it again.
#[derive(Debug, Clone, PartialEq, Eq, SurrealValue)]
pub struct UploadRequest {
    /// `repo_id` for Hugging Face, `owner/repo` for GitHub.
    pub repo: String,
    pub revision: String,
    /// Glob patterns of the files to fetch (Hugging Face only).
    pub allow_patterns: Vec<String>,
}

/// One upload task.
#[derive(Debug, Clone, PartialEq, SurrealValue)]
pub struct UploadTask {
    pub task_id: Uuid,
    pub model_tag: String,
    pub source: Source,
    pub task_status: TaskStatus,
    #[surreal(default)]
    pub error_msg: Option<String>,
    pub attempts: u32,
    pub progress: Progress,
    #[surreal(default)]
    pub model_id: Option<Uuid>,
    pub request: UploadRequest,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[surreal(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[surreal(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl UploadTask {
    /// A new PENDING task for `request`.
    pub fn new(source: Source, model_tag: String, request: UploadRequest) -> Self {
        let now = Utc::now();
        Self {
            task_id: Uuid::now_v7(),
            model_tag,
            source,
            task_status: TaskStatus::Pending,
            error_msg: None,
            attempts: 0,
            progress: Progress::default(),
            model_id: None,
            request,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
        }
    }
}

/// Filters and paging of the task list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub source: Option<Source>,
    pub limit: u32,
    pub offset: u32,
}

const FILTER: &str =
    "($status = NONE OR task_status = $status) AND ($source = NONE OR source = $source)";

impl Store {
    /// Stores a new task.
    pub async fn insert_task(&self, task: &UploadTask) -> Result<(), StoreError> {
        self.db()
            .query("CREATE type::record('task', $id) CONTENT $task RETURN NONE")
            .bind(("id", task.task_id.to_string()))
            .bind(("task", task.clone()))
            .await?
            .check()
            .map_err(StoreError::classify)?;
        Ok(())
    }

    /// Replaces the stored task with `task`.
    pub async fn save_task(&self, task: &UploadTask) -> Result<(), StoreError> {
        self.db()
            .query("UPDATE type::record('task', $id) CONTENT $task RETURN NONE")
            .bind(("id", task.task_id.to_string()))
            .bind(("task", task.clone()))
            .await?
            .check()
            .map_err(StoreError::classify)?;
        Ok(())
    }

    /// Marks `task` DONE and registers `model` in one transaction: either both
    /// are written or neither is.
    pub async fn complete_task(
        &self,
        task: &UploadTask,
        model: &ModelRecord,
    ) -> Result<(), StoreError> {
        self.db()
            .query(
                "BEGIN TRANSACTION;
                 CREATE type::record('model', $model_id) CONTENT $model RETURN NONE;
                 UPDATE type::record('task', $task_id) CONTENT $task RETURN NONE;
                 COMMIT TRANSACTION;",
            )
            .bind(("model_id", model.model_id.to_string()))
            .bind(("model", model.clone()))
            .bind(("task_id", task.task_id.to_string()))
            .bind(("task", task.clone()))
            .await?
            .check()
            .map_err(StoreError::classify)?;
        Ok(())
    }

    pub async fn get_task(&self, id: Uuid) -> Result<Option<UploadTask>, StoreError> {
        let mut response = self
            .db()
            .query("SELECT * OMIT id FROM ONLY type::record('task', $id)")
            .bind(("id", id.to_string()))
            .await?;
        Ok(response.take(0)?)
    }

    /// A page of tasks, newest first, and the number of tasks matching the filter.
    pub async fn list_tasks(
        &self,
        filter: &TaskFilter,
    ) -> Result<(Vec<UploadTask>, u64), StoreError> {
        let mut response = self
            .db()
            .query(format!(
                "SELECT * OMIT id FROM task WHERE {FILTER} ORDER BY created_at DESC LIMIT $limit START $offset;
                 SELECT count() AS total FROM task WHERE {FILTER} GROUP ALL;"
            ))
            .bind(("status", filter.status))
            .bind(("source", filter.source))
            .bind(("limit", filter.limit as i64))
            .bind(("offset", filter.offset as i64))
            .await?;
        let items: Vec<UploadTask> = response.take(0)?;
        let total: Option<u64> = response.take((1, "total"))?;
        Ok((items, total.unwrap_or(0)))
    }

    /// Every task that is PENDING or RUNNING, oldest first: the work a restart takes up.
    pub async fn unfinished_tasks(&self) -> Result<Vec<UploadTask>, StoreError> {
        let mut response = self
            .db()
            .query("SELECT * OMIT id FROM task WHERE task_status IN $unfinished ORDER BY created_at ASC")
            .bind(("unfinished", vec![TaskStatus::Pending, TaskStatus::Running]))
            .await?;
        Ok(response.take(0)?)
    }

    /// How many tasks are in each status.
    pub async fn count_tasks_by_status(&self) -> Result<Vec<(TaskStatus, u64)>, StoreError> {
        let mut response = self
            .db()
            .query("SELECT task_status, count() AS n FROM task GROUP BY task_status")
            .await?;
        let statuses: Vec<TaskStatus> = response.take((0, "task_status"))?;
        let counts: Vec<u64> = response.take((0, "n"))?;
        Ok(statuses.into_iter().zip(counts).collect())
    }
}
