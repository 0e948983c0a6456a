//! `TaskRegistry`: this node's writer of task state. The database is the
//! truth every node shares; the registry keeps the tasks this node holds
//! (their live progress changes many times a second and is saved with the
//! lease renewal, at most once a heartbeat), writes every status change
//! through the store at once — fenced by the task's lease — answers status
//! and list queries, and publishes each change for this node's event
//! streams. At start it spawns the supervisor, which claims work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::supervisor::{CANCEL_ANSWER, SupervisorArgs, SupervisorMsg, UploadSupervisor};
use super::{Fetchers, TaskCache};
use crate::error::{AppError, ErrorCode};
use crate::metrics::Metrics;
use crate::store::files::ModelFiles;
use crate::store::tasks::SubmitRefusal;
use crate::store::{Lease, ModelRecord, Progress, Store, StoreError, TaskFilter, UploadTask};

pub enum RegistryMsg {
    /// Stores a new PENDING task, unless the model is stored or in flight.
    Submit {
        task: Box<UploadTask>,
        reply: RpcReplyPort<Result<UploadTask, AppError>>,
    },
    Get {
        id: Uuid,
        reply: RpcReplyPort<Result<Option<UploadTask>, AppError>>,
    },
    List {
        filter: TaskFilter,
        reply: RpcReplyPort<Result<(Vec<UploadTask>, u64), AppError>>,
    },
    /// Cancels a PENDING or RUNNING task, on whichever node runs it; the
    /// answer comes once its worker has stopped and its files are gone.
    Cancel {
        id: Uuid,
        reply: RpcReplyPort<Result<UploadTask, AppError>>,
    },
    /// From the supervisor: this node claimed the task.
    Claimed { task: Box<UploadTask>, lease: Lease },
    /// From the supervisor: tasks ended by the database (their last
    /// attempt died with its node); shown to this node's followers.
    Ended(Vec<UploadTask>),
    /// From a worker: bytes and files moved so far.
    Progress { id: Uuid, progress: Progress },
    /// From a worker: the files are installed; register the model and mark
    /// the task DONE in one fenced transaction. Answers `false` when the
    /// lease is gone (cancelled, or taken over) or the model exists; the
    /// worker then removes what it installed.
    Completed {
        id: Uuid,
        model: Box<ModelRecord>,
        reply: RpcReplyPort<Result<bool, AppError>>,
    },
    /// The task failed for good.
    Failed {
        id: Uuid,
        message: String,
        code: Option<String>,
    },
    /// From the supervisor: an attempt failed; the task waits out `backoff`
    /// as PENDING, and any node may run the retry.
    RetryLater { id: Uuid, backoff: Duration },
    /// From the supervisor: the worker stopped because the node stops; the
    /// task is given back and the attempt does not count.
    Release { id: Uuid },
    /// Renews the leases of held tasks and saves their progress; sent by
    /// a timer and at shutdown.
    Heartbeat { reply: Option<RpcReplyPort<()>> },
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
    pub node: String,
    pub lease: Duration,
    /// This process opened an embedded database, which only one process
    /// can: every lease in it belongs to a process that is gone.
    pub sole_node: bool,
    pub max_concurrent_tasks: usize,
    pub retry_base: Duration,
}

/// A task this node holds.
struct Held {
    task: UploadTask,
    lease: Lease,
    /// Progress moved since the last save.
    dirty: bool,
}

pub struct RegistryState {
    store: Store,
    files: ModelFiles,
    events: broadcast::Sender<UploadTask>,
    cache: Arc<TaskCache>,
    supervisor: ActorRef<SupervisorMsg>,
    lease: Duration,
    held: HashMap<Uuid, Held>,
    metrics: Arc<Metrics>,
}

/// How often leases are renewed: a third of the lease, and at least once a
/// second so that a cancel sent to another node stops the worker quickly.
fn heartbeat_every(lease: Duration) -> Duration {
    (lease / 3).min(Duration::from_secs(1))
}

impl RegistryState {
    /// Shows a change to the status route and to this node's event streams.
    fn publish(&self, task: &UploadTask) {
        self.publisher().publish(task);
    }

    fn publisher(&self) -> Publisher {
        Publisher {
            cache: self.cache.clone(),
            events: self.events.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Publishes the task as a fenced write left it, and forgets it as held.
    fn let_go(&mut self, id: Uuid, written: Option<UploadTask>) {
        self.held.remove(&id);
        self.cache.forget_live(id);
        if let Some(task) = written {
            self.publish(&task);
        }
    }

    /// Lets the task go after the last write its worker asked for. When
    /// that write failed, the lease is simply no longer renewed: it lapses
    /// and a node takes the task over, as after a crash.
    fn written(&mut self, id: Uuid, written: Result<Option<UploadTask>, StoreError>) {
        match written {
            Ok(task) => self.let_go(id, task),
            Err(e) => {
                tracing::error!(task_id = %id, error = %e, "could not record a task's change; its lease will lapse");
                self.let_go(id, None);
            }
        }
    }
}

/// Where a changed task goes: the event streams of this node, and the
/// cache when it is finished (a finished task never changes). Running
/// tasks enter the cache only from `Claimed` and `Progress`, while this
/// node holds them; any other view of one could go stale there.
struct Publisher {
    cache: Arc<TaskCache>,
    events: broadcast::Sender<UploadTask>,
    metrics: Arc<Metrics>,
}

impl Publisher {
    /// Publishes a change; a terminal one, which happens once a task, is
    /// also timed.
    fn publish(&self, task: &UploadTask) {
        if task.task_status.is_terminal() {
            self.cache.put(task);
            let took = task
                .finished_at
                .map(|end| (end - task.created_at).to_std().unwrap_or_default());
            if let Some(took) = took {
                self.metrics
                    .observe_task(task.source, task.task_status, took);
            }
        }
        // No subscriber is normal: nobody is watching.
        let _ = self.events.send(task.clone());
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
        if args.sole_node {
            args.store.lapse_all_leases().await?;
        } else {
            args.store.lapse_leases_of(&args.node).await?;
        }
        // This node's leftovers: staging of unfinished tasks is kept for
        // whichever node claims them next.
        let unfinished = args.store.unfinished_task_ids().await?;
        let (files, sole_node) = (args.fetchers.files.clone(), args.sole_node);
        tokio::task::spawn_blocking(move || files.sweep_staging(&unfinished, sole_node)).await?;
        let supervisor_args = SupervisorArgs {
            registry: myself.clone(),
            fetchers: args.fetchers.clone(),
            node: args.node.clone(),
            lease: args.lease,
            max_concurrent_tasks: args.max_concurrent_tasks,
            retry_base: args.retry_base,
        };
        let (supervisor, _) =
            Actor::spawn_linked(None, UploadSupervisor, supervisor_args, myself.get_cell()).await?;
        myself.send_interval(heartbeat_every(args.lease), || RegistryMsg::Heartbeat {
            reply: None,
        });
        Ok(RegistryState {
            store: args.store,
            files: args.fetchers.files.clone(),
            events: args.events,
            cache: args.cache,
            supervisor,
            lease: args.lease,
            held: HashMap::new(),
            metrics: args.fetchers.metrics.clone(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: RegistryMsg,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        // A database hiccup must not take the registry down: the change is
        // logged and dropped (a waiting caller sees its reply port close and
        // answers 500; a lease not renewed lapses and another node resumes
        // the task), and the registry keeps serving.
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
        // Submits and reads wait on the database only: they run beside the
        // mailbox, so a burst of requests never delays a lease renewal.
        RegistryMsg::Submit { task, reply } => {
            let (store, publisher) = (state.store.clone(), state.publisher());
            let supervisor = state.supervisor.clone();
            tokio::spawn(async move {
                let answer = match store.submit_task(&task).await {
                    Ok(Ok(())) => {
                        publisher.publish(&task);
                        let _ = supervisor.cast(SupervisorMsg::Poll);
                        Ok(*task)
                    }
                    Ok(Err(SubmitRefusal::ModelExists)) => Err(model_already_exists(&task)),
                    Ok(Err(SubmitRefusal::InFlight(running))) => Err(upload_in_progress(&running)),
                    Err(e) => Err(store_failure(e)),
                };
                let _ = reply.send(answer);
            });
        }
        RegistryMsg::Get { id, reply } => {
            if let Some(held) = state.held.get(&id) {
                let _ = reply.send(Ok(Some(held.task.clone())));
                return Ok(());
            }
            let (store, cache) = (state.store.clone(), state.cache.clone());
            tokio::spawn(async move {
                let answer = store.get_task(id).await.map_err(store_failure);
                if let Ok(Some(task)) = &answer
                    && task.task_status.is_terminal()
                {
                    cache.put(task);
                }
                let _ = reply.send(answer);
            });
        }
        RegistryMsg::List { filter, reply } => {
            let live: HashMap<Uuid, Progress> = state
                .held
                .iter()
                .map(|(id, held)| (*id, held.task.progress))
                .collect();
            let store = state.store.clone();
            tokio::spawn(async move {
                let answer = store.list_tasks(&filter).await.map_err(store_failure);
                let answer = answer.map(|(mut items, total)| {
                    // This node's running tasks with their live progress (not
                    // one that finished since the snapshot was taken).
                    for task in items.iter_mut().filter(|t| !t.task_status.is_terminal()) {
                        if let Some(progress) = live.get(&task.task_id) {
                            task.progress = *progress;
                        }
                    }
                    (items, total)
                });
                let _ = reply.send(answer);
            });
        }
        RegistryMsg::Cancel { id, reply } => cancel(state, id, reply).await?,
        // A cancel that reached this registry between the claim and this
        // message has bumped the epoch: the first renewal finds the lease
        // gone and stops the worker.
        RegistryMsg::Claimed { task, lease } => {
            state.cache.put(&task);
            state.publish(&task);
            state.held.insert(
                task.task_id,
                Held {
                    task: *task,
                    lease,
                    dirty: false,
                },
            );
        }
        RegistryMsg::Ended(tasks) => {
            for task in tasks {
                state.publish(&task);
            }
        }
        RegistryMsg::Progress { id, progress } => {
            if let Some(held) = state.held.get_mut(&id)
                && held.task.progress != progress
            {
                held.task.progress = progress;
                held.task.updated_at = chrono::Utc::now();
                held.dirty = true;
                state.cache.put(&held.task);
                let _ = state.events.send(held.task.clone());
            }
        }
        RegistryMsg::Completed { id, model, reply } => {
            let Some((lease, progress)) = state
                .held
                .get(&id)
                .map(|h| (h.lease.clone(), h.task.progress))
            else {
                let _ = reply.send(Ok(false));
                return Ok(());
            };
            match state.store.complete_task(&lease, progress, &model).await {
                Ok(done) => {
                    let _ = reply.send(Ok(true));
                    state.let_go(id, Some(done));
                }
                Err(StoreError::LeaseLost) => {
                    tracing::info!(task_id = %id, "the task was cancelled or taken over before its model was registered");
                    state.let_go(id, None);
                    let _ = reply.send(Ok(false));
                }
                Err(StoreError::Duplicate { .. }) => {
                    let _ = reply.send(Ok(false));
                    let message = format!(
                        "the model '{}' ({}) was registered by another upload meanwhile",
                        model.model_tag,
                        model.source.as_str()
                    );
                    let failed = state.store.fail_task(&lease, &message, None).await;
                    state.written(id, failed);
                }
                Err(e) => {
                    // Whether the transaction committed is unknown: the
                    // worker keeps the files (a DONE task must have them).
                    tracing::error!(task_id = %id, error = %e, "could not register a finished model");
                    let _ = reply.send(Err(AppError::internal(&e)));
                    let message = "the model could not be registered in the database";
                    let failed = state.store.fail_task(&lease, message, None).await;
                    state.written(id, failed);
                }
            }
        }
        RegistryMsg::Failed { id, message, code } => {
            if let Some(lease) = state.held.get(&id).map(|h| h.lease.clone()) {
                let failed = state
                    .store
                    .fail_task(&lease, &message, code.as_deref())
                    .await;
                state.written(id, failed);
            }
        }
        RegistryMsg::RetryLater { id, backoff } => {
            if let Some(held) = state.held.get(&id) {
                let (lease, progress) = (held.lease.clone(), held.task.progress);
                let waiting = state.store.retry_later(&lease, backoff, progress).await;
                state.written(id, waiting);
            }
        }
        RegistryMsg::Release { id } => {
            if let Some(held) = state.held.get(&id) {
                let (lease, progress) = (held.lease.clone(), held.task.progress);
                let released = state.store.release(&lease, progress, None).await;
                state.written(id, released);
            }
        }
        RegistryMsg::Heartbeat { reply } => {
            renew_leases(state).await;
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

/// Renews every held lease, saving progress that moved. A lease that is
/// gone (cancelled on another node, or taken over after this node stalled)
/// stops its worker.
async fn renew_leases(state: &mut RegistryState) {
    let renewals = state.held.iter().map(|(id, held)| {
        let progress = held.dirty.then_some(held.task.progress);
        let (store, lease, duration) = (&state.store, held.lease.clone(), state.lease);
        async move { (*id, store.renew(&lease, duration, progress).await) }
    });
    let renewed = futures_util::future::join_all(renewals).await;
    for (id, outcome) in renewed {
        match outcome {
            Ok(true) => {
                if let Some(held) = state.held.get_mut(&id) {
                    held.dirty = false;
                }
            }
            // Gone: cancelled on another node, or taken over after this
            // node stalled.
            Ok(false) => {
                tracing::info!(task_id = %id, "the task's lease is gone; stopping its worker");
                let now = state.store.get_task(id).await.ok().flatten();
                state.let_go(id, now);
                let _ = state.supervisor.cast(SupervisorMsg::LeaseLost(id));
            }
            // The database did not answer: try again at the next beat; the
            // lease lapses if this goes on, and another node takes over.
            Err(e) => tracing::warn!(task_id = %id, error = %e, "could not renew a lease"),
        }
    }
}

/// Cancels in the database (any node may hold the task), then lets the
/// holder stop: this node's supervisor when the task is held here, the
/// other node at its next heartbeat otherwise.
async fn cancel(
    state: &mut RegistryState,
    id: Uuid,
    reply: RpcReplyPort<Result<UploadTask, AppError>>,
) -> Result<(), ActorProcessingErr> {
    // Read first, as a hint of who to wait for: a task another node runs
    // removes its own files; a waiting one has no worker to do it.
    let before = state.store.get_task(id).await.ok().flatten();
    let cancelled = match state.store.cancel_task(id).await {
        Ok(Some(task)) => task,
        Ok(None) => {
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
        }
        Err(e) => {
            let _ = reply.send(Err(store_failure(e)));
            return Ok(());
        }
    };
    let held_here = state.held.contains_key(&id);
    state.let_go(id, Some(cancelled.clone()));
    if held_here {
        state.supervisor.cast(SupervisorMsg::Cancel {
            task: Box::new(cancelled),
            reply,
        })?;
    } else {
        let running_elsewhere =
            before.is_some_and(|t| t.task_status == crate::store::TaskStatus::Running);
        let files = state.files.clone();
        tokio::spawn(async move {
            if running_elsewhere {
                await_staging_removed(&files, id).await;
            }
            let _ =
                tokio::task::spawn_blocking(move || files.remove_task_staging_anywhere(id)).await;
            let _ = reply.send(Ok(cancelled));
        });
    }
    Ok(())
}

/// Waits, up to `CANCEL_ANSWER`, for the node running a cancelled task to
/// remove its staging folder (it sees the cancel at its next heartbeat).
async fn await_staging_removed(files: &ModelFiles, id: Uuid) {
    let deadline = tokio::time::Instant::now() + CANCEL_ANSWER;
    while files.has_staging_anywhere(id) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
