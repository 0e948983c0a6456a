//! `TaskCache`: a read-only copy of tasks for the status route — the tasks
//! this node runs, and the most recently finished or read ones (finished
//! tasks never change, so any node may cache them — for `FINISHED_FRESH`
//! only, since any node may delete them). Only the registry writes it, at
//! the moment it changes its own view, and a deletion removes what it
//! deleted; HTTP handlers read it without a round trip through the
//! registry's mailbox, so status polling scales with the cores rather than
//! with one actor.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::store::UploadTask;

/// Finished tasks kept; older ones are read from the database again.
const FINISHED_KEPT: usize = 10_000;

/// How long a finished task is answered from the cache: after that it is
/// read from the database again, so a deletion on another node shows here
/// within this time.
const FINISHED_FRESH: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct TaskCache {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Each task with the time it was cached.
    tasks: HashMap<Uuid, (UploadTask, Instant)>,
    /// Finished tasks in the order they were cached, for eviction.
    finished: VecDeque<Uuid>,
}

impl TaskCache {
    pub fn get(&self, id: Uuid) -> Option<UploadTask> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let (task, cached_at) = inner.tasks.get(&id)?;
        let stale = task.task_status.is_terminal() && cached_at.elapsed() > FINISHED_FRESH;
        (!stale).then(|| task.clone())
    }

    /// Drops tasks that were deleted.
    pub(crate) fn forget_deleted(&self, ids: &[Uuid]) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            inner.tasks.remove(id);
        }
    }

    /// Drops an unfinished task this node no longer holds: another node may
    /// change it now, so its status is read from the database again.
    pub(crate) fn forget_live(&self, id: Uuid) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner
            .tasks
            .get(&id)
            .is_some_and(|(t, _)| !t.task_status.is_terminal())
        {
            inner.tasks.remove(&id);
        }
    }

    /// Records the task as the registry now sees it: a task this node
    /// holds, or a finished one (which never changes again).
    pub(crate) fn put(&self, task: &UploadTask) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let was_finished = inner
            .tasks
            .get(&task.task_id)
            .is_some_and(|(t, _)| t.task_status.is_terminal());
        if was_finished && !task.task_status.is_terminal() {
            // A finished task never changes: a late view of it running is stale.
            return;
        }
        let finished_now = task.task_status.is_terminal();
        if !finished_now && task.lease_owner.is_none() {
            // Waiting: any node may claim it next, so it is not cached.
            inner.tasks.remove(&task.task_id);
            return;
        }
        inner
            .tasks
            .insert(task.task_id, (task.clone(), Instant::now()));
        if finished_now && !was_finished {
            inner.finished.push_back(task.task_id);
            while inner.finished.len() > FINISHED_KEPT {
                if let Some(old) = inner.finished.pop_front() {
                    inner.tasks.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Source, TaskStatus, UploadRequest};

    fn task() -> UploadTask {
        let request = UploadRequest {
            repo: "a/b".into(),
            revision: "main".into(),
            allow_patterns: vec![],
        };
        UploadTask::new(Source::Huggingface, "a/b@main".into(), request)
    }

    #[test]
    fn unfinished_tasks_stay_and_finished_ones_are_bounded() {
        let cache = TaskCache::default();
        let mut running = task();
        running.task_status = TaskStatus::Running;
        running.lease_owner = Some("n1".into());
        cache.put(&running);
        for _ in 0..FINISHED_KEPT + 5 {
            let mut done = task();
            done.task_status = TaskStatus::Done;
            cache.put(&done);
        }
        assert!(cache.get(running.task_id).is_some());
        assert_eq!(cache.inner.read().unwrap().tasks.len(), FINISHED_KEPT + 1);
        cache.forget_live(running.task_id);
        assert!(cache.get(running.task_id).is_none());
    }
}
