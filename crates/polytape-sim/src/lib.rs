//! `polytape-sim`: a local Polymarket for tests and benchmarks.
//!
//! One address serves the market channel at `/ws/market`, the Gamma listing at
//! `/markets/keyset` and `/markets`, and control endpoints under `/sim/`. Markets come from a
//! seed; trades are generated at a set rate for the assets that sockets subscribe to, and every
//! trade that was actually delivered (flushed on a live socket) is logged, so a test can check
//! "stored == delivered" exactly. Faults can be switched on at start and at run time, through
//! the methods of [`Sim`] or `POST /sim/...`.

pub mod book;
pub mod chain;
mod clob;
pub mod data_api;
mod exchange;
pub mod frames;
mod gamma;
mod generator;
mod limits;
mod mailbox;
mod routes;
mod socket;
mod state;
pub mod universe;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use exchange::Books;
pub use frames::TradeRecord;
use generator::generate;
use limits::RateWindow;
use polytape_http::Server;
use routes::handle_connection;
use state::{Hub, SimState};
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
    /// Hold the trade clock until subscriptions exist and have held still for 0.5 s (a
    /// full-speed benchmark measures delivery to every client, not the first one's).
    pub start_when_subscribed: bool,
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
    /// A socket whose client sent no text `PING` for this long is closed (the live service:
    /// about 40 s).
    pub ping_timeout: Duration,
    /// A client that reads nothing for this long while data waits for it is dropped, and
    /// what waited is not delivered, as the live service drops a consumer that falls behind
    /// (`None`: never; `block_on_slow_sockets` turns it off too).
    pub slow_client_timeout: Option<Duration>,
    /// The Data API shows a trade this long after its block (the live service: minutes).
    pub data_api_lag: Duration,
    /// Data API requests per 10 s before 429 (0: no limit; the live service: 200).
    pub data_api_rate_limit: u32,
    /// Extra time between a trade's match and its block (a congested chain, a retrying
    /// relayer: tens of seconds at times), on top of the usual 0–5 s.
    pub settlement_lag: Duration,
    /// Most rows the Data API returns a page, whatever `limit` asks (the service may cap
    /// lower than the documented 10,000 without saying so).
    pub data_api_max_page: usize,
    /// A frame with more asset ids than this closes the socket (the live service closes
    /// clients that send thousands at once; polytape sends at most 100).
    pub max_ids_per_frame: usize,
    /// Whether the Data API serves `GET /v2/trades` (cursor paging); without it, 404.
    pub data_api_v2: bool,
    /// The fraction of executed trades the Data API silently leaves out (only the chain has
    /// them): a derived service's misses.
    pub data_api_drop: f64,
    /// The most blocks one `eth_getLogs` may span (0: any), as providers cap it.
    pub rpc_max_range: u64,
    /// RPC requests per 10 s before 429 (0: no limit).
    pub rpc_rate_limit: u32,
    /// Blocks between the chain's head and `finalized` (Polygon: tens).
    pub chain_finality: u64,
    /// The first block of CLOB V2: trades settled before it are V1 events on the V1
    /// contracts (the real migration block by default, before the simulator's chain begins:
    /// all V2; a test moves it into the run to have a past on both sides).
    pub chain_migration_block: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: "127.0.0.1:8765".into(),
            markets: 1000,
            seed: 1,
            trade_rate: 100.0,
            max_trades: None,
            start_when_subscribed: false,
            noise_per_trade: 50,
            idle_noise: Duration::from_secs(1),
            client_idle_timeout: Duration::from_secs(30),
            max_assets_per_socket: 500,
            upgrades_per_sec: 0,
            freeze: false,
            block_on_slow_sockets: false,
            ping_timeout: Duration::from_secs(40),
            slow_client_timeout: Some(Duration::from_secs(15)),
            data_api_lag: Duration::ZERO,
            data_api_rate_limit: 200,
            settlement_lag: Duration::ZERO,
            data_api_max_page: 10_000,
            max_ids_per_frame: 1000,
            data_api_v2: true,
            data_api_drop: 0.0,
            rpc_max_range: 0,
            rpc_rate_limit: 0,
            chain_finality: crate::chain::FINALITY,
            chain_migration_block: crate::chain::V2_FIRST_BLOCK,
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

/// One token's book, as the simulator's ground truth holds it: prices in ten-thousandths,
/// sizes in millionths of a share, best first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimBookView {
    pub bids: Vec<(book::PriceBp, book::SizeMicro)>,
    pub asks: Vec<(book::PriceBp, book::SizeMicro)>,
    pub tick: book::PriceBp,
    /// The last trade's price (only for the book now).
    pub last_trade: Option<book::PriceBp>,
    /// The moment it is the book of.
    pub timestamp_ms: i64,
}

/// Counters of the simulator, served at `/sim/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct SimStats {
    pub trades_generated: u64,
    pub trades_delivered: u64,
    pub sockets_open: usize,
    pub sockets_opened: u64,
    pub upgrades_rejected: u64,
    /// Clients dropped for falling behind or sending no PING.
    pub dropped_clients: u64,
    /// Sockets closed for a frame with too many asset ids.
    pub frames_refused: u64,
    /// Deliveries of a trade already delivered on another socket (a client's overlap).
    pub repeat_deliveries: u64,
    pub subscribed_assets: usize,
    pub markets: usize,
    /// `price_change` messages the drop-delta fault took.
    pub deltas_dropped: u64,
    /// Takers that swept two levels (two trades under one stamp, entries in the live order).
    pub sweeps: u64,
    /// Taker legs written to blocks so far (one a trade executed whose block has come).
    pub chain_fills: u64,
    /// The chain's head and `finalized` block now.
    pub chain_head: u64,
    pub chain_finalized: u64,
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
            books: Mutex::new(Books::new(config.seed)),
            deltas_dropped: AtomicU64::new(0),
            sweeps: AtomicU64::new(0),
            chain_t0_s: {
                let s = now_ms().div_euclid(1000) - crate::chain::HISTORY_S;
                s - s.rem_euclid(2)
            },
            rpc_down: std::sync::atomic::AtomicBool::new(false),
            reorg: std::sync::atomic::AtomicBool::new(false),
            rpc_max_range: AtomicU64::new(config.rpc_max_range),
            rpc_window: RateWindow::new(config.rpc_rate_limit, Duration::from_secs(10)),
            rpc_requests: AtomicU64::new(0),
            rpc_log_ranges: parking_lot::Mutex::new(Vec::new()),
            stalled: RwLock::new(HashSet::new()),
            max_assets_per_socket: AtomicUsize::new(config.max_assets_per_socket),
            upgrades_per_sec: AtomicU32::new(config.upgrades_per_sec),
            refuse_upgrades: AtomicBool::new(false),
            upgrade_window: Mutex::new((Instant::now(), 0)),
            freeze_new: AtomicBool::new(config.freeze),
            gamma_failures: AtomicU32::new(0),
            data_api_fault: parking_lot::Mutex::new((0, 0, 0)),
            gamma_fail_status: AtomicU32::new(429),
            delivered: Mutex::new(Vec::new()),
            delivered_seqs: Mutex::new(HashSet::new()),
            repeat_deliveries: AtomicU64::new(0),
            executed: Mutex::new(Vec::new()),
            settled: Mutex::new(Default::default()),
            data_api_requests: AtomicU64::new(0),
            data_api_v2_requests: AtomicU64::new(0),
            data_api_window: RateWindow::new(config.data_api_rate_limit, Duration::from_secs(10)),
            book_window: RateWindow::new(1_500, Duration::from_secs(10)),
            books_window: RateWindow::new(500, Duration::from_secs(10)),
            history_window: RateWindow::new(1_000, Duration::from_secs(10)),
            history_fails: parking_lot::Mutex::new(None),
            maybe_delivered: Mutex::new(Vec::new()),
            next_socket: AtomicU64::new(1),
            trades_generated: AtomicU64::new(0),
            sockets_opened: AtomicU64::new(0),
            upgrades_rejected: AtomicU64::new(0),
            dropped_clients: AtomicU64::new(0),
            frames_refused: AtomicU64::new(0),
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

    /// Trades written to a socket that the simulator dropped (a client that fell behind)
    /// before it knew they were flushed: the client may or may not have read them. A test
    /// of a dropped client must accept either.
    pub fn maybe_delivered(&self) -> Vec<SimTrade> {
        let records = self.state.maybe_delivered.lock().clone();
        records
            .iter()
            .filter_map(|t| self.state.record_to_trade(t))
            .collect()
    }

    /// Every trade the exchange executed (subscribed or not, delivered or not): the ground
    /// truth a complete tape must equal.
    pub fn executed(&self) -> Vec<SimTrade> {
        let records = self.state.executed.lock().clone();
        records
            .iter()
            .filter_map(|t| self.state.record_to_trade(t))
            .collect()
    }

    /// Every trade the exchange executed, as its compact records (seq, market, price in
    /// ten-thousandths…): what the chain settles.
    pub fn executed_records(&self) -> Vec<crate::frames::TradeRecord> {
        self.state.executed.lock().clone()
    }

    /// Data API requests answered so far (not counting 429s).
    pub fn data_api_requests(&self) -> u64 {
        self.state.data_api_requests.load(SeqCst)
    }

    /// Of [`Sim::data_api_requests`], those to `/v2/trades`.
    pub fn data_api_v2_requests(&self) -> u64 {
        self.state.data_api_v2_requests.load(SeqCst)
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

    /// Answers every upgrade with 429 (open sockets go on) until called with `false`.
    pub fn refuse_upgrades(&self, on: bool) {
        self.state.refuse_upgrades.store(on, SeqCst);
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

    /// After the next `skip` Data API requests, `n` requests are answered `status` (a
    /// service that fails part way through a long fill).
    pub fn fail_data_api_after(&self, skip: u32, n: u32, status: u16) {
        *self.state.data_api_fault.lock() = (skip, n, status);
    }

    /// The chain's JSON-RPC address (`POST`).
    pub fn rpc_url(&self) -> String {
        format!("{}/rpc", self.gamma_url())
    }

    /// Turns the RPC down (503) or back up.
    /// Every block range an `eth_getLogs` was answered for, in order (refused ones left out):
    /// what a reader read.
    pub fn rpc_log_ranges(&self) -> Vec<(u64, u64)> {
        self.state.rpc_log_ranges.lock().clone()
    }

    pub fn set_rpc_down(&self, down: bool) {
        self.state.rpc_down.store(down, SeqCst);
    }

    /// A reorg above `finalized`: while on, the transactions of blocks above it land a
    /// block later (and their blocks' hashes change).
    pub fn set_reorg(&self, on: bool) {
        self.state.reorg.store(on, SeqCst);
    }

    /// Caps the blocks one `eth_getLogs` may span (0: no cap).
    pub fn set_rpc_max_range(&self, blocks: u64) {
        self.state.rpc_max_range.store(blocks, SeqCst);
    }

    /// The chain's block of a time (Unix s).
    pub fn chain_block_at(&self, t_s: i64) -> u64 {
        crate::chain::block_at(self.state.chain_t0_s, t_s)
    }

    /// Every `/prices-history` request for `token` (and every batch naming it) answers 500
    /// from now on (`None`: none).
    pub fn fail_price_history_of(&self, token: Option<&str>) {
        *self.state.history_fails.lock() = token.map(str::to_owned);
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

    /// The book of `token_id` now, or as it was at `at_ms` (Unix ms: after every change
    /// stamped at or before it): the ground truth a stored book must equal. `None`: no such
    /// token.
    pub fn book(&self, token_id: &str, at_ms: Option<i64>) -> Option<SimBookView> {
        let v = clob::book_view(&self.state, token_id, at_ms)?;
        Some(SimBookView {
            bids: v.state.bids,
            asks: v.state.asks,
            tick: v.state.tick,
            last_trade: v.last_trade,
            timestamp_ms: v.timestamp_ms,
        })
    }

    /// The true midpoint bar of `token_id` over `[from_ms, to_ms)` (a minute, or its part
    /// after a client's first book): twice the midpoint in millionths just before `from_ms`,
    /// highest, lowest and at the end (`None`: a side empty then; high and low over the
    /// defined ones).
    #[allow(clippy::type_complexity)]
    pub fn midpoint_bar(
        &self,
        token_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Option<(Option<u32>, Option<u32>, Option<u32>, Option<u32>)> {
        let key = *self.state.asset_index.read().get(token_id)?;
        let books = self.state.books.lock();
        let path = books.existing(key)?.twice_midpoints(from_ms, to_ms);
        let to_millionths = |v: Option<u32>| v.map(|v| v * 100);
        let defined: Vec<u32> = path.iter().flatten().copied().collect();
        Some((
            to_millionths(path.first().copied().flatten()),
            to_millionths(defined.iter().copied().max()),
            to_millionths(defined.iter().copied().min()),
            to_millionths(path.last().copied().flatten()),
        ))
    }

    /// Arms the drop-delta fault on one socket (the one holding the most assets): its next
    /// `n` `price_change` messages are lost in transit, as a delta lost on the live feed.
    /// Returns whether a socket was open.
    pub fn drop_deltas(&self, n: u32) -> bool {
        self.state.drop_deltas_on_one_socket(n)
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
    // The hub's lock is the generator's: held no longer than its two counts take (a
    // benchmark asks for these every few milliseconds while the exchange runs flat out).
    let (sockets_open, subscribed_assets) = {
        let hub = state.hub.lock();
        (hub.sockets.len(), hub.subscribers.len())
    };
    let (head, finalized) = crate::chain::heads(state);
    SimStats {
        trades_generated: state.trades_generated.load(Relaxed),
        trades_delivered: state.delivered.lock().len() as u64,
        sockets_open,
        sockets_opened: state.sockets_opened.load(Relaxed),
        upgrades_rejected: state.upgrades_rejected.load(Relaxed),
        dropped_clients: state.dropped_clients.load(Relaxed),
        frames_refused: state.frames_refused.load(Relaxed),
        repeat_deliveries: state.repeat_deliveries.load(Relaxed),
        subscribed_assets,
        markets: state.markets.read().len(),
        deltas_dropped: state.deltas_dropped.load(Relaxed),
        sweeps: state.sweeps.load(Relaxed),
        chain_fills: crate::chain::settled_count(state, head),
        chain_head: head,
        chain_finalized: finalized,
    }
}
