//! Polygon's settlement record (issue 27, a first part): the exchanges' `OrderFilled` logs,
//! decoded. The chain reader (JSON-RPC `eth_getLogs` in block windows up to `finalized`,
//! its cursor and verification against the tape) builds on this module.

pub mod abi;

pub use abi::{Fill, NotAFill, decode};
