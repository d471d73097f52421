//! What polytape's HTTP clients (Gamma, the Data API, the market channel's upgrade) share:
//! one retry loop and one `Retry-After` parser.

mod get;
mod retry_after;

pub(crate) use get::{RetryPolicy, agent, get_text};
pub(crate) use retry_after::retry_after;
