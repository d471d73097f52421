//! How many trade events per second one polytape-sim process pushes to bare clients.
//!
//! `cargo run --release --example sim_throughput -- [TRADES] [SOCKETS]`
//!
//! The clients only count `last_trade_price` occurrences in each frame, so the figure is the
//! simulator's, not a parser's.

use std::time::{Duration, Instant};

use polytape_sim::{Sim, SimConfig};
use tungstenite::Message;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let trades: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let sockets: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let sim = Sim::start(SimConfig {
        listen: "127.0.0.1:0".into(),
        markets: (sockets * 250) as u64 + 200,
        trade_rate: 1e12,
        max_trades: Some(trades),
        ..SimConfig::default()
    })
    .expect("sim starts");
    let open: Vec<[String; 2]> = sim
        .markets()
        .into_iter()
        .filter(|m| m.is_open())
        .map(|m| m.token_ids)
        .collect();
    let started = Instant::now();
    let readers: Vec<_> = open
        .chunks(250)
        .take(sockets)
        .map(|chunk| {
            let tokens: Vec<String> = chunk.iter().flatten().cloned().collect();
            let url = sim.ws_url();
            std::thread::spawn(move || {
                let (mut ws, _) = tungstenite::connect(url).expect("connect");
                let sub =
                    serde_json::json!({"type":"market","assets_ids":tokens,"initial_dump":false});
                ws.send(Message::text(sub.to_string())).expect("subscribe");
                let mut seen = 0u64;
                let mut bytes = 0u64;
                while let Ok(msg) = ws.read() {
                    if let Message::Text(t) = msg {
                        bytes += t.len() as u64;
                        seen += t.as_str().matches("last_trade_price").count() as u64;
                        if t.as_str() == "STOP" {
                            break;
                        }
                    }
                }
                (seen, bytes)
            })
        })
        .collect();
    while sim.stats().trades_generated < trades && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let generated_in = started.elapsed();
    // Let the last frames flush, then report what was delivered.
    std::thread::sleep(Duration::from_millis(500));
    let delivered = sim.delivered_count();
    let stats = sim.stats();
    drop(sim);
    let mut received = 0;
    let mut bytes = 0;
    for r in readers {
        if let Ok((n, b)) = r.join() {
            received += n;
            bytes += b;
        }
    }
    let secs = generated_in.as_secs_f64();
    println!(
        "sim: {} trades generated, {delivered} delivered, {received} received over {sockets} sockets in {secs:.2} s: {:.0} trades/s, {:.0} MB/s",
        stats.trades_generated,
        delivered as f64 / secs,
        bytes as f64 / secs / 1e6
    );
}
