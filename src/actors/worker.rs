//! `UploadWorker`: runs one attempt of one task, then stops. Success and
//! permanent failures are reported to the registry before a normal stop; a
//! transient failure is returned as the handler's error, so the actor fails
//! and the supervisor decides about a retry. Cancellation comes through the
//! token, which the sources watch at every await.

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
                    state.fetchers.files.remove_model(&model, shared);
                }
            }
            Err(SourceError::Cancelled) => tracing::info!(task_id = %id, "attempt cancelled"),
            Err(SourceError::Permanent(message)) => {
                tracing::warn!(task_id = %id, error = %message, "task failed");
                state.fetchers.files.remove_task_staging(id);
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
    let files = fetchers.files.clone();
    let staging = files.task_staging(task.task_id);
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
    let installed = tokio::task::spawn_blocking(move || {
        let installed = files.install_github_folder(&repo, &commit, &folder);
        files.remove_task_staging_dir(&staging);
        installed
    })
    .await
    .map_err(|e| SourceError::Transient(format!("installing the files stopped: {e}")))?
    .map_err(|e| {
        SourceError::Transient(format!("could not install the files in the store: {e}"))
    })?;
    let now = Utc::now();
    Ok(ModelRecord {
        model_id: Uuid::now_v7(),
        model_tag: task.model_tag.clone(),
        name: request.repo.clone(),
        source: Source::Github,
        revision: Some(request.revision.clone()),
        commit_sha: Some(fetched.commit),
        path: fetchers.files.relative(&installed),
        size_bytes: fetched.files.iter().map(|f| f.size).sum(),
        files: fetched.files,
        created_at: now,
        updated_at: now,
    })
}

async fn attempt_huggingface(
    fetchers: &Fetchers,
    task: &UploadTask,
    progress: &ProgressSink,
    cancel: &CancellationToken,
) -> Result<ModelRecord, SourceError> {
    let request = &task.request;
    let files = fetchers.files.clone();
    let staging = files.task_staging(task.task_id);
    let blobs = files.hf_repo_dir(&request.repo).join("blobs");
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
    let snapshot = tokio::task::spawn_blocking(move || {
        let snapshot = files.install_hf_snapshot(&repo_id, &revision, &commit, &staged);
        files.remove_task_staging_dir(&staging);
        snapshot
    })
    .await
    .map_err(|e| SourceError::Transient(format!("installing the files stopped: {e}")))?
    .map_err(|e| {
        SourceError::Transient(format!("could not install the files in the store: {e}"))
    })?;
    let now = Utc::now();
    let model_files: Vec<ModelFile> = fetched
        .files
        .iter()
        .map(|f| ModelFile {
            path: f.repo_path.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
        })
        .collect();
    Ok(ModelRecord {
        model_id: Uuid::now_v7(),
        model_tag: task.model_tag.clone(),
        name: request.repo.clone(),
        source: Source::Huggingface,
        revision: Some(request.revision.clone()),
        commit_sha: Some(fetched.commit),
        path: fetchers.files.relative(&snapshot),
        size_bytes: model_files.iter().map(|f| f.size).sum(),
        files: model_files,
        created_at: now,
        updated_at: now,
    })
}
