//! The HTTP client of the vectorize API: one method per route the command
//! line uses, the bearer key on every request, and every answer turned into
//! the client's objects or a `CliError` (the service's `{code, message}`
//! for a refusal, a sentence naming the URL for a connection failure). It
//! draws nothing and knows no command; the event stream is handed over as
//! a response for `events` to read.

use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt;
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde_json::Value;
use uuid::Uuid;
use vectorize::secret::Secret;

use super::error::CliError;
use super::objects::Task;

/// Connecting gives up after this; a service on loopback or a LAN answers
/// far sooner.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests that only read or change a record; uploads of archives and the
/// event stream have no overall limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A client of one vectorize service.
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    api_key: Option<Secret>,
}

impl ApiClient {
    /// A client of the service at `url` (`http://` or `https://`, perhaps
    /// with a path prefix behind a reverse proxy).
    pub fn new(url: &str, api_key: Option<Secret>) -> Result<ApiClient, CliError> {
        let base = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "'{url}' is not the URL of a vectorize service; give one like \
                     http://127.0.0.1:8000 with --url or VECTORIZE_URL"
                ))
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("vectorize-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot set up the HTTP client: {e}")))?;
        let api_key = api_key.and_then(Secret::non_empty);
        Ok(ApiClient {
            http,
            base,
            api_key,
        })
    }

    /// The service's URL as given.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_with(method, path, &[])
    }

    /// A request with a query string, each value percent-encoded.
    fn request_with(&self, method: Method, path: &str, query: &[(&str, &str)]) -> RequestBuilder {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", url.path().trim_end_matches('/')));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let request = self.http.request(method, url);
        match &self.api_key {
            Some(key) => request.bearer_auth(key.expose()),
            None => request,
        }
    }

    /// Sends a request and reads its JSON answer (`Null` when empty);
    /// refusals become `Refused`.
    async fn call(&self, request: RequestBuilder) -> Result<Value, CliError> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let response = self.accept(response).await?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|_| self.not_vectorize(status))
    }

    /// Passes a 2xx answer on; turns any other into the error it carries.
    async fn accept(&self, response: reqwest::Response) -> Result<reqwest::Response, CliError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let location = header(&response, reqwest::header::LOCATION);
        let body: Value = response
            .json()
            .await
            .map_err(|_| self.not_vectorize(status))?;
        match (body["code"].as_str(), body["message"].as_str()) {
            (Some(code), Some(message)) => Err(CliError::Refused {
                status: status.as_u16(),
                code: code.to_string(),
                message: message.to_string(),
                location,
            }),
            _ => Err(self.not_vectorize(status)),
        }
    }

    fn unreachable(&self, err: &reqwest::Error) -> CliError {
        CliError::Connection(format!(
            "cannot reach the vectorize service at {}: {}",
            self.base(),
            causes(err)
        ))
    }

    fn not_vectorize(&self, status: StatusCode) -> CliError {
        CliError::Connection(format!(
            "{} answered {status} in a shape vectorize does not use; is it a vectorize service?",
            self.base()
        ))
    }

    async fn task_answer(&self, request: RequestBuilder) -> Result<Task, CliError> {
        let json = self.call(request.timeout(REQUEST_TIMEOUT)).await?;
        self.task_from(json)
    }

    fn task_from(&self, json: Value) -> Result<Task, CliError> {
        Task::from_json(json).map_err(|e| {
            CliError::Connection(format!(
                "{} answered {e}; is it a vectorize service?",
                self.base()
            ))
        })
    }

    /// `POST /v1/upload/huggingface`: the new task.
    pub async fn upload_huggingface(&self, body: &Value) -> Result<Task, CliError> {
        let request = self.request(Method::POST, "/v1/upload/huggingface");
        self.task_answer(request.json(body)).await
    }

    /// `POST /v1/upload/github`: the new task.
    pub async fn upload_github(&self, body: &Value) -> Result<Task, CliError> {
        let request = self.request(Method::POST, "/v1/upload/github");
        self.task_answer(request.json(body)).await
    }

    /// `POST /v1/upload/local`: streams the archive from disk as the
    /// multipart field `file`, calling `sent` with each chunk's length as it
    /// is handed to the connection; answers the service's report.
    pub async fn upload_archive(
        &self,
        archive: &Path,
        model_name: Option<&str>,
        sent: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<Value, CliError> {
        let unreadable =
            |e: std::io::Error| CliError::Usage(format!("cannot read {}: {e}", archive.display()));
        let file = tokio::fs::File::open(archive).await.map_err(unreadable)?;
        let length = file.metadata().await.map_err(unreadable)?.len();
        let file_name = archive
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "archive.zip".into());
        let chunks = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
            .inspect_ok(move |chunk| sent(chunk.len() as u64));
        let part = reqwest::multipart::Part::stream_with_length(
            reqwest::Body::wrap_stream(chunks),
            length,
        )
        .file_name(file_name)
        .mime_str("application/zip")
        .expect("a valid media type");
        let form = reqwest::multipart::Form::new().part("file", part);
        let query: Vec<(&str, &str)> = model_name.map(|n| ("model_name", n)).into_iter().collect();
        let request = self.request_with(Method::POST, "/v1/upload/local", &query);
        self.call(request.multipart(form)).await
    }

    /// `GET /v1/upload/tasks/{id}`.
    pub async fn task(&self, id: Uuid) -> Result<Task, CliError> {
        let request = self.request(Method::GET, &format!("/v1/upload/tasks/{id}"));
        self.task_answer(request).await
    }

    /// The task a `Location` such as `/v1/upload/tasks/{id}` names.
    pub async fn task_at(&self, location: &str) -> Result<Task, CliError> {
        let id = location
            .rsplit('/')
            .next()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| {
                CliError::Connection(format!("{} named no task: '{location}'", self.base()))
            })?;
        self.task(id).await
    }

    /// `GET /v1/upload/tasks?...`: the page as the service sent it.
    pub async fn tasks(&self, query: &[(&str, &str)]) -> Result<Value, CliError> {
        let request = self.request_with(Method::GET, "/v1/upload/tasks", query);
        self.call(request.timeout(REQUEST_TIMEOUT)).await
    }

    /// `DELETE /v1/upload/tasks/{id}`: the task, now CANCELLED.
    pub async fn cancel(&self, id: Uuid) -> Result<Task, CliError> {
        let request = self.request(Method::DELETE, &format!("/v1/upload/tasks/{id}"));
        self.task_answer(request).await
    }

    /// `GET /v1/upload/tasks/{id}/events`: the open event stream.
    pub async fn task_events(&self, id: Uuid) -> Result<reqwest::Response, CliError> {
        let request = self
            .request(Method::GET, &format!("/v1/upload/tasks/{id}/events"))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let response = self.accept(response).await?;
        let is_events = header(&response, reqwest::header::CONTENT_TYPE)
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if !is_events {
            return Err(self.not_vectorize(response.status()));
        }
        Ok(response)
    }

    /// `GET /v1/models?...`: the page as the service sent it.
    pub async fn models(&self, query: &[(&str, &str)]) -> Result<Value, CliError> {
        let request = self.request_with(Method::GET, "/v1/models", query);
        self.call(request.timeout(REQUEST_TIMEOUT)).await
    }

    /// `GET /v1/models/{id}`: the model as the service sent it.
    pub async fn model(&self, id: Uuid) -> Result<Value, CliError> {
        let request = self.request(Method::GET, &format!("/v1/models/{id}"));
        self.call(request.timeout(REQUEST_TIMEOUT)).await
    }

    /// `DELETE /v1/models/{id}`.
    pub async fn delete_model(&self, id: Uuid) -> Result<(), CliError> {
        let request = self.request(Method::DELETE, &format!("/v1/models/{id}"));
        self.call(request.timeout(REQUEST_TIMEOUT)).await.map(drop)
    }
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    let value = response.headers().get(name)?.to_str().ok()?;
    Some(value.to_string())
}

/// An error and its causes, outermost first: reqwest's own message names
/// only the URL, the cause says what went wrong ("Connection refused").
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        for bad in ["127.0.0.1:8000", "ftp://host", "http://", "not a url"] {
            let err = ApiClient::new(bad, None).err().expect(bad);
            assert!(matches!(err, CliError::Usage(_)), "{bad}");
        }
        let client = ApiClient::new("http://127.0.0.1:8000/", None).unwrap();
        assert_eq!(client.base(), "http://127.0.0.1:8000");
        let proxied = ApiClient::new("https://example.org/vectorize/", None).unwrap();
        assert_eq!(proxied.base(), "https://example.org/vectorize");
    }
}
