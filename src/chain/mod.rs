//! Polygon's settlement record (issue 27): every fill settles as an `OrderFilled` log of one
//! of the exchanges. polytape reads them up to `finalized` ([`abi`] decodes them), proves its
//! tape equal to them per market and hour (`chain_checks`), adds the fills it lacks (source
//! `chain`), flags tape trades never settled (`chain_unsettled`), and loads a market's past
//! from them ([`history`]).
//!
//! - `rpc`: JSON-RPC over the shared HTTP client (retries, `Retry-After`, a request budget),
//!   block times cached and asked in batches, windows a provider refuses said as such.
//! - `reader`: the live reader's loop, cursor and windows.
//! - `verify`: the comparison with the tape, the additions and the per-hour counts.

pub mod abi;
mod history;
mod reader;
mod rpc;
mod verify;

pub use abi::{Fill, NotAFill, decode};
pub use history::{ChainLoad, history};
pub(crate) use reader::ChainReader;
pub use reader::catch_up;

/// The most logs a provider answers at once (past it: "more than 10,000 results").
const MAX_LOGS: usize = 10_000;
