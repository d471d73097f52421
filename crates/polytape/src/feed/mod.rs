//! The Polymarket side: wire types and one socket's life.

pub mod connection;
pub mod event;

pub use event::{
    Decimal, FrameSummary, Gap, InvalidTrade, MalformedFrame, Record, Side, Trade, parse_frame,
};
