//! The dashboard: `GET /` serves one page for people — live uploads, the
//! model store, the three upload forms — and `/dashboard/app.js` and
//! `/dashboard/app.css` its script and style. The files are compiled into
//! the binary (plain HTML, CSS and JavaScript, no build step, nothing
//! fetched from another host), so the dashboard works with no internet.
//! The page and its assets are open; everything they show comes from the
//! `/v1` API, which asks for the key when one is set. The headers keep the
//! page to its own script and style (`Content-Security-Policy`), so text
//! from the server can never run as code.

use std::sync::Arc;

use poem::http::header;
use poem::{Endpoint, EndpointExt, IntoResponse, Response, Route, get, handler};

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// The paths the dashboard serves (`allow` lists them among the plain routes).
pub const PATHS: [&str; 3] = ["/", "/dashboard/app.js", "/dashboard/app.css"];

/// Only this origin's script, style and API; no frames, no plugins, no
/// forms sent anywhere but here.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; form-action 'self'; \
                      base-uri 'none'; frame-ancestors 'none'";

/// The script and the style, at `PATHS[1..]`.
pub fn assets(route: Route) -> Route {
    route.at(PATHS[1], get(script)).at(PATHS[2], get(style))
}

/// The API, with the page answering `/` in front of it (and of its key
/// check). poem's router hands an exact `/` to the catch-all of an
/// endpoint nested at `/`, whatever else is routed at `/`, so the page is
/// picked out here, inside that endpoint.
pub fn in_front_of<E: Endpoint + 'static>(api: E) -> impl Endpoint {
    let home = Arc::new(get(page));
    api.around(move |api, req| {
        let home = home.clone();
        async move {
            if req.uri().path() == PATHS[0] {
                home.call(req).await
            } else {
                api.call(req).await.map(IntoResponse::into_response)
            }
        }
    })
}

#[handler]
fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

#[handler]
fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

#[handler]
fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// `body` with the headers every dashboard file carries. `no-cache` makes
/// the browser ask again (cheaply) after an upgrade of the service, so the
/// page and its script never come from two versions.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    body.with_content_type(content_type)
        .with_header(header::CACHE_CONTROL, "no-cache")
        .with_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .with_header(header::CONTENT_SECURITY_POLICY, POLICY)
        .with_header(header::REFERRER_POLICY, "no-referrer")
        .with_header(header::X_FRAME_OPTIONS, "DENY")
        .into_response()
}
