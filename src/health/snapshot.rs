//! The snapshot: a point-in-time copy of every counter, the daemon's `/health` body. Plain
//! data: [`super::Health::snapshot`] fills it, `prometheus.rs` renders it.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A connection's state, as the health snapshot shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Opening a socket.
    Connecting,
    /// Subscribed and reading.
    Connected,
    /// Waiting before the next try (or for tokens to hold).
    Backoff,
    /// Stopped for good.
    Stopped,
}

impl ConnectionState {
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => ConnectionState::Connecting,
            1 => ConnectionState::Connected,
            2 => ConnectionState::Backoff,
            _ => ConnectionState::Stopped,
        }
    }
}

/// A point-in-time copy of the live health counters, serialisable as the daemon's `/health` body.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthSnapshot {
    /// Trades parsed from the feed and queued for writing.
    pub trades_received: u64,
    /// Trades stored (new rows).
    pub trades_inserted: u64,
    /// Batches committed.
    pub batches_inserted: u64,
    /// Sockets connected now.
    pub connections_active: usize,
    /// Socket reconnections, over all connections.
    pub reconnections: u64,
    /// Trades waiting in the channel.
    pub queue_depth: u64,
    /// Event time of the newest trade received.
    pub last_trade_ts: Option<DateTime<Utc>>,
    /// When the last batch was committed.
    pub last_insert_ts: Option<DateTime<Utc>>,
    /// When a socket last reconnected.
    pub last_reconnect_ts: Option<DateTime<Utc>>,
    /// When the listener started.
    pub started_at: Option<DateTime<Utc>>,
    /// Data frames received.
    pub messages_received: u64,
    /// Malformed frames plus trades refused by validation.
    pub parse_errors: u64,
    /// Trade events refused by validation.
    pub invalid_trades: u64,
    /// Events of a type polytape does not know.
    pub unknown_events: u64,
    /// Frames of book events alone passed over unscanned, the book side being off (counted
    /// in `messages_received`; their grammar is not checked, as nothing reads them).
    pub frames_passed_over: u64,
    /// Frames over the size limit.
    pub oversized_frames: u64,
    /// Trades already stored, skipped by the natural key.
    pub duplicates_skipped: u64,
    /// Trades the database refused, isolated and skipped.
    pub rows_rejected: u64,
    /// Socket losses recorded in the `gaps` table.
    pub gaps_recorded: u64,
    /// Failed database writes (each retried or isolated).
    pub db_errors: u64,
    /// Total time connection threads spent waiting on a full channel, in milliseconds.
    pub send_blocked_ms: u64,
    /// Since when the writer has had no database connection, if it has none now.
    pub db_lost_since: Option<DateTime<Utc>>,
    /// A database failure only an operator can fix (a revoked grant, a dropped table, a
    /// read-only server), while it lasts; trades are spooled meanwhile.
    pub db_failure: Option<String>,
    /// What the book side cannot store (snapshots or bars the database refuses: a missing
    /// grant, a bad row), while it lasts. Trades are stored regardless; the refused rows are
    /// counted in `book_rows_refused` and dropped.
    pub book_failure: Option<String>,
    /// Trades written to the disk spool (the database away or behind).
    pub trades_spooled: u64,
    /// Trades replayed from the spool into the database.
    pub trades_replayed: u64,
    /// Trades that could be neither committed nor spooled before a stop's deadline (the
    /// spool full and the database away): lost, and said so in the log.
    pub trades_unkept: u64,
    /// Bytes in the spool now.
    pub spool_bytes: u64,
    /// Spool segment files now.
    pub spool_segments: u64,
    /// When the oldest record still in the spool was spooled.
    pub spool_oldest_ts: Option<DateTime<Utc>>,
    /// Trades per second replayed from the spool, over the last replay.
    pub spool_replay_rate: u64,
    /// Trades added from the Data API to fill holes.
    pub trades_backfilled: u64,
    /// Gaps filled from the Data API.
    pub gaps_filled: u64,
    /// Gaps not filled yet (as of the backfill's last round).
    pub gaps_open: u64,
    /// Where the oldest open gap starts.
    pub oldest_open_gap_ts: Option<DateTime<Utc>>,
    /// Data API failures (each gap stays open and is retried).
    pub data_api_errors: u64,
    /// Assets found stalled on a live socket by a reconciliation sweep, and subscribed afresh.
    pub stalls_repaired: u64,
    /// Connection threads that ended unexpectedly (a panic) and were started again.
    pub connections_restarted: u64,
    /// Helper threads (backfill, sessions, announcements) that panicked and were started
    /// again: should stay 0.
    pub threads_restarted: u64,
    /// Times this run found its `sessions` row closed by another instance (it lost its
    /// database connection long enough to be taken for crashed) and registered again.
    pub sessions_reregistered: u64,
    /// Sockets replaced make before break (planned, not a loss: no gap).
    pub sockets_recycled: u64,
    /// Spool records found unreadable (their segment's rest skipped, logged): should be 0.
    pub spool_corrupt_records: u64,
    /// Spool reads that failed on the device (EIO, say): retried, nothing skipped.
    pub spool_read_errors: u64,
    /// Data API rows the backfill could not use (skipped, logged).
    pub data_api_bad_rows: u64,
    /// The spool's limit (bytes).
    pub spool_max_bytes: u64,
    /// Receive to commit of the oldest trade of the last committed batch (seconds).
    pub commit_latency_seconds: f64,
    /// CPU seconds the process has used.
    pub process_cpu_seconds: f64,
    /// The process's resident memory (bytes).
    pub process_rss_bytes: u64,
    /// The book side (issue 18).
    #[serde(flatten)]
    pub books: super::BookHealth,
    /// The chain side (issue 27).
    #[serde(flatten)]
    pub chain: super::ChainHealth,
    /// Every connection's own status.
    pub connections: Vec<ConnectionSnapshot>,
}

impl HealthSnapshot {
    /// Why `/readyz` would answer 503 (`None`: ready): the database refuses every write for
    /// a reason an operator must fix, the writer has been without it for longer than
    /// `grace`, or no socket is connected.
    pub fn not_ready(&self, grace: std::time::Duration) -> Option<String> {
        let lost_for_ms = self
            .db_lost_since
            .map(|t| Utc::now().timestamp_millis() - t.timestamp_millis());
        if let Some(failure) = &self.db_failure {
            Some(format!(
                "the database refuses writes ({failure}); trades are spooled"
            ))
        } else if lost_for_ms.is_some_and(|ms| ms > grace.as_millis() as i64) {
            Some("the writer has lost the database".into())
        } else if self.connections_active == 0 {
            Some("no socket connected".into())
        } else {
            self.book_failure
                .as_ref()
                .map(|f| format!("the book side cannot store ({f}); trades are stored"))
        }
    }
}

/// One connection's status.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnectionSnapshot {
    /// The connection's id (stable for the listener's life).
    pub id: usize,
    /// Tokens it holds.
    pub tokens: u64,
    /// What it is doing.
    pub state: ConnectionState,
    /// When its last data frame arrived.
    pub last_message_ts: Option<DateTime<Utc>>,
    /// Its reconnections.
    pub reconnects: u64,
}
