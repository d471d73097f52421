//! The trade generator: the exchange's side of the simulator.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::frames::{self, TradeRecord};
use crate::state::{Outgoing, SimState};

/// The exchange: generates trades at the configured rate over every open market's assets,
/// whether or not a socket holds them, records each as executed (the ground truth), and
/// queues those that subscribed sockets should get, one frame per socket per tick. A
/// stalled asset keeps trading; its trades are just not sent.
pub(crate) fn generate(state: &Arc<SimState>) {
    let config = &state.config;
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let mut start = Instant::now();
    let mut produced: u64 = 0;
    // With `start_when_subscribed`, the clock starts once subscriptions exist and have held
    // still for half a second (every client connected), not at launch.
    let mut settled: Option<(usize, Instant)> = None;
    let mut started = false;
    let mut seq: u64 = 0;
    let mut noise: u64 = 0;
    let mut tradable: Vec<(u32, u8)> = Vec::new();
    let mut tradable_at: Option<Instant> = None;
    // Per-socket batches of this tick.
    let mut batches: HashMap<u64, (String, Vec<TradeRecord>, usize)> = HashMap::new();
    const MAX_PER_TICK: u64 = 20_000;
    const MAX_EVENTS_PER_FRAME: usize = 500;
    while !state.stopping.load(Relaxed) {
        if config.start_when_subscribed && !started {
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
            if !started {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        }
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
            let stalled = state.stalled.read();
            if tradable.is_empty() {
                drop(markets);
                drop(hub);
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let max_assets = state.max_assets_per_socket.load(Relaxed);
            let mut executed = state.executed.lock();
            for _ in 0..due {
                let key = tradable[rng.usize(0..tradable.len())];
                let market = &markets[key.0 as usize];
                if !market.is_open() {
                    continue; // closed since the list was made: it trades no more
                }
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
                executed.push(t);
                if stalled.contains(&key) {
                    continue; // executed, never sent: the live feed's stalled asset
                }
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
                            if noise.is_multiple_of(20) {
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
