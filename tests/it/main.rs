//! polytape's integration tests: one binary, real PostgreSQL, real sockets, the simulator.

mod books;
mod chain;
mod complete;
mod conformance;
mod db;
mod faults;
mod listener;
mod prices;
mod resolution;
mod spool;
mod tls;
mod writer;
