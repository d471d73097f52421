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
use crate::prices::{PriceBar, minute_of};
use crate::store::trades::TradeWriter;

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

    /// Notes the (minute, token) of every trade of `batch`, just committed (prepared:
    /// every token has its id).
    pub(crate) fn mark_bars(&mut self, batch: &[Trade]) {
        for t in batch {
            if let Some(token) = self.token_id(&t.asset_id) {
                self.dirty_bars.insert((minute_of(t.timestamp_ms), token));
            }
        }
    }

    /// Makes every minute noted by [`TradeWriter::mark_bars`] that is over (by
    /// `BAR_SETTLE_MS`; every one with `all`) count its trades: a minute without a bar gets
    /// one with its trade fields and no prices (`source = 'live'`, prices NULL: no trusted
    /// book priced it, or not yet); one with a bar gets its trade fields recomputed from the
    /// tape (idempotent). Once per token-minute, not per batch: a batch recounting every
    /// minute it touched made the full-speed tape 3.6 times slower (a busy minute recounted
    /// a thousand times). A failure is counted and logged (`price_bar_errors`), never the
    /// trades'; the minutes are not retried (the next start recounts the recent ones).
    pub(crate) fn flush_bars(&mut self, all: bool) {
        if self.dirty_bars.is_empty() {
            return;
        }
        let due_before = if all {
            i64::MAX
        } else {
            crate::health::now_ms() - 60_000 - BAR_SETTLE_MS
        };
        let rest = self
            .dirty_bars
            .split_off(&(due_before.saturating_add(1), i32::MIN));
        let mut due = std::mem::replace(&mut self.dirty_bars, rest);
        if due.is_empty() {
            return;
        }
        // A slice a round, so the writer's next commit never waits long behind a minute
        // boundary's counting (the rest goes back for the next round).
        if !all && due.len() > FLUSH_SLICE {
            let later = due.split_off(
                &due.iter()
                    .nth(FLUSH_SLICE)
                    .copied()
                    .unwrap_or((i64::MAX, 0)),
            );
            self.dirty_bars.extend(later);
        }
        let tokens: Vec<i32> = due.iter().map(|k| k.1).collect();
        let minutes: Vec<DateTime<Utc>> = due
            .iter()
            .filter_map(|k| DateTime::<Utc>::from_timestamp_millis(k.0))
            .collect();
        let result = self.connection().and_then(|db| {
            Ok(db.execute(
                &count_sql("unnest($1::timestamptz[], $2::integer[])"),
                &[&minutes, &tokens],
            )?)
        });
        let stats = self.health().books();
        match result {
            Ok(n) if self.is_backfill_writer() => {
                stats.bars_filled.fetch_add(n, Relaxed);
            }
            Ok(_) => {}
            Err(e) => {
                stats.bar_errors.fetch_add(1, Relaxed);
                log::warn!(
                    "writer: {} minutes' price bars were not counted ({e}); their trades are stored",
                    tokens.len()
                );
            }
        }
    }

    /// At a start: every token-minute of the last `RECOUNT_MINUTES` with trades counts them
    /// (the minutes a crash left uncounted are among them). Best effort, logged.
    pub(crate) fn recount_recent_bars(&mut self) {
        if !self.counts_bars() {
            return;
        }
        let sql = count_sql(&format!(
            "(SELECT DISTINCT date_trunc('minute', traded_at), token FROM trade_tape
              WHERE traded_at >= now() - interval '{RECOUNT_MINUTES} minutes')"
        ));
        match self.connection().and_then(|db| Ok(db.execute(&sql, &[])?)) {
            Ok(n) if n > 0 => log::info!("writer: {n} recent minutes' price bars recounted"),
            Ok(_) => {}
            Err(e) => log::warn!("writer: recent price bars not recounted ({e})"),
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

/// How long past its end a minute's bar waits to count its trades (trades of a minute can
/// still arrive a little after it: the socket's lag, the group commit).
const BAR_SETTLE_MS: i64 = 5_000;
/// Token-minutes counted a writer round at most (outside a stop).
const FLUSH_SLICE: usize = 256;
/// How far back a start recounts bars.
const RECOUNT_MINUTES: i64 = 15;

/// The statement that makes each (minute, token) of `keys` (a relation of those two
/// columns) count its trades from the tape.
fn count_sql(keys: &str) -> String {
    format!(
        "INSERT INTO price_bar AS b (minute, token, source, trades, volume, notional,
                                     last_trade_price)
         SELECT u.minute, u.token, 'l', t.n, t.v, t.nt, t.last
         FROM {keys} AS u(minute, token)
         CROSS JOIN LATERAL ({MINUTE_TRADES}) t
         ON CONFLICT (token, minute) DO UPDATE SET
             trades = EXCLUDED.trades, volume = EXCLUDED.volume,
             notional = EXCLUDED.notional, last_trade_price = EXCLUDED.last_trade_price
         WHERE (b.trades, b.volume, b.notional, b.last_trade_price)
               IS DISTINCT FROM (EXCLUDED.trades, EXCLUDED.volume, EXCLUDED.notional,
                                 EXCLUDED.last_trade_price)"
    )
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
