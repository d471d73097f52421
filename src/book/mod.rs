//! An order book for one token, rebuilt from the market channel's events and checked on
//! every update: the core of the order-book side (issue 18), and what a researcher replays
//! the book tape with.
//!
//! Prices and sizes are exact fixed-point integers with six decimals ([`Price`], [`Size`]):
//! the exchange's tick is at most four decimals and USDC has six, so every price and size it
//! sends is held exactly, compared exactly, and written back as the same decimal text. No
//! float anywhere; text with more decimals, a sign or an exponent is refused, never rounded.
//!
//! ```
//! use polytape::book::{Book, Price, Side, Size};
//!
//! let p = |s| Price::parse(s).unwrap();
//! let q = |s| Size::parse(s).unwrap();
//! let mut book = Book::new();
//! // `book`: a snapshot replaces everything.
//! book.replace([(p("0.48"), q("100")), (p("0.47"), q("50"))], [(p("0.52"), q("75"))]);
//! // `price_change`: the level's new total ("0" removes it), then the exchange's top of
//! // book after it, which the rebuilt book must equal.
//! book.set(Side::Bid, p("0.49"), q("10"));
//! assert!(book.agrees(Some(p("0.49")), Some(p("0.52"))));
//! book.set(Side::Bid, p("0.49"), q("0"));
//! assert_eq!(book.best_bid(), Some(p("0.48")));
//! ```

mod events;
mod live;
mod number;
mod segment;
mod snapshot;
mod tape;

#[cfg(feature = "bench")]
pub(crate) use events::book_events_in;
#[cfg(feature = "bench")]
pub(crate) use events::read_both_ways as events_read_both_ways;
pub use events::{BookEvent, BookEvents, book_events};
pub(crate) use events::{ReadAlready, book_events_read, scan_reading_books};
pub(crate) use live::LiveBooks;
pub use number::{Price, Side, Size};
pub use snapshot::{BookSnapshot, Levels, SnapshotSource, decode_levels, encode_levels};
pub(crate) use tape::{BookTape, TapeMsg, tape_roll_us};
pub use tape::{TapeFinisher, TapeRow};

/// One token's order book: the total size resting at each price, both sides.
///
/// Each side is a flat array sorted by price (ascending), not a tree: a book holds tens of
/// levels, changes happen near the top, and 16 bytes a level in one allocation a side is a
/// fraction of a tree's nodes (40,000 books are held at once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    bids: Vec<(Price, Size)>,
    asks: Vec<(Price, Size)>,
    tick_size: Option<Price>,
}

/// Levels sorted by price, a zero size no level, the last of a repeated price kept.
fn sorted_levels(levels: impl IntoIterator<Item = (Price, Size)>) -> Vec<(Price, Size)> {
    let mut v: Vec<(Price, Size)> = levels.into_iter().collect();
    v.sort_by_key(|l| l.0);
    // `dedup_by` hands (later, kept): the later entry of a price wins, as a map's would.
    v.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            *kept = *later;
        }
        same
    });
    v.retain(|l| !l.1.is_zero());
    v
}

impl Book {
    /// An empty book.
    pub fn new() -> Book {
        Book::default()
    }

    /// A snapshot (`book`): both sides replaced. A level of size zero is no level.
    pub fn replace(
        &mut self,
        bids: impl IntoIterator<Item = (Price, Size)>,
        asks: impl IntoIterator<Item = (Price, Size)>,
    ) {
        self.bids = sorted_levels(bids);
        self.asks = sorted_levels(asks);
    }

    /// A delta (`price_change`): `size` is the level's new total; zero removes it.
    pub fn set(&mut self, side: Side, price: Price, size: Size) {
        let levels = match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        };
        match (levels.binary_search_by_key(&price, |l| l.0), size.is_zero()) {
            (Ok(i), true) => {
                levels.remove(i);
            }
            (Ok(i), false) => levels[i].1 = size,
            (Err(_), true) => {}
            (Err(i), false) => levels.insert(i, (price, size)),
        }
    }

    /// `tick_size_change`: the new tick (kept; the levels are the exchange's to move).
    pub fn set_tick_size(&mut self, tick: Price) {
        self.tick_size = Some(tick);
    }

    /// The tick size last announced, if any.
    pub fn tick_size(&self) -> Option<Price> {
        self.tick_size
    }

    /// The highest bid.
    pub fn best_bid(&self) -> Option<Price> {
        self.bids.last().map(|l| l.0)
    }

    /// The lowest ask.
    pub fn best_ask(&self) -> Option<Price> {
        self.asks.first().map(|l| l.0)
    }

    /// Whether the rebuilt top of book equals the exchange's (`best_bid`/`best_ask` of a
    /// `price_change` entry, `None` for an empty side). The feed has no sequence numbers: a
    /// lost delta shows only here.
    pub fn agrees(&self, best_bid: Option<Price>, best_ask: Option<Price>) -> bool {
        self.best_bid() == best_bid && self.best_ask() == best_ask
    }

    /// Twice the midpoint, in units of 10⁻⁶: exact, where the midpoint itself may need a
    /// seventh decimal. `None` when a side is empty.
    pub fn twice_midpoint_units(&self) -> Option<u64> {
        Some(self.best_bid()?.units() + self.best_ask()?.units())
    }

    /// The levels of `side`, best first (highest bid, lowest ask), at most `depth` of them
    /// (0: every level).
    pub fn levels(&self, side: Side, depth: usize) -> Vec<(Price, Size)> {
        let depth = if depth == 0 { usize::MAX } else { depth };
        match side {
            Side::Bid => self.bids.iter().rev().take(depth).copied().collect(),
            Side::Ask => self.asks.iter().take(depth).copied().collect(),
        }
    }

    /// Whether both sides hold the same levels as `other`'s (the tick aside).
    pub fn same_levels(&self, other: &Book) -> bool {
        self.bids == other.bids && self.asks == other.asks
    }

    /// Levels on both sides.
    pub fn len(&self) -> usize {
        self.bids.len() + self.asks.len()
    }

    /// True when both sides are empty.
    pub fn is_empty(&self) -> bool {
        self.bids.is_empty() && self.asks.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Exact decimal text to a price or a size (the book tests' shorthand).
    pub(crate) fn p(s: &str) -> Price {
        Price::parse(s).expect("price")
    }

    pub(crate) fn q(s: &str) -> Size {
        Size::parse(s).expect("size")
    }

    #[test]
    fn decimals_are_held_exactly_and_written_back_the_same() {
        for (text, back) in [
            ("0.48", "0.48"),
            (".48", "0.48"),
            ("0.480", "0.48"),
            ("1", "1"),
            ("0.0001", "0.0001"),
            ("0", "0"),
        ] {
            assert_eq!(p(text).to_string(), back, "{text}");
        }
        assert_eq!(q("219.217767").to_string(), "219.217767");
        assert_eq!(q("1000000").to_string(), "1000000");
        assert_eq!(q("0.000001").units(), 1);
        // Refused, never rounded: too many decimals, a sign, an exponent, junk, above 1.
        for bad in [
            "0.0000001",
            "-0.5",
            "1e-2",
            "",
            ".",
            "0.5.1",
            "abc",
            "1.01",
            " 0.5",
        ] {
            assert!(Price::parse(bad).is_none(), "{bad:?}");
        }
        assert!(Size::parse("99999999999999999999").is_none(), "overflow");
    }

    #[test]
    fn the_flat_sides_behave_as_a_map_would() {
        use std::collections::BTreeMap;
        let mut rng = fastrand::Rng::with_seed(11);
        let mut book = Book::new();
        let mut model: [BTreeMap<Price, Size>; 2] = Default::default();
        // A snapshot with repeats and zeros, in no order: the last of a price wins.
        let levels = [
            (p("0.4"), q("1")),
            (p("0.3"), q("2")),
            (p("0.4"), q("5")),
            (p("0.2"), q("0")),
        ];
        book.replace(levels, []);
        assert_eq!(
            book.levels(Side::Bid, 0),
            vec![(p("0.4"), q("5")), (p("0.3"), q("2"))]
        );
        book.replace([], []);
        for _ in 0..20_000 {
            let side = if rng.bool() { Side::Bid } else { Side::Ask };
            let price = Price::from_units(rng.u64(1..=60) * 10_000).expect("price");
            let size = Size::from_units(if rng.u8(0..3) == 0 {
                0
            } else {
                rng.u64(1..1_000)
            });
            book.set(side, price, size);
            let m = &mut model[usize::from(side == Side::Ask)];
            if size.is_zero() {
                m.remove(&price);
            } else {
                m.insert(price, size);
            }
        }
        let bids: Vec<_> = model[0].iter().rev().map(|(p, s)| (*p, *s)).collect();
        let asks: Vec<_> = model[1].iter().map(|(p, s)| (*p, *s)).collect();
        assert_eq!(book.levels(Side::Bid, 0), bids);
        assert_eq!(book.levels(Side::Ask, 0), asks);
        assert_eq!(book.best_bid(), bids.first().map(|l| l.0));
        assert_eq!(book.best_ask(), asks.first().map(|l| l.0));
    }

    #[test]
    fn a_book_is_replaced_changed_and_checked() {
        let mut b = Book::new();
        b.replace(
            [
                (p("0.47"), q("50")),
                (p("0.48"), q("100")),
                (p("0.40"), q("0")),
            ],
            [(p("0.52"), q("75")), (p("0.55"), q("10"))],
        );
        assert_eq!(
            (b.best_bid(), b.best_ask()),
            (Some(p("0.48")), Some(p("0.52")))
        );
        assert_eq!(b.len(), 4, "a zero level is no level");
        assert_eq!(
            b.levels(Side::Bid, 0),
            vec![(p("0.48"), q("100")), (p("0.47"), q("50"))],
            "best first"
        );
        assert_eq!(b.levels(Side::Ask, 1), vec![(p("0.52"), q("75"))]);
        // A new best bid, then its removal.
        b.set(Side::Bid, p("0.50"), q("5"));
        assert!(b.agrees(Some(p("0.50")), Some(p("0.52"))));
        b.set(Side::Bid, p("0.50"), q("0"));
        assert!(b.agrees(Some(p("0.48")), Some(p("0.52"))));
        assert_eq!(b.twice_midpoint_units(), Some(1_000_000), "midpoint 0.5");
        // A lost delta: the exchange says the best ask moved, the book does not know it.
        assert!(!b.agrees(Some(p("0.48")), Some(p("0.51"))));
        // Sides emptied.
        b.set(Side::Ask, p("0.52"), q("0"));
        b.set(Side::Ask, p("0.55"), q("0"));
        assert!(b.agrees(Some(p("0.48")), None));
        assert_eq!(b.twice_midpoint_units(), None);
        assert_eq!(Side::from_feed("BUY"), Some(Side::Bid));
        assert_eq!(Side::from_feed("buy"), None);
    }
}
