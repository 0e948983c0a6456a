//! The webhook outbox: the `delivery` table, one record per notice of a
//! task that reached DONE, FAILED or CANCELLED. A notice is written by the
//! very transaction that writes the terminal state (`ANNOUNCE`, spliced
//! into those transactions in `leases`), so no crash or restart can end a
//! task without its notice. Senders on any node claim due notices by
//! pushing their `due_at` forward in one conditional update — the same
//! rule as task claims: the later of two writers of one record loses — so
//! each delivery attempt is made by one node. This file knows nothing of
//! HTTP; `webhooks` sends.

use std::time::Duration;

use chrono::{DateTime, Utc};
use surrealdb::types::SurrealValue;
use uuid::Uuid;

use super::{ModelRecord, Store, StoreError, UploadTask, checked};

/// One pending notice: the task as its terminal write left it, and the
/// model that write registered (DONE only).
#[derive(Debug, Clone, PartialEq, SurrealValue)]
pub struct Delivery {
    /// Sent on every attempt, so a receiver can drop repeats.
    pub delivery_id: Uuid,
    pub task: UploadTask,
    #[surreal(default)]
    pub model: Option<ModelRecord>,
    pub created_at: DateTime<Utc>,
    /// Attempts started, this one included.
    pub attempts: u32,
}

/// Writes one notice per task of `$finished` (tasks as just written to a
/// terminal state) when `$outbox` is true, with `$model` (the model the
/// same transaction registered, or NONE). The caller binds both.
pub(super) const ANNOUNCE: &str = "IF $outbox {
        FOR $finished_task IN $finished {
            LET $delivery = rand::uuid::v7();
            CREATE type::record('delivery', $delivery) CONTENT {
                delivery_id: $delivery, task: $finished_task, model: $model,
                created_at: time::now(), due_at: time::now(), attempts: 0
            } RETURN NONE;
        };
    }";

impl Store {
    /// Claims up to `limit` notices that are due, oldest first: each is
    /// hidden from every sender for `hold` (long enough for one attempt),
    /// and its `attempts` counts the attempt about to start. A sender that
    /// dies mid-attempt leaves the notice to be claimed again after `hold`.
    pub async fn claim_due_deliveries(
        &self,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.retrying(|| async {
            let response = self
                .db()
                .query(
                    "UPDATE (SELECT id, due_at FROM delivery WHERE due_at <= time::now()
                             ORDER BY due_at LIMIT $limit).id
                     SET due_at = time::now() + $hold, attempts += 1
                     WHERE due_at <= time::now()
                     RETURN AFTER",
                )
                .bind(("hold", hold))
                .bind(("limit", limit as i64))
                .await?;
            Ok(checked(response)?.take(0)?)
        })
        .await
    }

    /// The receiver took the notice: it is gone from the outbox.
    pub async fn delivered(&self, delivery_id: Uuid) -> Result<(), StoreError> {
        self.retrying(|| async {
            let response = self
                .db()
                .query("DELETE type::record('delivery', $id) RETURN NONE")
                .bind(("id", delivery_id))
                .await?;
            checked(response).map(drop)
        })
        .await
    }

    /// The attempt failed: the notice is due again after `backoff`.
    pub async fn delivery_failed(
        &self,
        delivery_id: Uuid,
        backoff: Duration,
    ) -> Result<(), StoreError> {
        self.retrying(|| async {
            let response = self
                .db()
                .query(
                    "UPDATE type::record('delivery', $id)
                     SET due_at = time::now() + $backoff RETURN NONE",
                )
                .bind(("id", delivery_id))
                .bind(("backoff", backoff))
                .await?;
            checked(response).map(drop)
        })
        .await
    }

    /// Notices not yet taken by the receiver.
    pub async fn count_deliveries(&self) -> Result<u64, StoreError> {
        let mut response = self
            .db()
            .query("SELECT count() AS n FROM delivery GROUP ALL")
            .await?;
        let n: Option<u64> = response.take((0, "n"))?;
        Ok(n.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TaskStatus;
    use crate::store::leases::tests::{store, task};

    const LEASE: Duration = Duration::from_secs(60);
    const HOLD: Duration = Duration::from_secs(30);

    /// Each terminal write leaves exactly one notice carrying the task as
    /// written; with the outbox off, none.
    #[tokio::test]
    async fn every_terminal_write_leaves_one_notice_when_the_outbox_is_on() {
        let store = store().await.announcing(true);
        for tag in ["failed@main", "cancelled@main"] {
            store.submit_task(&task(tag)).await.unwrap().unwrap();
        }
        let (_, lease) = store.claim_next("n", LEASE, 4).await.unwrap().unwrap();
        store.fail_task(&lease, "boom", Some("X")).await.unwrap();
        let (pending, _) = store.claim_next("n", LEASE, 4).await.unwrap().unwrap();
        store.cancel_task(pending.task_id).await.unwrap().unwrap();
        // A write after the lease is gone announces nothing more.
        assert!(
            store
                .fail_task(&lease, "late", None)
                .await
                .unwrap()
                .is_none()
        );
        let mut notices = store.claim_due_deliveries(HOLD, 10).await.unwrap();
        notices.sort_by_key(|d| d.task.model_tag.clone());
        let seen: Vec<_> = notices
            .iter()
            .map(|d| (d.task.model_tag.as_str(), d.task.task_status, d.attempts))
            .collect();
        assert_eq!(
            seen,
            [
                ("cancelled@main", TaskStatus::Cancelled, 1),
                ("failed@main", TaskStatus::Failed, 1)
            ]
        );
        assert_eq!(notices[1].task.error_msg.as_deref(), Some("boom"));

        let quiet = store.clone().announcing(false);
        quiet
            .submit_task(&task("quiet@main"))
            .await
            .unwrap()
            .unwrap();
        let (_, lease) = quiet.claim_next("n", LEASE, 4).await.unwrap().unwrap();
        quiet
            .fail_task(&lease, "boom", None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.count_deliveries().await.unwrap(), 2);
    }

    /// A claimed notice is hidden from the next claim until it fails (or
    /// its hold passes); a delivered one is gone. (Two nodes claiming at
    /// once: `webhooks::with_two_nodes_each_notice_is_sent_once`.)
    #[tokio::test]
    async fn a_claimed_notice_is_hidden_until_it_fails_and_gone_once_delivered() {
        let store = store().await.announcing(true);
        store.submit_task(&task("a@main")).await.unwrap().unwrap();
        let (_, lease) = store.claim_next("n", LEASE, 4).await.unwrap().unwrap();
        store
            .fail_task(&lease, "boom", None)
            .await
            .unwrap()
            .unwrap();
        let first = store.claim_due_deliveries(HOLD, 10).await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(
            store
                .claim_due_deliveries(HOLD, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let id = first[0].delivery_id;
        store.delivery_failed(id, Duration::ZERO).await.unwrap();
        let again = store.claim_due_deliveries(HOLD, 10).await.unwrap();
        assert_eq!((again[0].delivery_id, again[0].attempts), (id, 2));
        store.delivered(id).await.unwrap();
        assert_eq!(store.count_deliveries().await.unwrap(), 0);
    }
}
