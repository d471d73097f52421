//! The Polymarket side: wire types and one socket's life.

mod announcement;
pub(crate) mod connection;
mod decimal;
pub(crate) mod event;
mod liveness;
mod protocol;
pub(crate) mod scan;
pub(crate) mod socket;

pub(crate) use announcement::Announcement;
#[cfg(feature = "bench")]
pub(crate) use announcement::announcements_in;
pub use decimal::Decimal;
#[cfg(feature = "bench")]
pub use event::parse_frame;
pub use event::{FrameSummary, Gap, Record, Side, Trade};
