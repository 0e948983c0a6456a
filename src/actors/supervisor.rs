//! `UploadSupervisor`: claims tasks from the database while this node has
//! room (`max_concurrent_tasks` workers, one `UploadWorker` per attempt,
//! spawned linked), and owns the retry policy: a worker that fails is a
//! transient failure, retried after an exponential backoff with jitter
//! until the task has made `MAX_ATTEMPTS` attempts. The queue is the
//! database — oldest claimable task first, on whichever node has room — and
//! a retry's backoff is a time written there, so any node can run it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Fetchers;
use super::registry::RegistryMsg;
use super::worker::{UploadWorker, WorkerArgs};
use crate::error::{AppError, ErrorCode, FailureCode};
use crate::sources::SourceError;
use crate::store::{Lease, UploadTask};

/// The first attempt and three retries.
pub const MAX_ATTEMPTS: u32 = 4;

/// Longest a cancel waits for its worker to stop before it is answered
/// anyway (the contract is 5 s; blocking work stops at its next checkpoint).
pub(crate) const CANCEL_ANSWER: Duration = Duration::from_secs(4);

/// How often an idle node looks for work; a submit on this node, and every
/// worker that ends, look at once.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// How often a node queues retries whose backoff has passed and looks for
/// tasks whose last attempt died with its node.
const REAP_EVERY: Duration = Duration::from_millis(250);

pub enum SupervisorMsg {
    /// Look for claimable tasks (a timer, a submit, a worker that ended).
    Poll,
    /// The registry has marked the task CANCELLED; stop its work, remove its
    /// partial files, then answer.
    Cancel {
        task: Box<UploadTask>,
        reply: CancelReply,
    },
    /// The task's lease is gone (cancelled on another node, or taken
    /// over): stop its worker and drop this node's copy of its files.
    LeaseLost(Uuid),
    /// A cancelled task's worker has not stopped within `CANCEL_ANSWER`:
    /// answer the cancel now; its files go when the worker does.
    CancelOverdue(Uuid),
    /// Shutdown: claim nothing more, let running workers stop at a point
    /// they can resume from (partial files kept), answer when none runs.
    Drain(RpcReplyPort<()>),
    /// Stop as a crash would: claim nothing more, stop the workers, and
    /// give nothing back — other nodes take the tasks over once their
    /// leases lapse. For tests of takeover in one process.
    Halt,
}

pub struct UploadSupervisor;

/// Where the answer to a cancel goes.
type CancelReply = RpcReplyPort<Result<UploadTask, AppError>>;

pub struct SupervisorArgs {
    pub registry: ActorRef<RegistryMsg>,
    pub fetchers: Arc<Fetchers>,
    pub node: String,
    pub lease: Duration,
    pub max_concurrent_tasks: usize,
    pub retry_base: Duration,
}

/// Why a running worker is being stopped.
enum Stopping {
    /// The user cancelled: remove the task's files once the worker is gone,
    /// and answer the cancel (with the task as recorded) then or at
    /// `CancelOverdue`, whichever comes first.
    Cancelled(Option<CancelReply>, Box<UploadTask>),
    /// The lease is gone; the files are no longer this node's.
    LeaseLost,
}

struct Running {
    task: UploadTask,
    cancel: CancellationToken,
    stopping: Option<Stopping>,
}

pub struct SupervisorState {
    args: SupervisorArgs,
    running: HashMap<ActorId, Running>,
    /// Set by `Drain`: no worker starts any more.
    shutting_down: bool,
    /// Set by `Halt`: nothing is claimed or written any more.
    halted: bool,
    /// When this node last looked for interrupted tasks.
    reaped_at: Option<tokio::time::Instant>,
    /// Answered once the last worker has stopped.
    drained: Option<RpcReplyPort<()>>,
}

impl SupervisorState {
    /// Claims tasks while there is room.
    async fn claim_ready(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if self.shutting_down || self.halted || self.running.len() >= self.args.max_concurrent_tasks
        {
            return Ok(());
        }
        let store = self.args.fetchers.store.clone();
        if self.reaped_at.is_none_or(|at| at.elapsed() >= REAP_EVERY) {
            self.reaped_at = Some(tokio::time::Instant::now());
            if let Err(e) = store.promote_due_retries().await {
                tracing::warn!(error = %e, "could not queue the retries that are due");
            }
            self.fail_interrupted().await?;
        }
        while self.running.len() < self.args.max_concurrent_tasks {
            let claimed = store
                .claim_next(&self.args.node, self.args.lease, MAX_ATTEMPTS)
                .await;
            let (task, lease) = match claimed {
                Ok(Some(claimed)) => claimed,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim a task; trying again shortly");
                    break;
                }
            };
            if self.running_task(task.task_id).is_some() {
                // This node's own task, whose lease lapsed (the database was
                // out of reach) while its worker still runs or stops: one
                // folder, one worker. The claim goes back, unclaimable for
                // a lease: by then the registry's heartbeat has found the old
                // lease gone and the old worker has stopped and cleaned up.
                let (progress, after) = (task.progress, self.args.lease);
                if let Err(e) = store.release(&lease, progress, Some(after)).await {
                    tracing::warn!(task_id = %task.task_id, error = %e, "could not give back a task claimed twice; its lease will lapse");
                }
                continue;
            }
            self.start_worker(myself, task, lease).await?;
        }
        Ok(())
    }

    /// Ends the tasks whose last attempt died with its node (FAILED
    /// `INTERRUPTED`), removes their partial files, and shows them.
    async fn fail_interrupted(&mut self) -> Result<(), ActorProcessingErr> {
        match self
            .args
            .fetchers
            .store
            .fail_interrupted(MAX_ATTEMPTS)
            .await
        {
            Ok(ended) if !ended.is_empty() => {
                for task in &ended {
                    tracing::warn!(task_id = %task.task_id, "the last attempt died with its node; task failed");
                }
                let ids: Vec<Uuid> = ended.iter().map(|t| t.task_id).collect();
                let files = self.args.fetchers.files.clone();
                tokio::task::spawn_blocking(move || {
                    ids.into_iter()
                        .for_each(|id| files.remove_task_staging_anywhere(id))
                });
                self.args.registry.cast(RegistryMsg::Ended(ended))?;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not look for interrupted tasks"),
        }
        Ok(())
    }

    /// Takes over the task's partial files and starts its attempt.
    async fn start_worker(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        task: UploadTask,
        lease: Lease,
    ) -> Result<(), ActorProcessingErr> {
        let files = self.args.fetchers.files.clone();
        let id = task.task_id;
        tokio::task::spawn_blocking(move || files.adopt_staging(id)).await?;
        self.args.registry.cast(RegistryMsg::Claimed {
            task: Box::new(task.clone()),
            lease: lease.clone(),
        })?;
        let cancel = CancellationToken::new();
        let worker_args = WorkerArgs {
            task: task.clone(),
            lease,
            registry: self.args.registry.clone(),
            fetchers: self.args.fetchers.clone(),
            cancel: cancel.clone(),
        };
        let (worker, _) =
            Actor::spawn_linked(None, UploadWorker, worker_args, myself.get_cell()).await?;
        tracing::info!(task_id = %id, attempt = task.attempts, "attempt started");
        self.running.insert(
            worker.get_id(),
            Running {
                task,
                cancel,
                stopping: None,
            },
        );
        Ok(())
    }

    /// A worker stopped; what happens next depends on how. `failure` is why
    /// and its code, when the attempt failed.
    fn worker_exited(&mut self, id: ActorId, failure: Option<(String, FailureCode)>) {
        let Some(running) = self.running.remove(&id) else {
            return;
        };
        if self.halted {
            return;
        }
        let task = running.task;
        let registry = self.args.registry.clone();
        match running.stopping {
            Some(Stopping::Cancelled(reply, cancelled)) => {
                self.remove_staging_then(task.task_id, move || {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(*cancelled));
                    }
                });
                return;
            }
            Some(Stopping::LeaseLost) => {
                self.remove_staging_then(task.task_id, || {});
                return;
            }
            None => {}
        }
        if self.shutting_down {
            // Cut short by a clean stop: given back, the attempt not counted.
            let _ = registry.cast(RegistryMsg::Release { id: task.task_id });
            return;
        }
        // A normal stop: the worker reported DONE or FAILED itself.
        let Some((cause, code)) = failure else { return };
        if task.attempts < MAX_ATTEMPTS {
            let backoff = backoff(self.args.retry_base, task.attempts);
            tracing::warn!(task_id = %task.task_id, attempt = task.attempts, ?backoff, error = %cause, "attempt failed; retrying");
            self.args.fetchers.metrics.retries.inc();
            let _ = registry.cast(RegistryMsg::RetryLater {
                id: task.task_id,
                backoff,
            });
        } else {
            tracing::warn!(task_id = %task.task_id, error = %cause, "attempt failed; no retry left");
            let message = format!("{cause} (gave up after {} attempts)", task.attempts);
            let id = task.task_id;
            // FAILED is recorded once the partial files are gone.
            self.remove_staging_then(id, move || {
                let _ = registry.cast(RegistryMsg::Failed {
                    id,
                    message,
                    code: Some(code.as_str().to_string()),
                });
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

    fn running_task(&mut self, id: Uuid) -> Option<&mut Running> {
        self.running.values_mut().find(|r| r.task.task_id == id)
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
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        myself.send_interval(POLL_EVERY, || SupervisorMsg::Poll);
        myself.cast(SupervisorMsg::Poll)?;
        Ok(SupervisorState {
            args,
            running: HashMap::new(),
            shutting_down: false,
            halted: false,
            reaped_at: None,
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
            SupervisorMsg::Poll => {}
            SupervisorMsg::Cancel { task, reply } => {
                let id = task.task_id;
                if let Some(running) = state.running_task(id) {
                    running.cancel.cancel();
                    running.stopping = Some(Stopping::Cancelled(Some(reply), task));
                    myself.send_after(CANCEL_ANSWER, move || SupervisorMsg::CancelOverdue(id));
                } else {
                    state.remove_staging_then(id, move || {
                        let _ = reply.send(Ok(*task));
                    });
                }
            }
            SupervisorMsg::LeaseLost(id) => {
                if let Some(running) = state.running_task(id) {
                    running.cancel.cancel();
                    running.stopping.get_or_insert(Stopping::LeaseLost);
                } else {
                    state.remove_staging_then(id, || {});
                }
            }
            SupervisorMsg::CancelOverdue(id) => {
                let overdue = match state.running_task(id).and_then(|r| r.stopping.as_mut()) {
                    Some(Stopping::Cancelled(reply, task)) => {
                        reply.take().map(|reply| (reply, task.clone()))
                    }
                    _ => None,
                };
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
            SupervisorMsg::Halt => {
                state.halted = true;
                for running in state.running.values() {
                    running.cancel.cancel();
                }
            }
        }
        state.claim_ready(&myself).await
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.worker_exited(cell.get_id(), None)
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                // A panic carries no code of its own.
                let code = err.downcast_ref::<SourceError>().map_or(
                    FailureCode::Table(ErrorCode::ServerError),
                    SourceError::code,
                );
                state.worker_exited(cell.get_id(), Some((err.to_string(), code)))
            }
            SupervisionEvent::ActorStarted(_) => {}
            other => tracing::debug!(event = ?other, "supervisor event ignored"),
        }
        state.answer_drain_when_idle();
        state.claim_ready(&myself).await
    }
}

/// The pause before try number `attempts + 1`: base × 2^(attempts-1), plus
/// up to half of it again as jitter, so that retries of many tasks (or
/// webhook notices) that failed together do not come back together.
pub(crate) fn backoff(base: Duration, attempts: u32) -> Duration {
    let exp = base.saturating_mul(1 << attempts.saturating_sub(1).min(16));
    let jitter = rand::rng().random_range(0..=exp.as_millis() as u64 / 2);
    exp + Duration::from_millis(jitter)
}
