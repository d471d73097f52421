//! The book side's counters (issue 18): kept apart from the trade path's, shown in the same
//! snapshot (flattened into `/health`) and in `/metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// The live counters.
#[derive(Default)]
pub(crate) struct BookStats {
    pub(crate) events: AtomicU64,
    pub(crate) held: AtomicI64,
    pub(crate) desynced: AtomicU64,
    pub(crate) resnapshots: AtomicU64,
    pub(crate) snapshots_written: AtomicU64,
    pub(crate) snapshots_discarded: AtomicU64,
    pub(crate) false_alarms: AtomicU64,
    pub(crate) unchecked: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) tape_rows: AtomicU64,
    pub(crate) tape_bytes: AtomicU64,
    pub(crate) tape_files: AtomicU64,
    pub(crate) bars_written: AtomicU64,
    pub(crate) bars_filled: AtomicU64,
    pub(crate) bar_errors: AtomicU64,
    pub(crate) rows_refused: AtomicU64,
    pub(crate) unverified: AtomicU64,
    pub(crate) tape_rows_lost: AtomicU64,
    pub(crate) newest_bar_ms: AtomicI64,
}

/// The book side in a health snapshot.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BookHealth {
    /// Book events applied (`book`, each `price_change` entry, `tick_size_change`).
    pub book_events: u64,
    /// Token books held now (trusted or waiting for a fresh `book`).
    pub books_held: u64,
    /// Times a book was found wrong (its top disagreed with the exchange's, a delta came
    /// before any snapshot, or a fresh `book` differed from it) and marked desynced.
    pub books_desynced: u64,
    /// Fresh books that ended a desync or a socket loss.
    pub book_resnapshots: u64,
    /// Snapshot rows committed to `book_snapshot`.
    pub book_snapshots_written: u64,
    /// Periodic snapshots not stored because the book they were cut from turned out wrong
    /// before a fresh `book` could vouch for it.
    pub book_snapshots_discarded: u64,
    /// Desyncs that were false alarms: the fresh book equalled the book rebuilt from the
    /// deltas, so nothing was lost and no blind window is recorded.
    pub book_false_alarms: u64,
    /// `price_change` entries without `best_bid`/`best_ask`: applied, not checked.
    pub book_entries_unchecked: u64,
    /// Book events or entries with a bad field, or stamped more than a minute past the
    /// clock (counted, left out).
    pub book_events_invalid: u64,
    /// Periodic cuts given up unvouched: waiting when their socket went (a loss, a recycle,
    /// a stop), asked for three times and never answered, or past the eight a token may
    /// have waiting. Never stored: a snapshot is stored only vouched for.
    pub book_snapshots_unverified: u64,
    /// Rows written to the book tape's segments.
    pub book_tape_rows: u64,
    /// Book tape rows lost: not written (a failed write; its period is recorded as failed in
    /// `book_files.write_error`) or dropped because the tape thread was behind (the sockets
    /// never wait for it; the tokens concerned are left out of the tape until their next
    /// fresh book).
    pub book_tape_rows_lost: u64,
    /// Bytes of finished Parquet book tape files.
    pub book_tape_bytes: u64,
    /// Parquet book tape files finished.
    pub book_tape_files: u64,
    /// Minute price bars stored from the live books (rows written or merged).
    pub price_bars_written: u64,
    /// Bars filled where the feed was blind (`/prices-history`, and trades the backfill added).
    pub price_bars_filled: u64,
    /// Batches of trades whose minutes' bars could not be written (the trades were).
    pub price_bar_errors: u64,
    /// Snapshot and bar rows the database refused for good (a missing grant, a bad row):
    /// dropped and counted, so they never hold up the trades behind them.
    pub book_rows_refused: u64,
    /// The minute of the newest live bar stored.
    pub newest_price_bar_ts: Option<chrono::DateTime<chrono::Utc>>,
}

impl BookStats {
    pub(crate) fn snapshot(&self) -> BookHealth {
        BookHealth {
            book_events: self.events.load(Relaxed),
            books_held: self.held.load(Relaxed).max(0) as u64,
            books_desynced: self.desynced.load(Relaxed),
            book_resnapshots: self.resnapshots.load(Relaxed),
            book_snapshots_written: self.snapshots_written.load(Relaxed),
            book_snapshots_discarded: self.snapshots_discarded.load(Relaxed),
            book_false_alarms: self.false_alarms.load(Relaxed),
            book_entries_unchecked: self.unchecked.load(Relaxed),
            book_events_invalid: self.invalid.load(Relaxed),
            book_snapshots_unverified: self.unverified.load(Relaxed),
            book_tape_rows: self.tape_rows.load(Relaxed),
            book_tape_rows_lost: self.tape_rows_lost.load(Relaxed),
            book_tape_bytes: self.tape_bytes.load(Relaxed),
            book_tape_files: self.tape_files.load(Relaxed),
            price_bars_written: self.bars_written.load(Relaxed),
            price_bars_filled: self.bars_filled.load(Relaxed),
            price_bar_errors: self.bar_errors.load(Relaxed),
            book_rows_refused: self.rows_refused.load(Relaxed),
            newest_price_bar_ts: match self.newest_bar_ms.load(Relaxed) {
                0 => None,
                ms => chrono::DateTime::from_timestamp_millis(ms),
            },
        }
    }
}

impl BookHealth {
    /// The `/metrics` lines: (name, kind, help, value).
    pub(crate) fn metrics(&self) -> [(&'static str, &'static str, &'static str, f64); 19] {
        [
            (
                "book_events_total",
                "counter",
                "Book events applied to the live books.",
                self.book_events as f64,
            ),
            (
                "books_held",
                "gauge",
                "Token books held now.",
                self.books_held as f64,
            ),
            (
                "books_desynced_total",
                "counter",
                "Books found wrong and marked desynced.",
                self.books_desynced as f64,
            ),
            (
                "book_resnapshots_total",
                "counter",
                "Fresh books that ended a desync or a socket loss.",
                self.book_resnapshots as f64,
            ),
            (
                "book_snapshots_written_total",
                "counter",
                "Book snapshot rows committed.",
                self.book_snapshots_written as f64,
            ),
            (
                "book_snapshots_discarded_total",
                "counter",
                "Periodic snapshots dropped: their book turned out wrong.",
                self.book_snapshots_discarded as f64,
            ),
            (
                "book_false_alarms_total",
                "counter",
                "Desyncs whose fresh book equalled the rebuilt one: nothing was lost.",
                self.book_false_alarms as f64,
            ),
            (
                "book_entries_unchecked_total",
                "counter",
                "price_change entries without a top of book: applied, not checked.",
                self.book_entries_unchecked as f64,
            ),
            (
                "book_events_invalid_total",
                "counter",
                "Book events or entries with a bad field (left out).",
                self.book_events_invalid as f64,
            ),
            (
                "book_snapshots_unverified_total",
                "counter",
                "Periodic cuts given up unvouched (socket gone, never answered, too many).",
                self.book_snapshots_unverified as f64,
            ),
            (
                "book_tape_rows_total",
                "counter",
                "Rows written to the Parquet book tape.",
                self.book_tape_rows as f64,
            ),
            (
                "book_tape_rows_lost_total",
                "counter",
                "Book tape rows lost (a failed write, or dropped while the tape was behind).",
                self.book_tape_rows_lost as f64,
            ),
            (
                "book_tape_bytes_total",
                "counter",
                "Bytes of finished Parquet book tape files.",
                self.book_tape_bytes as f64,
            ),
            (
                "book_tape_files_total",
                "counter",
                "Parquet book tape files finished.",
                self.book_tape_files as f64,
            ),
            (
                "price_bars_written_total",
                "counter",
                "Minute price bars stored from the live books.",
                self.price_bars_written as f64,
            ),
            (
                "price_bars_filled_total",
                "counter",
                "Minute price bars filled where the feed was blind.",
                self.price_bars_filled as f64,
            ),
            (
                "price_bar_errors_total",
                "counter",
                "Batches of trades whose minutes' bars could not be written (the trades were).",
                self.price_bar_errors as f64,
            ),
            (
                "book_rows_refused_total",
                "counter",
                "Snapshot and bar rows the database refused for good (dropped).",
                self.book_rows_refused as f64,
            ),
            (
                "price_bar_newest_age_seconds",
                "gauge",
                "Age of the newest live price bar's minute (0: none yet).",
                self.newest_price_bar_ts.map_or(0.0, |t| {
                    (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
                }),
            ),
        ]
    }
}
