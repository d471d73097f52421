//! One socket's life: connect, subscribe, read, ping, notice death, reconnect.
//!
//! Each [`Connection`] runs on its own OS thread with a blocking `tungstenite` socket. Reads
//! time out every 250 ms while a deadline is near (a `PING` due, a `PONG` or a probe late),
//! every second otherwise, so the thread can send its `PING`s and check its deadlines; a stop
//! is noticed within a tick, and [`Unblock`] shuts the socket down for a thread that is stuck
//! anywhere else.
//!
//! - this file: the connection's life (sessions, reconnects with backoff, gaps, commands);
//! - `read.rs`: one read and what it brings (frames, trades into the channel, liveness);
//! - `recycle.rs`: the planned replacement of a socket, make before break, and
//!   `schedule.rs`: when it is due.
//!
//! A connection knows nothing of what its events mean beyond trades and gaps: market
//! announcements are handed up on the channel it was given, and the listener decides.

mod books;
mod read;
mod recycle;
mod schedule;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use tungstenite::Message;

use self::schedule::Recycle;
use super::announcement::Announcement;
use super::event::{Gap, Record, Trade};
use super::liveness::Liveness;
use super::protocol;
use super::socket::{End, OpenGate, Socket, Unblock, open, set_read_timeout};
use crate::backoff::Backoff;
use crate::book::{LiveBooks, TapeMsg};
use crate::config::Config;
use crate::health::{ConnectionHealth, ConnectionState, FrameCounts, Health, now_ms};
use crate::stop::StopSignal;

/// How often a blocked read wakes to check timers and the stop flag while a deadline is
/// near (or the liveness timers are short, as in tests).
const TICK: Duration = Duration::from_millis(250);
/// How long a read of a socket with no deadline within it may block: an idle socket wakes
/// once a second, not four times (a stop or a command then waits up to this long).
const IDLE_TICK: Duration = Duration::from_secs(1);

/// A socket that lived this long before dying resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// A change to a connection's subscription while it runs.
#[derive(Debug, Clone)]
pub enum Command {
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    /// Makes the connection thread panic: for the supervision test only.
    #[cfg(feature = "bench")]
    Panic,
}

fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(e) if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ))
}

/// Logs at most one line per interval, counting what it held back.
struct LogLimiter {
    last: Option<Instant>,
    held_back: u64,
}

impl LogLimiter {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn new() -> Self {
        LogLimiter {
            last: None,
            held_back: 0,
        }
    }

    fn log(&mut self, f: impl FnOnce(u64)) {
        if self.last.is_none_or(|t| t.elapsed() >= Self::INTERVAL) {
            f(self.held_back);
            self.held_back = 0;
            self.last = Some(Instant::now());
        } else {
            self.held_back += 1;
        }
    }
}

/// What every connection of a listener shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub config: Arc<Config>,
    pub trades: Sender<Record>,
    pub health: Health,
    pub stop: StopSignal,
    pub gate: Arc<OpenGate>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Where market announcements go, when the listener follows them.
    pub announce: Option<Sender<Announcement>>,
    /// Where book tape rows go, when the tape is on.
    pub tape: Option<Sender<TapeMsg>>,
}

/// One connection: a chunk of tokens, held on one socket for as long as the listener runs.
pub struct Connection {
    id: usize,
    tokens: Arc<Mutex<Vec<String>>>,
    commands: Receiver<Command>,
    config: Arc<Config>,
    trades: Sender<Record>,
    health: Health,
    status: Arc<ConnectionHealth>,
    stop: StopSignal,
    gate: Arc<OpenGate>,
    tls: Option<Arc<rustls::ClientConfig>>,
    announce: Option<Sender<Announcement>>,
    unblock: Unblock,
    parsed: Vec<Trade>,
    /// The events of the frame being read (its scan), reused from frame to frame.
    events: Vec<crate::feed::scan::Span>,
    counts: FrameCounts,
    last_publish: Instant,
    /// When the last data frame arrived (Unix ms), and, while the tokens have no socket,
    /// since when and why: reported as a [`Gap`] once they are subscribed again.
    last_data_ms: i64,
    /// The last local time (µs) stamped on an event: each event of the socket gets a later
    /// one, so events that share a feed stamp keep their delivery order in the tape, the
    /// bars' last price and the book tape.
    last_stamp_us: i64,
    lost: Option<(i64, String)>,
    bad_frames: LogLimiter,
    invalid_trades: LogLimiter,
    /// A send waited on a full channel since the read loop last looked.
    was_blocked: bool,
    /// When this reader fell behind (a send waited), until it reads its socket dry.
    behind_since_ms: Option<i64>,
    recycle: Recycle,
    /// Sockets subscribed so far.
    sessions: u64,
    /// The held tokens' books (`None`: the book side is off).
    books: Option<LiveBooks>,
    tape: Option<Sender<TapeMsg>>,
    /// Tape messages that must reach the tape in order and could not yet (it was behind):
    /// periods' openings and `Lost`s. Rows wait for nothing: they are dropped instead.
    tape_backlog: Vec<TapeMsg>,
}

/// What a listener keeps of a connection it started.
pub(crate) struct ConnectionParts {
    pub tokens: Arc<Mutex<Vec<String>>>,
    pub commands: Sender<Command>,
    pub unblock: Unblock,
}

impl Connection {
    pub(crate) fn new(
        id: usize,
        tokens: Vec<String>,
        shared: Shared,
    ) -> (Connection, ConnectionParts) {
        let Shared {
            config,
            trades,
            health,
            stop,
            gate,
            tls,
            announce,
            tape,
        } = shared;
        let status = health.add_connection(id, tokens.len());
        let books_every = config.book_snapshot_interval.as_millis() as i64;
        let book_depth = config.book_depth;
        let tape_roll_us = tape
            .is_some()
            .then(|| crate::book::tape_roll_us(config.book_tape_roll));
        let recycle = Recycle::new(&config, id);
        let tokens = Arc::new(Mutex::new(tokens));
        let (tx, rx) = crossbeam_channel::unbounded();
        let unblock = Unblock::default();
        let parts = ConnectionParts {
            tokens: Arc::clone(&tokens),
            commands: tx,
            unblock: unblock.clone(),
        };
        let conn = Connection {
            id,
            tokens,
            commands: rx,
            config,
            trades,
            health,
            status,
            stop,
            gate,
            tls,
            announce,
            unblock,
            parsed: Vec::new(),
            events: Vec::new(),
            counts: FrameCounts::default(),
            last_publish: Instant::now(),
            last_data_ms: 0,
            last_stamp_us: 0,
            lost: None,
            bad_frames: LogLimiter::new(),
            invalid_trades: LogLimiter::new(),
            was_blocked: false,
            behind_since_ms: None,
            recycle,
            sessions: 0,
            books: (books_every > 0)
                .then(|| LiveBooks::new(books_every, book_depth, tape_roll_us, now_ms())),
            tape,
            tape_backlog: Vec::new(),
        };
        (conn, parts)
    }

    /// A connection taking over the tokens of one whose thread ended unexpectedly: they have
    /// had no socket since `from_ms`, which becomes a gap at the resubscription.
    pub(crate) fn with_loss(mut self, from_ms: i64, reason: &str) -> Self {
        self.lost = Some((from_ms, reason.to_owned()));
        self
    }

    /// Runs until stopped (or until the writer is gone).
    pub fn run(mut self) {
        let mut attempt: u32 = 0;
        loop {
            if self.stop.is_stopped() {
                break;
            }
            self.apply_commands_offline();
            if self.tokens.lock().is_empty() {
                // Nothing to hold: wait for a subscription instead of opening an empty socket.
                self.status.set_state(ConnectionState::Backoff);
                if self.stop.wait_timeout(TICK) {
                    break;
                }
                continue;
            }
            self.status.set_state(ConnectionState::Connecting);
            if !self.gate.wait_turn(&self.stop) {
                break;
            }
            let started = Instant::now();
            let end = self.session();
            self.unblock.set(None);
            let delay = match end {
                End::Stopped => break,
                End::WriterGone => {
                    log::error!("connection {}: the writer is gone; stopping", self.id);
                    break;
                }
                End::Failed(reason) => {
                    if started.elapsed() >= HEALTHY_SESSION {
                        attempt = 0;
                    }
                    self.note_loss(&reason);
                    self.books_lost();
                    let d = self.backoff(attempt);
                    log::warn!(
                        "connection {}: {reason}; reconnecting in {} ms",
                        self.id,
                        d.as_millis()
                    );
                    d
                }
                End::RateLimited(retry_after) => {
                    self.note_loss("upgrade answered 429");
                    self.books_lost();
                    let d = self.backoff(attempt).max(retry_after.unwrap_or_default());
                    log::warn!(
                        "connection {}: upgrade answered 429; retrying in {} ms",
                        self.id,
                        d.as_millis()
                    );
                    d
                }
            };
            attempt = attempt.saturating_add(1);
            self.status.set_state(ConnectionState::Backoff);
            self.status.reconnected();
            if self.stop.wait_timeout(delay) {
                break;
            }
        }
        // Cuts still waiting for a fresh book are stored (nothing found them wrong).
        self.books_lost();
        if let Some(books) = &mut self.books {
            books.publish(self.health.books());
            books.unpublish(self.health.books());
        }
        // Tokens without a socket when the stop came: their gap ends now, and is written
        // before the listener exits (the writer drains the channel after every connection).
        if let Some((from_ms, reason)) = self.lost.take() {
            let gap = Gap {
                connection: Some(self.id),
                from_ms,
                to_ms: now_ms(),
                reason: format!("{reason} (no socket until the stop)"),
                asset_ids: self.tokens.lock().clone(),
            };
            log::warn!(
                "connection {}: stopping with {} tokens still without a socket; recording the gap",
                self.id,
                gap.asset_ids.len()
            );
            let _ = self.trades.send(Record::Gap(gap));
        }
        self.status.set_state(ConnectionState::Stopped);
    }

    /// The tokens just lost their socket (or failed to get one back): the gap starts at the
    /// last data frame, unless it started earlier already. Before the first subscription
    /// there is nothing to lose.
    ///
    /// A reader that fell behind (it waited on a full channel and has not yet read its
    /// socket dry) may have lost what the server dropped while it waited: then the gap starts
    /// when it fell behind, whatever it read afterwards.
    fn note_loss(&mut self, reason: &str) {
        if self.lost.is_none() && self.last_data_ms > 0 {
            let from = match self.behind_since_ms.take() {
                Some(behind) => behind.min(self.last_data_ms),
                None => self.last_data_ms,
            };
            self.lost = Some((from, reason.to_owned()));
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        Backoff::new(self.config.backoff_min, self.config.backoff_max).delay(attempt)
    }

    /// Commands that arrive while no socket is open only change the token list.
    fn apply_commands_offline(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            self.update_tokens(&cmd);
        }
    }

    /// Changes the token list the next (re)subscription uses.
    fn update_tokens(&mut self, cmd: &Command) {
        let mut tokens = self.tokens.lock();
        match cmd {
            Command::Subscribe(add) => {
                for t in add {
                    if !tokens.contains(t) {
                        tokens.push(t.clone());
                    }
                }
            }
            Command::Unsubscribe(remove) => tokens.retain(|t| !remove.contains(t)),
            #[cfg(feature = "bench")]
            Command::Panic => {}
        }
        self.status.set_tokens(tokens.len());
        if let Some(books) = &mut self.books {
            books.retain(&tokens, now_ms());
        }
    }

    /// One socket, from open to death.
    fn session(&mut self) -> End {
        let mut ws = match open(&self.config, self.tls.as_ref(), &self.unblock, TICK) {
            Ok(ws) => ws,
            Err(end) => return end,
        };
        // The subscription must be the first frame; at most 100 ids a frame (protocol.rs).
        let tokens = self.tokens.lock().clone();
        for frame in
            protocol::subscription_frames(&tokens, self.announce.is_some(), self.books.is_some())
        {
            if let Err(e) = ws.send(Message::text(frame)) {
                return End::Failed(format!("subscribe: {e}"));
            }
        }
        self.status.set_tokens(tokens.len());
        self.status.set_state(ConnectionState::Connected);
        if let Some((from_ms, reason)) = self.lost.take() {
            let gap = Gap {
                connection: Some(self.id),
                from_ms,
                to_ms: now_ms(),
                reason,
                asset_ids: tokens.clone(),
            };
            log::warn!(
                "connection {}: {} tokens had no socket for {} ms; recording the gap",
                self.id,
                gap.asset_ids.len(),
                gap.to_ms - gap.from_ms
            );
            if self.trades.send(Record::Gap(gap)).is_err() {
                return End::WriterGone;
            }
        }
        // From now on these tokens are covered: a loss is measured from here at the latest.
        self.last_data_ms = now_ms();
        self.recycle.started(self.sessions == 0);
        self.sessions += 1;
        log::info!("connection {}: subscribed {} tokens", self.id, tokens.len());
        let end = self.read_loop(&mut ws);
        if matches!(end, End::Stopped) {
            self.close(&mut ws);
        }
        self.publish();
        end
    }

    fn read_loop(&mut self, ws: &mut Socket) -> End {
        let mut liveness = Liveness::new(&self.config, Instant::now());
        // The read timeout `open` set; changed only when it must (a system call).
        let mut tick = TICK;
        loop {
            if self.stop.is_stopped() {
                return End::Stopped;
            }
            let want = if liveness.next_due(Instant::now()) > IDLE_TICK + TICK {
                IDLE_TICK
            } else {
                TICK
            };
            if want != tick {
                if let Err(e) = set_read_timeout(ws, want) {
                    return End::Failed(format!("socket setup: {e}"));
                }
                tick = want;
            }
            let step = self
                .apply_commands(ws)
                .and_then(|()| self.read_once(ws, &mut liveness))
                .and_then(|()| self.keep_alive(ws, &mut liveness))
                .and_then(|()| match self.recycle.due(Instant::now()) {
                    Some(true) => {
                        // Whichever socket comes out, its timeout is set again next turn.
                        tick = Duration::ZERO;
                        self.recycle(ws, &mut liveness)
                    }
                    Some(false) => {
                        // Due: book a turn at the open gate and keep reading until it comes.
                        self.recycle.turn = Some(self.gate.reserve());
                        Ok(())
                    }
                    None => Ok(()),
                });
            if let Err(end) = step {
                return end;
            }
        }
    }

    fn apply_commands(&mut self, ws: &mut Socket) -> Result<(), End> {
        while let Ok(cmd) = self.commands.try_recv() {
            let (op, ids) = match &cmd {
                Command::Subscribe(ids) => ("subscribe", ids),
                Command::Unsubscribe(ids) => ("unsubscribe", ids),
                #[cfg(feature = "bench")]
                Command::Panic => panic!("connection {}: told to panic (test)", self.id),
            };
            self.update_tokens(&cmd);
            for frame in protocol::operation_frames(op, ids, self.books.is_some()) {
                if let Err(e) = ws.send(Message::text(frame)) {
                    return Err(End::Failed(format!("{op}: {e}")));
                }
            }
            log::info!("connection {}: {op} {} tokens", self.id, ids.len());
        }
        Ok(())
    }

    /// Closes politely: sends a close frame and keeps reading until the server's reply, so
    /// trades already on the wire are still stored.
    fn close(&mut self, ws: &mut Socket) {
        let _ = ws.close(None);
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            match ws.read() {
                Ok(Message::Text(text)) if text.as_str() != "PONG" => {
                    if self.on_frame(text.as_str()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => return,
            }
        }
    }
}
