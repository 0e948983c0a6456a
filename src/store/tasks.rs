//! Upload tasks as they are stored: the `task` table, keyed by the task's
//! UUID. This file submits and reads tasks; every write a running task
//! makes is fenced by its lease and lives in `leases`.

use chrono::{DateTime, Utc};
use surrealdb::types::SurrealValue;
use uuid::Uuid;

use super::{Store, StoreError, TASK_INFLIGHT_INDEX, checked};

/// Where a model comes from; part of its identity with the model tag.
///
/// One type wherever a source appears: stored as a plain string, answered
/// in the API and read back by the command-line client, always in capitals.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    SurrealValue,
    poem_openapi::Enum,
    serde::Serialize,
    serde::Deserialize,
)]
#[surreal(untagged, rename_all = "UPPERCASE")]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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

/// The status of an upload task: PENDING → RUNNING → DONE | FAILED |
/// CANCELLED. One type in the database, the API and the client, like `Source`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    SurrealValue,
    poem_openapi::Enum,
    serde::Serialize,
    serde::Deserialize,
)]
#[surreal(untagged, rename_all = "UPPERCASE")]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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
    /// The stable code of a failure, beside `error_msg` (e.g. `INTERRUPTED`).
    #[surreal(default)]
    pub error_code: Option<String>,
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
    /// The node holding the task while it is RUNNING.
    #[surreal(default)]
    pub lease_owner: Option<String>,
    /// When the lease lapses unless renewed; set from the database's clock.
    #[surreal(default)]
    pub lease_until: Option<DateTime<Utc>>,
    /// The fencing token: one more at every claim and at a cancel.
    #[surreal(default)]
    pub lease_epoch: u64,
    /// A retry's backoff: no node claims the task before this time.
    #[surreal(default)]
    pub not_before: Option<DateTime<Utc>>,
}

impl UploadTask {
    /// Whether this is an older state of the task than `other`: a read of
    /// the database may trail a change a node broadcast. An end is never
    /// older than a state in flight, whatever the clocks say (progress
    /// carries the clock of the node that saw it, an end the database's),
    /// and a finished task never runs again.
    pub fn is_older_than(&self, other: &UploadTask) -> bool {
        match (
            self.task_status.is_terminal(),
            other.task_status.is_terminal(),
        ) {
            (true, false) => false,
            (false, true) => true,
            _ => self.updated_at < other.updated_at,
        }
    }

    /// A new PENDING task for `request`.
    pub fn new(source: Source, model_tag: String, request: UploadRequest) -> Self {
        let now = Utc::now();
        Self {
            task_id: Uuid::now_v7(),
            model_tag,
            source,
            task_status: TaskStatus::Pending,
            error_msg: None,
            error_code: None,
            attempts: 0,
            progress: Progress::default(),
            model_id: None,
            request,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            lease_owner: None,
            lease_until: None,
            lease_epoch: 0,
            not_before: None,
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

/// Which finished tasks a deletion removes: those in `statuses` (only
/// DONE, FAILED and CANCELLED count; a task in flight is never removed),
/// from `source` when given, finished before `before`.
#[derive(Debug, Clone)]
pub struct FinishedTasks {
    pub statuses: Vec<TaskStatus>,
    pub source: Option<Source>,
    pub before: DateTime<Utc>,
}

/// Finished tasks removed by one transaction, so that a deletion of a
/// large backlog never holds one huge transaction.
const DELETE_BATCH: usize = 1000;

/// What stands in the way of a new task.
#[derive(Debug)]
pub enum SubmitRefusal {
    /// The store holds the model already.
    ModelExists,
    /// Another task for the model is PENDING or RUNNING.
    InFlight(Box<UploadTask>),
}

/// The columns a task is read with (`inflight_tag` is the index's business).
pub(super) const TASK_COLUMNS: &str = "* OMIT id, inflight_tag";

impl Store {
    /// Stores a new PENDING task in one transaction that first makes sure
    /// the model is not stored; the unique index on `inflight_tag` refuses
    /// a second task in flight for the same model, on any node.
    pub async fn submit_task(
        &self,
        task: &UploadTask,
    ) -> Result<Result<(), SubmitRefusal>, StoreError> {
        let written = self
            .retrying(|| async {
                let response = self
                    .db()
                    .query(
                        "BEGIN TRANSACTION;
                         IF array::len(SELECT VALUE id FROM model
                                WHERE source = $source AND model_tag = $tag LIMIT 1) > 0 {
                             THROW 'MODEL_EXISTS'
                         };
                         CREATE type::record('task', $id) CONTENT $task RETURN NONE;
                         CREATE type::record('queue', $id) SET task = type::record('task', $id)
                             RETURN NONE;
                         COMMIT TRANSACTION;",
                    )
                    .bind(("source", task.source))
                    .bind(("tag", task.model_tag.clone()))
                    .bind(("id", task.task_id.to_string()))
                    .bind(("task", task.clone()))
                    .await?;
                checked(response).map(drop)
            })
            .await;
        match written {
            Ok(()) => Ok(Ok(())),
            Err(StoreError::Refused(m)) if m == "MODEL_EXISTS" => {
                Ok(Err(SubmitRefusal::ModelExists))
            }
            Err(StoreError::Duplicate { index }) if index == TASK_INFLIGHT_INDEX => {
                match self.find_in_flight(task.source, &task.model_tag).await? {
                    Some(running) => Ok(Err(SubmitRefusal::InFlight(Box::new(running)))),
                    // It ended between the refusal and the read: try once more.
                    None => Box::pin(self.submit_task(task)).await,
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The PENDING or RUNNING task for this model, if any.
    pub async fn find_in_flight(
        &self,
        source: Source,
        model_tag: &str,
    ) -> Result<Option<UploadTask>, StoreError> {
        let mut response = self
            .db()
            .query(format!(
                "SELECT {TASK_COLUMNS} FROM task WHERE source = $source AND inflight_tag = $tag LIMIT 1"
            ))
            .bind(("source", source))
            .bind(("tag", model_tag.to_string()))
            .await?;
        let mut found: Vec<UploadTask> = response.take(0)?;
        Ok(found.pop())
    }

    pub async fn get_task(&self, id: Uuid) -> Result<Option<UploadTask>, StoreError> {
        let mut response = self
            .db()
            .query(format!(
                "SELECT {TASK_COLUMNS} FROM ONLY type::record('task', $id)"
            ))
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
                "SELECT {TASK_COLUMNS} FROM task WHERE {FILTER} ORDER BY created_at DESC LIMIT $limit START $offset;
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

    /// Every task that is PENDING or RUNNING: the staging folders worth keeping.
    pub async fn unfinished_task_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        let mut response = self
            .db()
            .query("SELECT VALUE task_id FROM task WHERE task_status IN $unfinished")
            .bind(("unfinished", vec![TaskStatus::Pending, TaskStatus::Running]))
            .await?;
        Ok(response.take(0)?)
    }

    /// Deletes the finished tasks `which` names, in batches, and answers
    /// their ids. Models are records of their own and stay.
    pub async fn delete_finished_tasks(
        &self,
        which: &FinishedTasks,
    ) -> Result<Vec<Uuid>, StoreError> {
        let statuses: Vec<TaskStatus> = (which.statuses.iter().copied())
            .filter(|s| s.is_terminal())
            .collect();
        let mut deleted = Vec::new();
        loop {
            let batch: Vec<Uuid> = self
                .retrying(|| async {
                    let response = self
                        .db()
                        .query(
                            "BEGIN TRANSACTION;
                             LET $gone = (SELECT id, task_id FROM task
                                 WHERE finished_at < $before AND task_status IN $statuses
                                     AND ($source = NONE OR source = $source)
                                 LIMIT $batch);
                             DELETE $gone.id RETURN NONE;
                             RETURN $gone.task_id;
                             COMMIT TRANSACTION;",
                        )
                        .bind(("before", which.before))
                        .bind(("statuses", statuses.clone()))
                        .bind(("source", which.source))
                        .bind(("batch", DELETE_BATCH as i64))
                        .await?;
                    Ok(checked(response)?.take(3)?)
                })
                .await?;
            let last = batch.len() < DELETE_BATCH;
            deleted.extend(batch);
            if last {
                return Ok(deleted);
            }
        }
    }

    /// How many tasks there are of each source in each status.
    pub async fn count_tasks(&self) -> Result<Vec<(Source, TaskStatus, u64)>, StoreError> {
        let mut response = self
            .db()
            .query(
                "SELECT source, task_status, count() AS n FROM task GROUP BY source, task_status",
            )
            .await?;
        let sources: Vec<Source> = response.take((0, "source"))?;
        let statuses: Vec<TaskStatus> = response.take((0, "task_status"))?;
        let counts: Vec<u64> = response.take((0, "n"))?;
        Ok(sources
            .into_iter()
            .zip(statuses)
            .zip(counts)
            .map(|((source, status), n)| (source, status, n))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::leases::tests::{store, task};

    /// An end is news after any state in flight, even one stamped later by
    /// a node whose clock runs ahead of the database's; a finished task
    /// never goes back to running.
    #[test]
    fn an_end_is_never_older_than_a_state_in_flight() {
        let mut running = task("skew@main");
        running.task_status = TaskStatus::Running;
        let mut done = running.clone();
        done.task_status = TaskStatus::Done;
        done.updated_at = running.updated_at - chrono::Duration::seconds(3);
        assert!(!done.is_older_than(&running));
        assert!(running.is_older_than(&done));
        let mut later = running.clone();
        later.updated_at += chrono::Duration::seconds(1);
        assert!(running.is_older_than(&later) && !later.is_older_than(&running));
    }

    /// Only finished tasks of the asked statuses, source and age go; a task
    /// in flight stays whatever the filter says.
    #[tokio::test]
    async fn a_deletion_takes_only_finished_tasks_that_match() {
        let store = store().await;
        let lease = Duration::from_secs(60);
        let mut ids = Vec::new();
        for tag in [
            "failed@main",
            "cancelled@main",
            "running@main",
            "pending@main",
        ] {
            let t = task(tag);
            ids.push(t.task_id);
            store.submit_task(&t).await.unwrap().unwrap();
        }
        let (_, failed) = store.claim_next("n", lease, 4).await.unwrap().unwrap();
        store
            .fail_task(&failed, "boom", None)
            .await
            .unwrap()
            .unwrap();
        store.cancel_task(ids[1]).await.unwrap().unwrap();
        store.claim_next("n", lease, 4).await.unwrap().unwrap();
        let everything = FinishedTasks {
            statuses: TaskStatus::ALL.to_vec(),
            source: None,
            before: Utc::now() + chrono::Duration::seconds(5),
        };
        let too_early = FinishedTasks {
            before: Utc::now() - chrono::Duration::hours(1),
            ..everything.clone()
        };
        assert!(
            store
                .delete_finished_tasks(&too_early)
                .await
                .unwrap()
                .is_empty()
        );
        let other_source = FinishedTasks {
            source: Some(Source::Github),
            ..everything.clone()
        };
        assert!(
            store
                .delete_finished_tasks(&other_source)
                .await
                .unwrap()
                .is_empty()
        );
        let only_failed = FinishedTasks {
            statuses: vec![TaskStatus::Failed],
            ..everything.clone()
        };
        assert_eq!(
            store.delete_finished_tasks(&only_failed).await.unwrap(),
            [ids[0]]
        );
        assert_eq!(
            store.delete_finished_tasks(&everything).await.unwrap(),
            [ids[1]]
        );
        for kept in &ids[2..] {
            assert!(store.get_task(*kept).await.unwrap().is_some());
        }
        assert!(store.get_task(ids[0]).await.unwrap().is_none());
    }
}
