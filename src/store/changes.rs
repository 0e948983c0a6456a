//! Task changes for watchers of every task (`GET /v1/upload/events`): the
//! tasks in flight now, and the tasks changed since a time, each read with
//! the database's clock beside it. Reading what changed from the database,
//! rather than trusting a node's own broadcast, is what lets a watcher on
//! one node follow tasks that other nodes run; times come from the
//! database (`time::now()` writes every `updated_at`), so node clocks do
//! not matter. Read only: nothing here writes.

use chrono::{DateTime, Utc};

use super::tasks::TASK_COLUMNS;
use super::{Store, StoreError, TaskStatus, UploadTask};

/// The most tasks in flight one watcher reads when it starts, so that a
/// queue of many thousands costs each new watcher a bounded read.
pub const IN_FLIGHT_READ: usize = 1000;

/// Tasks as read, and the database's clock when they were read.
pub struct TasksAt {
    pub tasks: Vec<UploadTask>,
    pub clock: DateTime<Utc>,
}

impl Store {
    /// The PENDING and RUNNING tasks, oldest first, at most
    /// `IN_FLIGHT_READ` of them (a watcher sees the rest when they change).
    pub async fn tasks_in_flight(&self) -> Result<TasksAt, StoreError> {
        let mut response = self
            .db()
            .query(format!(
                "SELECT {TASK_COLUMNS} FROM task WHERE task_status IN $unfinished
                     ORDER BY created_at LIMIT $limit;
                 RETURN time::now();"
            ))
            .bind(("unfinished", vec![TaskStatus::Pending, TaskStatus::Running]))
            .bind(("limit", IN_FLIGHT_READ as i64))
            .await?;
        tasks_at(&mut response)
    }

    /// Every task whose `updated_at` is later than `since`, oldest change
    /// first. A write's `updated_at` is taken before its transaction
    /// commits, so a caller that moves `since` forward keeps a margin
    /// behind the clock answered here rather than the newest change seen.
    pub async fn tasks_changed_since(&self, since: DateTime<Utc>) -> Result<TasksAt, StoreError> {
        let mut response = self
            .db()
            .query(format!(
                "SELECT {TASK_COLUMNS} FROM task WHERE updated_at > $since ORDER BY updated_at;
                 RETURN time::now();"
            ))
            .bind(("since", since))
            .await?;
        tasks_at(&mut response)
    }
}

/// The tasks of the first statement and the clock of the second.
fn tasks_at(response: &mut surrealdb::IndexedResults) -> Result<TasksAt, StoreError> {
    let tasks: Vec<UploadTask> = response.take(0)?;
    let clock: Option<DateTime<Utc>> = response.take(1)?;
    Ok(TasksAt {
        tasks,
        clock: clock.unwrap_or_else(Utc::now),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{DbOptions, Source, UploadRequest};

    fn task(tag: &str) -> UploadTask {
        let request = UploadRequest {
            repo: "a/b".into(),
            revision: "main".into(),
            allow_patterns: vec![],
        };
        UploadTask::new(Source::Huggingface, tag.into(), request)
    }

    #[tokio::test]
    async fn a_watcher_reads_the_tasks_in_flight_then_only_what_changed() {
        let store = Store::open(&DbOptions::embedded("mem://")).await.unwrap();
        let (first, second) = (task("a@main"), task("b@main"));
        for task in [&first, &second] {
            store.submit_task(task).await.unwrap().unwrap();
        }
        let now = store.tasks_in_flight().await.unwrap();
        let ids: Vec<_> = now.tasks.iter().map(|t| t.task_id).collect();
        assert_eq!(ids, [first.task_id, second.task_id], "oldest first");
        let unchanged = store.tasks_changed_since(now.clock).await.unwrap();
        assert!(unchanged.tasks.is_empty(), "{:?}", unchanged.tasks);
        assert!(unchanged.clock >= now.clock);

        let (claimed, _) = store
            .claim_next("n1", Duration::from_secs(10), 4)
            .await
            .unwrap()
            .unwrap();
        let changed = store.tasks_changed_since(now.clock).await.unwrap();
        assert_eq!(changed.tasks.len(), 1, "{:?}", changed.tasks);
        assert_eq!(changed.tasks[0].task_id, claimed.task_id);
        assert_eq!(changed.tasks[0].task_status, TaskStatus::Running);
        let later = store.tasks_changed_since(changed.clock).await.unwrap();
        assert!(later.tasks.is_empty(), "{:?}", later.tasks);
    }
}
