//! `TaskRegistry`: the only writer of task state. It keeps the live view of
//! unfinished tasks in memory (progress changes many times a second and is
//! persisted at most once a second), writes every status change through
//! the store at once, answers status and list queries, and publishes each
//! change for the event stream. At start it spawns the supervisor and hands
//! it every unfinished task, oldest first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::supervisor::{MAX_ATTEMPTS, SupervisorArgs, SupervisorMsg, UploadSupervisor};
use super::{Fetchers, TaskCache};
use crate::error::{AppError, ErrorCode};
use crate::store::{ModelRecord, Progress, Store, StoreError, TaskFilter, TaskStatus, UploadTask};

/// How often dirty progress is written to the database.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

pub enum RegistryMsg {
    /// Stores a new PENDING task and queues it, unless the same model is in flight.
    Submit {
        task: Box<UploadTask>,
        reply: RpcReplyPort<Result<UploadTask, AppError>>,
    },
    /// The PENDING or RUNNING task for this model, if any.
    FindInFlight {
        task: Box<UploadTask>,
        reply: RpcReplyPort<Result<Option<UploadTask>, AppError>>,
    },
    Get {
        id: Uuid,
        reply: RpcReplyPort<Result<Option<UploadTask>, AppError>>,
    },
    List {
        filter: TaskFilter,
        reply: RpcReplyPort<Result<(Vec<UploadTask>, u64), AppError>>,
    },
    /// Cancels a PENDING or RUNNING task; the supervisor answers once the
    /// worker has stopped and the partial files are gone.
    Cancel {
        id: Uuid,
        reply: RpcReplyPort<Result<UploadTask, AppError>>,
    },
    /// From the supervisor: attempt number `attempt` of the task starts now.
    AttemptStarted { id: Uuid, attempt: u32 },
    /// From the supervisor: an attempt failed and the task waits out its
    /// backoff with no worker, so it is PENDING until the next attempt
    /// starts (and does not count against the RUNNING limit).
    RetryWaiting { id: Uuid },
    /// From a worker: bytes and files moved so far.
    Progress { id: Uuid, progress: Progress },
    /// From a worker: the files are installed; register the model and mark
    /// the task DONE. Answers `false` when the task was cancelled meanwhile,
    /// and the worker then removes what it installed.
    Completed {
        id: Uuid,
        model: Box<ModelRecord>,
        reply: RpcReplyPort<Result<bool, AppError>>,
    },
    /// The task failed for good.
    Failed { id: Uuid, message: String },
    /// Persists dirty progress; sent by a timer and at shutdown.
    Flush { reply: Option<RpcReplyPort<()>> },
    /// The supervisor, for shutdown.
    Supervisor {
        reply: RpcReplyPort<ActorRef<SupervisorMsg>>,
    },
}

pub struct TaskRegistry;

pub struct RegistryArgs {
    pub store: Store,
    pub fetchers: Arc<Fetchers>,
    pub events: broadcast::Sender<UploadTask>,
    pub cache: Arc<TaskCache>,
    pub max_concurrent_tasks: usize,
    pub retry_base: Duration,
}

pub struct RegistryState {
    store: Store,
    events: broadcast::Sender<UploadTask>,
    cache: Arc<TaskCache>,
    supervisor: ActorRef<SupervisorMsg>,
    /// Unfinished tasks, with whether their progress awaits persisting.
    live: HashMap<Uuid, (UploadTask, bool)>,
}

impl RegistryState {
    /// Shows a change to the status route and to the event streams.
    fn publish(&self, task: &UploadTask) {
        self.cache.put(task);
        // No subscriber is normal: nobody is watching.
        let _ = self.events.send(task.clone());
    }

    /// Writes a status change of a live task, publishes it, and forgets the
    /// task once it is terminal.
    async fn record(&mut self, task: UploadTask) -> Result<UploadTask, StoreError> {
        self.store.save_task(&task).await?;
        self.publish(&task);
        if task.task_status.is_terminal() {
            self.live.remove(&task.task_id);
        } else {
            self.live.insert(task.task_id, (task.clone(), false));
        }
        Ok(task)
    }

    fn in_flight(&self, task: &UploadTask) -> Option<&UploadTask> {
        self.live
            .values()
            .map(|(t, _)| t)
            .find(|t| t.source == task.source && t.model_tag == task.model_tag)
    }
}

fn store_failure(err: StoreError) -> AppError {
    AppError::internal(err)
}

impl Actor for TaskRegistry {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = RegistryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RegistryArgs,
    ) -> Result<RegistryState, ActorProcessingErr> {
        let supervisor_args = SupervisorArgs {
            registry: myself.clone(),
            fetchers: args.fetchers.clone(),
            max_concurrent_tasks: args.max_concurrent_tasks,
            retry_base: args.retry_base,
        };
        let (supervisor, _) =
            Actor::spawn_linked(None, UploadSupervisor, supervisor_args, myself.get_cell()).await?;
        let mut state = RegistryState {
            store: args.store,
            events: args.events,
            cache: args.cache,
            supervisor,
            live: HashMap::new(),
        };
        // Recovery: every unfinished task is taken up again, oldest first,
        // its attempt count kept. A task that was RUNNING has no worker now,
        // so it waits as PENDING until the supervisor starts one.
        let unfinished = state.store.unfinished_tasks().await?;
        let ids: Vec<Uuid> = unfinished.iter().map(|t| t.task_id).collect();
        let files = args.fetchers.files.clone();
        tokio::task::spawn_blocking(move || files.sweep_staging(&ids)).await?;
        for mut task in unfinished {
            if task.attempts >= MAX_ATTEMPTS {
                // Stopped during its last attempt: another would be a fifth.
                let now = Utc::now();
                task.task_status = TaskStatus::Failed;
                task.error_msg = Some(format!(
                    "the service stopped during the last of {MAX_ATTEMPTS} attempts; upload the model again"
                ));
                task.updated_at = now;
                task.finished_at = Some(now);
                state.store.save_task(&task).await?;
                args.fetchers.files.remove_task_staging(task.task_id);
                continue;
            }
            if task.task_status == TaskStatus::Running {
                task.task_status = TaskStatus::Pending;
                task.updated_at = Utc::now();
                state.store.save_task(&task).await?;
            }
            tracing::info!(task_id = %task.task_id, model_tag = %task.model_tag, attempts = task.attempts, "resuming task");
            state.live.insert(task.task_id, (task.clone(), false));
            state.cache.put(&task);
            state
                .supervisor
                .cast(SupervisorMsg::Enqueue(Box::new(task)))?;
        }
        myself.send_interval(PERSIST_EVERY, || RegistryMsg::Flush { reply: None });
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: RegistryMsg,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        // A database hiccup must not take the registry down: the change is
        // logged and dropped (a waiting caller sees its reply port close and
        // answers 500), and the registry keeps serving.
        if let Err(e) = apply(state, message).await {
            tracing::error!(error = %e, "the registry could not apply a change");
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        // The supervisor is this actor's child: it goes down with it.
        let _ = state
            .supervisor
            .stop_and_wait(None, Some(Duration::from_secs(1)))
            .await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        _state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(_, err) => {
                tracing::error!(error = %err, "the upload supervisor failed; stopping the registry");
                myself.stop(Some("supervisor failed".into()));
            }
            other => tracing::debug!(event = ?other, "registry supervision event"),
        }
        Ok(())
    }
}

/// Applies one message to the registry's state.
async fn apply(state: &mut RegistryState, message: RegistryMsg) -> Result<(), ActorProcessingErr> {
    match message {
        RegistryMsg::Submit { task, reply } => {
            // The route checked both before asking the hub, but another
            // upload of the model may have finished meanwhile; models of
            // remote uploads are registered only here, so this check and
            // the insert below cannot be overtaken.
            let answer = match state.in_flight(&task) {
                Some(running) => Err(upload_in_progress(running)),
                None => match state.store.find_model(task.source, &task.model_tag).await {
                    Err(e) => Err(store_failure(e)),
                    Ok(Some(_)) => Err(model_already_exists(&task)),
                    Ok(None) => match state.store.insert_task(&task).await {
                        Ok(()) => {
                            state.live.insert(task.task_id, (*task.clone(), false));
                            state.publish(&task);
                            state
                                .supervisor
                                .cast(SupervisorMsg::Enqueue(task.clone()))?;
                            Ok(*task)
                        }
                        Err(e) => Err(store_failure(e)),
                    },
                },
            };
            let _ = reply.send(answer);
        }
        RegistryMsg::FindInFlight { task, reply } => {
            let _ = reply.send(Ok(state.in_flight(&task).cloned()));
        }
        RegistryMsg::Get { id, reply } => {
            let answer = match state.live.get(&id) {
                Some((task, _)) => Ok(Some(task.clone())),
                None => state.store.get_task(id).await.map_err(store_failure),
            };
            if let Ok(Some(task)) = &answer {
                state.cache.put(task);
            }
            let _ = reply.send(answer);
        }
        RegistryMsg::List { filter, reply } => {
            let answer = state
                .store
                .list_tasks(&filter)
                .await
                .map_err(store_failure)
                .map(|(mut items, total)| {
                    for item in &mut items {
                        if let Some((live, _)) = state.live.get(&item.task_id) {
                            *item = live.clone();
                        }
                    }
                    (items, total)
                });
            let _ = reply.send(answer);
        }
        RegistryMsg::Cancel { id, reply } => {
            let Some((mut task, _)) = state.live.get(&id).cloned() else {
                let answer = match state.store.get_task(id).await {
                    Ok(Some(task)) => Err(AppError::new(
                        ErrorCode::TaskFinished,
                        format!(
                            "task {id} already ended as {}; there is nothing to cancel",
                            task.task_status.as_str()
                        ),
                    )),
                    Ok(None) => Err(AppError::new(
                        ErrorCode::NotFound,
                        format!("no task has the id {id}"),
                    )),
                    Err(e) => Err(store_failure(e)),
                };
                let _ = reply.send(answer);
                return Ok(());
            };
            let now = Utc::now();
            task.task_status = TaskStatus::Cancelled;
            task.updated_at = now;
            task.finished_at = Some(now);
            match state.record(task.clone()).await {
                Ok(task) => state.supervisor.cast(SupervisorMsg::Cancel {
                    task: Box::new(task),
                    reply,
                })?,
                Err(e) => {
                    let _ = reply.send(Err(store_failure(e)));
                }
            }
        }
        RegistryMsg::AttemptStarted { id, attempt } => {
            if let Some((mut task, _)) = state.live.get(&id).cloned() {
                let now = Utc::now();
                task.task_status = TaskStatus::Running;
                task.attempts = attempt;
                task.error_msg = None;
                task.started_at.get_or_insert(now);
                task.updated_at = now;
                state.record(task).await?;
            }
        }
        RegistryMsg::RetryWaiting { id } => {
            if let Some((mut task, _)) = state.live.get(&id).cloned() {
                task.task_status = TaskStatus::Pending;
                task.updated_at = Utc::now();
                state.record(task).await?;
            }
        }
        RegistryMsg::Progress { id, progress } => {
            if let Some((task, dirty)) = state.live.get_mut(&id)
                && task.progress != progress
            {
                task.progress = progress;
                task.updated_at = Utc::now();
                *dirty = true;
                state.cache.put(task);
                let _ = state.events.send(task.clone());
            }
        }
        RegistryMsg::Completed { id, model, reply } => {
            let Some((mut task, _)) = state.live.get(&id).cloned() else {
                let _ = reply.send(Ok(false));
                return Ok(());
            };
            let now = Utc::now();
            task.task_status = TaskStatus::Done;
            task.model_id = Some(model.model_id);
            task.progress.bytes_done = task.progress.bytes_total;
            task.progress.files_done = task.progress.files_total;
            task.updated_at = now;
            task.finished_at = Some(now);
            match state.store.complete_task(&task, &model).await {
                Ok(()) => {
                    state.live.remove(&id);
                    state.publish(&task);
                    let _ = reply.send(Ok(true));
                }
                Err(StoreError::Duplicate { .. }) => {
                    let message = format!(
                        "the model '{}' ({}) was registered by another upload meanwhile",
                        task.model_tag,
                        task.source.as_str()
                    );
                    fail(state, id, message).await?;
                    let _ = reply.send(Ok(false));
                }
                Err(e) => {
                    tracing::error!(task_id = %id, error = %e, "could not register a finished model");
                    let _ = reply.send(Ok(false));
                    fail(
                        state,
                        id,
                        "the model could not be registered in the database".into(),
                    )
                    .await?;
                }
            }
        }
        RegistryMsg::Failed { id, message } => fail(state, id, message).await?,
        RegistryMsg::Flush { reply } => {
            for (task, dirty) in state.live.values_mut() {
                if *dirty {
                    state.store.save_task(task).await?;
                    *dirty = false;
                }
            }
            if let Some(reply) = reply {
                let _ = reply.send(());
            }
        }
        RegistryMsg::Supervisor { reply } => {
            let _ = reply.send(state.supervisor.clone());
        }
    }
    Ok(())
}

/// The 409 for a second upload of a model already in flight.
pub fn upload_in_progress(running: &UploadTask) -> AppError {
    AppError::new(
        ErrorCode::UploadInProgress,
        format!(
            "an upload of '{}' ({}) is already {}; follow its task",
            running.model_tag,
            running.source.as_str(),
            running.task_status.as_str()
        ),
    )
    .with_location(format!("/v1/upload/tasks/{}", running.task_id))
}

/// The 409 for an upload of a model the store already holds.
fn model_already_exists(task: &UploadTask) -> AppError {
    AppError::model_exists(task.source.as_str(), &task.model_tag)
}

/// Marks a live task FAILED with `message`.
async fn fail(state: &mut RegistryState, id: Uuid, message: String) -> Result<(), StoreError> {
    if let Some((mut task, _)) = state.live.get(&id).cloned() {
        let now = Utc::now();
        task.task_status = TaskStatus::Failed;
        task.error_msg = Some(message);
        task.updated_at = now;
        task.finished_at = Some(now);
        state.record(task).await?;
    }
    Ok(())
}
