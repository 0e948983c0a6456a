//! The model routes: list, get, delete. Reads go straight to the store
//! (models are written once, when a task finishes); delete removes the
//! record first, then the files no other model shares.

use std::sync::Arc;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;

use super::auth::ApiKeyAuth;
use super::errors::{NOT_FOUND, Refusal};
use super::objects::{Model, ModelList, Source};
use super::{ApiTags, AppState};
use crate::error::{AppError, ErrorCode};
use crate::store::reservations::folder_key;
use crate::store::{ModelRecord, Source as StoredSource};

#[derive(ApiResponse)]
pub enum ModelFound {
    /// The model.
    #[oai(status = 200)]
    Ok(Json<Model>),
}

#[derive(ApiResponse)]
pub enum ModelPage {
    /// A page of models, newest first.
    #[oai(status = 200)]
    Ok(Json<ModelList>),
}

#[derive(ApiResponse)]
pub enum ModelDeleted {
    /// The model and its files are gone.
    #[oai(status = 204)]
    Deleted,
}

pub struct ModelsApi {
    pub state: Arc<AppState>,
}

#[OpenApi(tag = "ApiTags::Models")]
impl ModelsApi {
    /// List models
    ///
    /// The models in the store, newest first, optionally from one source.
    #[oai(path = "/v1/models", method = "get", operation_id = "list_models")]
    async fn list_models(
        &self,
        _auth: ApiKeyAuth,
        /// Only models from this source.
        source: Query<Option<Source>>,
        /// Page size, 1–1000.
        #[oai(
            default = "super::objects::default_page_size",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
        /// Models to skip, 0–4294967295.
        #[oai(
            default,
            validator(minimum(value = "0"), maximum(value = "4294967295"))
        )]
        offset: Query<u32>,
    ) -> Result<ModelPage, Refusal<0>> {
        let (items, total) = self
            .state
            .store
            .list_models(source.0, limit.0, offset.0)
            .await
            .map_err(AppError::internal)?;
        Ok(ModelPage::Ok(Json(ModelList {
            items: items.into_iter().map(Into::into).collect(),
            total,
        })))
    }

    /// Get a model
    ///
    /// The model with its files, their sizes and sha256, and the folder
    /// holding them.
    #[oai(
        path = "/v1/models/:model_id",
        method = "get",
        operation_id = "get_model"
    )]
    async fn get_model(
        &self,
        _auth: ApiKeyAuth,
        /// The model's id.
        model_id: Path<Uuid>,
    ) -> Result<ModelFound, Refusal<NOT_FOUND>> {
        let model = self.state.find_model(model_id.0).await?;
        Ok(ModelFound::Ok(Json(model.into())))
    }

    /// Delete a model
    ///
    /// Removes the model and its files; a Hugging Face blob stays while
    /// another snapshot still uses it.
    #[oai(
        path = "/v1/models/:model_id",
        method = "delete",
        operation_id = "delete_model"
    )]
    async fn delete_model(
        &self,
        _auth: ApiKeyAuth,
        /// The model's id.
        model_id: Path<Uuid>,
    ) -> Result<ModelDeleted, Refusal<NOT_FOUND>> {
        let model = self.state.find_model(model_id.0).await?;
        let store = &self.state.store;
        // The folder's reservation keeps installs of the same repository
        // (which may link the blobs this delete would remove) out until the
        // files are gone, on every node.
        let key = model_folder_key(&model);
        let holder = format!("delete:{}", model.model_id);
        let reservation = store
            .reserve(&key, &holder, RESERVE_WITHIN)
            .await
            .map_err(AppError::internal)?;
        let deleted = self.delete_reserved(model).await;
        reservation.release().await;
        deleted?;
        Ok(ModelDeleted::Deleted)
    }
}

/// Longest a delete waits for an install of the same repository to finish.
const RESERVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// The reservation a model's files are under: its repository, or its local tag.
fn model_folder_key(model: &ModelRecord) -> String {
    match model.source {
        StoredSource::Local => folder_key(model.source, &model.model_tag),
        _ => folder_key(model.source, &model.name),
    }
}

impl ModelsApi {
    /// Removes the record, then the files no other model shares.
    async fn delete_reserved(&self, model: ModelRecord) -> Result<(), AppError> {
        let store = &self.state.store;
        if store
            .get_model(model.model_id)
            .await
            .map_err(AppError::internal)?
            .is_none()
        {
            return Err(AppError::new(
                ErrorCode::NotFound,
                format!("no model has the id {}", model.model_id),
            ));
        }
        store
            .delete_model(model.model_id)
            .await
            .map_err(AppError::internal)?;
        let shared = store
            .count_models_at(&model.path)
            .await
            .map_err(AppError::internal)?
            > 0;
        let files = self.state.files.clone();
        tokio::task::spawn_blocking(move || files.remove_model(&model, shared))
            .await
            .map_err(AppError::internal)
    }
}

impl AppState {
    pub(crate) async fn find_model(&self, id: Uuid) -> Result<ModelRecord, AppError> {
        self.store
            .get_model(id)
            .await
            .map_err(AppError::internal)?
            .ok_or_else(|| AppError::new(ErrorCode::NotFound, format!("no model has the id {id}")))
    }
}
