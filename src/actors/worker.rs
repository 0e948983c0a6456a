//! `UploadWorker`: runs one attempt of one task, then stops. Success and
//! permanent failures are reported to the registry before a normal stop; a
//! transient failure is returned as the handler's error, so the actor fails
//! and the supervisor decides about a retry. Cancellation comes through the
//! token, which the sources watch at every await.
//!
//! Installing is the one step that touches files other tasks and nodes
//! share: it holds the reservation of the repository's folder from just
//! before the files are renamed into place until the model is registered
//! (or the installed files are taken away again), and the lease is checked
//! in the transaction that takes it: a worker whose lease is gone installs
//! nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::Fetchers;
use super::registry::RegistryMsg;
use crate::error::ErrorCode;
use crate::sources::{ProgressSink, SourceError};
use crate::store::files::{ModelFiles, remove_dir_if_present};
use crate::store::reservations::folder_key;
use crate::store::{Lease, ModelFile, ModelRecord, Reservation, Source, StoreError, UploadTask};

/// How often progress is reported to the registry while an attempt runs.
const REPORT_EVERY: Duration = Duration::from_millis(250);

pub struct UploadWorker;

pub struct WorkerArgs {
    pub task: UploadTask,
    /// The claim this attempt runs under; every write is fenced by it.
    pub lease: Lease,
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
        // Every line this attempt logs names its task and node.
        let span =
            tracing::info_span!("task", task_id = %state.task.task_id, node = %state.lease.node);
        run(myself, state).instrument(span).await
    }
}

/// Runs one attempt and reports its end to the registry (DONE, FAILED) or,
/// for a transient failure, to the supervisor through the error.
async fn run(
    myself: ActorRef<WorkerMsg>,
    state: &mut WorkerArgs,
) -> Result<(), ActorProcessingErr> {
    let id = state.task.task_id;
    let progress = ProgressSink::default();
    let reporter = tokio::spawn(report_progress(
        id,
        progress.clone(),
        state.registry.clone(),
    ));
    let outcome = attempt(state, &progress).await;
    reporter.abort();
    let _ = state.registry.cast(RegistryMsg::Progress {
        id,
        progress: progress.snapshot(),
    });
    match outcome {
        Ok((model, reservation)) => {
            tracing::info!(model_tag = %model.model_tag, "files installed; registering the model");
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
            // Only a definite "not registered" takes the files away: a
            // timeout or an error may hide a completion that committed.
            // A folder that a registered model uses (another revision
            // name of the commit, or this very upload finished by the
            // node that took the task over) is theirs: nothing of it goes.
            if matches!(answer, Ok(CallResult::Success(Ok(false))))
                && let Ok(0) = state.fetchers.store.count_models_at(&model.path).await
                && reservation.still_held().await
            {
                tracing::info!(task_id = %id, "task ended before its files were registered; removing them");
                let files = state.fetchers.files.clone();
                let _ =
                    tokio::task::spawn_blocking(move || files.remove_model(&model, false)).await;
            }
            reservation.release().await;
        }
        Err(SourceError::Cancelled) => tracing::info!(task_id = %id, "attempt cancelled"),
        Err(error @ SourceError::Permanent(..)) => {
            let code = Some(error.code().as_str().to_string());
            let message = error.to_string();
            tracing::warn!(task_id = %id, error = %message, "task failed");
            let files = state.fetchers.files.clone();
            let _ = tokio::task::spawn_blocking(move || files.remove_task_staging(id)).await;
            state
                .registry
                .cast(RegistryMsg::Failed { id, message, code })?;
        }
        // The supervisor retries, and reads the code from the error
        // when the retries run out.
        Err(error @ (SourceError::Transient(_) | SourceError::Corrupt(_))) => {
            return Err(Box::new(error));
        }
    }
    myself.stop(None);
    Ok(())
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

/// A model installed in the store and not yet registered, with the
/// reservation of its folder.
type Installed = (ModelRecord, Reservation);

/// One attempt: fetch into staging, validate, install, describe the model.
async fn attempt(state: &WorkerArgs, progress: &ProgressSink) -> Result<Installed, SourceError> {
    let (fetchers, task, cancel) = (&*state.fetchers, &state.task, &state.cancel);
    let lease = &state.lease;
    match task.source {
        Source::Huggingface => attempt_huggingface(fetchers, task, lease, progress, cancel).await,
        Source::Github => attempt_github(fetchers, task, lease, progress, cancel).await,
        other => Err(SourceError::refused(
            ErrorCode::ServerError,
            format!(
                "uploads from {} are not supported by this server yet",
                other.as_str()
            ),
        )),
    }
}

async fn attempt_github(
    fetchers: &Fetchers,
    task: &UploadTask,
    lease: &Lease,
    progress: &ProgressSink,
    cancel: &CancellationToken,
) -> Result<Installed, SourceError> {
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
    let (installed, reservation) = install(fetchers, task, lease, staging, move |files| {
        files.install_github_folder(&repo, &commit, &folder)
    })
    .await?;
    let model = remote_model(fetchers, task, fetched.commit, &installed, fetched.files);
    Ok((model, reservation))
}

async fn attempt_huggingface(
    fetchers: &Fetchers,
    task: &UploadTask,
    lease: &Lease,
    progress: &ProgressSink,
    cancel: &CancellationToken,
) -> Result<Installed, SourceError> {
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
    let (snapshot, reservation) = install(fetchers, task, lease, staging, move |files| {
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
    let model = remote_model(fetchers, task, fetched.commit, &snapshot, model_files);
    Ok((model, reservation))
}

/// Longest an install waits for another install or delete of the same
/// repository to finish.
const RESERVE_WITHIN: Duration = Duration::from_secs(60);

/// Reserves the repository's folder, checks the lease once more, and runs
/// `place` (renames into the store) off the async runtime; the task's
/// staging folder goes whatever happened. The reservation is held on
/// success, until the model is registered.
async fn install(
    fetchers: &Fetchers,
    task: &UploadTask,
    lease: &Lease,
    staging: PathBuf,
    place: impl FnOnce(&ModelFiles) -> std::io::Result<PathBuf> + Send + 'static,
) -> Result<(PathBuf, Reservation), SourceError> {
    let store = &fetchers.store;
    let key = folder_key(task.source, &task.request.repo);
    // The lease's epoch tells this attempt from a later one on another node.
    let holder = format!("task:{}@{}#{}", task.task_id, lease.node, lease.epoch);
    // The lease is checked with the reservation: a worker whose lease is
    // gone (cancelled, or taken over while this node was away) installs
    // nothing; the registry finds the lease gone at its next heartbeat and
    // the supervisor removes this node's staging then.
    let reservation = match store
        .reserve_fenced(&key, &holder, RESERVE_WITHIN, Some(lease))
        .await
    {
        Ok(reservation) => reservation,
        Err(StoreError::LeaseLost) => return Err(SourceError::Cancelled),
        Err(e) => {
            return Err(SourceError::Transient(format!(
                "could not reserve the model's folder: {e}"
            )));
        }
    };
    let files = fetchers.files.clone();
    let placed = tokio::task::spawn_blocking(move || {
        let placed = place(&files);
        remove_dir_if_present(&staging);
        placed
    })
    .await;
    let failure = match placed {
        Ok(Ok(path)) => return Ok((path, reservation)),
        Ok(Err(e)) => format!("could not install the files in the store: {e}"),
        Err(e) => format!("installing the files stopped: {e}"),
    };
    reservation.release().await;
    Err(SourceError::Transient(failure))
}

/// The record of a model fetched by a remote task, installed at `folder`.
fn remote_model(
    fetchers: &Fetchers,
    task: &UploadTask,
    commit: String,
    folder: &Path,
    files: Vec<ModelFile>,
) -> ModelRecord {
    ModelRecord::new(
        task.source,
        task.model_tag.clone(),
        task.request.repo.clone(),
        Some((task.request.revision.clone(), commit)),
        fetchers.files.relative(folder),
        files,
    )
}
