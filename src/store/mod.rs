//! The store: the only code that speaks SurrealQL (`tasks`, `models`) or
//! knows the on-disk layout of the model store (`files`). Queries always bind
//! their parameters; user input is never formatted into a query.

pub mod files;
pub mod models;
pub mod tasks;

use surrealdb::Surreal;
use surrealdb::engine::any::{self, Any};

use crate::error::{AppError, ErrorCode};
pub use models::{ModelFile, ModelRecord};
pub use tasks::{Progress, Source, TaskFilter, TaskStatus, UploadRequest, UploadTask};

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the write; the name of the index is kept so
    /// callers can map it deliberately (the model index means 409).
    #[error("unique index {index} refused the write")]
    Duplicate { index: String },
    #[error("database error: {0}")]
    Db(#[from] surrealdb::Error),
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
    /// SurrealDB 3 as an internal error whose message names the index.
    fn classify(err: surrealdb::Error) -> Self {
        let message = err.to_string();
        match message.split_once("Database index `") {
            Some((_, rest)) if message.contains("already contains") => StoreError::Duplicate {
                index: rest.split('`').next().unwrap_or_default().to_string(),
            },
            _ => StoreError::Db(err),
        }
    }
}

/// The name of the unique index on (source, model_tag).
pub const MODEL_IDENTITY_INDEX: &str = "model_identity";

const SCHEMA: &str = r#"
DEFINE TABLE IF NOT EXISTS task SCHEMALESS;
DEFINE INDEX IF NOT EXISTS task_status ON task FIELDS task_status;
DEFINE INDEX IF NOT EXISTS task_identity ON task FIELDS source, model_tag;
DEFINE TABLE IF NOT EXISTS model SCHEMALESS;
DEFINE INDEX IF NOT EXISTS model_identity ON model FIELDS source, model_tag UNIQUE;
"#;

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Surreal<Any>,
}

impl Store {
    /// Opens `endpoint` (`surrealkv://…`, `mem://` or `ws://…`) and defines
    /// the schema; running it again on an existing database changes nothing.
    pub async fn open(endpoint: &str) -> Result<Self, StoreError> {
        if let Some(path) = endpoint.strip_prefix("surrealkv://")
            && let Some(parent) = std::path::Path::new(path).parent()
        {
            std::fs::create_dir_all(parent).ok();
        }
        let db = any::connect(endpoint).await?;
        db.use_ns("vectorize").use_db("vectorize").await?;
        db.query(SCHEMA).await?.check()?;
        Ok(Self { db })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        self.db.health().await.is_ok()
    }

    pub(crate) fn db(&self) -> &Surreal<Any> {
        &self.db
    }
}
