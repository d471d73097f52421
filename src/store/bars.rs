//! Minute price bars into `price_bar` (migration V13), by the writer thread: the book
//! fields from the live bar, the trade fields from the tape itself (every trade of the
//! minute the socket delivered was committed before the bar: same channel, in order).
//! A bar stored twice (a replayed spool), or in two parts (a minute cut by a stop), merges:
//! the first open, the highest high, the lowest low, the last close. Trades the backfill
//! adds recompute their minutes' trade fields from the tape, so a second fill changes
//! nothing.

use std::sync::atomic::Ordering::Relaxed;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::feed::Trade;
use crate::health::Health;
use crate::prices::{PriceBar, minute_of};
use crate::store::trades::{Source, TradeWriter};
use postgres::Transaction;

/// The trade fields of a bar's minute, from the tape (`u.minute`, `u.token` in scope).
const MINUTE_TRADES: &str = "
    SELECT count(*)::integer AS n, coalesce(sum(size), 0) AS v,
           coalesce(sum(size * price), 0) AS nt,
           (array_agg(price ORDER BY traded_at DESC, received_at DESC))[1] AS last
    FROM trade_tape
    WHERE token = u.token AND traded_at >= u.minute AND traded_at < u.minute + interval '1 minute'";

pub(crate) fn time(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .ok_or_else(|| Error::data(format!("bar minute {ms} is out of range")))
}

fn int(v: Option<u32>) -> Result<Option<i32>> {
    v.map(|v| i32::try_from(v).map_err(|_| Error::data(format!("bar price {v} is out of range"))))
        .transpose()
}

impl TradeWriter {
    /// Stores live `bars` in one statement. A (token, minute) that comes twice in the batch
    /// (a bar closed by the quiet clock, moved by a late event, sent again) is merged first:
    /// `ON CONFLICT DO UPDATE` refuses to touch one row twice in a statement (21000).
    pub(crate) fn write_bars(&mut self, bars: &[PriceBar]) -> Result<()> {
        if bars.is_empty() {
            return Ok(());
        }
        let merged = merge_repeats(bars);
        let bars = merged.as_slice();
        self.prepare_keys(
            bars.iter()
                .map(|b| (b.asset_id.as_str(), b.market.as_str(), b.minute_ms)),
        )?;
        let n = bars.len();
        let (mut minutes, mut tokens) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut cols: [Vec<Option<i32>>; 6] = Default::default();
        for b in bars {
            minutes.push(time(b.minute_ms)?);
            tokens.push(self.token_id(&b.asset_id).ok_or_else(|| {
                Error::data(format!("token {} has no id after its insert", b.asset_id))
            })?);
            for (col, v) in cols
                .iter_mut()
                .zip([b.open2, b.high2, b.low2, b.close2, b.best_bid, b.best_ask])
            {
                col.push(int(v)?);
            }
        }
        let sql = format!(
            "INSERT INTO price_bar AS b (minute, token, source, open2, high2, low2, close2,
                                         best_bid, best_ask, trades, volume, notional,
                                         last_trade_price)
             SELECT u.minute, u.token, 'l', u.o, u.h, u.l, u.c, u.bb, u.ba, t.n, t.v, t.nt, t.last
             FROM unnest($1::timestamptz[], $2::integer[], $3::integer[], $4::integer[],
                         $5::integer[], $6::integer[], $7::integer[], $8::integer[])
                  AS u(minute, token, o, h, l, c, bb, ba)
             CROSS JOIN LATERAL ({MINUTE_TRADES}) t
             ON CONFLICT (token, minute) DO UPDATE SET
                 open2 = CASE WHEN b.source = 'l' THEN coalesce(b.open2, EXCLUDED.open2)
                              ELSE EXCLUDED.open2 END,
                 high2 = CASE WHEN b.source = 'l' THEN greatest(b.high2, EXCLUDED.high2)
                              ELSE EXCLUDED.high2 END,
                 low2 = CASE WHEN b.source = 'l' THEN least(b.low2, EXCLUDED.low2)
                             ELSE EXCLUDED.low2 END,
                 close2 = EXCLUDED.close2, best_bid = EXCLUDED.best_bid,
                 best_ask = EXCLUDED.best_ask, source = 'l',
                 trades = EXCLUDED.trades, volume = EXCLUDED.volume,
                 notional = EXCLUDED.notional, last_trade_price = EXCLUDED.last_trade_price"
        );
        let [o, h, l, c, bb, ba] = &cols;
        let stored = self
            .connection()?
            .execute(&sql, &[&minutes, &tokens, o, h, l, c, bb, ba])?;
        let stats = self.health().books();
        stats.bars_written.fetch_add(stored, Relaxed);
        if let Some(newest) = bars.iter().map(|b| b.minute_ms).max() {
            stats.newest_bar_ms.fetch_max(newest, Relaxed);
        }
        Ok(())
    }

    /// The (token, minute) of every trade of `batch` (prepared: every token has its id),
    /// sorted (two writers lock bar rows in one order) and once each.
    pub(crate) fn bar_keys(&self, batch: &[Trade]) -> BarKeys {
        let mut keys: Vec<(i32, i64)> = batch
            .iter()
            .filter_map(|t| Some((self.token_id(&t.asset_id)?, minute_of(t.timestamp_ms))))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        BarKeys {
            tokens: keys.iter().map(|k| k.0).collect(),
            minutes: keys
                .iter()
                .filter_map(|k| DateTime::<Utc>::from_timestamp_millis(k.1))
                .collect(),
        }
    }
}

/// `bars` with each (token, minute) once, in the order first seen: the first open, the
/// highest high, the lowest low, the last close and best bid and ask (the same rule as the
/// statement's merge with a stored row).
pub(crate) fn merge_repeats(bars: &[PriceBar]) -> Vec<PriceBar> {
    let mut out: Vec<PriceBar> = Vec::with_capacity(bars.len());
    let mut at: std::collections::HashMap<(&str, i64), usize> = std::collections::HashMap::new();
    for b in bars {
        match at.get(&(b.asset_id.as_str(), b.minute_ms)) {
            Some(&i) => {
                let m = &mut out[i];
                m.open2 = m.open2.or(b.open2);
                m.high2 = m.high2.max(b.high2);
                m.low2 = match (m.low2, b.low2) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
                m.close2 = b.close2;
                m.best_bid = b.best_bid;
                m.best_ask = b.best_ask;
            }
            None => {
                at.insert((b.asset_id.as_str(), b.minute_ms), out.len());
                out.push(b.clone());
            }
        }
    }
    out
}

/// The bar rows a batch of trades falls in.
pub(crate) struct BarKeys {
    tokens: Vec<i32>,
    minutes: Vec<DateTime<Utc>>,
}

/// Makes every minute of `keys` count its trades, inside the trades' own transaction `tx`
/// (so a committed trade is always counted in its bar, whatever happens next): a minute
/// without a bar gets one with its trade fields and no prices (`source = 'live'`, prices
/// NULL: no trusted book priced it, or not yet); a bar that has one gets its trade fields
/// recomputed from the tape (idempotent: a replay changes nothing). Under a savepoint: a bar
/// that cannot be written is logged and counted, and the trades commit regardless (the
/// book side may fail alone, never the trades).
pub(crate) fn count_in_bars(
    tx: &mut Transaction<'_>,
    keys: &BarKeys,
    source: Source,
    health: &Health,
) {
    if keys.tokens.is_empty() || keys.tokens.len() != keys.minutes.len() {
        return;
    }
    let sql = format!(
        "INSERT INTO price_bar AS b (minute, token, source, trades, volume, notional,
                                     last_trade_price)
         SELECT u.minute, u.token, 'l', t.n, t.v, t.nt, t.last
         FROM unnest($1::timestamptz[], $2::integer[]) AS u(minute, token)
         CROSS JOIN LATERAL ({MINUTE_TRADES}) t
         ON CONFLICT (token, minute) DO UPDATE SET
             trades = EXCLUDED.trades, volume = EXCLUDED.volume,
             notional = EXCLUDED.notional, last_trade_price = EXCLUDED.last_trade_price
         WHERE (b.trades, b.volume, b.notional, b.last_trade_price)
               IS DISTINCT FROM (EXCLUDED.trades, EXCLUDED.volume, EXCLUDED.notional,
                                 EXCLUDED.last_trade_price)"
    );
    let result = tx.savepoint("bars").and_then(|mut sp| {
        let n = sp.execute(&sql, &[&keys.minutes, &keys.tokens])?;
        sp.commit()?;
        Ok(n)
    });
    let stats = health.books();
    match result {
        Ok(n) if source == Source::DataApi => {
            stats.bars_filled.fetch_add(n, Relaxed);
        }
        Ok(_) => {}
        Err(e) => {
            stats.bar_errors.fetch_add(1, Relaxed);
            log::warn!("writer: the trades' price bars were not written ({e}); the trades are");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(asset: &str, minute_ms: i64, o: u32, h: u32, l: u32, c: u32) -> PriceBar {
        PriceBar {
            asset_id: asset.into(),
            market: "0xm".into(),
            minute_ms,
            open2: Some(o),
            high2: Some(h),
            low2: Some(l),
            close2: Some(c),
            best_bid: Some(c / 2),
            best_ask: Some(c / 2 + 2),
        }
    }

    #[test]
    fn a_minute_sent_twice_is_one_bar() {
        let got = merge_repeats(&[
            bar("1", 60_000, 10, 30, 5, 20),
            bar("2", 60_000, 1, 1, 1, 1),
            bar("1", 60_000, 20, 40, 8, 12),
        ]);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].open2, got[0].high2, got[0].low2, got[0].close2),
            (Some(10), Some(40), Some(5), Some(12))
        );
        assert_eq!(got[0].best_bid, Some(6), "the last");
        assert_eq!(got[1].asset_id, "2");
    }
}
