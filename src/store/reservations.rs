//! Reservations: one owner at a time for a folder of the model store. An
//! install (any source) and a delete first create the `reservation` record
//! of the repository or local model they touch; the record's id is the
//! key, so a second `CREATE` fails on any node and its caller waits. A
//! reservation lapses after `HOLD` so that a node dying while it holds one
//! blocks nobody for long; the work done under one is renames and unlinks.

use std::time::{Duration, Instant};

use super::{Source, Store, StoreError, checked};

/// How long a reservation holds without being released.
const HOLD: Duration = Duration::from_secs(120);
/// Pause between tries while another holder has the folder.
const PAUSE: Duration = Duration::from_millis(25);

/// A held reservation; `release` it when the work is done.
#[must_use = "release the reservation when the work is done"]
pub struct Reservation {
    store: Store,
    key: String,
    holder: String,
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
        let deadline = Instant::now() + within;
        loop {
            let taken = self
                .db()
                .query(
                    "DELETE type::record('reservation', $key) WHERE until < time::now();
                     CREATE type::record('reservation', $key)
                         SET holder = $holder, until = time::now() + $hold RETURN NONE;",
                )
                .bind(("key", key.to_string()))
                .bind(("holder", holder.to_string()))
                .bind(("hold", HOLD))
                .await
                .map_err(StoreError::from)
                .and_then(checked);
            match taken {
                Ok(_) => {
                    return Ok(Reservation {
                        store: self.clone(),
                        key: key.to_string(),
                        holder: holder.to_string(),
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

impl Reservation {
    /// Gives the folder back. A failure is logged: the reservation lapses
    /// on its own after `HOLD`.
    pub async fn release(self) {
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
