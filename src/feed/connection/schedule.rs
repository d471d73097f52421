//! When a connection's socket is next recycled: staggered across connections, periodic after
//! a success, backing off after a failure. Timing only; `recycle.rs` does the replacement.

use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::config::Config;

/// When a connection's socket is next replaced, make before break.
pub(super) struct Recycle {
    /// Zero: never.
    interval: Duration,
    /// The connection's share of the stagger, in [0, 1).
    stagger: f64,
    next: Option<Instant>,
    /// A turn at the open gate, booked once the recycle was due.
    pub(super) turn: Option<Instant>,
    failures: u32,
}

impl Recycle {
    pub(super) fn new(config: &Config, id: usize) -> Self {
        // Golden-ratio steps spread any number of connections evenly over an interval.
        let stagger = (id as f64 * 0.618_033_988_75).fract();
        Recycle {
            interval: config.recycle_interval,
            stagger,
            next: None,
            turn: None,
            failures: 0,
        }
    }

    /// A socket was just subscribed: its first recycle. The first socket of a connection
    /// lives a staggered part of the interval, so connections started together are not
    /// recycled together.
    pub(super) fn started(&mut self, first: bool) {
        self.turn = None;
        self.next = (!self.interval.is_zero()).then(|| {
            let life = if first {
                self.interval.mul_f64(1.0 - self.stagger)
            } else {
                self.interval
            };
            Instant::now() + life
        });
    }

    /// After a recycle (or a failed one): when the next is due, returned as a delay.
    pub(super) fn schedule(&mut self, config: &Config, succeeded: bool) -> Duration {
        self.turn = None;
        let delay = if succeeded {
            self.failures = 0;
            self.interval
        } else {
            self.failures = self.failures.saturating_add(1);
            Backoff::new(
                config.backoff_min.max(Duration::from_secs(1)),
                config.backoff_max,
            )
            .delay(self.failures)
            .min(self.interval)
        };
        self.next = (!self.interval.is_zero()).then(|| Instant::now() + delay);
        delay
    }

    /// `None`: not due; `Some(false)`: due, but no turn at the open gate booked yet;
    /// `Some(true)`: go.
    pub(super) fn due(&self, now: Instant) -> Option<bool> {
        match (self.next, self.turn) {
            (Some(next), None) if now >= next => Some(false),
            (Some(_), Some(turn)) if now >= turn => Some(true),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(interval: Duration) -> Config {
        Config::builder()
            .recycle_interval(interval)
            .build()
            .expect("config")
    }

    #[test]
    fn first_recycles_are_staggered_then_periodic() {
        let hour = Duration::from_secs(3600);
        let c = config(hour);
        let lives: Vec<Duration> = (0..8)
            .map(|id| {
                let mut r = Recycle::new(&c, id);
                r.started(true);
                r.next.expect("scheduled") - Instant::now()
            })
            .collect();
        // Connections started together are recycled apart: no two within 3 minutes.
        for (i, a) in lives.iter().enumerate() {
            assert!(*a <= hour);
            for b in &lives[i + 1..] {
                assert!(a.abs_diff(*b) > Duration::from_secs(180), "{lives:?}");
            }
        }
        let mut r = Recycle::new(&c, 3);
        r.started(false);
        let life = r.next.expect("scheduled") - Instant::now();
        assert!(
            life > hour - Duration::from_secs(1),
            "later sockets live the interval"
        );
    }

    #[test]
    fn a_due_recycle_books_a_turn_first_and_failures_back_off() {
        let c = config(Duration::from_secs(60));
        let mut r = Recycle::new(&c, 0);
        assert_eq!(
            r.due(Instant::now()),
            None,
            "nothing before the first socket"
        );
        r.next = Some(Instant::now());
        assert_eq!(r.due(Instant::now()), Some(false), "due: book a turn");
        r.turn = Some(Instant::now() + Duration::from_secs(5));
        assert_eq!(r.due(Instant::now()), None, "waiting for the turn");
        r.turn = Some(Instant::now());
        assert_eq!(r.due(Instant::now()), Some(true));
        let first = r.schedule(&c, false);
        let second = r.schedule(&c, false);
        assert!(first >= Duration::from_secs(1) && second >= first);
        for _ in 0..20 {
            assert!(
                r.schedule(&c, false) <= Duration::from_secs(60),
                "capped by the interval"
            );
        }
        assert_eq!(r.schedule(&c, true), Duration::from_secs(60));
        assert_eq!(r.failures, 0);
        assert_eq!(r.turn, None);
    }

    #[test]
    fn a_zero_interval_never_recycles() {
        let c = config(Duration::ZERO);
        let mut r = Recycle::new(&c, 1);
        r.started(true);
        assert_eq!(r.next, None);
        r.schedule(&c, false);
        assert_eq!(r.due(Instant::now() + Duration::from_secs(86_400)), None);
    }
}
