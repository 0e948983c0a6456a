//! Models as they are stored: the `model` table, keyed by the model's UUID,
//! unique on (source, model_tag).

use chrono::{DateTime, Utc};
use surrealdb::types::SurrealValue;
use uuid::Uuid;

use super::{Source, Store, StoreError};

/// One file of a model: the one shape the database stores, the API
/// answers and the client reads.
#[derive(Debug, Clone, PartialEq, Eq, SurrealValue, poem_openapi::Object, serde::Deserialize)]
pub struct ModelFile {
    /// Relative to the model's `path`.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// A model in the store.
#[derive(Debug, Clone, PartialEq, SurrealValue)]
pub struct ModelRecord {
    pub model_id: Uuid,
    pub model_tag: String,
    pub name: String,
    pub source: Source,
    #[surreal(default)]
    pub revision: Option<String>,
    #[surreal(default)]
    pub commit_sha: Option<String>,
    /// The folder holding the files, relative to the data dir.
    pub path: String,
    pub size_bytes: u64,
    pub files: Vec<ModelFile>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ModelRecord {
    /// A new model with a fresh id, its size the sum of its files'.
    /// `pinned` is the revision asked for and the commit it resolved to
    /// (`None` for a local upload); `path` is relative to the data dir.
    pub fn new(
        source: Source,
        model_tag: String,
        name: String,
        pinned: Option<(String, String)>,
        path: String,
        files: Vec<ModelFile>,
    ) -> Self {
        let now = Utc::now();
        let (revision, commit_sha) = pinned.unzip();
        Self {
            model_id: Uuid::now_v7(),
            model_tag,
            name,
            source,
            revision,
            commit_sha,
            path,
            size_bytes: files.iter().map(|f| f.size).sum(),
            files,
            created_at: now,
            updated_at: now,
        }
    }
}

impl Store {
    /// Registers a model; a model with the same source and tag is refused
    /// with `StoreError::Duplicate`.
    pub async fn insert_model(&self, model: &ModelRecord) -> Result<(), StoreError> {
        self.db()
            .query("CREATE type::record('model', $id) CONTENT $model RETURN NONE")
            .bind(("id", model.model_id.to_string()))
            .bind(("model", model.clone()))
            .await?
            .check()
            .map_err(StoreError::classify)?;
        Ok(())
    }

    pub async fn get_model(&self, id: Uuid) -> Result<Option<ModelRecord>, StoreError> {
        let mut response = self
            .db()
            .query("SELECT * OMIT id FROM ONLY type::record('model', $id)")
            .bind(("id", id.to_string()))
            .await?;
        Ok(response.take(0)?)
    }

    /// The model with this identity, if the store has it.
    pub async fn find_model(
        &self,
        source: Source,
        model_tag: &str,
    ) -> Result<Option<ModelRecord>, StoreError> {
        let mut response = self
            .db()
            .query(
                "SELECT * OMIT id FROM model WHERE source = $source AND model_tag = $tag LIMIT 1",
            )
            .bind(("source", source))
            .bind(("tag", model_tag.to_string()))
            .await?;
        let mut found: Vec<ModelRecord> = response.take(0)?;
        Ok(found.pop())
    }

    /// Every model of `source` stored under `name` (a repo id, or
    /// `owner/repo`), one per uploaded revision, newest first.
    pub async fn models_named(
        &self,
        source: Source,
        name: &str,
    ) -> Result<Vec<ModelRecord>, StoreError> {
        let mut response = self
            .db()
            .query(
                "SELECT * OMIT id FROM model WHERE source = $source AND name = $name
                   ORDER BY created_at DESC",
            )
            .bind(("source", source))
            .bind(("name", name.to_string()))
            .await?;
        Ok(response.take(0)?)
    }

    /// A page of models, newest first, and the number matching the filter.
    pub async fn list_models(
        &self,
        source: Option<Source>,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<ModelRecord>, u64), StoreError> {
        let mut response = self
            .db()
            .query(
                "SELECT * OMIT id FROM model WHERE $source = NONE OR source = $source
                   ORDER BY created_at DESC LIMIT $limit START $offset;
                 SELECT count() AS total FROM model WHERE $source = NONE OR source = $source GROUP ALL;",
            )
            .bind(("source", source))
            .bind(("limit", limit as i64))
            .bind(("offset", offset as i64))
            .await?;
        let items: Vec<ModelRecord> = response.take(0)?;
        let total: Option<u64> = response.take((1, "total"))?;
        Ok((items, total.unwrap_or(0)))
    }

    /// How many models keep their files in `path` (Hugging Face revisions that
    /// resolve to one commit share a snapshot folder).
    pub async fn count_models_at(&self, path: &str) -> Result<u64, StoreError> {
        let mut response = self
            .db()
            .query("SELECT count() AS n FROM model WHERE path = $path GROUP ALL")
            .bind(("path", path.to_string()))
            .await?;
        let n: Option<u64> = response.take((0, "n"))?;
        Ok(n.unwrap_or(0))
    }

    pub async fn delete_model(&self, id: Uuid) -> Result<(), StoreError> {
        self.db()
            .query("DELETE type::record('model', $id)")
            .bind(("id", id.to_string()))
            .await?
            .check()?;
        Ok(())
    }
}
