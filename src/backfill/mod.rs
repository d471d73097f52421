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
//! checked).
//!
//! **Never a duplicate**: a Data API trade is present when the tape holds its transaction
//! hash for its asset (looked up an hour back from its block: a block may trail its match
//! by far more than usual); without a hash (the feed omits it on some trades), when a tape row without a
//! hash has the same asset, side, price and size and a match time up to the settlement lag
//! before the block time (each row counts once). Anything else is added.
//!
//! **Windows follow the settlement lag**: a gap's window is read from the Data API up to
//! the settlement lag past its end (its trades' blocks), and only once that is settled too.

pub(crate) mod lookup;
pub(crate) mod matching;

use std::collections::HashSet;
use std::time::Duration;

use postgres::Client;

use crate::config::Config;
use crate::data_api::{ApiTrade, DataApiClient, MARKETS_PER_REQUEST};
use crate::error::Result;
use crate::feed::Trade;
use crate::health::{Health, now_ms, now_us};
use crate::stop::StopSignal;
use crate::store::trades::{Source, TradeWriter};
use crate::writer::HeldTokens;
use lookup::{markets_holding, markets_with_tokens, rows_with_hashes, tape_rows};
use matching::TapeRow;

/// Tape rows this far around a window take part in the matching.
const TAPE_MARGIN_MS: i64 = 15_000;
/// Gaps taken in one round.
const GAPS_PER_ROUND: i64 = 50;
/// The most block time one sweep reads: after a long outage of the Data API, the sweeps
/// catch up an hour at a time instead of in one unbounded window.
const MAX_SWEEP_WINDOW: Duration = Duration::from_secs(3600);

/// Asks the listener to subscribe these tokens afresh; returns how many it asked for.
pub(crate) type Resubscribe = std::sync::Arc<dyn Fn(&[String]) -> usize + Send + Sync>;

/// The backfill: a Data API client with its own request budget, and a writer that stores
/// what it finds as `data_api`.
pub(crate) struct Backfill {
    config: Config,
    health: Health,
    api: DataApiClient,
    writer: TradeWriter,
    /// The price bars of a filled gap's minutes, from CLOB `/prices-history`.
    history: crate::prices::history::PriceHistory,
    /// For the reconciliation sweeps: what the listener holds, and how to resubscribe.
    held: Option<HeldTokens>,
    resubscribe: Option<Resubscribe>,
    /// Swept up to here (block time, Unix ms); from the listener's start.
    swept_to_ms: Option<i64>,
    /// Where the first sweep began: trades with a block within the settlement lag of it may
    /// have matched before their asset was subscribed, so they are filled but not taken for
    /// a stall.
    sweep_start_ms: Option<i64>,
    /// Assets subscribed afresh, and when: misses from before that belong to the stall
    /// already repaired (counted once, not again at each sweep that still sees them).
    repaired: std::collections::HashMap<String, i64>,
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
            history: crate::prices::history::PriceHistory::new(config),
            writer: TradeWriter::new(config, health.clone()).with_source(Source::DataApi),
            health,
            held: None,
            resubscribe: None,
            swept_to_ms: None,
            sweep_start_ms: None,
            repaired: Default::default(),
        }
    }

    /// Also sweeps the held markets every `reconcile_interval`, and resubscribes stalled
    /// assets through `resubscribe`.
    pub(crate) fn reconciling(mut self, held: HeldTokens, resubscribe: Resubscribe) -> Backfill {
        self.held = Some(held);
        self.resubscribe = Some(resubscribe);
        self
    }

    /// Runs rounds until `stop`: every tenth of the settle time (between 1 s and 1 min), and
    /// a reconciliation sweep every `reconcile_interval` (0: never).
    pub(crate) fn run(mut self, stop: StopSignal) {
        let every = (self.config.backfill_settle / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let sweep_every = self.config.reconcile_interval;
        let mut last_sweep = std::time::Instant::now();
        while !stop.wait_timeout(every) {
            // The tape of an asset starts when it is subscribed, and a Data API trade with a
            // block from then on belongs to it: the sweeps start at the listener's start
            // (before any subscription), once a socket is up.
            if self.swept_to_ms.is_none() {
                let h = self.health.snapshot();
                if let (true, Some(started)) = (h.connections_active > 0, h.started_at) {
                    self.swept_to_ms = Some(started.timestamp_millis());
                    self.sweep_start_ms = Some(started.timestamp_millis());
                }
            }
            if let Err(e) = self.round(&stop) {
                log::debug!("backfill: round failed ({e}); will retry");
            }
            self.health.data_api_bad_rows(self.api.bad_rows);
            if !sweep_every.is_zero() && last_sweep.elapsed() >= sweep_every {
                last_sweep = std::time::Instant::now();
                if let Err(e) = self.sweep(&stop) {
                    self.health.data_api_error();
                    log::warn!("reconcile: sweep failed ({e}); will retry");
                }
                self.health.data_api_bad_rows(self.api.bad_rows);
            }
        }
    }

    /// Whether a trade of `asset` settled at `block_ms` that the feed did not deliver was
    /// missed on a live socket (a stall): no recorded gap covers it, its asset was not
    /// subscribed afresh since, and it did not match before the first sweep began (before
    /// its asset was subscribed).
    fn missed_on_a_live_socket(
        &self,
        gaps: &[(i64, i64, Vec<String>)],
        asset: &str,
        block_ms: i64,
    ) -> bool {
        let lag = self.lag_ms();
        let covered = gaps.iter().any(|(f, to, a)| {
            a.iter().any(|x| x == asset) && block_ms >= f - 2_000 && block_ms <= to + lag
        });
        let already = self
            .repaired
            .get(asset)
            .is_some_and(|at| block_ms <= at + lag);
        let at_start = self.sweep_start_ms.is_some_and(|s| block_ms <= s + lag);
        !covered && !already && !at_start
    }

    /// How long a block may trail its match, in ms.
    fn lag_ms(&self) -> i64 {
        self.config.settlement_lag.as_millis() as i64
    }

    /// The tape rows that take part in matching `listed`: every row holding one of their
    /// hashes (whenever it matched), and the rows of `assets` that matched from the
    /// settlement lag before `from_ms` to `to_ms` (for trades the feed sent without a hash).
    fn tape_for(
        &self,
        db: &mut Client,
        assets: &[String],
        listed: &[ApiTrade],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<TapeRow>> {
        let mut tape = tape_rows(
            db,
            assets,
            from_ms - self.lag_ms() - TAPE_MARGIN_MS,
            to_ms + TAPE_MARGIN_MS,
        )?;
        tape.extend(rows_with_hashes(db, listed)?);
        Ok(tape)
    }

    /// The settled horizon (match time, Unix ms): older than the settle time and than
    /// anything still waiting in the spool.
    fn horizon_ms(&self) -> i64 {
        let mut horizon = now_ms() - self.config.backfill_settle.as_millis() as i64;
        if let Some(oldest) = self.health.snapshot().spool_oldest_ts {
            horizon = horizon.min(oldest.timestamp_millis());
        }
        horizon
    }

    /// A reconciliation sweep of every held market over the settled window since the last
    /// sweep (at most [`MAX_SWEEP_WINDOW`] of it: the rest is the next sweep's): fills what
    /// the tape lacks (holes nobody recorded), and takes missing feed trades of an asset that
    /// had a socket (no gap covers them) for a **stalled asset**: it is subscribed afresh on
    /// its socket, counted and logged once. A group of markets the Data API cannot answer for
    /// becomes a gap over the window (filled later, with its own retries), and the sweep goes
    /// on: it never stops at one failure, and its window never grows without bound.
    pub(crate) fn sweep(&mut self, stop: &StopSignal) -> Result<usize> {
        let (Some(held), Some(resubscribe)) = (self.held.clone(), self.resubscribe.clone()) else {
            return Ok(0);
        };
        let Some(from_ms) = self.swept_to_ms else {
            return Ok(0);
        };
        let to_ms = self
            .horizon_ms()
            .min(from_ms + MAX_SWEEP_WINDOW.as_millis() as i64);
        if to_ms <= from_ms {
            return Ok(0);
        }
        let tokens = held();
        if tokens.is_empty() {
            return Ok(0);
        }
        let mut db = crate::store::connect(&self.config)?;
        let requests_before = self.api.requests;
        let markets = markets_with_tokens(&mut db, &tokens)?;
        let wanted: HashSet<&str> = tokens.iter().map(String::as_str).collect();
        let lag = self.lag_ms();
        let gaps: Vec<(i64, i64, Vec<String>)> = db
            .query(
                "SELECT (extract(epoch FROM from_ts) * 1000)::bigint,
                        (extract(epoch FROM to_ts) * 1000)::bigint, asset_ids
                 FROM gaps
                 WHERE to_ts >= 'epoch'::timestamptz + $1::float8 * interval '1 millisecond'
                   AND from_ts <= 'epoch'::timestamptz + $2::float8 * interval '1 millisecond'",
                &[
                    &((from_ms - lag - TAPE_MARGIN_MS) as f64),
                    &((to_ms + TAPE_MARGIN_MS) as f64),
                ],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_>>()?;
        let mut stalled: std::collections::BTreeSet<String> = Default::default();
        let mut added = 0;
        let mut unchecked = 0;
        for chunk in markets.chunks(MARKETS_PER_REQUEST) {
            if stop.is_stopped() {
                return Ok(added);
            }
            let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
            let (start_s, end_s) = (from_ms.div_euclid(1000), to_ms.div_euclid(1000));
            // Held until this chunk's trades are added (see `fill_window`).
            let mut adding = crate::store::AddingLock::take(&mut db)?;
            let missing = match self.compare(adding.db(), &ids, &wanted, start_s, end_s) {
                Ok((_, missing)) => missing,
                Err(e) => {
                    // Not checked now: a gap of its own, filled (and retried) like any other.
                    let asset_ids: Vec<String> = chunk
                        .iter()
                        .flat_map(|(_, t)| t.iter().filter(|t| wanted.contains(t.as_str())))
                        .cloned()
                        .collect();
                    self.writer.insert_gap(&crate::feed::Gap {
                        connection: None,
                        from_ms,
                        to_ms,
                        reason: format!("reconcile: not checked ({e})"),
                        asset_ids,
                    })?; // (counted in gaps_recorded by the writer)
                    self.health.data_api_error();
                    unchecked += 1;
                    log::warn!(
                        "reconcile: {} markets not checked ({e}); recorded as a gap",
                        ids.len()
                    );
                    continue;
                }
            };
            for t in &missing {
                if self.missed_on_a_live_socket(&gaps, &t.asset, t.timestamp_s * 1000) {
                    if stalled.is_empty() {
                        log::debug!("reconcile: first uncovered missing trade: {t:?}");
                    }
                    stalled.insert(t.asset.clone());
                }
            }
            added += self.store_missing(&missing)?;
        }
        // The chain reader compares within a minute of a block, long before a sweep's window
        // settles: a trade a stalled socket missed is usually on the tape already, added from
        // the chain. Such a row is the same evidence as a trade missing now.
        let from_chain = db.query(
            "SELECT k.asset_id, (extract(epoch FROM t.traded_at) * 1000)::bigint
             FROM trade_tape t JOIN tokens k ON k.id = t.token
             WHERE t.source = 'c' AND k.asset_id = ANY($1)
               AND t.traded_at >= 'epoch'::timestamptz + $2::float8 * interval '1 millisecond'
               AND t.traded_at < 'epoch'::timestamptz + $3::float8 * interval '1 millisecond'",
            &[&tokens, &(from_ms as f64), &((to_ms + 1_000) as f64)],
        )?;
        for r in &from_chain {
            let (asset, block_ms): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
            if self.missed_on_a_live_socket(&gaps, &asset, block_ms) {
                if stalled.is_empty() {
                    log::debug!(
                        "reconcile: first uncovered trade added from the chain: {asset} at {block_ms}"
                    );
                }
                stalled.insert(asset);
            }
        }
        self.swept_to_ms = Some(to_ms);
        if !stalled.is_empty() {
            let stalled: Vec<String> = stalled.into_iter().collect();
            let now = now_ms();
            for a in &stalled {
                self.repaired.insert(a.clone(), now);
            }
            let asked = resubscribe(&stalled);
            self.health.stalls_repaired(asked as u64);
            log::warn!(
                "reconcile: {} assets missed trades on a live socket (stalled); subscribed \
                 them afresh: {}",
                stalled.len(),
                stalled
                    .iter()
                    .map(|a| short(a))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        log::info!(
            "reconcile: swept {} markets over {} s with {} requests; {added} trades added{}",
            markets.len(),
            (to_ms - from_ms) / 1000,
            self.api.requests - requests_before,
            if unchecked > 0 {
                format!(", {unchecked} groups not checked (recorded as gaps)")
            } else {
                String::new()
            }
        );
        Ok(added)
    }

    /// Lists `markets`' trades with a block in `start_s..=end_s` (those of `wanted` assets)
    /// and compares them with the tape: (how many were listed, the ones the tape lacks).
    fn compare(
        &mut self,
        db: &mut Client,
        markets: &[String],
        wanted: &HashSet<&str>,
        start_s: i64,
        end_s: i64,
    ) -> Result<(usize, Vec<ApiTrade>)> {
        let listed: Vec<ApiTrade> = self
            .api
            .trades(markets, start_s, end_s)?
            .into_iter()
            .filter(|t| wanted.contains(t.asset.as_str()))
            .collect();
        if listed.is_empty() {
            return Ok((0, Vec::new()));
        }
        let assets: Vec<String> = listed
            .iter()
            .map(|t| t.asset.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let tape = self.tape_for(db, &assets, &listed, start_s * 1000, end_s * 1000 + 999)?;
        let missing = matching::missing(&listed, &tape, self.lag_ms())
            .into_iter()
            .cloned()
            .collect();
        Ok((listed.len(), missing))
    }

    /// Adds `missing` to the tape as `data_api`; returns how many.
    fn store_missing(&mut self, missing: &[ApiTrade]) -> Result<usize> {
        let received_at_us = now_us();
        let trades: Vec<Trade> = missing.iter().map(|t| t.to_tape(received_at_us)).collect();
        for batch in trades.chunks(self.config.batch_size.max(1) * 10) {
            self.writer.commit(batch)?;
            // Their minutes' bars count them (recomputed from the tape: idempotent).
            self.writer.flush_bars(true);
        }
        self.health.backfilled(trades.len() as u64);
        Ok(trades.len())
    }

    /// One round: the settled open gaps, oldest first.
    pub(crate) fn round(&mut self, stop: &StopSignal) -> Result<usize> {
        let mut db = crate::store::connect(&self.config)?;
        // The horizon: settled, and older than anything still waiting in the spool; and the
        // gap's trades must all have their blocks, which trail it by up to the settlement lag.
        let horizon = self.horizon_ms() - self.lag_ms();
        let gaps = db.query(
            "SELECT id, (extract(epoch FROM from_ts) * 1000)::bigint,
                    (extract(epoch FROM to_ts) * 1000)::bigint, asset_ids, fill_attempts,
                    (extract(epoch FROM filled_to) * 1000)::bigint
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
            let resume: Option<i64> = g.try_get(5)?;
            // Each slice is stored before the next is read, and the gap says how far it got.
            let progress = |db: &mut Client, at_ms: i64, added: usize| -> Result<()> {
                db.execute(
                    "UPDATE gaps SET filled_to = 'epoch'::timestamptz
                                               + $2::float8 * interval '1 millisecond',
                            filled_trades = coalesce(filled_trades, 0) + $3
                     WHERE id = $1",
                    &[&id, &(at_ms as f64), &(added as i32)],
                )?;
                Ok(())
            };
            match self.fill_window(&mut db, &assets, from_ms, to_ms, resume, progress) {
                Ok(f) => {
                    db.execute(
                        "UPDATE gaps SET filled_at = now(), fill_attempts = fill_attempts + 1,
                                fill_error = NULL
                         WHERE id = $1",
                        &[&id],
                    )?;
                    self.health.gap_filled();
                    filled += 1;
                    // The minutes the feed was blind to get their price from the CLOB's
                    // history (where no live bar has one); a failure here leaves the gap
                    // filled (its trades are) and is logged.
                    match self.history.fill(&mut db, &assets, from_ms, to_ms) {
                        Ok(n) => self
                            .health
                            .books()
                            .bars_filled
                            .fetch_add(n, std::sync::atomic::Ordering::Relaxed),
                        Err(e) => {
                            log::warn!("backfill: gap {id}: no price history ({e})");
                            0
                        }
                    };
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
                    // stays open and visible, and is tried again from where it got to.
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

    /// Compares the Data API with the tape for `assets` over match times `from_ms..=to_ms`
    /// and adds what the tape lacks. The Data API is read by block time, from `from_ms` (or
    /// `resume_ms`, where an earlier try got to) to the settlement lag past `to_ms`, in
    /// slices of `backfill_slice`: each slice is matched and stored before the next is read
    /// (memory stays that of one slice), and `progress(db, next_ms, added)` records where
    /// the next one begins.
    pub(crate) fn fill_window(
        &mut self,
        db: &mut Client,
        assets: &[String],
        from_ms: i64,
        to_ms: i64,
        resume_ms: Option<i64>,
        mut progress: impl FnMut(&mut Client, i64, usize) -> Result<()>,
    ) -> Result<Filled> {
        let requests_before = self.api.requests;
        let markets = markets_holding(db, assets)?;
        let wanted: HashSet<&str> = assets.iter().map(String::as_str).collect();
        // Never a window that reaches into seconds still settling: rows arriving while the
        // pages are read would shift the offsets under them (pages are newest first).
        let settled_s = (now_ms() - 2_000).div_euclid(1000);
        let end_s = (to_ms + self.lag_ms()).div_euclid(1000).min(settled_s);
        let slice_s = (self.config.backfill_slice.as_secs() as i64).max(1);
        let mut at_s = resume_ms.unwrap_or(from_ms).max(from_ms).div_euclid(1000);
        let mut filled = Filled::default();
        while at_s <= end_s {
            let slice_end_s = (at_s + slice_s - 1).min(end_s);
            let mut added = 0;
            for chunk in markets.chunks(MARKETS_PER_REQUEST) {
                // Looked up and added under the lock the chain reader takes too: one source
                // adds a trade, the other then finds it.
                let mut adding = crate::store::AddingLock::take(db)?;
                let (listed, missing) =
                    self.compare(adding.db(), chunk, &wanted, at_s, slice_end_s)?;
                filled.listed += listed;
                added += self.store_missing(&missing)?;
            }
            filled.added += added;
            at_s = slice_end_s + 1;
            progress(db, at_s * 1000, added)?;
        }
        filled.requests = self.api.requests - requests_before;
        Ok(filled)
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

/// An asset id short enough for a log line.
fn short(asset: &str) -> String {
    // By characters: an asset id is network text, and a byte index could fall inside one.
    let chars: Vec<char> = asset.chars().collect();
    if chars.len() > 12 {
        let head: String = chars[..6].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{head}…{tail}")
    } else {
        asset.to_owned()
    }
}

/// Loads the settled trades of `markets` (slugs or condition ids, all in the `markets`
/// table: run a sync first) with a match time in `from_ms..=to_ms` (Unix ms; the last
/// settlement lag and 2 s are left for a later run, their blocks may still be coming) into
/// the tape, through the writer's COPY path, as `data_api`. Idempotent: what the tape holds
/// already (from the feed or an earlier run) is not added again.
pub fn history(config: &Config, markets: &[String], from_ms: i64, to_ms: i64) -> Result<Filled> {
    let mut db = crate::store::connect(config)?;
    let rows = db.query(
        "SELECT condition_id, token_ids FROM markets
         WHERE condition_id = ANY($1) OR slug = ANY($1)",
        &[&markets],
    )?;
    if rows.len() < markets.len() {
        let known: Vec<String> = rows
            .iter()
            .filter_map(|r| r.try_get::<_, String>(0).ok())
            .collect();
        return Err(crate::Error::config(format!(
            "{} of the {} markets asked for are not in the markets table (known: {known:?}); \
             run `polytape sync-markets`, or give condition ids of markets it lists",
            markets.len() - rows.len(),
            markets.len()
        )));
    }
    let mut assets: Vec<String> = Vec::new();
    for r in &rows {
        assets.extend(r.try_get::<_, Vec<String>>(1)?);
    }
    // Only settled time: a trade matched in the last seconds may have its block still to
    // come, and a window that grows between two runs would not be idempotent.
    let lag_ms = config.settlement_lag.as_millis() as i64;
    let to_ms = to_ms.min(now_ms() - lag_ms - 2_000);
    let mut backfill = Backfill::new(config, Health::new());
    backfill.fill_window(&mut db, &assets, from_ms, to_ms, None, |_, _, _| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn asset_ids_are_shortened_by_characters() {
        assert_eq!(short("12345"), "12345");
        assert_eq!(
            short("71321045679252212594626385532706912750332728571942532289631379312455583992563"),
            "713210…2563"
        );
        // Not a real asset id, but network text all the same: never a panic.
        assert_eq!(short("ééééééééééééé"), "éééééé…éééé");
    }
}
