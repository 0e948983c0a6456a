//! The HTTP front end: turns requests into registry messages and store
//! reads, and answers in the shapes of API.md. One `#[OpenApi]` struct per
//! area (remote uploads, local uploads, tasks, the stream of every task's
//! events, models, the mirror), merged here with the dashboard (`/`),
//! `/health`, `/metrics`, `/docs` and `/openapi.json`. No business rules
//! beyond input validation.

pub mod allow;
pub mod auth;
pub mod dashboard;
pub mod document;
pub mod errors;
pub mod events;
pub mod local;
pub mod mirror;
pub mod models;
pub mod objects;
pub mod strict;
pub mod tasks;
pub mod uploads;

use std::sync::Arc;
use std::time::Instant;

use poem::http::StatusCode;
use poem::web::Json;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler};
use poem_openapi::{OpenApiService, Tags};

use crate::actors::Actors;
use crate::config::Config;
use crate::error::AppError;
use crate::metrics::{Metrics, StoreGauges};
use crate::sources::github::GitHub;
use crate::sources::huggingface::HfHub;
use crate::store::files::ModelFiles;
use crate::store::{Source, Store, TaskStatus, UploadTask};

/// What every handler can reach.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub files: ModelFiles,
    pub hub: HfHub,
    pub github: GitHub,
    pub actors: Actors,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// 409 when the model is stored already or an upload of it is in flight.
    pub(crate) async fn refuse_duplicate(&self, task: &UploadTask) -> Result<(), AppError> {
        let stored = self
            .store
            .find_model(task.source, &task.model_tag)
            .await
            .map_err(AppError::internal)?;
        if stored.is_some() {
            return Err(AppError::model_exists(
                task.source.as_str(),
                &task.model_tag,
            ));
        }
        let in_flight = self
            .store
            .find_in_flight(task.source, &task.model_tag)
            .await
            .map_err(AppError::internal)?;
        match in_flight {
            Some(running) => Err(crate::actors::registry::upload_in_progress(&running)),
            None => Ok(()),
        }
    }
}

#[derive(Tags)]
pub enum ApiTags {
    /// Bring models into the store.
    Uploads,
    /// Follow and cancel background uploads.
    Tasks,
    /// The models in the store.
    Models,
}

/// The OpenAPI service of every `/v1` route.
pub fn openapi(
    state: Arc<AppState>,
) -> OpenApiService<
    (
        uploads::UploadsApi,
        local::LocalApi,
        tasks::TasksApi,
        events::EventsApi,
        models::ModelsApi,
        mirror::MirrorApi,
    ),
    (),
> {
    OpenApiService::new(
        (
            uploads::UploadsApi {
                state: state.clone(),
            },
            local::LocalApi {
                state: state.clone(),
            },
            tasks::TasksApi {
                state: state.clone(),
            },
            events::EventsApi {
                state: state.clone(),
            },
            models::ModelsApi { state },
            mirror::MirrorApi,
        ),
        "vectorize",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Brings AI models into a local model store from the Hugging Face Hub, GitHub and ZIP \
         archives, and tracks every remote upload as a background task.",
    )
}

/// The whole application as one endpoint.
pub fn routes(state: Arc<AppState>) -> impl Endpoint {
    let api = openapi(state.clone());
    let allowed = allow::AllowedMethods::from_spec(&api.spec());
    // Links, event schemas and the like that poem-openapi cannot write.
    let document = document::ApiDocument::new(&api);
    let spec = document.json_endpoint();
    let docs = document.swagger_ui();
    // The key guards the API endpoint itself: whatever path spelling the
    // router resolves to an API route (or to none) passes through the check.
    let api = api.with(auth::RequireApiKey(state.config.api_key.clone()));
    // The dashboard's page is open, so it answers before the key check.
    let api = dashboard::in_front_of(api);
    dashboard::assets(Route::new())
        .nest("/", api)
        .nest("/mirror", mirror::routes(state.config.api_key.clone()))
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .at("/health", get(health))
        .at("/metrics", get(metrics))
        .with(allow::MethodNotAllowed(allowed))
        .data(state.clone())
        .around(move |next, req| observe(state.metrics.clone(), next, req))
        .catch_all_error(errors::render_error)
}

/// Counts every request by route and status, and times it.
async fn observe<E: Endpoint>(
    counted: Arc<Metrics>,
    next: Arc<E>,
    req: Request,
) -> poem::Result<Response> {
    let started = Instant::now();
    let result = next.call(req).await.map(IntoResponse::into_response);
    let (route, status) = match &result {
        Ok(resp) => (
            resp.data::<poem_openapi::OperationId>().map(|o| o.0),
            resp.status(),
        ),
        Err(err) => (
            err.data::<poem_openapi::OperationId>().map(|o| o.0),
            err.status(),
        ),
    };
    counted.observe_request(route.unwrap_or("other"), status.as_u16(), started.elapsed());
    result
}

/// 200 once the database answers and the actors run; 503 otherwise (the
/// database unreachable included). Either way the body names the node.
#[handler]
async fn health(state: poem::web::Data<&Arc<AppState>>) -> Response {
    let node = &state.config.node_id;
    let reason = if !state.actors.is_running() {
        "the task actors are not running"
    } else if !state.store.ping().await {
        "the database does not answer"
    } else {
        return Json(serde_json::json!({"status": "ok", "node": node})).into_response();
    };
    let body = serde_json::json!({"status": "unavailable", "node": node, "reason": reason});
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// Prometheus text format. Every remote source and status is listed, zeros too.
#[handler]
async fn metrics(state: poem::web::Data<&Arc<AppState>>) -> Response {
    let counted = state.store.count_tasks().await.unwrap_or_default();
    // Local uploads are stored at once and make no task.
    let sources = [Source::Huggingface, Source::Github];
    let tasks = sources
        .into_iter()
        .flat_map(|source| TaskStatus::ALL.map(|status| (source, status)))
        .map(|(source, status)| {
            let n = counted
                .iter()
                .find(|(s, t, _)| (*s, *t) == (source, status))
                .map_or(0, |(_, _, n)| *n);
            (source, status, n)
        })
        .collect();
    let pending_webhooks = state.store.count_deliveries().await.unwrap_or_default();
    let gauges = StoreGauges {
        tasks,
        pending_webhooks,
    };
    state
        .metrics
        .render(&gauges)
        .with_content_type("text/plain; version=0.0.4")
        .into_response()
}
