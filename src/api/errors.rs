//! Errors as the HTTP contract shows them: every non-2xx answer is JSON
//! `{code, message}`. `ApiError` documents the error answers of every
//! operation in the OpenAPI document; `render_error` turns whatever else
//! poem raises (a body that does not parse, a malformed UUID, an unknown
//! route) into the same shape, with 422 `VALIDATION_ERROR` for bad input.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::ApiResponse;
use poem_openapi::payload::Json;

use super::objects::ErrorBody;
use crate::error::{AppError, ErrorCode};

/// The error answers an operation can give.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The input cannot be used: an invalid repo id, GitHub URL or archive.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `VECTORIZE_API_KEY` is set and the request lacks `Authorization: Bearer <key>`.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// No such task or model here, or no such repository or revision upstream.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The model exists, an upload of it is in flight (`Location` names its
    /// task), or the task has already ended.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>, #[oai(header = "Location")] Option<String>),
    /// The path does not serve this method; `Allow` lists those it does.
    #[oai(status = 405)]
    MethodNotAllowed(Json<ErrorBody>),
    /// The request body is larger than `VECTORIZE_MAX_UPLOAD_BYTES`.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// Malformed JSON, a missing or empty field, a malformed UUID or query parameter.
    #[oai(status = 422)]
    Validation(Json<ErrorBody>),
    /// An unexpected error; the detail is in the server's log.
    #[oai(status = 500)]
    Server(Json<ErrorBody>),
    /// Hugging Face or GitHub could not be reached or answered with an error.
    #[oai(status = 502)]
    Upstream(Json<ErrorBody>),
    /// The `Range` asked for lies outside the file (`Content-Range` gives its size).
    #[oai(status = 416)]
    RangeNotSatisfiable(Json<ErrorBody>),
    /// The files the upload needs do not fit in the free space of the
    /// store's file system, less `VECTORIZE_MIN_FREE_BYTES`.
    #[oai(status = 507)]
    InsufficientStorage(Json<ErrorBody>),
}

impl From<AppError> for ApiError {
    fn from(err: AppError) -> Self {
        let body = Json(ErrorBody {
            code: err.code.as_str().to_string(),
            message: err.message,
        });
        match err.code.status().as_u16() {
            400 => ApiError::BadRequest(body),
            401 => ApiError::Unauthorized(body),
            404 => ApiError::NotFound(body),
            405 => ApiError::MethodNotAllowed(body),
            409 => ApiError::Conflict(body, err.location),
            413 => ApiError::PayloadTooLarge(body),
            416 => ApiError::RangeNotSatisfiable(body),
            422 => ApiError::Validation(body),
            502 => ApiError::Upstream(body),
            507 => ApiError::InsufficientStorage(body),
            _ => ApiError::Server(body),
        }
    }
}

/// A JSON error response outside any operation.
pub fn error_response(code: ErrorCode, message: impl Into<String>) -> Response {
    ApiError::from(AppError::new(code, message)).into_response()
}

/// The last word on every error poem raises: answers that are already in
/// the contract's shape pass through; the rest are put into it.
pub async fn render_error(err: poem::Error) -> Response {
    if let Some(param) = err.downcast_ref::<poem_openapi::error::ParseParamError>() {
        return error_response(ErrorCode::ValidationError, parameter_refused(param));
    }
    let message = err.to_string();
    let status = err.status();
    let response = err.into_response();
    let is_json = response
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    match status {
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::UNSUPPORTED_MEDIA_TYPE => error_response(
            ErrorCode::ValidationError,
            format!("the request is not valid: {message}"),
        ),
        StatusCode::NOT_FOUND => error_response(
            ErrorCode::NotFound,
            "there is nothing at this path; see /docs for the routes",
        ),
        // `allow::MethodNotAllowed` answers these with `Allow` first.
        StatusCode::METHOD_NOT_ALLOWED => error_response(
            ErrorCode::MethodNotAllowed,
            "this path does not accept that method; see /docs",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            error_response(ErrorCode::PayloadTooLarge, "the request body is too large")
        }
        StatusCode::UNAUTHORIZED => error_response(ErrorCode::Unauthorized, message),
        _ => {
            tracing::error!(%status, error = %message, "unhandled error");
            error_response(
                ErrorCode::ServerError,
                "the server hit an unexpected error; it has been logged",
            )
        }
    }
}

/// What a person needs to fix a query or path parameter the API could not
/// read: what the parameter takes, where one sentence can say it.
fn parameter_refused(param: &poem_openapi::error::ParseParamError) -> String {
    let takes = match param.name {
        "status" => {
            "a task status in capitals: PENDING, RUNNING, DONE, FAILED or CANCELLED \
             (a deletion takes only finished ones, DONE, FAILED and CANCELLED, comma-separated: \
             cancel a task in flight instead)"
        }
        "source" => "HUGGINGFACE, GITHUB or LOCAL",
        "before" => "an RFC 3339 time, e.g. 2026-12-01T00:00:00Z",
        "limit" => "a whole number from 1 to 1000",
        "offset" => "a whole number from 0 to 4294967295",
        "task_id" | "model_id" => "a UUID, as the service answered it",
        _ => {
            return format!(
                "the parameter `{}` is not valid: {}",
                param.name, param.reason
            );
        }
    };
    format!("the parameter `{}` takes {takes}", param.name)
}

/// The error answers one operation documents: a set of the statuses above,
/// so that Swagger UI shows each operation only the refusals it can give.
/// 401, 422 and 500 can come from any operation (the API key, a malformed
/// request, a fault) and are always documented; the others are chosen per
/// operation with the bits below. The answer itself is an `ApiError`.
#[derive(Debug)]
pub struct Refusal<const DOCUMENTED: u16>(pub ApiError);

/// 400: the input cannot be used.
pub const BAD_INPUT: u16 = 1;
/// 404: no such thing here or upstream.
pub const NOT_FOUND: u16 = 1 << 1;
/// 409: exists, in flight, or already ended.
pub const CONFLICT: u16 = 1 << 2;
/// 413: the body is too large.
pub const TOO_LARGE: u16 = 1 << 3;
/// 502: the upstream could not be asked.
pub const UPSTREAM: u16 = 1 << 4;
/// 507: the files do not fit in the store.
pub const NO_SPACE: u16 = 1 << 5;
/// 416: the range lies outside the file.
pub const BAD_RANGE: u16 = 1 << 6;

/// Whether `status` is among the documented statuses `documented`.
fn is_documented(documented: u16, status: u16) -> bool {
    match status {
        400 => documented & BAD_INPUT != 0,
        404 => documented & NOT_FOUND != 0,
        409 => documented & CONFLICT != 0,
        413 => documented & TOO_LARGE != 0,
        502 => documented & UPSTREAM != 0,
        507 => documented & NO_SPACE != 0,
        416 => documented & BAD_RANGE != 0,
        // A property of the path, not of one operation.
        405 => false,
        _ => true,
    }
}

impl<const D: u16> poem_openapi::ApiResponse for Refusal<D> {
    fn meta() -> poem_openapi::registry::MetaResponses {
        let mut meta = ApiError::meta();
        meta.responses
            .retain(|r| r.status.is_none_or(|s| is_documented(D, s)));
        meta
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        ApiError::register(registry);
    }
}

impl<const D: u16> From<AppError> for Refusal<D> {
    fn from(err: AppError) -> Self {
        Self(err.into())
    }
}

impl<const D: u16> From<ApiError> for Refusal<D> {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

impl<const D: u16> From<Refusal<D>> for poem::Error {
    fn from(refusal: Refusal<D>) -> Self {
        refusal.0.into()
    }
}
