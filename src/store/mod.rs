//! The store: the only code that speaks SurrealQL (`tasks`, `leases`,
//! `reservations`, `models`, `deliveries` — the webhook outbox — and
//! `changes`, what watchers of every task read) or knows the on-disk
//! layout of the model store (`files`). Queries always bind their parameters; user input is never
//! formatted into a query.
//!
//! Everything two nodes could share is decided here, by the database: the
//! 409 rules are unique indexes, a task is claimed with a lease by one
//! conditional update, and model folders are reserved by a record. One
//! embedded node runs exactly the same queries as a cluster of five.

pub mod changes;
pub mod deliveries;
pub mod files;
pub mod leases;
pub mod models;
pub mod reservations;
pub mod tasks;

use std::collections::HashMap;
use std::time::Duration;

use surrealdb::Surreal;
use surrealdb::engine::any::{self, Any};
use surrealdb::opt::auth::{Namespace, Root};

use crate::error::{AppError, ErrorCode};
use crate::secret::Secret;
pub use deliveries::Delivery;
pub use leases::Lease;
pub use models::{ModelFile, ModelRecord};
pub use reservations::Reservation;
pub use tasks::{
    FinishedTasks, Progress, Source, TaskFilter, TaskStatus, UploadRequest, UploadTask,
};

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the write; the name of the index is kept so
    /// callers can map it deliberately (the model index means 409).
    #[error("unique index {index} refused the write")]
    Duplicate { index: String },
    /// A write fenced by a lease found the lease gone: the task was
    /// cancelled, or another node holds it now.
    #[error("the task's lease is no longer held by this node")]
    LeaseLost,
    /// A query refused the write on purpose (`THROW`), e.g. a model that
    /// exists already.
    #[error("refused: {0}")]
    Refused(String),
    /// Another install or delete kept a model folder reserved too long.
    #[error("the model folder {0} stayed reserved by another install or delete")]
    Busy(String),
    /// The server refused the configured user, as root and as a user of
    /// the namespace. The password is never part of the message.
    #[error(
        "cannot sign in to {endpoint} as `{user}` (tried root, then a user of namespace \
         `{namespace}`): {reason}; check VECTORIZE_DB_USER and VECTORIZE_DB_PASS"
    )]
    SignIn {
        endpoint: String,
        user: String,
        namespace: String,
        reason: Box<surrealdb::Error>,
    },
    /// Two writers touched the same record and this one kept losing.
    #[error("the database kept reporting write conflicts")]
    Conflict,
    #[error("database error: {0}")]
    Db(surrealdb::Error),
}

/// Every SurrealDB error is classified on its way in, so `?` keeps the
/// distinctions callers act on.
impl From<surrealdb::Error> for StoreError {
    fn from(err: surrealdb::Error) -> Self {
        StoreError::classify(err)
    }
}

impl StoreError {
    /// The error as a client sees it: a refused model identity is 409
    /// `MODEL_ALREADY_EXISTS`; anything else is a server error.
    pub fn to_app_error(&self) -> AppError {
        match self {
            StoreError::Duplicate { index } if index == MODEL_IDENTITY_INDEX => AppError::new(
                ErrorCode::ModelAlreadyExists,
                "a model with this source and tag already exists",
            ),
            other => AppError::internal(other),
        }
    }

    /// Classifies a SurrealDB error: a unique-index violation is reported by
    /// SurrealDB 3 as an internal error whose message names the index; a
    /// `THROW` as "An error occurred: …"; a lost race as a retryable conflict.
    fn classify(err: surrealdb::Error) -> Self {
        let message = err.to_string();
        if let Some((_, rest)) = message.split_once("Database index `")
            && message.contains("already contains")
        {
            return StoreError::Duplicate {
                index: rest.split('`').next().unwrap_or_default().to_string(),
            };
        }
        if message.contains("can be retried") || message.contains("Transaction conflict") {
            return StoreError::Conflict;
        }
        if let Some(thrown) = message.strip_prefix("An error occurred: ") {
            return match thrown {
                LEASE_LOST => StoreError::LeaseLost,
                other => StoreError::Refused(other.to_string()),
            };
        }
        StoreError::Db(err)
    }
}

/// The name of the unique index on (source, model_tag).
pub const MODEL_IDENTITY_INDEX: &str = "model_identity";
/// The name of the unique index on (source, inflight_tag): one task in
/// flight per model.
pub const TASK_INFLIGHT_INDEX: &str = "task_inflight";
/// What a fenced transaction throws when the lease is gone.
const LEASE_LOST: &str = "LEASE_LOST";

/// The schema; every statement can run again on an existing database. The
/// `UPDATE`s bring databases of earlier versions along: statuses and
/// sources stored as `{"PENDING": {}}` objects become plain strings (which
/// the computed field and the queries compare), and unfinished tasks gain
/// their `inflight_tag` and their place in the queue.
///
/// `queue` holds one record per PENDING task ready to run (not in a retry's
/// backoff), keyed like the task: UUIDv7, so a scan of the table goes
/// oldest first, and with no `WHERE` it stops at `LIMIT 1` — a scan of the
/// `task_status` index, or any filtered scan, reads every waiting task, a
/// millisecond per hundred. It changes only in the transactions that make
/// a task ready or take it out of PENDING.
/// `inflight_tag` is computed on every write: the model tag while the task
/// is PENDING or RUNNING, NONE after, so that the unique index refuses a
/// second task in flight for one model and forgets finished ones.
const SCHEMA: &str = r#"
DEFINE TABLE IF NOT EXISTS task SCHEMALESS;
DEFINE FIELD OVERWRITE inflight_tag ON task VALUE
    IF task_status IN ["PENDING", "RUNNING"] THEN model_tag ELSE NONE END;
DEFINE INDEX IF NOT EXISTS task_status ON task FIELDS task_status;
DEFINE INDEX IF NOT EXISTS task_identity ON task FIELDS source, model_tag;
DEFINE INDEX IF NOT EXISTS task_inflight ON task FIELDS source, inflight_tag UNIQUE;
DEFINE INDEX IF NOT EXISTS task_not_before ON task FIELDS not_before;
DEFINE INDEX IF NOT EXISTS task_finished ON task FIELDS finished_at;
DEFINE INDEX IF NOT EXISTS task_updated ON task FIELDS updated_at;
DEFINE TABLE IF NOT EXISTS model SCHEMALESS;
DEFINE INDEX IF NOT EXISTS model_identity ON model FIELDS source, model_tag UNIQUE;
DEFINE INDEX IF NOT EXISTS model_path ON model FIELDS path;
DEFINE INDEX IF NOT EXISTS model_name ON model FIELDS source, name;
DEFINE TABLE IF NOT EXISTS reservation SCHEMALESS;
DEFINE TABLE IF NOT EXISTS queue SCHEMALESS;
DEFINE TABLE IF NOT EXISTS delivery SCHEMALESS;
DEFINE INDEX IF NOT EXISTS delivery_due ON delivery FIELDS due_at;
FOR $waiting IN (SELECT VALUE id FROM task WHERE task_status = "PENDING" AND not_before = NONE) {
    UPSERT type::record('queue', record::id($waiting)) SET task = $waiting RETURN NONE;
};
UPDATE task SET task_status = object::keys(task_status)[0]
    WHERE type::is_object(task_status) RETURN NONE;
UPDATE task SET source = object::keys(source)[0] WHERE type::is_object(source) RETURN NONE;
UPDATE model SET source = object::keys(source)[0] WHERE type::is_object(source) RETURN NONE;
UPDATE task SET lease_epoch = lease_epoch ?? 0
    WHERE task_status IN ["PENDING", "RUNNING"] AND inflight_tag = NONE RETURN NONE;
"#;

/// Where the database is and who this service is to it.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// `surrealkv://path`, `mem://` or `ws://host:port`.
    pub endpoint: String,
    /// Root or namespace user of a SurrealDB server; `None` for embedded.
    pub user: Option<String>,
    pub pass: Option<Secret>,
    pub namespace: String,
    pub database: String,
}

impl DbOptions {
    /// An embedded database at `endpoint` in the default namespace.
    pub fn embedded(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            user: None,
            pass: None,
            namespace: "vectorize".into(),
            database: "vectorize".into(),
        }
    }
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Surreal<Any>,
    /// Whether a task's terminal write also leaves a webhook notice in the
    /// outbox (`deliveries`): on when this node has a webhook URL.
    announce: bool,
}

/// How many times a write that lost a conflict is tried again.
const CONFLICT_RETRIES: u32 = 50;

impl Store {
    /// Opens the database, signs in when credentials are given (as root,
    /// else as a user of the namespace), and defines the schema.
    pub async fn open(options: &DbOptions) -> Result<Self, StoreError> {
        if let Some(path) = options.endpoint.strip_prefix("surrealkv://")
            && let Some(parent) = std::path::Path::new(path).parent()
        {
            std::fs::create_dir_all(parent).ok();
        }
        let db = any::connect(&options.endpoint).await?;
        if let Some(user) = &options.user {
            let pass = options
                .pass
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            let root = Root {
                username: user.clone(),
                password: pass.clone(),
            };
            if db.signin(root).await.is_err() {
                let namespace = Namespace {
                    namespace: options.namespace.clone(),
                    username: user.clone(),
                    password: pass,
                };
                if let Err(reason) = db.signin(namespace).await {
                    return Err(StoreError::SignIn {
                        endpoint: options.endpoint.clone(),
                        user: user.clone(),
                        namespace: options.namespace.clone(),
                        reason: Box::new(reason),
                    });
                }
            }
        }
        db.use_ns(&options.namespace)
            .use_db(&options.database)
            .await?;
        let store = Self {
            db,
            announce: false,
        };
        store
            .retrying(|| async {
                store.db.query(SCHEMA).await?.check()?;
                Ok(())
            })
            .await?;
        Ok(store)
    }

    /// Whether the database answers a query.
    pub async fn ping(&self) -> bool {
        let answered = tokio::time::timeout(Duration::from_secs(2), self.db.query("RETURN 1"));
        match answered.await {
            Ok(Ok(response)) => response.check().is_ok(),
            _ => false,
        }
    }

    pub(crate) fn db(&self) -> &Surreal<Any> {
        &self.db
    }

    /// This handle with terminal writes announcing to the webhook outbox
    /// (`on`) or not.
    pub fn announcing(mut self, on: bool) -> Self {
        self.announce = on;
        self
    }

    /// A query holding `deliveries::ANNOUNCE` for a terminal write: it
    /// binds `$outbox`, and `$model`, the model the write registers (DONE)
    /// or none.
    pub(crate) fn announcing_query(&self, sql: String, model: Option<&ModelRecord>) -> Query<'_> {
        self.db
            .query(sql)
            .bind(("outbox", self.announce))
            .bind(("model", model.cloned()))
    }

    /// Runs `write` again while it loses write conflicts to another writer,
    /// with a short random pause that grows with each try.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut write: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut tries = 0;
        loop {
            match write().await {
                Err(StoreError::Conflict) if tries < CONFLICT_RETRIES => {
                    tries += 1;
                    let pause = rand::random_range(1..=(5 * tries as u64).min(50));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                other => return other,
            }
        }
    }
}

pub(crate) type Query<'a> = surrealdb::method::Query<'a, Any>;

/// The outcome of a multi-statement query: the most telling error of any
/// statement (a `THROW` or an index over the "not executed" of the rest),
/// classified.
pub(crate) fn checked(
    mut response: surrealdb::IndexedResults,
) -> Result<surrealdb::IndexedResults, StoreError> {
    let errors: HashMap<usize, surrealdb::Error> = response.take_errors();
    if errors.is_empty() {
        return Ok(response);
    }
    let mut classified: Vec<StoreError> = errors.into_values().map(StoreError::classify).collect();
    classified.sort_by_key(|e| match e {
        StoreError::LeaseLost | StoreError::Refused(_) | StoreError::Duplicate { .. } => 0,
        StoreError::Conflict => 1,
        StoreError::Db(e) if !e.to_string().contains("not executed") => 2,
        _ => 3,
    });
    Err(classified.swap_remove(0))
}
