//! The `polytape` command's integration tests: the real binary against a real PostgreSQL and
//! the simulator.

mod daemon;
#[cfg(feature = "archive")]
mod tape;
