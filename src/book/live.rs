//! The live books of one connection: every held token's book rebuilt from the socket's
//! events, checked on every update, cut into snapshots, and never stored from a state it
//! cannot vouch for.
//!
//! The checks. A match is not atomic on the wire: when a taker sweeps levels, the exchange
//! sends the entries of one `timestamp` with the top of book *after the whole match* on
//! every one of them, before the entries that remove the consumed levels (feed notes §6).
//! So the top of book is checked per **timestamp group**: every entry of a token sharing a
//! stamp (in one message or across consecutive ones) is applied, then the rebuilt best bid
//! and ask must equal the group's last entry's. The group ends when the socket delivers an
//! event of that token (or any event) stamped later, a `book` of that token, or a second of
//! wall clock passes. An entry without `best_bid`/`best_ask` is applied and not checked
//! (counted). A mismatch, or a delta for a token with no book yet, marks the book desynced:
//! it waits for a fresh `book` (asked for by subscribing that token again on the same
//! socket). Meanwhile its deltas are still applied, unchecked, so that the fresh book can
//! tell a real loss from a false alarm: equal to the rebuilt book, nothing was lost (counted
//! as `book_false_alarms`, no blind window recorded, the cuts that waited are vouched for);
//! different, the window from the last vouched-for moment to that book had no trusted book.
//! A lost delta deep in the book leaves the top as it was, so every fresh `book` (the
//! exchange sends one after trades, and on a resubscription) is compared with the rebuilt
//! book too: equal, it vouches for everything since the last one; different, the book was
//! wrong since then.
//!
//! Snapshots. Every `every_ms` (at a boundary of that period), each book that changed since
//! its last snapshot is cut as it stands: every event stamped before the boundary applied,
//! none after (the first event stamped at or after it on this socket, or two seconds of
//! wall clock, triggers the cut). A cut waits until a fresh `book` vouches for the book it
//! came from (one is asked for if none comes within `verify_ms`), and is dropped if the book
//! turns out wrong instead. A fresh `book` that ends a desync or a socket loss is stored as
//! it arrives, with the start of the blind window.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::Book;
use super::events::BookEvent;
use super::number::Side;
use super::snapshot::{BookSnapshot, SnapshotSource};
use super::tape::{TapeMsg, TapeRow};
use crate::health::BookStats;
use crate::prices::{MinuteBar, PriceBar, minute_of};

/// Maps and sets keyed by token id, looked up several times for every book event: aHash
/// (keyed at random per map, as SipHash is) hashes a 77-byte id several times faster.
type TokenMap<V> = HashMap<String, V, ahash::RandomState>;
type TokenSet = HashSet<String, ahash::RandomState>;

/// How long after a cut's boundary, on a quiet socket, the cut is made by the clock.
const QUIET_CUT_MS: i64 = 2_000;
/// How long a cut waits for a fresh `book` before one is asked for, and between asks.
const VERIFY_MS: i64 = 10_000;
/// Asks for a fresh `book` to vouch for waiting cuts before they are given up (counted).
const VERIFY_ASKS: u8 = 3;
/// Cuts a token may have waiting; past it the oldest is given up (counted).
const MAX_PENDING: usize = 8;
/// How often a token waiting for a fresh `book` asks again.
const REASK_MS: i64 = 5_000;
/// How far past the local clock an event's stamp may be: a stamp further ahead is refused
/// (counted as invalid), never applied (a cut or a bar boundary a year ahead would stand
/// every later event still, and walking the cuts up to it would spin the socket's thread).
const FUTURE_MS: i64 = 60_000;
/// How long (wall clock) a timestamp group stays open on a socket that delivers nothing
/// later: the entries of one match come in one message or in consecutive ones.
const GROUP_QUIET_MS: i64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Vouched for by the exchange's `book` at this time (Unix ms), and every top since.
    Trusted { vouched_ms: i64 },
    /// Waiting for a fresh `book`; without a trusted book since `since_ms` (None: it never
    /// had one), last asked at `asked_ms`. `rebuilt`: the book is still rebuilt from the
    /// deltas (a top-of-book mismatch, not a socket loss), so the fresh book can show the
    /// alarm was false.
    Waiting {
        since_ms: Option<i64>,
        asked_ms: Option<i64>,
        rebuilt: bool,
    },
}

/// The entries of one token sharing a stamp, applied and not yet checked.
#[derive(Debug, Clone, Copy)]
struct Group {
    ts: i64,
    /// The last entry's top of book (`None`: it gave none, so the group is not checked).
    top: Option<(Option<super::Price>, Option<super::Price>)>,
    received_ms: i64,
}

struct TokenBook {
    asset: Arc<str>,
    market: Arc<str>,
    book: Book,
    trust: Trust,
    /// Changed since its last cut.
    changed: bool,
    /// Cuts waiting to be vouched for, and when the oldest was made (wall clock).
    pending: Vec<Pending>,
    pending_since_ms: i64,
    /// Fresh books asked for to vouch for the waiting cuts, and when last.
    verify_asks: u8,
    /// Its price bar of the minute.
    bar: Option<MinuteBar>,
    /// Its open timestamp group.
    group: Option<Group>,
    /// Left out of the book tape until its next fresh book (rows of it were dropped).
    tape_off: bool,
}

/// A cut waiting for a fresh `book` to vouch for it, with every level changed since it was
/// made (those the fresh book cannot check: a lost delta repaired by a later change at the
/// same level would pass unseen).
struct Pending {
    cut: BookSnapshot,
    touched: std::collections::HashSet<(Side, super::Price)>,
}

impl Pending {
    /// Checks the cut against `fresh` on every level nobody changed since the cut, within
    /// what the cut covers (a side cut at `depth` covers its best levels down to its last);
    /// `Some` (the cut, with how many of its covered levels went unchecked) when they all
    /// agree.
    fn vouched_by(mut self, fresh: &Book, depth: usize) -> Option<BookSnapshot> {
        let mut unchecked = 0u32;
        for (side, cut) in [(Side::Bid, &self.cut.bids), (Side::Ask, &self.cut.asks)] {
            let all = fresh.levels(side, 0);
            // What the cut covers: the whole side, or down to its last level at `depth`.
            let covers = |p: super::Price| match (depth, cut.last()) {
                (d, Some((last, _))) if d > 0 && cut.len() >= d => match side {
                    Side::Bid => p >= *last,
                    Side::Ask => p <= *last,
                },
                _ => true,
            };
            for &(price, size) in cut {
                if self.touched.contains(&(side, price)) {
                    continue;
                }
                if !all.contains(&(price, size)) {
                    return None;
                }
            }
            for &(price, size) in all.iter().filter(|(p, _)| covers(*p)) {
                if !self.touched.contains(&(side, price)) && !cut.contains(&(price, size)) {
                    return None;
                }
            }
            unchecked += self
                .touched
                .iter()
                .filter(|(s, p)| *s == side && covers(*p))
                .count() as u32;
        }
        self.cut.levels_unchecked = unchecked;
        Some(self.cut)
    }
}

/// The books of one connection.
pub(crate) struct LiveBooks {
    books: TokenMap<TokenBook>,
    every_ms: i64,
    depth: usize,
    next_cut_ms: i64,
    /// Snapshots to store, in order.
    out: Vec<BookSnapshot>,
    /// Tokens to subscribe again (a fresh `book` wanted).
    resync: Vec<String>,
    /// The tokens held (`None`: every token, until the first change of the list): an event
    /// of another (a delta still in flight after an unsubscribe) is ignored, never taken for
    /// a token to subscribe.
    held: Option<TokenSet>,
    /// Tokens removed while trusted, and when (a stall repair's unsubscribe/subscribe): their
    /// next book ends a blind window from there. Forgotten after ten minutes.
    removed: TokenMap<i64>,
    /// Tokens with an open timestamp group, and the oldest group's stamp (`i64::MAX`: none).
    open: Vec<String>,
    open_min_ts: i64,
    /// What the book tape gets (when it is on), with its roll period.
    tape: Option<TapeOut>,
    /// Price bars to store, and the next minute boundary.
    bars_out: Vec<PriceBar>,
    next_bar_ms: i64,
    // Counts not yet published.
    events: u64,
    desynced: u64,
    resnapshots: u64,
    discarded: u64,
    false_alarms: u64,
    unchecked: u64,
    invalid: u64,
    unverified: u64,
    held_published: i64,
    last_tick_ms: i64,
    /// Some book waits for a fresh one, or some cut for its vouching: the clock has work.
    /// (Without it, the clock's look at every book five times a second is most of an idle
    /// listener's CPU at 100,000 tokens.)
    watch: bool,
}

impl LiveBooks {
    /// Books cut every `every_ms` (> 0), `depth` levels a side stored (0: all); the book
    /// tape, when it is on, rolling every `tape_roll_us`.
    pub(crate) fn new(
        every_ms: i64,
        depth: usize,
        tape_roll_us: Option<i64>,
        now_ms: i64,
    ) -> LiveBooks {
        LiveBooks {
            books: TokenMap::default(),
            every_ms,
            depth,
            next_cut_ms: (now_ms.div_euclid(every_ms) + 1) * every_ms,
            out: Vec::new(),
            resync: Vec::new(),
            held: None,
            removed: TokenMap::default(),
            open: Vec::new(),
            open_min_ts: i64::MAX,
            tape: tape_roll_us.map(|roll_us| TapeOut::new(roll_us, now_ms * 1000)),
            bars_out: Vec::new(),
            next_bar_ms: minute_of(now_ms) + 60_000,
            events: 0,
            desynced: 0,
            resnapshots: 0,
            discarded: 0,
            false_alarms: 0,
            unchecked: 0,
            invalid: 0,
            unverified: 0,
            held_published: 0,
            last_tick_ms: now_ms,
            watch: false,
        }
    }

    /// Applies one event received at `received_us`.
    pub(crate) fn apply(&mut self, event: BookEvent, received_us: i64) {
        self.tape_boundary(received_us);
        let now_ms = received_us.div_euclid(1000);
        let stamp = |ts: i64| if ts > 0 { ts } else { now_ms };
        let ts = match &event {
            BookEvent::Snapshot { timestamp_ms, .. } | BookEvent::Change { timestamp_ms, .. } => {
                *timestamp_ms
            }
            BookEvent::TickSize { .. } => 0,
        };
        if ts > now_ms + FUTURE_MS {
            self.invalid += 1;
            log::debug!(
                "book event stamped {ts}, {} ms ahead of the clock: refused",
                ts - now_ms
            );
            return;
        }
        let asset = match &event {
            BookEvent::Snapshot { asset_id, .. }
            | BookEvent::Change { asset_id, .. }
            | BookEvent::TickSize { asset_id, .. } => asset_id,
        };
        if self.held.as_ref().is_some_and(|h| !h.contains(&**asset)) {
            return; // no longer held: in flight when it was unsubscribed
        }
        match event {
            BookEvent::Snapshot {
                asset_id,
                market,
                timestamp_ms,
                bids,
                asks,
                tick_size,
            } => {
                let ts = stamp(timestamp_ms);
                self.close_groups_before(ts);
                self.close_group(&asset_id);
                self.cut_before(ts, now_ms);
                self.bars_before(ts);
                self.events += 1;
                let mut fresh = Book::new();
                fresh.replace(bids, asks);
                if let Some(t) = tick_size {
                    fresh.set_tick_size(t);
                }
                self.fresh_book(&asset_id, &market, fresh, ts, received_us);
            }
            BookEvent::Change {
                asset_id,
                market,
                timestamp_ms,
                side,
                price,
                size,
                top,
            } => {
                let ts = stamp(timestamp_ms);
                self.close_groups_before(ts);
                if self
                    .books
                    .get(&*asset_id)
                    .and_then(|t| t.group)
                    .is_some_and(|g| g.ts != ts)
                {
                    self.close_group(&asset_id); // stamped earlier: out of order
                }
                self.cut_before(ts, now_ms);
                self.bars_before(ts);
                self.events += 1;
                if top.is_none() {
                    self.unchecked += 1;
                }
                let Some(token) = self.books.get_mut(&*asset_id) else {
                    // A delta before any snapshot: nothing to apply it to.
                    self.desynced += 1;
                    self.watch = true;
                    self.books
                        .insert(asset_id.to_string(), waiting(&asset_id, &market, None));
                    self.resync.push(asset_id.into_owned());
                    return;
                };
                match token.trust {
                    Trust::Trusted { .. } => {}
                    // Waiting after a false-looking top: still rebuilt, unchecked, so the
                    // fresh book can tell whether anything was lost.
                    Trust::Waiting { rebuilt: true, .. } => {
                        token.book.set(side, price, size);
                        for p in &mut token.pending {
                            p.touched.insert((side, price));
                        }
                        return;
                    }
                    Trust::Waiting { .. } => return, // waiting for its fresh book
                }
                token.book.set(side, price, size);
                token.changed = true;
                for p in &mut token.pending {
                    p.touched.insert((side, price));
                }
                if token.group.is_none() {
                    self.open.push(asset_id.to_string());
                    self.open_min_ts = self.open_min_ts.min(ts);
                }
                token.group = Some(Group {
                    ts,
                    top,
                    received_ms: now_ms,
                });
                if let Some(tape) = &mut self.tape
                    && !token.tape_off
                {
                    tape.rows.push(TapeRow {
                        asset_id: Arc::clone(&token.asset),
                        market: Arc::clone(&token.market),
                        timestamp_us: ts * 1000,
                        local_timestamp_us: received_us,
                        is_snapshot: false,
                        side,
                        price,
                        amount: size,
                    });
                }
            }
            BookEvent::TickSize {
                asset_id,
                tick_size,
            } => {
                self.events += 1;
                if let Some(token) = self.books.get_mut(&*asset_id) {
                    token.book.set_tick_size(tick_size);
                }
            }
        }
    }

    /// An event stamped `ts` is about to be applied: every group stamped earlier is complete
    /// (the socket delivers in order) and is checked.
    fn close_groups_before(&mut self, ts: i64) {
        if ts <= self.open_min_ts {
            return;
        }
        self.close_groups_where(|g| g.ts < ts);
    }

    /// Checks every open group `done` says is complete.
    fn close_groups_where(&mut self, done: impl Fn(&Group) -> bool) {
        let open = std::mem::take(&mut self.open);
        let mut min = i64::MAX;
        for asset in open {
            match self.books.get(&asset).and_then(|t| t.group) {
                Some(g) if done(&g) => self.close_group(&asset),
                Some(g) => {
                    min = min.min(g.ts);
                    self.open.push(asset);
                }
                None => {}
            }
        }
        self.open_min_ts = min;
    }

    /// Checks `asset_id`'s open group, if it has one: the rebuilt top of book against the
    /// group's last entry's. (It stays in `open` until the next sweep of that list.)
    fn close_group(&mut self, asset_id: &str) {
        let Some(token) = self.books.get_mut(asset_id) else {
            return;
        };
        let Some(group) = token.group.take() else {
            return;
        };
        let Trust::Trusted { vouched_ms } = token.trust else {
            return;
        };
        match group.top {
            Some((bid, ask)) if !token.book.agrees(bid, ask) => {
                log::debug!("book {asset_id}: top disagrees with the exchange's; resyncing");
                self.desynced += 1;
                self.watch = true;
                // Cuts that wait keep waiting: a fresh book equal to the rebuilt one still
                // vouches for them (a false alarm); a different one discards them.
                token.trust = Trust::Waiting {
                    since_ms: Some(vouched_ms),
                    asked_ms: Some(group.received_ms),
                    rebuilt: true,
                };
                self.resync.push(asset_id.to_owned());
            }
            _ => move_bar(asset_id, token, group.ts, &mut self.bars_out),
        }
    }

    /// A `book` for `asset_id` stamped `ts`, received at `received_us`.
    fn fresh_book(&mut self, asset_id: &str, market: &str, fresh: Book, ts: i64, received_us: i64) {
        let removed = &mut self.removed;
        let token = self
            .books
            .entry(asset_id.to_owned())
            .or_insert_with(|| waiting(asset_id, market, removed.remove(asset_id)));
        token.tape_off = false;
        if let Some(tape) = &mut self.tape {
            // Every book the exchange sends goes on the tape as snapshot rows.
            for side in [Side::Bid, Side::Ask] {
                for (price, amount) in fresh.levels(side, 0) {
                    tape.rows.push(TapeRow {
                        asset_id: Arc::clone(&token.asset),
                        market: Arc::clone(&token.market),
                        timestamp_us: ts * 1000,
                        local_timestamp_us: received_us,
                        is_snapshot: true,
                        side,
                        price,
                        amount,
                    });
                }
            }
        }
        // Every cut that waited is checked against this book on the levels nobody changed
        // since it was made: stored if they agree (saying how many went unchecked),
        // discarded if not, whatever became of the rebuilt book.
        for pending in std::mem::take(&mut token.pending) {
            match pending.vouched_by(&fresh, self.depth) {
                Some(cut) => self.out.push(cut),
                None => self.discarded += 1,
            }
        }
        let blind_from = match token.trust {
            Trust::Trusted { .. } if token.book.same_levels(&fresh) => {
                // It vouches for the book.
                token.verify_asks = 0;
                token.book = fresh;
                token.trust = Trust::Trusted { vouched_ms: ts };
                move_bar(asset_id, token, ts, &mut self.bars_out);
                return;
            }
            Trust::Trusted { vouched_ms } => {
                // Wrong since the last book that vouched for it, top agreeing or not.
                log::debug!("book {asset_id}: a fresh book differs from the rebuilt one");
                self.desynced += 1;
                self.resnapshots += 1;
                Some(vouched_ms)
            }
            Trust::Waiting { rebuilt: true, .. } if token.book.same_levels(&fresh) => {
                // The deltas rebuilt exactly this book: nothing was lost, the window was not
                // blind.
                log::debug!(
                    "book {asset_id}: a false alarm (the fresh book equals the rebuilt one)"
                );
                self.false_alarms += 1;
                None
            }
            Trust::Waiting { since_ms, .. } => {
                self.resnapshots += u64::from(since_ms.is_some());
                since_ms
            }
        };
        token.verify_asks = 0;
        token.book = fresh;
        token.trust = Trust::Trusted { vouched_ms: ts };
        token.changed = false;
        move_bar(asset_id, token, ts, &mut self.bars_out);
        self.out.push(BookSnapshot {
            asset_id: asset_id.to_owned(),
            market: token.market.to_string(),
            taken_at_ms: ts,
            bids: token.book.levels(Side::Bid, self.depth),
            asks: token.book.levels(Side::Ask, self.depth),
            source: SnapshotSource::Feed,
            blind_from_ms: blind_from,
            levels_unchecked: 0,
        });
    }

    /// An event stamped `ts` is about to be applied: every bar of an earlier minute is final
    /// (the socket delivers in order), and stored if anything moved it.
    fn bars_before(&mut self, ts: i64) {
        if ts < self.next_bar_ms {
            return;
        }
        let minute = minute_of(ts);
        self.flush_bars(minute);
        self.next_bar_ms = minute + 60_000;
    }

    /// Stores every moved bar of a minute before `minute`.
    fn flush_bars(&mut self, minute: i64) {
        for (asset_id, token) in &mut self.books {
            if let Some(bar) = &mut token.bar
                && bar.minute_ms < minute
                && bar.changed
            {
                self.bars_out.push(bar.finish(asset_id, &token.market));
                bar.changed = false;
            }
        }
    }

    /// Cuts every changed trusted book at each boundary up to `ts` (an event stamped `ts`
    /// is about to be applied).
    fn cut_before(&mut self, ts: i64, now_ms: i64) {
        while ts >= self.next_cut_ms {
            let at = self.next_cut_ms;
            // The book after every event stamped before the boundary: stamped one
            // millisecond before it, so `taken_at` always means "every event stamped at or
            // before it", as a fresh book's own stamp does.
            self.cut(at - 1, now_ms);
            self.next_cut_ms = at + self.every_ms;
        }
    }

    fn cut(&mut self, taken_at_ms: i64, now_ms: i64) {
        for (asset_id, token) in &mut self.books {
            if !token.changed || !matches!(token.trust, Trust::Trusted { .. }) {
                continue;
            }
            token.changed = false;
            self.watch = true;
            if token.pending.is_empty() {
                token.pending_since_ms = now_ms;
            }
            if token.pending.len() >= MAX_PENDING {
                token.pending.remove(0);
                self.unverified += 1;
            }
            token.pending.push(Pending {
                cut: BookSnapshot {
                    asset_id: asset_id.clone(),
                    market: token.market.to_string(),
                    taken_at_ms,
                    bids: token.book.levels(Side::Bid, self.depth),
                    asks: token.book.levels(Side::Ask, self.depth),
                    source: SnapshotSource::Feed,
                    blind_from_ms: None,
                    levels_unchecked: 0,
                },
                touched: Default::default(),
            });
        }
    }

    /// The clock's part: a cut on a quiet socket, fresh books asked for where cuts wait too
    /// long or a desynced book still has none. Looks at most every 200 ms (it is called on
    /// every read); false when it did not.
    pub(crate) fn tick(&mut self, now_ms: i64) -> bool {
        // A quiet socket opens the tape's next period on time too (its thread wakes at least
        // once a second).
        self.tape_boundary(now_ms * 1000);
        if now_ms - self.last_tick_ms < 200 {
            return false;
        }
        self.last_tick_ms = now_ms;
        if !self.open.is_empty() {
            self.close_groups_where(|g| now_ms - g.received_ms >= GROUP_QUIET_MS);
        }
        // No cut by the clock: a feed running behind the local clock would have the cut miss
        // events stamped before its boundary. A cut is made when the socket delivers an event
        // stamped past the boundary; on a quiet socket the book did not change meanwhile, so
        // the cut made then is the book at the boundary all the same.
        if now_ms >= self.next_bar_ms + QUIET_CUT_MS {
            self.bars_before(now_ms - QUIET_CUT_MS);
        }
        if !self.watch {
            return true;
        }
        let mut still = false;
        for (asset_id, token) in &mut self.books {
            still |= !token.pending.is_empty() || matches!(token.trust, Trust::Waiting { .. });
            match &mut token.trust {
                Trust::Trusted { .. } => {
                    let due =
                        token.pending_since_ms + VERIFY_MS * (1 + i64::from(token.verify_asks));
                    if !token.pending.is_empty() && now_ms >= due {
                        if token.verify_asks >= VERIFY_ASKS {
                            // Asked for and never answered: given up, counted.
                            self.unverified += token.pending.len() as u64;
                            token.pending.clear();
                            token.verify_asks = 0;
                        } else {
                            token.verify_asks += 1;
                            self.resync.push(asset_id.clone());
                        }
                    }
                }
                Trust::Waiting { asked_ms, .. } => {
                    if asked_ms.is_none_or(|t| now_ms - t >= REASK_MS) {
                        *asked_ms = Some(now_ms);
                        self.resync.push(asset_id.clone());
                    }
                }
            }
        }
        self.watch = still;
        true
    }

    /// The socket is gone (at `at_ms`, its last sign of life; a recycle, a stop): no book can
    /// be trusted past it. Cuts still waiting are given up and counted
    /// (`book_snapshots_unverified`): no fresh book can vouch for them now, and a snapshot is
    /// stored only vouched for. The next subscription asks for every book: none is asked
    /// again for `REASK_MS` from `now_ms`.
    pub(crate) fn lost(&mut self, at_ms: i64, now_ms: i64) {
        // Bars so far are stored (a later part of the same minute merges into the row).
        self.flush_bars(i64::MAX);
        self.watch = true;
        for token in self.books.values_mut() {
            self.unverified += token.pending.len() as u64;
            token.pending.clear();
            token.verify_asks = 0;
            token.trust = match token.trust {
                Trust::Trusted { .. } => Trust::Waiting {
                    since_ms: Some(at_ms),
                    asked_ms: Some(now_ms),
                    rebuilt: false,
                },
                Trust::Waiting { since_ms, .. } => Trust::Waiting {
                    since_ms,
                    asked_ms: Some(now_ms),
                    rebuilt: false,
                },
            };
            token.group = None;
        }
        self.open.clear();
        self.open_min_ts = i64::MAX;
        self.resync.clear();
    }

    /// Keeps only the books of `held` tokens; a new one waits for its first `book`. A book
    /// removed is accounted for: its bar so far is stored, its cuts that waited (never
    /// vouched for) are dropped and counted, it leaves the tape's openings, and if it comes back (a
    /// stall repair unsubscribes and subscribes again) its next book ends a blind window from
    /// `now_ms`.
    pub(crate) fn retain(&mut self, held: &[String], now_ms: i64) {
        let keep: TokenSet = held.iter().cloned().collect();
        let gone: Vec<String> = self
            .books
            .keys()
            .filter(|a| !keep.contains(*a))
            .cloned()
            .collect();
        for asset in gone {
            let Some(mut token) = self.books.remove(&asset) else {
                continue;
            };
            if let Some(bar) = &mut token.bar
                && bar.changed
            {
                self.bars_out.push(bar.finish(&asset, &token.market));
            }
            self.discarded += token.pending.len() as u64;
            match token.trust {
                Trust::Trusted { .. } => {
                    self.removed.insert(asset, now_ms);
                }
                Trust::Waiting {
                    since_ms: Some(since),
                    ..
                } => {
                    self.removed.insert(asset, since);
                }
                Trust::Waiting { .. } => {}
            }
        }
        self.removed.retain(|_, at| now_ms - *at < 600_000);
        self.held = Some(keep);
    }

    /// The tape's period boundary at or before `now_us`, when this connection has not opened
    /// that period yet: every book the tape holds of this connection (trusted, and not left
    /// out of the tape) goes to it as the period's opening, one block per token, before
    /// any row received at or after the boundary (the connection's own rows come in order).
    /// These are the only copies of the books: the tape thread keeps none.
    fn tape_boundary(&mut self, now_us: i64) {
        let Some(tape) = &mut self.tape else {
            return;
        };
        if now_us < tape.next_us {
            return;
        }
        tape.next_us = super::tape::next_boundary(now_us, tape.roll_us);
        let start_us = tape.next_us - tape.roll_us;
        let mut rows = Vec::new();
        for token in self.books.values() {
            if token.tape_off || !matches!(token.trust, Trust::Trusted { .. }) {
                continue;
            }
            for side in [Side::Bid, Side::Ask] {
                for (price, amount) in token.book.levels(side, 0) {
                    rows.push(TapeRow {
                        asset_id: Arc::clone(&token.asset),
                        market: Arc::clone(&token.market),
                        timestamp_us: start_us,
                        local_timestamp_us: start_us - 1,
                        is_snapshot: true,
                        side,
                        price,
                        amount,
                    });
                }
            }
        }
        tape.flush();
        tape.msgs.push(TapeMsg::Opening { start_us, rows });
    }

    /// The book tape dropped rows of `assets` (it was behind): each is left out of it (of
    /// its next opening too) until its next fresh book, asked for now.
    pub(crate) fn tape_dropped(&mut self, assets: &[Arc<str>]) {
        for asset in assets {
            let Some(token) = self.books.get_mut(&**asset) else {
                continue;
            };
            token.tape_off = true;
            self.resync.push(asset.to_string());
        }
    }

    /// Up to `n` tokens whose books have come and are trusted, each of another market: the
    /// ones to probe a socket with. A token whose book the exchange has not sent, or never
    /// sends, may not answer; and the exchange sends some markets' books seconds late, so one
    /// market alone is no sure answer.
    pub(crate) fn trusted_tokens(&self, n: usize) -> Vec<&str> {
        let mut picked: Vec<&TokenBook> = Vec::with_capacity(n);
        for t in self.books.values() {
            if picked.len() == n {
                break;
            }
            if matches!(t.trust, Trust::Trusted { .. })
                && picked.iter().all(|p| p.market != t.market)
            {
                picked.push(t);
            }
        }
        picked.into_iter().map(|t| &*t.asset).collect()
    }

    /// Snapshots to store, in order.
    pub(crate) fn take_snapshots(&mut self) -> Vec<BookSnapshot> {
        std::mem::take(&mut self.out)
    }

    /// Price bars to store, in order.
    pub(crate) fn take_bars(&mut self) -> Vec<PriceBar> {
        std::mem::take(&mut self.bars_out)
    }

    /// What the book tape gets, in order.
    pub(crate) fn take_tape(&mut self) -> Vec<TapeMsg> {
        self.tape.as_mut().map(TapeOut::take).unwrap_or_default()
    }

    /// Tokens to subscribe again for a fresh `book`.
    pub(crate) fn take_resync(&mut self) -> Vec<String> {
        let mut r = std::mem::take(&mut self.resync);
        r.sort_unstable();
        r.dedup();
        r
    }

    /// Publishes the counts since the last call.
    pub(crate) fn publish(&mut self, stats: &BookStats) {
        stats
            .events
            .fetch_add(std::mem::take(&mut self.events), Relaxed);
        stats
            .desynced
            .fetch_add(std::mem::take(&mut self.desynced), Relaxed);
        stats
            .resnapshots
            .fetch_add(std::mem::take(&mut self.resnapshots), Relaxed);
        stats
            .snapshots_discarded
            .fetch_add(std::mem::take(&mut self.discarded), Relaxed);
        stats
            .false_alarms
            .fetch_add(std::mem::take(&mut self.false_alarms), Relaxed);
        stats
            .unchecked
            .fetch_add(std::mem::take(&mut self.unchecked), Relaxed);
        stats
            .invalid
            .fetch_add(std::mem::take(&mut self.invalid), Relaxed);
        stats
            .unverified
            .fetch_add(std::mem::take(&mut self.unverified), Relaxed);
        let held = self.books.len() as i64;
        stats.held.fetch_add(held - self.held_published, Relaxed);
        self.held_published = held;
    }

    /// Leaves the held count (the connection is ending).
    pub(crate) fn unpublish(&mut self, stats: &BookStats) {
        stats.held.fetch_sub(self.held_published, Relaxed);
        self.held_published = 0;
    }
}

/// What the tape gets from one frame: its rows in one message, a period's opening between.
struct TapeOut {
    msgs: Vec<TapeMsg>,
    rows: Vec<TapeRow>,
    /// The tape's roll period, and the next boundary this connection has to open.
    roll_us: i64,
    next_us: i64,
}

impl TapeOut {
    fn new(roll_us: i64, now_us: i64) -> TapeOut {
        let roll_us = roll_us.max(1);
        TapeOut {
            msgs: Vec::new(),
            rows: Vec::new(),
            roll_us,
            next_us: super::tape::next_boundary(now_us, roll_us),
        }
    }

    fn flush(&mut self) {
        if !self.rows.is_empty() {
            self.msgs
                .push(TapeMsg::Rows(std::mem::take(&mut self.rows)));
        }
    }

    fn take(&mut self) -> Vec<TapeMsg> {
        self.flush();
        std::mem::take(&mut self.msgs)
    }
}

fn waiting(asset: &str, market: &str, since_ms: Option<i64>) -> TokenBook {
    TokenBook {
        asset: Arc::from(asset),
        market: Arc::from(market),
        book: Book::new(),
        trust: Trust::Waiting {
            since_ms,
            asked_ms: None,
            rebuilt: false,
        },
        changed: false,
        pending: Vec::new(),
        pending_since_ms: 0,
        verify_asks: 0,
        bar: None,
        group: None,
        tape_off: false,
    }
}

/// The trusted book of `token` moved at `ts`: its minute bar follows; a bar of an earlier
/// minute that moved is final.
fn move_bar(asset: &str, token: &mut TokenBook, ts: i64, out: &mut Vec<PriceBar>) {
    let minute = minute_of(ts);
    let units = |p: Option<super::Price>| p.and_then(|p| u32::try_from(p.units()).ok());
    let best = (units(token.book.best_bid()), units(token.book.best_ask()));
    let mid2 = token
        .book
        .twice_midpoint_units()
        .and_then(|u| u32::try_from(u).ok());
    match &mut token.bar {
        Some(bar) if bar.minute_ms == minute => bar.update(mid2, best),
        Some(bar) if bar.minute_ms < minute => {
            if bar.changed {
                out.push(bar.finish(asset, &token.market));
            }
            let mut next = MinuteBar::new(minute, bar.close2(), bar.best());
            next.update(mid2, best);
            token.bar = Some(next);
        }
        Some(_) => {} // stamped before the bar's minute: late, and not the bar's
        None => {
            let mut first = MinuteBar::new(minute, None, best);
            first.update(mid2, best);
            token.bar = Some(first);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::book::tests::{p, q};

    const T0: i64 = 1_700_000_000_000;

    fn book(ts: i64, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> BookEvent<'static> {
        let levels = |l: &[(&str, &str)]| l.iter().map(|(a, b)| (p(a), q(b))).collect();
        BookEvent::Snapshot {
            asset_id: Cow::Borrowed("1"),
            market: Cow::Borrowed("0xm"),
            timestamp_ms: ts,
            bids: levels(bids),
            asks: levels(asks),
            tick_size: None,
        }
    }

    fn change(
        ts: i64,
        side: Side,
        price: &str,
        size: &str,
        top: Option<(&str, &str)>,
    ) -> BookEvent<'static> {
        let px = |s: &str| (!s.is_empty()).then(|| p(s));
        BookEvent::Change {
            asset_id: Cow::Borrowed("1"),
            market: Cow::Borrowed("0xm"),
            timestamp_ms: ts,
            side,
            price: p(price),
            size: q(size),
            top: top.map(|(b, a)| (px(b), px(a))),
        }
    }

    /// Token "1" cut every second, opened at `T0` with this book, its first snapshot taken:
    /// where the cut tests start.
    fn opened_at_t0(bids: &[(&str, &str)], asks: &[(&str, &str)]) -> LiveBooks {
        let mut b = LiveBooks::new(1_000, 0, None, T0);
        b.apply(book(T0, bids, asks), T0 * 1000);
        b.take_snapshots();
        b
    }

    /// The snapshots stored since the last call that were cut at `at_ms`.
    fn cuts_at(b: &mut LiveBooks, at_ms: i64) -> Vec<BookSnapshot> {
        b.take_snapshots()
            .into_iter()
            .filter(|s| s.taken_at_ms == at_ms)
            .collect()
    }

    fn books() -> LiveBooks {
        let mut b = LiveBooks::new(300_000, 0, None, T0);
        b.apply(
            book(
                T0,
                &[("0.29", "10"), ("0.30", "20"), ("0.311", "5")],
                &[("0.32", "7")],
            ),
            T0 * 1000,
        );
        assert_eq!(b.take_snapshots().len(), 1, "the first book is stored");
        b
    }

    /// The captured sweep of §6: a taker SELL takes the bids at 0.311 and 0.30 and rests
    /// its remainder at 0.301; every entry of the stamp already carries the final top.
    fn sweep(b: &mut LiveBooks, ts: i64) {
        for e in [
            change(ts, Side::Ask, "0.301", "45.83", Some(("0.29", "0.301"))),
            change(ts, Side::Bid, "0.311", "0", Some(("0.29", "0.301"))),
            change(ts, Side::Bid, "0.30", "0", Some(("0.29", "0.301"))),
        ] {
            b.apply(e, ts * 1000);
        }
    }

    #[test]
    fn probe_tokens_are_trusted_and_of_distinct_markets() {
        let mut b = LiveBooks::new(300_000, 0, None, T0);
        for (asset, market) in [("a1", "0xa"), ("a2", "0xa"), ("b1", "0xb"), ("b2", "0xb")] {
            let BookEvent::Snapshot { bids, asks, .. } = book(T0, &[("0.4", "1")], &[]) else {
                unreachable!()
            };
            b.apply(
                BookEvent::Snapshot {
                    asset_id: Cow::Borrowed(asset),
                    market: Cow::Borrowed(market),
                    timestamp_ms: T0,
                    bids,
                    asks,
                    tick_size: None,
                },
                T0 * 1000,
            );
        }
        b.books.insert("c1".into(), waiting("c1", "0xc", None));
        let mut picked = b.trusted_tokens(3);
        picked.sort_unstable();
        assert_eq!(
            picked.len(),
            2,
            "one per market, none untrusted: {picked:?}"
        );
        assert!(picked[0].starts_with('a') && picked[1].starts_with('b'));
        assert_eq!(b.trusted_tokens(1).len(), 1);
    }

    #[test]
    fn a_sweep_in_the_live_order_is_no_desync() {
        let mut b = books();
        sweep(&mut b, T0 + 10);
        // The group closes at the next later event (here a quiet entry of a later stamp).
        b.apply(
            change(T0 + 20, Side::Bid, "0.28", "3", Some(("0.29", "0.301"))),
            (T0 + 20) * 1000,
        );
        assert_eq!(b.desynced, 0, "checked per stamp, not per entry");
        assert!(b.take_resync().is_empty());
        let t = &b.books["1"];
        assert!(matches!(t.trust, Trust::Trusted { .. }));
        assert_eq!(
            (t.book.best_bid(), t.book.best_ask()),
            (Some(p("0.29")), Some(p("0.301")))
        );
    }

    #[test]
    fn the_old_per_entry_check_would_have_cried_wolf() {
        // The same entries checked one by one disagree twice: what the old check did.
        let mut bk = Book::new();
        bk.replace(
            [
                (p("0.29"), q("10")),
                (p("0.30"), q("20")),
                (p("0.311"), q("5")),
            ],
            [(p("0.32"), q("7"))],
        );
        let mut disagreements = 0;
        for (side, price, size) in [
            (Side::Ask, "0.301", "45.83"),
            (Side::Bid, "0.311", "0"),
            (Side::Bid, "0.30", "0"),
        ] {
            bk.set(side, p(price), q(size));
            disagreements += usize::from(!bk.agrees(Some(p("0.29")), Some(p("0.301"))));
        }
        assert_eq!(disagreements, 2);
    }

    #[test]
    fn a_lost_delta_is_still_found_at_the_groups_end() {
        let mut b = books();
        let ts = T0 + 10;
        // The entry removing 0.30 is lost: the group ends with 0.30 still in the book.
        b.apply(
            change(ts, Side::Ask, "0.301", "45.83", Some(("0.29", "0.301"))),
            ts * 1000,
        );
        b.apply(
            change(ts, Side::Bid, "0.311", "0", Some(("0.29", "0.301"))),
            ts * 1000,
        );
        assert_eq!(b.desynced, 0, "not before the group ends");
        b.apply(
            change(ts + 5, Side::Ask, "0.33", "1", Some(("0.29", "0.301"))),
            (ts + 5) * 1000,
        );
        assert_eq!(b.desynced, 1);
        assert_eq!(b.take_resync(), vec!["1".to_owned()]);
        // The fresh book differs from the rebuilt one: a real loss, a blind window.
        b.apply(
            book(
                ts + 50,
                &[("0.29", "10")],
                &[("0.301", "45.83"), ("0.32", "7"), ("0.33", "1")],
            ),
            (ts + 50) * 1000,
        );
        let snaps = b.take_snapshots();
        assert_eq!(snaps.len(), 1);
        assert_eq!(snaps[0].blind_from_ms, Some(T0));
        assert_eq!((b.false_alarms, b.resnapshots), (0, 1));
    }

    #[test]
    fn a_group_left_open_is_closed_by_the_quiet_clock() {
        let mut b = books();
        b.apply(
            change(T0 + 10, Side::Bid, "0.311", "0", Some(("0.30", "0.31"))),
            (T0 + 10) * 1000,
        );
        assert!(b.tick(T0 + 500));
        assert_eq!(b.desynced, 0, "still open");
        assert!(b.tick(T0 + 10 + GROUP_QUIET_MS + 1));
        assert_eq!(
            b.desynced, 1,
            "closed and checked: 0.32 is the ask, not 0.31"
        );
    }

    #[test]
    fn a_stamp_far_in_the_future_is_refused_not_walked_to() {
        // Cuts every second: walking them to a year ahead is 31.5 million cuts.
        let mut b = LiveBooks::new(1_000, 0, None, T0);
        b.apply(
            book(
                T0,
                &[("0.29", "10"), ("0.30", "20"), ("0.311", "5")],
                &[("0.32", "7")],
            ),
            T0 * 1000,
        );
        let year = 365 * 86_400_000;
        let started = std::time::Instant::now();
        b.apply(
            change(T0 + year, Side::Bid, "0.28", "1", Some(("0.311", "0.32"))),
            (T0 + 10) * 1000,
        );
        assert!(
            started.elapsed() < std::time::Duration::from_millis(100),
            "no spin"
        );
        assert_eq!(b.invalid, 1);
        assert_eq!(b.books["1"].book.len(), 4, "not applied");
        // A minute ahead (a clock a little behind the exchange's) is still applied.
        b.apply(
            change(T0 + 30_000, Side::Bid, "0.28", "1", Some(("0.311", "0.32"))),
            (T0 + 10) * 1000,
        );
        assert_eq!((b.invalid, b.books["1"].book.len()), (1, 5));
    }

    #[test]
    fn a_delta_after_an_unsubscribe_subscribes_nothing_and_a_repair_records_its_window() {
        let mut b = books();
        b.apply(
            change(T0 + 10, Side::Bid, "0.28", "1", Some(("0.311", "0.32"))),
            (T0 + 10) * 1000,
        );
        // Unsubscribed (a stall repair's first half): its bar so far is stored.
        b.retain(&[], T0 + 20);
        b.close_groups_where(|_| true);
        assert_eq!(b.take_bars().len(), 1, "the bar so far, not dropped");
        // A delta still in flight: ignored, no resubscription (it was one, forever).
        b.apply(
            change(T0 + 30, Side::Bid, "0.27", "1", Some(("0.311", "0.32"))),
            (T0 + 30) * 1000,
        );
        assert!(
            b.take_resync().is_empty(),
            "a removed token is not subscribed again"
        );
        assert!(b.books.is_empty());
        // Subscribed again (the repair's second half): its book ends a blind window that
        // began at the unsubscribe.
        b.retain(&["1".to_owned()], T0 + 40);
        b.apply(
            book(T0 + 50, &[("0.3", "1")], &[("0.4", "1")]),
            (T0 + 50) * 1000,
        );
        let snaps = b.take_snapshots();
        assert_eq!(snaps.len(), 1);
        assert_eq!(snaps[0].blind_from_ms, Some(T0 + 20), "{snaps:?}");
    }

    #[test]
    fn a_cut_waits_for_the_feed_past_its_boundary_not_for_the_clock() {
        let mut b = opened_at_t0(&[("0.29", "10")], &[("0.32", "7")]);
        b.apply(
            change(T0 + 500, Side::Bid, "0.30", "1", Some(("0.30", "0.32"))),
            (T0 + 500) * 1000,
        );
        // The local clock is 3 s past the boundary; the feed runs behind it.
        assert!(b.tick(T0 + 4_000));
        // An event stamped before the boundary arrives late, then one past it.
        b.apply(
            change(T0 + 900, Side::Ask, "0.31", "2", Some(("0.30", "0.31"))),
            (T0 + 4_000) * 1000,
        );
        b.apply(
            change(T0 + 1_100, Side::Bid, "0.28", "1", Some(("0.30", "0.31"))),
            (T0 + 4_100) * 1000,
        );
        // A fresh book vouches for the cut.
        b.apply(
            book(
                T0 + 1_200,
                &[("0.28", "1"), ("0.29", "10"), ("0.30", "1")],
                &[("0.31", "2"), ("0.32", "7")],
            ),
            (T0 + 4_200) * 1000,
        );
        let cut = cuts_at(&mut b, T0 + 999);
        assert_eq!(cut.len(), 1, "one cut at the boundary");
        assert_eq!(
            cut[0].asks.len(),
            2,
            "the late event stamped before the boundary is in it: {cut:?}"
        );
        assert_eq!(cut[0].bids.len(), 2, "the event past the boundary is not");
    }

    #[test]
    fn cuts_no_book_can_vouch_for_are_given_up_and_counted() {
        fn step(b: &mut LiveBooks, at: &mut i64, price: &str) {
            *at += 1_000;
            let e = change(*at, Side::Bid, price, "1", Some(("0.29", "0.32")));
            b.apply(e, *at * 1000);
        }
        let mut b = opened_at_t0(&[("0.29", "10")], &[("0.32", "7")]);
        let mut at = T0 + 100;
        for p in ["0.01", "0.02"] {
            step(&mut b, &mut at, p);
        }
        assert_eq!(b.books["1"].pending.len(), 1);
        // Asked three times (10 s apart) and never answered: given up.
        let mut asked = 0;
        for s in 1..=4 {
            b.tick(at + 10_000 * s + 1);
            asked += b.take_resync().len();
        }
        assert_eq!((asked, b.unverified), (3, 1));
        assert!(b.take_snapshots().is_empty(), "never stored unvouched");
        // No more than eight wait; a socket loss gives up what waits, too.
        for i in 3..=13 {
            step(&mut b, &mut at, &format!("0.{i:02}"));
        }
        assert_eq!(b.books["1"].pending.len(), MAX_PENDING);
        assert_eq!(
            b.unverified,
            1 + 3,
            "eleven cuts: the three oldest given up past eight"
        );
        b.lost(at, at);
        assert_eq!(b.unverified, 4 + MAX_PENDING as u64);
        assert!(
            b.take_snapshots().is_empty(),
            "a loss stores no unvouched cut"
        );
    }

    #[test]
    fn a_cut_is_vouched_only_by_the_levels_nobody_changed_since() {
        let run = |repair: bool| {
            let mut b = opened_at_t0(
                &[("0.29", "10"), ("0.30", "20"), ("0.311", "5")],
                &[("0.32", "7")],
            );
            // Lost in transit: bid 0.30 -> 25 (never applied). Then an ask moves.
            b.apply(
                change(T0 + 500, Side::Ask, "0.33", "4", Some(("0.311", "0.32"))),
                (T0 + 500) * 1000,
            );
            // Past the boundary: the cut at T0 + 999 holds 0.30 x 20 (the truth: 25).
            b.apply(
                change(T0 + 1_100, Side::Bid, "0.28", "1", Some(("0.311", "0.32"))),
                (T0 + 1_100) * 1000,
            );
            let bid30 = if repair {
                // A later change at the same level repairs the book (not the cut).
                b.apply(
                    change(T0 + 1_200, Side::Bid, "0.30", "26", Some(("0.311", "0.32"))),
                    (T0 + 1_200) * 1000,
                );
                "26"
            } else {
                "25"
            };
            b.apply(
                book(
                    T0 + 1_300,
                    &[
                        ("0.28", "1"),
                        ("0.29", "10"),
                        ("0.30", bid30),
                        ("0.311", "5"),
                    ],
                    &[("0.32", "7"), ("0.33", "4")],
                ),
                (T0 + 1_300) * 1000,
            );
            let cuts = cuts_at(&mut b, T0 + 999);
            (cuts, b.discarded)
        };
        // Repaired: the cut agrees with the fresh book on every level nobody changed, and
        // says that two (0.30, and 0.28 which it lacks) could not be checked.
        let (cuts, discarded) = run(true);
        assert_eq!((cuts.len(), discarded), (1, 0));
        assert_eq!(cuts[0].levels_unchecked, 2, "{cuts:?}");
        // Not repaired: its 0.30 disagrees with the fresh book's, untouched: discarded.
        let (cuts, discarded) = run(false);
        assert_eq!((cuts.len(), discarded), (0, 1));
    }

    /// The tape's messages as (rows, openings with their start).
    fn tape_parts(msgs: Vec<TapeMsg>) -> (Vec<TapeRow>, Vec<(i64, Vec<TapeRow>)>) {
        let (mut rows, mut openings) = (Vec::new(), Vec::new());
        for m in msgs {
            match m {
                TapeMsg::Rows(r) => rows.extend(r),
                TapeMsg::Opening { start_us, rows } => openings.push((start_us, rows)),
                TapeMsg::Lost(..) => {}
            }
        }
        (rows, openings)
    }

    #[test]
    fn a_token_whose_tape_rows_were_dropped_stays_off_the_tape_until_its_fresh_book() {
        const ROLL_US: i64 = 3_600_000_000;
        let mut b = LiveBooks::new(300_000, 0, Some(ROLL_US), T0);
        b.apply(book(T0, &[("0.29", "10")], &[("0.32", "7")]), T0 * 1000);
        b.take_tape();
        b.tape_dropped(&[Arc::from("1")]);
        assert_eq!(
            b.take_resync(),
            vec!["1".to_owned()],
            "a fresh book asked for"
        );
        b.apply(
            change(T0 + 10, Side::Bid, "0.3", "1", Some(("0.3", "0.32"))),
            (T0 + 10) * 1000,
        );
        b.close_groups_where(|_| true);
        assert!(b.take_tape().is_empty(), "no row");
        // Nor in the next period's opening, made as the clock crosses its boundary.
        let boundary = (T0 * 1000).div_euclid(ROLL_US) * ROLL_US + ROLL_US;
        b.tick(boundary.div_euclid(1000) + 1);
        let (rows, openings) = tape_parts(b.take_tape());
        assert!(rows.is_empty());
        assert_eq!(openings.len(), 1);
        assert_eq!(openings[0].0, boundary);
        assert!(openings[0].1.is_empty(), "left out of the opening");
        // Its fresh book puts it back, as a snapshot block.
        let t = boundary.div_euclid(1000) + 20;
        b.apply(
            book(t, &[("0.29", "10"), ("0.3", "1")], &[("0.32", "7")]),
            t * 1000,
        );
        let msgs = b.take_tape();
        assert!(
            matches!(&msgs[..], [TapeMsg::Rows(r)] if r.len() == 3 && r.iter().all(|r| r.is_snapshot)),
            "back on the tape"
        );
    }

    /// A connection opens each of the tape's periods with its trusted books, before any row
    /// received after the boundary, once a boundary (the next event or the clock, whichever
    /// comes first). Replayed on their own, the opening's rows are exactly the books that
    /// the connection's rows so far build (the tape tests' replay, written apart from the
    /// code); a desynced book is left out until its fresh book.
    #[test]
    fn each_period_opens_with_the_connections_trusted_books() {
        const ROLL_US: i64 = 10_000_000;
        let mut b = LiveBooks::new(300_000, 0, Some(ROLL_US), T0);
        let boundary = (T0 * 1000).div_euclid(ROLL_US) * ROLL_US + ROLL_US;
        let of = |asset: &'static str, e: BookEvent<'static>| match e {
            BookEvent::Snapshot {
                timestamp_ms,
                bids,
                asks,
                ..
            } => BookEvent::Snapshot {
                asset_id: Cow::Borrowed(asset),
                market: Cow::Borrowed("0xm"),
                timestamp_ms,
                bids,
                asks,
                tick_size: None,
            },
            BookEvent::Change {
                timestamp_ms,
                side,
                price,
                size,
                top,
                ..
            } => BookEvent::Change {
                asset_id: Cow::Borrowed(asset),
                market: Cow::Borrowed("0xm"),
                timestamp_ms,
                side,
                price,
                size,
                top,
            },
            other => other,
        };
        b.apply(
            of("a", book(T0, &[("0.4", "10")], &[("0.6", "3")])),
            T0 * 1000,
        );
        b.apply(
            of("b", book(T0, &[("0.2", "1")], &[("0.3", "1")])),
            T0 * 1000 + 1,
        );
        b.apply(
            of(
                "a",
                change(T0 + 5, Side::Bid, "0.45", "2", Some(("0.45", "0.6"))),
            ),
            (T0 + 5) * 1000,
        );
        // b's top disagrees: desynced, out of the tape's openings.
        b.apply(
            of(
                "b",
                change(T0 + 6, Side::Ask, "0.35", "1", Some(("0.2", "0.31"))),
            ),
            (T0 + 6) * 1000,
        );
        b.close_groups_where(|_| true);
        let (before, openings) = tape_parts(b.take_tape());
        assert!(openings.is_empty(), "no boundary crossed yet");
        // The first event past the boundary opens the period before its own row.
        let t = boundary.div_euclid(1000) + 3;
        b.apply(
            of("a", change(t, Side::Ask, "0.6", "0", Some(("0.45", "")))),
            t * 1000,
        );
        let msgs = b.take_tape();
        assert!(
            matches!(&msgs[..], [TapeMsg::Opening { .. }, TapeMsg::Rows(r)] if r[0].local_timestamp_us == t * 1000),
            "the opening first, then the row"
        );
        let (_, openings) = tape_parts(msgs);
        let (start, rows) = &openings[0];
        assert_eq!(*start, boundary);
        assert!(rows.iter().all(|r| r.is_snapshot
            && r.timestamp_us == boundary
            && r.local_timestamp_us == boundary - 1));
        // Replayed on their own, the same books as every row before the boundary built
        // (README rule: each block of snapshot rows replaces the token's book).
        let replay = crate::book::tape::tests::replay;
        let opened = replay(rows);
        let built = replay(&before);
        assert_eq!(opened.get("a"), built.get("a"));
        assert_eq!(opened["a"].len(), 3, "{opened:?}");
        assert!(!opened.contains_key("b"), "a desynced book is left out");
        // The clock alone opens the next period on a quiet socket.
        b.tick((boundary + ROLL_US).div_euclid(1000) + 1);
        let (_, openings) = tape_parts(b.take_tape());
        assert_eq!(openings.len(), 1);
        assert_eq!(openings[0].0, boundary + ROLL_US);
        assert_eq!(openings[0].1.len(), 2, "a's bids; its ask was taken");
    }

    #[test]
    fn a_false_alarm_records_no_blind_window() {
        let mut b = books();
        // The exchange's top is wrong for a moment (or the check was): a desync...
        b.apply(
            change(T0 + 10, Side::Bid, "0.30", "25", Some(("0.311", "0.33"))),
            (T0 + 10) * 1000,
        );
        b.apply(
            change(T0 + 20, Side::Bid, "0.28", "1", Some(("0.311", "0.32"))),
            (T0 + 20) * 1000,
        );
        assert_eq!(b.desynced, 1);
        // ... the deltas go on being applied while the fresh book is awaited ...
        b.apply(
            change(T0 + 30, Side::Bid, "0.29", "0", None),
            (T0 + 30) * 1000,
        );
        assert_eq!(b.unchecked, 1);
        // ... and the fresh book equals the rebuilt one: nothing was lost.
        b.apply(
            book(
                T0 + 40,
                &[("0.28", "1"), ("0.30", "25"), ("0.311", "5")],
                &[("0.32", "7")],
            ),
            (T0 + 40) * 1000,
        );
        assert_eq!((b.false_alarms, b.resnapshots), (1, 0));
        let snaps = b.take_snapshots();
        assert_eq!(snaps.len(), 1);
        assert_eq!(snaps[0].blind_from_ms, None, "not blind");
    }
}
