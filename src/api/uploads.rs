//! `POST /v1/upload/huggingface` and `POST /v1/upload/github`: validate the
//! request with the rules the OpenAPI document states (`sources::names`),
//! answer 409 for a model that exists or is in flight, check the repository
//! upstream, then register a PENDING task and answer 201 with its
//! `Location`.

use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::auth::ApiKeyAuth;
use super::errors::{ApiError, BAD_INPUT, CONFLICT, NO_SPACE, NOT_FOUND, Refusal, UPSTREAM};
use super::objects::{GitHubUpload, HuggingFaceUpload, Task};
use super::{ApiTags, AppState};
use crate::actors::RegistryMsg;
use crate::error::{AppError, ErrorCode, FailureCode};
use crate::sources::SourceError;
use crate::sources::github::GithubRepo;
use crate::sources::huggingface::HfRepoId;
use crate::sources::{is_valid_revision, names};
use crate::store::{Source, UploadRequest, UploadTask};

/// What a GitHub upload can refuse with, besides 401, 422 and 500.
type UploadRefusal = Refusal<{ BAD_INPUT | NOT_FOUND | CONFLICT | UPSTREAM }>;
/// A Hugging Face upload can also find that its files do not fit (507).
type HfUploadRefusal = Refusal<{ BAD_INPUT | NOT_FOUND | CONFLICT | UPSTREAM | NO_SPACE }>;

/// Patterns fetched when a request names none.
pub const DEFAULT_ALLOW_PATTERNS: [&str; 4] = ["*.safetensors", "*.json", "*.txt", "*.model"];

/// The answer to an accepted remote upload.
#[derive(ApiResponse)]
pub enum TaskCreated {
    /// The task is stored as PENDING and will run in the background;
    /// `Location` is where to follow it.
    #[oai(status = 201)]
    Created(Json<Task>, #[oai(header = "Location")] String),
}

impl TaskCreated {
    fn new(task: UploadTask) -> Self {
        let location = format!("/v1/upload/tasks/{}", task.task_id);
        TaskCreated::Created(Json(task.into()), location)
    }
}

pub struct UploadsApi {
    pub state: Arc<AppState>,
}

#[OpenApi(tag = "ApiTags::Uploads")]
impl UploadsApi {
    /// Upload a model from the Hugging Face Hub
    ///
    /// Checks the repository and revision on the hub, then downloads the
    /// files matching `allow_patterns` in the background into the Hugging
    /// Face cache layout. Follow the task at the `Location` it answers.
    #[oai(
        path = "/v1/upload/huggingface",
        method = "post",
        operation_id = "upload_huggingface"
    )]
    async fn upload_huggingface(
        &self,
        _auth: ApiKeyAuth,
        body: Json<HuggingFaceUpload>,
    ) -> Result<TaskCreated, HfUploadRefusal> {
        let body = body.0;
        let repo = HfRepoId::parse(&body.model_tag)
            .map_err(|m| AppError::new(ErrorCode::InvalidModelTag, m))?;
        let revision = checked_revision(body.revision.as_deref(), ErrorCode::InvalidModelTag)?;
        let allow_patterns = match body.allow_patterns {
            None => DEFAULT_ALLOW_PATTERNS
                .iter()
                .map(|p| p.to_string())
                .collect(),
            Some(patterns) => check_patterns(patterns.0.into_iter().map(|p| p.0).collect())?,
        };
        let model_tag = format!("{}@{revision}", repo.as_str());
        let task = UploadTask::new(
            Source::Huggingface,
            model_tag,
            UploadRequest {
                repo: repo.as_str().to_string(),
                revision: revision.clone(),
                allow_patterns: allow_patterns.clone(),
            },
        );
        let hub = &self.state.hub;
        let cache_blobs = self.state.files.hf_repo_dir(repo.as_str()).join("blobs");
        self.submit(
            task,
            "the Hugging Face Hub",
            hub.check_upload(&repo, &revision, &allow_patterns, &cache_blobs),
        )
        .await
        .map_err(Into::into)
    }

    /// Upload a model from GitHub
    ///
    /// Checks the repository and revision on GitHub, then clones it in the
    /// background (Git LFS weights included), checks the model's files and
    /// installs the folder holding the weights. Follow the task at the
    /// `Location` it answers.
    #[oai(
        path = "/v1/upload/github",
        method = "post",
        operation_id = "upload_github"
    )]
    async fn upload_github(
        &self,
        _auth: ApiKeyAuth,
        body: Json<GitHubUpload>,
    ) -> Result<TaskCreated, UploadRefusal> {
        let body = body.0;
        let repo = GithubRepo::parse(&body.owner, &body.repo_name)
            .map_err(|m| AppError::new(ErrorCode::InvalidUrl, m))?;
        let revision = github_revision(&body)?;
        let revision = checked_revision(revision, ErrorCode::InvalidUrl)?;
        let task = UploadTask::new(
            Source::Github,
            format!("{}@{revision}", repo.full_name()),
            UploadRequest {
                repo: repo.full_name(),
                revision: revision.clone(),
                allow_patterns: Vec::new(),
            },
        );
        let github = &self.state.github;
        let check = async { github.resolve(&repo, &revision).await.map(|_| ()) };
        self.submit(task, "GitHub", check).await.map_err(Into::into)
    }
}

impl UploadsApi {
    /// Runs the checks every remote upload shares, in the contract's order
    /// (409 first, then upstream), and registers the task.
    async fn submit(
        &self,
        task: UploadTask,
        upstream: &str,
        check: impl Future<Output = Result<(), SourceError>>,
    ) -> Result<TaskCreated, ApiError> {
        self.state.refuse_duplicate(&task).await?;
        check.await.map_err(|e| match e {
            SourceError::Transient(m) | SourceError::Corrupt(m) => AppError::new(
                ErrorCode::UpstreamError,
                format!("{upstream} could not be asked: {m}"),
            ),
            SourceError::Permanent(FailureCode::Table(ErrorCode::InsufficientStorage), m) => {
                AppError::new(ErrorCode::InsufficientStorage, m)
            }
            SourceError::Permanent(_, m) => AppError::new(ErrorCode::NotFound, m),
            SourceError::Cancelled => AppError::internal("an upstream check was cancelled"),
        })?;
        let task = self
            .state
            .actors
            .ask(|reply| RegistryMsg::Submit {
                task: Box::new(task),
                reply,
            })
            .await?;
        Ok(TaskCreated::new(task))
    }
}

/// The revision a GitHub request names: `revision` or its synonym `tag`.
/// Both at once is refused even when they agree: the document can say
/// "not both", not "both the same".
fn github_revision(body: &GitHubUpload) -> Result<Option<&str>, AppError> {
    match (body.revision.as_deref(), body.tag.as_deref()) {
        (Some(revision), Some(tag)) => Err(AppError::new(
            ErrorCode::ValidationError,
            format!(
                "'revision' ({revision}) and its synonym 'tag' ({tag}) were both given; give one of them"
            ),
        )),
        (revision, tag) => Ok(revision.or(tag)),
    }
}

/// The revision as given when it follows `names::REVISION`, `main` when
/// it is empty or missing; otherwise `refused` with a sentence saying why.
fn checked_revision(revision: Option<&str>, refused: ErrorCode) -> Result<String, AppError> {
    match revision.unwrap_or_default() {
        "" => Ok("main".into()),
        revision if is_valid_revision(revision) => Ok(revision.into()),
        revision => Err(AppError::new(
            refused,
            format!(
                "'{revision}' is not a branch, tag or commit name the service takes: use at most \
                 255 letters, digits, '_', '-', '.' and '/', where no '/'-separated part starts or \
                 ends with '.', holds '..' or ends in '.lock'"
            ),
        )),
    }
}

/// The globs as given, when there is at least one and each follows
/// `names::FILE_GLOB`; 422 otherwise.
fn check_patterns(patterns: Vec<String>) -> Result<Vec<String>, AppError> {
    if patterns.is_empty() {
        return Err(AppError::new(
            ErrorCode::ValidationError,
            "allow_patterns must hold at least one glob pattern, or be left out",
        ));
    }
    for pattern in &patterns {
        let refused = |why: String| {
            AppError::new(
                ErrorCode::ValidationError,
                format!("allow pattern '{pattern}' is not a glob the service takes: {why}"),
            )
        };
        if !names::FILE_GLOB.accepts(pattern) {
            return Err(refused(
                "use letters, digits, '_', '.', '-', '/', '+', '@', '=' and the wildcards '*' and '?'"
                    .into(),
            ));
        }
        globset::Glob::new(pattern).map_err(|e| refused(e.to_string()))?;
    }
    Ok(patterns)
}
