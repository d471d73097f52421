//! The chain reader: a blocking loop on its own supervised thread that follows Polygon up to
//! the `finalized` block (no reorg reaches it), reads the exchanges' `OrderFilled` logs in
//! block windows (halved when a provider refuses one as too wide or too full, doubled after
//! a success), keeps the taker legs of the tokens polytape knows in `chain_fills` with the
//! cursor in the same transaction (a restart resumes at the next block and reads none
//! twice), compares them with the tape once no feed trade of theirs can still be on its way
//! (adding what the tape lacks), and counts settled tape time into `chain_checks`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use postgres::Client;

use super::abi::{NotAFill, decode};
use super::rpc::{Block, Logs, Rpc};
use super::verify::{self, ChainFill};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::health::{Health, now_ms};
use crate::stop::StopSignal;
use crate::store::trades::{Source, TradeWriter, hash_bytes};

/// The live reader's cursor.
pub(crate) const CURSOR: &str = "polygon";
/// Blocks asked for at first; a window never grows past [`MAX_WINDOW`].
const FIRST_WINDOW: u64 = 1_000;
const MAX_WINDOW: u64 = 5_000;
/// How often a reader that has caught up looks for new finalized blocks (a block is ~2 s).
const POLL: Duration = Duration::from_secs(2);
/// Fills compared with the tape at a time.
const RESOLVE_BATCH: i64 = 5_000;
/// A fill is compared once its block is this old: its feed trade, matched before the block,
/// is committed by then unless the writer is spooling (then the spool's oldest record
/// holds the comparison back).
pub(super) const FEED_SETTLE_MS: i64 = 30_000;
/// How often the token → market map is read again (new markets).
const MARKETS_EVERY: Duration = Duration::from_secs(60);

/// The cursor as stored.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    block: u64,
    block_ms: i64,
    checked_to_ms: i64,
}

/// The block window: halved when a provider refuses one as too much, doubled after an answer
/// well under the result cap.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window(u64);

impl Window {
    pub(super) fn new() -> Window {
        Window(FIRST_WINDOW)
    }

    /// The last block of the next window after `after`, at most `limit`.
    pub(super) fn end(&self, after: u64, limit: u64) -> u64 {
        (after + self.0).min(limit)
    }

    /// The window `after+1..=to` was refused: halve it; a single block refused is an error
    /// (no smaller window exists).
    pub(super) fn refused(&mut self, after: u64, to: u64, why: &str) -> Result<()> {
        if to <= after + 1 {
            return Err(Error::http(format!(
                "polygon rpc: block {to} alone is refused as too much ({why})"
            )));
        }
        self.0 = ((to - after) / 2).max(1);
        log::debug!(
            "chain: a window of {} blocks refused ({why}); halved",
            to - after
        );
        Ok(())
    }

    /// A window answered with `logs` logs.
    pub(super) fn answered(&mut self, logs: usize) {
        if logs < super::MAX_LOGS / 4 {
            self.0 = (self.0 * 2).min(MAX_WINDOW);
        }
    }
}

/// Reads the chain up to `finalized` now, compares and checks what it can (the live reader's
/// own steps, on the live cursor: `polytape verify --chain`); a first read (no cursor yet)
/// starts at `since_ms`. Returns the cursor's block.
pub fn catch_up(config: &Config, since_ms: i64) -> Result<u64> {
    let mut reader = ChainReader::new(config, Health::new()).ok_or_else(|| {
        Error::config(
            "the chain check needs a Polygon endpoint (--polygon-rpc-url or POLYTAPE_POLYGON_RPC_URL)",
        )
    })?;
    reader.start_ms = Some(since_ms);
    let deadline = Instant::now() + Duration::from_secs(3600);
    while !reader.step()? {
        if Instant::now() > deadline {
            return Err(Error::data("chain: not caught up within an hour"));
        }
    }
    Ok(reader.health.chain().cursor.load(Relaxed))
}

/// Reads the chain into `chain_fills`, compares, adds and checks.
pub(crate) struct ChainReader {
    config: Config,
    health: Health,
    rpc: Rpc,
    writer: TradeWriter,
    db: Option<Client>,
    window: Window,
    /// Token → market, of every token polytape knows (the `markets` table and the tape's).
    markets: HashMap<String, String>,
    markets_read: Option<Instant>,
    /// Where a first read starts (Unix ms): the listener's start when `None`.
    start_ms: Option<i64>,
}

impl ChainReader {
    /// `None` when no Polygon endpoint is configured.
    pub(crate) fn new(config: &Config, health: Health) -> Option<ChainReader> {
        let url = config.polygon_rpc_url.clone()?;
        Some(ChainReader {
            config: config.clone(),
            rpc: Rpc::new(config, &url, health.clone()),
            writer: TradeWriter::new(config, health.clone()).with_source(Source::Chain),
            health,
            db: None,
            window: Window::new(),
            markets: HashMap::new(),
            markets_read: None,
            start_ms: None,
        })
    }

    /// Reads until `stop`; a failure (the RPC down, the database away) is counted, logged and
    /// tried again with a growing delay, from the cursor.
    pub(crate) fn run(mut self, stop: StopSignal) {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut failures = 0u32;
        loop {
            match self.step() {
                Ok(caught_up) => {
                    failures = 0;
                    let pause = if caught_up { POLL } else { Duration::ZERO };
                    if stop.wait_timeout(pause) {
                        break;
                    }
                }
                Err(e) => {
                    if matches!(e.kind(), ErrorKind::Http | ErrorKind::Data) {
                        self.health.chain().rpc_errors.fetch_add(1, Relaxed);
                    } else {
                        self.health.db_error();
                        self.db = None;
                        self.writer.disconnect();
                    }
                    log::warn!("chain: {e}; trying again from the cursor");
                    failures += 1;
                    if stop.wait_timeout(backoff.delay(failures - 1)) {
                        break;
                    }
                }
            }
        }
    }

    fn db(&mut self) -> Result<&mut Client> {
        let client = match self.db.take() {
            Some(c) if !c.is_closed() => c,
            _ => crate::store::connect(&self.config)?,
        };
        Ok(self.db.insert(client))
    }

    fn lag_ms(&self) -> i64 {
        self.config.settlement_lag.as_millis() as i64
    }

    /// One window read (or none, caught up), then the comparisons and checks it allows.
    /// Returns whether the reader has caught up with `finalized`.
    pub(crate) fn step(&mut self) -> Result<bool> {
        let head = self.rpc.block("latest")?;
        let finalized = self
            .rpc
            .block("finalized")?
            .ok_or_else(|| Error::data("polygon rpc: no finalized block"))?;
        let chain = self.health.chain();
        if let Some(h) = head {
            chain.head.store(h.number, Relaxed);
        }
        chain.finalized.store(finalized.number, Relaxed);
        let mut cursor = match load_cursor(self.db()?)? {
            Some(c) => c,
            None => self.start(finalized)?,
        };
        self.health.chain().cursor.store(cursor.block, Relaxed);
        if cursor.block < finalized.number {
            let to = self.window.end(cursor.block, finalized.number);
            match self.rpc.logs(cursor.block + 1, to)? {
                Logs::TooMuch(why) => {
                    self.window.refused(cursor.block, to, &why)?;
                    return Ok(false);
                }
                Logs::Found(logs) => {
                    self.window.answered(logs.len());
                    cursor = self.store(&logs, cursor, to)?;
                    self.health.chain().cursor.store(cursor.block, Relaxed);
                }
            }
        }
        self.compare()?;
        self.check(cursor)?;
        Ok(cursor.block >= finalized.number)
    }

    /// The first cursor: the block before the listener started (or now), so every fill
    /// matched since is read.
    fn start(&mut self, finalized: Block) -> Result<Cursor> {
        let started_ms = self.start_ms.unwrap_or_else(|| {
            self.health
                .snapshot()
                .started_at
                .map_or_else(now_ms, |t| t.timestamp_millis())
        });
        let block = block_at_or_before(&mut self.rpc, started_ms.div_euclid(1000), finalized)?;
        // A start before the node's first block: that block's time is the start's.
        let time_s = match self.rpc.block(&format!("0x{block:x}"))? {
            Some(b) => b.time_s,
            None => started_ms.div_euclid(1000),
        };
        let first_ms = (time_s + 1) * 1000;
        let cursor = Cursor {
            block,
            block_ms: time_s * 1000,
            checked_to_ms: first_ms,
        };
        self.db()?.execute(
            "INSERT INTO chain_cursor (name, block, block_time, first_block, first_time, checked_to)
             VALUES ($1, $2::bigint, 'epoch'::timestamptz + $3::float8 * interval '1 millisecond',
                     $2::bigint + 1,
                     'epoch'::timestamptz + $4::float8 * interval '1 millisecond',
                     'epoch'::timestamptz + $4::float8 * interval '1 millisecond')
             ON CONFLICT (name) DO NOTHING",
            &[&CURSOR, &(block as i64), &(cursor.block_ms as f64), &(first_ms as f64)],
        )?;
        log::info!("chain: reading from block {} on", block + 1);
        load_cursor(self.db()?)?.ok_or_else(|| Error::data("chain: the cursor was not stored"))
    }

    /// The token → market map, read again every minute and when a token is unknown.
    fn markets(&mut self, tokens: &BTreeSet<&str>) -> Result<()> {
        let stale = self
            .markets_read
            .is_none_or(|t| t.elapsed() >= MARKETS_EVERY);
        let unknown = tokens.iter().any(|t| !self.markets.contains_key(*t));
        if !stale && !unknown {
            return Ok(());
        }
        if !stale
            && self
                .markets_read
                .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return Ok(());
        }
        let rows = self.db()?.query(
            "SELECT unnest(token_ids), condition_id FROM markets
             UNION SELECT asset_id, market FROM tokens",
            &[],
        )?;
        let mut map = HashMap::with_capacity(rows.len());
        for r in rows {
            map.insert(r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?);
        }
        self.markets = map;
        self.markets_read = Some(Instant::now());
        Ok(())
    }

    /// Decodes `logs` (blocks after the cursor up to `to`), keeps the taker legs of known
    /// tokens, and stores them with the cursor at `to`, in one transaction.
    fn store(&mut self, logs: &[serde_json::Value], cursor: Cursor, to: u64) -> Result<Cursor> {
        let fills = self.decode(logs)?;
        let mut blocks: Vec<u64> = fills.iter().map(|f| f.block).collect();
        blocks.push(to);
        let times = self.rpc.block_times(&blocks)?;
        let to_ms = times.get(&to).copied().unwrap_or(0) * 1000;
        let fills: Vec<ChainFill> = fills
            .into_iter()
            .map(|mut f| {
                f.block_s = times.get(&f.block).copied().unwrap_or(0);
                f
            })
            .collect();
        let n = fills.len() as u64;
        let db = self.db()?;
        let mut tx = db.transaction()?;
        insert_fills(&mut tx, &fills)?;
        let moved = tx.execute(
            "UPDATE chain_cursor
             SET block = $2, block_time = 'epoch'::timestamptz + $3::float8 * interval '1 millisecond',
                 updated_at = now()
             WHERE name = $1 AND block = $4",
            &[&CURSOR, &(to as i64), &(to_ms as f64), &(cursor.block as i64)],
        )?;
        if moved != 1 {
            // Another reader moved it: this window is theirs (rolled back).
            return Err(Error::data(
                "chain: the cursor moved under this reader (two readers on one database?)",
            ));
        }
        tx.commit()?;
        self.health.chain().fills_read.fetch_add(n, Relaxed);
        Ok(Cursor {
            block: to,
            block_ms: to_ms,
            ..cursor
        })
    }

    /// The taker legs of known tokens among `logs`.
    fn decode(&mut self, logs: &[serde_json::Value]) -> Result<Vec<ChainFill>> {
        let legs = taker_legs(logs, &self.health);
        let tokens: BTreeSet<&str> = legs.iter().map(|f| f.token_id.as_str()).collect();
        self.markets(&tokens)?;
        Ok(of_markets(&legs, &self.markets, &self.health))
    }

    /// Compares the stored fills whose feed trades must be on the tape by now.
    fn compare(&mut self) -> Result<()> {
        let snapshot = self.health.snapshot();
        if snapshot.db_lost_since.is_some() {
            return Ok(());
        }
        let mut horizon_ms = now_ms() - FEED_SETTLE_MS;
        if let Some(oldest) = snapshot.spool_oldest_ts {
            horizon_ms = horizon_ms.min(oldest.timestamp_millis());
        }
        let lag_ms = self.lag_ms();
        loop {
            let fills = pending(self.db()?, horizon_ms)?;
            if fills.is_empty() {
                return Ok(());
            }
            let mut db = self
                .db
                .take()
                .ok_or_else(|| Error::data("chain: no connection"))?;
            let outcome = verify::resolve(&mut db, &mut self.writer, &self.health, &fills, lag_ms);
            self.db = Some(db);
            let outcome = outcome?;
            record(self.db()?, &fills, &outcome)?;
            if (fills.len() as i64) < RESOLVE_BATCH {
                return Ok(());
            }
        }
    }

    /// Counts the tape time every chain fill of which is read and compared; `cursor` is the
    /// one this step loaded and moved (a second checker's move is caught by `check_slice`).
    fn check(&mut self, cursor: Cursor) -> Result<()> {
        let lag_ms = self.lag_ms();
        let db = self.db()?;
        let oldest_pending: Option<i64> = db
            .query_one(
                // Blocks come in time order: the first pending block is the oldest.
                "SELECT (SELECT (extract(epoch FROM block_time) * 1000)::bigint
                         FROM chain_fills WHERE state = 'p' ORDER BY block, log_index LIMIT 1)",
                &[],
            )?
            .try_get(0)?;
        let read_to = oldest_pending.map_or(cursor.block_ms, |p| p.min(cursor.block_ms));
        // A trade matched at t settles by t + lag: tape time before (read_to - lag) has all
        // its fills read and compared.
        let to_ms = read_to - lag_ms - 1_000;
        if to_ms <= cursor.checked_to_ms {
            return Ok(());
        }
        let counted = verify::check_slice(db, CURSOR, cursor.checked_to_ms, to_ms)?;
        self.health
            .chain()
            .unsettled
            .fetch_add(counted.unsettled, Relaxed);
        if counted.unsettled > 0 {
            log::warn!(
                "chain: {} tape trades no chain fill accounts for (flagged in chain_unsettled)",
                counted.unsettled
            );
        }
        Ok(())
    }
}

/// The taker legs among `logs` (each a fill, once); what does not decode is counted.
pub(super) fn taker_legs(logs: &[serde_json::Value], health: &Health) -> Vec<super::Fill> {
    let mut legs = Vec::new();
    for l in logs {
        match decode(l) {
            Ok(f) if f.is_taker_leg() => legs.push(f),
            Ok(_) | Err(NotAFill::Other) => {}
            Err(NotAFill::Malformed(why)) => {
                health.chain().logs_malformed.fetch_add(1, Relaxed);
                log::warn!("chain: an exchange log that does not decode ({why}): {l}");
            }
        }
    }
    legs
}

/// The legs of tokens in `markets` (token → market), as fills to compare (block times to be
/// set); amounts past 2^63 or a hash that is not hex are counted as malformed.
pub(super) fn of_markets(
    legs: &[super::Fill],
    markets: &HashMap<String, String>,
    health: &Health,
) -> Vec<ChainFill> {
    let mut out = Vec::with_capacity(legs.len());
    for f in legs {
        let Some(market) = markets.get(&f.token_id) else {
            continue;
        };
        if f.shares > i64::MAX as u128
            || f.usdc > i64::MAX as u128
            || hash_bytes(&f.transaction_hash).is_none()
        {
            health.chain().logs_malformed.fetch_add(1, Relaxed);
            log::warn!("chain: a fill out of range or without a hex hash: {f:?}");
            continue;
        }
        out.push(ChainFill {
            block: f.block,
            log_index: f.log_index,
            tx: f.transaction_hash.clone(),
            asset: f.token_id.clone(),
            market: market.clone(),
            buy: f.buy,
            shares: f.shares,
            usdc: f.usdc,
            block_s: 0,
        });
    }
    out
}

fn load_cursor(db: &mut Client) -> Result<Option<Cursor>> {
    let row = db.query_opt(
        "SELECT block, (extract(epoch FROM block_time) * 1000)::bigint,
                (extract(epoch FROM checked_to) * 1000)::bigint
         FROM chain_cursor WHERE name = $1",
        &[&CURSOR],
    )?;
    row.map(|r| {
        Ok(Cursor {
            block: r.try_get::<_, i64>(0)?.max(0) as u64,
            block_ms: r.try_get(1)?,
            checked_to_ms: r.try_get(2)?,
        })
    })
    .transpose()
}

fn insert_fills(tx: &mut postgres::Transaction<'_>, fills: &[ChainFill]) -> Result<()> {
    if fills.is_empty() {
        return Ok(());
    }
    let blocks: Vec<i64> = fills.iter().map(|f| f.block as i64).collect();
    let indices: Vec<i32> = fills.iter().map(|f| f.log_index as i32).collect();
    let hashes: Vec<Vec<u8>> = fills
        .iter()
        .map(|f| hash_bytes(&f.tx).unwrap_or_default())
        .collect();
    let assets: Vec<&str> = fills.iter().map(|f| f.asset.as_str()).collect();
    let markets: Vec<&str> = fills.iter().map(|f| f.market.as_str()).collect();
    let buys: Vec<bool> = fills.iter().map(|f| f.buy).collect();
    let shares: Vec<i64> = fills.iter().map(|f| f.shares as i64).collect();
    let usdc: Vec<i64> = fills.iter().map(|f| f.usdc as i64).collect();
    let times: Vec<f64> = fills.iter().map(|f| f.block_s as f64).collect();
    tx.execute(
        "INSERT INTO chain_fills (block, log_index, tx, asset_id, market, is_buy, shares, usdc,
                                  block_time)
         SELECT b, i, h, a, m, s, sh, u, 'epoch'::timestamptz + t * interval '1 second'
         FROM unnest($1::bigint[], $2::int[], $3::bytea[], $4::text[], $5::text[], $6::bool[],
                     $7::bigint[], $8::bigint[], $9::float8[]) AS x(b, i, h, a, m, s, sh, u, t)
         ON CONFLICT (block, log_index) DO NOTHING",
        &[
            &blocks, &indices, &hashes, &assets, &markets, &buys, &shares, &usdc, &times,
        ],
    )?;
    Ok(())
}

/// The stored fills not compared yet with a block at or before `horizon_ms`, whole blocks
/// at most [`RESOLVE_BATCH`] (one block more when a single block holds more).
fn pending(db: &mut Client, horizon_ms: i64) -> Result<Vec<ChainFill>> {
    let rows = db.query(
        "SELECT block, log_index, '0x' || encode(tx, 'hex'), asset_id, market, is_buy, shares,
                usdc, extract(epoch FROM block_time)::bigint
         FROM chain_fills
         WHERE state = 'p'
           AND block_time <= 'epoch'::timestamptz + $1::float8 * interval '1 millisecond'
         ORDER BY block, log_index LIMIT $2",
        &[&(horizon_ms as f64), &(RESOLVE_BATCH + 1)],
    )?;
    let mut fills = rows
        .iter()
        .map(|r| {
            Ok(ChainFill {
                block: r.try_get::<_, i64>(0)? as u64,
                log_index: r.try_get::<_, i32>(1)? as u64,
                tx: r.try_get(2)?,
                asset: r.try_get(3)?,
                market: r.try_get(4)?,
                buy: r.try_get(5)?,
                shares: r.try_get::<_, i64>(6)?.max(0) as u128,
                usdc: r.try_get::<_, i64>(7)?.max(0) as u128,
                block_s: r.try_get(8)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if fills.len() as i64 > RESOLVE_BATCH {
        // Whole blocks only: a transaction's fills are compared together.
        let last = fills.last().map_or(0, |f| f.block);
        if fills.first().is_some_and(|f| f.block != last) {
            fills.retain(|f| f.block != last);
        }
    }
    Ok(fills)
}

/// Stores each fill's outcome.
fn record(db: &mut Client, fills: &[ChainFill], outcome: &[verify::Outcome]) -> Result<()> {
    let blocks: Vec<i64> = fills.iter().map(|f| f.block as i64).collect();
    let indices: Vec<i32> = fills.iter().map(|f| f.log_index as i32).collect();
    let states: Vec<i8> = outcome.iter().map(|o| o.0.code()).collect();
    let at: Vec<f64> = outcome.iter().map(|o| o.1 as f64).collect();
    let hashless: Vec<bool> = outcome.iter().map(|o| o.2).collect();
    db.execute(
        "UPDATE chain_fills f
         SET state = x.s, tape_at = 'epoch'::timestamptz + x.t * interval '1 millisecond',
             hashless = x.h
         FROM unnest($1::bigint[], $2::int[], $3::\"char\"[], $4::float8[], $5::bool[])
              AS x(b, i, s, t, h)
         WHERE f.block = x.b AND f.log_index = x.i",
        &[&blocks, &indices, &states, &at, &hashless],
    )?;
    Ok(())
}

/// The last block at or before `target_s` (a block the node does not have counts as
/// before): galloping down from `finalized`, then halving; about 2 log₂(distance) requests.
pub(crate) fn block_at_or_before(rpc: &mut Rpc, target_s: i64, finalized: Block) -> Result<u64> {
    if finalized.time_s <= target_s {
        return Ok(finalized.number);
    }
    let time_of = |rpc: &mut Rpc, n: u64| -> Result<Option<i64>> {
        Ok(rpc.block(&format!("0x{n:x}"))?.map(|b| b.time_s))
    };
    let mut hi = finalized.number;
    // About two seconds a block: the first guess lands near.
    let mut step = (((finalized.time_s - target_s) / 2).max(1) as u64).min(hi);
    let mut lo;
    loop {
        let n = hi.saturating_sub(step);
        match time_of(rpc, n)? {
            Some(t) if t > target_s && n > 0 => {
                hi = n;
                step = step.saturating_mul(2).min(n);
            }
            _ => {
                lo = n;
                break;
            }
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match time_of(rpc, mid)? {
            Some(t) if t > target_s => hi = mid,
            _ => lo = mid,
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_halves_when_refused_and_grows_after_light_answers() {
        let mut w = Window::new();
        assert_eq!(w.end(100, 10_000), 100 + FIRST_WINDOW);
        // Refused: half of what was asked.
        w.refused(100, 1_100, "-32005").expect("halved");
        assert_eq!(w.end(100, 10_000), 600);
        w.refused(100, 101 + 1, "-32005").expect("halved to one");
        assert_eq!(w.end(100, 10_000), 101);
        // One block refused: no smaller window exists.
        assert!(w.refused(100, 101, "more than 10000 results").is_err());
        // A full answer keeps the size; a light one doubles it, up to the most.
        w.answered(super::super::MAX_LOGS / 2);
        assert_eq!(w.end(100, 10_000), 101);
        for _ in 0..20 {
            w.answered(10);
        }
        assert_eq!(w.end(0, u64::MAX), MAX_WINDOW);
        // Never past the limit (finalized).
        assert_eq!(w.end(100, 150), 150);
    }
}
