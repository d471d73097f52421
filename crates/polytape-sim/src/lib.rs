//! `polytape-sim`: a local Polymarket for tests and benchmarks.
//!
//! One address serves the market channel at `/ws/market`, the Gamma listing at
//! `/markets/keyset` and `/markets`, and control endpoints under `/sim/`. Markets come from a
//! seed; trades are generated at a set rate for the assets that sockets subscribe to, and every
//! trade that was actually delivered (flushed on a live socket) is logged, so a test can check
//! "stored == delivered" exactly. Faults can be switched on at start and at run time, through
//! the methods of [`Sim`] or `POST /sim/...`.

pub mod frames;
mod gamma;
mod socket;
pub mod universe;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tungstenite::Message;

pub use frames::TradeRecord;
use polytape_http::{self as http, Request, Response, Server};
use universe::{SimMarket, SimResolution, generate_market};

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Everything the simulator can be told at start.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: String,
    /// Markets in the universe (about one in ten is closed).
    pub markets: u64,
    pub seed: u64,
    /// Trades per second over all subscribed assets.
    pub trade_rate: f64,
    /// Stop generating after this many trades.
    pub max_trades: Option<u64>,
    /// `price_change` events sent for every trade (the live feed: about 50).
    pub noise_per_trade: u32,
    /// A socket that sent nothing for this long gets a `price_change`, as the live feed
    /// always has some traffic on a socket of many assets.
    pub idle_noise: Duration,
    /// A socket whose client sent no frame for this long is closed.
    pub client_idle_timeout: Duration,
    /// Sockets holding more assets than this silently get nothing (the live feed's ~500).
    pub max_assets_per_socket: usize,
    /// WebSocket upgrades accepted per second before answering 429 (0: no limit).
    pub upgrades_per_sec: u32,
    /// Every socket starts frozen: PONG answered, no data.
    pub freeze: bool,
    /// A socket whose queue stays full: `false` (default) skips its trades after two
    /// seconds, as a server drops a slow consumer's data; `true` waits for it, so every
    /// generated trade is delivered (benchmarks at full speed).
    pub block_on_slow_sockets: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: "127.0.0.1:8765".into(),
            markets: 1000,
            seed: 1,
            trade_rate: 100.0,
            max_trades: None,
            noise_per_trade: 0,
            idle_noise: Duration::from_secs(1),
            client_idle_timeout: Duration::from_secs(30),
            max_assets_per_socket: 500,
            upgrades_per_sec: 0,
            freeze: false,
            block_on_slow_sockets: false,
        }
    }
}

/// A trade the simulator delivered, in the form the database should hold it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SimTrade {
    pub timestamp_ms: i64,
    pub asset_id: String,
    pub market: String,
    /// Canonical decimal text (`0.480`).
    pub price: String,
    pub size: String,
    pub side: String,
    pub transaction_hash: Option<String>,
}

/// Counters of the simulator, served at `/sim/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct SimStats {
    pub trades_generated: u64,
    pub trades_delivered: u64,
    pub sockets_open: usize,
    pub sockets_opened: u64,
    pub upgrades_rejected: u64,
    pub subscribed_assets: usize,
    pub markets: usize,
}

/// A frame queued for one socket.
pub(crate) struct Outgoing {
    message: Message,
    /// Trades the frame carries: delivered once it is flushed.
    trades: Vec<TradeRecord>,
    /// Market data (as opposed to `PONG` and protocol replies): withheld on a frozen socket.
    data: bool,
    /// After this frame the socket delivers nothing more (used after an oversized frame).
    poison: bool,
}

impl Outgoing {
    fn frame(text: String, trades: Vec<TradeRecord>) -> Self {
        Outgoing {
            message: Message::text(text),
            trades,
            data: true,
            poison: false,
        }
    }

    fn control(text: String) -> Self {
        Outgoing {
            data: false,
            ..Outgoing::frame(text, Vec::new())
        }
    }
}

/// Per-socket fault switches.
#[derive(Default)]
pub(crate) struct SocketControl {
    /// Asset ids the client asked for, known or not (what the ~500 limit counts).
    requested: AtomicUsize,
    frozen: AtomicBool,
    drop: AtomicBool,
    poisoned: AtomicBool,
    inject: Mutex<Vec<Outgoing>>,
}

struct SocketEntry {
    tx: Sender<Outgoing>,
    /// Every asset id the client asked for, known or not (what the ~500 limit counts).
    requested: HashSet<String>,
    /// The known ones, as (market index, outcome).
    assets: HashSet<(u32, u8)>,
    custom: bool,
    control: Arc<SocketControl>,
}

#[derive(Default)]
struct Hub {
    sockets: HashMap<u64, SocketEntry>,
    subscribers: HashMap<(u32, u8), Vec<u64>>,
    /// Bumped on every change that affects which assets trade.
    version: u64,
}

pub(crate) struct SimState {
    config: SimConfig,
    markets: RwLock<Vec<SimMarket>>,
    asset_index: RwLock<HashMap<String, (u32, u8)>>,
    hub: Mutex<Hub>,
    stalled: RwLock<HashSet<(u32, u8)>>,
    max_assets_per_socket: AtomicUsize,
    upgrades_per_sec: AtomicU32,
    upgrade_window: Mutex<(Instant, u32)>,
    freeze_new: AtomicBool,
    /// The next this-many listing requests fail with `gamma_fail_status`.
    gamma_failures: AtomicU32,
    gamma_fail_status: AtomicU32,
    delivered: Mutex<Vec<TradeRecord>>,
    next_socket: AtomicU64,
    trades_generated: AtomicU64,
    sockets_opened: AtomicU64,
    upgrades_rejected: AtomicU64,
    stopping: AtomicBool,
}

impl SimState {
    fn register(&self, id: u64, tx: Sender<Outgoing>, control: Arc<SocketControl>) {
        let mut hub = self.hub.lock();
        hub.sockets.insert(
            id,
            SocketEntry {
                tx,
                requested: HashSet::new(),
                assets: HashSet::new(),
                custom: false,
                control,
            },
        );
    }

    fn unregister(&self, id: u64) {
        let mut hub = self.hub.lock();
        if let Some(entry) = hub.sockets.remove(&id) {
            for a in entry.assets {
                if let Some(subs) = hub.subscribers.get_mut(&a) {
                    subs.retain(|s| *s != id);
                    if subs.is_empty() {
                        hub.subscribers.remove(&a);
                    }
                }
            }
            hub.version += 1;
        }
    }

    /// The first subscription; returns the known assets, for the initial dump.
    fn subscribe(&self, id: u64, assets: &[String], custom: bool) -> Vec<(u32, u8)> {
        if let Some(e) = self.hub.lock().sockets.get_mut(&id) {
            e.custom = custom;
        }
        self.add_assets(id, assets)
    }

    fn add_assets(&self, id: u64, assets: &[String]) -> Vec<(u32, u8)> {
        let index = self.asset_index.read();
        let mut hub = self.hub.lock();
        let mut added = Vec::new();
        let Some(entry) = hub.sockets.get_mut(&id) else {
            return added;
        };
        for a in assets {
            entry.requested.insert(a.clone());
            if let Some(&key) = index.get(a) {
                if entry.assets.insert(key) {
                    added.push(key);
                }
            }
        }
        entry
            .control
            .requested
            .store(entry.requested.len(), Relaxed);
        for key in &added {
            hub.subscribers.entry(*key).or_default().push(id);
        }
        hub.version += 1;
        added
    }

    fn remove_assets(&self, id: u64, assets: &[String]) {
        let index = self.asset_index.read();
        let mut hub = self.hub.lock();
        let mut removed = Vec::new();
        if let Some(entry) = hub.sockets.get_mut(&id) {
            for a in assets {
                entry.requested.remove(a);
                if let Some(&key) = index.get(a) {
                    if entry.assets.remove(&key) {
                        removed.push(key);
                    }
                }
            }
            entry
                .control
                .requested
                .store(entry.requested.len(), Relaxed);
        }
        for key in removed {
            if let Some(subs) = hub.subscribers.get_mut(&key) {
                subs.retain(|s| *s != id);
                if subs.is_empty() {
                    hub.subscribers.remove(&key);
                }
            }
        }
        hub.version += 1;
    }

    fn any_asset_of(&self, id: u64) -> Option<(u32, u8)> {
        let hub = self.hub.lock();
        let entry = hub.sockets.get(&id)?;
        if entry.requested.len() > self.max_assets_per_socket.load(Relaxed) {
            return None;
        }
        let n = entry.assets.len();
        if n == 0 {
            return None;
        }
        entry.assets.iter().nth(fastrand::usize(0..n)).copied()
    }

    fn delivered(&self, trades: &[TradeRecord]) {
        if !trades.is_empty() {
            self.delivered.lock().extend_from_slice(trades);
        }
    }

    /// Whether an upgrade may go ahead under the rate limit.
    fn admit_upgrade(&self) -> bool {
        let limit = self.upgrades_per_sec.load(Relaxed);
        if limit == 0 {
            return true;
        }
        let mut w = self.upgrade_window.lock();
        if w.0.elapsed() >= Duration::from_secs(1) {
            *w = (Instant::now(), 0);
        }
        if w.1 >= limit {
            return false;
        }
        w.1 += 1;
        true
    }

    fn record_to_trade(&self, t: &TradeRecord) -> Option<SimTrade> {
        let markets = self.markets.read();
        let m = markets.get(t.market as usize)?;
        Some(SimTrade {
            timestamp_ms: t.timestamp_ms,
            asset_id: m.token_ids[t.outcome as usize].clone(),
            market: m.condition_id.clone(),
            price: t.price(),
            size: t.size(),
            side: t.side().to_owned(),
            transaction_hash: t.transaction_hash(),
        })
    }

    /// Freezes (or thaws) every open socket, and sockets opened from now on: `PONG` is still
    /// answered, no data is sent.
    fn freeze(&self, on: bool) -> usize {
        self.freeze_new.store(on, SeqCst);
        self.for_each_socket(|c| c.frozen.store(on, SeqCst))
    }

    /// Stops (or restarts) trades and updates for one asset while its siblings go on.
    fn stall_asset(&self, asset_id: &str, on: bool) -> bool {
        let Some(&key) = self.asset_index.read().get(asset_id) else {
            return false;
        };
        let mut stalled = self.stalled.write();
        if on {
            stalled.insert(key);
        } else {
            stalled.remove(&key);
        }
        self.hub.lock().version += 1;
        true
    }

    /// Sockets holding more than `n` assets silently get nothing.
    fn set_max_assets_per_socket(&self, n: usize) {
        self.max_assets_per_socket.store(n, SeqCst);
        self.hub.lock().version += 1;
    }

    /// Sends every open socket a set of malformed frames (bad JSON, bad numbers, unknown
    /// events). None carries a valid trade.
    fn send_malformed(&self) -> usize {
        let markets = self.markets.read();
        let Some(m) = markets.first().cloned() else {
            return 0;
        };
        drop(markets);
        let now = crate::now_ms();
        self.for_each_socket(|c| {
            let mut inject = c.inject.lock();
            for text in frames::malformed_frames(&m, now) {
                inject.push(Outgoing::frame(text, Vec::new()));
            }
            inject.push(Outgoing {
                message: Message::binary(vec![0xde, 0xad, 0xbe, 0xef]),
                ..Outgoing::frame(String::new(), Vec::new())
            });
        })
    }

    /// Sends every open socket one text frame of `bytes` bytes; after it that socket
    /// delivers nothing more, as a client must drop it anyway.
    fn send_oversized(&self, bytes: usize) -> usize {
        let mut text = String::with_capacity(bytes);
        text.push('[');
        while text.len() + 1 < bytes {
            text.push(' ');
        }
        text.push(']');
        self.for_each_socket(|c| {
            c.inject.lock().push(Outgoing {
                poison: true,
                ..Outgoing::frame(text.clone(), Vec::new())
            });
        })
    }

    /// Adds an open market to the universe (and announces it as `new_market`).
    fn add_market(&self) -> SimMarket {
        let mut markets = self.markets.write();
        let index = markets.len() as u64;
        let mut m = generate_market(self.config.seed, index);
        m.closed = false;
        m.resolution = None;
        m.enable_order_book = true;
        m.version = "v1";
        m.legacy_token_ids = None;
        markets.push(m.clone());
        drop(markets);
        let mut index_map = self.asset_index.write();
        for (o, t) in m.token_ids.iter().enumerate() {
            index_map.insert(t.clone(), (index as u32, o as u8));
        }
        drop(index_map);
        let mut text = String::new();
        frames::new_market_event(&mut text, &m, crate::now_ms());
        self.broadcast_custom(&text);
        m
    }

    /// Closes a market: it stops trading, and Gamma shows it closed with `resolution`.
    fn close_market(&self, condition_id: &str, resolution: SimResolution) -> bool {
        let mut markets = self.markets.write();
        let Some(m) = markets.iter_mut().find(|m| m.condition_id == condition_id) else {
            return false;
        };
        m.closed = true;
        m.resolution = Some(resolution);
        let m = m.clone();
        drop(markets);
        self.hub.lock().version += 1;
        if let SimResolution::Winner(w) = resolution {
            let mut text = String::new();
            frames::market_resolved_event(&mut text, &m, w, crate::now_ms());
            self.broadcast_custom(&text);
        }
        true
    }

    fn for_each_socket(&self, f: impl Fn(&SocketControl)) -> usize {
        let hub = self.hub.lock();
        for e in hub.sockets.values() {
            f(&e.control);
        }
        hub.sockets.len()
    }

    /// Queues `text` on every socket with the custom feature on.
    fn broadcast_custom(&self, text: &str) {
        let hub = self.hub.lock();
        for e in hub.sockets.values().filter(|e| e.custom) {
            let _ = e.tx.try_send(Outgoing::frame(text.to_owned(), Vec::new()));
        }
    }
}

/// A running simulator. Dropping it stops it.
pub struct Sim {
    state: Arc<SimState>,
    server: Server,
    generator: Option<JoinHandle<()>>,
}

impl Sim {
    pub fn start(config: SimConfig) -> io::Result<Sim> {
        let markets: Vec<SimMarket> = (0..config.markets)
            .map(|i| generate_market(config.seed, i))
            .collect();
        let mut asset_index = HashMap::with_capacity(markets.len() * 2);
        for (i, m) in markets.iter().enumerate() {
            for (o, t) in m.token_ids.iter().enumerate() {
                asset_index.insert(t.clone(), (i as u32, o as u8));
            }
        }
        let state = Arc::new(SimState {
            markets: RwLock::new(markets),
            asset_index: RwLock::new(asset_index),
            hub: Mutex::new(Hub::default()),
            stalled: RwLock::new(HashSet::new()),
            max_assets_per_socket: AtomicUsize::new(config.max_assets_per_socket),
            upgrades_per_sec: AtomicU32::new(config.upgrades_per_sec),
            upgrade_window: Mutex::new((Instant::now(), 0)),
            freeze_new: AtomicBool::new(config.freeze),
            gamma_failures: AtomicU32::new(0),
            gamma_fail_status: AtomicU32::new(429),
            delivered: Mutex::new(Vec::new()),
            next_socket: AtomicU64::new(1),
            trades_generated: AtomicU64::new(0),
            sockets_opened: AtomicU64::new(0),
            upgrades_rejected: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            config,
        });
        let conn_state = Arc::clone(&state);
        let server = Server::start(&state.config.listen, "sim", move |stream| {
            handle_connection(&conn_state, stream)
        })?;
        let gen_state = Arc::clone(&state);
        let generator = std::thread::Builder::new()
            .name("sim-generator".into())
            .spawn(move || generate(&gen_state))?;
        Ok(Sim {
            state,
            server,
            generator: Some(generator),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `ws://ADDR/ws/market`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/market", self.addr())
    }

    /// `http://ADDR`, the Gamma base URL.
    pub fn gamma_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn config(&self) -> &SimConfig {
        &self.state.config
    }

    /// A copy of the current universe.
    pub fn markets(&self) -> Vec<SimMarket> {
        self.state.markets.read().clone()
    }

    /// Every trade delivered so far, in delivery order per socket.
    pub fn delivered(&self) -> Vec<SimTrade> {
        let records = self.state.delivered.lock().clone();
        records
            .iter()
            .filter_map(|t| self.state.record_to_trade(t))
            .collect()
    }

    pub fn delivered_count(&self) -> usize {
        self.state.delivered.lock().len()
    }

    /// The raw ground-truth records (cheap: no strings).
    pub fn delivered_records(&self) -> Vec<TradeRecord> {
        self.state.delivered.lock().clone()
    }

    pub fn stats(&self) -> SimStats {
        stats(&self.state)
    }

    /// Drops every open socket without a close frame.
    pub fn drop_sockets(&self) -> usize {
        self.state.for_each_socket(|c| c.drop.store(true, SeqCst))
    }

    /// Freezes (or thaws) every open socket, and sockets opened from now on: `PONG` is still
    /// answered, no data is sent.
    pub fn freeze(&self, on: bool) -> usize {
        self.state.freeze(on)
    }

    /// Freezes only the sockets open now; sockets opened later work.
    pub fn freeze_open_sockets(&self) -> usize {
        self.state.for_each_socket(|c| c.frozen.store(true, SeqCst))
    }

    /// Stops (or restarts) trades and updates for one asset while its siblings go on.
    pub fn stall_asset(&self, asset_id: &str, on: bool) -> bool {
        self.state.stall_asset(asset_id, on)
    }

    /// Sockets holding more than `n` assets silently get nothing.
    pub fn set_max_assets_per_socket(&self, n: usize) {
        self.state.set_max_assets_per_socket(n)
    }

    /// Upgrades beyond `n` a second are answered with 429 (0: no limit).
    pub fn set_upgrades_per_sec(&self, n: u32) {
        self.state.upgrades_per_sec.store(n, SeqCst);
    }

    /// Sends every open socket a set of malformed frames (bad JSON, bad numbers, unknown
    /// events, a binary frame). None carries a valid trade.
    pub fn send_malformed(&self) -> usize {
        self.state.send_malformed()
    }

    /// The next `n` listing requests fail with `status` (429 comes with `Retry-After: 1`).
    pub fn fail_gamma(&self, n: u32, status: u16) {
        self.state.gamma_fail_status.store(status as u32, SeqCst);
        self.state.gamma_failures.store(n, SeqCst);
    }

    /// Sends every open socket one text frame of `bytes` bytes; after it that socket delivers
    /// nothing more, as a client must drop it anyway.
    pub fn send_oversized(&self, bytes: usize) -> usize {
        self.state.send_oversized(bytes)
    }

    /// Adds an open market to the universe (and announces it as `new_market`).
    pub fn add_market(&self) -> SimMarket {
        self.state.add_market()
    }

    /// Closes a market: it stops trading, and Gamma shows it closed with `resolution`.
    pub fn close_market(&self, condition_id: &str, resolution: SimResolution) -> bool {
        self.state.close_market(condition_id, resolution)
    }

    /// Stops generating, closes every socket and the listener.
    pub fn shutdown(&mut self) {
        self.state.stopping.store(true, SeqCst);
        self.server.shutdown();
        if let Some(g) = self.generator.take() {
            let _ = g.join();
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn stats(state: &SimState) -> SimStats {
    let hub = state.hub.lock();
    SimStats {
        trades_generated: state.trades_generated.load(Relaxed),
        trades_delivered: state.delivered.lock().len() as u64,
        sockets_open: hub.sockets.len(),
        sockets_opened: state.sockets_opened.load(Relaxed),
        upgrades_rejected: state.upgrades_rejected.load(Relaxed),
        subscribed_assets: hub.subscribers.len(),
        markets: state.markets.read().len(),
    }
}

/// Every new TCP connection: a WebSocket upgrade, a listing request or a control request.
fn handle_connection(state: &Arc<SimState>, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let req = match http::read_request(&mut stream) {
        Ok(r) => r,
        Err(_) => return,
    };
    if req.is_websocket_upgrade() {
        upgrade(state, stream, req);
        return;
    }
    let listing = matches!(req.path.as_str(), "/markets/keyset" | "/markets");
    let failing = listing
        && state
            .gamma_failures
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let response = match req.path.as_str() {
        _ if failing => {
            let status = state.gamma_fail_status.load(SeqCst) as u16;
            let r = Response::json(status, &serde_json::json!({"error": "simulated failure"}));
            if status == 429 {
                r.with_header("Retry-After", "1")
            } else {
                r
            }
        }
        "/markets/keyset" => gamma::keyset(state, &req),
        "/markets" => gamma::legacy(state, &req),
        p if p.starts_with("/sim/") => control(state, &req),
        _ => Response::text(404, "not found\n"),
    };
    let _ = response.write_to(&mut stream);
}

fn upgrade(state: &Arc<SimState>, mut stream: TcpStream, req: Request) {
    if req.path != "/ws/market" {
        let _ = Response::text(404, "not found\n").write_to(&mut stream);
        return;
    }
    if !state.admit_upgrade() {
        state.upgrades_rejected.fetch_add(1, Relaxed);
        let _ = Response::text(429, "Too Many Requests\n")
            .with_header("Retry-After", "1")
            .write_to(&mut stream);
        return;
    }
    let Some(key) = req.header("sec-websocket-key") else {
        let _ = Response::text(400, "missing Sec-WebSocket-Key\n").write_to(&mut stream);
        return;
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if io::Write::write_all(&mut stream, head.as_bytes()).is_err() {
        return;
    }
    let id = state.next_socket.fetch_add(1, Relaxed);
    state.sockets_opened.fetch_add(1, Relaxed);
    let (tx, rx) = bounded(1024);
    let control = Arc::new(SocketControl::default());
    control.frozen.store(state.freeze_new.load(SeqCst), SeqCst);
    state.register(id, tx, Arc::clone(&control));
    match socket::Session::new(id, Arc::clone(state), control, stream, req.rest, rx) {
        Ok(session) => session.run(),
        Err(_) => state.unregister(id),
    }
}

fn control(state: &Arc<SimState>, req: &Request) -> Response {
    let num = |name: &str| req.param(name).and_then(|v| v.parse::<u64>().ok());
    let on = req.param("on").is_none_or(|v| v != "0" && v != "false");
    match req.path.as_str() {
        "/sim/stats" => Response::json(200, &stats(state)),
        "/sim/delivered" => {
            let records = state.delivered.lock().clone();
            let mut body = String::new();
            for r in &records {
                if let Some(t) = state.record_to_trade(r) {
                    body.push_str(&serde_json::to_string(&t).unwrap_or_default());
                    body.push('\n');
                }
            }
            Response::new(200, "application/x-ndjson", body)
        }
        "/sim/faults/drop" => {
            Response::json(200, &state.for_each_socket(|c| c.drop.store(true, SeqCst)))
        }
        "/sim/faults/freeze" => Response::json(200, &state.freeze(on)),
        "/sim/faults/stall" => {
            let Some(asset) = req.param("asset") else {
                return Response::text(400, "asset= is required\n");
            };
            if state.stall_asset(asset, on) {
                Response::json(200, &true)
            } else {
                Response::text(404, "unknown asset\n")
            }
        }
        "/sim/faults/max-assets" => match num("n") {
            Some(n) => {
                state.set_max_assets_per_socket(n as usize);
                Response::json(200, &n)
            }
            None => Response::text(400, "n= is required\n"),
        },
        "/sim/faults/upgrade-limit" => match num("per_sec") {
            Some(n) => {
                state.upgrades_per_sec.store(n as u32, SeqCst);
                Response::json(200, &n)
            }
            None => Response::text(400, "per_sec= is required\n"),
        },
        "/sim/faults/gamma" => {
            let n = num("n").unwrap_or(1) as u32;
            let status = num("status").unwrap_or(429) as u32;
            state.gamma_fail_status.store(status, SeqCst);
            state.gamma_failures.store(n, SeqCst);
            Response::json(200, &n)
        }
        "/sim/faults/malformed" => Response::json(200, &state.send_malformed()),
        "/sim/faults/oversized" => {
            let bytes = num("bytes").unwrap_or(32 << 20) as usize;
            Response::json(200, &state.send_oversized(bytes))
        }
        "/sim/markets/add" => Response::json(200, &state.add_market().to_gamma_json()),
        "/sim/markets/close" => {
            let Some(cid) = req.param("condition_id") else {
                return Response::text(400, "condition_id= is required\n");
            };
            let resolution = match req.param("outcome").and_then(|o| o.parse::<usize>().ok()) {
                Some(i) if i < 2 => SimResolution::Winner(i),
                _ => SimResolution::Split,
            };
            Response::json(200, &state.close_market(cid, resolution))
        }
        _ => Response::text(404, "unknown control endpoint\n"),
    }
}

/// Generates trades at the configured rate for the assets that sockets hold, and queues them,
/// grouped into one frame per socket per tick.
fn generate(state: &Arc<SimState>) {
    let config = &state.config;
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let start = Instant::now();
    let mut produced: u64 = 0;
    let mut seq: u64 = 0;
    let mut noise: u64 = 0;
    let mut tradable: Vec<(u32, u8)> = Vec::new();
    let mut tradable_version = u64::MAX;
    // Per-socket batches of this tick.
    let mut batches: HashMap<u64, (String, Vec<TradeRecord>, usize)> = HashMap::new();
    const MAX_PER_TICK: u64 = 20_000;
    const MAX_EVENTS_PER_FRAME: usize = 500;
    while !state.stopping.load(Relaxed) {
        if config.max_trades.is_some_and(|max| produced >= max) || config.trade_rate <= 0.0 {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let target = (start.elapsed().as_secs_f64() * config.trade_rate) as u64;
        let mut due = target.saturating_sub(produced).min(MAX_PER_TICK);
        if let Some(max) = config.max_trades {
            due = due.min(max - produced);
        }
        if due == 0 {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let now = crate::now_ms();
        let mut sends: Vec<(Sender<Outgoing>, Outgoing)> = Vec::new();
        {
            let hub = state.hub.lock();
            let markets = state.markets.read();
            if tradable_version != hub.version {
                let stalled = state.stalled.read();
                tradable = hub
                    .subscribers
                    .keys()
                    .filter(|k| !stalled.contains(k))
                    .filter(|(m, _)| markets.get(*m as usize).is_some_and(|m| m.is_open()))
                    .copied()
                    .collect();
                tradable.sort_unstable();
                tradable_version = hub.version;
            }
            if tradable.is_empty() {
                drop(markets);
                drop(hub);
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let max_assets = state.max_assets_per_socket.load(Relaxed);
            for _ in 0..due {
                let key = tradable[rng.usize(0..tradable.len())];
                let market = &markets[key.0 as usize];
                let t = TradeRecord {
                    seq,
                    market: key.0,
                    outcome: key.1,
                    timestamp_ms: now,
                    price_milli: (market.mid_milli as i32 + rng.i32(-20..=20)).clamp(1, 999) as u16,
                    buy: rng.bool(),
                    has_tx: seq % 10 != 9,
                    short_price: seq % 7 == 3,
                };
                seq += 1;
                produced += 1;
                state.trades_generated.fetch_add(1, Relaxed);
                let Some(subs) = hub.subscribers.get(&key) else {
                    continue;
                };
                for sid in subs {
                    let Some(entry) = hub.sockets.get(sid) else {
                        continue;
                    };
                    if entry.requested.len() > max_assets {
                        continue; // silently not delivered, like the live feed
                    }
                    let batch = batches.entry(*sid).or_default();
                    push_event(batch, |out| frames::trade_event(out, &t, market));
                    batch.1.push(t);
                    for _ in 0..config.noise_per_trade {
                        noise += 1;
                        push_event(batch, |out| {
                            if noise % 20 == 0 {
                                frames::tick_size_event(out, market, now)
                            } else {
                                frames::price_change_event(out, market, noise, now)
                            }
                        });
                    }
                    if entry.custom {
                        push_event(batch, |out| {
                            frames::best_bid_ask_event(out, market, key.1, now)
                        });
                    }
                    if batch.2 >= MAX_EVENTS_PER_FRAME {
                        let (text, trades, n) = batches.remove(sid).unwrap_or_default();
                        sends.push((entry.tx.clone(), finish_frame(text, trades, n)));
                    }
                }
            }
            for (sid, (text, trades, n)) in batches.drain() {
                if let Some(entry) = hub.sockets.get(&sid) {
                    sends.push((entry.tx.clone(), finish_frame(text, trades, n)));
                }
            }
        }
        // Send outside the lock: a slow socket applies backpressure to the generator (which
        // is what a full-speed benchmark wants) without blocking subscriptions. A socket that
        // takes no frame for two seconds is skipped: its trades are simply not delivered.
        for (tx, item) in sends {
            if config.block_on_slow_sockets {
                let _ = tx.send(item); // fails only when the socket is gone
            } else {
                let _ = tx.send_timeout(item, Duration::from_secs(2));
            }
        }
    }
}

fn push_event(batch: &mut (String, Vec<TradeRecord>, usize), write: impl FnOnce(&mut String)) {
    if batch.2 > 0 {
        batch.0.push(',');
    }
    write(&mut batch.0);
    batch.2 += 1;
}

/// One event goes out as an object, several as an array.
fn finish_frame(events: String, trades: Vec<TradeRecord>, count: usize) -> Outgoing {
    let text = if count == 1 {
        events
    } else {
        format!("[{events}]")
    };
    Outgoing::frame(text, trades)
}
