//! A per-device request budget: a fixed one-minute window per device.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Past this many tracked devices, expired windows are swept on the next call.
const SWEEP_AT: usize = 100_000;

#[derive(Debug)]
pub struct RateLimiter {
    per_window: u32,
    windows: Mutex<Windows>,
}

#[derive(Debug, Default)]
struct Windows {
    by_key: HashMap<String, (Instant, u32)>,
    last_sweep: Option<Instant>,
}

impl RateLimiter {
    /// `0` means unlimited.
    pub fn per_minute(per_window: u32) -> Self {
        Self {
            per_window,
            windows: Mutex::new(Windows::default()),
        }
    }

    /// Counts a request; `Err(seconds)` says when the device may ask again.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.per_window == 0 {
            return Ok(());
        }
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Sweep expired windows at most once a window, so a large fleet does
        // not pay for a full scan on every request.
        let swept_lately = windows.last_sweep.is_some_and(|at| now.duration_since(at) < WINDOW);
        if windows.by_key.len() >= SWEEP_AT && !swept_lately {
            windows
                .by_key
                .retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            windows.last_sweep = Some(now);
        }
        let (start, count) = windows.by_key.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_window {
            let left = WINDOW.saturating_sub(now.duration_since(*start));
            return Err(left.as_secs().max(1));
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_over_its_budget_is_told_when_to_retry() {
        let limiter = RateLimiter::per_minute(2);
        let t0 = Instant::now();
        assert_eq!(limiter.check_at("a", t0), Ok(()));
        assert_eq!(limiter.check_at("a", t0), Ok(()));
        assert_eq!(limiter.check_at("a", t0 + Duration::from_secs(10)), Err(50));
        assert_eq!(limiter.check_at("b", t0), Ok(()), "budgets are per device");
        assert_eq!(limiter.check_at("a", t0 + WINDOW), Ok(()), "the window resets");
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = RateLimiter::per_minute(0);
        assert!((0..1000).all(|_| limiter.check("a").is_ok()));
    }
}
