//! The actors that run uploads: `TaskRegistry` (task state, the only
//! writer), `UploadSupervisor` (queue, concurrency, retries) and one
//! `UploadWorker` per attempt; and `TaskPruner`, which deletes finished
//! tasks past their retention. `Actors` is the handle the API holds.

pub mod cache;
pub mod pruner;
pub mod registry;
pub mod supervisor;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef, RpcReplyPort};
use tokio::sync::broadcast;

use crate::error::AppError;
use crate::metrics::Metrics;
use crate::sources::github::GitHub;
use crate::sources::huggingface::HfHub;
use crate::store::files::ModelFiles;
use crate::store::{Store, UploadTask};
pub use cache::TaskCache;
pub use registry::{RegistryArgs, RegistryMsg, TaskRegistry};
pub use supervisor::SupervisorMsg;

/// What workers need to do their job: the database, the model store's
/// layout, the upstream clients, and the node's metrics.
pub struct Fetchers {
    pub store: Store,
    pub files: ModelFiles,
    pub hub: HfHub,
    pub github: GitHub,
    pub metrics: Arc<Metrics>,
}

/// The running actor system, as the API and shutdown see it.
#[derive(Clone)]
pub struct Actors {
    pub registry: ActorRef<RegistryMsg>,
    /// Tasks as the registry last recorded them, readable without a message.
    pub cache: Arc<TaskCache>,
    events: broadcast::Sender<UploadTask>,
}

/// How long the API waits for the registry before answering 500.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

impl Actors {
    /// Starts the registry (which starts the supervisor and resumes
    /// unfinished tasks).
    pub async fn start(args: RegistryArgs) -> anyhow::Result<Self> {
        let events = args.events.clone();
        let cache = args.cache.clone();
        let (registry, _) = Actor::spawn(None, TaskRegistry, args).await?;
        Ok(Self {
            registry,
            cache,
            events,
        })
    }

    /// A new broadcast channel for task events, sized for a burst of progress.
    pub fn event_channel() -> broadcast::Sender<UploadTask> {
        broadcast::channel(1024).0
    }

    /// Every change of every task from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<UploadTask> {
        self.events.subscribe()
    }

    /// Sends a request to the registry and waits for its answer.
    pub async fn ask<T: Send + 'static>(
        &self,
        message: impl FnOnce(RpcReplyPort<Result<T, AppError>>) -> RegistryMsg,
    ) -> Result<T, AppError> {
        match self.registry.call(message, Some(ASK_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(answer)) => answer,
            Ok(_) => Err(AppError::internal(
                "the task registry did not answer in time",
            )),
            Err(e) => Err(AppError::internal(format!(
                "the task registry is not running: {e}"
            ))),
        }
    }

    /// Whether the registry is alive.
    pub fn is_running(&self) -> bool {
        self.registry.get_status() == ractor::ActorStatus::Running
    }

    /// Stops as `kill -9` would as far as the database can tell: the
    /// registry dies at once (no lease renewed or given back, no progress
    /// saved) and the workers stop, keeping their partial files, so other
    /// nodes take the tasks over when the leases lapse. Tests run several
    /// nodes in one process and "crash" one this way.
    pub async fn halt(&self) {
        let supervisor = self
            .registry
            .call(
                |reply| RegistryMsg::Supervisor { reply },
                Some(Duration::from_secs(1)),
            )
            .await;
        if let Ok(ractor::rpc::CallResult::Success(supervisor)) = supervisor {
            let _ = supervisor.cast(SupervisorMsg::Halt);
        }
        self.registry.kill();
    }

    /// Graceful stop: running workers stop at a resumable point (partial
    /// files kept, tasks left unfinished in the database for the next
    /// start), progress is persisted, then the actors stop. Bounded by `within`.
    pub async fn shutdown(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let drained = async {
            let supervisor = self
                .registry
                .call(|reply| RegistryMsg::Supervisor { reply }, Some(within))
                .await;
            if let Ok(ractor::rpc::CallResult::Success(supervisor)) = supervisor {
                let _ = supervisor.call(SupervisorMsg::Drain, Some(within)).await;
            }
            let _ = self
                .registry
                .call(
                    |reply| RegistryMsg::Heartbeat { reply: Some(reply) },
                    Some(within),
                )
                .await;
        };
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            tracing::warn!(
                "workers did not stop in time; unfinished tasks resume at the next start"
            );
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = self
            .registry
            .stop_and_wait(None, Some(left.max(Duration::from_millis(500))))
            .await;
    }
}
