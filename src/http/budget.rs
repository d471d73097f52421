//! A client's own request budget: at most so many requests in any sliding window, waiting
//! (never failing) for room. Kept well under a service's published limit, so its 429s stay
//! the exception (they are still handled, by the retry loop).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// At most `per_window` requests in any `window`.
pub(crate) struct Budget {
    per_window: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl Budget {
    pub(crate) fn new(per_window: usize, window: Duration) -> Budget {
        Budget {
            per_window: per_window.max(1),
            window,
            recent: VecDeque::new(),
        }
    }

    /// Waits until one more request fits, and counts it.
    pub(crate) fn wait(&mut self) {
        loop {
            let now = Instant::now();
            while self
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                self.recent.pop_front();
            }
            if self.recent.len() < self.per_window {
                self.recent.push_back(now);
                return;
            }
            let oldest = self.recent.front().copied().unwrap_or(now);
            std::thread::sleep(self.window.saturating_sub(now.duration_since(oldest)));
        }
    }
}
