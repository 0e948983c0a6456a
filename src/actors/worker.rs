//! `UploadWorker`: runs one attempt of one task, then stops. Success and
//! permanent failures are reported to the registry before a normal stop; a
//! transient failure is returned as the handler's error, so the actor fails
//! and the supervisor decides about a retry. Cancellation comes through the
//! token, which the sources watch at every await.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Fetchers;
use super::registry::RegistryMsg;
use crate::sources::{ProgressSink, SourceError};
use crate::store::files::{ModelFiles, remove_dir_if_present};
use crate::store::{ModelFile, ModelRecord, Source, UploadTask};

/// How often progress is reported to the registry while an attempt runs.
const REPORT_EVERY: Duration = Duration::from_millis(250);

pub struct UploadWorker;

pub struct WorkerArgs {
    pub task: UploadTask,
    pub registry: ActorRef<RegistryMsg>,
    pub fetchers: Arc<Fetchers>,
    pub cancel: CancellationToken,
}

pub enum WorkerMsg {
    Run,
}

impl Actor for UploadWorker {
    type Msg = WorkerMsg;
    type State = WorkerArgs;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: WorkerArgs,
    ) -> Result<WorkerArgs, ActorProcessingErr> {
        myself.cast(WorkerMsg::Run)?;
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        WorkerMsg::Run: WorkerMsg,
        state: &mut WorkerArgs,
    ) -> Result<(), ActorProcessingErr> {
        let id = state.task.task_id;
        let progress = ProgressSink::default();
        let reporter = tokio::spawn(report_progress(
            id,
            progress.clone(),
            state.registry.clone(),
        ));
        let outcome = attempt(&state.fetchers, &state.task, &progress, &state.cancel).await;
        reporter.abort();
        let _ = state.registry.cast(RegistryMsg::Progress {
            id,
            progress: progress.snapshot(),
        });
        match outcome {
            Ok(model) => {
                let answer = state
                    .registry
                    .call(
                        |reply| RegistryMsg::Completed {
                            id,
                            model: Box::new(model.clone()),
                            reply,
                        },
                        Some(Duration::from_secs(30)),
                    )
                    .await;
                if !matches!(answer, Ok(CallResult::Success(Ok(true)))) {
                    tracing::info!(task_id = %id, "task ended before its files were registered; removing them");
                    let shared = state
                        .fetchers
                        .store
                        .count_models_at(&model.path)
                        .await
                        .unwrap_or(1)
                        > 0;
                    let files = state.fetchers.files.clone();
                    let _ = tokio::task::spawn_blocking(move || files.remove_model(&model, shared))
                        .await;
                }
            }
            Err(SourceError::Cancelled) => tracing::info!(task_id = %id, "attempt cancelled"),
            Err(SourceError::Permanent(message)) => {
                tracing::warn!(task_id = %id, error = %message, "task failed");
                let files = state.fetchers.files.clone();
                let _ = tokio::task::spawn_blocking(move || files.remove_task_staging(id)).await;
                state.registry.cast(RegistryMsg::Failed { id, message })?;
            }
            Err(SourceError::Transient(message)) => return Err(message.into()),
        }
        myself.stop(None);
        Ok(())
    }
}

/// Sends the progress counters to the registry whenever they moved.
async fn report_progress(id: Uuid, progress: ProgressSink, registry: ActorRef<RegistryMsg>) {
    let mut last = progress.snapshot();
    let mut ticks = tokio::time::interval(REPORT_EVERY);
    loop {
        ticks.tick().await;
        let now = progress.snapshot();
        if now != last {
            last = now;
            if registry
                .cast(RegistryMsg::Progress { id, progress: now })
                .is_err()
            {
                return;
            }
        }
    }
}

/// One attempt: fetch into staging, validate, install, describe the model.
async fn attempt(
    fetchers: &Fetchers,
    task: &UploadTask,
    progress: &ProgressSink,
    cancel: &CancellationToken,
) -> Result<ModelRecord, SourceError> {
    match task.source {
        Source::Huggingface => attempt_huggingface(fetchers, task, progress, cancel).await,
        Source::Github => attempt_github(fetchers, task, progress, cancel).await,
        other => Err(SourceError::Permanent(format!(
            "uploads from {} are not supported by this server yet",
            other.as_str()
        ))),
    }
}

async fn attempt_github(
    fetchers: &Fetchers,
    task: &UploadTask,
    progress: &ProgressSink,
    cancel: &CancellationToken,
) -> Result<ModelRecord, SourceError> {
    let request = &task.request;
    let staging = fetchers.files.task_staging(task.task_id);
    let fetched = fetchers
        .github
        .fetch(request, &staging, progress, cancel)
        .await?;
    if cancel.is_cancelled() {
        return Err(SourceError::Cancelled);
    }
    let (repo, commit, folder) = (
        request.repo.clone(),
        fetched.commit.clone(),
        fetched.folder.clone(),
    );
    let installed = install(fetchers, staging, move |files| {
        files.install_github_folder(&repo, &commit, &folder)
    })
    .await?;
    Ok(remote_model(
        fetchers,
        task,
        fetched.commit,
        &installed,
        fetched.files,
    ))
}

async fn attempt_huggingface(
    fetchers: &Fetchers,
    task: &UploadTask,
    progress: &ProgressSink,
    cancel: &CancellationToken,
) -> Result<ModelRecord, SourceError> {
    let request = &task.request;
    let staging = fetchers.files.task_staging(task.task_id);
    let blobs = fetchers.files.hf_repo_dir(&request.repo).join("blobs");
    let fetched = fetchers
        .hub
        .fetch(request, &staging, &blobs, progress, cancel)
        .await?;
    if cancel.is_cancelled() {
        return Err(SourceError::Cancelled);
    }
    let (repo_id, revision, commit) = (
        request.repo.clone(),
        request.revision.clone(),
        fetched.commit.clone(),
    );
    let staged = fetched.files.clone();
    let snapshot = install(fetchers, staging, move |files| {
        files.install_hf_snapshot(&repo_id, &revision, &commit, &staged)
    })
    .await?;
    let model_files = fetched
        .files
        .into_iter()
        .map(|f| ModelFile {
            path: f.repo_path,
            size: f.size,
            sha256: f.sha256,
        })
        .collect();
    Ok(remote_model(
        fetchers,
        task,
        fetched.commit,
        &snapshot,
        model_files,
    ))
}

/// Runs `place` (renames into the store) off the async runtime, then removes
/// the task's staging folder whatever happened.
async fn install(
    fetchers: &Fetchers,
    staging: PathBuf,
    place: impl FnOnce(&ModelFiles) -> std::io::Result<PathBuf> + Send + 'static,
) -> Result<PathBuf, SourceError> {
    let files = fetchers.files.clone();
    tokio::task::spawn_blocking(move || {
        let placed = place(&files);
        remove_dir_if_present(&staging);
        placed
    })
    .await
    .map_err(|e| SourceError::Transient(format!("installing the files stopped: {e}")))?
    .map_err(|e| SourceError::Transient(format!("could not install the files in the store: {e}")))
}

/// The record of a model fetched by a remote task, installed at `folder`.
fn remote_model(
    fetchers: &Fetchers,
    task: &UploadTask,
    commit: String,
    folder: &Path,
    files: Vec<ModelFile>,
) -> ModelRecord {
    let now = Utc::now();
    ModelRecord {
        model_id: Uuid::now_v7(),
        model_tag: task.model_tag.clone(),
        name: task.request.repo.clone(),
        source: task.source,
        revision: Some(task.request.revision.clone()),
        commit_sha: Some(commit),
        path: fetchers.files.relative(folder),
        size_bytes: files.iter().map(|f| f.size).sum(),
        files,
        created_at: now,
        updated_at: now,
    }
}
