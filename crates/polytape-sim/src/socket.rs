//! One simulated market-channel socket: the server side of the protocol.
//!
//! One thread per socket, with the socket non-blocking after the handshake: the thread waits
//! on its queue of outgoing frames for a short tick, then reads whatever the client sent
//! (subscriptions, `PING`s, closes) and writes what is queued. A trade counts as delivered
//! only once the frame carrying it was flushed to the kernel on a live socket.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::mailbox::Mailbox;
use serde::Deserialize;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::frames::TradeRecord;
use crate::state::{Outgoing, SimState, SocketControl};

/// How long the thread waits for outgoing frames before it looks at the client's side
/// (new frames wake it at once; this only paces PONGs and idle checks).
const TICK: Duration = Duration::from_millis(25);

/// Most bytes written but not yet flushed before the thread stops taking new frames.
const MAX_UNFLUSHED: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: Option<String>,
    operation: Option<String>,
    assets_ids: Option<Vec<String>>,
    initial_dump: Option<bool>,
    custom_feature_enabled: Option<bool>,
}

pub(super) struct Session {
    id: u64,
    state: Arc<SimState>,
    control: Arc<SocketControl>,
    ws: WebSocket<TcpStream>,
    outgoing: Mailbox<Outgoing>,
    subscribed: bool,
    last_client_frame: Instant,
    last_client_ping: Instant,
    /// When the client last took everything written (or there was nothing to take).
    last_drained: Instant,
    last_sent: Instant,
    /// Frames taken off the queue but not yet accepted by the WebSocket's write buffer.
    waiting: VecDeque<Outgoing>,
    /// Trades in frames written to the WebSocket but not yet flushed.
    unflushed: Vec<TradeRecord>,
    unflushed_bytes: usize,
}

impl Session {
    pub(super) fn new(
        id: u64,
        state: Arc<SimState>,
        control: Arc<SocketControl>,
        stream: TcpStream,
        already_read: Vec<u8>,
        outgoing: Mailbox<Outgoing>,
    ) -> io::Result<Session> {
        stream.set_nonblocking(true)?;
        let _ = stream.set_nodelay(true);
        let config = WebSocketConfig::default()
            .max_message_size(Some(1 << 20))
            .max_frame_size(Some(1 << 20))
            .read_buffer_size(8 * 1024)
            .max_write_buffer_size(64 * 1024 * 1024);
        let ws = WebSocket::from_partially_read(stream, already_read, Role::Server, Some(config));
        Ok(Session {
            id,
            state,
            control,
            ws,
            outgoing,
            subscribed: false,
            last_client_frame: Instant::now(),
            last_client_ping: Instant::now(),
            last_drained: Instant::now(),
            last_sent: Instant::now(),
            waiting: VecDeque::new(),
            unflushed: Vec::new(),
            unflushed_bytes: 0,
        })
    }

    pub(super) fn run(mut self) {
        let reason = self.serve();
        log::debug!("sim socket {} ended: {reason}", self.id);
        self.state.unregister(self.id);
    }

    fn serve(&mut self) -> String {
        loop {
            if self.state.stopping.load(SeqCst) {
                let _ = self.ws.close(None);
                let _ = self.flush();
                return "sim stopping".into();
            }
            if self.control.drop.load(SeqCst) {
                return self.drop_abruptly();
            }
            if let Err(e) = self.read_client() {
                return e;
            }
            if self.last_client_frame.elapsed() > self.state.config.client_idle_timeout {
                let _ = self.ws.close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "idle".into(),
                }));
                let _ = self.flush();
                return "client idle".into();
            }
            if self.last_client_ping.elapsed() > self.state.config.ping_timeout {
                let _ = self.ws.close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "no PING".into(),
                }));
                let _ = self.flush();
                self.state.dropped_clients.fetch_add(1, SeqCst);
                return "no PING from the client".into();
            }
            if let Err(e) = self.write_pending() {
                return e;
            }
            if self.unflushed_bytes == 0 {
                self.last_drained = Instant::now();
            }
            let slow = self.state.config.slow_client_timeout;
            if !self.state.config.block_on_slow_sockets
                && slow.is_some_and(|t| self.last_drained.elapsed() > t)
            {
                // What waited for this client may or may not reach it: part of it can be in
                // the kernel already. It is on record as such, never as delivered.
                self.state
                    .maybe_delivered
                    .lock()
                    .extend(self.unflushed.drain(..));
                let _ = self.ws.get_mut().shutdown(Shutdown::Both);
                self.state.dropped_clients.fetch_add(1, SeqCst);
                return "client fell behind: dropped".into();
            }
        }
    }

    /// Ends the socket without a close frame: what is flushed still reaches the client, then
    /// it sees the stream end.
    fn drop_abruptly(&mut self) -> String {
        let _ = self.flush();
        let stream = self.ws.get_mut();
        let _ = stream.shutdown(Shutdown::Write);
        // Keep reading (and discarding) so the kernel does not answer the client with a
        // reset, which could destroy data it has not read yet.
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut sink = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match io::Read::read(stream, &mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        "dropped by fault".into()
    }

    fn read_client(&mut self) -> Result<(), String> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    self.last_client_frame = Instant::now();
                    if text.as_str() == "PING" {
                        self.last_client_ping = Instant::now();
                    }
                    self.on_text(text.as_str())?;
                }
                Ok(Message::Close(_)) => {
                    // Everything written before the close reply reaches the client first.
                    self.flush_until_done();
                    return Err("closed by client".into());
                }
                Ok(_) => self.last_client_frame = Instant::now(),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(());
                }
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    fn on_text(&mut self, text: &str) -> Result<(), String> {
        // The live service closes a client that sends too many ids in one frame.
        if text != "PING"
            && let Ok(m) = serde_json::from_str::<ClientMessage>(text)
            && m.assets_ids
                .as_ref()
                .is_some_and(|ids| ids.len() > self.state.config.max_ids_per_frame)
        {
            self.state.frames_refused.fetch_add(1, SeqCst);
            let _ = self.ws.close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: "too many assets in one frame".into(),
            }));
            self.flush_until_done();
            return Err("too many assets in one frame".into());
        }
        if !self.subscribed {
            // The subscription must come first; anything else is refused like the live
            // service does.
            let sub = serde_json::from_str::<ClientMessage>(text)
                .ok()
                .filter(|m| {
                    m.kind
                        .as_deref()
                        .is_some_and(|k| k.eq_ignore_ascii_case("market"))
                });
            let Some(sub) = sub else {
                let _ = self.ws.close(Some(CloseFrame {
                    code: CloseCode::Policy,
                    reason: "invalid subscription payload".into(),
                }));
                self.flush_until_done();
                return Err("invalid subscription".into());
            };
            self.subscribed = true;
            let assets = sub.assets_ids.unwrap_or_default();
            let custom = sub.custom_feature_enabled.unwrap_or(false);
            self.state
                .subscribe(self.id, &assets, custom, sub.initial_dump.unwrap_or(true));
            return Ok(());
        }
        if text == "PING" {
            return self.send_text("PONG".into());
        }
        match serde_json::from_str::<ClientMessage>(text) {
            Ok(m) if m.kind.is_none() && m.operation.is_some() => {
                let assets = m.assets_ids.unwrap_or_default();
                match m.operation.as_deref() {
                    Some("subscribe") => {
                        // A fresh subscription is what un-stalls an asset on the live feed.
                        self.state.unstall(&assets);
                        // The book of every asset named, held before or not: that is what
                        // lets a client probe a quiet socket, or resync a book.
                        self.state
                            .add_assets(self.id, &assets, m.initial_dump.unwrap_or(true));
                        Ok(())
                    }
                    Some("unsubscribe") => {
                        self.state.remove_assets(self.id, &assets);
                        Ok(())
                    }
                    _ => self.send_text("INVALID OPERATION".into()),
                }
            }
            _ => self.send_text("INVALID OPERATION".into()),
        }
    }

    fn send_text(&mut self, text: String) -> Result<(), String> {
        self.waiting.push_front(Outgoing::control(text));
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), String> {
        let control = Arc::clone(&self.control);
        // Wait for work only when there is nothing left to write.
        if self.waiting.is_empty() && self.unflushed_bytes == 0 {
            match self.outgoing.recv_timeout(TICK) {
                Ok(item) => self.waiting.push_back(item),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err("sim gone".into()),
            }
        }
        while self.unflushed_bytes < MAX_UNFLUSHED {
            match self.outgoing.try_recv() {
                Some(item) => self.waiting.push_back(item),
                None => break,
            }
        }
        let injections: Vec<Outgoing> = std::mem::take(&mut *control.inject.lock());
        self.waiting.extend(injections);
        let max_assets = self.state.max_assets_per_socket.load(Relaxed);
        let silent = || {
            control.frozen.load(Relaxed)
                || control.poisoned.load(Relaxed)
                || control.requested.load(Relaxed) > max_assets
        };
        if self.waiting.is_empty()
            && self.subscribed
            && !silent()
            && self.last_sent.elapsed() >= self.state.config.idle_noise
        {
            self.queue_noise();
        }
        while let Some(item) = self.waiting.pop_front() {
            if self.unflushed_bytes >= MAX_UNFLUSHED {
                self.waiting.push_front(item);
                break;
            }
            let is_data = item.data;
            if is_data && silent() {
                // A frozen or poisoned socket delivers nothing: these trades never count.
                continue;
            }
            if item.poison {
                control.poisoned.store(true, Relaxed);
            }
            self.unflushed_bytes += item.message.len();
            match self.ws.write(item.message) {
                Ok(()) => self.unflushed.extend_from_slice(&item.trades),
                // The frame is in tungstenite's write buffer; the socket is just full.
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.unflushed.extend_from_slice(&item.trades);
                    break;
                }
                Err(tungstenite::Error::WriteBufferFull(msg)) => {
                    self.unflushed_bytes -= msg.len();
                    self.waiting.push_front(Outgoing {
                        message: *msg,
                        ..item
                    });
                    break;
                }
                Err(e) => return Err(format!("write: {e}")),
            }
            if is_data {
                self.last_sent = Instant::now();
            }
        }
        self.flush()
    }

    /// An idle socket shows it is alive: the exchange makes a change on one of its assets
    /// (sent to every socket holding it). Asked at most once per idle period.
    fn queue_noise(&mut self) {
        self.state.request_noise(self.id);
        self.last_sent = Instant::now();
    }

    /// Flushes what was written; on success the trades in it are delivered.
    fn flush(&mut self) -> Result<(), String> {
        match self.ws.flush() {
            Ok(()) => {
                self.flushed();
                Ok(())
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.flush_waiting()
            }
            Err(e) => Err(format!("flush: {e}")),
        }
    }

    /// The client's receive window is full: wait for room in the kernel (blocking, up to a
    /// tick) instead of spinning on a non-blocking socket, which with dozens of slow sockets
    /// burns the CPU the client under test needs.
    fn flush_waiting(&mut self) -> Result<(), String> {
        let stream = self.ws.get_mut();
        let blocking = stream.set_nonblocking(false).is_ok()
            && stream
                .set_write_timeout(Some(Duration::from_millis(20)))
                .is_ok();
        if !blocking {
            std::thread::sleep(Duration::from_millis(1));
            return Ok(());
        }
        let result = self.ws.flush();
        let _ = self.ws.get_mut().set_nonblocking(true);
        match result {
            Ok(()) => {
                self.flushed();
                Ok(())
            }
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(format!("flush: {e}")),
        }
    }

    /// Everything written is in the kernel: the trades in it are delivered.
    fn flushed(&mut self) {
        if !self.unflushed.is_empty() {
            self.state.delivered(&self.unflushed);
            self.unflushed.clear();
        }
        self.unflushed_bytes = 0;
        self.last_drained = Instant::now();
    }

    fn flush_until_done(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match self.ws.flush() {
                Ok(()) => {
                    self.flushed();
                    return;
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
    }
}
