//! `WebhookSender`: one small actor a node. Every `POLL_EVERY` it claims
//! the notices that are due (any node's: the outbox is the database's, and
//! a claim hides a notice from every other sender for `CLAIM_HOLD`), and
//! posts each on a task of its own, at most `IN_FLIGHT` at once, so a slow
//! or dead receiver holds up neither uploads nor this actor's mailbox.
//! A 2xx answer deletes the notice; anything else — another status, a
//! timeout, a refused connection — makes it due again after a backoff that
//! doubles up to `MAX_BACKOFF`, until it is a day old.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use reqwest::header::CONTENT_TYPE;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::notice;
use super::{ATTEMPT_TIMEOUT, GIVE_UP_AFTER, MAX_BACKOFF, WebhookSettings};
use crate::actors::supervisor::backoff;
use crate::metrics::Metrics;
use crate::store::{Delivery, Store};

/// How often a node looks for due notices.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How long a claimed notice stays hidden from other senders: one attempt
/// with its timeout, and the writes around it.
const CLAIM_HOLD: Duration = Duration::from_secs(30);
/// Attempts one node makes at once.
const IN_FLIGHT: usize = 8;

pub struct WebhookSender;

pub struct WebhookSenderArgs {
    pub settings: WebhookSettings,
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

pub enum WebhookMsg {
    /// Claim and send what is due.
    Poll,
}

pub struct SenderState {
    attempt: Arc<Attempt>,
    in_flight: Arc<Semaphore>,
    /// Cancelled when the actor stops: attempts under way are dropped, and
    /// their notices come due again when the claim's hold passes.
    stop: CancellationToken,
}

/// What one attempt needs.
struct Attempt {
    settings: WebhookSettings,
    store: Store,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
}

impl Actor for WebhookSender {
    type Msg = WebhookMsg;
    type State = SenderState;
    type Arguments = WebhookSenderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WebhookMsg>,
        args: WebhookSenderArgs,
    ) -> Result<SenderState, ActorProcessingErr> {
        // A redirect is not followed (the notice and its signature go to
        // the configured receiver only): it counts as a failed attempt.
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vectorize-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        myself.send_interval(POLL_EVERY, || WebhookMsg::Poll);
        Ok(SenderState {
            attempt: Arc::new(Attempt {
                settings: args.settings,
                store: args.store,
                metrics: args.metrics,
                client,
            }),
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
            stop: CancellationToken::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WebhookMsg>,
        message: WebhookMsg,
        state: &mut SenderState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WebhookMsg::Poll => state.send_due().await,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WebhookMsg>,
        state: &mut SenderState,
    ) -> Result<(), ActorProcessingErr> {
        state.stop.cancel();
        Ok(())
    }
}

impl SenderState {
    /// Claims as many due notices as there are free slots, and starts an
    /// attempt for each.
    async fn send_due(&mut self) {
        let free = self.in_flight.available_permits();
        if free == 0 {
            return;
        }
        let due = match self
            .attempt
            .store
            .claim_due_deliveries(CLAIM_HOLD, free)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the webhook outbox; trying again shortly");
                return;
            }
        };
        for delivery in due {
            let Ok(slot) = self.in_flight.clone().try_acquire_owned() else {
                break;
            };
            let (attempt, stop) = (self.attempt.clone(), self.stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = attempt.run(delivery) => {}
                    () = stop.cancelled() => {}
                }
                drop(slot);
            });
        }
    }
}

impl Attempt {
    /// Posts the notice once and records the outcome.
    async fn run(&self, delivery: Delivery) {
        let id = delivery.delivery_id;
        let task_id = delivery.task.task_id;
        let body = notice::body(&delivery);
        let mut request = self
            .client
            .post(self.settings.url.expose())
            .header(CONTENT_TYPE, "application/json")
            .header("X-Vectorize-Delivery", id.to_string())
            .header(
                "X-Vectorize-Event",
                notice::event_name(delivery.task.task_status),
            );
        if let Some(secret) = &self.settings.secret {
            request = request.header("X-Vectorize-Signature", notice::signature(secret, &body));
        }
        let failure = match request.body(body).send().await {
            Ok(answer) if answer.status().is_success() => None,
            Ok(answer) => Some(format!("the receiver answered {}", answer.status())),
            Err(e) => Some(describe(e)),
        };
        let Some(why) = failure else {
            self.metrics.webhook_delivered.inc();
            tracing::info!(%id, %task_id, attempts = delivery.attempts, "webhook notice delivered");
            if let Err(e) = self.store.delivered(id).await {
                tracing::warn!(%id, error = %e, "a delivered webhook notice stays in the outbox and will be sent again");
            }
            return;
        };
        self.metrics.webhook_failed.inc();
        let age = (chrono::Utc::now() - delivery.created_at)
            .to_std()
            .unwrap_or_default();
        let recorded = if age >= GIVE_UP_AFTER {
            self.metrics.webhook_abandoned.inc();
            tracing::error!(%id, %task_id, attempts = delivery.attempts, %why, "webhook notice given up after a day of failed attempts");
            self.store.delivered(id).await
        } else {
            let wait = backoff(self.settings.retry_base, delivery.attempts).min(MAX_BACKOFF);
            tracing::warn!(%id, %task_id, attempts = delivery.attempts, %why, retry_in_ms = wait.as_millis() as u64, "webhook attempt failed");
            self.store.delivery_failed(id, wait).await
        };
        if let Err(e) = recorded {
            tracing::warn!(%id, error = %e, "could not record a webhook attempt; the notice comes due again when its claim lapses");
        }
    }
}

/// Why a request got no answer, without its URL (which may hold a token).
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let what = if err.is_timeout() {
        "the receiver did not answer in time"
    } else if err.is_connect() {
        "could not connect to the receiver"
    } else {
        "the connection to the receiver broke"
    };
    format!("{what} ({})", crate::sources::root_cause(&err))
}
