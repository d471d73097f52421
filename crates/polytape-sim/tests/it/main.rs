//! polytape-sim's integration tests: real sockets and HTTP against a running simulator.

mod chain;
mod sim;
