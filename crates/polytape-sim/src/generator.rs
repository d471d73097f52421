//! The trade generator: the exchange's clock. It paces trades at the configured rate over
//! every open market's assets, whether or not a socket holds them, and lets the exchange
//! ([`crate::exchange`]) run each tick: the trades, the book churn around them, the books
//! sockets asked for, every event queued per socket in order.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::exchange::{Outbox, Tick};
use crate::state::SimState;

pub(crate) fn generate(state: &Arc<SimState>) {
    let config = &state.config;
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let mut start = Instant::now();
    let mut produced: u64 = 0;
    // With `start_when_subscribed`, the clock starts once subscriptions exist and have held
    // still for half a second (every client connected), not at launch.
    let mut settled: Option<(usize, Instant)> = None;
    let mut started = !config.start_when_subscribed;
    let mut seq: u64 = 0;
    let mut events: u64 = 0;
    let mut tradable: Vec<(u32, u8)> = Vec::new();
    let mut tradable_at: Option<Instant> = None;
    let mut out = Outbox::default();
    const MAX_PER_TICK: u64 = 20_000;
    while !state.stopping.load(Relaxed) {
        if !started {
            let subscribed = state.hub.lock().subscribers.len();
            match settled {
                Some((n, since)) if n == subscribed && subscribed > 0 => {
                    if since.elapsed() >= Duration::from_millis(500) {
                        started = true;
                        start = Instant::now();
                        log::info!("polytape-sim: {subscribed} assets subscribed; trading starts");
                    }
                }
                _ => settled = Some((subscribed, Instant::now())),
            }
        }
        let mut due = 0;
        if started && config.trade_rate > 0.0 && config.max_trades.is_none_or(|m| produced < m) {
            let target = (start.elapsed().as_secs_f64() * config.trade_rate) as u64;
            due = target.saturating_sub(produced).min(MAX_PER_TICK);
            if let Some(max) = config.max_trades {
                due = due.min(max - produced);
            }
        }
        let asked = !state.hub.lock().requests.is_empty()
            || state.books.lock().late_books_due(crate::now_ms());
        if due == 0 && !asked {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let now = crate::now_ms();
        let sends = {
            let mut hub = state.hub.lock();
            let markets = state.markets.read();
            let mut books = state.books.lock();
            if !books.ready(now) {
                // A book went out stamped this millisecond: what changes next is stamped
                // later, so wait for the clock rather than run ahead of it.
                drop((books, markets, hub));
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            // Markets open and close at run time: look again every 200 ms.
            if tradable_at.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
                tradable = markets
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.is_open())
                    .flat_map(|(i, _)| [(i as u32, 0u8), (i as u32, 1u8)])
                    .collect();
                tradable_at = Some(Instant::now());
            }
            let requests = std::mem::take(&mut hub.requests);
            let mut tick = Tick {
                state,
                hub: &mut hub,
                markets: &markets,
                books: &mut books,
                out: &mut out,
                now,
                events: &mut events,
                books_due: Vec::new(),
                books_due_all: Default::default(),
                sids: Vec::new(),
            };
            tick.answer(requests);
            let mut left = if tradable.is_empty() { 0 } else { due };
            while left > 0 {
                let key = tradable[rng.usize(0..tradable.len())];
                // One taker in eight sweeps two levels (two trades under one stamp), as
                // live takers do, where a trade limit leaves room for both (the rate evens
                // out: the next tick owes one trade less).
                let room = config.max_trades.is_none_or(|m| produced + 2 <= m);
                let sweep = room && rng.u8(0..8) == 0;
                let n = tick.trade(key, seq, rng.bool(), sweep).len() as u64;
                if n == 0 {
                    left -= 1;
                    continue; // closed since the list was made: it trades no more
                }
                left = left.saturating_sub(n);
                seq += n;
                produced += n;
                state.trades_generated.fetch_add(n, Relaxed);
                // Resting orders come and go around it: the live mix's ~50 book events a
                // trade, on the market's two tokens.
                for _ in 0..config.noise_per_trade {
                    tick.churn((key.0, rng.u8(0..2)));
                }
            }
            tick.send_books();
            out.finish(&hub)
        };
        if due > 0 && tradable.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Send outside the lock: a slow socket applies backpressure to the generator (which
        // is what a full-speed benchmark wants) without blocking subscriptions. A socket that
        // takes no frame for two seconds is skipped: what it was sent is simply not delivered.
        for (tx, item) in sends {
            if config.block_on_slow_sockets {
                let _ = tx.send(item); // fails only when the socket is gone
            } else {
                let _ = tx.send_timeout(item, Duration::from_secs(2));
            }
        }
    }
}
