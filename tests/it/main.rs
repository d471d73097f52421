//! polytape's integration tests: one binary, real PostgreSQL, real sockets, the simulator.

mod support;

mod daemon;
mod db;
mod faults;
mod listener;
mod resolution;
mod sim;
mod tls;
mod writer;
