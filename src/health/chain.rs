//! The chain side's counters (issue 27): where the reader is against Polygon's head and
//! `finalized` block, and what reading the settlement record found.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// The live counters.
#[derive(Default)]
pub(crate) struct ChainStats {
    pub(crate) head: AtomicU64,
    pub(crate) finalized: AtomicU64,
    pub(crate) cursor: AtomicU64,
    pub(crate) fills_read: AtomicU64,
    pub(crate) fills_added: AtomicU64,
    pub(crate) unsettled: AtomicU64,
    pub(crate) mismatched: AtomicU64,
    pub(crate) rpc_errors: AtomicU64,
    pub(crate) rpc_requests: AtomicU64,
    pub(crate) logs_malformed: AtomicU64,
}

/// The chain side in a health snapshot (all zero when no Polygon endpoint is configured).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChainHealth {
    /// The newest block the endpoint reported.
    pub chain_head_block: u64,
    /// The newest `finalized` block (no reorg can reach it; nothing past it is read).
    pub chain_finalized_block: u64,
    /// Every block up to this one is read and stored.
    pub chain_cursor_block: u64,
    /// Taker legs read (each a fill, once) of the tokens polytape holds.
    pub chain_fills_read: u64,
    /// Fills the tape lacked, added from the chain (source `chain`).
    pub chain_fills_added: u64,
    /// Tape trades the chain never settled (flagged in `chain_unsettled`, never deleted).
    pub chain_unsettled: u64,
    /// (transaction, token) pairs whose shares or USDC differ between the tape and the chain.
    pub chain_mismatched: u64,
    /// JSON-RPC calls that failed (retried: the cursor stays where it is).
    pub chain_rpc_errors: u64,
    /// JSON-RPC requests made.
    pub chain_rpc_requests: u64,
    /// Logs of the exchanges that do not decode (counted, never guessed at).
    pub chain_logs_malformed: u64,
}

impl ChainStats {
    pub(crate) fn snapshot(&self) -> ChainHealth {
        ChainHealth {
            chain_head_block: self.head.load(Relaxed),
            chain_finalized_block: self.finalized.load(Relaxed),
            chain_cursor_block: self.cursor.load(Relaxed),
            chain_fills_read: self.fills_read.load(Relaxed),
            chain_fills_added: self.fills_added.load(Relaxed),
            chain_unsettled: self.unsettled.load(Relaxed),
            chain_mismatched: self.mismatched.load(Relaxed),
            chain_rpc_errors: self.rpc_errors.load(Relaxed),
            chain_rpc_requests: self.rpc_requests.load(Relaxed),
            chain_logs_malformed: self.logs_malformed.load(Relaxed),
        }
    }
}

impl ChainHealth {
    /// The `/metrics` lines: (name, kind, help, value).
    pub(crate) fn metrics(&self) -> [(&'static str, &'static str, &'static str, f64); 11] {
        [
            (
                "chain_head_block",
                "gauge",
                "The newest Polygon block the endpoint reported.",
                self.chain_head_block as f64,
            ),
            (
                "chain_finalized_block",
                "gauge",
                "The newest finalized Polygon block.",
                self.chain_finalized_block as f64,
            ),
            (
                "chain_cursor_block",
                "gauge",
                "Every block up to this one is read and stored.",
                self.chain_cursor_block as f64,
            ),
            (
                "chain_cursor_lag_blocks",
                "gauge",
                "Finalized blocks not read yet (0 with no chain side).",
                self.chain_finalized_block
                    .saturating_sub(self.chain_cursor_block) as f64,
            ),
            (
                "chain_fills_read_total",
                "counter",
                "Taker legs (fills) read from the chain.",
                self.chain_fills_read as f64,
            ),
            (
                "chain_fills_added_total",
                "counter",
                "Fills the tape lacked, added from the chain.",
                self.chain_fills_added as f64,
            ),
            (
                "chain_unsettled_total",
                "counter",
                "Tape trades the chain never settled (flagged).",
                self.chain_unsettled as f64,
            ),
            (
                "chain_mismatched_total",
                "counter",
                "Transaction-token pairs whose shares or USDC differ from the chain's.",
                self.chain_mismatched as f64,
            ),
            (
                "chain_rpc_errors_total",
                "counter",
                "Polygon JSON-RPC calls that failed (retried).",
                self.chain_rpc_errors as f64,
            ),
            (
                "chain_rpc_requests_total",
                "counter",
                "Polygon JSON-RPC requests made.",
                self.chain_rpc_requests as f64,
            ),
            (
                "chain_logs_malformed_total",
                "counter",
                "Exchange logs that do not decode.",
                self.chain_logs_malformed as f64,
            ),
        ]
    }
}
