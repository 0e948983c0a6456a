//! The node's bandwidth cap: one token bucket that every download of the
//! node (Hugging Face files and Git LFS objects) takes its bytes from, so
//! that together they stay under `VECTORIZE_MAX_BYTES_PER_SEC`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket of bytes. A take may drive it below zero; the taker then
/// waits until the debt is paid back at the configured rate, so many
/// takers together never exceed it and a large take is never starved.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_sec: f64,
    /// Most bytes a quiet bucket holds: a quarter of a second's worth, so
    /// that a burst after a pause stays short.
    burst: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    filled_at: Instant,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = (rate / 4.0).max(16.0 * 1024.0);
        Self {
            bytes_per_sec: rate,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                filled_at: Instant::now(),
            }),
        }
    }

    /// Takes `bytes` from the bucket and waits until they are earned.
    pub async fn take(&self, bytes: u64) {
        let wait = self.debit(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Refills the bucket for the time passed, takes `bytes`, and answers
    /// how long the taker must wait for the bucket to be back at zero.
    fn debit(&self, bytes: u64, now: Instant) -> Duration {
        let mut bucket = self
            .bucket
            .lock()
            .expect("the throttle's lock is never poisoned");
        let earned = now
            .saturating_duration_since(bucket.filled_at)
            .as_secs_f64()
            * self.bytes_per_sec;
        bucket.tokens = (bucket.tokens + earned).min(self.burst) - bytes as f64;
        bucket.filled_at = now;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / self.bytes_per_sec)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_past_the_burst_wait_for_the_rate() {
        let throttle = Throttle::new(1_000_000);
        let start = Instant::now();
        // The burst (a quarter second's worth) goes at once …
        assert_eq!(throttle.debit(250_000, start), Duration::ZERO);
        // … then each byte waits its turn, debts adding up across takers.
        assert_eq!(throttle.debit(500_000, start), Duration::from_millis(500));
        assert_eq!(throttle.debit(500_000, start), Duration::from_secs(1));
        // Time pays the debt back.
        let later = start + Duration::from_secs(2);
        assert_eq!(throttle.debit(100_000, later), Duration::ZERO);
    }

    #[test]
    fn a_quiet_bucket_holds_no_more_than_the_burst() {
        let throttle = Throttle::new(1_000_000);
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(throttle.debit(250_000, later), Duration::ZERO);
        assert!(throttle.debit(100_000, later) > Duration::ZERO);
    }
}
