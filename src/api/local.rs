//! `POST /v1/upload/local` and `GET /v1/upload/local/{model_id}`. A local
//! upload is answered in the request, not as a task: the body is streamed
//! to a temporary file (`body`), the archive guarded and its models staged
//! in a blocking thread (`sources::local_zip`), models the store has are
//! skipped, and each valid new one is moved into `models/local/{tag}/` with
//! one rename (`store::files`) and registered. This module owns the order of
//! those steps and the request's temporary folder; it must not touch the
//! registry or the actors, nor another source's files.

mod body;

use std::path::Path as FsPath;
use std::sync::Arc;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use tempfile::TempDir;
use uuid::Uuid;

use self::body::{ReceivedArchive, ZipUploadForm};
use super::auth::ApiKeyAuth;
use super::errors::{BAD_INPUT, CONFLICT, NOT_FOUND, Refusal, TOO_LARGE};
use super::models::ModelFound;
use super::objects::Model;
use super::{ApiTags, AppState};
use crate::error::{AppError, ErrorCode};
use crate::sources::local_zip::{
    self, GuardedArchive, LocalZipError, PlannedModel, Rejection, StagedModel,
};
use crate::store::files::remove_dir_if_present;
use crate::store::reservations::folder_key;
use crate::store::{ModelRecord, Source};

/// Longest an install waits for another install or delete of the same tag.
const RESERVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// A model the upload could not use, and why.
#[derive(Debug, Clone, Object)]
pub struct RejectedModel {
    /// The folder name, or `model_name` for the files at the root.
    pub name: String,
    pub reason: String,
}

/// What a local upload stored, found already stored, and refused.
#[derive(Debug, Clone, Object)]
pub struct LocalUpload {
    /// The models stored by this upload.
    pub models: Vec<Model>,
    /// How many models this upload stored.
    pub total_models: u64,
    /// Tags of models in the archive that the store already had.
    pub existing_models: Vec<String>,
    /// Models in the archive that are not valid, with the reason.
    pub rejected: Vec<RejectedModel>,
}

#[derive(ApiResponse)]
pub enum LocalUploadCreated {
    /// At least one model was stored; `Location` is the first one's.
    #[oai(status = 201)]
    Created(Json<LocalUpload>, #[oai(header = "Location")] String),
}

pub struct LocalApi {
    pub state: Arc<AppState>,
}

#[OpenApi(tag = "ApiTags::Uploads")]
impl LocalApi {
    /// Upload models in a ZIP archive
    ///
    /// The part `file` must be a ZIP archive whose file name ends in `.zip`
    /// (any case); anything else is 400 `INVALID_FILE`. The schema cannot
    /// say this (a part's file name and its bytes are beyond its reach),
    /// so it is said here.
    ///
    /// Each top-level folder of the archive is one model named after it;
    /// files at the root form one more, named `model_name`. Only `.pt`,
    /// `.pth`, `.bin`, `.model`, `.safetensors` and `.json` entries are
    /// extracted; weights are checked without being loaded. The archive is
    /// refused whole when an entry is absolute, climbs out with `..`, is a
    /// symlink or encrypted, or expands like a zip bomb.
    #[oai(
        path = "/v1/upload/local",
        method = "post",
        operation_id = "upload_local"
    )]
    async fn upload_local(
        &self,
        _auth: ApiKeyAuth,
        /// The name of the model formed by the files at the archive's root;
        /// default: the archive's file name without `.zip`.
        model_name: Query<Option<String>>,
        /// The archive, as the multipart field `file`.
        body: ZipUploadForm,
    ) -> Result<LocalUploadCreated, Refusal<{ BAD_INPUT | NOT_FOUND | CONFLICT | TOO_LARGE }>> {
        let state = &self.state;
        let received = body
            .receive(&state.files.upload_tmp_dir(), state.config.max_upload_bytes)
            .await?;
        let report = ingest(state, received, model_name.0).await?;
        Ok(report.answer()?)
    }

    /// Get a locally uploaded model
    ///
    /// The model, as `GET /v1/models/{model_id}` answers it; 404 for an id
    /// that is not a local upload.
    #[oai(
        path = "/v1/upload/local/:model_id",
        method = "get",
        operation_id = "get_local_model"
    )]
    async fn get_local_model(
        &self,
        _auth: ApiKeyAuth,
        /// The model's id, as the upload answered it.
        model_id: Path<Uuid>,
    ) -> Result<ModelFound, Refusal<NOT_FOUND>> {
        let model = self.state.find_model(model_id.0).await?;
        if model.source != Source::Local {
            return Err(AppError::new(
                ErrorCode::NotFound,
                format!("no locally uploaded model has the id {}", model_id.0),
            )
            .into());
        }
        Ok(ModelFound::Ok(Json(model.into())))
    }
}

/// The outcome of one upload, before it becomes an answer.
#[derive(Default)]
struct UploadReport {
    stored: Vec<ModelRecord>,
    existing: Vec<String>,
    rejected: Vec<Rejection>,
}

impl UploadReport {
    /// 201 when a model was stored; else 409 when one existed; else 404.
    fn answer(self) -> Result<LocalUploadCreated, AppError> {
        let Some(first) = self.stored.first() else {
            return Err(self.nothing_stored());
        };
        let location = format!("/v1/upload/local/{}", first.model_id);
        let body = LocalUpload {
            total_models: self.stored.len() as u64,
            models: self.stored.into_iter().map(Model::from).collect(),
            existing_models: self.existing,
            rejected: self
                .rejected
                .into_iter()
                .map(|r| RejectedModel {
                    name: r.name,
                    reason: r.reason,
                })
                .collect(),
        };
        Ok(LocalUploadCreated::Created(Json(body), location))
    }

    fn nothing_stored(&self) -> AppError {
        if !self.existing.is_empty() {
            return AppError::new(
                ErrorCode::ModelAlreadyExists,
                format!(
                    "every valid model in the archive already exists (LOCAL): {}",
                    self.existing.join(", ")
                ),
            );
        }
        let reasons: Vec<String> = self
            .rejected
            .iter()
            .map(|r| format!("'{}': {}", r.name, r.reason))
            .collect();
        AppError::new(
            ErrorCode::NoValidModels,
            format!(
                "no folder of the archive holds a valid model; {}",
                reasons.join("; ")
            ),
        )
    }
}

/// The request's temporary files: the archive and the staging folder. Both
/// are removed when this is dropped, which `ingest` does in a blocking
/// thread once every step is over, whatever their outcome.
struct Workspace {
    archive: ReceivedArchive,
    staging: TempDir,
}

/// Guards the archive, skips the models the store has, stages the rest
/// and installs the valid ones.
async fn ingest(
    state: &AppState,
    archive: ReceivedArchive,
    model_name: Option<String>,
) -> Result<UploadReport, AppError> {
    let root_model_name = root_model_name(&archive.file_name, model_name);
    let upload_tmp = state.files.upload_tmp_dir();
    let staging = blocking(move || {
        std::fs::create_dir_all(&upload_tmp)?;
        tempfile::Builder::new()
            .prefix("staging-")
            .tempdir_in(upload_tmp)
    })
    .await?
    .map_err(AppError::internal)?;
    let workspace = Arc::new(Workspace { archive, staging });
    let report = ingest_in(state, &workspace, root_model_name).await;
    blocking(move || drop(workspace)).await?;
    report
}

async fn ingest_in(
    state: &AppState,
    workspace: &Arc<Workspace>,
    root_model_name: String,
) -> Result<UploadReport, AppError> {
    let ws = workspace.clone();
    let mut archive = blocking(move || local_zip::open_archive(&ws.archive.path, &root_model_name))
        .await?
        .map_err(zip_error)?;
    let mut report = UploadReport {
        rejected: std::mem::take(&mut archive.rejected),
        ..Default::default()
    };
    let (fresh, existing) = split_existing(state, std::mem::take(&mut archive.models)).await?;
    report.existing = existing;
    let staged = stage(state, workspace.clone(), archive, fresh).await?;
    report.rejected.extend(staged.rejected);
    for model in staged.staged {
        match install(state, model).await? {
            Installed::New(record) => report.stored.push(*record),
            Installed::AlreadyThere(tag) => report.existing.push(tag),
        }
    }
    Ok(report)
}

/// Extracts and validates the new models in a blocking thread.
async fn stage(
    state: &AppState,
    workspace: Arc<Workspace>,
    mut archive: GuardedArchive,
    models: Vec<PlannedModel>,
) -> Result<local_zip::StagingOutcome, AppError> {
    let max_bytes = state.config.max_upload_bytes;
    blocking(move || archive.stage_models(&models, workspace.staging.path(), max_bytes))
        .await?
        .map_err(zip_error)
}

/// The name of the root's model: `model_name` when given, else the
/// archive's name without `.zip`, else `model`.
fn root_model_name(file_name: &str, model_name: Option<String>) -> String {
    let stem = local_zip::archive_stem(file_name).unwrap_or_default();
    model_name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .or_else(|| Some(stem.trim().to_string()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "model".to_string())
}

/// Splits planned models into those the store lacks and the tags it has.
async fn split_existing(
    state: &AppState,
    models: Vec<PlannedModel>,
) -> Result<(Vec<PlannedModel>, Vec<String>), AppError> {
    let mut fresh = Vec::new();
    let mut existing = Vec::new();
    for model in models {
        if is_stored(state, &model.tag).await? {
            existing.push(model.tag);
        } else {
            fresh.push(model);
        }
    }
    Ok((fresh, existing))
}

async fn is_stored(state: &AppState, tag: &str) -> Result<bool, AppError> {
    let found = state.store.find_model(Source::Local, tag).await;
    Ok(found.map_err(AppError::internal)?.is_some())
}

enum Installed {
    New(Box<ModelRecord>),
    AlreadyThere(String),
}

/// Moves a staged model into `models/local/{tag}/` and registers it, under
/// the tag's reservation so that "is the tag free", the rename and the
/// registration cannot interleave with another upload or a delete of the
/// tag on any node; a model that got stored meanwhile is reported as
/// already there, and a registration that fails takes the installed folder
/// away again.
async fn install(state: &AppState, model: StagedModel) -> Result<Installed, AppError> {
    let key = folder_key(Source::Local, &model.tag);
    let holder = format!("upload:{}", Uuid::new_v4());
    let reservation = state
        .store
        .reserve(&key, &holder, RESERVE_WITHIN)
        .await
        .map_err(AppError::internal)?;
    let installed = install_reserved(state, model).await;
    reservation.release().await;
    installed
}

async fn install_reserved(state: &AppState, model: StagedModel) -> Result<Installed, AppError> {
    if is_stored(state, &model.tag).await? {
        return Ok(Installed::AlreadyThere(model.tag));
    }
    let files = state.files.clone();
    let (staged, tag) = (model.dir.clone(), model.tag.clone());
    let installed = blocking(move || files.install_local_model(&staged, &tag))
        .await?
        .map_err(AppError::internal)?;
    let record = local_record(state, model, &installed);
    if let Err(e) = state.store.insert_model(&record).await {
        blocking(move || remove_dir_if_present(&installed)).await?;
        let err = e.to_app_error();
        return match err.code {
            ErrorCode::ModelAlreadyExists => Ok(Installed::AlreadyThere(record.model_tag)),
            _ => Err(err),
        };
    }
    Ok(Installed::New(Box::new(record)))
}

fn local_record(state: &AppState, model: StagedModel, installed: &FsPath) -> ModelRecord {
    ModelRecord::new(
        Source::Local,
        model.tag,
        model.name,
        None,
        state.files.relative(installed),
        model.files,
    )
}

/// Runs file work on the blocking pool, off the request's thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(AppError::internal)
}

fn zip_error(err: LocalZipError) -> AppError {
    match err {
        LocalZipError::Io(e) => AppError::internal(e),
        other => AppError::new(other.code(), other.to_string()),
    }
}
