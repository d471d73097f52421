//! polytape records every trade on Polymarket into PostgreSQL, live, without losing any.
//!
//! No async runtime: threads, channels and blocking I/O, so a program without one can embed
//! it. The `polytape` command (crate `polytape-cli`) is this library plus a command line,
//! signals and an HTTP health endpoint.
//!
//! # The pieces
//!
//! - [`Config`]: every tunable, with its default ([`config::defaults`]); valid by
//!   construction ([`Config::builder`]).
//! - [`store::connect`], [`store::migrate`]: the database and its schema.
//! - [`sync::sync_markets`]: Gamma's open listing ([`gamma::GammaClient`]) into the
//!   `markets` table; [`sync::open_token_groups`] is what to hold afterwards.
//! - [`Listener`]: one OS thread per socket of at most 500 tokens (both tokens of a market
//!   together), one bounded channel, one writer thread that `COPY`s batches idempotently into
//!   `trades`. A received trade is never dropped: a full channel makes the sockets wait.
//!   [`ListenerHandle`] stops it from any thread; [`HealthSnapshot`] says what it did.
//! - [`Trade`], [`Gap`], [`Decimal`]: what is stored. Prices and sizes stay exact decimal
//!   text from the wire to `numeric` columns; no float is ever involved.
//! - [`resolution`]: closed markets' winners, inferred strictly ([`resolution::infer_winner`]),
//!   recorded by a [`resolution::ResolutionTracker`].
//! - [`Error`]: opaque, with [`Error::kind`] and [`Error::is_transient`].
//!
//! # Embedding the listener
//!
//! ```no_run
//! use polytape::{Config, Listener};
//! use polytape::gamma::GammaClient;
//!
//! # fn main() -> polytape::Result<()> {
//! let config = Config::builder()
//!     .database_url("postgres://postgres@127.0.0.1:5432/tape")
//!     .build()?;
//! polytape::store::migrate(&config)?;
//! // The open markets, from Gamma into the `markets` table.
//! let mut db = polytape::store::connect(&config)?;
//! polytape::sync::sync_markets(&mut db, &GammaClient::new(&config))?;
//!
//! let listener = Listener::from_database(config)?;
//! let handle = listener.handle(); // cloneable: stop() from any thread
//! let worker = std::thread::spawn(move || listener.run());
//! std::thread::sleep(std::time::Duration::from_secs(60));
//! // Closes every socket, writes every received trade, returns the final health.
//! let health = handle.stop();
//! println!("{} trades stored", health.trades_inserted);
//! let _ = worker.join();
//! # Ok(())
//! # }
//! ```
//!
//! # Chunking
//!
//! Both tokens of a market always share a socket, and no socket holds more than
//! `max_tokens_per_conn`:
//!
//! ```
//! use polytape::plan_chunks;
//!
//! let markets = vec![
//!     vec!["a-yes".to_string(), "a-no".to_string()],
//!     vec!["b-yes".to_string(), "b-no".to_string()],
//!     vec!["c-yes".to_string(), "c-no".to_string()],
//! ];
//! let chunks = plan_chunks(&markets, 4);
//! assert_eq!(chunks.len(), 2);
//! assert_eq!(chunks[1], vec!["c-yes", "c-no"]);
//! ```
//!
//! # Exact numbers
//!
//! ```
//! use polytape::Decimal;
//!
//! assert_eq!(Decimal::parse(".48").map(|d| d.to_string()), Some("0.48".to_string()));
//! assert!(Decimal::parse("1e3").is_none());
//! ```
//!
//! # Passwords
//!
//! A connection string is logged only through [`store::redact`]:
//!
//! ```
//! assert_eq!(
//!     polytape::store::redact("postgres://u:secret@db/tape?password=secret"),
//!     "postgres://u:***@db/tape?password=***"
//! );
//! ```

// Every public item is documented; the `bench` hooks are for our own programs only.
#![cfg_attr(not(feature = "bench"), warn(missing_docs))]
#![forbid(unsafe_code)]

pub mod backfill;
mod backoff;
pub mod book;
pub mod chain;
pub mod config;
mod connstr;
mod data_api;
mod error;
mod feed;
pub mod gamma;
mod health;
mod http;
mod listener;
pub mod prices;
pub mod resolution;
mod spool;
mod stop;
pub mod store;
mod supervise;
pub mod sync;
mod tls;
mod writer;

pub use config::{Config, ConfigBuilder};
pub use error::{Error, ErrorKind, Result};
pub use feed::{Decimal, Gap, Side, Trade};
pub use health::{ConnectionSnapshot, ConnectionState, HealthSnapshot};
pub use listener::{Listener, ListenerHandle, plan_chunks};
pub use stop::StopSignal;

/// Hooks for polytape's own benchmarks, integration tests and fuzz targets (the `bench`
/// feature): the writer on its own, the frame parser, the live health counters, market rows
/// loaded directly, the decoders of what Gamma and the Data API send. Not a stable API.
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench {
    pub use crate::feed::{FrameSummary, Record, parse_frame};
    pub use crate::health::{FrameCounts, Health, Latencies, now_ms};
    pub use crate::spool::{SpoolRun, round_trip as spool_round_trip};
    pub use crate::store::markets::{MarketRow, active_token_groups, upsert_markets};
    pub use crate::store::trades::{CopyFormat, TradeWriter};

    /// Decodes a Gamma `/markets/keyset` body as the sync does, every market through to its
    /// table row; returns (usable rows, markets skipped). For the fuzzer: must not panic.
    pub fn decode_gamma_page(body: &str) -> Option<(usize, usize)> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        let page = crate::gamma::decode_page(&v)?;
        let rows = page.markets.iter().filter_map(|m| m.to_row().ok()).count();
        for m in &page.markets {
            let _ = crate::resolution::infer_winner(m);
        }
        Some((rows, page.markets.len() - rows + page.unreadable))
    }

    /// Decodes a Data API `/trades` body as the backfill does; returns (usable trades, rows
    /// skipped). For the fuzzer: must not panic.
    pub fn decode_data_api_trades(body: &str) -> Option<(usize, u64)> {
        let (trades, bad) = crate::data_api::decode_trades(body).ok()?;
        Some((trades.len(), bad))
    }

    /// Stores live price bars through the writer's statement (for the tests of its merge).
    pub fn write_bars(
        writer: &mut crate::store::trades::TradeWriter,
        bars: &[crate::prices::PriceBar],
    ) -> crate::Result<()> {
        writer.write_bars(bars)
    }

    /// Applies the migrations up to `last` only (a test of a later migration starts there).
    pub fn migrate_up_to(config: &crate::Config, last: i32) -> crate::Result<usize> {
        crate::store::migrate_up_to(config, last)
    }

    /// The one scan of a frame: each event's type (its `Debug` name) and text, or why the
    /// frame is refused (for the fuzzer's comparison with serde_json).
    pub fn scan_frame(frame: &str) -> Result<Vec<(String, &str)>, String> {
        let mut events = Vec::new();
        crate::feed::scan::scan(frame, &mut events).map_err(|e| e.to_string())?;
        Ok(events
            .iter()
            .map(|s| (format!("{:?}", s.kind), s.text(frame)))
            .collect())
    }

    /// Whether a connection with the book side off passes `frame` over unscanned.
    pub fn book_events_only(frame: &str) -> bool {
        crate::feed::scan::book_events_only(frame)
    }

    /// A frame read both ways, as `Debug` texts of what was found: scanned, then its book
    /// events read from their spans; and in the one pass that reads them as it goes (for the
    /// fuzzer: the two must agree).
    pub fn frame_read_both_ways(frame: &str) -> (String, String) {
        let mut events = Vec::new();
        let by_scan = crate::feed::scan::scan(frame, &mut events).map_err(|e| e.to_string());
        let scanned = match by_scan {
            Ok(()) => format!(
                "{events:?} {:?}",
                crate::book::book_events_in(frame, &events)
            ),
            Err(e) => e,
        };
        let mut read = crate::book::ReadAlready::default();
        let by_pass = crate::book::scan_reading_books(frame, &mut events, &mut read);
        let passed = match by_pass {
            Ok(()) => format!(
                "{events:?} {:?}",
                crate::book::book_events_read(frame, &events, read)
            ),
            Err(e) => e.to_string(),
        };
        (scanned, passed)
    }

    /// A frame read as a connection with the book side on reads it: one scan, its trades
    /// (appended to `trades`) and its book events; returns how many book events.
    pub fn read_frame_with_books(frame: &str, trades: &mut Vec<crate::feed::Trade>) -> usize {
        let mut events = Vec::new();
        let mut read = crate::book::ReadAlready::default();
        if crate::book::scan_reading_books(frame, &mut events, &mut read).is_err() {
            return 0;
        }
        crate::feed::event::read_trades(frame, &events, 0, trades);
        crate::book::book_events_read(frame, &events, read)
            .events
            .len()
    }

    /// One book event read by the book side's hand reader and by serde, as `Debug` texts
    /// (for the fuzzer: where the hand reader answers, it answers as serde).
    pub fn book_event_both_ways(event: &str) -> (Option<String>, Option<String>) {
        crate::book::events_read_both_ways(event)
    }

    /// The feed's market announcements in a frame (for the fuzzer).
    pub fn announcements(frame: &str) -> usize {
        crate::feed::announcements_in(frame).len()
    }
}
