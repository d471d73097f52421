//! A socket's liveness rules: when to send the text `PING`, and when silence means death.
//!
//! Two deadlines, because the live feed fails two ways: a dead socket answers nothing (no
//! `PONG` in time), and a frozen one still answers `PONG` but carries no data. Quiet is not
//! frozen, though: 500 long-dated markets can be silent for minutes. So a socket silent for
//! the stale timeout is **probed** first (a subscribe operation for one held token with its
//! book asked for): a book coming back proves the socket delivers, and it is kept, with no
//! gap; only a socket that stays silent through the probe timeout is frozen and replaced.
//! Data proves the socket alive as well as a `PONG` does: a `PONG` may sit behind a backlog
//! while the reader waits on a full channel, and must not get a busy socket torn down.

use std::time::{Duration, Instant};

use crate::config::Config;

/// The deadlines of one socket, from its subscription on.
pub(crate) struct Liveness {
    ping_interval: Duration,
    pong_timeout: Duration,
    stale_timeout: Duration,
    probe_timeout: Duration,
    last_data: Instant,
    last_ping: Instant,
    pong_due: Option<Instant>,
    /// A probe is out: data must come by then.
    probe_due: Option<Instant>,
}

/// What the socket needs now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Check {
    Fine,
    /// Silent for the stale timeout: send a probe (once).
    Probe,
    /// Dead or frozen: replace it, for this reason.
    Dead(String),
}

impl Liveness {
    /// A socket subscribed at `now`: it has had no data yet, and counts from here.
    pub(crate) fn new(config: &Config, now: Instant) -> Liveness {
        Liveness {
            ping_interval: config.ping_interval,
            pong_timeout: config.pong_timeout,
            stale_timeout: config.stale_timeout,
            probe_timeout: config.probe_timeout,
            last_data: now,
            last_ping: now,
            pong_due: None,
            probe_due: None,
        }
    }

    /// A data frame arrived.
    pub(crate) fn data(&mut self, now: Instant) {
        self.last_data = now;
        self.pong_due = None;
        self.probe_due = None;
    }

    /// The reader was blocked (on a full channel) and is back: the socket's frames waited in
    /// the kernel meanwhile, so silence during the block says nothing about the socket. The
    /// deadlines start again from `now`.
    pub(crate) fn resume(&mut self, now: Instant) {
        self.last_data = now;
        self.last_ping = self.last_ping.min(now);
        self.pong_due = None;
        self.probe_due = None;
    }

    /// A `PONG` arrived.
    pub(crate) fn pong(&mut self) {
        self.pong_due = None;
    }

    /// Whether a `PING` is due.
    pub(crate) fn ping_due(&self, now: Instant) -> bool {
        now.duration_since(self.last_ping) >= self.ping_interval
    }

    /// A `PING` was sent: a `PONG` (or data) is now due, unless one already was.
    pub(crate) fn pinged(&mut self, now: Instant) {
        self.last_ping = now;
        self.pong_due.get_or_insert(now + self.pong_timeout);
    }

    /// How long from `now` until a deadline of this socket comes (a `PING` due, a `PONG`
    /// or a probe's answer late, the stale timeout); zero when one has passed.
    pub(crate) fn next_due(&self, now: Instant) -> Duration {
        let until = |t: Instant| t.saturating_duration_since(now);
        let mut next = until(self.last_ping + self.ping_interval);
        if let Some(due) = self.pong_due {
            next = next.min(until(due));
        }
        match self.probe_due {
            Some(due) => next = next.min(until(due)),
            None => next = next.min(until(self.last_data + self.stale_timeout)),
        }
        next
    }

    /// What the socket needs at `now`: nothing, a probe (returned once per silence), or
    /// replacing (with the reason).
    pub(crate) fn check(&mut self, now: Instant) -> Check {
        if self.pong_due.is_some_and(|due| now > due) {
            return Check::Dead("no PONG in time".into());
        }
        if now.duration_since(self.last_data) <= self.stale_timeout {
            return Check::Fine;
        }
        match self.probe_due {
            None => {
                self.probe_due = Some(now + self.probe_timeout);
                Check::Probe
            }
            Some(due) if now > due => Check::Dead(format!(
                "no data for {} s, nor an answer to a probe (frozen socket)",
                self.stale_timeout.as_secs()
            )),
            Some(_) => Check::Fine,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn liveness(t0: Instant) -> Liveness {
        let config = Config::builder()
            .ping_interval(Duration::from_secs(10))
            .pong_timeout(Duration::from_secs(10))
            .stale_timeout(Duration::from_secs(60))
            .probe_timeout(Duration::from_secs(5))
            .build()
            .expect("valid");
        Liveness::new(&config, t0)
    }

    #[test]
    fn the_next_deadline_is_the_nearest_one() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut l = liveness(t0);
        // A PING due 10 s after the start, the stale timeout at 60.
        assert_eq!(l.next_due(t0 + s(3)), s(7));
        l.pinged(t0 + s(10));
        // PING again at 20, the PONG due at 20 too (10 s timeout).
        assert_eq!(l.next_due(t0 + s(12)), s(8));
        l.pong();
        l.data(t0 + s(55));
        // Past a deadline: zero, never a negative wait.
        assert_eq!(l.next_due(t0 + s(80)), Duration::ZERO);
        // Silent past the stale timeout: the probe's deadline counts.
        let mut quiet = liveness(t0);
        quiet.pinged(t0 + s(61));
        quiet.pong();
        assert_eq!(quiet.check(t0 + s(61)), Check::Probe);
        assert_eq!(quiet.next_due(t0 + s(62)), s(4));
    }

    #[test]
    fn the_rules_in_a_table() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        enum Ev {
            Data(u64),
            Pong,
            Ping(u64),
            /// A check at this time (it may start a probe).
            Check(u64),
        }
        use Check::{Dead, Fine, Probe};
        let dead = |r: &str| Dead(r.to_owned());
        let cases: Vec<(&str, Vec<Ev>, u64, Check)> = vec![
            ("fresh", vec![], 5, Fine),
            ("pinged, answered", vec![Ev::Ping(10), Ev::Pong], 25, Fine),
            (
                "pinged, no answer",
                vec![Ev::Ping(10)],
                21,
                dead("no PONG in time"),
            ),
            (
                "data answers a ping",
                vec![Ev::Ping(10), Ev::Data(15)],
                25,
                Fine,
            ),
            (
                "quiet: probe first",
                vec![Ev::Ping(50), Ev::Pong],
                61,
                Probe,
            ),
            ("probe out, waiting", vec![Ev::Check(61)], 65, Fine),
            (
                "probe unanswered: frozen",
                vec![Ev::Check(61)],
                67,
                dead("no data for 60 s, nor an answer to a probe (frozen socket)"),
            ),
            (
                "probe answered: quiet, kept",
                vec![Ev::Check(61), Ev::Data(63)],
                100,
                Fine,
            ),
            (
                "answered, quiet again: a new probe",
                vec![Ev::Check(61), Ev::Data(63)],
                124,
                Probe,
            ),
            ("data keeps it fresh", vec![Ev::Data(50)], 100, Fine),
            // A second ping does not push the first one's deadline back.
            (
                "deadline kept",
                vec![Ev::Ping(10), Ev::Ping(20)],
                21,
                dead("no PONG in time"),
            ),
        ];
        for (name, events, at, want) in cases {
            let mut l = liveness(t0);
            for e in events {
                match e {
                    Ev::Data(t) => l.data(t0 + s(t)),
                    Ev::Pong => l.pong(),
                    Ev::Ping(t) => l.pinged(t0 + s(t)),
                    Ev::Check(t) => {
                        l.check(t0 + s(t));
                    }
                }
            }
            assert_eq!(l.check(t0 + s(at)), want, "{name}");
        }
        let l = liveness(t0);
        assert!(!l.ping_due(t0 + s(9)) && l.ping_due(t0 + s(10)));
        // Blocked on a full channel for longer than the stale timeout, then back: not stale.
        let mut l = liveness(t0);
        l.pinged(t0 + s(10));
        l.resume(t0 + s(100));
        assert_eq!(l.check(t0 + s(101)), Fine);
        assert_eq!(l.check(t0 + s(161)), Probe);
    }
}
