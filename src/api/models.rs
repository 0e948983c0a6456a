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
use crate::store::ModelRecord;

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
        /// Models to skip.
        #[oai(default)]
        offset: Query<u32>,
    ) -> Result<ModelPage, Refusal<0>> {
        let (items, total) = self
            .state
            .store
            .list_models(source.0.map(Into::into), limit.0, offset.0)
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
            .map_err(AppError::internal)?;
        Ok(ModelDeleted::Deleted)
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
