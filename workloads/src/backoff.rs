//! Bounded, jittered, seeded backoff after a definite refusal.
//!
//! A store that answers "unavailable" (no leader, 503, connection refused) answers at once, and
//! a client that retries at once measures its own loop: one soak ran 20,000 ops/s of which
//! 88.7% were such immediate failures. As Jepsen's clients do, a logical client sleeps after a
//! refusal: the delay doubles from `initial_ms` per consecutive refusal up to `max_ms`, and is
//! drawn uniformly from its upper half (jitter, so clients do not retry in lockstep). Any other
//! outcome resets it. A failed precondition (cas mismatch, compare false) is not a refusal: the
//! store is up and answered. Timeouts (`info`) already waited, and add no delay.

use crate::client::Completion;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The bounds of a backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackoffConfig {
    /// The delay after a first refusal (before jitter).
    pub initial_ms: u64,
    /// No delay exceeds this.
    pub max_ms: u64,
}

impl Default for BackoffConfig {
    /// 10 ms doubling to 500 ms: the first retry is soon (elections on loopback take
    /// ~100-1000 ms), and a client never sleeps through more than half a second of recovery.
    fn default() -> BackoffConfig {
        BackoffConfig {
            initial_ms: 10,
            max_ms: 500,
        }
    }
}

/// One logical client's backoff state.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    rng: ChaCha8Rng,
    /// Consecutive refusals so far.
    refusals: u32,
}

impl Backoff {
    pub fn new(config: BackoffConfig, seed: u64) -> Backoff {
        Backoff {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            refusals: 0,
        }
    }

    /// The delay before the next operation, after one that ended as `completion`.
    pub fn after(&mut self, completion: &Completion) -> Option<Duration> {
        if completion.refused {
            Some(self.refused())
        } else {
            self.reset();
            None
        }
    }

    /// Anything but a refusal: the next refusal starts from `initial_ms` again.
    pub fn reset(&mut self) {
        self.refusals = 0;
    }

    /// Counts a refusal and returns the jittered delay: uniform in `[d/2, d]`, where
    /// `d = min(max_ms, initial_ms * 2^(refusals-1))`.
    pub fn refused(&mut self) -> Duration {
        self.refusals = self.refusals.saturating_add(1);
        let doublings = (self.refusals - 1).min(32);
        let ceiling_ms = self
            .config
            .initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.config.max_ms);
        let low_ms = ceiling_ms / 2;
        Duration::from_millis(self.rng.gen_range(low_ms..=ceiling_ms))
    }

    /// Consecutive refusals so far.
    pub fn refusals(&self) -> u32 {
        self.refusals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordeal_checker::Value;

    #[test]
    fn doubles_to_the_bound_with_jitter_and_resets() {
        let config = BackoffConfig {
            initial_ms: 10,
            max_ms: 100,
        };
        let mut b = Backoff::new(config, 1);
        let refused = Completion::refused(Value::Null, "unavailable");
        let mut delays = Vec::new();
        for _ in 0..40 {
            delays.push(b.after(&refused).unwrap().as_millis() as u64);
        }
        // The n-th delay lies in the upper half of min(100, 10 * 2^(n-1)).
        for (n, d) in delays.iter().enumerate() {
            let ceiling = (10u64 << n.min(20)).min(100);
            assert!(
                (ceiling / 2..=ceiling).contains(d),
                "delay {n} = {d} ms, ceiling {ceiling}"
            );
        }
        // Jittered: the capped delays are not all equal.
        let capped: std::collections::HashSet<_> = delays[10..].iter().collect();
        assert!(capped.len() > 1, "{delays:?}");
        // Same seed, same delays.
        let mut again = Backoff::new(config, 1);
        let replay: Vec<u64> = (0..40)
            .map(|_| again.after(&refused).unwrap().as_millis() as u64)
            .collect();
        assert_eq!(delays, replay);
        // A precondition failure, an ok or an info resets and adds no delay.
        assert_eq!(
            b.after(&Completion::fail(Value::Null, "precondition-failed")),
            None
        );
        assert_eq!(b.refusals(), 0);
        assert!(b.after(&refused).unwrap() <= Duration::from_millis(10));
        assert_eq!(b.after(&Completion::info(Value::Null, "timeout")), None);
        assert_eq!(b.after(&Completion::ok(Value::Null)), None);
    }
}
