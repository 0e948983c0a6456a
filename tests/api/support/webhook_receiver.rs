//! A webhook receiver in the test process: a real HTTP server on loopback
//! that records every notice (headers, raw body, arrival time) and answers
//! 200, or the statuses a test scripts for the next requests. It can stop
//! listening and start again on the same address, as a receiver that is
//! down for a while does, and hold every answer back, as a receiver that
//! hangs does.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poem::http::StatusCode;
use poem::listener::TcpListener;
use poem::{Request, Server};
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Notice {
    pub signature: Option<String>,
    pub delivery: Option<String>,
    pub event: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub at: Instant,
    /// The status it was answered with.
    pub answered: u16,
}

impl Notice {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a notice is JSON")
    }
}

#[derive(Default)]
struct Log {
    notices: Vec<Notice>,
    /// Statuses for the next requests; 200 once empty.
    script: VecDeque<u16>,
    /// Requests received and not answered yet (held back).
    waiting: usize,
}

pub struct WebhookReceiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    /// While `true`, requests wait before they are recorded and answered.
    hold: Arc<tokio::sync::watch::Sender<bool>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// A loopback address nothing listens on (yet).
pub fn unused_addr() -> SocketAddr {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

impl WebhookReceiver {
    /// A receiver on a fresh port, listening.
    pub async fn start() -> Self {
        let mut receiver = Self::down(unused_addr());
        receiver.listen().await;
        receiver
    }

    /// A receiver for `addr` that does not listen until `listen`.
    pub fn down(addr: SocketAddr) -> Self {
        Self {
            addr,
            log: Default::default(),
            hold: Arc::new(tokio::sync::watch::channel(false).0),
            server: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/vectorize", self.addr)
    }

    /// Starts listening on the receiver's address.
    pub async fn listen(&mut self) {
        let (log, hold) = (self.log.clone(), self.hold.clone());
        let endpoint = poem::endpoint::make(move |req: Request| {
            let (log, mut held) = (log.clone(), hold.subscribe());
            async move {
                log.lock().unwrap().waiting += 1;
                let _ = held.wait_for(|hold| !hold).await;
                log.lock().unwrap().waiting -= 1;
                record(&log, req).await
            }
        });
        let listener = TcpListener::bind(self.addr);
        let server = Server::new(listener);
        self.server = Some(tokio::spawn(async move {
            let _ = server.run(endpoint).await;
        }));
        // Listening once a connection is accepted.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            assert!(Instant::now() < deadline, "the receiver does not listen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Holds every request unanswered until `release`.
    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// Waits until `n` requests are held unanswered at once, or panics.
    pub async fn wait_held(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.log.lock().unwrap().waiting < n {
            assert!(
                Instant::now() < deadline,
                "{n} requests were never held at once"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next requests are answered with these statuses, then 200.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.log.lock().unwrap().script.extend(statuses);
    }

    pub fn notices(&self) -> Vec<Notice> {
        self.log.lock().unwrap().notices.clone()
    }

    /// Waits until `n` requests have arrived (any answer), or panics.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Notice> {
        let deadline = Instant::now() + within;
        loop {
            let notices = self.notices();
            if notices.len() >= n {
                return notices;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} notices arrived within {within:?}",
                notices.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn record(log: &Mutex<Log>, mut req: Request) -> StatusCode {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (signature, delivery, event, content_type) = (
        header("x-vectorize-signature"),
        header("x-vectorize-delivery"),
        header("x-vectorize-event"),
        header("content-type"),
    );
    let body = req.take_body().into_vec().await.unwrap_or_default();
    let mut log = log.lock().unwrap();
    let answered = log.script.pop_front().unwrap_or(200);
    log.notices.push(Notice {
        signature,
        delivery,
        event,
        content_type,
        body,
        at: Instant::now(),
        answered,
    });
    StatusCode::from_u16(answered).unwrap()
}
