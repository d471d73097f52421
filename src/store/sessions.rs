//! The `sessions` table: each run of a listener says it started, that it is alive (a
//! heartbeat every few seconds, with the tokens it holds), and that it stopped. A run that
//! never said it stopped crashed (SIGKILL, out of memory, a lost machine): at the next start,
//! its tokens get a gap from its last sign of life (its last heartbeat, or the receive time
//! of the last trade it committed, whichever is later) to this run's subscription, so a crash
//! is never a silent hole.
//!
//! A run is taken for crashed when its heartbeat is three intervals old, or at once when it
//! ran on this host with this spool folder: the spool is locked by one process at a time, so
//! whoever held it before is gone.

use std::time::{Duration, Instant};

use postgres::Client;

use crate::config::Config;
use crate::error::Result;
use crate::health::Health;
use crate::stop::StopSignal;
use crate::writer::HeldTokens;

/// Keeps this run's row in `sessions`, on a connection of its own.
pub(crate) struct SessionKeeper {
    config: Config,
    health: Health,
    held: HeldTokens,
    stop: StopSignal,
    host: String,
}

impl SessionKeeper {
    pub(crate) fn new(config: &Config, health: Health, held: HeldTokens, stop: StopSignal) -> Self {
        SessionKeeper {
            config: config.clone(),
            health,
            held,
            stop,
            host: host_name(),
        }
    }

    /// Runs until stopped: records crashed runs as gaps, registers this run, heartbeats;
    /// `clean` says whether to mark the run stopped at the end (false: a run that fails).
    pub(crate) fn run(self, clean: impl Fn() -> bool) {
        let interval = self.config.heartbeat_interval;
        let mut id: Option<i64> = None;
        let mut client: Option<Client> = None;
        let mut recovered = false;
        // The held set as last written (its fingerprint): rewritten only when it changes.
        let mut written: Option<u64> = None;
        loop {
            let step = (|| -> Result<()> {
                let c = match client.as_mut() {
                    Some(c) if !c.is_closed() => c,
                    _ => client.insert(crate::store::connect(&self.config)?),
                };
                if !recovered {
                    // The gap of a crashed run ends when this run holds its tokens again.
                    self.wait_for_a_socket();
                    self.recover_crashed(c)?;
                    recovered = true;
                }
                let session = match id {
                    Some(id) => id,
                    None => {
                        written = None; // a new row holds no set yet
                        *id.insert(self.register(c)?)
                    }
                };
                self.heartbeat(c, session, &mut written)
            })();
            if let Err(e) = step {
                // Expected while the database is away; anything else is worth a line.
                if e.is_transient() {
                    log::debug!("sessions: {e}; retrying");
                } else {
                    log::warn!("sessions: {e}; retrying");
                }
                client = None;
            }
            if self.stop.wait_timeout(interval) {
                break;
            }
        }
        if let (Some(session), true) = (id, clean()) {
            let stopped = client
                .as_mut()
                .filter(|c| !c.is_closed())
                .map(|c| self.mark_stopped(c, session))
                .unwrap_or_else(|| {
                    crate::store::connect(&self.config)
                        .and_then(|mut c| self.mark_stopped(&mut c, session))
                });
            if let Err(e) = stopped {
                log::warn!(
                    "sessions: cannot mark this run stopped ({e}); the next start will take it for a crash"
                );
            }
        }
    }

    /// Waits (a little) until a socket is subscribed, or stopped.
    fn wait_for_a_socket(&self) {
        let until = Instant::now() + self.config.connect_timeout * 3;
        while self.health.snapshot().connections_active == 0 && Instant::now() < until {
            if self.stop.wait_timeout(Duration::from_millis(100)) {
                return;
            }
        }
    }

    fn recover_crashed(&self, c: &mut Client) -> Result<()> {
        let stale_ms = (self.config.heartbeat_interval * 3).as_millis() as f64;
        let spool_dir = self.config.spool_dir.to_string_lossy().into_owned();
        let mut tx = c.transaction()?;
        let rows = tx.query(
            "SELECT id, greatest(heartbeat_at, coalesce(last_received_at, heartbeat_at))::text,
                    cardinality(asset_ids)
             FROM sessions
             WHERE stopped_at IS NULL
               AND (heartbeat_at < now() - $1 * interval '1 millisecond'
                    OR (host = $2 AND spool_dir = $3))
             FOR UPDATE SKIP LOCKED",
            &[&stale_ms, &self.host, &spool_dir],
        )?;
        for row in rows {
            let id: i64 = row.try_get(0)?;
            let from: String = row.try_get(1)?;
            let tokens: i32 = row.try_get(2)?;
            tx.execute(
                "INSERT INTO gaps (connection, from_ts, to_ts, reason, asset_ids)
                 SELECT NULL, greatest(heartbeat_at, coalesce(last_received_at, heartbeat_at)),
                        clock_timestamp(), 'crash: run ' || id || ' ended without a stop',
                        asset_ids
                 FROM sessions WHERE id = $1
                 ON CONFLICT DO NOTHING",
                &[&id],
            )?;
            tx.execute(
                "UPDATE sessions SET stopped_at = heartbeat_at, crashed = true WHERE id = $1",
                &[&id],
            )?;
            self.health.gap_recorded();
            log::warn!(
                "sessions: run {id} crashed; recorded a gap for its {tokens} tokens from {from}"
            );
        }
        tx.commit()?;
        Ok(())
    }

    fn register(&self, c: &mut Client) -> Result<i64> {
        let row = c.query_one(
            "INSERT INTO sessions (host, pid, spool_dir) VALUES ($1, $2, $3) RETURNING id",
            &[
                &self.host,
                &(std::process::id() as i32),
                &self.config.spool_dir.to_string_lossy().into_owned(),
            ],
        )?;
        let id = row.try_get(0)?;
        log::info!("sessions: this is run {id}");
        Ok(id)
    }

    /// Marks the run alive: a few bytes (the time, the newest committed trade's receive
    /// time). The held set (tens of kilobytes at 16,000 tokens, TOASTed) is written only when
    /// it changed since `written`: rewriting it every heartbeat cost ~1.6 MB of WAL and TOAST
    /// a beat at that scale, tens of GB a day.
    fn heartbeat(&self, c: &mut Client, id: i64, written: &mut Option<u64>) -> Result<()> {
        let mut held = (self.held)();
        held.sort_unstable();
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            held.hash(&mut h);
            h.finish()
        };
        let last_us = self.health.last_committed_received_us();
        let last_received = "last_received_at = CASE WHEN $2::float8 > 0
                 THEN 'epoch'::timestamptz + $2::float8 * interval '1 microsecond'
                 ELSE last_received_at END";
        if *written == Some(fingerprint) {
            c.execute(
                &format!("UPDATE sessions SET heartbeat_at = now(), {last_received} WHERE id = $1"),
                &[&id, &(last_us as f64)],
            )?;
        } else {
            c.execute(
                &format!(
                    "UPDATE sessions SET heartbeat_at = now(), {last_received}, asset_ids = $3
                     WHERE id = $1"
                ),
                &[&id, &(last_us as f64), &held],
            )?;
            *written = Some(fingerprint);
        }
        Ok(())
    }

    fn mark_stopped(&self, c: &mut Client, id: i64) -> Result<()> {
        c.execute(
            "UPDATE sessions SET stopped_at = now(), heartbeat_at = now() WHERE id = $1",
            &[&id],
        )?;
        Ok(())
    }
}

/// This machine's name, for telling this host's runs apart.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}
