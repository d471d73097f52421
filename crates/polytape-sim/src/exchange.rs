//! The exchange's books, and one tick of the exchange: trades that take from the books,
//! resting orders that come and go, and every event that tells subscribers so, queued per
//! socket in the order it happened.
//!
//! Everything a socket learns about a book goes through here, under one lock, in one order:
//! the `book` a subscription asks for is written into the same per-socket queue as the
//! deltas, after every delta it already includes and before every delta it does not. (A
//! socket thread that queued its own snapshot could put it behind a delta the generator had
//! already built, and a client would be wrong through no fault of its own.)

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;

use crate::mailbox::Post;

use crate::book::{LevelChange, PriceBp, SimBook};
use crate::frames::{self, TradeRecord};
use crate::state::{Hub, Outgoing, SimState};
use crate::universe::SimMarket;

/// Every token's book. A book is made around its market's price the first time anything
/// touches it (a subscription, a trade, a REST request).
pub(crate) struct Books {
    by_asset: HashMap<(u32, u8), SimBook>,
    rng: fastrand::Rng,
    /// The newest time stamped on a change or on a book sent out (Unix ms). A book sent out
    /// at time `t` must be the book of every change stamped up to `t`, so no later change
    /// may be stamped `t` or before: changes are stamped no earlier than `floor_ms`.
    newest_ms: i64,
    floor_ms: i64,
    /// Books asked for that go out late (due time, asset, socket): some markets' tokens
    /// trade before their book is sent, as on the live feed (feed notes §6).
    deferred: Vec<(i64, (u32, u8), u64)>,
}

/// How late a late market's book comes after it is asked for.
const LATE_BOOK_MS: i64 = 3_000;

/// Whether a market's books come late (one in nine).
fn late_book(market: u32) -> bool {
    market % 9 == 4
}

impl Books {
    pub(crate) fn new(seed: u64) -> Books {
        Books {
            by_asset: HashMap::new(),
            rng: fastrand::Rng::with_seed(seed ^ 0x626f_6f6b),
            newest_ms: 0,
            floor_ms: 0,
            deferred: Vec::new(),
        }
    }

    /// Whether a late book is due at `now`.
    pub(crate) fn late_books_due(&self, now: i64) -> bool {
        self.deferred.iter().any(|(due, _, _)| *due <= now)
    }

    /// The book of `key`, made if it is new.
    pub(crate) fn book(
        &mut self,
        key: (u32, u8),
        markets: &[SimMarket],
        now: i64,
    ) -> Option<(&mut SimBook, &mut fastrand::Rng)> {
        let m = markets.get(key.0 as usize)?;
        let rng = &mut self.rng;
        let book = self.by_asset.entry(key).or_insert_with(|| {
            let yes = m.mid_milli as u32 * 10;
            let mid = if key.1 == 0 { yes } else { 10_000 - yes };
            SimBook::with_ticks(mid, crate::book::ticks_of(key.0), now, rng)
        });
        Some((book, &mut self.rng))
    }

    /// The book of `key` if anything has touched it.
    pub(crate) fn existing(&self, key: (u32, u8)) -> Option<&SimBook> {
        self.by_asset.get(&key)
    }

    /// Whether changes may be stamped `now`: not within the millisecond of a book sent out.
    pub(crate) fn ready(&self, now: i64) -> bool {
        now >= self.floor_ms
    }

    /// The time to stamp changes made now with.
    pub(crate) fn change_stamp(&mut self, now: i64) -> i64 {
        let t = now.max(self.floor_ms);
        self.newest_ms = self.newest_ms.max(t);
        t
    }

    /// The time to stamp a book sent out now with: no earlier than any change it includes,
    /// and no change after it will be stamped as early.
    pub(crate) fn send_stamp(&mut self, now: i64) -> i64 {
        let t = now.max(self.newest_ms);
        self.newest_ms = t;
        self.floor_ms = t + 1;
        t
    }
}

/// What a socket asked the exchange for, answered on the generator's next tick.
pub(crate) enum Request {
    /// The `book` of these assets (a subscription, or a client's probe or resync).
    Dump(u64, Vec<(u32, u8)>),
    /// Any change on one of the socket's assets: an idle socket shows it is alive.
    Noise(u64),
}

/// Frames being gathered for each socket during one tick: (text, trades, events).
#[derive(Default)]
pub(crate) struct Outbox {
    batches: HashMap<u64, (String, Vec<TradeRecord>, usize)>,
    sends: Vec<(Post<Outgoing>, Outgoing)>,
    scratch: String,
}

/// Events per frame, and bytes, past which a socket's frame is closed and a new one begun.
const MAX_EVENTS_PER_FRAME: usize = 500;
const MAX_FRAME_BYTES: usize = 256 * 1024;

impl Outbox {
    fn push(&mut self, hub: &Hub, sid: u64, text: &str, trade: Option<TradeRecord>) {
        let batch = self.batches.entry(sid).or_default();
        // A frame's text starts as an array (one event alone drops the bracket when the
        // frame is closed), in room for a busy tick's events: no copy to wrap it, few to
        // grow it.
        if batch.2 > 0 {
            batch.0.push(',');
        } else {
            batch.0.reserve(FRAME_START_BYTES);
            batch.0.push('[');
        }
        batch.0.push_str(text);
        batch.2 += 1;
        batch.1.extend(trade);
        if (batch.2 >= MAX_EVENTS_PER_FRAME || batch.0.len() >= MAX_FRAME_BYTES)
            && let Some(entry) = hub.sockets.get(&sid)
            && let Some((text, trades, n)) = self.batches.remove(&sid)
        {
            self.sends
                .push((entry.tx.clone(), finish_frame(text, trades, n)));
        }
    }

    /// Closes every socket's frame; returns what to send, in order.
    pub(crate) fn finish(&mut self, hub: &Hub) -> Vec<(Post<Outgoing>, Outgoing)> {
        for (sid, (text, trades, n)) in self.batches.drain() {
            if let Some(entry) = hub.sockets.get(&sid) {
                self.sends
                    .push((entry.tx.clone(), finish_frame(text, trades, n)));
            }
        }
        std::mem::take(&mut self.sends)
    }
}

/// Puts one match's entries in the order the live exchange sends them: each carries the top
/// of book after the whole match (`top`), and an entry that removes a level goes after the
/// others, unless a later entry touches the same level (then the order of the two is kept:
/// the book they build is the same either way).
fn live_order(changes: &mut Vec<LevelChange>, top: (Option<PriceBp>, Option<PriceBp>)) {
    let mut rest = Vec::with_capacity(changes.len());
    let mut removals = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        let touched_later = changes[i + 1..]
            .iter()
            .any(|d| d.side == c.side && d.price == c.price);
        if c.size == 0 && !touched_later {
            removals.push(*c);
        } else {
            rest.push(*c);
        }
    }
    rest.extend(removals);
    for c in &mut rest {
        (c.best_bid, c.best_ask) = top;
    }
    *changes = rest;
}

/// One event goes out as an object, several as an array (`events` begins with its `[`).
fn finish_frame(mut events: String, trades: Vec<TradeRecord>, count: usize) -> Outgoing {
    if count == 1 {
        events.remove(0);
    } else {
        events.push(']');
    }
    Outgoing::frame(events, trades)
}

/// The room a socket's frame text starts with.
const FRAME_START_BYTES: usize = 4 * 1024;

/// One tick of the exchange, with every lock it needs held.
pub(crate) struct Tick<'a> {
    pub(crate) state: &'a SimState,
    pub(crate) hub: &'a mut Hub,
    pub(crate) markets: &'a [SimMarket],
    pub(crate) books: &'a mut Books,
    pub(crate) out: &'a mut Outbox,
    pub(crate) now: i64,
    /// Numbers the events' hashes.
    pub(crate) events: &'a mut u64,
    /// Books to send when the tick ends (to one socket, or to every subscriber): all under
    /// one stamp, after every change of the tick.
    pub(crate) books_due: Vec<((u32, u8), Option<u64>)>,
    /// The tokens in `books_due` for every subscriber: a token traded many times in one
    /// tick is sent one book. (A lookup in `books_due` itself was a scan per trade, a tenth
    /// of the simulator's CPU at full speed.)
    pub(crate) books_due_all: HashSet<(u32, u8)>,
    /// The sockets of the event being sent (kept from one event to the next).
    pub(crate) sids: Vec<u64>,
}

/// What kind of event a socket is sent: book events wait for the socket's pending `book`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Trade,
    Book,
}

impl Tick<'_> {
    /// The sockets an event about `key` goes to now, added to `out` (a buffer kept from
    /// one event to the next: this runs several times a trade).
    fn receivers(&self, key: (u32, u8), kind: Kind, out: &mut Vec<u64>) {
        let max_assets = self.state.max_assets_per_socket.load(Relaxed);
        let Some(subs) = self.hub.subscribers.get(&key) else {
            return;
        };
        out.extend(subs.iter().copied().filter(|sid| {
            self.hub.sockets.get(sid).is_some_and(|e| {
                // Silently not delivered past the asset limit, like the live feed.
                e.requested.len() <= max_assets
                    && (kind == Kind::Trade || !e.awaiting.contains(&key))
            })
        }));
    }

    /// Sends `text` (an event about `key`) to every socket that should have it.
    fn broadcast(&mut self, key: (u32, u8), kind: Kind, text: &str, trade: Option<TradeRecord>) {
        let mut sids = std::mem::take(&mut self.sids);
        sids.clear();
        self.receivers(key, kind, &mut sids);
        for &sid in &sids {
            self.out.push(self.hub, sid, text, trade);
        }
        self.sids = sids;
    }

    /// Sends `price_change` events for `changes` of one market's tokens: each socket gets
    /// the entries of the tokens it holds, in one message. A socket with the drop-delta fault
    /// armed loses the message.
    fn send_changes(&mut self, market: u32, changes: &[(u8, LevelChange)]) {
        if changes.is_empty() {
            return;
        }
        let markets = self.markets;
        let Some(m) = markets.get(market as usize) else {
            return;
        };
        let mut sids = std::mem::take(&mut self.sids);
        sids.clear();
        for (outcome, _) in changes {
            self.receivers((market, *outcome), Kind::Book, &mut sids);
        }
        // Each socket once, in the order first named.
        let mut i = 0;
        while i < sids.len() {
            if sids[..i].contains(&sids[i]) {
                sids.remove(i);
            } else {
                i += 1;
            }
        }
        let stalled = self.state.stalled.read();
        for &sid in &sids {
            let Some(entry) = self.hub.sockets.get(&sid) else {
                continue;
            };
            let mine: Vec<(u8, LevelChange)> = changes
                .iter()
                .filter(|(o, _)| {
                    let key = (market, *o);
                    entry.assets.contains(&key)
                        && !entry.awaiting.contains(&key)
                        && !stalled.contains(&key)
                })
                .copied()
                .collect();
            if mine.is_empty() {
                continue;
            }
            if entry
                .control
                .drop_deltas
                .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                self.state.deltas_dropped.fetch_add(1, Relaxed);
                continue; // lost in transit
            }
            *self.events += 1;
            let mut text = std::mem::take(&mut self.out.scratch);
            text.clear();
            frames::price_change_event(&mut text, m, &mine, *self.events, self.now);
            self.out.push(self.hub, sid, &text, None);
            self.out.scratch = text;
        }
        drop(stalled);
        self.sids = sids;
    }

    /// A `tick_size_change` when the book's midpoint crossed into the other tick's range.
    fn retick(&mut self, key: (u32, u8)) {
        let Some((book, _)) = self.books.book(key, self.markets, self.now) else {
            return;
        };
        let Some((old, new)) = book.retick() else {
            return;
        };
        let mut text = String::new();
        frames::tick_size_event(
            &mut text,
            &self.markets[key.0 as usize],
            key.1,
            old,
            new,
            self.now,
        );
        self.broadcast(key, Kind::Book, &text, None);
    }

    /// One resting order arrives or is cancelled on `key`'s book, and its subscribers hear.
    pub(crate) fn churn(&mut self, key: (u32, u8)) {
        let now = self.books.change_stamp(self.now);
        let Some((book, rng)) = self.books.book(key, self.markets, now) else {
            return;
        };
        if let Some(change) = book.churn(now, rng) {
            self.send_changes(key.0, &[(key.1, change)]);
            self.retick(key);
        }
    }

    /// A trade on `key`: a taker (a BUY takes asks) of `seq`'s size fills at the best level
    /// (topped up first if it holds less). With `sweep` (and a second level to take), the
    /// taker sweeps two levels instead: `seq` fills the whole best level and `seq + 1` part of
    /// the next, two trades at two prices under one stamp. Returns the trades, executed
    /// (none: the market is closed); whether they are sent is up to the stall fault and the
    /// subscriptions. The book entries go out in the live order (feed notes §6): every entry
    /// carries the top of book after the whole match, and the removals of consumed levels
    /// come last.
    pub(crate) fn trade(
        &mut self,
        key: (u32, u8),
        seq: u64,
        buy: bool,
        sweep: bool,
    ) -> Vec<TradeRecord> {
        let now = self.books.change_stamp(self.now);
        let markets = self.markets;
        let Some(market) = markets.get(key.0 as usize) else {
            return Vec::new();
        };
        if !market.is_open() {
            return Vec::new(); // closed since the list was made: it trades no more
        }
        let Some((book, rng)) = self.books.book(key, self.markets, now) else {
            return Vec::new();
        };
        let mut changes: Vec<LevelChange> = Vec::new();
        let sizes: Vec<u64> = match book.sweep_levels(buy) {
            Some((first, second)) if sweep => {
                // The best level holds exactly the first fill, the next more than the second.
                let (a, b) = (
                    TradeRecord::size_micro_of(seq),
                    TradeRecord::size_micro_of(seq + 1),
                );
                changes.extend(book.resize(now, buy, first, a));
                changes.extend(book.resize(now, buy, second, b + b / 2 + 1));
                self.state.sweeps.fetch_add(1, Relaxed);
                vec![a, b]
            }
            _ => {
                let size = TradeRecord::size_micro_of(seq);
                changes.extend(book.ensure_depth(now, buy, size, rng));
                vec![size]
            }
        };
        let mut fills = Vec::new();
        for size in &sizes {
            let (f, taken) = book.take(now, buy, *size);
            let Some(fill) = f.first() else {
                return Vec::new();
            };
            fills.push(fill.price);
            changes.extend(taken);
        }
        book.last_trade = fills.last().copied();
        live_order(&mut changes, (book.best_bid(), book.best_ask()));
        let changes: Vec<(u8, LevelChange)> = changes.into_iter().map(|c| (key.1, c)).collect();
        let trades: Vec<TradeRecord> = fills
            .iter()
            .zip(seq..)
            .map(|(price, seq)| TradeRecord {
                seq,
                market: key.0,
                outcome: key.1,
                timestamp_ms: now,
                price_bp: *price as u16,
                buy,
                has_tx: seq % 10 != 9,
                short_price: seq % 7 == 3,
            })
            .collect();
        self.state.executed.lock().extend(trades.iter().copied());
        if self.state.stalled.read().contains(&key) {
            return trades; // executed, never sent: the live feed's stalled asset
        }
        self.send_changes(key.0, &changes);
        self.retick(key);
        let mut text = String::new();
        for t in &trades {
            text.clear();
            frames::trade_event(&mut text, t, market);
            self.broadcast(key, Kind::Trade, &text, Some(*t));
        }
        // The book after the trade, as the live feed sends it (at the tick's end).
        if self.books_due_all.insert(key) {
            self.books_due.push((key, None));
        }
        // Custom-feature subscribers get the top of book.
        let mut sids = std::mem::take(&mut self.sids);
        sids.clear();
        self.receivers(key, Kind::Book, &mut sids);
        sids.retain(|sid| self.hub.sockets.get(sid).is_some_and(|e| e.custom));
        if !sids.is_empty()
            && let Some(b) = self.books.existing(key)
        {
            let top = (b.best_bid(), b.best_ask());
            text.clear();
            frames::best_bid_ask_event(&mut text, market, key.1, top, now);
            for &sid in &sids {
                self.out.push(self.hub, sid, &text, None);
            }
        }
        self.sids = sids;
        trades
    }

    /// Sends the books due, stamped after every change of the tick; a socket that waited
    /// for one gets book events again from here on.
    pub(crate) fn send_books(&mut self) {
        if self.books_due.is_empty() {
            return;
        }
        let stamp = self.books.send_stamp(self.now);
        let max_assets = self.state.max_assets_per_socket.load(Relaxed);
        self.books_due_all.clear();
        for (key, to) in std::mem::take(&mut self.books_due) {
            let markets = self.markets;
            let Some(m) = markets.get(key.0 as usize) else {
                continue;
            };
            if let Some(sid) = to {
                let Some(entry) = self.hub.sockets.get_mut(&sid) else {
                    continue;
                };
                if !entry.awaiting.remove(&key) || entry.requested.len() > max_assets {
                    continue;
                }
            }
            let Some((book, _)) = self.books.book(key, self.markets, self.now) else {
                continue;
            };
            *self.events += 1;
            let mut text = String::new();
            frames::book_event(
                &mut text,
                m,
                key.1,
                &book.state(0),
                book.last_trade,
                *self.events,
                stamp,
            );
            match to {
                Some(sid) => self.out.push(self.hub, sid, &text, None),
                None => self.broadcast(key, Kind::Book, &text, None),
            }
        }
    }

    /// Answers what sockets asked for since the last tick (books at the tick's end).
    pub(crate) fn answer(&mut self, requests: Vec<Request>) {
        let now = self.now;
        let deferred = &mut self.books.deferred;
        let mut i = 0;
        while i < deferred.len() {
            if deferred[i].0 <= now {
                let (_, key, sid) = deferred.swap_remove(i);
                self.books_due.push((key, Some(sid)));
            } else {
                i += 1;
            }
        }
        for request in requests {
            match request {
                Request::Dump(sid, keys) => {
                    for k in keys {
                        if late_book(k.0) {
                            self.books.deferred.push((now + LATE_BOOK_MS, k, sid));
                        } else {
                            self.books_due.push((k, Some(sid)));
                        }
                    }
                }
                Request::Noise(sid) => {
                    let key = self.hub.sockets.get(&sid).and_then(|e| {
                        let n = e.assets.len();
                        (n > 0)
                            .then(|| e.assets.iter().nth(fastrand::usize(0..n)).copied())
                            .flatten()
                    });
                    if let Some(key) = key {
                        self.churn(key);
                    }
                }
            }
        }
    }
}
