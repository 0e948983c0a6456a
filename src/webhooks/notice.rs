//! What a receiver gets: the JSON body of API.md's Webhooks section — the
//! task and model objects exactly as the API answers them — and the
//! signature GitHub's webhooks use, `sha256=` and the hex HMAC-SHA256 of
//! the raw body under the shared secret.

use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use poem_openapi::types::ToJSON;
use sha2::Sha256;

use crate::api::objects::{Model, Task};
use crate::secret::Secret;
use crate::store::{Delivery, TaskStatus};

/// The `event` of a notice, from the task's terminal status.
pub fn event_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Done => "task.done",
        TaskStatus::Cancelled => "task.cancelled",
        // A notice is only written for a terminal state.
        TaskStatus::Failed | TaskStatus::Pending | TaskStatus::Running => "task.failed",
    }
}

/// The body of one attempt: the same task, model and `delivery_id` on
/// every attempt; `sent_at` is this attempt's time.
pub fn body(delivery: &Delivery) -> Vec<u8> {
    let task = Task::from(delivery.task.clone());
    let model = delivery.model.clone().map(Model::from);
    let body = serde_json::json!({
        "event": event_name(delivery.task.task_status),
        "task": task.to_json(),
        "model": model.map(|m| m.to_json()),
        "delivery_id": delivery.delivery_id,
        "sent_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    serde_json::to_vec(&body).expect("a JSON value always serializes")
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2: key "Jefe".
    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        let signed = signature(&Secret::new("Jefe"), b"what do ya want for nothing?");
        assert_eq!(
            signed,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
