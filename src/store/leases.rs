//! Task leases: how a node claims a task, keeps it, and writes it while it
//! runs. A claim is one conditional `UPDATE` whose `WHERE` SurrealDB
//! re-checks on the record it writes (snapshot isolation fails the later of
//! two writers of one record, and `Store::retrying` tries again), so no task
//! is ever held by two nodes. Every later write carries the fence — this
//! node and this epoch, still RUNNING — and a write that matches nothing
//! means the lease is gone: the task was cancelled, or another node took it
//! after this one stopped renewing. Times come from the database's clock,
//! so node clocks do not matter.

use std::time::Duration;

use uuid::Uuid;

use super::deliveries::ANNOUNCE;
use super::{LEASE_LOST, ModelRecord, Progress, Query, Store, StoreError, UploadTask, checked};

/// The right of one node to write one running task, at one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub task_id: Uuid,
    pub node: String,
    pub epoch: u64,
}

impl Lease {
    fn of(task: &UploadTask) -> Option<Self> {
        Some(Self {
            task_id: task.task_id,
            node: task.lease_owner.clone()?,
            epoch: task.lease_epoch,
        })
    }
}

/// Tasks a node may claim: running under a lease that lapsed (its node
/// died) with an attempt left — found in the `task_status` index, which
/// holds only the few running tasks — and waiting past their backoff, found
/// in the `queue` table, oldest first (see `store`'s schema). A task in
/// backoff joins the queue when `promote_due_retries` finds it due.
const LAPSED: &str =
    "task_status = 'RUNNING' AND lease_until < time::now() AND attempts < $max_attempts";
const WAITING: &str =
    "task_status = 'PENDING' AND (not_before = NONE OR not_before <= time::now())";

/// The fence every write of a lease holder carries.
pub(super) const FENCE: &str =
    "lease_owner = $node AND lease_epoch = $epoch AND task_status = 'RUNNING'";

/// What a task that is no longer held looks like.
const UNHELD: &str = "lease_owner = NONE, lease_until = NONE";

impl Store {
    /// Claims the oldest claimable task for `node`, counting an attempt, or
    /// answers `None` when nothing is waiting. A task taken over from a
    /// dead node keeps its attempts: the one cut short counted. The new
    /// attempt's progress starts from zero (the contract: progress never
    /// goes back within an attempt).
    pub async fn claim_next(
        &self,
        node: &str,
        lease: Duration,
        max_attempts: u32,
    ) -> Result<Option<(UploadTask, Lease)>, StoreError> {
        let claimed: Option<UploadTask> = self
            .retrying(|| async {
                let response = self
                    .db()
                    .query(format!(
                        "BEGIN TRANSACTION;
                         LET $next = (SELECT VALUE id FROM task WHERE {LAPSED} LIMIT 1)
                             ?: (SELECT VALUE task FROM queue LIMIT 1);
                         UPDATE $next
                         SET task_status = 'RUNNING', lease_owner = $node,
                             lease_until = time::now() + $lease, lease_epoch += 1,
                             attempts += 1, error_msg = NONE, error_code = NONE, not_before = NONE,
                             progress.bytes_done = 0, progress.files_done = 0,
                             started_at = started_at ?? time::now(), updated_at = time::now()
                         WHERE ({LAPSED}) OR ({WAITING})
                         RETURN AFTER;
                         FOR $claimed IN $next {{
                             DELETE type::record('queue', record::id($claimed)) RETURN NONE;
                         }};
                         array::len($next);
                         COMMIT TRANSACTION;"
                    ))
                    .bind(("node", node.to_string()))
                    .bind(("lease", lease))
                    .bind(("max_attempts", max_attempts as i64))
                    .await?;
                let mut response = checked(response)?;
                let mut found: Vec<UploadTask> = response.take(2)?;
                let candidates: Option<u64> = response.take(4)?;
                match found.pop() {
                    // Another node claimed the task this one picked first.
                    None if candidates.unwrap_or(0) > 0 => Err(StoreError::Conflict),
                    claimed => Ok(claimed),
                }
            })
            .await?;
        Ok(claimed.and_then(|task| Lease::of(&task).map(|lease| (task, lease))))
    }

    /// Ends as FAILED `INTERRUPTED` every task whose last attempt was cut
    /// short by a crash (its lease lapsed with no attempt left), and
    /// answers them so their staging folders can go.
    pub async fn fail_interrupted(&self, max_attempts: u32) -> Result<Vec<UploadTask>, StoreError> {
        self.retrying(|| async {
            let response = self
                .announcing_query(
                    format!(
                        "BEGIN TRANSACTION;
                     LET $finished = (UPDATE task SET task_status = 'FAILED',
                         error_code = 'INTERRUPTED', error_msg = $message, {UNHELD},
                         finished_at = time::now(), updated_at = time::now()
                     WHERE task_status = 'RUNNING' AND lease_until < time::now()
                         AND attempts >= $max_attempts
                     RETURN AFTER);
                     {ANNOUNCE};
                     RETURN $finished;
                     COMMIT TRANSACTION;"
                    ),
                    None,
                )
                .bind(("max_attempts", max_attempts as i64))
                .bind((
                    "message",
                    format!(
                        "the node running the last of {max_attempts} attempts stopped without \
                         finishing it; upload the model again"
                    ),
                ))
                .await?;
            Ok(checked(response)?.take(3)?)
        })
        .await
    }

    /// Queues the tasks whose retry backoff has passed. Each node runs this
    /// about every `REAP_EVERY`; the `task_not_before` index finds them.
    pub async fn promote_due_retries(&self) -> Result<(), StoreError> {
        self.retrying(|| async {
            let response = self
                .db()
                .query(
                    "BEGIN TRANSACTION;
                     FOR $due IN (SELECT VALUE id FROM task
                         WHERE not_before != NONE AND not_before <= time::now()
                             AND task_status = 'PENDING') {
                         UPDATE $due SET not_before = NONE RETURN NONE;
                         UPSERT type::record('queue', record::id($due)) SET task = $due RETURN NONE;
                     };
                     COMMIT TRANSACTION;",
                )
                .await?;
            checked(response).map(drop)
        })
        .await
    }

    /// Extends the lease from now, saving `progress` when given. `false`
    /// when the lease is gone.
    pub async fn renew(
        &self,
        lease: &Lease,
        duration: Duration,
        progress: Option<Progress>,
    ) -> Result<bool, StoreError> {
        let set_progress = if progress.is_some() {
            ", progress = $progress, updated_at = time::now()"
        } else {
            ""
        };
        let renewed: Vec<u64> = self
            .fenced(
                lease,
                &format!("lease_until = time::now() + $lease{set_progress}"),
                |q| q.bind(("lease", duration)).bind(("progress", progress)),
                "VALUE lease_epoch",
            )
            .await?;
        Ok(!renewed.is_empty())
    }

    /// Whether `lease` still holds; checked again just before files are
    /// renamed into the store.
    pub async fn holds(&self, lease: &Lease) -> Result<bool, StoreError> {
        let response = self
            .db()
            .query(format!(
                "SELECT VALUE task_id FROM ONLY type::record('task', $id) WHERE {FENCE}"
            ))
            .bind(("id", lease.task_id.to_string()))
            .bind(("node", lease.node.clone()))
            .bind(("epoch", lease.epoch as i64))
            .await?;
        let held: Option<Uuid> = checked(response)?.take(0)?;
        Ok(held.is_some())
    }

    /// Gives the task back after a clean stop: PENDING again, and the
    /// attempt cut short does not count. With `hold_off`, no node claims it
    /// before that has passed: for a claim this node must not run yet (its
    /// old worker of the same task is still stopping).
    pub async fn release(
        &self,
        lease: &Lease,
        progress: Progress,
        hold_off: Option<Duration>,
    ) -> Result<Option<UploadTask>, StoreError> {
        self.fenced_task(
            lease,
            &format!(
                "task_status = 'PENDING', {UNHELD}, attempts -= 1, progress = $progress, \
                 not_before = IF $hold_off THEN time::now() + $hold_off ELSE NONE END, \
                 updated_at = time::now()"
            ),
            |q| q.bind(("progress", progress)).bind(("hold_off", hold_off)),
        )
        .await
    }

    /// Gives the task back after a failed attempt; no node claims it before
    /// `backoff` has passed.
    pub async fn retry_later(
        &self,
        lease: &Lease,
        backoff: Duration,
        progress: Progress,
    ) -> Result<Option<UploadTask>, StoreError> {
        self.fenced_task(
            lease,
            &format!(
                "task_status = 'PENDING', {UNHELD}, not_before = time::now() + $backoff, \
                 progress = $progress, updated_at = time::now()"
            ),
            |q| q.bind(("backoff", backoff)).bind(("progress", progress)),
        )
        .await
    }

    /// Ends the task as FAILED, announcing it in the same transaction.
    pub async fn fail_task(
        &self,
        lease: &Lease,
        message: &str,
        code: Option<&str>,
    ) -> Result<Option<UploadTask>, StoreError> {
        self.retrying(|| async {
            let response = self
                .announcing_query(
                    format!(
                        "BEGIN TRANSACTION;
                     LET $finished = (UPDATE type::record('task', $id)
                         SET task_status = 'FAILED', error_msg = $message, error_code = $code,
                             {UNHELD}, finished_at = time::now(), updated_at = time::now()
                         WHERE {FENCE} RETURN AFTER);
                     {ANNOUNCE};
                     RETURN $finished;
                     COMMIT TRANSACTION;"
                    ),
                    None,
                )
                .bind(("id", lease.task_id.to_string()))
                .bind(("node", lease.node.clone()))
                .bind(("epoch", lease.epoch as i64))
                .bind(("message", message.to_string()))
                .bind(("code", code.map(str::to_string)))
                .await?;
            let mut failed: Vec<UploadTask> = checked(response)?.take(3)?;
            Ok(failed.pop())
        })
        .await
    }

    /// Marks the task DONE and registers its model in one transaction that
    /// throws when the lease is gone: a node that lost its lease cannot
    /// register a model. `StoreError::Duplicate` when the model exists.
    /// Answers the task as it is now.
    pub async fn complete_task(
        &self,
        lease: &Lease,
        progress: Progress,
        model: &ModelRecord,
    ) -> Result<UploadTask, StoreError> {
        let finished = Progress {
            bytes_done: progress.bytes_total,
            files_done: progress.files_total,
            ..progress
        };
        self.retrying(|| async {
            let response = self
                .announcing_query(
                    format!(
                        "BEGIN TRANSACTION;
                     LET $finished = (UPDATE type::record('task', $id)
                         SET task_status = 'DONE', model_id = $model_id, {UNHELD},
                             progress = $progress,
                             finished_at = time::now(), updated_at = time::now()
                         WHERE {FENCE} RETURN AFTER);
                     IF array::len($finished) = 0 {{ THROW '{LEASE_LOST}' }};
                     CREATE type::record('model', $model_key) CONTENT $model RETURN NONE;
                     {ANNOUNCE};
                     RETURN $finished[0];
                     COMMIT TRANSACTION;"
                    ),
                    Some(model),
                )
                .bind(("id", lease.task_id.to_string()))
                .bind(("node", lease.node.clone()))
                .bind(("epoch", lease.epoch as i64))
                .bind(("progress", finished))
                .bind(("model_id", model.model_id))
                .bind(("model_key", model.model_id.to_string()))
                .await?;
            let done: Option<UploadTask> = checked(response)?.take(5)?;
            done.ok_or_else(|| StoreError::Refused("the completion returned no task".into()))
        })
        .await
    }

    /// Cancels a PENDING or RUNNING task: CANCELLED (`error_code`
    /// `CANCELLED`), with its epoch bumped so that the holder's next write fails. `None` when the task is not in
    /// flight (finished, or unknown).
    pub async fn cancel_task(&self, id: Uuid) -> Result<Option<UploadTask>, StoreError> {
        self.retrying(|| async {
            let response = self
                .announcing_query(
                    format!(
                        "BEGIN TRANSACTION;
                     LET $finished = (UPDATE type::record('task', $id)
                         SET task_status = 'CANCELLED', lease_epoch += 1, {UNHELD},
                             error_code = 'CANCELLED',
                             error_msg = 'the task was cancelled by a client',
                             finished_at = time::now(), updated_at = time::now()
                         WHERE task_status IN ['PENDING', 'RUNNING']
                         RETURN AFTER);
                     DELETE type::record('queue', $id) RETURN NONE;
                     {ANNOUNCE};
                     RETURN $finished;
                     COMMIT TRANSACTION;"
                    ),
                    None,
                )
                .bind(("id", id.to_string()))
                .await?;
            let mut found: Vec<UploadTask> = checked(response)?.take(4)?;
            Ok(found.pop())
        })
        .await
    }

    /// At a node's start: leases a previous process of the same node id
    /// left behind lapse now, so any node can take their tasks up (the
    /// attempts they cut short count, as after any crash).
    pub async fn lapse_leases_of(&self, node: &str) -> Result<(), StoreError> {
        self.retrying(|| async {
            let response = self
                .db()
                .query(
                    "UPDATE task SET lease_until = time::now()
                     WHERE task_status = 'RUNNING' AND lease_owner = $node RETURN NONE",
                )
                .bind(("node", node.to_string()))
                .await?;
            checked(response).map(drop)
        })
        .await
    }

    /// At the start of the only process that can open an embedded
    /// database: every lease in it is a previous process' (crashed) one.
    pub async fn lapse_all_leases(&self) -> Result<(), StoreError> {
        self.retrying(|| async {
            let response = self
                .db()
                .query(
                    "UPDATE task SET lease_until = time::now()
                     WHERE task_status = 'RUNNING' RETURN NONE",
                )
                .await?;
            checked(response).map(drop)
        })
        .await
    }

    /// A fenced write of the task, answering it as written (`None` when the
    /// lease is gone).
    async fn fenced_task(
        &self,
        lease: &Lease,
        set: &str,
        bind: impl Fn(Query<'_>) -> Query<'_>,
    ) -> Result<Option<UploadTask>, StoreError> {
        let written: Vec<UploadTask> = self.fenced(lease, set, bind, "AFTER").await?;
        Ok(written.into_iter().next())
    }

    /// `UPDATE` of the leased task with `set`, only while the fence holds.
    async fn fenced<T: surrealdb::types::SurrealValue>(
        &self,
        lease: &Lease,
        set: &str,
        bind: impl Fn(Query<'_>) -> Query<'_>,
        returning: &str,
    ) -> Result<Vec<T>, StoreError> {
        self.retrying(|| async {
            let query = self
                .db()
                .query(format!(
                    "BEGIN TRANSACTION;
                     UPDATE type::record('task', $id) SET {set} WHERE {FENCE} RETURN {returning};
                     LET $now = (SELECT task_status, not_before FROM ONLY type::record('task', $id));
                     IF $now.task_status = 'PENDING' AND $now.not_before = NONE {{
                         UPSERT type::record('queue', $id) SET task = type::record('task', $id)
                             RETURN NONE;
                     }};
                     COMMIT TRANSACTION;"
                ))
                .bind(("id", lease.task_id.to_string()))
                .bind(("node", lease.node.clone()))
                .bind(("epoch", lease.epoch as i64));
            let response = bind(query).await?;
            Ok(checked(response)?.take(1)?)
        })
        .await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::{DbOptions, Source, TaskStatus, UploadRequest};

    pub(crate) fn task(tag: &str) -> UploadTask {
        let request = UploadRequest {
            repo: "a/b".into(),
            revision: "main".into(),
            allow_patterns: vec![],
        };
        UploadTask::new(Source::Huggingface, tag.into(), request)
    }

    pub(crate) async fn store() -> Store {
        Store::open(&DbOptions::embedded("mem://")).await.unwrap()
    }

    const LEASE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_claim_holds_until_released_and_fences_the_old_epoch() {
        let store = store().await;
        store.submit_task(&task("a@main")).await.unwrap().unwrap();
        let (claimed, lease) = store.claim_next("n1", LEASE, 4).await.unwrap().unwrap();
        assert_eq!(claimed.task_status, TaskStatus::Running);
        assert_eq!(claimed.attempts, 1);
        assert_eq!(lease.epoch, 1);
        assert!(store.claim_next("n2", LEASE, 4).await.unwrap().is_none());
        assert!(store.renew(&lease, LEASE, None).await.unwrap());
        store
            .release(&lease, Progress::default(), None)
            .await
            .unwrap()
            .unwrap();
        let (again, second) = store.claim_next("n2", LEASE, 4).await.unwrap().unwrap();
        assert_eq!(again.attempts, 1, "a clean stop does not count");
        assert_eq!(second.epoch, 2);
        assert!(!store.renew(&lease, LEASE, None).await.unwrap());
        assert!(store.fail_task(&lease, "x", None).await.unwrap().is_none());
        assert!(!store.holds(&lease).await.unwrap());
        assert!(store.holds(&second).await.unwrap());
    }

    /// A claim given back with a hold-off (its node still stops an old
    /// worker of the task) waits that long, and its attempt does not count.
    #[tokio::test]
    async fn a_held_off_release_is_claimable_only_when_due() {
        let store = store().await;
        store.submit_task(&task("h@main")).await.unwrap().unwrap();
        let (_, lease) = store.claim_next("n1", LEASE, 4).await.unwrap().unwrap();
        let hold_off = Some(Duration::from_millis(300));
        let released = store.release(&lease, Progress::default(), hold_off);
        let released = released.await.unwrap().unwrap();
        assert_eq!(released.task_status, TaskStatus::Pending);
        assert!(released.not_before.is_some(), "{released:?}");
        store.promote_due_retries().await.unwrap();
        assert!(store.claim_next("n2", LEASE, 4).await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(400)).await;
        store.promote_due_retries().await.unwrap();
        let (again, _) = store.claim_next("n2", LEASE, 4).await.unwrap().unwrap();
        assert_eq!(again.attempts, 1, "the given-back claim does not count");
    }
}

#[cfg(test)]
mod races {
    use std::collections::HashSet;

    use super::tests::{store, task};
    use super::*;

    /// Several nodes' claim loops on one database race for 1,000 tasks:
    /// every task is claimed exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_claimers_take_each_task_exactly_once() {
        const TASKS: usize = 1_000;
        let store = store().await;
        for i in 0..TASKS {
            store
                .submit_task(&task(&format!("m{i}@main")))
                .await
                .unwrap()
                .unwrap();
        }
        let t0 = std::time::Instant::now();
        let claimers = (0..4).map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut claimed = Vec::new();
                loop {
                    // A claim that keeps losing is tried again, as the
                    // supervisor does at its next poll.
                    let (task, lease) = match store
                        .claim_next(&format!("n{n}"), Duration::from_secs(60), 4)
                        .await
                    {
                        Ok(Some(claimed)) => claimed,
                        Ok(None) => break,
                        Err(StoreError::Conflict) => continue,
                        Err(e) => panic!("{e}"),
                    };
                    assert_eq!(lease.node, format!("n{n}"));
                    claimed.push(task.task_id);
                    store
                        .fail_task(&lease, "done with it", None)
                        .await
                        .unwrap()
                        .unwrap();
                }
                claimed
            })
        });
        let claimers: Vec<_> = claimers.collect();
        let mut all = Vec::new();
        let mut per_node = Vec::new();
        for claimer in claimers {
            let claimed = claimer.await.unwrap();
            per_node.push(claimed.len());
            all.extend(claimed);
        }
        let distinct: HashSet<Uuid> = all.iter().copied().collect();
        eprintln!("claimed in {:?}: {per_node:?}", t0.elapsed());
        assert_eq!(all.len(), TASKS, "claims per node: {per_node:?}");
        assert_eq!(distinct.len(), TASKS);
    }

    /// A task whose lease lapsed on its last attempt ends FAILED
    /// `INTERRUPTED`; one with attempts left is claimable again.
    #[tokio::test]
    async fn the_last_attempt_cut_by_a_crash_ends_interrupted() {
        let store = store().await;
        let submitted = task("x@main");
        store.submit_task(&submitted).await.unwrap().unwrap();
        for attempt in 1..=4 {
            let (claimed, _) = store
                .claim_next("n1", Duration::from_secs(60), 4)
                .await
                .unwrap()
                .expect("claimable again after a crash");
            assert_eq!(claimed.attempts, attempt);
            assert!(store.fail_interrupted(4).await.unwrap().is_empty());
            store.lapse_leases_of("n1").await.unwrap();
        }
        assert!(
            store
                .claim_next("n2", Duration::from_secs(60), 4)
                .await
                .unwrap()
                .is_none()
        );
        let ended = store.fail_interrupted(4).await.unwrap();
        assert_eq!(ended.len(), 1);
        let failed = store.get_task(submitted.task_id).await.unwrap().unwrap();
        assert_eq!(failed.task_status, crate::store::TaskStatus::Failed);
        assert_eq!(failed.error_code.as_deref(), Some("INTERRUPTED"));
        assert!(failed.lease_owner.is_none());
        // Finished: a new upload of the model may start.
        store.submit_task(&task("x@main")).await.unwrap().unwrap();
    }
}

#[cfg(test)]
mod queue {
    use super::tests::{store, task};
    use super::*;

    /// A retry waits out its backoff outside the queue, keeps its place
    /// ahead of later tasks once due, and a cancel takes a task out.
    #[tokio::test]
    async fn a_retry_rejoins_the_queue_when_due_and_a_cancel_leaves_it() {
        let store = store().await;
        let (first, second, third) = (task("a@main"), task("b@main"), task("c@main"));
        for t in [&first, &second, &third] {
            store.submit_task(t).await.unwrap().unwrap();
        }
        let lease = Duration::from_secs(60);
        let (claimed, held) = store.claim_next("n", lease, 4).await.unwrap().unwrap();
        assert_eq!(claimed.task_id, first.task_id);
        store
            .retry_later(&held, Duration::from_millis(300), Progress::default())
            .await
            .unwrap()
            .unwrap();
        store.cancel_task(second.task_id).await.unwrap().unwrap();
        store.promote_due_retries().await.unwrap();
        let (next, _) = store.claim_next("n", lease, 4).await.unwrap().unwrap();
        assert_eq!(
            next.task_id, third.task_id,
            "the retry waits; the cancelled task is gone"
        );
        assert!(store.claim_next("n", lease, 4).await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(400)).await;
        store.promote_due_retries().await.unwrap();
        let (retry, _) = store.claim_next("n", lease, 4).await.unwrap().unwrap();
        assert_eq!((retry.task_id, retry.attempts), (first.task_id, 2));
    }
}
