//! Reservations: one owner at a time for a folder of the model store. An
//! install (any source) and a delete first create the `reservation` record
//! of the repository or local model they touch; the record's id is the
//! key, so a second `CREATE` fails on any node and its caller waits. The
//! holder renews it every third of `HOLD` until it releases it; a node
//! that dies while it holds one blocks the folder for `HOLD` at most.

use std::time::{Duration, Instant};

use super::leases::FENCE;
use super::{LEASE_LOST, Lease, Source, Store, StoreError, checked};

/// How long a reservation holds unless renewed.
const HOLD: Duration = Duration::from_secs(10);
/// Pause between tries while another holder has the folder.
const PAUSE: Duration = Duration::from_millis(25);

/// A held reservation; `release` it when the work is done.
#[must_use = "release the reservation when the work is done"]
pub struct Reservation {
    store: Store,
    key: String,
    holder: String,
    /// Renews the reservation while it is held.
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// The reservation key of a model folder: the Hugging Face repo id, the
/// GitHub `owner/repo`, or the local model tag, with its source.
pub fn folder_key(source: Source, name: &str) -> String {
    format!("{}/{name}", source.as_str())
}

impl Store {
    /// Takes the reservation `key` for `holder`, waiting up to `within`
    /// while someone else holds it.
    pub async fn reserve(
        &self,
        key: &str,
        holder: &str,
        within: Duration,
    ) -> Result<Reservation, StoreError> {
        self.reserve_fenced(key, holder, within, None).await
    }

    /// `reserve` for a lease holder: in the same transaction the lease is
    /// checked, and `StoreError::LeaseLost` answered (nothing reserved)
    /// when it is gone. What a worker does before it renames files into
    /// the store.
    pub async fn reserve_fenced(
        &self,
        key: &str,
        holder: &str,
        within: Duration,
        lease: Option<&Lease>,
    ) -> Result<Reservation, StoreError> {
        let fence = match lease {
            Some(_) => format!(
                "IF (SELECT VALUE task_id FROM ONLY type::record('task', $task) WHERE {FENCE}) = NONE
                     {{ THROW '{LEASE_LOST}' }};"
            ),
            None => String::new(),
        };
        let deadline = Instant::now() + within;
        loop {
            let taken = self
                .db()
                .query(format!(
                    "BEGIN TRANSACTION;
                     {fence}
                     DELETE type::record('reservation', $key) WHERE until < time::now();
                     CREATE type::record('reservation', $key)
                         SET holder = $holder, until = time::now() + $hold RETURN NONE;
                     COMMIT TRANSACTION;",
                ))
                .bind(("key", key.to_string()))
                .bind(("holder", holder.to_string()))
                .bind(("hold", HOLD))
                .bind(("task", lease.map(|l| l.task_id.to_string())))
                .bind(("node", lease.map(|l| l.node.clone())))
                .bind(("epoch", lease.map(|l| l.epoch as i64)))
                .await
                .map_err(StoreError::from)
                .and_then(checked);
            match taken {
                Ok(_) => {
                    return Ok(Reservation {
                        store: self.clone(),
                        key: key.to_string(),
                        holder: holder.to_string(),
                        renewal: tokio::spawn(renew(self.clone(), key.into(), holder.into())),
                    });
                }
                Err(StoreError::Conflict | StoreError::Db(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(PAUSE).await
                }
                Err(StoreError::Db(e)) if e.to_string().contains("already exists") => {
                    return Err(StoreError::Busy(key.to_string()));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Extends the reservation every third of `HOLD` while its holder works.
async fn renew(store: Store, key: String, holder: String) {
    let mut beats = tokio::time::interval(HOLD / 3);
    beats.tick().await;
    loop {
        beats.tick().await;
        let renewed = store
            .db()
            .query(
                "UPDATE type::record('reservation', $key)
                     SET until = time::now() + $hold WHERE holder = $holder RETURN NONE",
            )
            .bind(("key", key.clone()))
            .bind(("holder", holder.clone()))
            .bind(("hold", HOLD))
            .await;
        if let Err(e) = renewed {
            tracing::warn!(%key, error = %e, "could not renew a reservation");
        }
    }
}

impl Reservation {
    /// Whether the reservation is still this holder's: false once it lapsed
    /// (its node was frozen past `HOLD`) and someone else may have the
    /// folder. Checked before files are taken away.
    pub async fn still_held(&self) -> bool {
        let holder: Result<Option<String>, StoreError> = async {
            let response = self
                .store
                .db()
                .query(
                    "SELECT VALUE holder FROM ONLY type::record('reservation', $key)
                     WHERE until > time::now()",
                )
                .bind(("key", self.key.clone()))
                .await?;
            Ok(checked(response)?.take(0)?)
        }
        .await;
        matches!(holder, Ok(Some(h)) if h == self.holder)
    }

    /// Gives the folder back. A failure is logged: the reservation lapses
    /// on its own after `HOLD`.
    pub async fn release(self) {
        self.renewal.abort();
        let released = self
            .store
            .retrying(|| async {
                let response = self
                    .store
                    .db()
                    .query("DELETE type::record('reservation', $key) WHERE holder = $holder")
                    .bind(("key", self.key.clone()))
                    .bind(("holder", self.holder.clone()))
                    .await?;
                checked(response).map(drop)
            })
            .await;
        if let Err(e) = released {
            tracing::warn!(key = %self.key, error = %e, "could not release a reservation; it lapses on its own");
        }
    }
}
