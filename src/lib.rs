//! polytape records every trade on Polymarket into PostgreSQL, live, without losing any.
//!
//! The pipeline reads like the modules: [`feed`] (sockets to the market channel, frame
//! parsing) → one bounded channel → [`store`] (a single writer thread, batched idempotent
//! `COPY`). [`listener::Listener`] wires them together; [`health::Health`] counts what
//! happened; [`sim`] is a local Polymarket for tests and benchmarks.
//!
//! No async runtime: threads, channels and blocking I/O, so a program without one can embed
//! it.

pub mod config;
pub mod daemon;
pub mod error;
pub mod feed;
pub mod gamma;
pub mod health;
pub mod http;
pub mod listener;
pub mod resolution;
pub mod sim;
pub mod stop;
pub mod store;

pub use error::{Error, Result};
