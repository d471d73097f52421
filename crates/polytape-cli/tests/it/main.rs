//! The `polytape` command's integration tests: the real binary against a real PostgreSQL and
//! the simulator.

#[cfg(feature = "archive")]
mod book_tape;
mod chain;
mod daemon;
mod monitoring;
#[cfg(feature = "archive")]
mod tape;
