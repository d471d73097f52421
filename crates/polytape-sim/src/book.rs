//! The exchange's order book for one token: resting size per price level on the tick grid,
//! orders that arrive and are cancelled at random, and takers that consume the best levels.
//! Every change is returned as the level's new total (what a `price_change` entry carries)
//! with the true best bid and ask after it, and kept in a history, so the book of the token
//! at any past moment is ground truth a test can compare with.
//!
//! Units: prices in ten-thousandths (tick 0.01 = 100, tick 0.001 = 10), sizes in millionths
//! of a share. Integers only, so the ground truth is exact.

use std::collections::BTreeMap;

/// A price in ten-thousandths (0.4800 = 4800).
pub type PriceBp = u32;
/// A size in millionths of a share.
pub type SizeMicro = u64;

/// Prices are between one tick and one minus one tick: 1 = 10,000.
const ONE: PriceBp = 10_000;
/// The usual ticks: 0.01, or 0.001 once the book's midpoint is within 0.04 of 0 or 1.
const TICK_WIDE: PriceBp = 100;
const TICK_FINE: PriceBp = 10;

/// The tick grids of a market (by its index in the universe), as the 2026 exchange has
/// them (feed notes §6): most markets 0.01 / 0.001, one in thirteen on 0.1 / 0.01, one in
/// five of the rest on 0.0025 (four-decimal prices since July 2026) / 0.0001 near the
/// edges. The first is the tick away from the edges, the second within 0.04 of 0 or 1.
pub fn ticks_of(market: u32) -> (PriceBp, PriceBp) {
    if market % 13 == 6 {
        (1_000, 100)
    } else if market % 5 == 2 {
        (25, 1)
    } else {
        (TICK_WIDE, TICK_FINE)
    }
}

/// A side of the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BookSide {
    /// Resting buy orders.
    Bid,
    /// Resting sell orders.
    Ask,
}

/// One change to a book: the level's new total (0: removed) and the top of book after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelChange {
    pub side: BookSide,
    pub price: PriceBp,
    pub size: SizeMicro,
    pub best_bid: Option<PriceBp>,
    pub best_ask: Option<PriceBp>,
}

/// A fill of a taker against one level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    pub price: PriceBp,
    pub size: SizeMicro,
}

/// A snapshot: both sides, best first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookState {
    pub bids: Vec<(PriceBp, SizeMicro)>,
    pub asks: Vec<(PriceBp, SizeMicro)>,
    pub tick: PriceBp,
}

/// One token's book and its history.
#[derive(Debug, Clone)]
pub struct SimBook {
    bids: BTreeMap<PriceBp, SizeMicro>,
    asks: BTreeMap<PriceBp, SizeMicro>,
    tick: PriceBp,
    /// The market's tick grids (away from the edges, near them).
    ticks: (PriceBp, PriceBp),
    /// The book as it was first made, and every change since, with its time (Unix ms).
    start: (i64, BookState),
    history: Vec<(i64, LevelChange)>,
    /// The price of the last trade against it (what `last_trade_price` says).
    pub last_trade: Option<PriceBp>,
}

impl SimBook {
    /// A book around `mid` (in ten-thousandths) on the usual ticks: a few levels each side,
    /// a tick apart.
    pub fn new(mid: PriceBp, at_ms: i64, rng: &mut fastrand::Rng) -> SimBook {
        SimBook::with_ticks(mid, (TICK_WIDE, TICK_FINE), at_ms, rng)
    }

    /// A book around `mid` on the tick grids `ticks` (see [`ticks_of`]).
    pub fn with_ticks(
        mid: PriceBp,
        ticks: (PriceBp, PriceBp),
        at_ms: i64,
        rng: &mut fastrand::Rng,
    ) -> SimBook {
        let tick = tick_for(mid, ticks);
        let mid = (mid / tick * tick).clamp(2 * tick, ONE - 2 * tick);
        let mut book = SimBook {
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            tick,
            ticks,
            start: (at_ms, BookState::default()),
            history: Vec::new(),
            last_trade: None,
        };
        for k in 1..=rng.u32(3..=8) {
            if let Some(p) = mid.checked_sub(k * tick).filter(|&p| p >= tick) {
                book.bids.insert(p, lot(rng));
            }
        }
        for k in 1..=rng.u32(3..=8) {
            let p = mid + k * tick;
            if p <= ONE - tick {
                book.asks.insert(p, lot(rng));
            }
        }
        book.start = (at_ms, book.state(0));
        book
    }

    /// The tick now.
    pub fn tick(&self) -> PriceBp {
        self.tick
    }

    /// The highest bid.
    pub fn best_bid(&self) -> Option<PriceBp> {
        self.bids.keys().next_back().copied()
    }

    /// The lowest ask.
    pub fn best_ask(&self) -> Option<PriceBp> {
        self.asks.keys().next().copied()
    }

    /// Both sides, best first, at most `depth` levels each (0: all).
    pub fn state(&self, depth: usize) -> BookState {
        let depth = if depth == 0 { usize::MAX } else { depth };
        BookState {
            bids: self
                .bids
                .iter()
                .rev()
                .take(depth)
                .map(|(p, s)| (*p, *s))
                .collect(),
            asks: self
                .asks
                .iter()
                .take(depth)
                .map(|(p, s)| (*p, *s))
                .collect(),
            tick: self.tick,
        }
    }

    /// A resting order arrives, or one is cancelled (about as often): near the top of one
    /// side, never crossing the other. Returns the level's change.
    pub fn churn(&mut self, at_ms: i64, rng: &mut fastrand::Rng) -> Option<LevelChange> {
        let side = if rng.bool() {
            BookSide::Bid
        } else {
            BookSide::Ask
        };
        let (levels, best, other) = match side {
            BookSide::Bid => (&self.bids, self.best_bid(), self.best_ask()),
            BookSide::Ask => (&self.asks, self.best_ask(), self.best_bid()),
        };
        let cancel = rng.u8(0..10) < 4 && !levels.is_empty();
        let (price, size) = if cancel {
            // One of the resting levels loses some or all of its size.
            let (&price, &left) = levels.iter().nth(rng.usize(0..levels.len()))?;
            let size = if rng.bool() { 0 } else { left / 2 };
            (price, size)
        } else {
            // A new order: at the best, one tick inside it (not crossing), or behind it.
            let anchor = best.or(other).unwrap_or(ONE / 2);
            let step = self.tick as i64 * rng.i64(-1..=3);
            let toward_book = match side {
                BookSide::Bid => anchor as i64 - step,
                BookSide::Ask => anchor as i64 + step,
            };
            let mut price = (toward_book.clamp(self.tick as i64, (ONE - self.tick) as i64))
                as PriceBp
                / self.tick
                * self.tick;
            // Never at or through the other side.
            if let Some(o) = other {
                price = match side {
                    BookSide::Bid if price >= o => o.checked_sub(self.tick)?,
                    BookSide::Ask if price <= o => o + self.tick,
                    _ => price,
                };
            }
            if price < self.tick || price > ONE - self.tick {
                return None;
            }
            let now = levels.get(&price).copied().unwrap_or(0);
            (price, now + lot(rng))
        };
        Some(self.set(at_ms, side, price, size))
    }

    /// A taker: a BUY consumes asks from the lowest, a SELL bids from the highest, until
    /// `size` is filled or the side is empty. Returns the fills and the level changes.
    pub fn take(
        &mut self,
        at_ms: i64,
        buy: bool,
        mut size: SizeMicro,
    ) -> (Vec<Fill>, Vec<LevelChange>) {
        let (side, mut fills, mut changes) = (
            if buy { BookSide::Ask } else { BookSide::Bid },
            Vec::new(),
            Vec::new(),
        );
        while size > 0 {
            let best = match side {
                BookSide::Ask => self.best_ask(),
                BookSide::Bid => self.best_bid(),
            };
            let Some(price) = best else { break };
            let resting = match side {
                BookSide::Ask => self.asks[&price],
                BookSide::Bid => self.bids[&price],
            };
            let filled = resting.min(size);
            size -= filled;
            fills.push(Fill {
                price,
                size: filled,
            });
            changes.push(self.set(at_ms, side, price, resting - filled));
        }
        (fills, changes)
    }

    /// Sets a level's total and records the change (with the tick the midpoint now asks).
    fn set(&mut self, at_ms: i64, side: BookSide, price: PriceBp, size: SizeMicro) -> LevelChange {
        let mut change = LevelChange {
            side,
            price,
            size,
            best_bid: None,
            best_ask: None,
        };
        apply(&mut self.bids, &mut self.asks, &change);
        (change.best_bid, change.best_ask) = (self.best_bid(), self.best_ask());
        self.history.push((at_ms, change));
        change
    }

    /// Makes sure a taker of `size` on this side (a BUY takes asks) fills at one level: when
    /// the best level holds less (or the side is empty), a resting order tops it up first.
    /// Returns that change, if one was needed.
    pub fn ensure_depth(
        &mut self,
        at_ms: i64,
        buy: bool,
        size: SizeMicro,
        rng: &mut fastrand::Rng,
    ) -> Option<LevelChange> {
        let (side, best) = if buy {
            (BookSide::Ask, self.best_ask())
        } else {
            (BookSide::Bid, self.best_bid())
        };
        let price = match best {
            Some(p) => p,
            // An empty side gets a level a tick away from the other side (or at the middle).
            None => match (side, self.best_bid(), self.best_ask()) {
                (BookSide::Ask, Some(bid), _) => (bid + self.tick).min(ONE - self.tick),
                (BookSide::Bid, _, Some(ask)) => ask.saturating_sub(self.tick).max(self.tick),
                _ => ONE / 2,
            },
        };
        let resting = self.level(side, price);
        (resting < size).then(|| self.set(at_ms, side, price, size + lot(rng)))
    }

    /// The two best levels a taker (a BUY takes asks) would sweep, if the side has two.
    pub fn sweep_levels(&self, buy: bool) -> Option<(PriceBp, PriceBp)> {
        let mut prices: Vec<PriceBp> = if buy {
            self.asks.keys().take(2).copied().collect()
        } else {
            self.bids.keys().rev().take(2).copied().collect()
        };
        let second = prices.pop()?;
        Some((prices.pop()?, second))
    }

    /// Sets the level at `price` of the side a taker takes (a BUY takes asks) to `size`
    /// (orders arriving or cancelled before the match); the change, when it changed.
    pub fn resize(
        &mut self,
        at_ms: i64,
        buy: bool,
        price: PriceBp,
        size: SizeMicro,
    ) -> Option<LevelChange> {
        let side = if buy { BookSide::Ask } else { BookSide::Bid };
        (self.level(side, price) != size).then(|| self.set(at_ms, side, price, size))
    }

    fn level(&self, side: BookSide, price: PriceBp) -> SizeMicro {
        let levels = match side {
            BookSide::Bid => &self.bids,
            BookSide::Ask => &self.asks,
        };
        levels.get(&price).copied().unwrap_or(0)
    }

    /// The tick the book should have now; `Some` when it changed (a `tick_size_change`).
    pub fn retick(&mut self) -> Option<(PriceBp, PriceBp)> {
        let mid = (self.best_bid()? + self.best_ask()?) / 2;
        let tick = tick_for(mid, self.ticks);
        (tick != self.tick).then(|| {
            let old = std::mem::replace(&mut self.tick, tick);
            (old, tick)
        })
    }

    /// The book as it was at `at_ms` (Unix ms): its first state with every change up to
    /// and including that moment applied (the tick given is today's). A book is made the
    /// first time anything touches it and nothing changed it before: earlier moments get its
    /// first state.
    pub fn at(&self, at_ms: i64) -> BookState {
        let mut bids: BTreeMap<PriceBp, SizeMicro> = self.start.1.bids.iter().copied().collect();
        let mut asks: BTreeMap<PriceBp, SizeMicro> = self.start.1.asks.iter().copied().collect();
        for (_, c) in self.history.iter().take_while(|(t, _)| *t <= at_ms) {
            apply(&mut bids, &mut asks, c);
        }
        BookState {
            bids: bids.into_iter().rev().collect(),
            asks: asks.into_iter().collect(),
            tick: self.tick,
        }
    }
}

/// Replays one recorded change onto a copy of the levels.
fn apply(
    bids: &mut BTreeMap<PriceBp, SizeMicro>,
    asks: &mut BTreeMap<PriceBp, SizeMicro>,
    c: &LevelChange,
) {
    let levels = match c.side {
        BookSide::Bid => bids,
        BookSide::Ask => asks,
    };
    if c.size == 0 {
        levels.remove(&c.price);
    } else {
        levels.insert(c.price, c.size);
    }
}

/// Twice the midpoint of a book state (in ten-thousandths), `None` when a side is empty.
fn twice_mid(
    bids: &BTreeMap<PriceBp, SizeMicro>,
    asks: &BTreeMap<PriceBp, SizeMicro>,
) -> Option<u32> {
    Some(bids.keys().next_back()? + asks.keys().next()?)
}

impl SimBook {
    /// The midpoint's path over `[from_ms, to_ms)`: twice the midpoint (ten-thousandths)
    /// just before `from_ms`, then after each change in the window, in order.
    pub fn twice_midpoints(&self, from_ms: i64, to_ms: i64) -> Vec<Option<u32>> {
        let before = self.at(from_ms - 1);
        let mut bids: BTreeMap<PriceBp, SizeMicro> = before.bids.into_iter().collect();
        let mut asks: BTreeMap<PriceBp, SizeMicro> = before.asks.into_iter().collect();
        let mut path = vec![twice_mid(&bids, &asks)];
        for (i, (t, c)) in self.history.iter().enumerate() {
            if *t < from_ms {
                continue;
            }
            if *t >= to_ms {
                break;
            }
            apply(&mut bids, &mut asks, c);
            // One point per stamp: the entries of one match are one change of the book
            // (what a client sees once the group is applied), never its half-applied middle.
            if self.history.get(i + 1).is_none_or(|(next, _)| next != t) {
                path.push(twice_mid(&bids, &asks));
            }
        }
        path
    }
}

/// The tick for a midpoint on the grids `(wide, fine)`: the fine one within 0.04 of 0 or 1.
fn tick_for(mid: PriceBp, (wide, fine): (PriceBp, PriceBp)) -> PriceBp {
    if !(400..=9_600).contains(&mid) {
        fine
    } else {
        wide
    }
}

/// A random resting lot: 1 to 500 shares, in whole hundredths.
fn lot(rng: &mut fastrand::Rng) -> SizeMicro {
    rng.u64(100..=50_000) * 10_000
}

/// A price as the feed writes it (`0.48`, `0.485`).
pub fn price_text(p: PriceBp) -> String {
    let mut s = String::new();
    push_price(&mut s, p);
    s
}

/// A size as the feed writes it (`120.5`, `33`).
pub fn size_text(s: SizeMicro) -> String {
    let mut t = String::new();
    push_size(&mut t, s);
    t
}

/// Appends [`price_text`]'s text.
pub fn push_price(out: &mut String, p: PriceBp) {
    push_decimal(out, u64::from(p / ONE), u64::from(p % ONE), 4, true);
}

/// Appends [`size_text`]'s text.
pub fn push_size(out: &mut String, s: SizeMicro) {
    push_decimal(out, s / 1_000_000, s % 1_000_000, 6, true);
}

/// Appends `int`, a point and `frac` in `digits` digits (at most 8); with `trim`, without
/// the trailing zeros, nor the point when nothing follows it. Written without formatting
/// machinery or an allocation: the simulator writes tens of these a book event, and at full
/// speed its number texts were a tenth of its CPU.
pub fn push_decimal(out: &mut String, int: u64, frac: u64, digits: usize, trim: bool) {
    let digits = digits.min(8);
    let mut buf = [0u8; 29];
    let mut start = 20;
    let mut n = int;
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf[20] = b'.';
    let mut f = frac;
    for k in (0..digits).rev() {
        buf[21 + k] = b'0' + (f % 10) as u8;
        f /= 10;
    }
    let mut end = 21 + digits;
    if trim {
        while end > 21 && buf[end - 1] == b'0' {
            end -= 1;
        }
        if end == 21 {
            end = 20;
        }
    }
    // ASCII digits and a point: always UTF-8.
    out.push_str(std::str::from_utf8(&buf[start..end]).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crossed(b: &SimBook) -> bool {
        matches!((b.best_bid(), b.best_ask()), (Some(bid), Some(ask)) if bid >= ask)
    }

    #[test]
    fn churn_and_takers_keep_a_valid_book_whose_history_replays_exactly() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut book = SimBook::new(4_800, 1_000, &mut rng);
        assert!(book.best_bid() < book.best_ask());
        let first = book.state(0);
        let mut checkpoints = Vec::new();
        for i in 0..5_000i64 {
            let at = 1_000 + i;
            if i % 17 == 0 {
                let (fills, changes) = book.take(at, i % 2 == 0, rng.u64(1..=200) * 1_000_000);
                // A taker fills at the best levels in order, each change its level's new total.
                assert_eq!(fills.len(), changes.len());
                for w in fills.windows(2) {
                    assert!(if i % 2 == 0 {
                        w[0].price < w[1].price
                    } else {
                        w[0].price > w[1].price
                    });
                }
            } else if let Some(c) = book.churn(at, &mut rng) {
                assert_eq!((c.best_bid, c.best_ask), (book.best_bid(), book.best_ask()));
            }
            assert!(!crossed(&book), "never crossed at {i}");
            if i % 1_000 == 0 {
                checkpoints.push((at, book.state(0)));
            }
        }
        // The history replays to the book as it was at each checkpoint, and as it is now.
        for (at, state) in checkpoints {
            let mut replayed = book.at(at);
            replayed.tick = state.tick;
            assert_eq!(replayed, state, "at {at}");
        }
        let now = book.at(i64::MAX);
        assert_eq!(
            (now.bids, now.asks),
            (book.state(0).bids, book.state(0).asks)
        );
        assert_eq!(
            book.at(999),
            BookState {
                tick: book.tick(),
                ..first
            },
            "before: its first state"
        );
    }

    #[test]
    fn prices_and_sizes_are_written_as_the_feed_does() {
        assert_eq!(price_text(4_800), "0.48");
        assert_eq!(price_text(4_850), "0.485");
        assert_eq!(price_text(10), "0.001");
        assert_eq!(size_text(120_500_000), "120.5");
        assert_eq!(size_text(33_000_000), "33");
        assert_eq!(tick_for(300, (TICK_WIDE, TICK_FINE)), TICK_FINE);
        assert_eq!(tick_for(5_000, (TICK_WIDE, TICK_FINE)), TICK_WIDE);
        assert_eq!(tick_for(5_000, ticks_of(2)), 25);
        assert_eq!(price_text(4_825), "0.4825");
    }

    /// The texts written without formatting equal the formatted ones they replaced.
    #[test]
    fn number_texts_equal_the_formatted_ones() {
        let trimmed = |t: String| t.trim_end_matches('0').trim_end_matches('.').to_owned();
        let mut rng = fastrand::Rng::with_seed(7);
        for p in (0..=20_000).chain((0..1_000).map(|_| rng.u32(..))) {
            assert_eq!(
                price_text(p),
                trimmed(format!("{}.{:04}", p / ONE, p % ONE))
            );
            let wire = if p % 10 == 0 {
                format!("{}.{:03}", p / 10_000, p % 10_000 / 10)
            } else {
                format!("{}.{:04}", p / 10_000, p % 10_000)
            };
            assert_eq!(crate::frames::wire_price(p), wire);
        }
        for s in (0..=20_000)
            .chain((0..20_000).map(|_| rng.u64(..1 << 40)))
            .chain([u64::MAX, 1_000_000, 10_000_000, 100_000_000])
        {
            let t = trimmed(format!("{}.{:06}", s / 1_000_000, s % 1_000_000));
            assert_eq!(size_text(s), t, "{s}");
        }
    }
}
