//! Retry policy: attempts, exponential backoff with jitter, and the retry loop.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use super::output::{Failure, TaskOutput};

/// How a task made by a closure is retried when it returns an error.
///
/// Given to [`TaskFnBuilder::retry`](super::TaskFnBuilder::retry). Retried
/// are `Err` outputs the [`retry_if`](super::TaskFnBuilder::retry_if)
/// predicate accepts (all, by default), and attempts cut by the
/// [`attempt_timeout`](super::TaskFnBuilder::attempt_timeout) (always). Never
/// retried: panics (a bug), and the task's
/// [`timeout`](super::TaskFnBuilder::timeout), a deadline over all attempts
/// that, once passed, has used the task's whole time budget.
///
/// The delay after failed attempt `n` (1-based) is
/// `min(initial * multiplier^(n-1), max)`, then jittered down by up to the
/// `jitter` fraction: with `jitter = 0.5` it lies in `[d/2, d]`. The task keeps
/// its concurrency slot while it waits.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use workcrew::task::RetryPolicy;
///
/// let policy = RetryPolicy::new(4)
///     .backoff(Duration::from_millis(100), Duration::from_secs(1))
///     .jitter(0.0);
/// assert_eq!(policy.delay_for(1), Duration::from_millis(100));
/// assert_eq!(policy.delay_for(2), Duration::from_millis(200));
/// assert_eq!(policy.delay_for(5), Duration::from_secs(1)); // capped
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
}

impl RetryPolicy {
    /// At most `max_attempts` attempts in all, the first included (so 1 means no
    /// retry; 0 is treated as 1).
    ///
    /// Default backoff: 100 ms doubling up to 10 s, jitter 0.5.
    pub fn new(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }

    /// The first delay and the largest. Default: 100 ms and 10 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial = initial;
        self.max = max.max(initial);
        self
    }

    /// Growth factor between delays (values below 1 are treated as 1). Default: 2.0.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Fraction in `0.0..=1.0` by which each delay is randomly shortened; 0 makes
    /// delays exact. Default: 0.5.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay after failed attempt `attempt` (1-based), before jitter.
    pub fn delay_for(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(1024) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay after failed attempt `attempt`, with jitter applied using
    /// `unit`, a number in `[0, 1)`.
    pub(crate) fn jittered(&self, attempt: u32, unit: f64) -> Duration {
        self.delay_for(attempt).mul_f64(1.0 - self.jitter * unit)
    }
}

impl Default for RetryPolicy {
    /// Three attempts with the default backoff.
    fn default() -> Self {
        RetryPolicy::new(3)
    }
}

/// A uniformly distributed number in `[0, 1)` from the standard library's
/// per-process random hash keys; good enough to spread retries apart.
pub(crate) fn random_unit() -> f64 {
    let bits = RandomState::new().build_hasher().finish() >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// Which errors are retried.
pub(crate) type RetryPredicate<E> = Arc<dyn Fn(&E) -> bool + Send + Sync>;

/// Told about each retry, to count it and send the event.
pub(crate) type RetryHook = Box<dyn Fn(u32, Duration) + Send + Sync>;

/// Runs `make()` until it succeeds, fails in a way that is not retried, or the
/// attempts are used up; the last result is returned. Each attempt is limited
/// to `attempt_timeout`, if given; an attempt that times out is dropped and
/// retried (the predicate judges only the task's own errors).
pub(crate) async fn run_with_retry<M, Fut>(
    mut make: M,
    policy: RetryPolicy,
    retry_if: Option<RetryPredicate<<Fut::Output as TaskOutput>::Err>>,
    attempt_timeout: Option<Duration>,
    on_retry: RetryHook,
) -> Result<<Fut::Output as TaskOutput>::Ok, Failure<<Fut::Output as TaskOutput>::Err>>
where
    M: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: TaskOutput,
{
    let mut attempt = 1;
    loop {
        let fut = make();
        let output = match attempt_timeout {
            None => Some(fut.await),
            Some(limit) => tokio::time::timeout(limit, fut).await.ok(),
        };
        let (failure, retryable) = match output.map(TaskOutput::into_result) {
            Some(Ok(v)) => return Ok(v),
            Some(Err(err)) => {
                let retryable = retry_if.as_ref().is_none_or(|pred| pred(&err));
                (Failure::Failed(err), retryable)
            }
            None => {
                let timed_out = Failure::AttemptTimedOut {
                    attempt,
                    of: policy.max_attempts,
                    after: attempt_timeout.unwrap_or_default(),
                };
                (timed_out, true)
            }
        };
        if !retryable || attempt >= policy.max_attempts {
            return Err(failure);
        }
        let delay = policy.jittered(attempt, random_unit());
        on_retry(attempt, delay);
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn jittered_delay_stays_within_bounds(
            attempt in 1u32..40,
            initial_ms in 1u64..5_000,
            max_ms in 1u64..60_000,
            multiplier in 1.0f64..4.0,
            jitter in 0.0f64..=1.0,
            unit in 0.0f64..1.0,
        ) {
            let p = RetryPolicy::new(10)
                .backoff(Duration::from_millis(initial_ms), Duration::from_millis(max_ms))
                .multiplier(multiplier)
                .jitter(jitter);
            let d = p.delay_for(attempt);
            let j = p.jittered(attempt, unit);
            prop_assert!(d <= Duration::from_millis(max_ms.max(initial_ms)));
            prop_assert!(j <= d);
            prop_assert!(j >= d.mul_f64(1.0 - jitter) - Duration::from_nanos(1));
            prop_assert!(p.delay_for(attempt + 1) >= d);
        }
    }

    #[test]
    fn random_unit_is_in_range_and_varies() {
        let xs: Vec<f64> = (0..64).map(|_| random_unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.windows(2).any(|w| w[0] != w[1]));
    }
}
