//! Health, metrics, the OpenAPI document, Swagger UI and the API key.

use serde_json::Value;

use crate::helpers::{Options, assert_error, small_model, spawn_app, spawn_app_with};
use crate::support::fake_hub::FakeHub;
use crate::support::process::ServiceProcess;

/// Each service owns its metrics: a download on one shows on its
/// `/metrics` only, with its task by source and status and its duration.
#[tokio::test]
async fn each_service_counts_its_own_metrics() {
    let hub = FakeHub::start().await;
    hub.add_repo(small_model("acme/counted"));
    let busy = spawn_app_with(Options {
        hub: Some(hub),
        ..Default::default()
    })
    .await;
    let idle = spawn_app().await;
    let id = busy.upload_hf("acme/counted").await;
    busy.wait_task(&id).await;
    let (busy, idle) = (busy.metrics().await, idle.metrics().await);
    let done = r#"vectorize_tasks{source="HUGGINGFACE",status="DONE"}"#;
    assert!(busy.contains(&format!("{done} 1\n")), "{busy}");
    assert!(idle.contains(&format!("{done} 0\n")), "{idle}");
    let timed = r#"vectorize_task_duration_seconds_count{source="HUGGINGFACE",status="DONE"} 1"#;
    assert!(busy.contains(timed), "{busy}");
    assert!(
        !busy.contains("vectorize_downloaded_bytes_total 0\n"),
        "{busy}"
    );
    assert!(
        idle.contains("vectorize_downloaded_bytes_total 0\n"),
        "{idle}"
    );
}

#[tokio::test]
async fn health_metrics_and_docs_answer() {
    let app = spawn_app().await;
    let health = app.client.get(app.at("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert!(
        health["node"]
            .as_str()
            .is_some_and(|n| n.starts_with("node-")),
        "{health}"
    );

    app.get_task("123e4567-e89b-12d3-a456-426614174000").await;
    let metrics = app
        .client
        .get(app.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"vectorize_http_requests_total{route="get_task",status="404"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("vectorize_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"vectorize_tasks{source="HUGGINGFACE",status="PENDING"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("vectorize_downloaded_bytes_total"),
        "{metrics}"
    );
    assert!(metrics.contains("vectorize_retries_total"), "{metrics}");

    let docs = app.client.get(app.at("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_its_errors() {
    let app = spawn_app().await;
    let spec: Value = app
        .client
        .get(app.at("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = spec["paths"].as_object().unwrap();
    // Each operation documents 401, 422 and 500, and the refusals it can give: no more.
    for (path, method, refusals) in [
        (
            "/v1/upload/huggingface",
            "post",
            &["400", "404", "409", "502", "507"][..],
        ),
        (
            "/v1/upload/github",
            "post",
            &["400", "404", "409", "502"][..],
        ),
        (
            "/v1/upload/local",
            "post",
            &["400", "404", "409", "413"][..],
        ),
        ("/v1/upload/local/{model_id}", "get", &["404"][..]),
        ("/v1/upload/tasks", "get", &[][..]),
        ("/v1/upload/tasks/{task_id}", "get", &["404"][..]),
        ("/v1/upload/tasks/{task_id}", "delete", &["404", "409"][..]),
        ("/v1/upload/tasks/{task_id}/events", "get", &["404"][..]),
        ("/v1/models", "get", &[][..]),
        ("/v1/models/{model_id}", "get", &["404"][..]),
        ("/v1/models/{model_id}", "delete", &["404"][..]),
    ] {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let mut errors: Vec<&str> = operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|status| !status.starts_with('2'))
            .collect();
        errors.sort();
        let mut expected: Vec<&str> = refusals
            .iter()
            .copied()
            .chain(["401", "422", "500"])
            .collect();
        expected.sort();
        assert_eq!(errors, expected, "{method} {path}");
        assert!(
            operation["security"].is_array(),
            "{method} {path} declares no security"
        );
    }
    assert!(
        spec["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer",
        "{}",
        spec["components"]
    );
    let created = &paths["/v1/upload/huggingface"]["post"]["responses"]["201"];
    let headers = created["headers"].as_object().unwrap();
    assert!(
        headers.keys().any(|h| h.eq_ignore_ascii_case("location")),
        "{created}"
    );
}

#[tokio::test]
async fn the_api_key_guards_v1_only_when_set() {
    let open = spawn_app().await;
    assert_eq!(open.list_tasks("").await.status(), 200);

    let app = spawn_app_with(Options {
        api_key: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    assert_error(app.list_tasks("").await, 401, "UNAUTHORIZED").await;
    let wrong = app
        .client
        .get(app.at("/v1/models"))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_error(wrong, 401, "UNAUTHORIZED").await;
    let right = app
        .client
        .get(app.at("/v1/models"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    for open_path in ["/health", "/metrics", "/openapi.json", "/docs"] {
        let response = app.client.get(app.at(open_path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{open_path}");
    }
}

#[tokio::test]
async fn the_api_key_guards_routes_not_spellings() {
    let app = spawn_app_with(Options {
        api_key: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let (status, body) = app.raw_get("/v1/upload/tasks", Some("s3cret")).await;
    assert_eq!(status, 200, "{body}");
    let address = app.url.trim_start_matches("http://").to_string();
    for target in [
        "/v1/upload/tasks".to_string(),
        "//v1/upload/tasks".into(),
        "/v1//upload/tasks".into(),
        "/v1/upload//tasks".into(),
        "/v1/upload/tasks/".into(),
        "/v1/./upload/tasks".into(),
        "/v1/upload/./tasks".into(),
        "/x/../v1/upload/tasks".into(),
        "/health/../v1/upload/tasks".into(),
        "/docs/../v1/upload/tasks".into(),
        "/%76%31/upload/tasks".into(),
        "/v1/%75pload/tasks".into(),
        "/v1%2Fupload%2Ftasks".into(),
        "/V1/upload/tasks".into(),
        "/v1/upload/tasks?limit=1".into(),
        "/v1/upload/tasks;x".into(),
        "/v1/models".into(),
        "/v1/upload/tasks/00000000-0000-0000-0000-000000000000".into(),
        format!("http://{address}/v1/upload/tasks"),
    ] {
        let (status, answer) = app.raw_get(&target, None).await;
        assert!(
            matches!(status, 401 | 404 | 400),
            "{target} answered {status} without the key: {answer}"
        );
        assert!(
            !answer.contains("\"items\""),
            "{target} leaked data: {answer}"
        );
    }
}

#[tokio::test]
async fn unknown_routes_answer_json() {
    let app = spawn_app().await;
    assert_error(
        app.client.get(app.at("/v1/nothing")).send().await.unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn a_method_a_path_does_not_serve_is_405_with_allow() {
    let app = spawn_app().await;
    let id = "00000000-0000-0000-0000-000000000000";
    for (method, path, allow) in [
        (reqwest::Method::POST, "/v1/models".to_string(), "GET"),
        (
            reqwest::Method::PUT,
            format!("/v1/models/{id}"),
            "DELETE, GET",
        ),
        (
            reqwest::Method::PATCH,
            format!("/v1/upload/tasks/{id}"),
            "DELETE, GET",
        ),
        (reqwest::Method::DELETE, "/health".to_string(), "GET"),
        (
            reqwest::Method::POST,
            "/mirror/huggingface/acme/bert/resolve/main/config.json".to_string(),
            "GET, HEAD",
        ),
    ] {
        let response = app
            .client
            .request(method.clone(), app.at(&path))
            .send()
            .await
            .unwrap();
        let allowed = response.headers().get("allow").cloned();
        assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
        assert_eq!(
            allowed.as_ref().map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn the_log_has_no_colour_codes_and_names_each_tasks_node() {
    let hub = FakeHub::start().await;
    hub.add_repo(small_model("acme/logged"));
    let data = tempfile::tempdir().unwrap();
    // Its output is a pipe, not a terminal.
    let service = ServiceProcess::start(data.path(), &hub, &[("RUST_LOG", "info")]).await;
    let id = service.upload_hf("acme/logged").await;
    let task = service.wait_task(&id).await;
    assert_eq!(task["task_status"], "DONE", "{task}");
    let node = service.get_json("/health").await["node"]
        .as_str()
        .unwrap()
        .to_string();
    let log = service.output();
    assert!(!log.contains('\x1b'), "colour codes in a piped log:\n{log}");
    let attempt_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("registering the model"))
        .collect();
    assert!(!attempt_lines.is_empty(), "{log}");
    for line in attempt_lines {
        assert!(
            line.contains(&format!("task_id={id}")) && line.contains(&format!("node={node}")),
            "{line}"
        );
    }
}

/// The document served at `/openapi.json`, and the one Swagger UI shows.
async fn documents(app: &crate::helpers::TestApp) -> (Value, String) {
    let get = |path: &str| app.client.get(app.at(path)).send();
    let served: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    let page = get("/docs").await.unwrap().text().await.unwrap();
    (served, page)
}

/// The operation with this id, wherever its path.
fn operation<'a>(spec: &'a Value, id: &str) -> &'a Value {
    spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|methods| methods.as_object().unwrap().values())
        .find(|op| op["operationId"] == id)
        .unwrap_or_else(|| panic!("no operation {id}"))
}

/// A 201 of a remote upload links to the task's routes with its `id`, so
/// clients (and schemathesis' stateful phase) can follow it; Swagger UI
/// shows the same document.
#[tokio::test]
async fn the_uploads_link_their_answer_to_the_tasks_routes() {
    let app = spawn_app().await;
    let (spec, page) = documents(&app).await;
    for upload in ["upload_huggingface", "upload_github"] {
        let links = &operation(&spec, upload)["responses"]["201"]["links"];
        let mut names: Vec<&String> = links.as_object().unwrap().keys().collect();
        names.sort();
        assert_eq!(
            names,
            ["cancel_task", "get_task", "task_events"],
            "{upload}"
        );
        for (name, link) in links.as_object().unwrap() {
            assert_eq!(link["operationId"], name.as_str(), "{upload}: {link}");
            assert_eq!(
                link["parameters"],
                serde_json::json!({"task_id": "$response.body#/id"}),
                "{upload}: {link}"
            );
            // The parameter the link fills is the target's path parameter.
            let target = operation(&spec, name);
            assert!(
                target["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == "task_id" && p["in"] == "path"),
                "{name}"
            );
        }
    }
    // And the answer's `id` is the task the linked routes take.
    let created = app
        .post_hf(serde_json::json!({"model_tag": "acme/linked"}))
        .await;
    assert_eq!(created.status(), 404, "the fake hub has no acme/linked");
    app.hub.add_repo(small_model("acme/linked"));
    let task: Value = app
        .post_hf(serde_json::json!({"model_tag": "acme/linked"}))
        .await
        .json()
        .await
        .unwrap();
    let id = task["id"].as_str().unwrap();
    let followed = app.task(id).await;
    assert_eq!(followed["id"], id);

    let embedded = page.contains(r#""$response.body#/id""#) && page.contains("contentSchema");
    assert!(embedded, "Swagger UI does not show the served document");
}

/// An event stream is documented as its events: each named `task`, whose
/// data is a task as JSON (poem-openapi alone writes "an array of tasks").
#[tokio::test]
async fn the_event_streams_are_documented_as_task_events() {
    let app = spawn_app().await;
    let (spec, _) = documents(&app).await;
    let mut streams = Vec::new();
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for op in methods.as_object().unwrap().values() {
            let Some(stream) = op["responses"]["200"]["content"].get("text/event-stream") else {
                continue;
            };
            let event = &stream["schema"];
            assert_eq!(event["type"], "object", "{path}: {event}");
            assert_eq!(
                event["required"],
                serde_json::json!(["event", "data"]),
                "{path}"
            );
            assert_eq!(
                event["properties"]["event"]["enum"],
                serde_json::json!(["task"]),
                "{path}"
            );
            let data = &event["properties"]["data"];
            assert_eq!(data["type"], "string", "{path}: {data}");
            assert_eq!(data["contentMediaType"], "application/json", "{path}");
            assert_eq!(
                data["contentSchema"]["$ref"], "#/components/schemas/Task",
                "{path}"
            );
            streams.push(op["operationId"].as_str().unwrap());
        }
    }
    streams.sort();
    assert_eq!(streams, ["all_task_events", "task_events"]);
}

/// Each upload field states the rule the service checks: the expressions
/// and length of `sources::names`, a second expression under `allOf`.
#[tokio::test]
async fn the_upload_fields_state_the_rules_the_service_checks() {
    use vectorize::sources::names::{
        FILE_GLOB, GITHUB_OWNER, GITHUB_REPO_NAME, HF_REPO_ID, REVISION, TextRule,
    };
    let app = spawn_app().await;
    let (spec, _) = documents(&app).await;
    let schemas = &spec["components"]["schemas"];
    let hf = &schemas["HuggingFaceUpload"]["properties"];
    let github = &schemas["GitHubUpload"]["properties"];
    let fields: [(&Value, &TextRule); 7] = [
        (&github["owner"], &GITHUB_OWNER),
        (&github["repo_name"], &GITHUB_REPO_NAME),
        (&github["revision"], &REVISION),
        (&github["tag"], &REVISION),
        (&hf["model_tag"], &HF_REPO_ID),
        (&hf["revision"], &REVISION),
        (&hf["allow_patterns"]["items"], &FILE_GLOB),
    ];
    for (field, rule) in fields {
        let mut stated = vec![field["pattern"].as_str().unwrap()];
        for also in field["allOf"].as_array().into_iter().flatten() {
            stated.push(also["pattern"].as_str().unwrap());
        }
        assert_eq!(stated, rule.patterns(), "{field}");
        assert_eq!(
            field["maxLength"].as_u64(),
            rule.max_length().map(|n| n as u64),
            "{field}"
        );
    }
    assert_eq!(hf["allow_patterns"]["minItems"], 1);
    // Giving both `revision` and `tag` is refused, and the schema says so.
    assert_eq!(
        schemas["GitHubUpload"]["not"]["required"],
        serde_json::json!(["revision", "tag"])
    );
}

/// What the documented patterns allow passes the service's checks (it goes
/// on to ask the upstream: 404 or 502), and what they refuse is refused.
#[tokio::test]
async fn the_service_accepts_exactly_what_the_documented_patterns_allow() {
    let app = spawn_app_with(Options {
        github_api_url: Some("http://127.0.0.1:9".into()),
        ..Default::default()
    })
    .await;
    let (spec, _) = documents(&app).await;
    let schemas = &spec["components"]["schemas"];
    let matches = |field: &Value, text: &str| {
        let mut patterns = vec![&field["pattern"]];
        patterns.extend(
            field["allOf"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| &a["pattern"]),
        );
        patterns.iter().all(|p| {
            regex::Regex::new(p.as_str().unwrap())
                .unwrap()
                .is_match(text)
        }) && field["maxLength"]
            .as_u64()
            .is_none_or(|max| text.chars().count() as u64 <= max)
    };
    let long = "n".repeat(96);
    let hf = &schemas["HuggingFaceUpload"]["properties"];
    for (field, body) in [
        (
            "model_tag",
            serde_json::json!({"model_tag": "acme/bert-base.v2"}),
        ),
        ("model_tag", serde_json::json!({"model_tag": "a-.-b"})),
        (
            "model_tag",
            serde_json::json!({"model_tag": format!("{long}/{long}")}),
        ),
        (
            "model_tag",
            serde_json::json!({"model_tag": format!("a/{long}n")}),
        ),
        ("model_tag", serde_json::json!({"model_tag": " acme/bert"})),
        ("model_tag", serde_json::json!({"model_tag": "a--b"})),
        (
            "revision",
            serde_json::json!({"model_tag": "a/b", "revision": "refs/pr/1"}),
        ),
        (
            "revision",
            serde_json::json!({"model_tag": "a/b", "revision": "topic.lock"}),
        ),
        (
            "revision",
            serde_json::json!({"model_tag": "a/b", "revision": "naïve"}),
        ),
        (
            "revision",
            serde_json::json!({"model_tag": "a/b", "revision": "main "}),
        ),
    ] {
        let text = body[field].as_str().unwrap();
        let allowed = matches(&hf[field], text);
        let status = app.post_hf(body.clone()).await.status().as_u16();
        assert_eq!(allowed, status != 400, "{body} answered {status}");
    }
    for (pattern, allowed) in [
        ("*.safetensors", true),
        ("onnx/model?.bin", true),
        ("*.{a,b}", false),
    ] {
        let body = serde_json::json!({"model_tag": "a/b", "allow_patterns": [pattern]});
        assert_eq!(
            matches(&hf["allow_patterns"]["items"], pattern),
            allowed,
            "{pattern}"
        );
        let status = app.post_hf(body).await.status().as_u16();
        assert_eq!(allowed, status != 422, "{pattern} answered {status}");
    }
    let github = &schemas["GitHubUpload"]["properties"];
    for (field, body) in [
        (
            "owner",
            serde_json::json!({"owner": "a-b", "repo_name": "r"}),
        ),
        (
            "owner",
            serde_json::json!({"owner": "-ab", "repo_name": "r"}),
        ),
        (
            "repo_name",
            serde_json::json!({"owner": "o", "repo_name": ".x"}),
        ),
        (
            "repo_name",
            serde_json::json!({"owner": "o", "repo_name": ".."}),
        ),
        (
            "tag",
            serde_json::json!({"owner": "o", "repo_name": "r", "tag": "v1.0"}),
        ),
        (
            "tag",
            serde_json::json!({"owner": "o", "repo_name": "r", "tag": "v1.0."}),
        ),
    ] {
        let text = body[field].as_str().unwrap();
        let allowed = matches(&github[field], text);
        let status = app.post_github(body.clone()).await.status().as_u16();
        assert_eq!(allowed, status != 400, "{body} answered {status}");
    }
    let both = serde_json::json!({"owner": "o", "repo_name": "r", "revision": "v1", "tag": "v1"});
    assert_error(app.post_github(both).await, 422, "VALIDATION_ERROR").await;
}
