//! A socket's liveness rules: when to send the text `PING`, and when silence means death.
//!
//! Two deadlines, because the live feed fails two ways: a dead socket answers nothing (no
//! `PONG` in time), and a frozen one still answers `PONG` but carries no data (no data for the
//! stale timeout). Data proves the socket alive as well as a `PONG` does: a `PONG` may sit
//! behind a backlog while the reader waits on a full channel, and must not get a busy socket
//! torn down.

use std::time::{Duration, Instant};

use crate::config::Config;

/// The deadlines of one socket, from its subscription on.
pub(crate) struct Liveness {
    ping_interval: Duration,
    pong_timeout: Duration,
    stale_timeout: Duration,
    last_data: Instant,
    last_ping: Instant,
    pong_due: Option<Instant>,
}

impl Liveness {
    /// A socket subscribed at `now`: it has had no data yet, and counts from here.
    pub(crate) fn new(config: &Config, now: Instant) -> Liveness {
        Liveness {
            ping_interval: config.ping_interval,
            pong_timeout: config.pong_timeout,
            stale_timeout: config.stale_timeout,
            last_data: now,
            last_ping: now,
            pong_due: None,
        }
    }

    /// A data frame arrived.
    pub(crate) fn data(&mut self, now: Instant) {
        self.last_data = now;
        self.pong_due = None;
    }

    /// The reader was blocked (on a full channel) and is back: the socket's frames waited in
    /// the kernel meanwhile, so silence during the block says nothing about the socket. The
    /// deadlines start again from `now`.
    pub(crate) fn resume(&mut self, now: Instant) {
        self.last_data = now;
        self.last_ping = self.last_ping.min(now);
        self.pong_due = None;
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

    /// Why the socket must be replaced, if it must.
    pub(crate) fn verdict(&self, now: Instant) -> Option<String> {
        if self.pong_due.is_some_and(|due| now > due) {
            return Some("no PONG in time".into());
        }
        if now.duration_since(self.last_data) > self.stale_timeout {
            return Some(format!(
                "no data for {} s (stale socket)",
                self.stale_timeout.as_secs()
            ));
        }
        None
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
            .build()
            .expect("valid");
        Liveness::new(&config, t0)
    }

    #[test]
    fn the_rules_in_a_table() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        // Each case: events (at seconds after t0) then the verdict at a time.
        enum Ev {
            Data(u64),
            Pong,
            Ping(u64),
        }
        let cases: Vec<(&str, Vec<Ev>, u64, Option<&str>)> = vec![
            ("fresh", vec![], 5, None),
            ("pinged, answered", vec![Ev::Ping(10), Ev::Pong], 25, None),
            ("pinged, no answer", vec![Ev::Ping(10)], 21, Some("no PONG")),
            (
                "data answers a ping",
                vec![Ev::Ping(10), Ev::Data(15)],
                25,
                None,
            ),
            (
                "quiet but answering",
                vec![Ev::Ping(50), Ev::Pong],
                61,
                Some("stale"),
            ),
            ("data keeps it fresh", vec![Ev::Data(50)], 100, None),
            ("data too long ago", vec![Ev::Data(50)], 111, Some("stale")),
            // A second ping does not push the first one's deadline back.
            (
                "deadline kept",
                vec![Ev::Ping(10), Ev::Ping(20)],
                21,
                Some("no PONG"),
            ),
        ];
        for (name, events, at, want) in cases {
            let mut l = liveness(t0);
            for e in events {
                match e {
                    Ev::Data(t) => l.data(t0 + s(t)),
                    Ev::Pong => l.pong(),
                    Ev::Ping(t) => l.pinged(t0 + s(t)),
                }
            }
            let got = l.verdict(t0 + s(at));
            match (got, want) {
                (None, None) => {}
                (Some(g), Some(w)) => assert!(g.contains(w), "{name}: {g}"),
                (g, w) => panic!("{name}: got {g:?}, want {w:?}"),
            }
        }
        let l = liveness(t0);
        assert!(!l.ping_due(t0 + s(9)) && l.ping_due(t0 + s(10)));
        // Blocked on a full channel for longer than the stale timeout, then back: not stale.
        let mut l = liveness(t0);
        l.pinged(t0 + s(10));
        l.resume(t0 + s(100));
        assert_eq!(l.verdict(t0 + s(101)), None);
        assert!(l.verdict(t0 + s(161)).is_some_and(|v| v.contains("stale")));
    }
}
