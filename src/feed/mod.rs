//! The Polymarket side: wire types and one socket's life.

pub mod connection;
pub mod event;

pub use event::{Decimal, FrameSummary, InvalidTrade, MalformedFrame, Side, Trade, parse_frame};
