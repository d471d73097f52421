//! The book side's ground-truth check: every stored snapshot against the simulator's book of
//! that token at that moment.

use polytape::book::{Price, Size};
use polytape_sim::Sim;

/// One row of the `book_snapshots` view, prices and sizes in units of 10⁻⁶.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub asset_id: String,
    pub taken_at_ms: i64,
    pub bids: Vec<(u64, u64)>,
    pub asks: Vec<(u64, u64)>,
    pub source: String,
    pub blind_from_ms: Option<i64>,
    /// Levels of a cut its vouching book could not check (changed in between).
    pub levels_unchecked: i32,
}

fn levels(prices: &[String], sizes: &[String]) -> Vec<(u64, u64)> {
    assert_eq!(prices.len(), sizes.len(), "as many sizes as prices");
    prices
        .iter()
        .zip(sizes)
        .map(|(p, s)| {
            let p = Price::parse(p).unwrap_or_else(|| panic!("stored price {p} is exact"));
            let s = Size::parse(s).unwrap_or_else(|| panic!("stored size {s} is exact"));
            (p.units(), s.units())
        })
        .collect()
}

/// Every row of `book_snapshots` (through the readers' view, so the view and its decoding
/// are what is checked), oldest first.
pub fn stored_snapshots(url: &str) -> Vec<StoredSnapshot> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    c.query(
        "SELECT asset_id, (extract(epoch FROM taken_at) * 1000)::bigint,
                bid_prices::text[], bid_sizes::text[], ask_prices::text[], ask_sizes::text[],
                source, (extract(epoch FROM blind_from) * 1000)::bigint,
                best_bid::text, best_ask::text, levels_unchecked
         FROM book_snapshots ORDER BY taken_at, asset_id",
        &[],
    )
    .expect("book_snapshots")
    .iter()
    .map(|r| {
        let bids = levels(&r.get::<_, Vec<String>>(2), &r.get::<_, Vec<String>>(3));
        let asks = levels(&r.get::<_, Vec<String>>(4), &r.get::<_, Vec<String>>(5));
        // best_bid / best_ask are the first levels.
        let best = |t: Option<String>| t.and_then(|t| Price::parse(&t)).map(Price::units);
        assert_eq!(
            best(r.get(8)),
            bids.first().map(|l| l.0),
            "best_bid is the first bid"
        );
        assert_eq!(
            best(r.get(9)),
            asks.first().map(|l| l.0),
            "best_ask is the first ask"
        );
        StoredSnapshot {
            asset_id: r.get(0),
            taken_at_ms: r.get(1),
            bids,
            asks,
            source: r.get(6),
            blind_from_ms: r.get(7),
            levels_unchecked: r.get(10),
        }
    })
    .collect()
}

/// Asserts that every stored snapshot equals the simulator's book of its token at its
/// `taken_at` (after every change stamped at or before it); `depth` levels a side (0: all).
/// Returns the snapshots checked.
pub fn assert_snapshots_equal_truth(url: &str, sim: &Sim, depth: usize) -> Vec<StoredSnapshot> {
    assert_these_equal_truth(stored_snapshots(url), sim, depth)
}

/// [`assert_snapshots_equal_truth`] for the snapshots whose every level was checked by the
/// book that vouched for them (`levels_unchecked = 0`): where deltas are lost, a cut whose
/// lost level a later change repaired can be vouched for only on its other levels, and says
/// so. Returns (the fully checked snapshots, how many others were stored).
pub fn assert_checked_snapshots_equal_truth(
    url: &str,
    sim: &Sim,
    depth: usize,
) -> (Vec<StoredSnapshot>, usize) {
    let (checked, partly): (Vec<_>, Vec<_>) = stored_snapshots(url)
        .into_iter()
        .partition(|s| s.levels_unchecked == 0);
    (assert_these_equal_truth(checked, sim, depth), partly.len())
}

fn assert_these_equal_truth(
    stored: Vec<StoredSnapshot>,
    sim: &Sim,
    depth: usize,
) -> Vec<StoredSnapshot> {
    let cut = |l: &[(u32, u64)]| -> Vec<(u64, u64)> {
        let n = if depth == 0 {
            l.len()
        } else {
            depth.min(l.len())
        };
        l[..n]
            .iter()
            .map(|(p, s)| (u64::from(*p) * 100, *s))
            .collect()
    };
    let mut wrong = Vec::new();
    for s in &stored {
        let truth = sim
            .book(&s.asset_id, Some(s.taken_at_ms))
            .unwrap_or_else(|| panic!("the simulator knows token {}", s.asset_id));
        if (cut(&truth.bids), cut(&truth.asks)) != (s.bids.clone(), s.asks.clone()) {
            wrong.push(format!(
                "{} at {} ({}): stored bids {:?} asks {:?}, true bids {:?} asks {:?}",
                s.asset_id,
                s.taken_at_ms,
                s.source,
                s.bids,
                s.asks,
                cut(&truth.bids),
                cut(&truth.asks)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} stored snapshots differ from the true book; first: {}",
        wrong.len(),
        stored.len(),
        wrong.first().map(String::as_str).unwrap_or_default()
    );
    stored
}
