//! Assembles the service from a `Config` — store, actors, upstream
//! clients, routes, listener — and stops it gracefully. `main` and the
//! tests start the service the same way, through `App::start`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::Server;
use poem::listener::{Acceptor, Listener, TcpListener};
use ractor::{Actor, ActorRef};
use tokio_util::sync::CancellationToken;

use crate::actors::pruner::{PrunerArgs, PrunerMsg, TaskPruner};
use crate::actors::{Actors, Fetchers, RegistryArgs, TaskCache};
use crate::api::{self, AppState};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::sources::download::Downloader;
use crate::sources::github::GitHub;
use crate::sources::huggingface::HfHub;
use crate::store::Store;
use crate::store::files::ModelFiles;
use crate::webhooks::sender::WebhookMsg;
use crate::webhooks::{WebhookSender, WebhookSenderArgs};

/// How long open connections (event streams) get to finish at shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(2);
/// How long running workers get to reach a resumable point and the actors
/// to stop: with `HTTP_DRAIN`, well inside the 10 s the contract allows.
const WORKER_DRAIN: Duration = Duration::from_secs(6);

/// A running service.
pub struct App {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop_accepting: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    background: BackgroundActors,
}

/// The actors beside the upload actors: the pruner of old tasks and the
/// webhook sender, each when configured.
struct BackgroundActors {
    pruner: Option<ActorRef<PrunerMsg>>,
    webhooks: Option<ActorRef<WebhookMsg>>,
}

impl BackgroundActors {
    async fn start(
        config: &Config,
        store: &Store,
        cache: Arc<TaskCache>,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let pruner = match config.task_retention {
            Some(retention) => {
                let args = PrunerArgs {
                    store: store.clone(),
                    cache,
                    retention,
                };
                Some(Actor::spawn(None, TaskPruner, args).await?.0)
            }
            None => None,
        };
        let webhooks = match &config.webhook {
            Some(settings) => {
                let args = WebhookSenderArgs {
                    settings: settings.clone(),
                    store: store.clone(),
                    metrics: metrics.clone(),
                };
                Some(Actor::spawn(None, WebhookSender, args).await?.0)
            }
            None => None,
        };
        Ok(Self { pruner, webhooks })
    }

    /// Stops both; a notice being sent comes due again on any node.
    fn stop(&self) {
        if let Some(pruner) = &self.pruner {
            pruner.stop(None);
        }
        if let Some(webhooks) = &self.webhooks {
            webhooks.stop(None);
        }
    }
}

impl App {
    /// Opens the database, resumes unfinished tasks and starts listening.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        hold_no_proc_files();
        std::fs::create_dir_all(&config.data_dir)?;
        let store = Store::open(&config.db).await?;
        // An embedded database opens in one process only: this node is alone.
        let sole_node = !config.db.endpoint.starts_with("ws");
        Self::start_on(config, store, sole_node).await
    }

    /// Starts a node on an open database, which other nodes may share
    /// (`sole_node` false): how tests run several nodes in one process.
    pub async fn start_on(config: Config, store: Store, sole_node: bool) -> anyhow::Result<Self> {
        hold_no_proc_files();
        std::fs::create_dir_all(&config.data_dir)?;
        let files = ModelFiles::new(&config.data_dir, &config.node_id);
        let metrics = Arc::new(Metrics::default());
        // With a webhook URL, every terminal write leaves a notice.
        let store = store.announcing(config.webhook.is_some());
        // One downloader a node: its connections and bandwidth cap are shared.
        let downloader = Downloader::new(config.download, &config.data_dir, metrics.clone());
        let hub = HfHub::new(
            &config.hf_endpoint,
            config.hf_token.clone(),
            downloader.clone(),
        );
        let github = GitHub::new(
            &config.github_api_url,
            &config.github_server_url,
            config.github_token.clone(),
            downloader,
        );
        let fetchers = Arc::new(Fetchers {
            store: store.clone(),
            files: files.clone(),
            hub: hub.clone(),
            github: github.clone(),
            metrics: metrics.clone(),
        });
        let actors = Actors::start(RegistryArgs {
            store: store.clone(),
            fetchers,
            events: Actors::event_channel(),
            cache: Default::default(),
            node: config.node_id.clone(),
            lease: Duration::from_millis(config.lease_ms),
            sole_node,
            max_concurrent_tasks: config.max_concurrent_tasks,
            retry_base: Duration::from_millis(config.retry_base_ms),
        })
        .await?;
        let cache = actors.cache.clone();
        let background = BackgroundActors::start(&config, &store, cache, &metrics).await?;
        let acceptor = TcpListener::bind(config.addr).into_acceptor().await?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .ok_or_else(|| anyhow::anyhow!("the listener has no TCP address"))?;
        let state = Arc::new(AppState {
            config,
            store,
            files,
            hub,
            github,
            actors,
            metrics,
        });
        let stop_accepting = CancellationToken::new();
        let server = tokio::spawn({
            let routes = api::routes(state.clone());
            let stop = stop_accepting.clone();
            async move {
                Server::new_with_acceptor(acceptor)
                    .run_with_graceful_shutdown(routes, stop.cancelled_owned(), Some(HTTP_DRAIN))
                    .await
            }
        });
        tracing::info!(%addr, node = %state.config.node_id, data_dir = %state.config.data_dir.display(), "vectorize is listening");
        Ok(Self {
            addr,
            state,
            stop_accepting,
            server,
            background,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops at once, as a crash would: connections drop, no lease is
    /// given back and no progress saved (see `Actors::halt`).
    pub async fn halt(self) {
        self.stop_accepting.cancel();
        self.server.abort();
        self.background.stop();
        self.state.actors.halt().await;
        tracing::info!(node = %self.state.config.node_id, "vectorize halted");
    }

    /// Stops accepting requests, lets running tasks reach a point they can
    /// resume from, persists their progress and stops the actors.
    pub async fn shutdown(self) {
        self.stop_accepting.cancel();
        let _ = tokio::time::timeout(HTTP_DRAIN, self.server).await;
        self.background.stop();
        self.state.actors.shutdown(WORKER_DRAIN).await;
        tracing::info!("vectorize stopped");
    }
}

/// SurrealDB samples the process' memory and CPU through `sysinfo`, which by
/// default keeps `/proc/{pid}/stat` of every process and thread on the host
/// open to speed up later reads — hundreds of descriptors on a busy host, up
/// to half the descriptor limit, held for the life of the process. Told
/// before the database's first read, it opens and closes them instead. The
/// setting is a global of the sysinfo crate, so `sysinfo` in Cargo.toml must
/// stay the version surrealdb uses (`cargo tree -i sysinfo` shows one).
fn hold_no_proc_files() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        sysinfo::set_open_files_limit(0);
    });
}
