//! The wire as the live exchange writes it (feed notes §6), through the real socket path:
//! a scripted feed (a WebSocket server in this test) sends frames in the live shapes — a
//! taker sweep whose entries all carry the top after the whole match with the removals
//! last, a group split over two messages, a trade before its token's book, a market on a
//! 0.0025 tick with four-decimal prices and a `tick_size_change` to 0.0001, entries without
//! `best_bid`/`best_ask`, book levels best-last with trailing zeros, unknown event types
//! mixed in — and what polytape stores is compared with a replay of the same script written
//! here, independently of polytape's book code (a `BTreeMap` per side).

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use polytape::book::{Price, Size};
use polytape_testkit::pipeline::Running;
use polytape_testkit::{TestDb, Watchdog, init_logs};
use tungstenite::Message;

const MARKET_A: &str = "0xa000000000000000000000000000000000000000000000000000000000000001";
const MARKET_B: &str = "0xb000000000000000000000000000000000000000000000000000000000000002";
const A1: &str = "1001";
const A2: &str = "1002";
const B1: &str = "2001";
const B2: &str = "2002";

fn units(text: &str) -> u64 {
    Price::parse(text)
        .map(Price::units)
        .or_else(|| Size::parse(text).map(Size::units))
        .unwrap_or_else(|| panic!("exact decimal {text}"))
}

/// The test's own book: level totals by price in millionths, each side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Replay {
    bids: BTreeMap<u64, u64>,
    asks: BTreeMap<u64, u64>,
}

impl Replay {
    fn set(&mut self, side: &str, price: &str, size: &str) {
        let levels = if side == "BUY" {
            &mut self.bids
        } else {
            &mut self.asks
        };
        match units(size) {
            0 => levels.remove(&units(price)),
            s => levels.insert(units(price), s),
        };
    }
    fn mid2(&self) -> u64 {
        self.bids.keys().next_back().expect("a bid") + self.asks.keys().next().expect("an ask")
    }
}

/// What the script did to one token's book: (stamp, the book after every event so stamped).
type History = Vec<(i64, Replay)>;

struct Script {
    frames: Vec<String>,
    books: HashMap<&'static str, History>,
    /// (asset, price, size, side) of every trade, in delivery order.
    trades: Vec<(&'static str, &'static str, &'static str, &'static str, i64)>,
}

fn book_frame(
    asset: &str,
    market: &str,
    ts: i64,
    bids: &[(&str, &str)],
    asks: &[(&str, &str)],
    tick: &str,
) -> String {
    // Live order: bids ascending, asks descending (best last), as given.
    let lv = |l: &[(&str, &str)]| {
        l.iter()
            .map(|(p, s)| format!(r#"{{"price":"{p}","size":"{s}"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        r#"{{"event_type":"book","asset_id":"{asset}","market":"{market}","bids":[{}],"asks":[{}],"timestamp":"{ts}","hash":"0x1","tick_size":"{tick}","last_trade_price":"0.500"}}"#,
        lv(bids),
        lv(asks)
    )
}

/// A `price_change` entry: asset, side, price, size, and the top of book it gives (if any).
type Entry<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Option<(&'a str, &'a str)>,
);

fn change_frame(market: &str, ts: i64, entries: &[Entry<'_>]) -> String {
    let e: Vec<String> = entries
        .iter()
        .map(|(asset, side, price, size, top)| {
            let top = top
                .map(|(b, a)| format!(r#","best_bid":"{b}","best_ask":"{a}""#))
                .unwrap_or_default();
            format!(r#"{{"asset_id":"{asset}","price":"{price}","size":"{size}","side":"{side}","hash":"0x2"{top}}}"#)
        })
        .collect();
    format!(
        r#"{{"market":"{market}","price_changes":[{}],"timestamp":"{ts}","event_type":"price_change"}}"#,
        e.join(",")
    )
}

fn trade_frame(
    asset: &str,
    market: &str,
    ts: i64,
    side: &str,
    price: &str,
    size: &str,
    n: u32,
) -> String {
    format!(
        r#"{{"asset_id":"{asset}","event_type":"last_trade_price","fee_rate_bps":"0","market":"{market}","price":"{price}","side":"{side}","size":"{size}","timestamp":"{ts}","transaction_hash":"0x{n:064x}"}}"#
    )
}

/// The script, stamped from `t0`, with its own replay of every book.
fn script(t0: i64) -> Script {
    let mut frames = Vec::new();
    let mut books: HashMap<&'static str, History> = HashMap::new();
    let mut trades = Vec::new();
    let mut a1 = Replay::default();
    let mut b1 = Replay::default();
    // A1's book, levels best last, trailing zeros kept.
    let (bids, asks) = (
        [("0.460", "100"), ("0.470", "50"), ("0.480", "20")],
        [("0.550", "80"), ("0.530", "40"), ("0.520", "30")],
    );
    frames.push(book_frame(A1, MARKET_A, t0, &bids, &asks, "0.01"));
    bids.iter().for_each(|(p, s)| a1.set("BUY", p, s));
    asks.iter().for_each(|(p, s)| a1.set("SELL", p, s));
    books.entry(A1).or_default().push((t0, a1.clone()));
    // An unknown event type beside a trade before its token's book (A2 never gets one).
    frames.push(format!(
        r#"[{{"event_type":"something_new","payload":{{"a":[1,2]}}}},{}]"#,
        trade_frame(A2, MARKET_A, t0 + 50, "SELL", "0.47", "12.5", 1)
    ));
    trades.push((A2, "0.47", "12.5", "SELL", t0 + 50));
    // A taker BUY sweeps 0.52 (30) and 10 of 0.53: every entry says bid 0.48 / ask 0.53
    // (after the whole match), the removal of 0.52 last; the two fills as two trades.
    let ts = t0 + 100;
    frames.push(change_frame(
        MARKET_A,
        ts,
        &[
            (A1, "SELL", "0.530", "30", Some(("0.48", "0.53"))),
            (A1, "SELL", "0.520", "0", Some(("0.48", "0.53"))),
        ],
    ));
    a1.set("SELL", "0.53", "30");
    a1.set("SELL", "0.52", "0");
    frames.push(format!(
        "[{},{}]",
        trade_frame(A1, MARKET_A, ts, "BUY", "0.520", "30", 2),
        trade_frame(A1, MARKET_A, ts, "BUY", "0.530", "10", 3)
    ));
    trades.push((A1, "0.52", "30", "BUY", ts));
    trades.push((A1, "0.53", "10", "BUY", ts));
    books.entry(A1).or_default().push((ts, a1.clone()));
    // One group over two messages: a new best bid at 0.49 is announced with the top after
    // the group (0.50), then 0.50 arrives in the next message.
    let ts = t0 + 200;
    frames.push(change_frame(
        MARKET_A,
        ts,
        &[(A1, "BUY", "0.490", "5", Some(("0.50", "0.53")))],
    ));
    frames.push(change_frame(
        MARKET_A,
        ts,
        &[(A1, "BUY", "0.500", "7.25", Some(("0.50", "0.53")))],
    ));
    a1.set("BUY", "0.49", "5");
    a1.set("BUY", "0.50", "7.25");
    books.entry(A1).or_default().push((ts, a1.clone()));
    // B1 on a 0.0025 tick: four-decimal prices.
    let ts = t0 + 300;
    let (bids, asks) = (
        [("0.4825", "40"), ("0.4850", "10")],
        [("0.4900", "60"), ("0.4875", "25")],
    );
    frames.push(book_frame(B1, MARKET_B, ts, &bids, &asks, "0.0025"));
    bids.iter().for_each(|(p, s)| b1.set("BUY", p, s));
    asks.iter().for_each(|(p, s)| b1.set("SELL", p, s));
    books.entry(B1).or_default().push((ts, b1.clone()));
    // An entry without best_bid/best_ask (applied, not checked), then a trade at 0.4875.
    let ts = t0 + 400;
    frames.push(change_frame(
        MARKET_B,
        ts,
        &[(B1, "BUY", "0.4850", "12.5", None)],
    ));
    b1.set("BUY", "0.485", "12.5");
    frames.push(change_frame(
        MARKET_B,
        ts,
        &[(B1, "SELL", "0.4875", "20", Some(("0.485", "0.4875")))],
    ));
    b1.set("SELL", "0.4875", "20");
    frames.push(trade_frame(B1, MARKET_B, ts, "BUY", "0.4875", "5", 4));
    trades.push((B1, "0.4875", "5", "BUY", ts));
    books.entry(B1).or_default().push((ts, b1.clone()));
    // The tick moves to 0.0001 (the midpoint near no edge here: the exchange's call), and a
    // level on the new grid.
    let ts = t0 + 500;
    frames.push(format!(
        r#"{{"event_type":"tick_size_change","asset_id":"{B1}","market":"{MARKET_B}","old_tick_size":"0.0025","new_tick_size":"0.0001","timestamp":"{ts}"}}"#
    ));
    frames.push(change_frame(
        MARKET_B,
        ts,
        &[(B1, "BUY", "0.4851", "3", Some(("0.4851", "0.4875")))],
    ));
    b1.set("BUY", "0.4851", "3");
    books.entry(B1).or_default().push((ts, b1.clone()));
    Script {
        frames,
        books,
        trades,
    }
}

/// A fresh `book` of what the replay holds (live order), stamped `ts`.
fn fresh_book(asset: &str, market: &str, ts: i64, r: &Replay, tick: &str) -> String {
    let text = |u: u64| polytape::book::Size::from_units(u).to_string();
    let bids: Vec<(String, String)> = r.bids.iter().map(|(p, s)| (text(*p), text(*s))).collect();
    let asks: Vec<(String, String)> = r
        .asks
        .iter()
        .rev()
        .map(|(p, s)| (text(*p), text(*s)))
        .collect();
    let b: Vec<(&str, &str)> = bids.iter().map(|(p, s)| (p.as_str(), s.as_str())).collect();
    let a: Vec<(&str, &str)> = asks.iter().map(|(p, s)| (p.as_str(), s.as_str())).collect();
    book_frame(asset, market, ts, &b, &a, tick)
}

/// Serves one client: reads its subscription, sends `frames`, answers PING, then sends
/// whatever comes on `more` (until the client goes).
fn serve(listener: TcpListener, frames: Vec<String>, more: mpsc::Receiver<String>) {
    let (stream, _) = listener.accept().expect("a client");
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut ws = tungstenite::accept(stream).expect("handshake");
    let mut sent = false;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) if t.as_str() == "PING" => {
                let _ = ws.send(Message::text("PONG"));
            }
            Ok(Message::Text(_)) if !sent => {
                for f in &frames {
                    ws.send(Message::text(f.clone())).expect("send");
                }
                sent = true;
            }
            Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => return,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        if let Ok(f) = more.try_recv()
            && ws.send(Message::text(f)).is_err()
        {
            return;
        }
    }
}

#[test]
fn live_shaped_frames_are_stored_as_an_independent_replay_says() {
    init_logs();
    let _w = Watchdog::new("conformance: the live wire", Duration::from_secs(120));
    let db = TestDb::new();
    let rows = [(MARKET_A, A1, A2, "a"), (MARKET_B, B1, B2, "b")].map(|(c, y, n, slug)| {
        polytape::bench::MarketRow {
            condition_id: c.to_owned(),
            gamma_id: Some(slug.to_owned()),
            question: Some(format!("Market {slug}?")),
            slug: Some(slug.to_owned()),
            outcomes: vec!["Yes".into(), "No".into()],
            token_ids: vec![y.to_owned(), n.to_owned()],
            active: true,
            closed: false,
            accepting_orders: true,
            enable_order_book: true,
            neg_risk: false,
            end_date: None,
            version: Some("v2".into()),
        }
    });
    polytape::bench::upsert_markets(&mut db.client(), &rows).expect("markets");
    // Stamps well inside one minute, so every bar is one row.
    let mut t0 = polytape_sim::now_ms();
    if t0 % 60_000 > 45_000 {
        std::thread::sleep(Duration::from_millis((60_000 - t0 % 60_000) as u64 + 200));
        t0 = polytape_sim::now_ms();
    }
    let s = script(t0);
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}", server.local_addr().expect("addr"));
    let (more_tx, more) = mpsc::channel();
    let frames = s.frames.clone();
    std::thread::spawn(move || serve(server, frames, more));
    let config = db
        .config()
        .to_builder()
        .ws_url(&url)
        .gamma_url("http://127.0.0.1:9")
        .data_api_url("http://127.0.0.1:9")
        .clob_url("http://127.0.0.1:9")
        .book_snapshot_interval(Duration::from_secs(1))
        .book_depth(0)
        .ping_interval(Duration::from_secs(1))
        .stale_timeout(Duration::from_secs(60))
        .build()
        .expect("config");
    let listener = polytape::Listener::from_database(config).expect("listener");
    let health = listener.health();
    let running = Running::start(listener);
    let wait = |what: &str, cond: &dyn Fn(&polytape::HealthSnapshot) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !cond(&health.snapshot()) {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {:?}",
                health.snapshot()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("the script's trades stored", &|h| {
        h.trades_inserted >= s.trades.len() as u64
    });
    // Fresh books past a cut boundary vouch for the cuts (and check the rebuilt books).
    let ts = (t0 / 1000 + 2) * 1000 + 10;
    while polytape_sim::now_ms() < ts {
        std::thread::sleep(Duration::from_millis(20));
    }
    let last = |a: &str| s.books[a].last().expect("a history").1.clone();
    more_tx
        .send(fresh_book(A1, MARKET_A, ts, &last(A1), "0.01"))
        .expect("send");
    more_tx
        .send(fresh_book(B1, MARKET_B, ts, &last(B1), "0.0001"))
        .expect("send");
    // Applied (a graceful stop then stores what they vouched for).
    wait("the fresh books applied", &|h| h.books.book_events >= 12);
    let (health, _) = running.stop();

    // The books: no desync on the sweep or the split group, no false alarm either.
    assert_eq!(health.books.books_desynced, 0, "{health:?}");
    assert_eq!(health.books.book_false_alarms, 0, "{health:?}");
    assert!(health.books.book_entries_unchecked >= 1, "{health:?}");
    assert_eq!(health.books.book_events_invalid, 0, "{health:?}");
    assert!(health.unknown_events >= 1, "{health:?}");
    // Every stored snapshot equals the replay at its time.
    let stored = polytape_testkit::books::stored_snapshots(db.url());
    let mut checked = 0;
    for snap in &stored {
        let history = &s.books[snap.asset_id.as_str()];
        let truth = history
            .iter()
            .rev()
            .find(|(t, _)| *t <= snap.taken_at_ms)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| last(&snap.asset_id));
        let truth = if snap.taken_at_ms >= ts {
            last(&snap.asset_id)
        } else {
            truth
        };
        let bids: Vec<(u64, u64)> = truth.bids.iter().rev().map(|(p, s)| (*p, *s)).collect();
        let asks: Vec<(u64, u64)> = truth.asks.iter().map(|(p, s)| (*p, *s)).collect();
        assert_eq!((&snap.bids, &snap.asks), (&bids, &asks), "{snap:?}");
        checked += 1;
    }
    assert!(
        stored
            .iter()
            .any(|s| s.asset_id == B1 && s.taken_at_ms % 1000 == 999),
        "a cut of the 0.0025/0.0001 book stored: {stored:?}"
    );
    assert!(checked >= 4, "{checked}");
    // The trades, exactly, in delivery order within their millisecond.
    let mut c = db.client();
    let got: Vec<(String, String, String, String)> = c
        .query(
            "SELECT asset_id, price::text, size::text, side FROM trades ORDER BY traded_at, received_at",
            &[],
        )
        .expect("trades")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let canon = |t: &str| polytape::Decimal::canonical(t);
    let want: Vec<(String, String, String, String)> = s
        .trades
        .iter()
        .map(|(a, p, q, side, _)| (a.to_string(), canon(p), canon(q), side.to_string()))
        .collect();
    let got: Vec<_> = got
        .into_iter()
        .map(|(a, p, q, side)| (a, canon(&p), canon(&q), side))
        .collect();
    assert_eq!(got, want);
    // A bar for every traded token-minute; the sweep's bar's last price is its last fill;
    // the token without a book has trades and no prices; the rest close at the replay's mid.
    let bars: HashMap<String, (i32, Option<String>, Option<String>)> = c
        .query(
            "SELECT asset_id, trades, last_trade_price::text, close::text FROM price_bars",
            &[],
        )
        .expect("bars")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    let mid = |a: &str| {
        let m2 = last(a).mid2();
        polytape::Decimal::canonical(&format!("{}.{:07}", m2 / 2_000_000, (m2 % 2_000_000) * 5))
    };
    assert_eq!(bars[A1].0, 2, "{bars:?}");
    assert_eq!(
        bars[A1].1.as_deref().map(canon),
        Some(canon("0.53")),
        "the last fill"
    );
    assert_eq!(bars[A1].2.as_deref().map(canon), Some(mid(A1)), "{bars:?}");
    assert_eq!(
        bars[A2],
        (1, Some(canon("0.47")), None),
        "no book, no price"
    );
    assert_eq!(bars[B1].0, 1);
    assert_eq!(bars[B1].2.as_deref().map(canon), Some(mid(B1)), "{bars:?}");
}
