//! Minute price bars (issue 19): what each token cost, minute by minute, from the trusted
//! live book (the midpoint's open, high, low and close, the closing best bid and ask) and
//! from the tape (the minute's trades, shares, notional and last price).
//!
//! A connection's minute bars follow its books: every applied event of a trusted book
//! moves its token's bar, and a bar is final once an event stamped in a later minute
//! arrives on the socket (or two seconds of wall clock pass on a quiet one). It goes to the
//! writer on the trades' channel, behind every trade of its minute that the socket
//! delivered, so when the writer stores it those trades are committed: its trade fields
//! are then computed from the tape itself (`store/bars.rs`), and recomputed whenever the
//! backfill adds trades of that minute (idempotently: a second fill changes nothing).
//! Minutes where the feed was blind are filled from CLOB `/prices-history` (`history.rs`).

pub(crate) mod history;

pub use history::fill_history;

/// A minute in Unix ms (its start).
pub(crate) fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(60_000)
}

/// One token's bar of one minute, as the live book made it. Prices in millionths; the
/// midpoint's as twice the midpoint (exact where the midpoint needs a seventh decimal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceBar {
    /// The token.
    pub asset_id: String,
    /// Its market (condition id).
    pub market: String,
    /// The minute's start (Unix ms).
    pub minute_ms: i64,
    /// Twice the midpoint at the minute's start (`None`: a side of the book was empty).
    pub open2: Option<u32>,
    /// Twice the highest midpoint of the minute.
    pub high2: Option<u32>,
    /// Twice the lowest midpoint of the minute.
    pub low2: Option<u32>,
    /// Twice the midpoint at the minute's end.
    pub close2: Option<u32>,
    /// The best bid at the minute's end.
    pub best_bid: Option<u32>,
    /// The best ask at the minute's end.
    pub best_ask: Option<u32>,
}

/// A bar being built.
#[derive(Debug, Clone)]
pub(crate) struct MinuteBar {
    pub(crate) minute_ms: i64,
    open2: Option<u32>,
    high2: Option<u32>,
    low2: Option<u32>,
    close2: Option<u32>,
    best: (Option<u32>, Option<u32>),
    /// Moved since it was last stored (a carried bar that nothing moved is no row).
    pub(crate) changed: bool,
}

impl MinuteBar {
    /// A bar for `minute_ms` opening at `open2` (the previous close: the book did not change
    /// between), with nothing seen yet.
    pub(crate) fn new(
        minute_ms: i64,
        open2: Option<u32>,
        best: (Option<u32>, Option<u32>),
    ) -> MinuteBar {
        MinuteBar {
            minute_ms,
            open2,
            high2: open2,
            low2: open2,
            close2: open2,
            best,
            changed: false,
        }
    }

    /// The book moved: its twice-midpoint and best bid and ask now.
    pub(crate) fn update(&mut self, mid2: Option<u32>, best: (Option<u32>, Option<u32>)) {
        if let Some(m) = mid2 {
            if self.open2.is_none() && self.high2.is_none() {
                self.open2 = Some(m);
            }
            self.high2 = Some(self.high2.map_or(m, |h| h.max(m)));
            self.low2 = Some(self.low2.map_or(m, |l| l.min(m)));
        }
        self.close2 = mid2;
        self.best = best;
        self.changed = true;
    }

    /// The close, carried into the next minute's open.
    pub(crate) fn close2(&self) -> Option<u32> {
        self.close2
    }

    /// The closing best bid and ask.
    pub(crate) fn best(&self) -> (Option<u32>, Option<u32>) {
        self.best
    }

    pub(crate) fn finish(&self, asset_id: &str, market: &str) -> PriceBar {
        PriceBar {
            asset_id: asset_id.to_owned(),
            market: market.to_owned(),
            minute_ms: self.minute_ms,
            open2: self.open2,
            high2: self.high2,
            low2: self.low2,
            close2: self.close2,
            best_bid: self.best.0,
            best_ask: self.best.1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_opens_at_the_previous_close_and_follows_the_midpoint() {
        let mut b = MinuteBar::new(60_000, Some(960_000), (Some(470_000), Some(490_000)));
        b.update(Some(1_000_000), (Some(490_000), Some(510_000)));
        b.update(Some(900_000), (Some(440_000), Some(460_000)));
        b.update(None, (None, Some(460_000)));
        let bar = b.finish("1", "0xm");
        assert_eq!(
            (bar.open2, bar.high2, bar.low2, bar.close2),
            (Some(960_000), Some(1_000_000), Some(900_000), None)
        );
        assert_eq!((bar.best_bid, bar.best_ask), (None, Some(460_000)));
        let mut fresh = MinuteBar::new(0, None, (None, None));
        fresh.update(Some(5), (Some(2), Some(3)));
        assert_eq!(
            fresh.finish("1", "m").open2,
            Some(5),
            "no previous close: the first"
        );
        assert_eq!(minute_of(119_999), 60_000);
        assert_eq!(minute_of(-1), -60_000);
    }
}
