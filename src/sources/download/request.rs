//! One HTTP request for a file's bytes, redirects followed by hand so that
//! a bearer token only ever goes to its own origin and an LFS server's
//! headers only to theirs; and reading what the answer says of itself.

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use tokio_util::sync::CancellationToken;

use super::FileDownload;
use crate::error::ErrorCode;
use crate::secret::Secret;
use crate::sources::SourceError;

const MAX_REDIRECTS: usize = 10;

/// A bearer token and the only origin (`scheme://host:port`) it may go to.
#[derive(Debug, Clone)]
pub struct ScopedToken {
    pub token: Secret,
    pub origin: String,
}

impl ScopedToken {
    pub fn new(token: Secret, endpoint: &str) -> Option<Self> {
        let origin = Url::parse(endpoint).ok()?.origin().ascii_serialization();
        Some(Self { token, origin })
    }

    fn applies_to(&self, url: &Url) -> bool {
        url.origin().ascii_serialization() == self.origin
    }
}

/// Asks for `file`'s bytes `[start, end)`, or for the whole file (no
/// `Range`) when `range` is `None`; answers the first response that is not
/// a redirect.
pub async fn get(
    client: &reqwest::Client,
    file: &FileDownload,
    range: Option<(u64, u64)>,
    cancel: &CancellationToken,
) -> Result<reqwest::Response, SourceError> {
    let mut url = Url::parse(&file.url).map_err(|e| {
        SourceError::refused(
            ErrorCode::UpstreamError,
            format!("{}: bad URL {}: {e}", file.what, file.url),
        )
    })?;
    let origin = url.origin();
    for _ in 0..MAX_REDIRECTS {
        let mut request = client.get(url.clone());
        // Headers an LFS server handed out are for its own origin only.
        if url.origin() == origin {
            request = request.headers(file.headers.clone());
        }
        if let Some(token) = file.token.as_ref().filter(|t| t.applies_to(&url)) {
            request = request.bearer_auth(token.token.expose());
        }
        if let Some((start, end)) = range {
            request = request.header(header::RANGE, format!("bytes={start}-{}", end - 1));
        }
        let response = tokio::select! {
            _ = cancel.cancelled() => return Err(SourceError::Cancelled),
            sent = request.send() => sent.map_err(|e| SourceError::from_request(&e, &file.what))?,
        };
        if !response.status().is_redirection() {
            return Ok(response);
        }
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                SourceError::Transient(format!("{}: a redirect without a Location", file.what))
            })?;
        url = url.join(location).map_err(|e| {
            SourceError::refused(
                ErrorCode::UpstreamError,
                format!("{}: bad redirect to {location}: {e}", file.what),
            )
        })?;
    }
    Err(SourceError::refused(
        ErrorCode::UpstreamError,
        format!("{}: more than {MAX_REDIRECTS} redirects", file.what),
    ))
}

/// What an answer to a request for `[start, end)` of a file holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Answered {
    /// Exactly the bytes asked for, from `start` on.
    Range,
    /// The whole file from byte 0: the server ignored `Range` (or none was sent).
    Whole,
}

/// Reads the status of an answer to a request for `[start, end)`; errors
/// classify as `SourceError::from_status` does.
pub fn answered(
    response: &reqwest::Response,
    file: &FileDownload,
    start: u64,
) -> Result<Answered, SourceError> {
    match response.status() {
        StatusCode::PARTIAL_CONTENT if content_range_start(response) == Some(start) => {
            Ok(Answered::Range)
        }
        StatusCode::PARTIAL_CONTENT => Err(SourceError::Transient(format!(
            "{}: the server answered a range that does not start at byte {start}",
            file.what
        ))),
        StatusCode::RANGE_NOT_SATISFIABLE => Err(SourceError::Transient(format!(
            "{}: the server's file is shorter than listed; it will be fetched again",
            file.what
        ))),
        status if status.is_success() => Ok(Answered::Whole),
        status => Err(SourceError::from_status(
            status,
            &file.what,
            error_detail(response).as_deref(),
        )),
    }
}

fn content_range_start(response: &reqwest::Response) -> Option<u64> {
    let value = response
        .headers()
        .get(header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let range = value.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// The hub's explanation of an error, from `X-Error-Message` or `X-Error-Code`.
pub fn error_detail(response: &reqwest::Response) -> Option<String> {
    let headers = response.headers();
    ["x-error-message", "x-error-code"].iter().find_map(|name| {
        headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

/// Builds a header map from name/value pairs, skipping any that are not valid HTTP.
pub fn header_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> HeaderMap {
    pairs
        .into_iter()
        .filter_map(|(name, value)| {
            Some((
                header::HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect()
}
