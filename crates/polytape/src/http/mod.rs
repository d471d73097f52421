//! What polytape's HTTP clients (Gamma, and the market channel's upgrade) share.

mod retry_after;

pub(crate) use retry_after::retry_after;
