//! The listener: tokens split into chunks, one connection thread per chunk, one bounded
//! channel, one writer thread; `run` until `stop`.
//!
//! ```text
//! Connection #1..#N ──trades──▶ bounded channel ──▶ TradeWriter ──COPY──▶ trades
//! ```
//!
//! **A full channel blocks the connection threads** that try to send (they stop reading
//! their sockets until the writer catches up): a trade that was received is never dropped.
//! The time readers spend blocked is counted in `send_blocked_ms`.
//!
//! `connections.rs` plans the chunks and keeps the connection threads; `follow.rs` acts on
//! the feed's market announcements.

mod connections;
mod follow;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use parking_lot::{Condvar, Mutex};

use crate::backfill::{Backfill, Resubscribe};
use crate::book::{BookTape, TapeFinisher, TapeMsg};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::feed::Record;
use crate::feed::connection::{Command, Shared as ConnectionShared};
use crate::feed::socket::{OpenGate, tls_config};
use crate::health::{Health, HealthSnapshot};
use crate::resolution::TrackerHandle;
use crate::spool::Spool;
use crate::stop::StopSignal;
use crate::store::markets::Shard;
use crate::store::sessions::SessionKeeper;
use crate::supervise::spawn_supervised;
use crate::writer::{HeldTokens, StopDeadline, Writer};

pub use self::connections::plan_chunks;
use self::connections::{Connections, Registry};
use self::follow::Follower;

/// How long a stop waits for the writer and the sessions thread after the connections.
const POLITE_CLOSE: Duration = Duration::from_secs(2);
enum Control {
    Stop,
    SetMarkets(Vec<Vec<String>>),
    #[cfg(feature = "bench")]
    Crash(usize),
}

enum RunState {
    NotStarted,
    Running,
    Done(Box<HealthSnapshot>),
}

struct Shared {
    state: Mutex<RunState>,
    done: Condvar,
}

/// Controls a [`Listener`] from any thread. Cheap to clone.
#[derive(Clone)]
pub struct ListenerHandle {
    control: Sender<Control>,
    shared: Arc<Shared>,
    health: Health,
    deadline: StopDeadline,
    stop_deadline: Duration,
}

impl ListenerHandle {
    /// Stops the listener within the configured stop deadline (20 s by default): see
    /// [`ListenerHandle::stop_within`].
    pub fn stop(&self) -> HealthSnapshot {
        self.stop_within(self.stop_deadline)
    }

    /// Stops the listener: closes every socket, joins every thread, commits every received
    /// trade, and returns the final health. What the database has not taken by `deadline`
    /// (it is away, say) stays in the disk spool and is replayed at the next start: a stop
    /// never waits on the database for longer, and never loses a trade. Safe to call more
    /// than once (an earlier deadline wins), and before `run`.
    pub fn stop_within(&self, deadline: Duration) -> HealthSnapshot {
        self.deadline.set(Instant::now() + deadline);
        let _ = self.control.send(Control::Stop);
        let mut state = self.shared.state.lock();
        loop {
            match &*state {
                RunState::Done(snapshot) => return (**snapshot).clone(),
                RunState::NotStarted => {
                    let snapshot = self.health.snapshot();
                    *state = RunState::Done(Box::new(snapshot.clone()));
                    return snapshot;
                }
                RunState::Running => self.shared.done.wait(&mut state),
            }
        }
    }

    /// Replaces the set of markets to hold (token groups, one per market): tokens no longer
    /// wanted are unsubscribed, new ones are subscribed on connections with room or on new
    /// connections. No socket is reopened.
    pub fn set_markets(&self, groups: Vec<Vec<String>>) {
        let _ = self.control.send(Control::SetMarkets(groups));
    }

    /// The listener's health now.
    pub fn health(&self) -> HealthSnapshot {
        self.health.snapshot()
    }

    /// Makes connection `id`'s thread panic (the supervision test).
    #[cfg(feature = "bench")]
    pub fn crash_connection(&self, id: usize) {
        let _ = self.control.send(Control::Crash(id));
    }
}

/// The trade listener. Build it, take a [`ListenerHandle`], call [`Listener::run`].
pub struct Listener {
    config: Arc<Config>,
    groups: Vec<Vec<String>>,
    /// Run even with no tokens, waiting for [`ListenerHandle::set_markets`] (the daemon).
    wait_for_markets: bool,
    /// Follow the feed's market announcements (`new_market`, `market_resolved`).
    follow: Option<(Option<Shard>, Option<TrackerHandle>)>,
    health: Health,
    control: Receiver<Control>,
    handle: ListenerHandle,
    /// Writes the book tape's files (the CLI's Parquet writer), when the tape is on.
    tape_finisher: Option<Arc<dyn TapeFinisher>>,
}

impl Listener {
    /// A listener for these token groups (one per market, both tokens together).
    pub fn new(config: Config, groups: Vec<Vec<String>>) -> Result<Listener> {
        let health = Health::new();
        let (tx, rx) = unbounded();
        let handle = ListenerHandle {
            control: tx,
            shared: Arc::new(Shared {
                state: Mutex::new(RunState::NotStarted),
                done: Condvar::new(),
            }),
            health: health.clone(),
            deadline: StopDeadline::default(),
            stop_deadline: config.stop_deadline,
        };
        Ok(Listener {
            config: Arc::new(config),
            groups,
            wait_for_markets: false,
            follow: None,
            health,
            control: rx,
            handle,
            tape_finisher: None,
        })
    }

    /// What writes the book tape's files (`Config::book_tape_dir`): the library keeps the
    /// tape crash-safe on disk, `finisher` turns each closed period into its file (the
    /// `polytape` CLI's Parquet writer). A tape directory without one is refused at `run`.
    pub fn book_tape_finisher(mut self, finisher: Arc<dyn TapeFinisher>) -> Self {
        self.tape_finisher = Some(finisher);
        self
    }

    /// A listener for every open market in the `markets` table.
    pub fn from_database(config: Config) -> Result<Listener> {
        let mut client = crate::store::connect(&config)?;
        let groups = crate::store::markets::active_token_groups(&mut client)?;
        Listener::new(config, groups)
    }

    /// With no tokens, keep running (writer up, no sockets) until markets arrive through
    /// [`ListenerHandle::set_markets`], instead of returning at once.
    pub fn wait_for_markets(mut self) -> Self {
        self.wait_for_markets = true;
        self
    }

    /// Follows the feed's market announcements (its custom features): a `new_market` is
    /// fetched from Gamma, stored in `markets` and subscribed within seconds, if it belongs
    /// to `shard` (all markets: `None`), on connections with room or a new one; a
    /// `market_resolved` makes `resolver` check that market with Gamma now. The `markets`
    /// table becomes the listener's source of truth, as for a re-sync, which stays the
    /// safety net for announcements missed.
    pub fn follow_markets(mut self, shard: Option<Shard>, resolver: Option<TrackerHandle>) -> Self {
        self.follow = Some((shard, resolver));
        self
    }

    /// A handle to stop the listener or change its markets from another thread.
    pub fn handle(&self) -> ListenerHandle {
        self.handle.clone()
    }

    /// The live health counters (benchmarks record latencies through them).
    #[cfg(feature = "bench")]
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// The book tape's thread, when the book side and the tape are on.
    #[allow(clippy::type_complexity)]
    fn start_book_tape(
        &self,
    ) -> Result<(Option<Sender<TapeMsg>>, Option<std::thread::JoinHandle<()>>)> {
        let (Some(dir), false) = (
            &self.config.book_tape_dir,
            self.config.book_snapshot_interval.is_zero(),
        ) else {
            return Ok((None, None));
        };
        let Some(finisher) = &self.tape_finisher else {
            return Err(Error::config(
                "book_tape_dir is set but nothing writes its files: give the listener a \
                 book_tape_finisher (the polytape CLI has the Parquet one)",
            ));
        };
        let (tx, thread) = BookTape::start(
            dir.clone(),
            self.config.book_tape_roll,
            self.health.clone(),
            Arc::clone(finisher),
            self.config.database_url.clone(),
            self.config.statement_timeout,
        )?;
        Ok((Some(tx), Some(thread)))
    }

    /// The chunks the listener will open connections for.
    pub fn chunks(&self) -> Vec<Vec<String>> {
        plan_chunks(&self.groups, self.config.max_tokens_per_conn)
    }

    /// Runs until [`ListenerHandle::stop`]; returns the final health. Returns at once, with a
    /// warning and without starting a thread, when there are no tokens.
    pub fn run(self) -> Result<HealthSnapshot> {
        {
            let mut state = self.handle.shared.state.lock();
            match &*state {
                RunState::NotStarted => *state = RunState::Running,
                RunState::Running => return Err(Error::config("listener already running")),
                RunState::Done(s) => return Ok((**s).clone()),
            }
        }
        // Whatever happens in run_inner, a panic included, `stop()` must not wait forever.
        struct Finish<'a>(&'a Listener);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                let shared = &self.0.handle.shared;
                let mut state = shared.state.lock();
                if matches!(*state, RunState::Running) {
                    *state = RunState::Done(Box::new(self.0.health.snapshot()));
                }
                shared.done.notify_all();
            }
        }
        let finish = Finish(&self);
        let result = self.run_inner();
        let snapshot = self.health.snapshot();
        *self.handle.shared.state.lock() = RunState::Done(Box::new(snapshot.clone()));
        drop(finish);
        result.map(|()| snapshot)
    }

    fn run_inner(&self) -> Result<()> {
        let chunks = self.chunks();
        if chunks.is_empty() {
            if !self.wait_for_markets {
                log::warn!("no tokens to subscribe: the listener has nothing to do");
                return Ok(());
            }
            log::warn!("no tokens to subscribe yet: waiting for markets");
        }
        let tls = if self.config.ws_url.starts_with("wss://") {
            Some(tls_config(self.config.ws_ca_file.as_deref())?)
        } else {
            None
        };
        let spool =
            Spool::open(&self.config.spool_dir, self.config.spool_max_bytes).map_err(|e| {
                Error::config(format!(
                    "cannot open the spool at {}: {e}",
                    self.config.spool_dir.display()
                ))
            })?;
        self.health.mark_started();
        self.health.set_spool_max_bytes(self.config.spool_max_bytes);
        // Every token any connection holds now (for gaps that cover them all).
        let registry: Registry = Arc::default();
        let held: HeldTokens = {
            let registry = Arc::clone(&registry);
            Arc::new(move || {
                let mut all: Vec<String> = Vec::new();
                for (tokens, _) in registry.lock().iter() {
                    all.extend(tokens.lock().iter().cloned());
                }
                all
            })
        };
        // The held set's fingerprint, order-free (a sum of each token's FNV-1a): the session
        // keeper rewrites the set only when it changes.
        let held_fingerprint: crate::store::sessions::HeldFingerprint = {
            let registry = Arc::clone(&registry);
            Arc::new(move || {
                let (mut sum, mut n) = (0u64, 0u64);
                for (tokens, _) in registry.lock().iter() {
                    for t in tokens.lock().iter() {
                        let h = t.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                        });
                        sum = sum.wrapping_add(h);
                        n += 1;
                    }
                }
                sum ^ n.rotate_left(32)
            })
        };
        // Asks the connections that hold these tokens to subscribe them afresh (a stalled
        // asset on a live socket); returns how many were asked for.
        let resubscribe: Resubscribe = {
            let registry = Arc::clone(&registry);
            Arc::new(move |stalled: &[String]| {
                let mut asked = 0;
                for (tokens, commands) in registry.lock().iter() {
                    let held = tokens.lock();
                    let mine: Vec<String> = stalled
                        .iter()
                        .filter(|t| held.contains(t))
                        .cloned()
                        .collect();
                    drop(held);
                    if !mine.is_empty() {
                        asked += mine.len();
                        let _ = commands.send(Command::Unsubscribe(mine.clone()));
                        let _ = commands.send(Command::Subscribe(mine));
                    }
                }
                asked
            })
        };
        let (tx, rx) = bounded::<Record>(self.config.channel_capacity);
        let mut writer = Writer::new(
            &self.config,
            self.health.clone(),
            spool,
            self.handle.deadline.clone(),
            Arc::clone(&held),
        );
        if let Err(e) = writer.connect() {
            log::warn!(
                "writer: cannot reach the database yet ({e}); spooling meanwhile, and retrying"
            );
        }
        let writer_thread = std::thread::Builder::new()
            .name("polytape-writer".into())
            .spawn(move || writer.run(rx))?;
        // Holes are filled from the Data API once settled. The helper threads are
        // supervised: a panic starts them again (counted), it never ends every fill.
        let backfill_stop = StopSignal::new();
        let backfill_thread = {
            let (config, health) = (Arc::clone(&self.config), self.health.clone());
            let (held, stop) = (Arc::clone(&held), backfill_stop.clone());
            spawn_supervised(
                "backfill",
                self.health.clone(),
                backfill_stop.clone(),
                move || {
                    Backfill::new(&config, health.clone())
                        .reconciling(Arc::clone(&held), Arc::clone(&resubscribe))
                        .run(stop.clone())
                },
            )?
        };
        // The chain reader (a Polygon endpoint configured): on its own supervised thread; it
        // may fail alone, never holding a trade up.
        let chain_stop = StopSignal::new();
        let chain_thread = if self.config.polygon_rpc_url().is_some() {
            let (config, health, stop) = (
                Arc::clone(&self.config),
                self.health.clone(),
                chain_stop.clone(),
            );
            // Made on the thread (a restart after a panic makes a new one).
            Some(spawn_supervised(
                "chain",
                self.health.clone(),
                chain_stop.clone(),
                move || {
                    if let Some(reader) = crate::chain::ChainReader::new(&config, health.clone()) {
                        reader.run(stop.clone());
                    }
                },
            )?)
        } else {
            None
        };
        let keeper_stop = StopSignal::new();
        let writer_clean = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let keeper_thread = {
            let (config, health) = (Arc::clone(&self.config), self.health.clone());
            let (held, stop) = (Arc::clone(&held), keeper_stop.clone());
            let clean = Arc::clone(&writer_clean);
            spawn_supervised(
                "sessions",
                self.health.clone(),
                keeper_stop.clone(),
                move || {
                    SessionKeeper::new(&config, health.clone(), Arc::clone(&held), stop.clone())
                        .fingerprinted(Arc::clone(&held_fingerprint))
                        .run(|| clean.load(std::sync::atomic::Ordering::SeqCst))
                },
            )?
        };
        let conn_stop = StopSignal::new();
        // Announcements: from every connection to one follower thread. A hint dropped on a
        // full queue is caught by the next re-sync.
        let follow_stop = StopSignal::new();
        let (announce, follower_thread) = match &self.follow {
            Some((shard, resolver)) => {
                let (atx, arx) = bounded(1024);
                let (config, shard, resolver) =
                    (Arc::clone(&self.config), *shard, resolver.clone());
                let (handle, stop) = (self.handle.clone(), follow_stop.clone());
                let thread = spawn_supervised(
                    "announce",
                    self.health.clone(),
                    follow_stop.clone(),
                    move || {
                        let handle = handle.clone();
                        Follower::new(&config, shard, resolver.clone(), move |groups| {
                            handle.set_markets(groups)
                        })
                        .run(arx.clone(), stop.clone())
                    },
                )?;
                (Some(atx), Some(thread))
            }
            None => (None, None),
        };
        let (tape, tape_thread) = self.start_book_tape()?;
        let gate = Arc::new(OpenGate::new(self.config.open_interval));
        let shared = ConnectionShared {
            config: Arc::clone(&self.config),
            trades: tx,
            health: self.health.clone(),
            stop: conn_stop.clone(),
            gate,
            tls,
            announce,
            tape,
        };
        let mut connections =
            Connections::start(shared, registry, chunks, self.config.max_tokens_per_conn)?;
        log::info!(
            "listener: {} connections started for {} tokens",
            connections.len(),
            self.groups.iter().map(Vec::len).sum::<usize>()
        );
        // Until a stop (or every handle is gone), apply market-set updates. A writer that
        // ended on its own (it should not) ends the listener: nothing could be stored.
        let mut writer_died = false;
        loop {
            match self.control.recv_timeout(Duration::from_secs(1)) {
                Ok(Control::SetMarkets(groups)) => {
                    if let Err(e) = connections.apply(&groups) {
                        log::error!("listener: cannot apply the new market set: {e}");
                    }
                }
                #[cfg(feature = "bench")]
                Ok(Control::Crash(id)) => connections.crash(id),
                Ok(Control::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    connections.supervise();
                    if writer_thread.is_finished() {
                        log::error!("listener: the writer thread ended; stopping");
                        writer_died = true;
                        break;
                    }
                }
            }
        }
        let started = Instant::now();
        // The backfill stops between two gaps; one in the middle of a request is left to end
        // on its own (its writes are idempotent) rather than hold the stop up.
        backfill_stop.stop();
        chain_stop.stop();
        follow_stop.stop();
        log::info!("listener: stopping {} connections", connections.len());
        // The last senders go with them: the writer then drains what is left and returns.
        connections.stop(&conn_stop);
        // The tape's last period becomes its file (its senders went with the connections).
        if let Some(t) = tape_thread {
            let _ = t.join();
        }
        let writer_ok = writer_thread.join().unwrap_or(false) && !writer_died;
        // The run ended cleanly once the writer did: what it did not commit is in the spool.
        writer_clean.store(writer_ok, std::sync::atomic::Ordering::SeqCst);
        keeper_stop.stop();
        let _ = keeper_thread.join();
        let deadline = Instant::now() + POLITE_CLOSE;
        while !backfill_thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if backfill_thread.is_finished() {
            let _ = backfill_thread.join();
        }
        // The chain reader and the follower end within a tick, or within their request.
        for t in [chain_thread, follower_thread].into_iter().flatten() {
            let deadline = Instant::now() + POLITE_CLOSE;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        if !writer_ok {
            return Err(Error::data("the writer thread ended before the listener"));
        }
        let s = self.health.snapshot();
        log::info!(
            "listener: stopped in {} ms; received {} trades, inserted {}, duplicates {}, \
             rejected {}, parse errors {}, reconnections {}",
            started.elapsed().as_millis(),
            s.trades_received,
            s.trades_inserted,
            s.duplicates_skipped,
            s.rows_rejected,
            s.parse_errors,
            s.reconnections
        );
        Ok(())
    }
}
