//! Never a duplicate: which Data API trades the tape already holds.
//!
//! The two sources disagree on time (the feed: the match, in ms; the Data API: the block, in
//! seconds, the same or a few seconds later) and perhaps on granularity (unconfirmed: one
//! feed event per taker order, or per maker fill). The rule, per asset:
//!
//! 1. **By hash.** A Data API trade is present when the tape holds its transaction hash for
//!    its asset, whatever else differs. All the fills of one transaction on one asset count as
//!    present together: if the feed were one event per taker order, adding the other fills
//!    would count the same volume twice, and a duplicate is the one error the tape must
//!    never make.
//!    The hash is looked up among the asset's rows matched up to an hour before the block
//!    (`lookup::HASH_LOOKBACK_MS`, through the natural key): a block may trail its match by
//!    much more than the settlement lag usually allowed.
//! 2. **Without a hash** (the feed leaves it out on some trades): present when a tape row
//!    without a hash, of the same asset, side, price and size, has a match time up to the
//!    settlement lag (`Config::settlement_lag`, 60 s) before the block time and
//!    [`AFTER_BLOCK_MS`] after it. Each tape row accounts for one Data API trade at most.
//! 3. Anything else is missing: it is added, with the block time as its time and
//!    `source = 'data_api'`.
//!
//! The race with a late feed trade (a twin replayed from the spool after its backfill) is
//! made impossible by design elsewhere: only windows older than everything still in the
//! channel or the spool are compared (see `backfill`).

use std::collections::HashMap;

use crate::data_api::ApiTrade;
use crate::feed::{Decimal, Side};

/// How long after its block second a trade's match time may read (clock skew, rounding).
pub(crate) const AFTER_BLOCK_MS: i64 = 1_000;

/// A row of the tape, as the matching sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TapeRow {
    pub(crate) asset: String,
    pub(crate) side: Side,
    /// Canonical decimal text (no trailing zeros).
    pub(crate) price: String,
    pub(crate) size: String,
    pub(crate) timestamp_ms: i64,
    pub(crate) transaction_hash: Option<String>,
}

/// The Data API trades the tape does not hold, by the rule above; a trade may have matched
/// up to `before_block_ms` before its block.
pub(crate) fn missing<'a>(
    api: &'a [ApiTrade],
    tape: &[TapeRow],
    before_block_ms: i64,
) -> Vec<&'a ApiTrade> {
    api.iter()
        .zip(twins(api, tape, before_block_ms))
        .filter_map(|(t, twin)| twin.is_none().then_some(t))
        .collect()
}

/// The tape row a settled trade is, by the rule above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Twin {
    /// Its match time (Unix ms).
    pub(crate) timestamp_ms: i64,
    /// Found by asset, side, price, size and time: the row has no hash.
    pub(crate) hashless: bool,
}

/// For each of `api` (in order), the tape row it is, or `None` when the tape lacks it.
pub(crate) fn twins(api: &[ApiTrade], tape: &[TapeRow], before_block_ms: i64) -> Vec<Option<Twin>> {
    // The earliest row of each (asset, hash): the time a hashed trade is counted at.
    let mut hashes: HashMap<(&str, String), i64> = HashMap::new();
    for r in tape {
        if let Some(h) = r.transaction_hash.as_deref() {
            let at = hashes
                .entry((r.asset.as_str(), h.to_ascii_lowercase()))
                .or_insert(r.timestamp_ms);
            *at = (*at).min(r.timestamp_ms);
        }
    }
    // Rows without a hash, by what must be equal (asset, side, price, size), each with its
    // match time and whether a Data API trade took it already: a lookup per trade instead
    // of a scan of the tape (O(n + m), not O(n · m), for a window of thousands of each).
    type Key = (String, Side, String, String);
    let mut unhashed: HashMap<Key, Vec<(i64, bool)>> = HashMap::new();
    for r in tape.iter().filter(|r| r.transaction_hash.is_none()) {
        unhashed
            .entry((r.asset.clone(), r.side, r.price.clone(), r.size.clone()))
            .or_default()
            .push((r.timestamp_ms, false));
    }
    let mut out = Vec::with_capacity(api.len());
    for t in api {
        if let Some(at) = hashes.get(&(t.asset.as_str(), t.transaction_hash.to_ascii_lowercase())) {
            out.push(Some(Twin {
                timestamp_ms: *at,
                hashless: false,
            }));
            continue;
        }
        let (price, size) = (
            Decimal::canonical(t.price.as_str()),
            Decimal::canonical(t.size.as_str()),
        );
        let block_ms = t.timestamp_s * 1000;
        let twin = unhashed
            .get_mut(&(t.asset.clone(), t.side, price, size))
            .and_then(|rows| {
                rows.iter_mut().find(|(at, used)| {
                    !*used
                        && *at >= block_ms - before_block_ms
                        && *at <= block_ms + 999 + AFTER_BLOCK_MS
                })
            });
        out.push(twin.map(|(at, used)| {
            *used = true;
            Twin {
                timestamp_ms: *at,
                hashless: true,
            }
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::Decimal;

    fn api(asset: &str, side: Side, price: &str, size: &str, ts_s: i64, hash: &str) -> ApiTrade {
        ApiTrade {
            asset: asset.into(),
            condition_id: "0xm".into(),
            side,
            price: Decimal::parse(price).expect("decimal"),
            size: Decimal::parse(size).expect("decimal"),
            timestamp_s: ts_s,
            transaction_hash: hash.into(),
        }
    }

    fn row(
        asset: &str,
        side: Side,
        price: &str,
        size: &str,
        ms: i64,
        hash: Option<&str>,
    ) -> TapeRow {
        TapeRow {
            asset: asset.into(),
            side,
            price: Decimal::canonical(price),
            size: Decimal::canonical(size),
            timestamp_ms: ms,
            transaction_hash: hash.map(str::to_owned),
        }
    }

    use Side::{Buy, Sell};

    #[test]
    fn canonical_decimals() {
        for (a, b) in [
            ("0.480", "0.48"),
            ("10.000", "10"),
            (".5", "0.5"),
            ("7", "7"),
            ("0.0", "0"),
        ] {
            assert_eq!(Decimal::canonical(a), b, "{a}");
        }
    }

    #[test]
    fn the_rule_case_by_case() {
        // (name, api trades, tape rows, indices of api trades that are missing)
        let t0 = 1_764_000_000i64;
        /// (name, Data API trades, tape rows, indices of the Data API trades missing)
        type Case = (&'static str, Vec<ApiTrade>, Vec<TapeRow>, Vec<usize>);
        let cases: Vec<Case> = vec![
            (
                "hash on both: present, though time and price text differ",
                vec![api("a", Buy, "0.48", "10", t0 + 2, "0xAB")],
                vec![row(
                    "a",
                    Buy,
                    "0.480",
                    "10.0",
                    t0 * 1000 + 300,
                    Some("0xab"),
                )],
                vec![],
            ),
            (
                "the same hash on another asset does not count (Yes/No cross matches)",
                vec![api("a", Buy, "0.48", "10", t0, "0xab")],
                vec![row("b", Sell, "0.52", "10", t0 * 1000, Some("0xab"))],
                vec![0],
            ),
            (
                "feed without a hash: matched on asset, side, price, size and time",
                vec![api("a", Sell, "0.3", "5.5", t0 + 2, "0x1")],
                vec![row("a", Sell, "0.30", "5.50", t0 * 1000 + 400, None)],
                vec![],
            ),
            (
                "feed without a hash, too long before the block: missing",
                vec![api("a", Sell, "0.3", "5.5", t0 + 30, "0x1")],
                vec![row("a", Sell, "0.3", "5.5", t0 * 1000, None)],
                vec![0],
            ),
            (
                "feed without a hash, other side: missing",
                vec![api("a", Buy, "0.3", "5.5", t0, "0x1")],
                vec![row("a", Sell, "0.3", "5.5", t0 * 1000, None)],
                vec![0],
            ),
            (
                "two identical fills, one unhashed feed row: one is missing",
                vec![
                    api("a", Buy, "0.5", "1", t0, "0x1"),
                    api("a", Buy, "0.5", "1", t0, "0x2"),
                ],
                vec![row("a", Buy, "0.5", "1", t0 * 1000 - 500, None)],
                vec![1],
            ),
            (
                "several fills in one transaction, the feed holds the hash once: all present",
                vec![
                    api("a", Buy, "0.5", "1", t0, "0x9"),
                    api("a", Buy, "0.51", "2", t0, "0x9"),
                    api("a", Buy, "0.52", "3", t0, "0x9"),
                ],
                vec![row("a", Buy, "0.5", "6", t0 * 1000, Some("0x9"))],
                vec![],
            ),
            (
                "a backfilled row (block time, data_api) is found again by its hash",
                vec![api("a", Buy, "0.5", "1", t0, "0x7")],
                vec![row("a", Buy, "0.5", "1", t0 * 1000, Some("0x7"))],
                vec![],
            ),
            (
                "nothing in the tape: every trade missing",
                vec![
                    api("a", Buy, "0.5", "1", t0, "0x1"),
                    api("b", Sell, "0.5", "1", t0, "0x2"),
                ],
                vec![],
                vec![0, 1],
            ),
        ];
        // A settlement lag of 12 s in these cases.
        for (name, api_trades, tape, want) in cases {
            let got: Vec<usize> = missing(&api_trades, &tape, 12_000)
                .iter()
                .map(|m| {
                    api_trades
                        .iter()
                        .position(|t| std::ptr::eq(t, *m))
                        .expect("one of ours")
                })
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    /// The margin follows the settlement lag: a hashless feed row 30 s before the block is
    /// missing with a 12 s lag and present with a 60 s one.
    #[test]
    fn the_hashless_margin_follows_the_settlement_lag() {
        let t0 = 1_764_000_000i64;
        let api_trades = vec![api("a", Sell, "0.3", "5.5", t0 + 30, "0x1")];
        let tape = vec![row("a", Sell, "0.3", "5.5", t0 * 1000, None)];
        assert_eq!(missing(&api_trades, &tape, 12_000).len(), 1);
        assert!(missing(&api_trades, &tape, 60_000).is_empty());
    }
}
