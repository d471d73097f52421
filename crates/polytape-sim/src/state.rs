//! The simulator's shared state: the markets, the sockets and what they hold, the faults
//! switched on, and the ground truth of what was delivered.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
};
use std::time::{Duration, Instant};

use crate::mailbox::Post;
use parking_lot::{Mutex, RwLock};
use tungstenite::Message;

use crate::exchange::{Books, Request};
use crate::frames::{self, TradeRecord};
use crate::limits::RateWindow;
use crate::universe::{SimMarket, SimResolution, generate_market};
use crate::{SimConfig, SimTrade};

/// A frame queued for one socket.
pub(crate) struct Outgoing {
    pub(crate) message: Message,
    /// Trades the frame carries: delivered once it is flushed.
    pub(crate) trades: Vec<TradeRecord>,
    /// Market data (as opposed to `PONG` and protocol replies): withheld on a frozen socket.
    pub(crate) data: bool,
    /// After this frame the socket delivers nothing more (used after an oversized frame).
    pub(crate) poison: bool,
}

impl Outgoing {
    pub(crate) fn frame(text: String, trades: Vec<TradeRecord>) -> Self {
        Outgoing {
            message: Message::text(text),
            trades,
            data: true,
            poison: false,
        }
    }

    pub(crate) fn control(text: String) -> Self {
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
    pub(crate) requested: AtomicUsize,
    pub(crate) frozen: AtomicBool,
    pub(crate) drop: AtomicBool,
    pub(crate) poisoned: AtomicBool,
    pub(crate) inject: Mutex<Vec<Outgoing>>,
    /// The next this-many `price_change` messages for this socket are lost in transit.
    pub(crate) drop_deltas: AtomicU32,
}

pub(crate) struct SocketEntry {
    pub(crate) tx: Post<Outgoing>,
    /// Every asset id the client asked for, known or not (what the ~500 limit counts).
    pub(crate) requested: HashSet<String>,
    /// The known ones, as (market index, outcome).
    pub(crate) assets: HashSet<(u32, u8)>,
    pub(crate) custom: bool,
    pub(crate) control: Arc<SocketControl>,
    /// Assets whose `book` the socket asked for and has not been sent yet: no book event
    /// about them goes to it before that book.
    pub(crate) awaiting: HashSet<(u32, u8)>,
}

#[derive(Default)]
pub(crate) struct Hub {
    pub(crate) sockets: HashMap<u64, SocketEntry>,
    pub(crate) subscribers: HashMap<(u32, u8), Vec<u64>>,
    /// Bumped on every change that affects which assets trade.
    pub(crate) version: u64,
    /// What sockets asked the exchange for, answered on the generator's next tick.
    pub(crate) requests: Vec<Request>,
}

pub(crate) struct SimState {
    pub(crate) config: SimConfig,
    pub(crate) markets: RwLock<Vec<SimMarket>>,
    pub(crate) asset_index: RwLock<HashMap<String, (u32, u8)>>,
    pub(crate) hub: Mutex<Hub>,
    /// Every token's book. Taken after `hub` and `markets`, never before.
    pub(crate) books: Mutex<Books>,
    /// `price_change` messages dropped by the fault.
    pub(crate) deltas_dropped: AtomicU64,
    pub(crate) sweeps: AtomicU64,
    /// The chain's start (Unix s, even): block `FIRST_BLOCK` is its block.
    pub(crate) chain_t0_s: i64,
    /// Chain faults: the RPC down, a reorg above `finalized`, a cap on a `getLogs` range.
    pub(crate) rpc_down: std::sync::atomic::AtomicBool,
    pub(crate) reorg: std::sync::atomic::AtomicBool,
    pub(crate) rpc_max_range: AtomicU64,
    pub(crate) rpc_window: RateWindow,
    pub(crate) rpc_requests: AtomicU64,
    /// Every block range an `eth_getLogs` answered with logs (refusals left out).
    pub(crate) rpc_log_ranges: parking_lot::Mutex<Vec<(u64, u64)>>,
    pub(crate) stalled: RwLock<HashSet<(u32, u8)>>,
    pub(crate) max_assets_per_socket: AtomicUsize,
    pub(crate) upgrades_per_sec: AtomicU32,
    /// Every upgrade is answered with 429 while set.
    pub(crate) refuse_upgrades: AtomicBool,
    pub(crate) upgrade_window: Mutex<(Instant, u32)>,
    pub(crate) freeze_new: AtomicBool,
    /// The next this-many listing requests fail with `gamma_fail_status`.
    pub(crate) gamma_failures: AtomicU32,
    pub(crate) gamma_fail_status: AtomicU32,
    /// Data API requests to answer before failing, then how many fail, with what status.
    pub(crate) data_api_fault: parking_lot::Mutex<(u32, u32, u16)>,
    /// Every trade delivered, once (a trade delivered on two sockets, as during a client's
    /// make-before-break overlap, is one trade delivered).
    pub(crate) delivered: Mutex<Vec<TradeRecord>>,
    pub(crate) delivered_seqs: Mutex<HashSet<u64>>,
    /// Deliveries of a trade already delivered on another socket.
    pub(crate) repeat_deliveries: AtomicU64,
    /// Every trade the exchange executed, subscribed or not: the ground truth of the tape.
    pub(crate) executed: Mutex<Vec<TradeRecord>>,
    /// The last count of executed trades settled on the chain (`/sim/stats`).
    pub(crate) settled: Mutex<crate::chain::Settled>,
    /// Data API requests answered, and the times of the recent ones (the rate limit).
    pub(crate) data_api_requests: AtomicU64,
    /// Of those, `/v2/trades` requests answered (not 404).
    pub(crate) data_api_v2_requests: AtomicU64,
    pub(crate) data_api_window: RateWindow,
    /// CLOB REST's limits: `GET /book`, `POST /books`.
    pub(crate) book_window: RateWindow,
    pub(crate) books_window: RateWindow,
    /// `/prices-history`: 1,000 per 10 s.
    pub(crate) history_window: RateWindow,
    /// A token whose price history every request fails (500): a fault for tests.
    pub(crate) history_fails: parking_lot::Mutex<Option<String>>,
    /// Trades written to a socket the simulator then dropped before it knew they were
    /// flushed: the kernel may or may not have passed them on.
    pub(crate) maybe_delivered: Mutex<Vec<TradeRecord>>,
    pub(crate) next_socket: AtomicU64,
    pub(crate) trades_generated: AtomicU64,
    pub(crate) sockets_opened: AtomicU64,
    pub(crate) upgrades_rejected: AtomicU64,
    /// Clients dropped for falling behind or sending no PING.
    pub(crate) dropped_clients: AtomicU64,
    /// Sockets closed for a frame with more ids than `max_ids_per_frame`.
    pub(crate) frames_refused: AtomicU64,
    pub(crate) stopping: AtomicBool,
}

impl SimState {
    pub(crate) fn register(&self, id: u64, tx: Post<Outgoing>, control: Arc<SocketControl>) {
        let mut hub = self.hub.lock();
        hub.sockets.insert(
            id,
            SocketEntry {
                tx,
                requested: HashSet::new(),
                assets: HashSet::new(),
                custom: false,
                control,
                awaiting: HashSet::new(),
            },
        );
    }

    pub(crate) fn unregister(&self, id: u64) {
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

    /// The first subscription.
    pub(crate) fn subscribe(&self, id: u64, assets: &[String], custom: bool, dump: bool) {
        if let Some(e) = self.hub.lock().sockets.get_mut(&id) {
            e.custom = custom;
        }
        self.add_assets(id, assets, dump)
    }

    /// Adds assets to a socket; with `dump`, the `book` of every known asset named (held
    /// before or not) is asked of the exchange, and nothing else about its book reaches
    /// the socket before it.
    pub(crate) fn add_assets(&self, id: u64, assets: &[String], dump: bool) {
        let index = self.asset_index.read();
        let mut hub = self.hub.lock();
        let mut added = Vec::new();
        let mut named = Vec::new();
        let Some(entry) = hub.sockets.get_mut(&id) else {
            return;
        };
        for a in assets {
            entry.requested.insert(a.clone());
            if let Some(&key) = index.get(a) {
                if entry.assets.insert(key) {
                    added.push(key);
                }
                if dump && entry.awaiting.insert(key) {
                    named.push(key);
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
        if !named.is_empty() {
            hub.requests.push(Request::Dump(id, named));
        }
        hub.version += 1;
    }

    /// An idle socket asks for a change on one of its assets.
    pub(crate) fn request_noise(&self, id: u64) {
        self.hub.lock().requests.push(Request::Noise(id));
    }

    pub(crate) fn remove_assets(&self, id: u64, assets: &[String]) {
        let index = self.asset_index.read();
        let mut hub = self.hub.lock();
        let mut removed = Vec::new();
        if let Some(entry) = hub.sockets.get_mut(&id) {
            for a in assets {
                entry.requested.remove(a);
                if let Some(&key) = index.get(a)
                    && entry.assets.remove(&key)
                {
                    entry.awaiting.remove(&key);
                    removed.push(key);
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

    pub(crate) fn delivered(&self, trades: &[TradeRecord]) {
        if trades.is_empty() {
            return;
        }
        let mut seqs = self.delivered_seqs.lock();
        let mut delivered = self.delivered.lock();
        for t in trades {
            if seqs.insert(t.seq) {
                delivered.push(*t);
            } else {
                self.repeat_deliveries.fetch_add(1, Relaxed);
            }
        }
    }

    /// Whether an upgrade may go ahead under the rate limit.
    pub(crate) fn admit_upgrade(&self) -> bool {
        if self.refuse_upgrades.load(Relaxed) {
            return false;
        }
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

    pub(crate) fn record_to_trade(&self, t: &TradeRecord) -> Option<SimTrade> {
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
    pub(crate) fn freeze(&self, on: bool) -> usize {
        self.freeze_new.store(on, SeqCst);
        self.for_each_socket(|c| c.frozen.store(on, SeqCst))
    }

    /// A subscribe operation for these assets: any of them stalled delivers again.
    pub(crate) fn unstall(&self, assets: &[String]) {
        let index = self.asset_index.read();
        let mut stalled = self.stalled.write();
        if stalled.is_empty() {
            return;
        }
        for a in assets {
            if let Some(key) = index.get(a) {
                stalled.remove(key);
            }
        }
    }

    pub(crate) fn stall_asset(&self, asset_id: &str, on: bool) -> bool {
        let Some(&key) = self.asset_index.read().get(asset_id) else {
            return false;
        };
        {
            // Never held while taking the hub: the generator takes the hub, then this.
            let mut stalled = self.stalled.write();
            if on {
                stalled.insert(key);
            } else {
                stalled.remove(&key);
            }
        }
        self.hub.lock().version += 1;
        true
    }

    /// Sockets holding more than `n` assets silently get nothing.
    pub(crate) fn set_max_assets_per_socket(&self, n: usize) {
        self.max_assets_per_socket.store(n, SeqCst);
        self.hub.lock().version += 1;
    }

    /// Sends every open socket a set of malformed frames (bad JSON, bad numbers, unknown
    /// events). None carries a valid trade.
    pub(crate) fn send_malformed(&self) -> usize {
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
    pub(crate) fn send_oversized(&self, bytes: usize) -> usize {
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
    pub(crate) fn add_market(&self) -> SimMarket {
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
    pub(crate) fn close_market(&self, condition_id: &str, resolution: SimResolution) -> bool {
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

    /// Arms the drop-delta fault on one socket (the one holding the most assets): its next
    /// `n` `price_change` messages are lost in transit. Returns whether a socket was open.
    pub(crate) fn drop_deltas_on_one_socket(&self, n: u32) -> bool {
        let hub = self.hub.lock();
        let Some(entry) = hub.sockets.values().max_by_key(|e| e.assets.len()) else {
            return false;
        };
        entry.control.drop_deltas.fetch_add(n, SeqCst);
        true
    }

    pub(crate) fn for_each_socket(&self, f: impl Fn(&SocketControl)) -> usize {
        let hub = self.hub.lock();
        for e in hub.sockets.values() {
            f(&e.control);
        }
        hub.sockets.len()
    }

    /// Queues `text` on every socket with the custom feature on.
    pub(crate) fn broadcast_custom(&self, text: &str) {
        let hub = self.hub.lock();
        for e in hub.sockets.values().filter(|e| e.custom) {
            let _ = e.tx.try_send(Outgoing::frame(text.to_owned(), Vec::new()));
        }
    }
}
