//! A TCP proxy on loopback that passes bytes both ways and, once armed,
//! cuts the first connection whose answers pass a byte count: what a
//! flaky link does to a client mid-download. It keeps what clients sent,
//! so a test can read the requests (and their `Range` headers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct CuttingProxy {
    url: String,
    /// Bytes after which the next connection is cut; 0 when disarmed.
    cut_after: Arc<AtomicU64>,
    sent: Arc<Mutex<Vec<u8>>>,
}

#[allow(dead_code)]
impl CuttingProxy {
    /// Proxies to `upstream` (`http://host:port`, any path is ignored).
    pub async fn start(upstream: &str) -> CuttingProxy {
        let authority = upstream
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cut_after = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (cut, log) = (cut_after.clone(), sent.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&authority).await.unwrap();
                tokio::spawn(relay(client, server, cut.clone(), log.clone()));
            }
        });
        CuttingProxy {
            url,
            cut_after,
            sent,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Cuts the first connection whose answers reach `bytes`, once.
    pub fn cut_once_after(&self, bytes: u64) {
        self.cut_after.store(bytes, Ordering::SeqCst);
    }

    /// Everything clients sent, as text.
    pub fn requests(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap()).into_owned()
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    cut: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<u8>>>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = client_read.read(&mut buf).await {
            if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            log.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut answered = 0u64;
    while let Ok(n) = server_read.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let limit = cut.load(Ordering::SeqCst);
        if limit > 0 && answered + n as u64 >= limit && cut.swap(0, Ordering::SeqCst) == limit {
            let keep = (limit - answered) as usize;
            let _ = client_write.write_all(&buf[..keep]).await;
            break;
        }
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
        answered += n as u64;
    }
    // Dropping both halves closes the client's connection.
    upstream.abort();
}
