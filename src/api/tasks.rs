//! The task routes: status, list, cancel, one task's event stream, and the
//! deletion of finished tasks. Reads and cancels ask the registry, which
//! merges the live progress of running tasks; a deletion goes to the store
//! directly (finished tasks are no longer the registry's business) and
//! drops what it deleted from the task cache.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::{ApiResponse, OpenApi};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::auth::ApiKeyAuth;
use super::errors::{CONFLICT, NOT_FOUND, Refusal};
use super::objects::{DeletedTasks, FinishedStatus, Source, Task, TaskList, TaskStatus};
use super::{ApiTags, AppState};
use crate::actors::{Actors, RegistryMsg};
use crate::error::{AppError, ErrorCode};
use crate::store::{FinishedTasks, TaskFilter, UploadTask};

#[derive(ApiResponse)]
pub enum TaskFound {
    /// The task.
    #[oai(status = 200)]
    Ok(Json<Task>),
}

#[derive(ApiResponse)]
pub enum TaskPage {
    /// A page of tasks, newest first.
    #[oai(status = 200)]
    Ok(Json<TaskList>),
}

#[derive(ApiResponse)]
pub enum TasksDeleted {
    /// How many finished tasks were deleted.
    #[oai(status = 200)]
    Ok(Json<DeletedTasks>),
}

#[derive(ApiResponse)]
pub enum TaskEvents {
    /// Server-sent events: an event `task` carrying the task at each change,
    /// ending after a terminal state.
    #[oai(status = 200)]
    Ok(EventStream<BoxStream<'static, Task>>),
}

pub struct TasksApi {
    pub state: Arc<AppState>,
}

#[OpenApi(tag = "ApiTags::Tasks")]
impl TasksApi {
    /// Get an upload task
    ///
    /// The task with its status, attempts and progress; `model_id` once it
    /// is DONE, `error_msg` once it FAILED.
    #[oai(
        path = "/v1/upload/tasks/:task_id",
        method = "get",
        operation_id = "get_task"
    )]
    async fn get_task(
        &self,
        _auth: ApiKeyAuth,
        /// The task's id, as the upload answered it.
        task_id: Path<Uuid>,
    ) -> Result<TaskFound, Refusal<NOT_FOUND>> {
        let task = find_task(&self.state.actors, task_id.0).await?;
        Ok(TaskFound::Ok(Json(task.into())))
    }

    /// List upload tasks
    ///
    /// Newest first, optionally filtered by status and source.
    #[oai(path = "/v1/upload/tasks", method = "get", operation_id = "list_tasks")]
    async fn list_tasks(
        &self,
        _auth: ApiKeyAuth,
        /// Only tasks in this state.
        status: Query<Option<TaskStatus>>,
        /// Only tasks from this source.
        source: Query<Option<Source>>,
        /// Page size, 1–1000.
        #[oai(
            default = "super::objects::default_page_size",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
        /// Tasks to skip, 0–4294967295.
        #[oai(
            default,
            validator(minimum(value = "0"), maximum(value = "4294967295"))
        )]
        offset: Query<u32>,
    ) -> Result<TaskPage, Refusal<0>> {
        let filter = TaskFilter {
            status: status.0,
            source: source.0,
            limit: limit.0,
            offset: offset.0,
        };
        let (items, total) = self
            .state
            .actors
            .ask(|reply| RegistryMsg::List { filter, reply })
            .await?;
        Ok(TaskPage::Ok(Json(TaskList {
            items: items.into_iter().map(Into::into).collect(),
            total,
        })))
    }

    /// Delete finished tasks
    ///
    /// Deletes the DONE, FAILED and CANCELLED tasks that match, finished
    /// before `before`; their models stay in the store. PENDING and RUNNING
    /// tasks are never deleted (cancel them first): naming them in
    /// `status` is 422. Finished tasks are also deleted automatically
    /// after `VECTORIZE_TASK_RETENTION_DAYS`.
    #[oai(
        path = "/v1/upload/tasks",
        method = "delete",
        operation_id = "delete_tasks"
    )]
    async fn delete_tasks(
        &self,
        _auth: ApiKeyAuth,
        /// Comma-separated statuses to delete; default all three.
        #[oai(
            explode = false,
            default = "FinishedStatus::all",
            validator(min_items = 1)
        )]
        status: Query<Vec<FinishedStatus>>,
        /// Only tasks from this source.
        source: Query<Option<Source>>,
        /// Only tasks finished before this time (RFC 3339); default now.
        before: Query<Option<DateTime<Utc>>>,
    ) -> Result<TasksDeleted, Refusal<0>> {
        let which = FinishedTasks {
            statuses: status.0.into_iter().map(TaskStatus::from).collect(),
            source: source.0,
            before: before.0.unwrap_or_else(Utc::now),
        };
        let deleted =
            (self.state.store.delete_finished_tasks(&which).await).map_err(AppError::internal)?;
        self.state.actors.cache.forget_deleted(&deleted);
        Ok(TasksDeleted::Ok(Json(DeletedTasks {
            deleted: deleted.len() as u64,
        })))
    }

    /// Cancel an upload task
    ///
    /// Stops a PENDING or RUNNING task and removes its partial files; the
    /// answer comes once they are gone.
    #[oai(
        path = "/v1/upload/tasks/:task_id",
        method = "delete",
        operation_id = "cancel_task"
    )]
    async fn cancel_task(
        &self,
        _auth: ApiKeyAuth,
        /// The task's id, as the upload answered it.
        task_id: Path<Uuid>,
    ) -> Result<TaskFound, Refusal<{ NOT_FOUND | CONFLICT }>> {
        let id = task_id.0;
        let task = self
            .state
            .actors
            .ask(|reply| RegistryMsg::Cancel { id, reply })
            .await?;
        Ok(TaskFound::Ok(Json(task.into())))
    }

    /// Follow an upload task
    ///
    /// A `text/event-stream` of `task` events, one at each change (a few a
    /// second at most), ending after the task reaches a terminal state.
    #[oai(
        path = "/v1/upload/tasks/:task_id/events",
        method = "get",
        operation_id = "task_events"
    )]
    async fn task_events(
        &self,
        _auth: ApiKeyAuth,
        /// The task's id, as the upload answered it.
        task_id: Path<Uuid>,
    ) -> Result<TaskEvents, Refusal<NOT_FOUND>> {
        let actors = self.state.actors.clone();
        // Subscribe before reading the task, so no change falls in between.
        let changes = actors.subscribe();
        let current = find_task(&actors, task_id.0).await?;
        let stream = task_changes(actors, changes, current)
            .map(Task::from)
            .boxed();
        Ok(TaskEvents::Ok(super::events::task_event_stream(stream)))
    }
}

/// The task from the registry's published copy, or from the registry itself.
async fn find_task(actors: &Actors, id: Uuid) -> Result<UploadTask, AppError> {
    if let Some(task) = actors.cache.get(id) {
        return Ok(task);
    }
    actors
        .ask(|reply| RegistryMsg::Get { id, reply })
        .await?
        .ok_or_else(|| AppError::new(ErrorCode::NotFound, format!("no task has the id {id}")))
}

/// How often a follower reads the task from the database: the truth when
/// another node runs it, and a safety net under the broadcast.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// The task as it is now, then each change of it, ending after a terminal
/// state. Changes this node makes arrive on its broadcast at once; changes
/// another node makes are read from the database every `FOLLOW_POLL`.
fn task_changes(
    actors: Actors,
    changes: tokio::sync::broadcast::Receiver<UploadTask>,
    current: UploadTask,
) -> impl futures_util::Stream<Item = UploadTask> {
    let id = current.task_id;
    let poll = tokio::time::interval(FOLLOW_POLL);
    futures_util::stream::unfold(
        (Some(current), None::<UploadTask>, changes, poll),
        move |(next, last, mut changes, mut poll)| {
            let actors = actors.clone();
            async move {
                if last.as_ref().is_some_and(|t| t.task_status.is_terminal()) {
                    return None;
                }
                if let Some(task) = next {
                    return Some((task.clone(), (None, Some(task), changes, poll)));
                }
                loop {
                    let seen = tokio::select! {
                        change = changes.recv() => match change {
                            Ok(task) if task.task_id == id => task,
                            Ok(_) => continue,
                            // Fell behind a burst of changes: read the task as it is now.
                            Err(RecvError::Lagged(_)) => find_task(&actors, id).await.ok()?,
                            Err(RecvError::Closed) => return None,
                        },
                        _ = poll.tick() => find_task(&actors, id).await.ok()?,
                    };
                    if last.as_ref() != Some(&seen)
                        && !last.as_ref().is_some_and(|last| seen.is_older_than(last))
                    {
                        return Some((seen.clone(), (None, Some(seen), changes, poll)));
                    }
                }
            }
        },
    )
}
