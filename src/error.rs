//! The one error table: every `ErrorCode` the API can answer, with its HTTP
//! status. Layers keep their own error enums (`StoreError`, `SourceError`,
//! `ApiError`) and map into this table; nothing else decides a status.

use poem::http::StatusCode;
use serde::{Deserialize, Serialize};

/// The machine-readable `code` of an error body, as listed in API.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidUrl,
    InvalidModelTag,
    InvalidFile,
    EmptyFile,
    Unauthorized,
    NotFound,
    NoValidModels,
    ModelAlreadyExists,
    UploadInProgress,
    TaskFinished,
    PayloadTooLarge,
    ValidationError,
    ServerError,
    UpstreamError,
    InsufficientStorage,
    RepoNotFound,
    RevisionNotFound,
    EntryNotFound,
    RangeNotSatisfiable,
    MethodNotAllowed,
}

impl ErrorCode {
    /// The HTTP status each code is answered with.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            InvalidUrl | InvalidModelTag | InvalidFile | EmptyFile => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            NotFound | NoValidModels | RepoNotFound | RevisionNotFound | EntryNotFound => {
                StatusCode::NOT_FOUND
            }
            ModelAlreadyExists | UploadInProgress | TaskFinished => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ValidationError => StatusCode::UNPROCESSABLE_ENTITY,
            ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            UpstreamError => StatusCode::BAD_GATEWAY,
            InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The code as it appears on the wire, e.g. `MODEL_ALREADY_EXISTS`.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidUrl => "INVALID_URL",
            InvalidModelTag => "INVALID_MODEL_TAG",
            InvalidFile => "INVALID_FILE",
            EmptyFile => "EMPTY_FILE",
            Unauthorized => "UNAUTHORIZED",
            NotFound => "NOT_FOUND",
            NoValidModels => "NO_VALID_MODELS",
            ModelAlreadyExists => "MODEL_ALREADY_EXISTS",
            UploadInProgress => "UPLOAD_IN_PROGRESS",
            TaskFinished => "TASK_FINISHED",
            PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ValidationError => "VALIDATION_ERROR",
            ServerError => "SERVER_ERROR",
            UpstreamError => "UPSTREAM_ERROR",
            InsufficientStorage => "INSUFFICIENT_STORAGE",
            RepoNotFound => "REPO_NOT_FOUND",
            RevisionNotFound => "REVISION_NOT_FOUND",
            EntryNotFound => "ENTRY_NOT_FOUND",
            RangeNotSatisfiable => "RANGE_NOT_SATISFIABLE",
            MethodNotAllowed => "METHOD_NOT_ALLOWED",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a task ended FAILED or CANCELLED, as its `error_code` (API.md, the
/// task object): a code of the table above, or one that only tasks carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCode {
    /// A code of the table: e.g. `NOT_FOUND` upstream, `UNAUTHORIZED` by
    /// the upstream, `INSUFFICIENT_STORAGE`.
    Table(ErrorCode),
    /// The upstream could not be reached or kept failing (retries ran out).
    UpstreamUnavailable,
    /// Bytes did not match their sha256 or size (retries ran out).
    ChecksumMismatch,
    /// A weights file that does not read as what it claims to be.
    InvalidWeights,
    /// A pickle that torch's `weights_only` loader would refuse.
    UnsafePickle,
    /// Files a model needs are missing, or the repository's layout is not one model's.
    MissingFiles,
    /// The node running the last attempt died.
    Interrupted,
    /// A client cancelled the task.
    Cancelled,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::Table(code) => code.as_str(),
            FailureCode::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            FailureCode::ChecksumMismatch => "CHECKSUM_MISMATCH",
            FailureCode::InvalidWeights => "INVALID_WEIGHTS",
            FailureCode::UnsafePickle => "UNSAFE_PICKLE",
            FailureCode::MissingFiles => "MISSING_FILES",
            FailureCode::Interrupted => "INTERRUPTED",
            FailureCode::Cancelled => "CANCELLED",
        }
    }
}

/// An error on its way to a client: a code from the table and a sentence a
/// person can act on. `location` is set for `UPLOAD_IN_PROGRESS`, which names
/// the task already running.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AppError {
    pub code: ErrorCode,
    pub message: String,
    pub location: Option<String>,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            location: None,
        }
    }

    pub fn with_location(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    /// 409 for a model the store has already.
    pub fn model_exists(source: &str, model_tag: &str) -> Self {
        Self::new(
            ErrorCode::ModelAlreadyExists,
            format!("model '{model_tag}' ({source}) already exists"),
        )
    }

    /// A server-side failure: the detail is logged, the client gets a short sentence.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            ErrorCode::ServerError,
            "the server hit an unexpected error; it has been logged",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_wire_names() {
        for code in [
            ErrorCode::ModelAlreadyExists,
            ErrorCode::ValidationError,
            ErrorCode::UpstreamError,
        ] {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
        }
    }
}
