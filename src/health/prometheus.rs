//! The snapshot in Prometheus text exposition format (`/metrics`).

use chrono::{DateTime, Utc};

use super::snapshot::HealthSnapshot;

impl HealthSnapshot {
    /// The snapshot in Prometheus text exposition format, `polytape_ready` judged with the
    /// default readiness grace (30 s).
    pub fn to_prometheus(&self) -> String {
        self.to_prometheus_with(std::time::Duration::from_secs(30))
    }

    /// The snapshot in Prometheus text exposition format; `polytape_ready` is what `/readyz`
    /// answers with `readiness_grace`.
    pub fn to_prometheus_with(&self, readiness_grace: std::time::Duration) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP polytape_{name} {help}");
            let _ = writeln!(out, "# TYPE polytape_{name} {kind}");
            let _ = writeln!(out, "polytape_{name} {value}");
        };
        let counters: [(&str, &str, f64); 29] = [
            (
                "sessions_reregistered_total",
                "Times this run was taken for crashed by another instance and registered again.",
                self.sessions_reregistered as f64,
            ),
            (
                "threads_restarted_total",
                "Helper threads (backfill, sessions, announcements) that panicked and were started again.",
                self.threads_restarted as f64,
            ),
            (
                "spool_read_errors_total",
                "Spool reads that failed on the device (retried, nothing skipped).",
                self.spool_read_errors as f64,
            ),
            (
                "spool_corrupt_records_total",
                "Spool records found unreadable (the rest of their segment skipped).",
                self.spool_corrupt_records as f64,
            ),
            (
                "data_api_bad_rows_total",
                "Data API rows the backfill could not use.",
                self.data_api_bad_rows as f64,
            ),
            (
                "sockets_recycled_total",
                "Sockets replaced make before break (planned; no gap).",
                self.sockets_recycled as f64,
            ),
            (
                "connections_restarted_total",
                "Connection threads that ended unexpectedly and were started again.",
                self.connections_restarted as f64,
            ),
            (
                "stalls_repaired_total",
                "Assets stalled on a live socket, found by a sweep and subscribed afresh.",
                self.stalls_repaired as f64,
            ),
            (
                "trades_backfilled_total",
                "Trades added from the Data API to fill holes.",
                self.trades_backfilled as f64,
            ),
            (
                "gaps_filled_total",
                "Gaps filled from the Data API.",
                self.gaps_filled as f64,
            ),
            (
                "data_api_errors_total",
                "Data API failures (the gap stays open and is retried).",
                self.data_api_errors as f64,
            ),
            (
                "trades_spooled_total",
                "Trades written to the disk spool (database away or behind).",
                self.trades_spooled as f64,
            ),
            (
                "trades_replayed_total",
                "Trades replayed from the spool into the database.",
                self.trades_replayed as f64,
            ),
            (
                "trades_unkept_total",
                "Trades neither committed nor spooled before a stop's deadline.",
                self.trades_unkept as f64,
            ),
            (
                "gaps_recorded_total",
                "Socket losses recorded in the gaps table (trades may be missing there).",
                self.gaps_recorded as f64,
            ),
            (
                "trades_received_total",
                "Trades parsed from the feed and queued for writing.",
                self.trades_received as f64,
            ),
            (
                "trades_inserted_total",
                "Trades stored (new rows).",
                self.trades_inserted as f64,
            ),
            (
                "batches_inserted_total",
                "Batches committed.",
                self.batches_inserted as f64,
            ),
            (
                "duplicates_skipped_total",
                "Trades already stored, skipped by the natural key.",
                self.duplicates_skipped as f64,
            ),
            (
                "rows_rejected_total",
                "Trades the database refused, isolated and skipped.",
                self.rows_rejected as f64,
            ),
            (
                "messages_received_total",
                "Data frames received.",
                self.messages_received as f64,
            ),
            (
                "parse_errors_total",
                "Malformed frames and refused trades.",
                self.parse_errors as f64,
            ),
            (
                "invalid_trades_total",
                "Trade events refused by validation.",
                self.invalid_trades as f64,
            ),
            (
                "unknown_events_total",
                "Events of a type polytape does not know.",
                self.unknown_events as f64,
            ),
            (
                "frames_passed_over_total",
                "Frames of book events alone passed over unscanned (the book side off).",
                self.frames_passed_over as f64,
            ),
            (
                "oversized_frames_total",
                "Frames over the size limit.",
                self.oversized_frames as f64,
            ),
            (
                "db_errors_total",
                "Failed database writes (each retried or isolated).",
                self.db_errors as f64,
            ),
            (
                "reconnections_total",
                "Socket reconnections.",
                self.reconnections as f64,
            ),
            (
                "send_blocked_seconds_total",
                "Time connection threads waited on a full channel.",
                self.send_blocked_ms as f64 / 1000.0,
            ),
        ];
        for (name, help, value) in counters {
            metric(name, "counter", help, value);
        }
        for (name, kind, help, value) in self.books.metrics() {
            metric(name, kind, help, value);
        }
        for (name, kind, help, value) in self.chain.metrics() {
            metric(name, kind, help, value);
        }
        metric(
            "ready",
            "gauge",
            "1 when /readyz answers 200, 0 when it answers 503.",
            f64::from(u8::from(self.not_ready(readiness_grace).is_none())),
        );
        metric(
            "commit_latency_seconds",
            "gauge",
            "Receive to commit of the oldest trade of the last committed batch.",
            self.commit_latency_seconds,
        );
        metric(
            "spool_max_bytes",
            "gauge",
            "The disk spool's limit.",
            self.spool_max_bytes as f64,
        );
        metric(
            "connections_active",
            "gauge",
            "Sockets connected now.",
            self.connections_active as f64,
        );
        metric(
            "connections",
            "gauge",
            "Connections (sockets the listener holds or retries).",
            self.connections.len() as f64,
        );
        metric(
            "spool_bytes",
            "gauge",
            "Bytes in the disk spool.",
            self.spool_bytes as f64,
        );
        metric(
            "spool_segments",
            "gauge",
            "Segment files in the disk spool.",
            self.spool_segments as f64,
        );
        metric(
            "spool_oldest_age_seconds",
            "gauge",
            "Age of the oldest record in the spool (0 when empty).",
            self.spool_oldest_ts.map_or(0.0, |t| {
                (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
            }),
        );
        metric(
            "spool_replay_trades_per_second",
            "gauge",
            "Replay rate from the spool, over the last replay.",
            self.spool_replay_rate as f64,
        );
        metric(
            "gaps_open",
            "gauge",
            "Gaps not filled yet.",
            self.gaps_open as f64,
        );
        metric(
            "oldest_open_gap_timestamp_seconds",
            "gauge",
            "Where the oldest open gap starts (0: none).",
            self.oldest_open_gap_ts
                .map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0),
        );
        metric(
            "database_failure",
            "gauge",
            "1 while a database failure needs an operator (grant, table, read-only).",
            if self.db_failure.is_some() { 1.0 } else { 0.0 },
        );
        metric(
            "queue_depth",
            "gauge",
            "Trades waiting in the channel.",
            self.queue_depth as f64,
        );
        let secs =
            |t: Option<DateTime<Utc>>| t.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0);
        metric(
            "last_trade_timestamp_seconds",
            "gauge",
            "Event time of the newest trade received.",
            secs(self.last_trade_ts),
        );
        metric(
            "last_insert_timestamp_seconds",
            "gauge",
            "When the last batch was committed.",
            secs(self.last_insert_ts),
        );
        metric(
            "started_timestamp_seconds",
            "gauge",
            "When the listener started.",
            secs(self.started_at),
        );
        metric(
            "database_up",
            "gauge",
            "1 when the writer has a database connection.",
            if self.db_lost_since.is_some() {
                0.0
            } else {
                1.0
            },
        );
        let _ = writeln!(
            out,
            "# HELP polytape_connection_reconnects_total Reconnections per connection."
        );
        let _ = writeln!(out, "# TYPE polytape_connection_reconnects_total counter");
        for c in &self.connections {
            let _ = writeln!(
                out,
                "polytape_connection_reconnects_total{{connection=\"{}\"}} {}",
                c.id, c.reconnects
            );
        }
        // The process's own, under the names every client library uses (no prefix).
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}\n\
             # HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
            self.process_cpu_seconds, self.process_rss_bytes
        );
        out
    }
}
