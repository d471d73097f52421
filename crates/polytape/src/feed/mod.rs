//! The Polymarket side: wire types and one socket's life.

pub(crate) mod connection;
pub(crate) mod event;
mod liveness;
mod protocol;
pub(crate) mod socket;

#[cfg(feature = "bench")]
pub use event::parse_frame;
pub use event::{Decimal, FrameSummary, Gap, Record, Side, Trade};
pub(crate) use event::{is_identifier, json_events};
