//! The body of `POST /v1/upload/local`: `multipart/form-data` whose `file`
//! field is streamed to a temporary file in bounded chunks, counted as it
//! arrives, so memory stays flat and a body past the limit ends with 413
//! whether or not it declared a `Content-Length`. poem-openapi's `Upload`
//! would copy the whole field before the handler runs, so `ZipUploadForm`
//! is an extractor of its own: it only documents the form in the OpenAPI
//! document and keeps the unread body. This module owns the temporary file
//! of the body; it must not look inside the archive or touch the store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use poem::web::{Field, Multipart};
use poem::{FromRequest, IntoResponse, Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use tempfile::TempPath;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use crate::api::errors::ApiError;
use crate::error::{AppError, ErrorCode};
use crate::sources::local_zip::archive_stem;

/// The form field that carries the archive.
const FILE_FIELD: &str = "file";
/// Bytes read from the body at a time, and written to disk at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// After an answer that leaves the body unread (413, a wrong file name),
/// the rest of it is read and dropped for a while, so that a client still
/// sending gets to read the answer instead of a reset connection.
const LINGER: Duration = Duration::from_secs(3);
const LINGER_BYTES: u64 = 256 * 1024 * 1024;

/// `multipart/form-data` with the field `file`: a ZIP archive whose name
/// ends in `.zip`. The body is left unread until `receive`.
pub struct ZipUploadForm {
    multipart: Multipart,
    content_length: Option<u64>,
}

/// An uploaded archive in a temporary file, removed when this is dropped.
pub struct ReceivedArchive {
    /// The name the client gave the file.
    pub file_name: String,
    pub path: TempPath,
}

impl ZipUploadForm {
    /// Streams the `file` field to a temporary file in `tmp_dir`: 413 past
    /// `max_bytes`, 400 for a name that does not end in `.zip`, 422 for a
    /// form without the field. Whatever the outcome, the part of the body
    /// left unread is drained in the background, within bounds.
    pub async fn receive(
        mut self,
        tmp_dir: &Path,
        max_bytes: u64,
    ) -> Result<ReceivedArchive, AppError> {
        let received = self.receive_file(tmp_dir, max_bytes).await;
        tokio::spawn(linger(self.multipart));
        received
    }

    async fn receive_file(
        &mut self,
        tmp_dir: &Path,
        max_bytes: u64,
    ) -> Result<ReceivedArchive, AppError> {
        if self.content_length.is_some_and(|n| n > max_bytes) {
            return Err(too_large(max_bytes));
        }
        let mut budget = max_bytes;
        while let Some(field) = self.multipart.next_field().await.map_err(malformed)? {
            if field.name() != Some(FILE_FIELD) {
                budget -= skip_field(field, budget, max_bytes).await?;
                continue;
            }
            let file_name = field.file_name().map(str::to_string).ok_or_else(|| {
                AppError::new(
                    ErrorCode::InvalidFile,
                    "the 'file' field has no file name; send a file whose name ends in .zip",
                )
            })?;
            archive_stem(&file_name).map_err(|e| AppError::new(e.code(), e.to_string()))?;
            let path = stream_to_temp_file(field, tmp_dir, budget, max_bytes).await?;
            return Ok(ReceivedArchive { file_name, path });
        }
        Err(AppError::new(
            ErrorCode::ValidationError,
            "the form has no 'file' field: send the ZIP archive as the multipart field 'file'",
        ))
    }
}

/// Reads a form field that is not the archive and drops it; its bytes
/// count against the limit like the archive's. Returns how many it read.
async fn skip_field(field: Field, budget: u64, max_bytes: u64) -> Result<u64, AppError> {
    let reader = field.into_async_read();
    tokio::pin!(reader);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut read = 0u64;
    loop {
        let n = reader.read(&mut chunk).await.map_err(malformed)?;
        if n == 0 {
            return Ok(read);
        }
        read += n as u64;
        if read > budget {
            return Err(too_large(max_bytes));
        }
    }
}

/// Writes the field to a new temporary file, chunk by chunk; past
/// `budget` bytes the file is dropped (and so removed) and the answer is
/// 413. `max_bytes` is the limit as the client is told it.
async fn stream_to_temp_file(
    field: Field,
    tmp_dir: &Path,
    budget: u64,
    max_bytes: u64,
) -> Result<TempPath, AppError> {
    let (file, path) = create_temp_file(tmp_dir.to_path_buf()).await?.into_parts();
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, tokio::fs::File::from_std(file));
    let reader = field.into_async_read();
    tokio::pin!(reader);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut written = 0u64;
    loop {
        let n = reader.read(&mut chunk).await.map_err(malformed)?;
        if n == 0 {
            break;
        }
        written += n as u64;
        if written > budget {
            return Err(too_large(max_bytes));
        }
        writer
            .write_all(&chunk[..n])
            .await
            .map_err(AppError::internal)?;
    }
    writer.flush().await.map_err(AppError::internal)?;
    Ok(path)
}

async fn create_temp_file(tmp_dir: PathBuf) -> Result<tempfile::NamedTempFile, AppError> {
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&tmp_dir)?;
        tempfile::Builder::new()
            .prefix("upload-")
            .suffix(".zip")
            .tempfile_in(&tmp_dir)
    })
    .await
    .map_err(AppError::internal)?
    .map_err(AppError::internal)
}

/// Reads what is left of the body and drops it, for at most `LINGER` and
/// `LINGER_BYTES`; then the connection closes if the body has not ended.
async fn linger(mut multipart: Multipart) {
    let drain = async {
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        let mut drained = 0u64;
        while let Ok(Some(field)) = multipart.next_field().await {
            let reader = field.into_async_read();
            tokio::pin!(reader);
            while let Ok(n @ 1..) = reader.read(&mut chunk).await {
                drained += n as u64;
                if drained > LINGER_BYTES {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

fn too_large(max_bytes: u64) -> AppError {
    AppError::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "the upload is larger than the {max_bytes} bytes this server accepts \
             (VECTORIZE_MAX_UPLOAD_BYTES)"
        ),
    )
}

fn malformed(err: impl std::fmt::Display) -> AppError {
    AppError::new(
        ErrorCode::ValidationError,
        format!("the multipart/form-data body cannot be read: {err}"),
    )
}

/// The form as the OpenAPI document shows it, so that Swagger UI's "Try it
/// out" offers a file picker.
fn form_schema() -> MetaSchemaRef {
    let file = MetaSchema {
        format: Some("binary"),
        description: Some("A ZIP archive whose file name ends in .zip."),
        ..MetaSchema::new("string")
    };
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        required: vec![FILE_FIELD],
        properties: vec![(FILE_FIELD, MetaSchemaRef::Inline(Box::new(file)))],
        ..MetaSchema::new("object")
    }))
}

impl<'a> ApiExtractor<'a> for ZipUploadForm {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "multipart/form-data",
                schema: form_schema(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let multipart = <Multipart as FromRequest>::from_request(request, body)
            .await
            .map_err(|e| {
                let answer = ApiError::from(AppError::new(
                    ErrorCode::ValidationError,
                    format!(
                        "send the archive as multipart/form-data with the field 'file' ({})",
                        e.to_string().to_lowercase()
                    ),
                ));
                poem::Error::from_response(answer.into_response())
            })?;
        let content_length = request
            .headers()
            .get(poem::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Self {
            multipart,
            content_length,
        })
    }
}
