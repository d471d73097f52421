//! One socket's life: connect, subscribe, read, ping, notice death, reconnect.
//!
//! Each [`Connection`] runs on its own OS thread with a blocking `tungstenite` socket. Reads
//! time out every 250 ms so the thread can send its `PING`s and check its deadlines; a stop
//! is noticed within a tick, and [`Unblock`] shuts the socket down for a thread that is stuck
//! anywhere else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use tungstenite::Message;

use super::event::{Gap, Record, Trade, parse_frame, preview};
use super::liveness::{Check, Liveness};
use super::protocol;
use super::socket::{OpenGate, Socket, Unblock, hand_to, open, set_read_timeout};
use crate::announce::{Announcement, announcements};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::health::{ConnectionHealth, ConnectionState, FrameCounts, Health, now_ms, now_us};
use crate::stop::StopSignal;

/// How often a blocked read wakes to check timers and the stop flag.
const TICK: Duration = Duration::from_millis(250);

/// Counts of frames without trades are published to the shared health after this many
/// frames...
const PUBLISH_EVERY_FRAMES: u64 = 64;
/// ...or this long, whichever comes first.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);

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

/// Read timeout of both sockets while a recycle overlaps them.
const OVERLAP_TICK: Duration = Duration::from_millis(20);

fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(e) if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ))
}

/// Closes a socket nobody will read again: a close frame if it goes, then the TCP close.
fn drop_socket(mut ws: Socket) {
    let _ = ws.close(None);
    let _ = ws.flush();
}

/// When a connection's socket is next replaced, make before break.
struct Recycle {
    /// Zero: never.
    interval: Duration,
    /// The connection's share of the stagger, in [0, 1).
    stagger: f64,
    next: Option<Instant>,
    /// A turn at the open gate, booked once the recycle was due.
    turn: Option<Instant>,
    failures: u32,
}

impl Recycle {
    fn new(config: &Config, id: usize) -> Self {
        // Golden-ratio steps spread any number of connections evenly over an interval.
        let stagger = (id as f64 * 0.618_033_988_75).fract();
        Recycle {
            interval: config.recycle_interval,
            stagger,
            next: None,
            turn: None,
            failures: 0,
        }
    }

    /// A socket was just subscribed: its first recycle. The first socket of a connection
    /// lives a staggered part of the interval, so connections started together are not
    /// recycled together.
    fn started(&mut self, first: bool) {
        self.turn = None;
        self.next = (!self.interval.is_zero()).then(|| {
            let life = if first {
                self.interval.mul_f64(1.0 - self.stagger)
            } else {
                self.interval
            };
            Instant::now() + life
        });
    }

    /// After a recycle (or a failed one): when the next is due, returned as a delay.
    fn schedule(&mut self, config: &Config, succeeded: bool) -> Duration {
        self.turn = None;
        let delay = if succeeded {
            self.failures = 0;
            self.interval
        } else {
            self.failures = self.failures.saturating_add(1);
            Backoff::new(
                config.backoff_min.max(Duration::from_secs(1)),
                config.backoff_max,
            )
            .delay(self.failures)
            .min(self.interval)
        };
        self.next = (!self.interval.is_zero()).then(|| Instant::now() + delay);
        delay
    }

    /// `None`: not due; `Some(false)`: due, but no turn at the open gate booked yet;
    /// `Some(true)`: go.
    fn due(&self, now: Instant) -> Option<bool> {
        match (self.next, self.turn) {
            (Some(next), None) if now >= next => Some(false),
            (Some(_), Some(turn)) if now >= turn => Some(true),
            _ => None,
        }
    }
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

/// Why a session ended.
pub(crate) enum End {
    Stopped,
    /// The writer is gone: nothing more can be stored.
    WriterGone,
    Failed(String),
    RateLimited(Option<Duration>),
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
    counts: FrameCounts,
    last_publish: Instant,
    /// When the last data frame arrived (Unix ms), and, while the tokens have no socket,
    /// since when and why: reported as a [`Gap`] once they are subscribed again.
    last_data_ms: i64,
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
        } = shared;
        let status = health.add_connection(id, tokens.len());
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
            counts: FrameCounts::default(),
            last_publish: Instant::now(),
            last_data_ms: 0,
            lost: None,
            bad_frames: LogLimiter::new(),
            invalid_trades: LogLimiter::new(),
            was_blocked: false,
            behind_since_ms: None,
            recycle,
            sessions: 0,
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
    fn update_tokens(&self, cmd: &Command) {
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
    }

    /// One socket, from open to death.
    fn session(&mut self) -> End {
        let mut ws = match open(&self.config, self.tls.as_ref(), &self.unblock, TICK) {
            Ok(ws) => ws,
            Err(end) => return end,
        };
        // The subscription must be the first frame; at most 100 ids a frame (protocol.rs).
        let tokens = self.tokens.lock().clone();
        for frame in protocol::subscription_frames(&tokens, self.announce.is_some()) {
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
        loop {
            if self.stop.is_stopped() {
                return End::Stopped;
            }
            let step = self
                .apply_commands(ws)
                .and_then(|()| self.read_once(ws, &mut liveness))
                .and_then(|()| self.keep_alive(ws, &mut liveness))
                .and_then(|()| match self.recycle.due(Instant::now()) {
                    Some(true) => self.recycle(ws, &mut liveness),
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

    /// One read on `ws` (it returns within its read timeout), and what it brought.
    fn read_once(&mut self, ws: &mut Socket, liveness: &mut Liveness) -> Result<(), End> {
        match ws.read() {
            Ok(Message::Text(text)) => match text.as_str() {
                "PONG" => liveness.pong(),
                "INVALID OPERATION" => {
                    log::warn!("connection {}: server said INVALID OPERATION", self.id)
                }
                text => {
                    liveness.data(Instant::now());
                    self.on_frame(text)?;
                    if std::mem::take(&mut self.was_blocked) {
                        liveness.resume(Instant::now());
                    }
                }
            },
            Ok(Message::Binary(_)) => {
                self.counts.add_malformed();
                self.bad_frames.log(|held| {
                    log::warn!(
                        "connection {}: unexpected binary frame (+{held} held back)",
                        self.id
                    )
                });
            }
            Ok(Message::Close(frame)) => {
                // Keep reading: tungstenite answers the close and ends with ConnectionClosed.
                log::info!("connection {}: server closed: {frame:?}", self.id);
            }
            Ok(_) => {} // protocol ping/pong: tungstenite answers pings itself
            Err(e) if is_timeout(&e) => {
                self.publish(); // a quiet socket: nothing left to batch with
                // Read dry: whatever the reader fell behind on is read.
                self.behind_since_ms = None;
            }
            Err(tungstenite::Error::Capacity(e)) => {
                self.health.oversized_frame();
                return Err(End::Failed(format!("oversized frame ({e})")));
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Err(End::Failed("closed".into()));
            }
            Err(e) => return Err(End::Failed(format!("read: {e}"))),
        }
        Ok(())
    }

    /// The text `PING` when it is due, and the liveness verdict: fine, probe, or dead.
    fn keep_alive(&mut self, ws: &mut Socket, liveness: &mut Liveness) -> Result<(), End> {
        let now = Instant::now();
        if liveness.ping_due(now) {
            ws.send(Message::text("PING"))
                .map_err(|e| End::Failed(format!("ping: {e}")))?;
            liveness.pinged(now);
        }
        match liveness.check(now) {
            Check::Fine => Ok(()),
            Check::Probe => {
                // Quiet or frozen? Ask for one held token's book: a live socket answers.
                let probe = self.tokens.lock().first().cloned();
                if let Some(token) = probe {
                    log::debug!("connection {}: silent; probing with one book", self.id);
                    ws.send(Message::text(protocol::probe_frame(&token)))
                        .map_err(|e| End::Failed(format!("probe: {e}")))?;
                }
                Ok(())
            }
            Check::Dead(reason) => Err(End::Failed(reason)),
        }
    }

    /// Make before break: a replacement socket is opened and subscribed while `ws` is still
    /// read; once the replacement has delivered (the book of one held token, asked for with
    /// the subscription, proves the server processed it), `ws` is closed politely and the
    /// replacement takes its place. Trades of the overlap arrive twice and collide on the
    /// natural key; none is lost, so no gap is written. A replacement that fails or stays
    /// silent is dropped, the old socket kept, and the recycle tried again later.
    ///
    /// Commands wait in their channel meanwhile: the replacement is subscribed with the
    /// token list as it was, and they apply to it once it is in place.
    fn recycle(&mut self, ws: &mut Socket, liveness: &mut Liveness) -> Result<(), End> {
        let tokens = self.tokens.lock().clone();
        let Some(probe_token) = tokens.first().cloned() else {
            self.recycle.schedule(&self.config, false);
            return Ok(());
        };
        let mut new = match open(&self.config, self.tls.as_ref(), &self.unblock, OVERLAP_TICK) {
            Ok(new) => new,
            Err(end) => {
                let reason = match end {
                    End::Failed(r) => r,
                    End::RateLimited(_) => "upgrade answered 429".into(),
                    End::Stopped | End::WriterGone => "stopped".into(),
                };
                return self.recycle_failed(ws, None, &reason);
            }
        };
        let frames = protocol::subscription_frames(&tokens, self.announce.is_some());
        let probe = protocol::probe_frame(&probe_token);
        if let Err(e) = frames
            .into_iter()
            .chain(std::iter::once(probe))
            .try_for_each(|f| new.send(Message::text(f)))
        {
            return self.recycle_failed(ws, Some(new), &format!("subscribe: {e}"));
        }
        if let Err(e) = set_read_timeout(ws, OVERLAP_TICK) {
            return self.recycle_failed(ws, Some(new), &format!("socket setup: {e}"));
        }
        let deadline = Instant::now() + self.config.connect_timeout + self.config.probe_timeout;
        let mut new_pinged = Instant::now();
        loop {
            if self.stop.is_stopped() {
                drop_socket(new);
                return Err(End::Stopped);
            }
            // The old socket stays read (and alive) until the new one is proven.
            if let Err(end) = self
                .read_once(ws, liveness)
                .and_then(|()| self.keep_alive(ws, liveness))
            {
                drop_socket(new);
                return Err(end);
            }
            match new.read() {
                Ok(Message::Text(text)) if text.as_str() == "PONG" => {}
                Ok(Message::Text(text)) if text.as_str() != "INVALID OPERATION" => {
                    self.on_frame(text.as_str())?;
                    // Only the probe's answer proves every subscription frame before it
                    // was taken: a trade could come from the first frame alone.
                    if protocol::answers_probe(text.as_str(), &probe_token) {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => return self.recycle_failed(ws, Some(new), &format!("read: {e}")),
            }
            let now = Instant::now();
            if now > deadline {
                return self.recycle_failed(ws, Some(new), "no data in time");
            }
            if now.duration_since(new_pinged) >= self.config.ping_interval {
                if let Err(e) = new.send(Message::text("PING")) {
                    return self.recycle_failed(ws, Some(new), &format!("ping: {e}"));
                }
                new_pinged = now;
            }
        }
        // The replacement delivers: the old socket goes, read to its end.
        if let Err(e) = set_read_timeout(&new, TICK) {
            return self.recycle_failed(ws, Some(new), &format!("socket setup: {e}"));
        }
        let mut old = std::mem::replace(ws, new);
        self.close(&mut old);
        drop(old);
        hand_to(&self.unblock, ws);
        *liveness = Liveness::new(&self.config, Instant::now());
        self.recycle.schedule(&self.config, true);
        self.health.socket_recycled();
        log::info!(
            "connection {}: socket recycled (make before break; {} tokens)",
            self.id,
            tokens.len()
        );
        Ok(())
    }

    /// A recycle that did not work out: the old socket stays, as it was.
    fn recycle_failed(
        &mut self,
        ws: &mut Socket,
        new: Option<Socket>,
        reason: &str,
    ) -> Result<(), End> {
        if let Some(new) = new {
            drop_socket(new);
        }
        hand_to(&self.unblock, ws);
        let retry = self.recycle.schedule(&self.config, false);
        log::warn!(
            "connection {}: recycle failed ({reason}); keeping the old socket, next try in {} s",
            self.id,
            retry.as_secs()
        );
        set_read_timeout(ws, TICK).map_err(|e| End::Failed(format!("socket setup: {e}")))
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
            for frame in protocol::operation_frames(op, ids) {
                if let Err(e) = ws.send(Message::text(frame)) {
                    return Err(End::Failed(format!("{op}: {e}")));
                }
            }
            log::info!("connection {}: {op} {} tokens", self.id, ids.len());
        }
        Ok(())
    }

    fn on_frame(&mut self, text: &str) -> Result<(), End> {
        // One clock read per frame, not two.
        let received_us = now_us();
        let now = received_us / 1000;
        self.status.message(now);
        self.last_data_ms = now;
        match parse_frame(text, received_us, &mut self.parsed) {
            Ok(summary) => {
                self.counts.add_frame(&summary);
                if summary.announcements > 0 {
                    self.announce_from(text);
                }
                if let Some(reason) = summary.last_invalid {
                    self.invalid_trades.log(|held| {
                        log::warn!(
                            "connection {}: refused a trade: {reason}: {} (+{held} held back)",
                            self.id,
                            preview(text)
                        )
                    });
                }
            }
            Err(e) => {
                self.counts.add_malformed();
                self.bad_frames
                    .log(|held| log::warn!("connection {}: {e} (+{held} held back)", self.id));
            }
        }
        if !self.parsed.is_empty() {
            // Trades are published before they enter the channel, so a snapshot never shows
            // more trades inserted than received. Frames without trades (some fifty book
            // updates for every trade on the live feed) are only counted locally.
            let newest = self
                .parsed
                .iter()
                .map(|t| t.timestamp_ms)
                .max()
                .unwrap_or(0);
            self.counts.add_trades(self.parsed.len() as u64, newest);
            self.publish();
        }
        for trade in self.parsed.drain(..) {
            // A full channel blocks this reader (and so the socket): received trades are never
            // dropped. The time spent blocked is counted.
            match self.trades.try_send(Record::Trade(trade)) {
                Ok(()) => {}
                Err(TrySendError::Full(record)) => {
                    let start = Instant::now();
                    self.behind_since_ms.get_or_insert(now);
                    if self.trades.send(record).is_err() {
                        return Err(End::WriterGone);
                    }
                    self.health.send_blocked(start.elapsed().as_micros() as u64);
                    self.was_blocked = true;
                }
                Err(TrySendError::Disconnected(_)) => return Err(End::WriterGone),
            }
        }
        if self.counts.frames >= PUBLISH_EVERY_FRAMES
            || self.last_publish.elapsed() >= PUBLISH_EVERY
        {
            self.publish();
        }
        Ok(())
    }

    /// Passes a frame's market announcements to the follower (if the listener has one).
    fn announce_from(&self, text: &str) {
        let Some(tx) = &self.announce else { return };
        for a in announcements(text) {
            if tx.try_send(a).is_err() {
                log::warn!(
                    "connection {}: announcement queue full; the re-sync will catch up",
                    self.id
                );
            }
        }
    }

    fn publish(&mut self) {
        if !self.counts.is_empty() {
            self.health.publish(&mut self.counts);
        }
        self.last_publish = Instant::now();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(interval: Duration) -> Config {
        Config::builder()
            .recycle_interval(interval)
            .build()
            .expect("config")
    }

    #[test]
    fn first_recycles_are_staggered_then_periodic() {
        let hour = Duration::from_secs(3600);
        let c = config(hour);
        let lives: Vec<Duration> = (0..8)
            .map(|id| {
                let mut r = Recycle::new(&c, id);
                r.started(true);
                r.next.expect("scheduled") - Instant::now()
            })
            .collect();
        // Connections started together are recycled apart: no two within 3 minutes.
        for (i, a) in lives.iter().enumerate() {
            assert!(*a <= hour);
            for b in &lives[i + 1..] {
                assert!(a.abs_diff(*b) > Duration::from_secs(180), "{lives:?}");
            }
        }
        let mut r = Recycle::new(&c, 3);
        r.started(false);
        let life = r.next.expect("scheduled") - Instant::now();
        assert!(
            life > hour - Duration::from_secs(1),
            "later sockets live the interval"
        );
    }

    #[test]
    fn a_due_recycle_books_a_turn_first_and_failures_back_off() {
        let c = config(Duration::from_secs(60));
        let mut r = Recycle::new(&c, 0);
        assert_eq!(
            r.due(Instant::now()),
            None,
            "nothing before the first socket"
        );
        r.next = Some(Instant::now());
        assert_eq!(r.due(Instant::now()), Some(false), "due: book a turn");
        r.turn = Some(Instant::now() + Duration::from_secs(5));
        assert_eq!(r.due(Instant::now()), None, "waiting for the turn");
        r.turn = Some(Instant::now());
        assert_eq!(r.due(Instant::now()), Some(true));
        let first = r.schedule(&c, false);
        let second = r.schedule(&c, false);
        assert!(first >= Duration::from_secs(1) && second >= first);
        for _ in 0..20 {
            assert!(
                r.schedule(&c, false) <= Duration::from_secs(60),
                "capped by the interval"
            );
        }
        assert_eq!(r.schedule(&c, true), Duration::from_secs(60));
        assert_eq!(r.failures, 0);
        assert_eq!(r.turn, None);
    }

    #[test]
    fn a_zero_interval_never_recycles() {
        let c = config(Duration::ZERO);
        let mut r = Recycle::new(&c, 1);
        r.started(true);
        assert_eq!(r.next, None);
        r.schedule(&c, false);
        assert_eq!(r.due(Instant::now() + Duration::from_secs(86_400)), None);
    }
}
