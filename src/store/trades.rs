//! The trade writer: drains the channel, writes batches with `COPY`, idempotently, and never
//! drops a trade it has taken off the channel.
//!
//! Trades go to the compact tape (`trade_tape`, migration V6): each asset id becomes a 4-byte
//! token id from the `tokens` dictionary (cached here; new tokens are committed on their own
//! before the batch that needs them, so a cached id always exists), the hash 32 bytes. The
//! month partitions a batch needs are made before it is written (`store::partitions`).
//!
//! A batch is first `COPY`ed straight into `trade_tape`, in one transaction. If any row of it is
//! already stored (SQLSTATE 23505 on the natural key: a batch retried after an ambiguous
//! commit, or a trade the feed sent twice), that transaction rolls back and the batch takes
//! the slow path: `COPY` into a temporary staging table (created on a connection's first
//! slow path, emptied on commit), then `INSERT … SELECT … ON CONFLICT DO NOTHING`. Either
//! way a trade is stored once; the fast path skips a second write of every row, which
//! BENCHMARKS.md measures.
//!
//! When the database refuses a batch for its data, the batch is split in halves until the
//! refused row is alone; that row goes to `trades_rejected` with its error, and every other
//! row is stored. Any other failure comes back to the caller ([`crate::writer`]), which
//! spools the batch and retries it later.

use std::io::Write;
use std::time::Duration;

use std::collections::{HashMap, HashSet};

use postgres::Client;

use crate::config::Config;
use crate::error::Result;
use crate::feed::{Gap, Trade};
use crate::health::Health;
use crate::store::failure::{Failure, classify};

const CREATE_STAGING: &str = "
    CREATE TEMP TABLE IF NOT EXISTS trades_staging (LIKE trade_tape) ON COMMIT DELETE ROWS";

const COLUMNS: &str = "traded_at, received_at, token, fee_rate_bps, is_buy, source, price, \
                       size, tx";

const UNIQUE_VIOLATION: &str = "23505";

/// How the writer encodes COPY rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// PostgreSQL's binary COPY format: numbers and times arrive ready-made, so the server
    /// parses no decimal or date text (the default; BENCHMARKS.md compares the two).
    Binary,
    /// Tab-separated text, as `psql \copy` sends it.
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    Text,
}

/// Writes batches of trades to PostgreSQL. One per writer thread: a `postgres::Client` owns a
/// small runtime of its own and must not be shared.
pub struct TradeWriter {
    url: String,
    statement_timeout: Duration,
    client: Option<Client>,
    health: Health,
    /// The COPY payload, reused between batches.
    buf: Vec<u8>,
    /// Skip the direct COPY and always go through staging (to measure the two paths).
    staging_only: bool,
    format: CopyFormat,
    source: Source,
    /// Its minutes' price bars count its trades (the book side on): the (minute, token) of
    /// every trade committed, counted from the tape once the minute is over.
    bars: bool,
    pub(crate) dirty_bars: std::collections::BTreeSet<(i64, i32)>,
    /// Token ids by asset id, as committed in `tokens`.
    tokens: HashMap<String, i32, ahash::RandomState>,
    /// Months (year · 12 + month − 1) whose partition is known to exist.
    months: HashSet<i32>,
    /// The last known month's bounds in Unix ms, `[from, to)`: a trade inside needs no
    /// calendar arithmetic to be known.
    known_month_ms: (i64, i64),
}

/// Where the trades a writer stores came from (the `source` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The live market channel.
    Feed,
    /// The Data API's settled tape: a hole filled.
    DataApi,
    /// Polygon's `OrderFilled` logs: a fill the other sources missed.
    Chain,
}

impl Source {
    /// As `trade_tape` stores it (one byte; the `trades` view says `feed` or `data_api`).
    fn code(self) -> u8 {
        match self {
            Source::Feed => b'f',
            Source::DataApi => b'd',
            Source::Chain => b'c',
        }
    }
}

impl TradeWriter {
    pub fn new(config: &Config, health: Health) -> TradeWriter {
        TradeWriter {
            url: config.database_url.clone(),
            statement_timeout: config.statement_timeout,
            client: None,
            health,
            buf: Vec::with_capacity(256 * 1024),
            staging_only: false,
            format: CopyFormat::Binary,
            source: Source::Feed,
            bars: !config.book_snapshot_interval.is_zero(),
            dirty_bars: std::collections::BTreeSet::new(),
            tokens: HashMap::default(),
            months: HashSet::new(),
            known_month_ms: (0, 0),
        }
    }

    /// Whether this writer stores the backfill's or the chain's trades (its bar counts are fills).
    pub(crate) fn is_backfill_writer(&self) -> bool {
        self.source != Source::Feed
    }

    /// Whether its trades' minutes get their bars counted (the book side on).
    pub(crate) fn counts_bars(&self) -> bool {
        self.bars
    }

    /// Stores every trade as coming from `source` (the backfill writes `data_api`).
    pub fn with_source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// Always write through the staging table, never straight into `trades`. Both paths
    /// store the same rows; this exists so benchmarks can measure what the fast path saves.
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    pub fn set_staging_only(&mut self, on: bool) {
        self.staging_only = on;
    }

    /// Encodes COPY rows as `format` (binary by default; text exists to be measured).
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    pub fn set_copy_format(&mut self, format: CopyFormat) {
        self.format = format;
    }

    /// Connects now, so a wrong URL fails at start rather than at the first batch.
    pub fn connect(&mut self) -> Result<()> {
        self.client()?;
        Ok(())
    }

    /// The open connection, or a new one.
    fn client(&mut self) -> Result<&mut Client> {
        let client = match self.client.take() {
            Some(c) if !c.is_closed() => c,
            _ => crate::store::connect_with(&self.url, self.statement_timeout)?,
        };
        Ok(self.client.insert(client))
    }

    /// Commits `batch`, isolating the rows the database refuses for their data (classes 22
    /// and 23): the batch is split in halves until each refused row is alone, and that row
    /// goes to `trades_rejected` with its error. Every other row is stored. Returns an error
    /// only for failures that refuse everything (the database away, a revoked grant): then
    /// the caller keeps the whole batch; the rows already committed are skipped on the retry
    /// by the natural key.
    pub fn commit(&mut self, batch: &[Trade]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        match self.write(batch) {
            Ok(inserted) => {
                self.health
                    .batch_inserted(inserted, batch.len() as u64 - inserted);
                self.health.committed(batch);
                Ok(())
            }
            Err(e) => {
                self.health.db_error();
                if classify(&e) != Failure::Refused {
                    if e.is_transient() {
                        self.client = None;
                    }
                    return Err(e);
                }
                if let [trade] = batch {
                    return self.reject(trade, &e);
                }
                log::warn!(
                    "writer: the database refused a batch of {} ({e}); isolating the rows",
                    batch.len()
                );
                let (left, right) = batch.split_at(batch.len() / 2);
                self.commit(left)?;
                self.commit(right)
            }
        }
    }

    /// Keeps a refused trade in `trades_rejected`, with the error that refused it.
    fn reject(&mut self, t: &Trade, error: &crate::Error) -> Result<()> {
        let sqlstate = error.code().unwrap_or("").to_owned();
        let message = error.to_string();
        // PostgreSQL text holds no NUL byte (a refused value may be refused for that very
        // reason): keep it visible as `\0` instead.
        let text = |s: &str| s.replace('\0', "\\0");
        let (asset_id, market) = (text(&t.asset_id), text(&t.market));
        let hash = t.transaction_hash.as_deref().map(text);
        let client = self.client()?;
        client.execute(
            "INSERT INTO trades_rejected (sqlstate, message, asset_id, market, price, size, side,
                 fee_rate_bps, traded_at, transaction_hash, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                 'epoch'::timestamptz + $9 * interval '1 millisecond',
                 $10, 'epoch'::timestamptz + $11 * interval '1 microsecond')",
            &[
                &sqlstate,
                &message,
                &asset_id,
                &market,
                &t.price.as_str(),
                &t.size.as_str(),
                &t.side.as_str(),
                &t.fee_rate_bps,
                // Whole milliseconds and microseconds as float8 are exact (< 2^53).
                &(t.timestamp_ms as f64),
                &hash,
                &(t.received_at_us as f64),
            ],
        )?;
        self.health.row_rejected();
        log::error!(
            "writer: the database refused a trade ({message}); kept in trades_rejected: {t:?}"
        );
        Ok(())
    }

    /// Records a gap, once: a gap replayed from the spool after a crash is skipped by its
    /// natural key.
    pub(crate) fn insert_gap(&mut self, gap: &Gap) -> Result<()> {
        let client = self.client()?;
        let inserted = client.execute(
            // Whole milliseconds as float8 are exact (< 2^53).
            "INSERT INTO gaps (connection, from_ts, to_ts, reason, asset_ids)
             VALUES ($1, 'epoch'::timestamptz + $2 * interval '1 millisecond',
                     'epoch'::timestamptz + $3 * interval '1 millisecond', $4, $5)
             ON CONFLICT DO NOTHING",
            &[
                &gap.connection.map(|c| c as i32),
                &(gap.from_ms as f64),
                &(gap.to_ms as f64),
                &gap.reason,
                &gap.asset_ids,
            ],
        );
        match inserted {
            Ok(_) => {
                self.health.gap_recorded();
                Ok(())
            }
            Err(e) => {
                let e = crate::Error::from(e);
                self.health.db_error();
                if e.is_transient() {
                    self.client = None;
                }
                Err(e)
            }
        }
    }

    /// Drops the connection (after a failure), so the next call reconnects.
    pub(crate) fn disconnect(&mut self) {
        self.client = None;
    }

    /// One attempt at one batch, in one transaction. Returns how many rows were new.
    ///
    /// A trade the compact tape cannot hold exactly (a hash that is not whole bytes of hex,
    /// a fee outside `smallint`) is refused as a class-22 error, so [`TradeWriter::commit`]
    /// isolates it into `trades_rejected`, never stores it changed.
    pub fn write(&mut self, batch: &[Trade]) -> Result<u64> {
        let mut buf = std::mem::take(&mut self.buf);
        // The usual batch (every token known, every trade in the last known month) is
        // encoded in one pass: one lookup and one check of each trade. Otherwise the keys
        // are made first and the batch encoded again.
        let mut encoded = self.encode(&mut buf, batch, false);
        if encoded == Encoded::NeedsKeys {
            encoded = match self.prepare(batch) {
                Ok(()) => self.encode(&mut buf, batch, true),
                Err(e) => {
                    self.buf = buf;
                    return Err(e);
                }
            };
        }
        let result = match encoded {
            Encoded::Rows => self.copy_and_move(&buf),
            Encoded::Refused(i) => {
                let t = &batch[i];
                Err(crate::Error::refused(
                    "22023",
                    format!(
                        "the compact tape cannot hold this trade exactly (hash {:?}, fee {:?})",
                        t.transaction_hash, t.fee_rate_bps
                    ),
                ))
            }
            // Cannot happen (`prepare` made every key); refuse rather than guess.
            Encoded::NeedsKeys => Err(crate::Error::data(
                "a token of the batch has no id, or a month no partition, after their insert",
            )),
        };
        self.buf = buf;
        if result.is_ok() && self.bars {
            self.mark_bars(batch);
        }
        result
    }

    /// Encodes `batch` as COPY rows into `buf`, if every token has its id cached, every
    /// trade falls in the last known month (its partition made; `months_made`: every month
    /// of the batch has its partition) and fits the tape.
    fn encode(&self, buf: &mut Vec<u8>, batch: &[Trade], months_made: bool) -> Encoded {
        buf.clear();
        let source = self.source.code();
        let (from, to) = self.known_month_ms;
        let binary = matches!(self.format, CopyFormat::Binary);
        if binary {
            buf.extend_from_slice(BINARY_HEADER);
        }
        for (i, t) in batch.iter().enumerate() {
            let token = match self.tokens.get(t.asset_id.as_str()) {
                Some(&id) if months_made || (from..to).contains(&t.timestamp_ms) => id,
                _ => return Encoded::NeedsKeys,
            };
            let fits = if binary {
                encode_binary_row(buf, t, token, source)
            } else {
                fits_the_tape(t) && {
                    encode_row(buf, t, token, source);
                    true
                }
            };
            if !fits {
                return Encoded::Refused(i);
            }
        }
        if binary {
            buf.extend_from_slice(&(-1i16).to_be_bytes());
        }
        Encoded::Rows
    }

    /// Makes sure every token of `batch` has its id cached and every month its partition.
    fn prepare(&mut self, batch: &[Trade]) -> Result<()> {
        self.prepare_keys(
            batch
                .iter()
                .map(|t| (t.asset_id.as_str(), t.market.as_str(), t.timestamp_ms)),
        )
    }

    /// Makes sure every token named has its id cached and every month its partition (a key
    /// is a token, its market and a time in the month). New tokens are committed here, on
    /// their own: an id in the cache always exists, even when the batch's own transaction
    /// rolls back.
    pub(crate) fn prepare_keys<'a>(
        &mut self,
        keys: impl Iterator<Item = (&'a str, &'a str, i64)> + Clone,
    ) -> Result<()> {
        // The usual batch: every token known, every trade in the last known month.
        let (from, to) = self.known_month_ms;
        if keys
            .clone()
            .all(|(a, _, ms)| (from..to).contains(&ms) && self.tokens.contains_key(a))
        {
            return Ok(());
        }
        let month_of = |ms| {
            crate::store::tape::month_index(
                chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default(),
            )
        };
        let mut months: Vec<i32> = keys
            .clone()
            .map(|(_, _, ms)| month_of(ms))
            .filter(|m| !self.months.contains(m))
            .collect();
        months.sort_unstable();
        months.dedup();
        let mut assets: Vec<&str> = Vec::new();
        let mut markets: Vec<&str> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for (asset, market, _) in keys.clone() {
            if !self.tokens.contains_key(asset) && seen.insert(asset) {
                assets.push(asset);
                markets.push(market);
            }
        }
        let last_month = keys.clone().last().map(|(_, _, ms)| month_of(ms));
        if months.is_empty() && assets.is_empty() {
            self.known_month_ms = last_month.map_or((0, 0), month_bounds_ms);
            return Ok(());
        }
        let client = self.client()?;
        for &m in &months {
            crate::store::tape::ensure_month(client, m)?;
        }
        let mut found = Vec::new();
        if !assets.is_empty() {
            client.execute(
                "INSERT INTO tokens (asset_id, market, outcome)
                 SELECT u.a, u.m, k.outcomes[array_position(k.token_ids, u.a)]
                 FROM unnest($1::text[], $2::text[]) AS u(a, m)
                 LEFT JOIN markets k ON k.condition_id = u.m
                 ON CONFLICT (asset_id) DO NOTHING",
                &[&assets, &markets],
            )?;
            for row in client.query(
                "SELECT asset_id, id FROM tokens WHERE asset_id = ANY($1)",
                &[&assets],
            )? {
                found.push((row.try_get::<_, String>(0)?, row.try_get::<_, i32>(1)?));
            }
        }
        self.months.extend(months);
        self.tokens.extend(found);
        // Every month of the batch is known now: keep the last trade's.
        self.known_month_ms = last_month.map_or((0, 0), month_bounds_ms);
        match keys.clone().find(|(a, _, _)| !self.tokens.contains_key(*a)) {
            // Cannot happen (the insert above made every one); refuse rather than guess.
            Some((a, _, _)) => Err(crate::Error::data(format!(
                "token {a} has no id after its insert"
            ))),
            None => Ok(()),
        }
    }

    /// The cached id of a token [`Self::prepare_keys`] made sure of.
    pub(crate) fn token_id(&self, asset_id: &str) -> Option<i32> {
        self.tokens.get(asset_id).copied()
    }

    /// The counters this writer reports to.
    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    /// The open connection (for the other tables the writer stores).
    pub(crate) fn connection(&mut self) -> Result<&mut Client> {
        self.client()
    }

    fn copy_and_move(&mut self, rows: &[u8]) -> Result<u64> {
        if self.staging_only {
            return self.copy_staged(rows);
        }
        match self.copy_direct(rows) {
            Err(e) if e.code() == Some(UNIQUE_VIOLATION) => {
                log::debug!("writer: batch holds stored trades; deduplicating through staging");
                self.copy_staged(rows)
            }
            other => other,
        }
    }

    /// The fast path: every row is new, so COPY straight into `trade_tape`.
    fn copy_direct(&mut self, rows: &[u8]) -> Result<u64> {
        let option = self.format.option();
        let client = self.client()?;
        let mut tx = client.transaction()?;
        let mut copy = tx.copy_in(&format!("COPY trade_tape ({COLUMNS}) FROM STDIN{option}"))?;
        copy.write_all(rows)?;
        let n = copy.finish()?;
        tx.commit()?;
        Ok(n)
    }

    /// The idempotent path: COPY into staging, then insert what is not stored yet.
    fn copy_staged(&mut self, rows: &[u8]) -> Result<u64> {
        let option = self.format.option();
        let client = self.client()?;
        let mut tx = client.transaction()?;
        // Made on the first slow path of a connection only: a role without TEMP on the
        // database can still write every batch that holds no stored trade.
        tx.batch_execute(CREATE_STAGING)?;
        let mut copy = tx.copy_in(&format!(
            "COPY trades_staging ({COLUMNS}) FROM STDIN{option}"
        ))?;
        copy.write_all(rows)?;
        copy.finish()?;
        let inserted = tx.execute(
            &format!(
                "INSERT INTO trade_tape ({COLUMNS}) SELECT {COLUMNS} FROM trades_staging \
                 ON CONFLICT DO NOTHING"
            ),
            &[],
        )?;
        tx.commit()?;
        Ok(inserted)
    }
}

impl CopyFormat {
    fn option(self) -> &'static str {
        match self {
            CopyFormat::Binary => " (FORMAT binary)",
            CopyFormat::Text => "",
        }
    }
}

/// The binary COPY signature, flags and header-extension length.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// Whether `t` can be stored in `trade_tape` exactly: its hash whole bytes of hex, its fee a
/// `smallint`.
fn fits_the_tape(t: &Trade) -> bool {
    t.transaction_hash
        .as_deref()
        .is_none_or(|h| hex_digits(h).is_some())
        && t.fee_rate_bps.is_none_or(|f| i16::try_from(f).is_ok())
}

/// The digits of `0x` and an even number of hex digits (whole bytes), or `None`.
fn hex_digits(h: &str) -> Option<&[u8]> {
    let digits = h.strip_prefix("0x")?.as_bytes();
    (digits.len() % 2 == 0 && digits.iter().all(u8::is_ascii_hexdigit)).then_some(digits)
}

/// The bytes of a `0x…` transaction hash as `trade_tape.tx` holds them, if it is hex.
pub(crate) fn hash_bytes(h: &str) -> Option<Vec<u8>> {
    let digits = hex_digits(h)?;
    let mut bytes = Vec::with_capacity(digits.len() / 2);
    push_hex_bytes(&mut bytes, digits);
    Some(bytes)
}

/// Appends the bytes of hex `digits` (checked by [`hex_digits`]) to `buf`, with no
/// allocation: this runs for every trade.
fn push_hex_bytes(buf: &mut Vec<u8>, digits: &[u8]) {
    let nibble = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
    buf.extend(digits.chunks(2).map(|p| (nibble(p[0]) << 4) | nibble(p[1])));
}

/// What [`TradeWriter::encode`] made of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoded {
    /// Every row, in the buffer.
    Rows,
    /// A token without its cached id, or a trade outside the last known month.
    NeedsKeys,
    /// The trade at this index does not fit the tape ([`fits_the_tape`]).
    Refused(usize),
}

/// One binary COPY row of `trade_tape` (see `COLUMNS`): a field count, then each field as a
/// length and its bytes (-1: NULL). False, with part of a row written, when `t` does not
/// fit the tape ([`fits_the_tape`]: its hash and fee are checked here, once).
fn encode_binary_row(buf: &mut Vec<u8>, t: &Trade, token: i32, source: u8) -> bool {
    let hash = match t.transaction_hash.as_deref().map(hex_digits) {
        Some(None) => return false,
        Some(Some(digits)) => Some(digits),
        None => None,
    };
    let fee = match t.fee_rate_bps.map(i16::try_from) {
        Some(Err(_)) => return false,
        Some(Ok(f)) => Some(f),
        None => None,
    };
    buf.extend_from_slice(&9i16.to_be_bytes());
    binary_timestamp(buf, t.timestamp_ms.saturating_mul(1000));
    binary_timestamp(buf, t.received_at_us);
    buf.extend_from_slice(&4i32.to_be_bytes());
    buf.extend_from_slice(&token.to_be_bytes());
    match fee {
        Some(f) => {
            buf.extend_from_slice(&2i32.to_be_bytes());
            buf.extend_from_slice(&f.to_be_bytes());
        }
        None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    buf.extend_from_slice(&1i32.to_be_bytes());
    buf.push(u8::from(t.side == crate::feed::Side::Buy));
    buf.extend_from_slice(&1i32.to_be_bytes());
    buf.push(source);
    binary_numeric(buf, t.price.as_str());
    binary_numeric(buf, t.size.as_str());
    match hash {
        Some(digits) => {
            buf.extend_from_slice(&((digits.len() / 2) as i32).to_be_bytes());
            push_hex_bytes(buf, digits);
        }
        None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    true
}

fn binary_timestamp(buf: &mut Vec<u8>, unix_us: i64) {
    buf.extend_from_slice(&8i32.to_be_bytes());
    buf.extend_from_slice(&unix_us.saturating_sub(PG_EPOCH_US).to_be_bytes());
}

/// A non-negative decimal in PostgreSQL's binary `numeric`: base-10000 digits aligned on the
/// decimal point, a weight (the power of 10000 of the first digit), and the display scale
/// (digits after the point, so `0.480` comes back as `0.480`). The server strips leading and
/// trailing zero digits itself. `text` is a validated [`crate::feed::Decimal`]: ASCII digits
/// with at most one point.
fn binary_numeric(buf: &mut Vec<u8>, text: &str) {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let (int, frac) = (int.as_bytes(), frac.as_bytes());
    // Integer part: groups of four from the right, the first one possibly shorter.
    let first = int.len() % 4;
    let int_groups = int.len().div_ceil(4);
    let groups = int_groups + frac.len().div_ceil(4);
    buf.extend_from_slice(&((8 + 2 * groups) as i32).to_be_bytes());
    buf.extend_from_slice(&(groups as i16).to_be_bytes());
    buf.extend_from_slice(&(int_groups as i16 - 1).to_be_bytes()); // the weight
    buf.extend_from_slice(&0u16.to_be_bytes()); // positive
    buf.extend_from_slice(&(frac.len() as u16).to_be_bytes());
    if first > 0 {
        buf.extend_from_slice(&group(&int[..first]).to_be_bytes());
    }
    for chunk in int[first..].chunks(4) {
        buf.extend_from_slice(&group(chunk).to_be_bytes());
    }
    // Fraction: groups of four from the left, the last one padded with zeros.
    for chunk in frac.chunks(4) {
        let mut g = group(chunk);
        for _ in chunk.len()..4 {
            g *= 10;
        }
        buf.extend_from_slice(&g.to_be_bytes());
    }
}

/// The first and the next month's first millisecond (UTC) of month `m` (year · 12 + month
/// − 1); an empty range where the calendar has no such month.
fn month_bounds_ms(m: i32) -> (i64, i64) {
    let first = |m: i32| {
        crate::store::tape::month_start(m)
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp_millis())
    };
    match (first(m), first(m + 1)) {
        (Some(from), Some(to)) => (from, to),
        _ => (0, 0),
    }
}

/// Up to four ASCII digits as a number.
fn group(ascii: &[u8]) -> i16 {
    ascii
        .iter()
        .fold(0i16, |acc, b| acc * 10 + i16::from(b.wrapping_sub(b'0')))
}

/// One COPY text row of `trade_tape` (see `COLUMNS`). Every field was validated by the
/// parser to hold no tab, newline or backslash, so nothing needs escaping; the hash goes as
/// bytea's hex form (`\\x…`: the backslash itself escaped for COPY).
fn encode_row(buf: &mut Vec<u8>, t: &Trade, token: i32, source: u8) {
    write_timestamp(buf, chrono::DateTime::from_timestamp_millis(t.timestamp_ms));
    buf.push(b'\t');
    write_timestamp(
        buf,
        chrono::DateTime::from_timestamp_micros(t.received_at_us),
    );
    let _ = write!(buf, "\t{token}\t");
    match t.fee_rate_bps {
        Some(f) => {
            let _ = write!(buf, "{f}\t");
        }
        None => buf.extend_from_slice(b"\\N\t"),
    }
    let is_buy = if t.side == crate::feed::Side::Buy {
        "t"
    } else {
        "f"
    };
    let _ = write!(
        buf,
        "{is_buy}\t{}\t{}\t{}\t",
        source as char, t.price, t.size
    );
    match t
        .transaction_hash
        .as_deref()
        .and_then(|h| h.strip_prefix("0x"))
    {
        Some(hex) => {
            let _ = write!(buf, "\\\\x{}", hex.to_ascii_lowercase());
        }
        None => buf.extend_from_slice(b"\\N"),
    }
    buf.push(b'\n');
}

/// `2026-11-25 07:44:00.123+00`: exact, in UTC. The parser only lets through timestamps
/// between 2000 and 2100; one out of chrono's range is written as NULL, which the NOT NULL
/// column refuses, so the row is isolated and counted rather than stored wrong.
fn write_timestamp(buf: &mut Vec<u8>, t: Option<chrono::DateTime<chrono::Utc>>) {
    match t {
        Some(t) => {
            let _ = write!(buf, "{}+00", t.naive_utc());
        }
        None => buf.extend_from_slice(b"\\N"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_months_bounds_hold_exactly_its_trades() {
        // Every 7 hours and a millisecond either side of each bound, 1999 to 2031: a time
        // is inside its month's bounds and outside every other's.
        let month = |ms: i64| {
            crate::store::tape::month_index(
                chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default(),
            )
        };
        let mut ms = 915_148_800_000; // 1999-01-01
        while ms < 1_950_000_000_000 {
            let m = month(ms);
            let (from, to) = month_bounds_ms(m);
            assert!((from..to).contains(&ms), "{ms} in month {m}: {from}..{to}");
            assert_eq!(month(from), m);
            assert_eq!(month(to - 1), m);
            assert_eq!(month(to), m + 1);
            assert_eq!(month(from - 1), m - 1);
            ms += 7 * 3_600_000;
        }
    }
}
