//! The OpenAPI document served at `/openapi.json` and shown by Swagger UI
//! at `/docs`: poem-openapi's document, plus what its types cannot say,
//! added once when the routes are built:
//!
//! - links from the 201 of each remote upload to its task's routes, so a
//!   client (and schemathesis' stateful phase) knows that the answer's `id`
//!   is the `task_id` those routes take;
//! - for each event stream, the schema of one event (`event`, and `data`
//!   holding a task as JSON), where poem-openapi writes "an array of
//!   tasks", which no event is;
//! - that a GitHub upload gives `revision` or its synonym `tag`, not both.
//!
//! It adds to the document and replaces the event streams' schemas; it
//! must not change what the routes accept or answer.

mod ordered;

use poem::endpoint::make_sync;
use poem::web::Html;
use poem::{Endpoint, Response, Route};
use poem_openapi::{OpenApi, OpenApiService, Webhook};
use serde_json::json;

use self::ordered::Json;

/// The operations whose 201 answers a task, and the task routes a link
/// leads to from it, each with what it offers.
const UPLOADS_ANSWERING_A_TASK: [&str; 2] = ["upload_huggingface", "upload_github"];
const TASK_LINKS: [(&str, &str); 3] = [
    (
        "get_task",
        "The task this upload started: its status and progress.",
    ),
    (
        "cancel_task",
        "Cancels the task this upload started, while it is PENDING or RUNNING.",
    ),
    (
        "task_events",
        "The changes of the task this upload started, as server-sent events, until it ends.",
    ),
];

/// The event streams, with the name their events carry.
const EVENT_STREAMS: [(&str, &str); 2] = [("task_events", "task"), ("all_task_events", "task")];

/// The document, as JSON and as a Swagger UI page, built once.
pub struct ApiDocument {
    json: String,
    swagger_ui: String,
}

impl ApiDocument {
    pub fn new<T: OpenApi, W: Webhook>(api: &OpenApiService<T, W>) -> Self {
        let generated = api.spec();
        let mut document: Json =
            serde_json::from_str(&generated).expect("poem-openapi writes its document as JSON");
        link_uploads_to_their_task(&mut document);
        describe_event_streams(&mut document);
        exclude_tag_beside_revision(&mut document);
        let json = serde_json::to_string_pretty(&document).expect("a JSON value serializes");
        // The page embeds the document it shows; it gets this one instead.
        let page = api.swagger_ui_html();
        assert!(
            page.contains(&generated),
            "poem-openapi's Swagger UI page no longer embeds the document as written"
        );
        let swagger_ui = page.replacen(&generated, &json, 1);
        Self { json, swagger_ui }
    }

    /// `/openapi.json`.
    pub fn json_endpoint(&self) -> impl Endpoint + 'static {
        let json = self.json.clone();
        make_sync(move |_| {
            Response::builder()
                .content_type("application/json")
                .body(json.clone())
        })
    }

    /// `/docs`.
    pub fn swagger_ui(&self) -> impl Endpoint + 'static {
        let page = self.swagger_ui.clone();
        Route::new().at("/", make_sync(move |_| Html(page.clone())))
    }
}

/// Every operation of the document with its id.
fn operations(document: &mut Json) -> impl Iterator<Item = (String, &mut Json)> {
    document
        .get_mut("paths")
        .into_iter()
        .flat_map(Json::values_mut)
        .flat_map(Json::values_mut)
        .filter_map(|operation| {
            let id = operation.get_mut("operationId")?.as_str()?.to_string();
            Some((id, operation))
        })
}

fn link_uploads_to_their_task(document: &mut Json) {
    let links = Json::Object(
        TASK_LINKS
            .iter()
            .map(|(operation, description)| {
                let link = json!({
                    "operationId": operation,
                    "parameters": {"task_id": "$response.body#/id"},
                    "description": description,
                });
                (operation.to_string(), link.into())
            })
            .collect(),
    );
    let mut linked = 0;
    for (id, operation) in operations(document) {
        if UPLOADS_ANSWERING_A_TASK.contains(&id.as_str()) {
            operation
                .pointer_mut("/responses/201")
                .unwrap_or_else(|| panic!("{id} documents no 201"))
                .insert("links", links.clone());
            linked += 1;
        }
    }
    assert_eq!(
        linked,
        UPLOADS_ANSWERING_A_TASK.len(),
        "an upload is missing"
    );
}

/// poem-openapi documents `EventStream<T>` as an array of `T`. An event
/// stream's schema (read by schemathesis and by the OpenAPI 3.2 convention
/// for `text/event-stream`) describes one event as a parser hands it over:
/// its `event` name and its `data` text, here JSON of the item schema.
fn describe_event_streams(document: &mut Json) {
    for (id, operation) in operations(document) {
        let Some(event) = EVENT_STREAMS
            .iter()
            .find(|(stream, _)| *stream == id)
            .map(|(_, event)| *event)
        else {
            continue;
        };
        let stream = operation
            .pointer_mut("/responses/200/content/text~1event-stream/schema")
            .unwrap_or_else(|| panic!("{id} documents no event stream"));
        let item = stream
            .get_mut("items")
            .unwrap_or_else(|| panic!("{id}'s stream names no item schema"))
            .take();
        let mut event_schema: Json = json!({
            "type": "object",
            "description": format!(
                "One server-sent event, named `{event}`; its `data` is JSON of the schema \
                 under `contentSchema`."
            ),
            "required": ["event", "data"],
            "properties": {
                "event": {"type": "string", "enum": [event]},
                "data": {"type": "string", "contentMediaType": "application/json"},
            },
        })
        .into();
        event_schema
            .pointer_mut("/properties/data")
            .expect("just written")
            .insert("contentSchema", item);
        *stream = event_schema;
    }
}

/// `revision` and `tag` name the same thing; a body with both (as text,
/// empty text included) is refused, and the schema says so.
fn exclude_tag_beside_revision(document: &mut Json) {
    document
        .pointer_mut("/components/schemas/GitHubUpload")
        .expect("the document has the GitHub upload's schema")
        .insert(
            "not",
            json!({
                "required": ["revision", "tag"],
                "properties": {"revision": {"type": "string"}, "tag": {"type": "string"}},
            })
            .into(),
        );
}
