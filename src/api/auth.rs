//! The optional API key. With `VECTORIZE_API_KEY` set, every request that
//! reaches the API's routes asks for `Authorization: Bearer <key>`: the
//! check wraps the API endpoint itself (`api::routes`), so it applies to the
//! route a request reaches, whatever the spelling of its path (`//v1/…`,
//! percent-encoding, dot segments). `ApiKeyAuth` only declares the security
//! scheme in the OpenAPI document (optional, since the key may be unset).

use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use super::errors::error_response;
use crate::error::ErrorCode;
use crate::secret::Secret;

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

/// Refuses every request without the configured bearer key.
pub struct RequireApiKey(pub Option<Secret>);

impl<E: Endpoint> Middleware<E> for RequireApiKey {
    type Output = RequireApiKeyEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequireApiKeyEndpoint {
            inner,
            key: self.0.clone(),
        }
    }
}

pub struct RequireApiKeyEndpoint<E> {
    inner: E,
    key: Option<Secret>,
}

impl<E: Endpoint> Endpoint for RequireApiKeyEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if let Some(key) = &self.key {
            let given = req
                .headers()
                .get(poem::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token);
            if !given.is_some_and(|g| key.matches(g.as_bytes())) {
                return Ok(error_response(
                    ErrorCode::Unauthorized,
                    "this server requires an API key: send 'Authorization: Bearer <key>'",
                ));
            }
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}
