//! `TaskPruner`: deletes finished tasks once they are older than the
//! retention (`VECTORIZE_TASK_RETENTION_DAYS`), at the node's start and
//! then at least once an hour — more often for a retention of under a few
//! hours. Every node runs one; a deletion is idempotent, so two nodes
//! pruning at once only share the work. Models are never touched.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::TaskCache;
use crate::store::{FinishedTasks, Store, TaskStatus};

pub struct TaskPruner;

pub struct PrunerArgs {
    pub store: Store,
    pub cache: Arc<TaskCache>,
    /// Finished tasks older than this go.
    pub retention: Duration,
}

pub enum PrunerMsg {
    Prune,
}

/// How often a node prunes: a quarter of the retention, between a second
/// and an hour.
fn prune_every(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

impl Actor for TaskPruner {
    type Msg = PrunerMsg;
    type State = PrunerArgs;
    type Arguments = PrunerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PrunerMsg>,
        args: PrunerArgs,
    ) -> Result<PrunerArgs, ActorProcessingErr> {
        // A closed mailbox means the actor is stopping: nothing to prune.
        let _ = myself.send_message(PrunerMsg::Prune);
        myself.send_interval(prune_every(args.retention), || PrunerMsg::Prune);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<PrunerMsg>,
        _prune: PrunerMsg,
        state: &mut PrunerArgs,
    ) -> Result<(), ActorProcessingErr> {
        let Ok(age) = chrono::Duration::from_std(state.retention) else {
            return Ok(());
        };
        let expired = FinishedTasks {
            statuses: TaskStatus::ALL.to_vec(),
            source: None,
            before: Utc::now() - age,
        };
        match state.store.delete_finished_tasks(&expired).await {
            Ok(deleted) if deleted.is_empty() => {}
            Ok(deleted) => {
                state.cache.forget_deleted(&deleted);
                tracing::info!(
                    count = deleted.len(),
                    retention_days = state.retention.as_secs_f64() / 86_400.0,
                    "pruned finished tasks past their retention"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not prune finished tasks; trying again later")
            }
        }
        Ok(())
    }
}
