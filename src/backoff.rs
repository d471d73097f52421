//! Exponential backoff with jitter: the one schedule for every retry in polytape (sockets,
//! the writer's database reconnects, Gamma requests), configured per use.

use std::time::Duration;

/// Retry `n` (counting from 0) waits between half and all of `min(first · 2ⁿ, cap)`: half
/// of the step is fixed, half is random ("equal jitter"), so a fleet of sockets dropped
/// together does not come back together, and no retry comes sooner than half its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    first: Duration,
    cap: Duration,
}

impl Backoff {
    /// A schedule starting at `first` and never above `cap` (a `cap` below `first` is raised
    /// to it).
    pub(crate) fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            first,
            cap: cap.max(first),
        }
    }

    /// The step of retry `attempt` before jitter: `min(first · 2^attempt, cap)`.
    pub(crate) fn step(&self, attempt: u32) -> Duration {
        // 2^32 · anything is past any sensible cap already; saturate instead of overflowing.
        self.first
            .saturating_mul(1u32 << attempt.min(31))
            .min(self.cap)
    }

    /// The delay before retry `attempt`: between half of [`Backoff::step`] and all of it.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let step = self.step(attempt);
        step / 2 + step.mul_f64(fastrand::f64() / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn steps_double_up_to_the_cap() {
        let cases: &[(u64, u64, u32, u64)] = &[
            // first, cap, attempt, expected step (ms)
            (250, 30_000, 0, 250),
            (250, 30_000, 1, 500),
            (250, 30_000, 2, 1_000),
            (250, 30_000, 6, 16_000),
            (250, 30_000, 7, 30_000),
            (250, 30_000, 40, 30_000),
            (250, 30_000, u32::MAX, 30_000),
            (500, 100, 3, 500), // a cap below the first step is raised to it
            (0, 1_000, 5, 0),
        ];
        for &(first, cap, attempt, want) in cases {
            let b = Backoff::new(MS(first), MS(cap));
            assert_eq!(b.step(attempt), MS(want), "{first}/{cap} attempt {attempt}");
        }
    }

    #[test]
    fn delays_stay_between_half_the_step_and_the_step() {
        let b = Backoff::new(MS(100), MS(10_000));
        for attempt in 0..12 {
            let step = b.step(attempt);
            let mut seen_below_step = false;
            for _ in 0..200 {
                let d = b.delay(attempt);
                assert!(
                    d >= step / 2 && d <= step,
                    "attempt {attempt}: {d:?} vs {step:?}"
                );
                seen_below_step |= d < step;
            }
            assert!(seen_below_step, "attempt {attempt}: the delay is jittered");
        }
    }
}
