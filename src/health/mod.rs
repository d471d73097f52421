//! Health: what the listener and writer have done, as one snapshot.
//!
//! The data path touches only atomics: thirty-odd connection threads bumping a counter per
//! frame must not queue on one lock. The `parking_lot` mutex guards what changes on events
//! (the list of connections and the database's state), so a snapshot takes the lock once.
//!
//! This file holds the counters and what records them (a connection's status among them);
//! `snapshot.rs` the copy a reader gets, `prometheus.rs` its text for `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering::Relaxed};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

mod books;
mod chain;
mod process;
mod prometheus;
mod snapshot;

pub use self::books::BookHealth;
pub(crate) use self::books::BookStats;
pub use self::chain::ChainHealth;
pub(crate) use self::chain::ChainStats;

pub use self::snapshot::{ConnectionSnapshot, ConnectionState, HealthSnapshot};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn ts(ms: i64) -> Option<DateTime<Utc>> {
    if ms == 0 {
        None
    } else {
        DateTime::from_timestamp_millis(ms)
    }
}

/// Shared counters of one listener. Cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    trades_received: AtomicU64,
    trades_inserted: AtomicU64,
    batches_inserted: AtomicU64,
    messages_received: AtomicU64,
    parse_errors: AtomicU64,
    invalid_trades: AtomicU64,
    unknown_events: AtomicU64,
    frames_passed_over: AtomicU64,
    oversized_frames: AtomicU64,
    duplicates_skipped: AtomicU64,
    rows_rejected: AtomicU64,
    gaps_recorded: AtomicU64,
    db_errors: AtomicU64,
    reconnections: AtomicU64,
    send_blocked_us: AtomicU64,
    trades_spooled: AtomicU64,
    trades_replayed: AtomicU64,
    trades_unkept: AtomicU64,
    spool_bytes: AtomicU64,
    spool_max_bytes: AtomicU64,
    /// Receive to commit of the oldest trade of the last committed batch (µs).
    commit_latency_us: AtomicI64,
    spool_segments: AtomicU64,
    spool_oldest_ms: AtomicI64,
    spool_replay_rate: AtomicU64,
    /// Receive time of the newest trade the listener's writer made durable (committed or
    /// spooled), and of the oldest trade in the batch it is gathering (0: none).
    durable_us: AtomicI64,
    undurable_since_us: AtomicI64,
    trades_backfilled: AtomicU64,
    gaps_filled: AtomicU64,
    data_api_errors: AtomicU64,
    gaps_open: AtomicU64,
    oldest_open_gap_ms: AtomicI64,
    stalls_repaired: AtomicU64,
    connections_restarted: AtomicU64,
    sockets_recycled: AtomicU64,
    spool_corrupt_records: AtomicU64,
    spool_read_errors: AtomicU64,
    threads_restarted: AtomicU64,
    sessions_reregistered: AtomicU64,
    books: BookStats,
    chain: ChainStats,
    data_api_bad_rows: AtomicU64,
    queue_depth: AtomicI64,
    last_trade_ts: AtomicI64,
    last_insert_ts: AtomicI64,
    last_reconnect_ts: AtomicI64,
    started_at: AtomicI64,
    /// Whether `State::latencies` is kept: checked without the lock after every commit.
    recording_latencies: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    connections: Vec<Arc<ConnectionHealth>>,
    /// Per-trade latencies, kept only when asked for (benchmarks): see
    /// [`Health::record_latencies`].
    latencies: Option<Latencies>,
    /// Since when the writer has had no working database connection (0: it has one).
    db_lost_since: i64,
    /// The failure an operator must fix (a revoked grant, a dropped table), while it lasts.
    db_failure: Option<String>,
    /// What the book side cannot store (snapshots or bars refused), while it lasts.
    book_failure: Option<String>,
}

/// What a connection thread counted since it last published to [`Health`]: the data path
/// adds to these plain integers and publishes them every few dozen frames, so thirty-odd
/// threads do not bounce shared cache lines (or queue on a lock) once per frame.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameCounts {
    pub frames: u64,
    pub trades: u64,
    pub newest_trade_ms: i64,
    /// Trade events refused by validation.
    pub invalid_trades: u64,
    /// Events of a type polytape does not know.
    pub unknown_events: u64,
    pub malformed_frames: u64,
    pub passed_over: u64,
}

impl FrameCounts {
    pub fn add_frame(&mut self, summary: &crate::feed::FrameSummary) {
        self.frames += 1;
        self.invalid_trades += summary.invalid_trades as u64;
        self.unknown_events += summary.unknown_events as u64;
    }

    /// A frame of book events alone, passed over unscanned (the book side is off).
    pub fn add_passed_over(&mut self) {
        self.frames += 1;
        self.passed_over += 1;
    }

    pub fn add_malformed(&mut self) {
        self.frames += 1;
        self.malformed_frames += 1;
    }

    pub fn add_trades(&mut self, n: u64, newest_ms: i64) {
        self.trades += n;
        self.newest_trade_ms = self.newest_trade_ms.max(newest_ms);
    }

    pub fn is_empty(&self) -> bool {
        self.frames == 0 && self.trades == 0
    }
}

/// Per-trade latencies in microseconds (see [`Health::record_latencies`]).
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    /// Commit time − the time polytape read the frame.
    pub since_receive_us: Vec<u64>,
    /// Commit time − the event's own timestamp (the sim stamps it when it sends).
    pub since_event_us: Vec<u64>,
}

/// Live status of one connection, updated by its own thread without a lock.
pub(crate) struct ConnectionHealth {
    id: usize,
    tokens: AtomicU64,
    state: AtomicU8,
    last_message_ts: AtomicI64,
    reconnects: AtomicU64,
    health: Health,
}

impl ConnectionHealth {
    pub fn set_state(&self, state: ConnectionState) {
        // `connections_active` is derived from these states in `snapshot`, so it cannot drift.
        self.state.store(state as u8, Relaxed);
    }

    pub fn set_tokens(&self, n: usize) {
        self.tokens.store(n as u64, Relaxed);
    }

    pub fn message(&self, at_ms: i64) {
        self.last_message_ts.store(at_ms, Relaxed);
    }

    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Relaxed);
        let s = &self.health.shared;
        s.reconnections.fetch_add(1, Relaxed);
        s.last_reconnect_ts.store(now_ms(), Relaxed);
    }
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every counter now. Takes the lock once.
    pub fn snapshot(&self) -> HealthSnapshot {
        let s = &self.shared;
        let state = s.state.lock();
        let connections: Vec<ConnectionSnapshot> = state
            .connections
            .iter()
            .map(|c| ConnectionSnapshot {
                id: c.id,
                tokens: c.tokens.load(Relaxed),
                state: ConnectionState::from_u8(c.state.load(Relaxed)),
                last_message_ts: ts(c.last_message_ts.load(Relaxed)),
                reconnects: c.reconnects.load(Relaxed),
            })
            .collect();
        let db_lost_since = ts(state.db_lost_since);
        let db_failure = state.db_failure.clone();
        let book_failure = state.book_failure.clone();
        drop(state);
        HealthSnapshot {
            trades_received: s.trades_received.load(Relaxed),
            trades_inserted: s.trades_inserted.load(Relaxed),
            batches_inserted: s.batches_inserted.load(Relaxed),
            connections_active: connections
                .iter()
                .filter(|c| c.state == ConnectionState::Connected)
                .count(),
            reconnections: s.reconnections.load(Relaxed),
            queue_depth: s.queue_depth.load(Relaxed).max(0) as u64,
            last_trade_ts: ts(s.last_trade_ts.load(Relaxed)),
            last_insert_ts: ts(s.last_insert_ts.load(Relaxed)),
            last_reconnect_ts: ts(s.last_reconnect_ts.load(Relaxed)),
            started_at: ts(s.started_at.load(Relaxed)),
            messages_received: s.messages_received.load(Relaxed),
            parse_errors: s.parse_errors.load(Relaxed),
            invalid_trades: s.invalid_trades.load(Relaxed),
            unknown_events: s.unknown_events.load(Relaxed),
            frames_passed_over: s.frames_passed_over.load(Relaxed),
            oversized_frames: s.oversized_frames.load(Relaxed),
            duplicates_skipped: s.duplicates_skipped.load(Relaxed),
            rows_rejected: s.rows_rejected.load(Relaxed),
            gaps_recorded: s.gaps_recorded.load(Relaxed),
            db_errors: s.db_errors.load(Relaxed),
            send_blocked_ms: s.send_blocked_us.load(Relaxed) / 1000,
            db_lost_since,
            db_failure,
            book_failure,
            trades_spooled: s.trades_spooled.load(Relaxed),
            trades_replayed: s.trades_replayed.load(Relaxed),
            trades_unkept: s.trades_unkept.load(Relaxed),
            spool_bytes: s.spool_bytes.load(Relaxed),
            spool_max_bytes: s.spool_max_bytes.load(Relaxed),
            commit_latency_seconds: s.commit_latency_us.load(Relaxed) as f64 / 1e6,
            process_cpu_seconds: process::cpu_seconds(),
            process_rss_bytes: process::rss_bytes(),
            spool_segments: s.spool_segments.load(Relaxed),
            spool_oldest_ts: ts(s.spool_oldest_ms.load(Relaxed)),
            spool_replay_rate: s.spool_replay_rate.load(Relaxed),
            trades_backfilled: s.trades_backfilled.load(Relaxed),
            gaps_filled: s.gaps_filled.load(Relaxed),
            gaps_open: s.gaps_open.load(Relaxed),
            oldest_open_gap_ts: ts(s.oldest_open_gap_ms.load(Relaxed)),
            data_api_errors: s.data_api_errors.load(Relaxed),
            stalls_repaired: s.stalls_repaired.load(Relaxed),
            connections_restarted: s.connections_restarted.load(Relaxed),
            sockets_recycled: s.sockets_recycled.load(Relaxed),
            spool_corrupt_records: s.spool_corrupt_records.load(Relaxed),
            spool_read_errors: s.spool_read_errors.load(Relaxed),
            threads_restarted: s.threads_restarted.load(Relaxed),
            sessions_reregistered: s.sessions_reregistered.load(Relaxed),
            data_api_bad_rows: s.data_api_bad_rows.load(Relaxed),
            books: s.books.snapshot(),
            chain: s.chain.snapshot(),
            connections,
        }
    }

    /// The book side's counters.
    pub(crate) fn books(&self) -> &BookStats {
        &self.shared.books
    }

    /// The chain side's counters.
    pub(crate) fn chain(&self) -> &ChainStats {
        &self.shared.chain
    }

    /// Registers a connection; its status appears in every later snapshot.
    pub(crate) fn add_connection(&self, id: usize, tokens: usize) -> Arc<ConnectionHealth> {
        // A connection restarted under the same id replaces the old entry.
        self.shared.state.lock().connections.retain(|c| c.id != id);
        let c = Arc::new(ConnectionHealth {
            id,
            tokens: AtomicU64::new(tokens as u64),
            state: AtomicU8::new(ConnectionState::Connecting as u8),
            last_message_ts: AtomicI64::new(0),
            reconnects: AtomicU64::new(0),
            health: self.clone(),
        });
        self.shared.state.lock().connections.push(Arc::clone(&c));
        c
    }

    pub(crate) fn mark_started(&self) {
        self.shared.started_at.store(now_ms(), Relaxed);
    }

    /// Adds a connection thread's local counts, and empties them.
    pub fn publish(&self, counts: &mut FrameCounts) {
        let c = std::mem::take(counts);
        let s = &self.shared;
        if c.frames > 0 {
            s.messages_received.fetch_add(c.frames, Relaxed);
        }
        let errors = c.invalid_trades + c.malformed_frames;
        if errors > 0 {
            s.parse_errors.fetch_add(errors, Relaxed);
        }
        if c.invalid_trades > 0 {
            s.invalid_trades.fetch_add(c.invalid_trades, Relaxed);
        }
        if c.unknown_events > 0 {
            s.unknown_events.fetch_add(c.unknown_events, Relaxed);
        }
        if c.passed_over > 0 {
            s.frames_passed_over.fetch_add(c.passed_over, Relaxed);
        }
        if c.trades > 0 {
            self.trades_queued(c.trades, c.newest_trade_ms);
        }
    }

    /// Counts one data frame at once (for callers that do not batch; connection threads use
    /// [`FrameCounts`] and [`Health::publish`]).
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    pub fn frame(&self, summary: &crate::feed::FrameSummary) {
        let s = &self.shared;
        s.messages_received.fetch_add(1, Relaxed);
        if summary.invalid_trades > 0 {
            s.invalid_trades
                .fetch_add(summary.invalid_trades as u64, Relaxed);
            s.parse_errors
                .fetch_add(summary.invalid_trades as u64, Relaxed);
        }
        if summary.unknown_events > 0 {
            s.unknown_events
                .fetch_add(summary.unknown_events as u64, Relaxed);
        }
    }

    pub(crate) fn oversized_frame(&self) {
        self.shared.oversized_frames.fetch_add(1, Relaxed);
        self.shared.parse_errors.fetch_add(1, Relaxed);
    }

    /// `n` trades of one frame were handed to the channel, the newest stamped `newest_ms`
    /// (called by connection threads once per frame with trades, not once per trade).
    pub fn trades_queued(&self, n: u64, newest_ms: i64) {
        let s = &self.shared;
        s.trades_received.fetch_add(n, Relaxed);
        s.queue_depth.fetch_add(n as i64, Relaxed);
        // A plain load first: most frames are not newer than what another thread stored, and
        // a load of a shared line costs far less than a read-modify-write on it.
        if newest_ms > s.last_trade_ts.load(Relaxed) {
            s.last_trade_ts.fetch_max(newest_ms, Relaxed);
        }
    }

    pub(crate) fn send_blocked(&self, micros: u64) {
        self.shared.send_blocked_us.fetch_add(micros, Relaxed);
    }

    /// The writer took `n` trades off the channel.
    pub(crate) fn dequeued(&self, n: usize) {
        self.shared.queue_depth.fetch_sub(n as i64, Relaxed);
    }

    pub(crate) fn batch_inserted(&self, inserted: u64, duplicates: u64) {
        let s = &self.shared;
        s.trades_inserted.fetch_add(inserted, Relaxed);
        s.duplicates_skipped.fetch_add(duplicates, Relaxed);
        s.batches_inserted.fetch_add(1, Relaxed);
        s.last_insert_ts.store(now_ms(), Relaxed);
    }

    /// Starts keeping, for every stored trade, (commit − receive) and (commit − event time).
    /// One lock per batch, none per frame; memory grows with the trades, so this is for
    /// benchmarks and tests, not for a daemon.
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    pub fn record_latencies(&self) {
        self.shared.state.lock().latencies = Some(Latencies::default());
        self.shared.recording_latencies.store(true, Relaxed);
    }

    /// The latencies kept since [`Health::record_latencies`], emptied.
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    pub fn take_latencies(&self) -> Latencies {
        let mut state = self.shared.state.lock();
        match state.latencies.as_mut() {
            Some(l) => std::mem::take(l),
            None => Latencies::default(),
        }
    }

    /// When the newest trade committed so far was received (Unix µs; 0: none yet).
    /// The listener's writer took a batch off the channel; its oldest trade was received
    /// at `oldest_us`. Called before the batch leaves the queue's count, so a trade is always
    /// either queued or in a batch or durable.
    pub(crate) fn batch_taken(&self, oldest_us: i64) {
        self.shared.undurable_since_us.store(oldest_us, Relaxed);
    }

    /// The batch is committed or spooled: durable up to its newest trade.
    pub(crate) fn batch_durable(&self, newest_us: i64) {
        self.shared.durable_us.fetch_max(newest_us, Relaxed);
        self.shared.undurable_since_us.store(0, Relaxed);
    }

    /// The receive time from which a crash now would lose trades (Unix µs): the oldest trade
    /// in the batch being gathered, or, with trades waiting in the channel, the newest trade
    /// made durable (the channel is filled in arrival order, give or take the interleaving of
    /// sockets, which the caller's slack covers). `None`: nothing received is at risk.
    pub(crate) fn at_risk_since_us(&self) -> Option<i64> {
        let s = &self.shared;
        let batch = s.undurable_since_us.load(Relaxed);
        if batch > 0 {
            return Some(batch);
        }
        // Nothing made durable yet: nothing was received before the start either.
        let floor = s.started_at.load(Relaxed) * 1000;
        (s.queue_depth.load(Relaxed) > 0).then(|| s.durable_us.load(Relaxed).max(floor).max(1))
    }

    /// The spool's limit, for `/metrics` (an alert on how full it is).
    pub(crate) fn set_spool_max_bytes(&self, bytes: u64) {
        self.shared.spool_max_bytes.store(bytes, Relaxed);
    }

    /// Called by a trade writer after a commit (the batch's latency; every trade's, when
    /// recorded).
    pub(crate) fn committed(&self, trades: &[crate::feed::Trade]) {
        if let Some(oldest) = trades.iter().map(|t| t.received_at_us).min() {
            self.shared
                .commit_latency_us
                .store((now_us() - oldest).max(0), Relaxed);
        }
        if !self.shared.recording_latencies.load(Relaxed) {
            return;
        }
        let mut state = self.shared.state.lock();
        if let Some(l) = state.latencies.as_mut() {
            let now = now_us();
            for t in trades {
                l.since_receive_us
                    .push((now - t.received_at_us).max(0) as u64);
                l.since_event_us
                    .push((now - t.timestamp_ms * 1000).max(0) as u64);
            }
        }
    }

    pub(crate) fn gap_recorded(&self) {
        self.shared.gaps_recorded.fetch_add(1, Relaxed);
    }

    pub(crate) fn row_rejected(&self) {
        self.shared.rows_rejected.fetch_add(1, Relaxed);
    }

    pub(crate) fn db_error(&self) {
        self.shared.db_errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn spooled(&self, trades: u64) {
        self.shared.trades_spooled.fetch_add(trades, Relaxed);
    }

    pub(crate) fn replayed(&self, trades: u64) {
        self.shared.trades_replayed.fetch_add(trades, Relaxed);
    }

    pub(crate) fn unkept(&self, trades: u64) {
        self.shared.trades_unkept.fetch_add(trades, Relaxed);
    }

    /// The spool's size now, and when its oldest record was spooled (0: empty).
    pub(crate) fn spool_state(&self, bytes: u64, segments: usize, oldest_ms: i64, corrupt: u64) {
        let s = &self.shared;
        s.spool_corrupt_records.store(corrupt, Relaxed);
        s.spool_bytes.store(bytes, Relaxed);
        s.spool_segments.store(segments as u64, Relaxed);
        s.spool_oldest_ms.store(oldest_ms, Relaxed);
    }

    pub(crate) fn backfilled(&self, trades: u64) {
        self.shared.trades_backfilled.fetch_add(trades, Relaxed);
    }

    pub(crate) fn gap_filled(&self) {
        self.shared.gaps_filled.fetch_add(1, Relaxed);
    }

    /// The spool could not be read (an I/O error, retried; not corruption).
    pub(crate) fn spool_read_error(&self) {
        self.shared.spool_read_errors.fetch_add(1, Relaxed);
    }

    /// A supervised helper thread panicked and was started again.
    pub(crate) fn thread_restarted(&self) {
        self.shared.threads_restarted.fetch_add(1, Relaxed);
    }

    /// This run found its session row closed by another instance and registered again.
    pub(crate) fn session_reregistered(&self) {
        self.shared.sessions_reregistered.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_restarted(&self) {
        self.shared.connections_restarted.fetch_add(1, Relaxed);
    }

    /// The Data API client's count of unusable rows so far.
    pub(crate) fn data_api_bad_rows(&self, total: u64) {
        self.shared.data_api_bad_rows.store(total, Relaxed);
    }

    pub(crate) fn socket_recycled(&self) {
        self.shared.sockets_recycled.fetch_add(1, Relaxed);
    }

    /// When connection `id` last got a data frame (Unix ms; 0: never).
    pub(crate) fn last_message_ms(&self, id: usize) -> i64 {
        let state = self.shared.state.lock();
        state
            .connections
            .iter()
            .find(|c| c.id == id)
            .map_or(0, |c| c.last_message_ts.load(Relaxed))
    }

    pub(crate) fn stalls_repaired(&self, n: u64) {
        self.shared.stalls_repaired.fetch_add(n, Relaxed);
    }

    pub(crate) fn data_api_error(&self) {
        self.shared.data_api_errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn gaps_open(&self, open: u64, oldest_ms: i64) {
        self.shared.gaps_open.store(open, Relaxed);
        self.shared.oldest_open_gap_ms.store(oldest_ms, Relaxed);
    }

    pub(crate) fn replay_rate(&self, per_sec: u64) {
        self.shared.spool_replay_rate.store(per_sec, Relaxed);
    }

    /// A failure only an operator can fix, or `None` once writes go through again.
    pub(crate) fn db_failure(&self, failure: Option<String>) {
        self.shared.state.lock().db_failure = failure;
    }

    /// What the book side cannot store now (`None`: it stores again).
    pub(crate) fn book_failure(&self, failure: Option<String>) {
        let mut state = self.shared.state.lock();
        if state.book_failure.is_some() || failure.is_some() {
            state.book_failure = failure;
        }
    }

    pub(crate) fn db_state(&self, connected: bool) {
        let mut state = self.shared.state.lock();
        if connected {
            state.db_lost_since = 0;
        } else if state.db_lost_since == 0 {
            state.db_lost_since = now_ms();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters kept elsewhere (the spool's corrupt records, the Data API client's bad rows)
    /// reach the snapshot and the metrics.
    #[test]
    fn outside_counters_reach_the_snapshot_and_the_metrics() {
        let h = Health::new();
        h.spool_state(4096, 2, 0, 3);
        h.data_api_bad_rows(7);
        let s = h.snapshot();
        assert_eq!((s.spool_corrupt_records, s.data_api_bad_rows), (3, 7));
        let text = s.to_prometheus();
        assert!(
            text.contains("polytape_spool_corrupt_records_total 3"),
            "{text}"
        );
        assert!(
            text.contains("polytape_data_api_bad_rows_total 7"),
            "{text}"
        );
        assert!(text.contains("polytape_spool_bytes 4096"), "{text}");
    }

    /// The trades at risk of a crash start no earlier than the listener's start, however
    /// early the writer's first batch (a crash gap once began in 1970).
    #[test]
    fn trades_at_risk_are_never_older_than_the_start() {
        let h = Health::new();
        assert_eq!(h.at_risk_since_us(), None, "nothing received");
        h.mark_started();
        h.trades_queued(5, now_ms());
        let since = h.at_risk_since_us().expect("queued trades are at risk");
        assert!(since >= now_us() - 60_000_000, "{since}");
        h.batch_taken(since + 10);
        assert_eq!(h.at_risk_since_us(), Some(since + 10), "the batch's oldest");
        h.dequeued(5);
        h.batch_durable(since + 20);
        assert_eq!(h.at_risk_since_us(), None, "all durable");
    }
}
