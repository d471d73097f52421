//! The Polymarket side: wire types and one socket's life.

mod announcement;
pub(crate) mod connection;
pub(crate) mod event;
mod liveness;
mod protocol;
pub(crate) mod socket;

pub(crate) use announcement::Announcement;
#[cfg(feature = "bench")]
pub(crate) use announcement::announcements;
#[cfg(feature = "bench")]
pub use event::parse_frame;
pub use event::{Decimal, FrameSummary, Gap, Record, Side, Trade};
