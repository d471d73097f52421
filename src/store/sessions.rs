//! The `sessions` table: each run of a listener says it started, that it is alive (a
//! heartbeat every few seconds), and that it stopped. A run that never said it stopped
//! crashed (SIGKILL, out of memory, a lost machine): at the next start, its tokens get a gap
//! from its last safe point (the receive time, as of its last heartbeat, up to which
//! everything it had received was committed or durably spooled) to this run's subscription,
//! so a crash is never a silent hole. Both ends are the database's clock.
//!
//! **Liveness that a slow database cannot fake**: each run holds a session-level advisory
//! lock on its row's id on the keeper's connection. A run is taken for crashed only when its
//! lock is free (its connection is gone: the process died, or lost its database) or, for a
//! connection the server has not noticed dead yet, when its heartbeat is [`ZOMBIE_AFTER`]
//! old. A run that finds its row stopped by another (it lost its connection for a moment)
//! registers again and says so; it never beats on a row the others have closed.

use std::time::{Duration, Instant};

use postgres::Client;

use crate::config::Config;
use crate::error::Result;
use crate::health::Health;
use crate::health::now_us;
use crate::stop::StopSignal;
use crate::writer::HeldTokens;

/// The first key of the runs' advisory locks (the second is the run's id): "poly".
const LOCK_CLASS: i32 = 0x706f_6c79;
/// A run whose lock is still held but whose heartbeat is this old is taken for crashed: its
/// connection is a zombie the server has not noticed yet (a lost machine; the server's own
/// keepalives take hours). No live run goes this long without a beat: its statements time
/// out in 30 s and it reconnects.
const ZOMBIE_AFTER: Duration = Duration::from_secs(600);
/// Slack before the oldest trade at risk: trades from several sockets interleave in the
/// channel within milliseconds of their arrival.
const AT_RISK_SLACK_US: i64 = 1_000_000;

/// A fingerprint of the held set that changes when the set does, whatever its order: lets a
/// heartbeat skip building (and sorting) 100,000 token ids when nothing changed.
pub(crate) type HeldFingerprint = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

/// Keeps this run's row in `sessions`, on a connection of its own.
pub(crate) struct SessionKeeper {
    config: Config,
    health: Health,
    held: HeldTokens,
    fingerprint: Option<HeldFingerprint>,
    stop: StopSignal,
    host: String,
}

impl SessionKeeper {
    pub(crate) fn new(config: &Config, health: Health, held: HeldTokens, stop: StopSignal) -> Self {
        SessionKeeper {
            config: config.clone(),
            health,
            held,
            fingerprint: None,
            stop,
            host: host_name(),
        }
    }

    /// Tells whether the held set changed by `fingerprint` instead of by hashing the set.
    pub(crate) fn fingerprinted(mut self, fingerprint: HeldFingerprint) -> Self {
        self.fingerprint = Some(fingerprint);
        self
    }

    /// Runs until stopped: registers this run (first: nothing else may fail before it), then
    /// records crashed runs as gaps, then heartbeats; `clean` says whether to mark the run
    /// stopped at the end (false: a run that fails).
    pub(crate) fn run(self, clean: impl Fn() -> bool) {
        let interval = self.config.heartbeat_interval;
        let mut id: Option<i64> = None;
        let mut client: Option<Client> = None;
        // Whether this run's lock is held on the current connection.
        let mut locked = false;
        let mut recovered = false;
        // The held set as last written (its fingerprint): rewritten only when it changes.
        let mut written: Option<u64> = None;
        loop {
            let step = (|| -> Result<()> {
                let c = match client.as_mut() {
                    Some(c) if !c.is_closed() => c,
                    _ => {
                        locked = false;
                        client.insert(crate::store::connect(&self.config)?)
                    }
                };
                let session = match id {
                    Some(id) => id,
                    None => {
                        written = None; // a new row holds no set yet
                        locked = false;
                        *id.insert(self.register(c)?)
                    }
                };
                if !locked {
                    locked = c
                        .query_one(
                            "SELECT pg_try_advisory_lock($1, $2::bigint::int4)",
                            &[&LOCK_CLASS, &session],
                        )?
                        .try_get(0)?;
                }
                if !recovered {
                    // The gap of a crashed run ends when this run holds its tokens again.
                    self.wait_for_a_socket();
                    self.recover_crashed(c, session)?;
                    recovered = true;
                }
                if !self.heartbeat(c, session, &mut written)? {
                    log::warn!(
                        "sessions: run {session} was taken for crashed by another instance (its \
                         database connection was lost); registering again"
                    );
                    self.health.session_reregistered();
                    id = None;
                }
                Ok(())
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

    /// Every other run without a stop whose lock is free (or whose heartbeat is a zombie's)
    /// crashed: a gap for its tokens from its safe point to now, and its row closed.
    fn recover_crashed(&self, c: &mut Client, me: i64) -> Result<()> {
        let mut tx = c.transaction()?;
        let open = tx.query(
            "SELECT id, heartbeat_at < now() - $2::float8 * interval '1 second'
             FROM sessions WHERE stopped_at IS NULL AND id <> $1
             FOR UPDATE SKIP LOCKED",
            &[&me, &ZOMBIE_AFTER.as_secs_f64()],
        )?;
        for row in open {
            let id: i64 = row.try_get(0)?;
            let zombie: bool = row.try_get(1)?;
            // Free: its connection is gone. Taken for a moment, then given back.
            let free: bool = tx
                .query_one(
                    "SELECT pg_try_advisory_xact_lock($1, $2::bigint::int4)",
                    &[&LOCK_CLASS, &id],
                )?
                .try_get(0)?;
            if !free && !zombie {
                continue; // alive: its connection holds its lock
            }
            let from: String = tx
                .query_one(
                    "INSERT INTO gaps (connection, from_ts, to_ts, reason, asset_ids)
                     SELECT NULL, coalesce(safe_until, greatest(heartbeat_at,
                                coalesce(last_received_at, heartbeat_at))),
                            clock_timestamp(), 'crash: run ' || id || ' ended without a stop',
                            asset_ids
                     FROM sessions WHERE id = $1
                     ON CONFLICT DO NOTHING
                     RETURNING from_ts::text",
                    &[&id],
                )
                .and_then(|r| r.try_get(0))
                .unwrap_or_else(|_| "(recorded before)".into());
            tx.execute(
                "UPDATE sessions SET stopped_at = heartbeat_at, crashed = true WHERE id = $1",
                &[&id],
            )?;
            self.health.gap_recorded();
            log::warn!(
                "sessions: run {id} crashed ({}); recorded a gap for its tokens from {from}",
                if free {
                    "its connection is gone"
                } else {
                    "no heartbeat for ten minutes"
                }
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

    /// Marks the run alive: a few bytes (the time, the safe point). The held set (tens of
    /// kilobytes at 16,000 tokens, TOASTed) is written only when it changed since `written`:
    /// rewriting it every heartbeat cost ~1.6 MB of WAL and TOAST a beat at that scale, tens
    /// of GB a day. Returns false when the row was closed by another instance (this run was
    /// taken for crashed): nothing is written then.
    fn heartbeat(&self, c: &mut Client, id: i64, written: &mut Option<u64>) -> Result<bool> {
        let sorted = || {
            let mut held = (self.held)();
            held.sort_unstable();
            held
        };
        let (fingerprint, mut held) = match &self.fingerprint {
            Some(f) => (f(), None),
            None => {
                use std::hash::{Hash, Hasher};
                let held = sorted();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                held.hash(&mut h);
                (h.finish(), Some(held))
            }
        };
        // How long ago (µs) the oldest trade at risk was received: the safe point, in the
        // database's clock, is now() minus that.
        let at_risk_age_us = self
            .health
            .at_risk_since_us()
            .map_or(0, |since| (now_us() - since).max(0) + AT_RISK_SLACK_US);
        let safe = "safe_until = now() - $2::float8 * interval '1 microsecond'";
        let updated = if *written == Some(fingerprint) {
            c.execute(
                &format!(
                    "UPDATE sessions SET heartbeat_at = now(), {safe}
                     WHERE id = $1 AND stopped_at IS NULL"
                ),
                &[&id, &(at_risk_age_us as f64)],
            )?
        } else {
            let held: Vec<String> = held.take().unwrap_or_else(sorted);
            let n = c.execute(
                &format!(
                    "UPDATE sessions SET heartbeat_at = now(), {safe}, asset_ids = $3
                     WHERE id = $1 AND stopped_at IS NULL"
                ),
                &[&id, &(at_risk_age_us as f64), &held],
            )?;
            *written = Some(fingerprint);
            n
        };
        Ok(updated == 1)
    }

    fn mark_stopped(&self, c: &mut Client, id: i64) -> Result<()> {
        c.execute(
            "UPDATE sessions SET stopped_at = now(), heartbeat_at = now(), safe_until = now()
             WHERE id = $1 AND stopped_at IS NULL",
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
