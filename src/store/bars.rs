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

fn time(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .ok_or_else(|| Error::data(format!("bar minute {ms} is out of range")))
}

fn int(v: Option<u32>) -> Result<Option<i32>> {
    v.map(|v| i32::try_from(v).map_err(|_| Error::data(format!("bar price {v} is out of range"))))
        .transpose()
}

impl TradeWriter {
    /// Stores live `bars` in one statement.
    pub(crate) fn write_bars(&mut self, bars: &[PriceBar]) -> Result<()> {
        if bars.is_empty() {
            return Ok(());
        }
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

    /// Recomputes the trade fields of every minute `trades` fall in (a bar is made for a
    /// minute that has none: a blind minute, `source = 'history'`, its prices left for
    /// `/prices-history`). Returns the bars made or changed.
    pub(crate) fn refresh_bar_trades(&mut self, trades: &[Trade]) -> Result<u64> {
        if trades.is_empty() {
            return Ok(0);
        }
        self.prepare_keys(
            trades
                .iter()
                .map(|t| (t.asset_id.as_str(), t.market.as_str(), t.timestamp_ms)),
        )?;
        let mut keys: Vec<(i32, i64)> = trades
            .iter()
            .filter_map(|t| Some((self.token_id(&t.asset_id)?, minute_of(t.timestamp_ms))))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let tokens: Vec<i32> = keys.iter().map(|k| k.0).collect();
        let minutes = keys.iter().map(|k| time(k.1)).collect::<Result<Vec<_>>>()?;
        let sql = format!(
            "INSERT INTO price_bar AS b (minute, token, source, trades, volume, notional,
                                         last_trade_price)
             SELECT u.minute, u.token, 'h', t.n, t.v, t.nt, t.last
             FROM unnest($1::timestamptz[], $2::integer[]) AS u(minute, token)
             CROSS JOIN LATERAL ({MINUTE_TRADES}) t
             ON CONFLICT (token, minute) DO UPDATE SET
                 trades = EXCLUDED.trades, volume = EXCLUDED.volume,
                 notional = EXCLUDED.notional, last_trade_price = EXCLUDED.last_trade_price
             WHERE (b.trades, b.volume, b.notional, b.last_trade_price)
                   IS DISTINCT FROM (EXCLUDED.trades, EXCLUDED.volume, EXCLUDED.notional,
                                     EXCLUDED.last_trade_price)"
        );
        let changed = self.connection()?.execute(&sql, &[&minutes, &tokens])?;
        self.health()
            .books()
            .bars_filled
            .fetch_add(changed, Relaxed);
        Ok(changed)
    }
}
