//! 405 answers as RFC 9110 §15.5.6 wants them: with `Allow`, the methods
//! the path does serve, and the code `METHOD_NOT_ALLOWED`. The methods of
//! each path are read once from the OpenAPI document (plus the plain
//! routes outside it, the dashboard's among them); the mirror serves `GET`
//! and `HEAD` everywhere.

use poem::http::StatusCode;
use poem::http::header::ALLOW;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use super::errors::error_response;
use crate::error::ErrorCode;

/// Routes outside the OpenAPI document, and their methods.
const PLAIN_ROUTES: &[(&str, &str)] = &[
    ("/health", "GET"),
    ("/metrics", "GET"),
    ("/openapi.json", "GET"),
];

/// The keys of an OpenAPI path item that are methods.
const HTTP_METHODS: &[&str] = &[
    "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE",
];

/// Paths under this prefix belong to the mirror, which serves `GET` and `HEAD`.
const MIRROR_PREFIX: &str = "/mirror/";

/// The methods of every known path: its segments (`None` for a parameter)
/// and the `Allow` value.
#[derive(Debug, Clone, Default)]
pub struct AllowedMethods {
    routes: Vec<(Vec<Option<String>>, String)>,
}

impl AllowedMethods {
    /// Reads the paths of an OpenAPI document (JSON).
    pub fn from_spec(spec: &str) -> AllowedMethods {
        let spec: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let documented = spec["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(path, ops)| {
                let methods: Vec<String> = ops
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(method, _)| method.to_ascii_uppercase())
                    .filter(|method| HTTP_METHODS.contains(&method.as_str()))
                    .collect();
                (path.clone(), methods.join(", "))
            });
        let plain = PLAIN_ROUTES
            .iter()
            .map(|(path, methods)| (path.to_string(), methods.to_string()))
            .chain(
                super::dashboard::PATHS
                    .iter()
                    .map(|path| (path.to_string(), "GET, HEAD".to_string())),
            );
        let routes = documented
            .chain(plain)
            .filter(|(path, _)| !path.starts_with(MIRROR_PREFIX))
            .map(|(path, methods)| (template(&path), methods))
            .collect();
        AllowedMethods { routes }
    }

    /// The `Allow` value for `path`, if it is a known path.
    pub fn for_path(&self, path: &str) -> Option<&str> {
        if path.starts_with(MIRROR_PREFIX) {
            return Some("GET, HEAD");
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.routes
            .iter()
            .find(|(template, _)| {
                template.len() == segments.len()
                    && template.iter().zip(&segments).all(|(t, s)| match t {
                        Some(literal) => literal == s,
                        None => !s.is_empty(),
                    })
            })
            .map(|(_, methods)| methods.as_str())
    }
}

/// `/v1/models/{model_id}` as segments, parameters as `None`.
fn template(path: &str) -> Vec<Option<String>> {
    path.trim_start_matches('/')
        .split('/')
        .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
        .collect()
}

/// Turns poem's bare 405 into `METHOD_NOT_ALLOWED` with `Allow`.
pub struct MethodNotAllowed(pub AllowedMethods);

impl<E: Endpoint> Middleware<E> for MethodNotAllowed {
    type Output = MethodNotAllowedEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        MethodNotAllowedEndpoint {
            inner,
            allowed: self.0.clone(),
        }
    }
}

pub struct MethodNotAllowedEndpoint<E> {
    inner: E,
    allowed: AllowedMethods,
}

impl<E: Endpoint> Endpoint for MethodNotAllowedEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let answer = self.inner.call(req).await.map(IntoResponse::into_response);
        let refused = match &answer {
            Ok(response) => response.status() == StatusCode::METHOD_NOT_ALLOWED,
            Err(err) => err.status() == StatusCode::METHOD_NOT_ALLOWED,
        };
        if !refused {
            return answer;
        }
        let allow = self.allowed.for_path(&path).unwrap_or_default().to_string();
        let mut response = error_response(
            ErrorCode::MethodNotAllowed,
            format!("{path} does not serve {method}; it serves {allow}"),
        );
        if let Ok(value) = allow.parse() {
            response.headers_mut().insert(ALLOW, value);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_documents_paths() {
        let spec = r#"{"paths": {
            "/v1/models": {"get": {}},
            "/v1/models/{model_id}": {"get": {}, "delete": {}},
            "/mirror/{root}/api/models/{repo_id}": {"get": {}}
        }}"#;
        let allowed = AllowedMethods::from_spec(spec);
        assert_eq!(allowed.for_path("/v1/models"), Some("GET"));
        assert_eq!(allowed.for_path("/v1/models/abc"), Some("DELETE, GET"));
        assert_eq!(allowed.for_path("/v1/models/"), None);
        assert_eq!(allowed.for_path("/v1/models/a/b"), None);
        assert_eq!(allowed.for_path("/health"), Some("GET"));
        assert_eq!(allowed.for_path("/"), Some("GET, HEAD"));
        assert_eq!(allowed.for_path("/dashboard/app.js"), Some("GET, HEAD"));
        assert_eq!(allowed.for_path("/dashboard/x.js"), None);
        assert_eq!(
            allowed.for_path("/mirror/huggingface/acme/bert/resolve/main/a/b.json"),
            Some("GET, HEAD")
        );
    }
}
