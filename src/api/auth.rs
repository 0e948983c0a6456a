//! The optional API key. With `VECTORIZE_API_KEY` set, every `/v1` route
//! asks for `Authorization: Bearer <key>`; the check is one middleware so
//! no route can forget it. `ApiKeyAuth` only declares the security scheme
//! in the OpenAPI document (optional, since the key may be unset).

use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use super::errors::error_response;
use crate::error::ErrorCode;

/// `Authorization: Bearer <VECTORIZE_API_KEY>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", rename = "ApiKey")]
pub struct BearerKey(#[allow(dead_code)] Bearer);

/// Declares the API key on an operation; enforcement is `RequireApiKey`.
#[derive(SecurityScheme)]
pub enum ApiKeyAuth {
    Key(BearerKey),
    #[oai(fallback)]
    NoKey,
}

/// Refuses `/v1` requests without the configured bearer key.
pub struct RequireApiKey(pub Option<String>);

impl<E: Endpoint> Middleware<E> for RequireApiKey {
    type Output = RequireApiKeyEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequireApiKeyEndpoint {
            inner,
            key: self.0.clone().map(|k| format!("Bearer {k}")),
        }
    }
}

pub struct RequireApiKeyEndpoint<E> {
    inner: E,
    key: Option<String>,
}

impl<E: Endpoint> Endpoint for RequireApiKeyEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if let Some(expected) = &self.key {
            let given = req
                .headers()
                .get(poem::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let open = !req.uri().path().starts_with("/v1");
            if !open && !given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()))
            {
                return Ok(error_response(
                    ErrorCode::Unauthorized,
                    "this server requires an API key: send 'Authorization: Bearer <key>'",
                ));
            }
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}

/// Compares without an early exit, so timing does not reveal the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
