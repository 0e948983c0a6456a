//! `UploadSupervisor`: keeps the FIFO queue of tasks, runs at most
//! `max_concurrent_tasks` workers (one `UploadWorker` per attempt, spawned
//! linked), and owns the retry policy: a worker that fails is a transient
//! failure, retried after an exponential backoff with jitter until the task
//! has made `MAX_ATTEMPTS` attempts. It never sleeps in a handler: a retry
//! is a message scheduled with `send_after`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Fetchers;
use super::registry::RegistryMsg;
use super::worker::{UploadWorker, WorkerArgs};
use crate::error::AppError;
use crate::store::UploadTask;

/// The first attempt and three retries.
pub const MAX_ATTEMPTS: u32 = 4;

/// Longest a cancel waits for its worker to stop before it is answered
/// anyway (the contract is 5 s; blocking work stops at its next checkpoint).
const CANCEL_ANSWER: Duration = Duration::from_secs(4);

pub enum SupervisorMsg {
    /// A new or recovered task; it waits its turn.
    Enqueue(Box<UploadTask>),
    /// The registry has marked the task CANCELLED; stop its work, remove its
    /// partial files, then answer.
    Cancel {
        task: Box<UploadTask>,
        reply: CancelReply,
    },
    /// The backoff of a task is over.
    RetryDue(Uuid),
    /// A cancelled task's worker has not stopped within `CANCEL_ANSWER`:
    /// answer the cancel now; its files go when the worker does.
    CancelOverdue(Uuid),
    /// Shutdown: start nothing more, let running workers stop at a point
    /// they can resume from (partial files kept), answer when none runs.
    Drain(RpcReplyPort<()>),
}

pub struct UploadSupervisor;

/// Where the answer to a cancel goes.
type CancelReply = RpcReplyPort<Result<UploadTask, AppError>>;

pub struct SupervisorArgs {
    pub registry: ActorRef<RegistryMsg>,
    pub fetchers: Arc<Fetchers>,
    pub max_concurrent_tasks: usize,
    pub retry_base: Duration,
}

struct Running {
    task: UploadTask,
    cancel: CancellationToken,
    /// Set when the user cancelled: remove the task's files once the worker
    /// is gone, and answer the cancel (with the task as the registry
    /// recorded it) then or at `CancelOverdue`, whichever comes first.
    cancelled: Option<(Option<CancelReply>, Box<UploadTask>)>,
}

pub struct SupervisorState {
    args: SupervisorArgs,
    queue: VecDeque<UploadTask>,
    backing_off: HashMap<Uuid, UploadTask>,
    running: HashMap<ActorId, Running>,
    /// Set by `Drain`: no worker starts any more.
    shutting_down: bool,
    /// Answered once the last worker has stopped.
    drained: Option<RpcReplyPort<()>>,
}

impl SupervisorState {
    /// Starts queued tasks while there is room.
    async fn start_ready(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        while !self.shutting_down && self.running.len() < self.args.max_concurrent_tasks {
            let Some(mut task) = self.queue.pop_front() else {
                break;
            };
            task.attempts += 1;
            self.args.registry.cast(RegistryMsg::AttemptStarted {
                id: task.task_id,
                attempt: task.attempts,
            })?;
            let cancel = CancellationToken::new();
            let worker_args = WorkerArgs {
                task: task.clone(),
                registry: self.args.registry.clone(),
                fetchers: self.args.fetchers.clone(),
                cancel: cancel.clone(),
            };
            let (worker, _) =
                Actor::spawn_linked(None, UploadWorker, worker_args, myself.get_cell()).await?;
            tracing::info!(task_id = %task.task_id, attempt = task.attempts, "attempt started");
            self.running.insert(
                worker.get_id(),
                Running {
                    task,
                    cancel,
                    cancelled: None,
                },
            );
        }
        Ok(())
    }

    /// The backoff before retry number `attempts` (1 after the first failure):
    /// base × 2^(attempts-1), plus up to half of it again as jitter.
    fn backoff(&self, attempts: u32) -> Duration {
        let exp = self
            .args
            .retry_base
            .saturating_mul(1 << attempts.saturating_sub(1).min(16));
        let jitter = rand::rng().random_range(0..=exp.as_millis() as u64 / 2);
        exp + Duration::from_millis(jitter)
    }

    /// A worker stopped; what happens next depends on how.
    fn worker_exited(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: ActorId,
        failure: Option<String>,
    ) {
        let Some(running) = self.running.remove(&id) else {
            return;
        };
        let task = running.task;
        if let Some((reply, cancelled)) = running.cancelled {
            self.remove_staging_then(task.task_id, move || {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(*cancelled));
                }
            });
            return;
        }
        let Some(cause) = failure else { return };
        if self.shutting_down {
            return; // interrupted by shutdown: resumed at the next start
        }
        if task.attempts < MAX_ATTEMPTS {
            let delay = self.backoff(task.attempts);
            tracing::warn!(task_id = %task.task_id, attempt = task.attempts, ?delay, error = %cause, "attempt failed; retrying");
            crate::metrics::RETRIES.inc();
            let task_id = task.task_id;
            let _ = self
                .args
                .registry
                .cast(RegistryMsg::RetryWaiting { id: task_id });
            self.backing_off.insert(task_id, task);
            myself.send_after(delay, move || SupervisorMsg::RetryDue(task_id));
        } else {
            tracing::warn!(task_id = %task.task_id, error = %cause, "attempt failed; no retry left");
            let message = format!("{cause} (gave up after {} attempts)", task.attempts);
            let (registry, id) = (self.args.registry.clone(), task.task_id);
            // FAILED is recorded once the partial files are gone.
            self.remove_staging_then(id, move || {
                let _ = registry.cast(RegistryMsg::Failed { id, message });
            });
        }
    }

    /// Removes a task's staging folder off the actor (gigabytes of partial
    /// files take a while), then runs `then`.
    fn remove_staging_then(&self, task_id: Uuid, then: impl FnOnce() + Send + 'static) {
        let files = self.args.fetchers.files.clone();
        tokio::task::spawn_blocking(move || {
            files.remove_task_staging(task_id);
            then();
        });
    }

    fn answer_drain_when_idle(&mut self) {
        if self.running.is_empty()
            && let Some(reply) = self.drained.take()
        {
            let _ = reply.send(());
        }
    }
}

impl Actor for UploadSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            args,
            queue: VecDeque::new(),
            backing_off: HashMap::new(),
            running: HashMap::new(),
            shutting_down: false,
            drained: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Enqueue(task) => state.queue.push_back(*task),
            SupervisorMsg::RetryDue(id) => {
                if let Some(task) = state.backing_off.remove(&id) {
                    // A retry keeps its place ahead of tasks that came later.
                    state.queue.push_front(task);
                }
            }
            SupervisorMsg::Cancel { task, reply } => {
                let id = task.task_id;
                let running = state.running.values_mut().find(|r| r.task.task_id == id);
                if let Some(running) = running {
                    running.cancel.cancel();
                    running.cancelled = Some((Some(reply), task));
                    myself.send_after(CANCEL_ANSWER, move || SupervisorMsg::CancelOverdue(id));
                } else {
                    state.queue.retain(|t| t.task_id != id);
                    state.backing_off.remove(&id);
                    state.remove_staging_then(id, move || {
                        let _ = reply.send(Ok(*task));
                    });
                }
            }
            SupervisorMsg::CancelOverdue(id) => {
                let overdue = state
                    .running
                    .values_mut()
                    .filter(|r| r.task.task_id == id)
                    .filter_map(|r| r.cancelled.as_mut())
                    .find_map(|(reply, task)| reply.take().map(|reply| (reply, task.clone())));
                if let Some((reply, task)) = overdue {
                    tracing::warn!(task_id = %id, "the cancelled worker is still stopping; answering the cancel now");
                    let _ = reply.send(Ok(*task));
                }
            }
            SupervisorMsg::Drain(reply) => {
                state.shutting_down = true;
                state.drained = Some(reply);
                for running in state.running.values() {
                    running.cancel.cancel();
                }
                state.answer_drain_when_idle();
            }
        }
        state.start_ready(&myself).await
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.worker_exited(&myself, cell.get_id(), None)
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                state.worker_exited(&myself, cell.get_id(), Some(err.to_string()))
            }
            SupervisionEvent::ActorStarted(_) => {}
            other => tracing::debug!(event = ?other, "supervisor event ignored"),
        }
        state.answer_drain_when_idle();
        state.start_ready(&myself).await
    }
}
