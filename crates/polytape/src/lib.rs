//! polytape records every trade on Polymarket into PostgreSQL, live, without losing any.
//!
//! The pipeline reads like the modules: [`feed`] (sockets to the market channel, frame
//! parsing) → one bounded channel → [`store`] (a single writer thread, batched idempotent
//! `COPY`). [`listener::Listener`] wires them together; [`health::Health`] counts what
//! happened; [`gamma`] fills the `markets` table; [`resolution`] records outcomes;
//! [`daemon`] is `polytape run`; [`sim`] is a local Polymarket for tests and benchmarks.
//!
//! No async runtime: threads, channels and blocking I/O, so a program without one can embed
//! it.
//!
//! # Embedding the listener
//!
//! ```no_run
//! use polytape::config::Config;
//! use polytape::listener::Listener;
//!
//! # fn main() -> polytape::Result<()> {
//! let config = Config {
//!     database_url: "postgres://postgres@127.0.0.1:5432/tape".into(),
//!     ..Config::default()
//! };
//! let mut db = polytape::store::connect(&config.database_url, config.statement_timeout)?;
//! polytape::store::migrate(&mut db)?;
//! // Every open market in the `markets` table (fill it with `polytape sync-markets`).
//! let listener = Listener::from_database(config)?;
//! let handle = listener.handle();
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
//! use polytape::listener::plan_chunks;
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
//! Prices and sizes stay decimal text from the wire to `numeric` columns; no float is ever
//! involved:
//!
//! ```
//! use polytape::feed::Decimal;
//!
//! assert_eq!(Decimal::parse(".48").map(|d| d.to_string()), Some("0.48".to_string()));
//! assert!(Decimal::parse("1e3").is_none());
//! ```

pub mod config;
pub mod error;
pub mod feed;
pub mod gamma;
pub mod health;
pub mod listener;
pub mod resolution;
pub mod stop;
pub mod store;

pub use error::{Error, Result};
