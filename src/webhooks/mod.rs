//! Webhooks: every task that reaches DONE, FAILED or CANCELLED is announced
//! by a signed `POST` to `VECTORIZE_WEBHOOK_URL` (API.md, Webhooks).
//!
//! The notice itself is written by the store, in the transaction of the
//! terminal state (`store::deliveries`), so it survives any crash. Here
//! live what is sent (`notice`: the body and its HMAC signature) and who
//! sends it (`sender`: a small actor on every node that claims due notices,
//! posts them, and retries with backoff for a day). Uploads never wait on
//! a receiver: sending happens on its own actor and tasks.

pub mod notice;
pub mod sender;

use std::time::Duration;

use crate::secret::Secret;

pub use sender::{WebhookSender, WebhookSenderArgs};

/// Where notices go and how they are signed.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The receiver; held as a secret, since such URLs often carry a token.
    pub url: Secret,
    /// Signs each body (`X-Vectorize-Signature`) when set.
    pub secret: Option<Secret>,
    /// The first retry's delay; it doubles on each retry up to `MAX_BACKOFF`.
    pub retry_base: Duration,
}

/// The longest pause between two attempts of one notice: a receiver that
/// comes back hears of every pending notice within this time.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long a notice is retried before it is given up (API.md: a day).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// How long one attempt may take, connecting included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
