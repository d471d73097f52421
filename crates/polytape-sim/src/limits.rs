//! The live services' rate limits: so many requests per sliding window, the excess answered
//! with 429 and `Retry-After` (`polymarket-feed.md` §5). One implementation for every endpoint.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A sliding window of admitted requests.
pub(crate) struct RateWindow {
    limit: u32,
    window: Duration,
    recent: Mutex<VecDeque<Instant>>,
}

impl RateWindow {
    /// `limit` requests per `window` (0: no limit).
    pub(crate) fn new(limit: u32, window: Duration) -> RateWindow {
        RateWindow {
            limit,
            window,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// `None` when a request may go ahead now (it is counted); else the seconds to wait.
    pub(crate) fn admit(&self) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        let mut recent = self.recent.lock();
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            recent.pop_front();
        }
        if recent.len() >= self.limit as usize {
            let oldest = recent.front().copied().unwrap_or(now);
            let wait = self.window.saturating_sub(now.duration_since(oldest));
            return Some(wait.as_secs().max(1));
        }
        recent.push_back(now);
        None
    }
}
