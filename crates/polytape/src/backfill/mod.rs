//! Filling the holes: every recorded gap (a lost socket, a crashed run, a full spool), once
//! it has settled, is compared with the Data API's settled tape over its window, and the
//! trades the tape lacks are added with `source = 'data_api'` through the writer's own COPY
//! path (`TradeWriter`). A gap row records when it was filled and how many trades that
//! added; a gap that cannot be filled now (the API failing) stays open, visible, and is
//! tried again with a growing delay.
//!
//! **No race with the feed, by design**: only gaps whose window ended longer ago than the
//! settle time *and* before the oldest record still in the spool are filled, so no feed
//! trade of a filled window can still arrive (the channel holds seconds; the spool is
//! checked). See [`matching`] for the rule that keeps a backfilled trade from duplicating
//! one the feed delivered.

pub(crate) mod matching;

use std::time::Duration;

use postgres::Client;

use crate::config::Config;
use crate::data_api::{ApiTrade, DataApiClient, MARKETS_PER_REQUEST};
use crate::error::Result;
use crate::feed::{Side, Trade};
use crate::health::{Health, now_ms, now_us};
use crate::stop::StopSignal;
use crate::store::trades::{Source, TradeWriter};
use matching::{TapeRow, canonical};

/// Block times run up to this long after the last match of a window.
const BLOCK_LAG_S: i64 = 10;
/// Tape rows this far around a window take part in the matching.
const TAPE_MARGIN_MS: i64 = 15_000;
/// Gaps taken in one round.
const GAPS_PER_ROUND: i64 = 50;

/// The backfill: a Data API client with its own request budget, and a writer that stores
/// what it finds as `data_api`.
pub(crate) struct Backfill {
    config: Config,
    health: Health,
    api: DataApiClient,
    writer: TradeWriter,
}

/// What filling one window found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    /// Trades the Data API listed for the window's assets.
    pub listed: usize,
    /// Of those, the ones the tape lacked, now added.
    pub added: usize,
    /// Data API requests made.
    pub requests: u64,
}

impl Backfill {
    pub(crate) fn new(config: &Config, health: Health) -> Backfill {
        Backfill {
            config: config.clone(),
            api: DataApiClient::new(config),
            writer: TradeWriter::new(config, health.clone()).with_source(Source::DataApi),
            health,
        }
    }

    /// Runs rounds until `stop`: every tenth of the settle time (between 1 s and 1 min).
    pub(crate) fn run(mut self, stop: StopSignal) {
        let every = (self.config.backfill_settle / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        while !stop.wait_timeout(every) {
            if let Err(e) = self.round(&stop) {
                log::debug!("backfill: round failed ({e}); will retry");
            }
        }
    }

    /// One round: the settled open gaps, oldest first.
    pub(crate) fn round(&mut self, stop: &StopSignal) -> Result<usize> {
        let mut db = crate::store::connect(&self.config)?;
        // The horizon: settled, and older than anything still waiting in the spool.
        let mut horizon = now_ms() - self.config.backfill_settle.as_millis() as i64;
        if let Some(oldest) = self.health.snapshot().spool_oldest_ts {
            horizon = horizon.min(oldest.timestamp_millis());
        }
        let gaps = db.query(
            "SELECT id, (extract(epoch FROM from_ts) * 1000)::bigint,
                    (extract(epoch FROM to_ts) * 1000)::bigint, asset_ids, fill_attempts
             FROM gaps
             WHERE filled_at IS NULL
               AND to_ts < 'epoch'::timestamptz + $1::float8 * interval '1 millisecond'
               AND (next_attempt_at IS NULL OR next_attempt_at <= now())
             ORDER BY from_ts LIMIT $2",
            &[&(horizon as f64), &GAPS_PER_ROUND],
        )?;
        let mut filled = 0;
        for g in gaps {
            if stop.is_stopped() {
                break;
            }
            let id: i64 = g.try_get(0)?;
            let (from_ms, to_ms): (i64, i64) = (g.try_get(1)?, g.try_get(2)?);
            let assets: Vec<String> = g.try_get(3)?;
            let attempts: i32 = g.try_get(4)?;
            match self.fill_window(&mut db, &assets, from_ms, to_ms) {
                Ok(f) => {
                    db.execute(
                        "UPDATE gaps SET filled_at = now(), filled_trades = $2,
                                fill_attempts = fill_attempts + 1, fill_error = NULL
                         WHERE id = $1",
                        &[&id, &(f.added as i32)],
                    )?;
                    self.health.gap_filled(f.added as u64);
                    filled += 1;
                    log::info!(
                        "backfill: gap {id} ({} ms, {} tokens) filled: {} trades listed, {} added",
                        to_ms - from_ms,
                        assets.len(),
                        f.listed,
                        f.added
                    );
                }
                Err(e) => {
                    self.health.data_api_error();
                    // 1, 2, 4 … minutes, at most an hour: a gap that cannot be filled now
                    // stays open and visible, and is tried again.
                    let wait_s = (60i64 << attempts.clamp(0, 6)).min(3600);
                    db.execute(
                        "UPDATE gaps SET fill_attempts = fill_attempts + 1, fill_error = $2,
                                next_attempt_at = now() + $3::float8 * interval '1 second'
                         WHERE id = $1",
                        &[&id, &e.to_string(), &(wait_s as f64)],
                    )?;
                    log::warn!("backfill: gap {id} not filled ({e}); trying again in {wait_s} s");
                }
            }
        }
        self.publish_open(&mut db)?;
        Ok(filled)
    }

    /// Compares the Data API with the tape for `assets` over `from_ms..=to_ms` (match times)
    /// and adds what the tape lacks.
    pub(crate) fn fill_window(
        &mut self,
        db: &mut Client,
        assets: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Filled> {
        let requests_before = self.api.requests;
        let markets: Vec<String> = db
            .query(
                "SELECT condition_id FROM markets WHERE token_ids && $1 ORDER BY condition_id",
                &[&assets],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        let wanted: std::collections::HashSet<&str> = assets.iter().map(String::as_str).collect();
        let (start_s, end_s) = (
            from_ms.div_euclid(1000),
            to_ms.div_euclid(1000) + BLOCK_LAG_S,
        );
        let mut listed: Vec<ApiTrade> = Vec::new();
        for chunk in markets.chunks(MARKETS_PER_REQUEST) {
            let page = self.api.trades(chunk, start_s, end_s)?;
            listed.extend(
                page.into_iter()
                    .filter(|t| wanted.contains(t.asset.as_str())),
            );
        }
        let tape = tape_rows(db, assets, from_ms - TAPE_MARGIN_MS, to_ms + TAPE_MARGIN_MS)?;
        let missing = matching::missing(&listed, &tape);
        let received_at_us = now_us();
        let trades: Vec<Trade> = missing
            .iter()
            .map(|t| Trade {
                asset_id: t.asset.clone(),
                market: t.condition_id.clone(),
                price: t.price.clone(),
                size: t.size.clone(),
                side: t.side,
                fee_rate_bps: None,
                timestamp_ms: t.timestamp_s * 1000,
                transaction_hash: Some(t.transaction_hash.clone()),
                received_at_us,
            })
            .collect();
        for batch in trades.chunks(self.config.batch_size.max(1) * 10) {
            self.writer.commit(batch)?;
        }
        self.health.backfilled(trades.len() as u64);
        Ok(Filled {
            listed: listed.len(),
            added: trades.len(),
            requests: self.api.requests - requests_before,
        })
    }

    /// Open gaps and the oldest of them, for health.
    fn publish_open(&self, db: &mut Client) -> Result<()> {
        let row = db.query_one(
            "SELECT count(*), coalesce((extract(epoch FROM min(from_ts)) * 1000)::bigint, 0)
             FROM gaps WHERE filled_at IS NULL",
            &[],
        )?;
        self.health
            .gaps_open(row.try_get::<_, i64>(0)? as u64, row.try_get(1)?);
        Ok(())
    }
}

/// The tape's trades of `assets` with a time in `from_ms..=to_ms`.
fn tape_rows(db: &mut Client, assets: &[String], from_ms: i64, to_ms: i64) -> Result<Vec<TapeRow>> {
    let rows = db.query(
        "SELECT asset_id, side, price::text, size::text,
                (extract(epoch FROM traded_at) * 1000)::bigint, transaction_hash
         FROM trades
         WHERE asset_id = ANY($1)
           AND traded_at BETWEEN 'epoch'::timestamptz + $2::float8 * interval '1 millisecond'
                             AND 'epoch'::timestamptz + $3::float8 * interval '1 millisecond'",
        &[&assets, &(from_ms as f64), &(to_ms as f64)],
    )?;
    rows.iter()
        .map(|r| {
            let side: String = r.try_get(1)?;
            let price: String = r.try_get(2)?;
            let size: String = r.try_get(3)?;
            Ok(TapeRow {
                asset: r.try_get(0)?,
                side: if side == "BUY" { Side::Buy } else { Side::Sell },
                price: canonical(&price),
                size: canonical(&size),
                timestamp_ms: r.try_get(4)?,
                transaction_hash: r.try_get(5)?,
            })
        })
        .collect()
}
