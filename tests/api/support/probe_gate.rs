//! A pass-through proxy in front of the fake hub for race tests: it
//! forwards every request as it is and answers what the hub answers, but
//! can hold back the next `HEAD` request until the test lets it go.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::SeqCst;

use tokio::sync::Semaphore;

use crate::support::fake_hub::FakeHub;

/// A pass-through proxy in front of the fake hub that can hold back the
/// next `HEAD` (the file probe an upload makes before its 201) until told
/// to let it go: it widens, on purpose, the window between an upload's
/// duplicate check and its registration.
#[derive(Clone)]
pub struct ProbeGate {
    /// Where the service's `HF_ENDPOINT` should point.
    pub url: String,
    /// Set to hold back the next `HEAD`.
    pub hold_next: Arc<AtomicBool>,
    /// Set once a `HEAD` is being held.
    pub holding: Arc<AtomicBool>,
    /// One permit lets a held `HEAD` go on.
    pub release: Arc<Semaphore>,
}

impl ProbeGate {
    /// Serves the gate on `127.0.0.1:0`, forwarding to `hub`.
    pub async fn start(hub: &FakeHub) -> ProbeGate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let gate = ProbeGate {
            url,
            hold_next: Arc::default(),
            holding: Arc::default(),
            release: Arc::new(Semaphore::new(0)),
        };
        // Redirects go back to the service as they are, as the hub sent them.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let upstream = hub.url();
        let endpoint = poem::endpoint::make({
            let gate = gate.clone();
            move |req: poem::Request| {
                let (gate, upstream, client) = (gate.clone(), upstream.clone(), client.clone());
                async move { gate.forward(req, &upstream, &client).await }
            }
        });
        let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(endpoint));
        gate
    }

    async fn forward(
        &self,
        req: poem::Request,
        upstream: &str,
        client: &reqwest::Client,
    ) -> poem::Response {
        if req.method() == poem::http::Method::HEAD && self.hold_next.swap(false, SeqCst) {
            self.holding.store(true, SeqCst);
            self.release.acquire().await.unwrap().forget();
        }
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut headers = req.headers().clone();
        headers.remove(poem::http::header::HOST);
        let answer = client
            .request(req.method().clone(), format!("{upstream}{path}"))
            .headers(headers)
            .send()
            .await
            .unwrap();
        let mut response = poem::Response::builder().status(answer.status());
        for (name, value) in answer.headers() {
            response = response.header(name, value);
        }
        response.body(answer.bytes().await.unwrap())
    }
}
