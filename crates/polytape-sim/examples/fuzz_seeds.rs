//! Writes seed corpora for the fuzz targets (`fuzz/`) from what the simulator really sends:
//! market-channel frames of every event type (malformed ones included), Gamma listing
//! pages, Data API `/trades` answers, and request heads.
//!
//! `cargo run -p polytape-sim --example fuzz_seeds -- fuzz/corpus`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use polytape_sim::book::SimBook;
use polytape_sim::frames::{self, TradeRecord};
use polytape_sim::{Sim, SimConfig};

fn main() -> std::io::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let out = Path::new(&out);
    let write = |target: &str, name: String, body: &[u8]| -> std::io::Result<()> {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), body)
    };
    let sim = Sim::start(SimConfig {
        listen: "127.0.0.1:0".into(),
        markets: 40,
        trade_rate: 500.0,
        data_api_lag: Duration::ZERO,
        ..SimConfig::default()
    })?;
    let markets = sim.markets();
    let now = 1_764_000_000_000;
    for (i, m) in markets.iter().take(8).enumerate() {
        let t = TradeRecord {
            seq: i as u64,
            market: i as u32,
            outcome: (i % 2) as u8,
            timestamp_ms: now + i as i64,
            price_bp: (100 + i as u16 * 97) * 10,
            buy: i % 2 == 0,
            has_tx: i % 3 != 0,
            short_price: i % 4 == 1,
        };
        let mut events = Vec::new();
        let mut s = String::new();
        frames::trade_event(&mut s, &t, m);
        events.push(std::mem::take(&mut s));
        let mut rng = fastrand::Rng::with_seed(i as u64);
        let mut book = SimBook::new(m.mid_milli as u32 * 10, now, &mut rng);
        let changes: Vec<_> = (0..4)
            .filter_map(|k| book.churn(now, &mut rng).map(|c| ((k % 2) as u8, c)))
            .collect();
        frames::price_change_event(&mut s, m, &changes, i as u64, now);
        events.push(std::mem::take(&mut s));
        frames::tick_size_event(&mut s, m, 1, 100, 10, now);
        events.push(std::mem::take(&mut s));
        frames::best_bid_ask_event(&mut s, m, 0, (book.best_bid(), book.best_ask()), now);
        events.push(std::mem::take(&mut s));
        frames::book_event(&mut s, m, 1, &book.state(0), book.last_trade, i as u64, now);
        events.push(std::mem::take(&mut s));
        frames::new_market_event(&mut s, m, now);
        events.push(std::mem::take(&mut s));
        frames::market_resolved_event(&mut s, m, i % 2, now);
        events.push(std::mem::take(&mut s));
        for (k, e) in events.iter().enumerate() {
            write("feed_frame", format!("event-{i}-{k}"), e.as_bytes())?;
        }
        write(
            "feed_frame",
            format!("array-{i}"),
            format!("[{}]", events.join(",")).as_bytes(),
        )?;
        for (k, bad) in frames::malformed_frames(m, now).iter().enumerate() {
            write("feed_frame", format!("malformed-{i}-{k}"), bad.as_bytes())?;
        }
    }
    // Let the exchange trade, then take what Gamma and the Data API answer.
    std::thread::sleep(Duration::from_secs(2));
    let addr = sim.addr();
    for (k, query) in ["closed=false&limit=5", "closed=true&limit=5", "limit=2"]
        .iter()
        .enumerate()
    {
        let body = get(addr, &format!("/markets/keyset?{query}"))?;
        write("gamma_page", format!("page-{k}"), body.as_bytes())?;
    }
    let ids: Vec<&str> = markets
        .iter()
        .take(10)
        .map(|m| m.condition_id.as_str())
        .collect();
    for (k, q) in [
        format!("market={}&limit=50", ids.join(",")),
        "limit=5&takerOnly=false".into(),
    ]
    .iter()
    .enumerate()
    {
        let body = get(addr, &format!("/trades?{q}"))?;
        write("data_api_trades", format!("trades-{k}"), body.as_bytes())?;
    }
    let heads: [&[u8]; 4] = [
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /metrics?x=%41&y=a+b HTTP/1.1\r\nHost: h\r\nUser-Agent: curl\r\n\r\n",
        b"GET /ws/market HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"POST /sim/markets/add HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    ];
    for (k, h) in heads.iter().enumerate() {
        write("http_request", format!("head-{k}"), h)?;
    }
    println!("seeds written under {}", out.display());
    Ok(())
}

/// A plain HTTP/1.0 GET: the body.
fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned()))
}
