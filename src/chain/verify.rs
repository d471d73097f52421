//! The tape against the chain: each taker leg read is found on the tape (by the backfill's
//! one matching rule: the transaction hash on its token, else a hashless row of the same
//! asset, side, price and size matched up to the settlement lag before the block), compared
//! per transaction and token (shares exactly, USDC to the exchange's rounding), or added as
//! `chain`. Then, per market and hour of match time, what the chain settled and what the tape
//! holds are counted into `chain_checks`, and a tape trade no chain fill accounts for is
//! flagged in `chain_unsettled`.
//!
//! **USDC rule**: a tape row's USDC is price × size rounded half-up to six decimals; the
//! tape's USDC of a (transaction, token) equals the chain's when it is within one
//! micro-dollar per row (the exchange rounds each fill's amount on its own).
//!
//! **Price of an added fill**: USDC ÷ shares, rounded half-up to six decimals
//! ([`super::abi::price_text`]).

use std::collections::{BTreeSet, HashMap, HashSet};

use postgres::Client;

use crate::backfill::lookup::{rows_with_hashes, tape_rows};
use crate::backfill::matching::{TapeRow, twins};
use crate::data_api::ApiTrade;
use crate::error::Result;
use crate::feed::{Decimal, Side, Trade};
use crate::health::{Health, now_us};
use crate::store::trades::TradeWriter;

/// Tape rows this far around the fills' blocks take part in the matching.
const TAPE_MARGIN_MS: i64 = 15_000;

/// One taker leg of a token polytape records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainFill {
    pub(crate) block: u64,
    pub(crate) log_index: u64,
    /// Lower-case `0x` hex.
    pub(crate) tx: String,
    pub(crate) asset: String,
    pub(crate) market: String,
    pub(crate) buy: bool,
    pub(crate) shares: u128,
    pub(crate) usdc: u128,
    pub(crate) block_s: i64,
}

/// What comparing a fill with the tape found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// On the tape, equal.
    Matched,
    /// Not on the tape: added.
    Added,
    /// On the tape with other shares or USDC for its transaction and token.
    Mismatched,
}

impl State {
    pub(crate) fn code(self) -> i8 {
        (match self {
            State::Matched => b'm',
            State::Added => b'a',
            State::Mismatched => b'x',
        }) as i8
    }
}

/// A fill's outcome: its state, the tape row's match time (ms), and whether that row has
/// no hash.
pub(crate) type Outcome = (State, i64, bool);

impl ChainFill {
    fn api_trade(&self) -> ApiTrade {
        ApiTrade {
            asset: self.asset.clone(),
            condition_id: self.market.clone(),
            side: if self.buy { Side::Buy } else { Side::Sell },
            price: Decimal::parse(&super::abi::price_text(self.usdc, self.shares))
                .unwrap_or_else(|| Decimal::parse("0").expect("0 is a decimal")),
            size: Decimal::parse(&micro_text(self.shares))
                .unwrap_or_else(|| Decimal::parse("0").expect("0 is a decimal")),
            timestamp_s: self.block_s,
            transaction_hash: self.tx.clone(),
        }
    }
}

/// Six-decimal units as decimal text (`7575758` → `7.575758`).
pub(crate) fn micro_text(n: u128) -> String {
    let text = format!("{}.{:06}", n / 1_000_000, n % 1_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Decimal text as (digits, decimals); `None` for anything else.
fn parse_scaled(text: &str) -> Option<(u128, u32)> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() && frac.is_empty()
        || !(int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits = format!("{int}{frac}");
    let n = digits.trim_start_matches('0');
    let n: u128 = if n.is_empty() { 0 } else { n.parse().ok()? };
    Some((n, frac.len() as u32))
}

/// `n / 10^scale` in six-decimal units, rounded half-up.
fn to_micro(n: u128, scale: u32) -> Option<u128> {
    if scale <= 6 {
        n.checked_mul(10u128.checked_pow(6 - scale)?)
    } else {
        let d = 10u128.checked_pow(scale - 6)?;
        Some((n + d / 2) / d)
    }
}

/// A tape row's (shares, USDC) in six-decimal units: size, and price × size rounded half-up.
pub(crate) fn row_amounts(price: &str, size: &str) -> Option<(u128, u128)> {
    let (p, ps) = parse_scaled(price)?;
    let (s, ss) = parse_scaled(size)?;
    Some((to_micro(s, ss)?, to_micro(p.checked_mul(s)?, ps + ss)?))
}

/// Compares `fills` with the tape and adds (through `writer`, as `chain`) those it lacks;
/// returns each fill's outcome, in order. Fills of one transaction and token must come
/// together (whole blocks). Adding is serialised with the backfill's by an advisory lock, so
/// two sources never both add one trade.
pub(crate) fn resolve(
    db: &mut Client,
    writer: &mut TradeWriter,
    health: &Health,
    fills: &[ChainFill],
    lag_ms: i64,
) -> Result<Vec<Outcome>> {
    if fills.is_empty() {
        return Ok(Vec::new());
    }
    let listed: Vec<ApiTrade> = fills.iter().map(ChainFill::api_trade).collect();
    let assets: Vec<String> = fills
        .iter()
        .map(|f| f.asset.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let first_ms = fills.iter().map(|f| f.block_s).min().unwrap_or(0) * 1000;
    let last_ms = fills.iter().map(|f| f.block_s).max().unwrap_or(0) * 1000 + 999;
    let mut adding = crate::store::AddingLock::take(db)?;
    let db = adding.db();
    let mut tape = tape_rows(
        db,
        &assets,
        first_ms - lag_ms - TAPE_MARGIN_MS,
        last_ms + TAPE_MARGIN_MS,
    )?;
    tape.extend(rows_with_hashes(db, &listed)?);
    // Both lookups may return a row: each once.
    let mut seen = HashSet::new();
    tape.retain(|r| seen.insert(r.clone()));
    let found = twins(&listed, &tape, lag_ms);
    let sums = tape_sums(&tape);
    // The chain's own sums per (transaction, token).
    let mut chain: HashMap<(String, String), (u128, u128)> = HashMap::new();
    for f in fills {
        let e = chain.entry((f.tx.clone(), f.asset.clone())).or_default();
        e.0 += f.shares;
        e.1 += f.usdc;
    }
    let received_at_us = now_us();
    let mut added: Vec<Trade> = Vec::new();
    let mut out = Vec::with_capacity(fills.len());
    for ((f, api), twin) in fills.iter().zip(&listed).zip(found) {
        match twin {
            Some(t) if t.hashless => out.push((State::Matched, t.timestamp_ms, true)),
            Some(t) => {
                let key = (f.tx.clone(), f.asset.clone());
                let (cs, cu) = chain.get(&key).copied().unwrap_or_default();
                let equal = sums
                    .get(&key)
                    .is_some_and(|&(ts, tu, rows)| ts == cs && tu.abs_diff(cu) <= rows as u128);
                let state = if equal {
                    State::Matched
                } else {
                    State::Mismatched
                };
                out.push((state, t.timestamp_ms, false));
            }
            None => {
                added.push(api.to_tape(received_at_us));
                out.push((State::Added, api.timestamp_s * 1000, false));
            }
        }
    }
    if !added.is_empty() {
        writer.commit(&added)?;
        // The added trades' minutes get their bars counted (from the tape: idempotent).
        writer.flush_bars(true);
        log::info!("chain: {} fills the tape lacked added", added.len());
    }
    let chain_stats = health.chain();
    chain_stats
        .fills_added
        .fetch_add(added.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let mismatched = out.iter().filter(|o| o.0 == State::Mismatched).count() as u64;
    chain_stats
        .mismatched
        .fetch_add(mismatched, std::sync::atomic::Ordering::Relaxed);
    Ok(out)
}

/// The tape's (shares, USDC, rows) per (transaction, token), from rows holding a hash.
fn tape_sums(tape: &[TapeRow]) -> HashMap<(String, String), (u128, u128, usize)> {
    let mut sums: HashMap<(String, String), (u128, u128, usize)> = HashMap::new();
    for r in tape {
        let Some(h) = &r.transaction_hash else {
            continue;
        };
        let Some((s, u)) = row_amounts(&r.price, &r.size) else {
            continue;
        };
        let e = sums
            .entry((h.to_ascii_lowercase(), r.asset.clone()))
            .or_default();
        e.0 += s;
        e.1 += u;
        e.2 += 1;
    }
    sums
}

/// What one check of a slice of match time counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counted {
    pub(crate) market_hours: u64,
    pub(crate) unsettled: u64,
}

/// Counts tape time `from_ms..to_ms` into `chain_checks` (every chain fill of it is read and
/// compared by now), flags what no chain fill accounts for, forgets the fills counted, and
/// moves the cursor's `checked_to`; one transaction.
pub(crate) fn check_slice(
    db: &mut Client,
    name: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Counted> {
    let mut tx = db.transaction()?;
    let (a, b) = (from_ms as f64, to_ms as f64);
    // First: take the slice (a row lock); a second checker of the same cursor finds it taken.
    let taken = tx.execute(
        "UPDATE chain_cursor
         SET checked_to = 'epoch'::timestamptz + $3::float8 * interval '1 millisecond',
             updated_at = now()
         WHERE name = $1
           AND checked_to = 'epoch'::timestamptz + $2::float8 * interval '1 millisecond'",
        &[&name, &a, &b],
    )?;
    if taken != 1 {
        return Ok(Counted::default());
    }
    let row = tx.query_one(
        "WITH bounds AS (
             SELECT 'epoch'::timestamptz + $1::float8 * interval '1 millisecond' AS a,
                    'epoch'::timestamptz + $2::float8 * interval '1 millisecond' AS b),
         parts AS (
             SELECT k.market, date_trunc('hour', t.traded_at) AS hour,
                    0 AS chain_n, 1 AS tape_n, 0 AS added, 0 AS mism,
                    (t.tx IS NOT NULL AND NOT EXISTS (
                        SELECT 1 FROM chain_fills f
                        WHERE f.tx = t.tx AND f.asset_id = k.asset_id AND f.state <> 'p'))::int
                        AS unsettled,
                    (t.tx IS NULL)::int AS hl_tape, 0 AS hl_claim
             FROM trade_tape t JOIN tokens k ON k.id = t.token, bounds
             WHERE t.traded_at >= bounds.a AND t.traded_at < bounds.b
             UNION ALL
             SELECT f.market, date_trunc('hour', f.tape_at), 1, 0, (f.state = 'a')::int,
                    (f.state = 'x')::int, 0, 0, f.hashless::int
             FROM chain_fills f, bounds
             WHERE f.state <> 'p' AND f.tape_at >= bounds.a AND f.tape_at < bounds.b),
         counts AS (
             SELECT market, hour, sum(chain_n)::int AS chain_n, sum(tape_n)::int AS tape_n,
                    sum(added)::int AS added, sum(mism)::int AS mism,
                    (sum(unsettled) + greatest(0, sum(hl_tape) - sum(hl_claim)))::int AS unsettled
             FROM parts GROUP BY market, hour),
         up AS (
             INSERT INTO chain_checks AS c (market, hour, chain_fills, tape_fills, added,
                                            unsettled, mismatched, checked_from, checked_to)
             SELECT market, hour, chain_n, tape_n, added, unsettled, mism,
                    greatest(hour, bounds.a), least(hour + interval '1 hour', bounds.b)
             FROM counts, bounds
             ON CONFLICT (market, hour) DO UPDATE
             SET chain_fills = c.chain_fills + EXCLUDED.chain_fills,
                 tape_fills = c.tape_fills + EXCLUDED.tape_fills,
                 added = c.added + EXCLUDED.added,
                 unsettled = c.unsettled + EXCLUDED.unsettled,
                 mismatched = c.mismatched + EXCLUDED.mismatched,
                 checked_from = least(c.checked_from, EXCLUDED.checked_from),
                 checked_to = greatest(c.checked_to, EXCLUDED.checked_to),
                 checked_at = now())
         SELECT count(*)::bigint, coalesce(sum(unsettled), 0)::bigint FROM counts",
        &[&a, &b],
    )?;
    let counted = Counted {
        market_hours: row.try_get::<_, i64>(0)? as u64,
        unsettled: row.try_get::<_, i64>(1)? as u64,
    };
    tx.execute(
        "INSERT INTO chain_unsettled (asset_id, market, traded_at, price, size, side,
                                      transaction_hash, source)
         SELECT k.asset_id, k.market, t.traded_at, t.price, t.size,
                CASE WHEN t.is_buy THEN 'BUY' ELSE 'SELL' END, '0x' || encode(t.tx, 'hex'),
                CASE t.source WHEN 'd' THEN 'data_api' WHEN 'c' THEN 'chain' ELSE 'feed' END
         FROM trade_tape t JOIN tokens k ON k.id = t.token
         WHERE t.traded_at >= 'epoch'::timestamptz + $1::float8 * interval '1 millisecond'
           AND t.traded_at < 'epoch'::timestamptz + $2::float8 * interval '1 millisecond'
           AND t.tx IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM chain_fills f
                           WHERE f.tx = t.tx AND f.asset_id = k.asset_id AND f.state <> 'p')
         ON CONFLICT DO NOTHING",
        &[&a, &b],
    )?;
    tx.execute(
        "DELETE FROM chain_fills
         WHERE state <> 'p'
           AND tape_at < 'epoch'::timestamptz + $1::float8 * interval '1 millisecond'",
        &[&b],
    )?;
    tx.commit()?;
    Ok(counted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tape_rows_become_exact_amounts() {
        // The feed notes' real legs: 7.575758 shares at 0.66 is 5.00000028 USDC, which the
        // exchange settled as 5000000.
        assert_eq!(
            row_amounts("0.66", "7.575758"),
            Some((7_575_758, 5_000_000))
        );
        assert_eq!(row_amounts("0.650", "7.57"), Some((7_570_000, 4_920_500)));
        assert_eq!(row_amounts(".5", "3"), Some((3_000_000, 1_500_000)));
        // Half a micro-dollar rounds up.
        assert_eq!(row_amounts("0.5", "0.000001"), Some((1, 1)));
        assert_eq!(row_amounts("1e3", "1"), None);
        assert_eq!(row_amounts("", "1"), None);
        assert_eq!(micro_text(7_575_758), "7.575758");
        assert_eq!(micro_text(3_000_000), "3");
    }
}
