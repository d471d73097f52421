//! What polytape's HTTP clients (Gamma, the Data API, the market channel's upgrade) share:
//! one retry loop, one `Retry-After` parser, one request budget.

mod budget;
mod get;
mod retry_after;

pub(crate) use budget::Budget;
pub(crate) use get::{RetryPolicy, agent, get_text, get_text_or_absent, post_json_or_absent};
pub(crate) use retry_after::retry_after;
