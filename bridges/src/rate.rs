//! Per-customer allowances that every chat bridge applies the same way: a token bucket of
//! messages per handle, and at most one typing signal per handle every few seconds. Both
//! forget customers idle for ten minutes once many are tracked, so memory stays bounded by
//! the customers of the last minutes.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use threadline_protocol::Handle;

/// A customer's allowance of messages: `burst` at once, then one per `refill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages allowed at once.
    pub burst: u32,
    /// Time to earn one more.
    pub refill: Duration,
}

impl Default for RateLimit {
    /// 10 at once, then one a second.
    fn default() -> Self {
        RateLimit {
            burst: 10,
            refill: Duration::from_secs(1),
        }
    }
}

/// Typing signals a customer may send the agents: one per this long.
pub const TYPING_EVERY: Duration = Duration::from_secs(2);
/// State is kept for this many customers at most before idle ones are forgotten.
const TRACKED: usize = 10_000;
/// A customer idle this long starts again with a full allowance.
const IDLE: Duration = Duration::from_secs(600);

/// Forgets customers idle for [`IDLE`] once more than [`TRACKED`] are tracked.
fn forget_idle<V>(map: &mut HashMap<Handle, V>, now: Instant, at: impl Fn(&V) -> Instant) {
    if map.len() > TRACKED {
        map.retain(|_, value| now.duration_since(at(value)) < IDLE);
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A [`RateLimit`] for each customer.
#[derive(Debug)]
pub struct Allowances {
    rate: RateLimit,
    buckets: Mutex<HashMap<Handle, Bucket>>,
}

impl Allowances {
    /// Every customer gets `rate`.
    pub fn new(rate: RateLimit) -> Self {
        Allowances {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one message from `handle`'s allowance: `false` when it has none left.
    pub fn take(&self, handle: &Handle) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        forget_idle(&mut buckets, now, |bucket| bucket.at);
        let burst = f64::from(self.rate.burst.max(1));
        let bucket = buckets.entry(handle.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let earned =
            now.duration_since(bucket.at).as_secs_f64() / self.rate.refill.as_secs_f64().max(1e-3);
        bucket.tokens = (bucket.tokens + earned).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// At most one typing signal per [`TYPING_EVERY`] for each customer.
#[derive(Debug, Default)]
pub struct TypingThrottle {
    last: Mutex<HashMap<Handle, Instant>>,
}

impl TypingThrottle {
    /// Whether `handle`'s typing signal goes to the agents now.
    pub fn allow(&self, handle: &Handle) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        forget_idle(&mut last, now, |at| *at);
        match last.get(handle) {
            Some(at) if now.duration_since(*at) < TYPING_EVERY => false,
            _ => {
                last.insert(handle.clone(), now);
                true
            }
        }
    }

    /// `handle` sent a message: typing after it is news again.
    pub fn reset(&self, handle: &Handle) {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_one_per_refill_and_customers_are_apart() {
        let allowances = Allowances::new(RateLimit {
            burst: 3,
            refill: Duration::from_secs(3600),
        });
        let ada: Handle = "xmpp:ada@example.org".parse().expect("handle");
        let bob: Handle = "xmpp:bob@example.org".parse().expect("handle");
        assert!((0..3).all(|_| allowances.take(&ada)));
        assert!(
            !allowances.take(&ada),
            "the fourth within the hour is refused"
        );
        assert!(
            allowances.take(&bob),
            "another customer keeps their allowance"
        );
    }

    #[test]
    fn typing_goes_once_per_interval_and_again_after_a_message() {
        let throttle = TypingThrottle::default();
        let ada: Handle = "xmpp:ada@example.org".parse().expect("handle");
        assert!(throttle.allow(&ada));
        assert!(!throttle.allow(&ada));
        throttle.reset(&ada);
        assert!(throttle.allow(&ada));
    }
}
