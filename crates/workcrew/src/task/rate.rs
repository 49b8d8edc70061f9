//! Rate limiting of task starts: a GCRA on tokio's clock.
//!
//! # Implementation notes
//!
//! The generic cell rate algorithm keeps one instant, the theoretical arrival
//! time (TAT) of the next start. With emission interval `T = interval / starts`
//! and tolerance `tau = T * (burst - 1)`, a start at `now` is allowed when
//! `max(TAT, now) - tau <= now`, and then `TAT = max(TAT, now) + T`. It is the
//! algorithm `governor` implements; it is written here on `tokio::time::Instant`
//! so that it follows tokio's paused clock in tests and waits with tokio timers.

use std::time::Duration;

use tokio::time::Instant;

use super::error::BuildError;

/// At most `starts` task starts per `interval`, with bursts of up to `burst`.
///
/// With the default burst of 1, starts are spaced at least `interval / starts`
/// apart, so no window of length `interval` holds more than `starts` of them.
/// A larger burst lets that many start back to back after a quiet period; the
/// sustained rate stays `starts / interval`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use workcrew::task::{RateLimit, TaskPool};
///
/// // 10 starts per second, up to 5 at once.
/// let pool = TaskPool::builder()
///     .rate_limit(RateLimit::per(10, Duration::from_secs(1)).burst(5))
///     .build()?;
/// # Ok::<(), workcrew::task::BuildError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    starts: u32,
    interval: Duration,
    burst: u32,
}

impl RateLimit {
    /// `starts` starts per `interval`, burst 1.
    pub fn per(starts: u32, interval: Duration) -> Self {
        RateLimit {
            starts,
            interval,
            burst: 1,
        }
    }

    /// Allow up to `burst` starts back to back. Default: 1.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        if self.starts == 0 {
            return Err(BuildError::InvalidRateLimit(
                "starts per interval must be at least 1".into(),
            ));
        }
        if self.burst == 0 {
            return Err(BuildError::InvalidRateLimit(
                "burst must be at least 1".into(),
            ));
        }
        if self.interval.is_zero() {
            return Err(BuildError::InvalidRateLimit(
                "interval must be longer than zero".into(),
            ));
        }
        Ok(())
    }
}

/// The limiter's state.
#[derive(Clone, Debug)]
pub(crate) struct Gcra {
    emission: Duration,
    tolerance: Duration,
    tat: Option<Instant>,
}

impl Gcra {
    pub(crate) fn new(limit: RateLimit) -> Self {
        // Rounded up, so that `starts` emissions never fit in less than `interval`.
        let nanos = limit.interval.as_nanos().div_ceil(u128::from(limit.starts));
        let emission = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        Gcra {
            emission,
            tolerance: emission * (limit.burst - 1),
            tat: None,
        }
    }

    /// Takes a start at `now`, or says when the next one is allowed.
    pub(crate) fn try_acquire(&mut self, now: Instant) -> Result<(), Instant> {
        let tat = self.tat.map_or(now, |t| t.max(now));
        let allowed_at = tat.checked_sub(self.tolerance).unwrap_or(now);
        if allowed_at > now {
            return Err(allowed_at);
        }
        self.tat = Some(tat + self.emission);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spacing_and_burst() {
        let t0 = Instant::now();
        let mut g = Gcra::new(RateLimit::per(2, Duration::from_secs(1)).burst(2));
        assert!(g.try_acquire(t0).is_ok());
        assert!(g.try_acquire(t0).is_ok());
        assert_eq!(g.try_acquire(t0), Err(t0 + Duration::from_millis(500)));
        assert!(g.try_acquire(t0 + Duration::from_millis(500)).is_ok());
        assert_eq!(
            g.try_acquire(t0 + Duration::from_millis(500)),
            Err(t0 + Duration::from_millis(1000))
        );
    }

    proptest! {
        /// Greedy starts never exceed `starts + burst - 1` in any window of one
        /// interval, and with burst 1 never exceed `starts`.
        #[test]
        fn window_bound(starts in 1u32..20, burst in 1u32..10, steps in proptest::collection::vec(0u64..300, 1..200)) {
            let interval = Duration::from_secs(1);
            let mut g = Gcra::new(RateLimit::per(starts, interval).burst(burst));
            let t0 = Instant::now();
            let mut now = t0;
            let mut taken = Vec::new();
            for step in steps {
                now += Duration::from_millis(step);
                while g.try_acquire(now).is_ok() {
                    taken.push(now);
                }
            }
            let bound = (starts + burst - 1) as usize;
            for (i, &start) in taken.iter().enumerate() {
                let in_window = taken[i..].iter().take_while(|&&t| t < start + interval).count();
                prop_assert!(in_window <= bound, "{} starts in one interval, bound {}", in_window, bound);
            }
        }
    }
}
