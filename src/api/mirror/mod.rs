//! The store served back as a read-only Hugging Face Hub: under
//! `/mirror/huggingface`, `/mirror/github` and `/mirror/local`, the routes
//! `huggingface_hub` downloads with (model info, tree listing, `resolve`)
//! with the Hub's headers and errors, so any machine pulls a stored model
//! with `HF_ENDPOINT={service}/mirror/{root}` and its usual tools.
//!
//! The router is hand-written (`route`), because repo ids and file paths
//! hold `/` and revisions arrive percent-encoded; `docs` describes the same
//! routes in the OpenAPI document. The mirror reads through `store` and the
//! model folders; it never writes. A requested path is only ever compared
//! with the files a model records, never joined onto a folder.

mod answers;
mod docs;
mod files;
mod hub;
mod repo;
mod route;
mod send;

use std::sync::Arc;

use poem::http::{Method, header};
use poem::web::Data;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler};
use poem_openapi::payload::Json;

pub use docs::MirrorApi;

use self::answers::{InfoAnswer, MirrorError, MirrorRefusal, TreeAnswer};
use self::files::HubFile;
use self::hub::{ModelInfo, TreeEntry};
use self::repo::Snapshot;
use self::route::HubRoute;
use super::AppState;
use super::auth::RequireApiKey;
use crate::secret::Secret;
use crate::store::Source;

/// The mirror's routes, to nest at `/mirror`, behind the API key if one is set.
pub fn routes(api_key: Option<Secret>) -> impl Endpoint {
    Route::new()
        .at("/*rest", get(serve).head(serve))
        .with(RequireApiKey(api_key))
}

#[handler]
async fn serve(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    let parsed = route::parse(req.uri().path());
    // Requests are counted in `/metrics` under the operation ids of `docs`.
    let operation = match &parsed {
        Some((_, HubRoute::Info { .. })) => "mirror_model_info",
        Some((_, HubRoute::Tree { .. })) => "mirror_tree",
        Some((_, HubRoute::Resolve { .. })) => "mirror_file",
        _ => "mirror_other",
    };
    let result = match parsed {
        Some((source, route)) => dispatch(&state, req, source, route).await,
        None => Err(MirrorError::no_route()),
    };
    let mut response =
        result.unwrap_or_else(|refused| MirrorRefusal::from(refused).into_response());
    response.set_data(poem_openapi::OperationId(operation));
    response
}

async fn dispatch(
    state: &AppState,
    req: &Request,
    source: Source,
    route: HubRoute,
) -> Result<Response, MirrorError> {
    match route {
        // Asked once a process by `huggingface_hub`; an empty answer is cached a day.
        HubRoute::AgentHarnesses => Ok(poem::web::Json(
            serde_json::json!({"standardEnvVars": [], "harnesses": {}}),
        )
        .into_response()),
        HubRoute::Info { repo_id, revision } => {
            let snapshot = repo::find(&state.store, source, &repo_id, &revision).await?;
            let files = describe(state, &snapshot, |_| true).await?;
            let info = ModelInfo::new(&snapshot, &files);
            Ok(InfoAnswer::Ok(Json(info)).into_response())
        }
        HubRoute::Tree {
            repo_id,
            revision,
            folder,
        } => {
            let snapshot = repo::find(&state.store, source, &repo_id, &revision).await?;
            let prefix = format!("{folder}/");
            let files = describe(state, &snapshot, |path| {
                folder.is_empty() || path.starts_with(&prefix)
            })
            .await?;
            let entries: Vec<TreeEntry> = files.iter().map(TreeEntry::new).collect();
            Ok(TreeAnswer::Ok(Json(entries)).into_response())
        }
        HubRoute::Resolve {
            repo_id,
            revision,
            path,
        } => {
            let snapshot = repo::find(&state.store, source, &repo_id, &revision).await?;
            let mut files = describe(state, &snapshot, |p| p == path).await?;
            let file = files
                .pop()
                .ok_or_else(|| MirrorError::entry_not_found(&snapshot, &path))?;
            let range = req
                .headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok());
            let with_body = req.method() == Method::GET;
            let metrics = state.metrics.clone();
            let sent = send::send(&file, &snapshot.commit, range, with_body, metrics).await?;
            Ok(sent.into_response())
        }
    }
}

/// The files of `snapshot` whose paths `wanted` keeps, described as the Hub
/// does (off the async runtime: describing may hash a file).
async fn describe(
    state: &AppState,
    snapshot: &Snapshot,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<HubFile>, MirrorError> {
    let source = snapshot.model.source;
    let folder = state.files.absolute(&snapshot.model.path);
    let chosen: Vec<_> = snapshot
        .model
        .files
        .iter()
        .filter(|f| wanted(&f.path))
        .cloned()
        .collect();
    tokio::task::spawn_blocking(move || {
        chosen
            .iter()
            .map(|file| HubFile::describe(source, &folder, file))
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await
    .map_err(MirrorError::internal)?
    .map_err(MirrorError::internal)
}
