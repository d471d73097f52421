//! Book snapshots into `book_snapshot` (migration V11), by the writer thread that stores the
//! trades: the same connection, token dictionary, month partitions, spool and failure
//! policy. A few hundred rows a batch at most (every changed book, every five minutes), so
//! one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING` a batch: idempotent on the
//! natural key (token, taken_at, source), which makes a replayed spool or two sockets
//! overlapping in a recycle one row.

use chrono::{DateTime, Utc};

use crate::book::{BookSnapshot, SnapshotSource, encode_levels};
use crate::error::{Error, Result};
use crate::store::trades::TradeWriter;

impl TradeWriter {
    /// Stores `books` in one transaction; rows already stored are left as they are.
    pub(crate) fn write_books(&mut self, books: &[BookSnapshot]) -> Result<()> {
        if books.is_empty() {
            return Ok(());
        }
        self.prepare_keys(
            books
                .iter()
                .map(|b| (b.asset_id.as_str(), b.market.as_str(), b.taken_at_ms)),
        )?;
        let time = |ms: i64| {
            DateTime::<Utc>::from_timestamp_millis(ms)
                .ok_or_else(|| Error::data(format!("book snapshot time {ms} is out of range")))
        };
        let mut taken = Vec::with_capacity(books.len());
        let mut blind: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(books.len());
        let mut tokens = Vec::with_capacity(books.len());
        let mut sources: Vec<i8> = Vec::with_capacity(books.len());
        let mut levels: Vec<Vec<u8>> = Vec::with_capacity(books.len());
        let mut unchecked: Vec<i32> = Vec::with_capacity(books.len());
        for b in books {
            taken.push(time(b.taken_at_ms)?);
            blind.push(b.blind_from_ms.map(time).transpose()?);
            tokens.push(self.token_id(&b.asset_id).ok_or_else(|| {
                Error::data(format!("token {} has no id after its insert", b.asset_id))
            })?);
            sources.push(match b.source {
                SnapshotSource::Feed => b'f' as i8,
                SnapshotSource::Rest => b'r' as i8,
            });
            let mut l = Vec::with_capacity(16 + 4 * (b.bids.len() + b.asks.len()));
            encode_levels(&b.bids, &b.asks, &mut l);
            levels.push(l);
            unchecked.push(i32::try_from(b.levels_unchecked).unwrap_or(i32::MAX));
        }
        let client = self.connection()?;
        let stored = client.execute(
            "INSERT INTO book_snapshot (taken_at, blind_from, token, source, levels,
                                        levels_unchecked)
             SELECT * FROM unnest($1::timestamptz[], $2::timestamptz[], $3::integer[],
                                  $4::\"char\"[], $5::bytea[], $6::integer[])
             ON CONFLICT DO NOTHING",
            &[&taken, &blind, &tokens, &sources, &levels, &unchecked],
        )?;
        self.health()
            .books()
            .snapshots_written
            .fetch_add(stored, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}
