//! When to try a failed delivery again and when to give it up (pure).

use std::time::Duration;

/// Retry bounds from `[notify]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub max_attempts: u32,
    pub max_age_secs: u64,
}

impl Retry {
    pub fn from_config(c: &super::config::NotifyConfig) -> Retry {
        Retry {
            initial_ms: c.retry_initial_ms,
            max_ms: c.retry_max_ms,
            max_attempts: c.max_attempts,
            max_age_secs: c.max_age_secs,
        }
    }

    /// The wait after the `failed`-th failed attempt (1-based): the initial
    /// delay, doubled each time, never above the maximum.
    pub fn delay(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(63);
        let ms = self
            .initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms);
        Duration::from_millis(ms)
    }

    /// Whether a delivery that has now failed `failed` times, first at
    /// `first_failed_at`, is given up at `now`.
    pub fn give_up(&self, failed: u32, first_failed_at: i64, now: i64) -> bool {
        failed >= self.max_attempts
            || now.saturating_sub(first_failed_at) >= self.max_age_secs as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum() {
        let r = Retry {
            initial_ms: 500,
            max_ms: 5_000,
            max_attempts: 6,
            max_age_secs: 3600,
        };
        let ms: Vec<u128> = (1..=7).map(|n| r.delay(n).as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(r.delay(0).as_millis(), 500);
        assert_eq!(r.delay(u32::MAX).as_millis(), 5000);
    }

    #[test]
    fn gives_up_on_attempts_or_age() {
        let r = Retry {
            initial_ms: 1,
            max_ms: 1,
            max_attempts: 3,
            max_age_secs: 60,
        };
        assert!(!r.give_up(2, 1000, 1059));
        assert!(r.give_up(3, 1000, 1001));
        assert!(r.give_up(1, 1000, 1060));
    }
}
