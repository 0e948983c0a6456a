//! `TaskCache`: a read-only copy of tasks for the status route — every
//! unfinished task, and the most recently finished or read ones. Only the
//! registry writes it, at the moment it changes its own view; HTTP handlers
//! read it without a round trip through the registry's mailbox, so status
//! polling scales with the cores rather than with one actor.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;

use uuid::Uuid;

use crate::store::UploadTask;

/// Finished tasks kept; older ones are read from the database again.
const FINISHED_KEPT: usize = 10_000;

#[derive(Default)]
pub struct TaskCache {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    tasks: HashMap<Uuid, UploadTask>,
    /// Finished tasks in the order they were cached, for eviction.
    finished: VecDeque<Uuid>,
}

impl TaskCache {
    pub fn get(&self, id: Uuid) -> Option<UploadTask> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .tasks
            .get(&id)
            .cloned()
    }

    /// Records the task as the registry now sees it.
    pub(crate) fn put(&self, task: &UploadTask) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let finished_now = task.task_status.is_terminal();
        let was_finished = inner
            .tasks
            .get(&task.task_id)
            .is_some_and(|t| t.task_status.is_terminal());
        inner.tasks.insert(task.task_id, task.clone());
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
        let running = task();
        cache.put(&running);
        for _ in 0..FINISHED_KEPT + 5 {
            let mut done = task();
            done.task_status = TaskStatus::Done;
            cache.put(&done);
        }
        assert!(cache.get(running.task_id).is_some());
        assert_eq!(cache.inner.read().unwrap().tasks.len(), FINISHED_KEPT + 1);
    }
}
