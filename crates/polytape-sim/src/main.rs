//! `polytape-sim`: a local Polymarket (market channel + Gamma listing) with fault injection.

use std::time::Duration;

use clap::Parser;
use polytape_sim::{Sim, SimConfig};

/// A faithful local Polymarket for tests and benchmarks: the market channel at /ws/market,
/// the Gamma listing at /markets/keyset and /markets, and control endpoints under /sim/
/// (POST /sim/faults/{drop,freeze,stall,max-assets,upgrade-limit,malformed,oversized},
/// /sim/markets/{add,close}, GET /sim/stats, GET /sim/delivered).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to serve the feed, the listing and the control endpoints on.
    #[arg(long, default_value = "127.0.0.1:8765")]
    listen: String,
    /// Markets in the universe (about one in ten is closed, two tokens each).
    #[arg(long, default_value_t = 1000)]
    markets: u64,
    /// Seed of the universe and of the trade stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Trades per second over all subscribed assets.
    #[arg(long, default_value_t = 100.0)]
    trade_rate: f64,
    /// Stop generating after this many trades.
    #[arg(long)]
    max_trades: Option<u64>,
    /// Start trading only once subscriptions exist and have held still for 0.5 s.
    #[arg(long)]
    start_when_subscribed: bool,
    /// `price_change` events per trade (the live feed sends about 50).
    #[arg(long, default_value_t = 50)]
    noise_per_trade: u32,
    /// Milliseconds of silence after which a socket gets a `price_change`.
    #[arg(long, default_value_t = 1000)]
    idle_noise_ms: u64,
    /// Seconds without a client frame after which a socket is closed.
    #[arg(long, default_value_t = 30)]
    client_idle_timeout_secs: u64,
    /// Sockets holding more assets than this silently get nothing.
    #[arg(long, default_value_t = 500)]
    max_assets_per_socket: usize,
    /// WebSocket upgrades per second before answering 429 (0: no limit).
    #[arg(long, default_value_t = 0)]
    upgrades_per_sec: u32,
    /// Start with every socket frozen (PONG answered, no data).
    #[arg(long)]
    freeze: bool,
    /// Wait for slow sockets instead of skipping their trades after 2 s, so every generated
    /// trade is delivered (full-speed benchmarks).
    #[arg(long)]
    block_on_slow_sockets: bool,
    /// Seconds without a text PING from the client after which a socket is closed.
    #[arg(long, default_value_t = 40)]
    ping_timeout_secs: u64,
    /// Seconds a client may read nothing while data waits before it is dropped (0: never).
    #[arg(long, default_value_t = 15)]
    slow_client_timeout_secs: u64,
    /// Seconds after its block before the Data API shows a trade.
    #[arg(long, default_value_t = 0)]
    data_api_lag_secs: u64,
    /// Data API requests per 10 s before 429 (0: no limit).
    #[arg(long, default_value_t = 200)]
    data_api_rate_limit: u32,
    /// A frame with more asset ids than this closes the socket.
    #[arg(long, default_value_t = 1000)]
    max_ids_per_frame: usize,
    /// Extra seconds between a trade's match and its block (a congested chain).
    #[arg(long, default_value_t = 0)]
    settlement_lag_secs: u64,
    /// Most rows a Data API page returns, whatever `limit` asks.
    #[arg(long, default_value_t = 10_000)]
    data_api_max_page: usize,
    /// Serve no `GET /v2/trades` (404), as a Data API before v2.
    #[arg(long)]
    no_data_api_v2: bool,
    /// The fraction of executed trades the Data API silently leaves out (e.g. 0.02): only
    /// the chain (`POST /rpc`) has them.
    #[arg(long, default_value_t = 0.0)]
    data_api_drop: f64,
    /// The most blocks one eth_getLogs may span (0: any).
    #[arg(long, default_value_t = 0)]
    rpc_max_range: u64,
    /// RPC requests per 10 s before 429 (0: no limit).
    #[arg(long, default_value_t = 0)]
    rpc_rate_limit: u32,
    /// Blocks between the chain's head and `finalized`.
    #[arg(long, default_value_t = 32)]
    chain_finality: u64,
    /// Seconds into the run when CLOB V2 begins: trades settled before are V1 events on the
    /// V1 contracts (0: all V2, the migration long past).
    #[arg(long, default_value_t = 0)]
    v1_seconds: u64,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let config = SimConfig {
        listen: args.listen,
        markets: args.markets,
        seed: args.seed,
        trade_rate: args.trade_rate,
        max_trades: args.max_trades,
        start_when_subscribed: args.start_when_subscribed,
        noise_per_trade: args.noise_per_trade,
        idle_noise: Duration::from_millis(args.idle_noise_ms),
        client_idle_timeout: Duration::from_secs(args.client_idle_timeout_secs),
        max_assets_per_socket: args.max_assets_per_socket,
        upgrades_per_sec: args.upgrades_per_sec,
        freeze: args.freeze,
        block_on_slow_sockets: args.block_on_slow_sockets,
        ping_timeout: Duration::from_secs(args.ping_timeout_secs),
        slow_client_timeout: Some(Duration::from_secs(args.slow_client_timeout_secs))
            .filter(|d| !d.is_zero()),
        data_api_lag: Duration::from_secs(args.data_api_lag_secs),
        data_api_rate_limit: args.data_api_rate_limit,
        max_ids_per_frame: args.max_ids_per_frame,
        settlement_lag: Duration::from_secs(args.settlement_lag_secs),
        data_api_max_page: args.data_api_max_page,
        data_api_v2: !args.no_data_api_v2,
        data_api_drop: args.data_api_drop,
        rpc_max_range: args.rpc_max_range,
        rpc_rate_limit: args.rpc_rate_limit,
        chain_finality: args.chain_finality,
        chain_migration_block: if args.v1_seconds == 0 {
            polytape_sim::chain::V2_FIRST_BLOCK
        } else {
            polytape_sim::chain::migration_after(args.v1_seconds)
        },
    };
    let sim = match Sim::start(config) {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("polytape-sim: cannot start: {e}");
            std::process::exit(1);
        }
    };
    // One line, once ready: scripts and tests wait for it.
    println!("polytape-sim listening on {}", sim.addr());
    let term = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, std::sync::Arc::clone(&term)) {
            eprintln!("polytape-sim: cannot register signal handler: {e}");
        }
    }
    while !term.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = sim.stats();
    eprintln!(
        "polytape-sim: stopping; {} trades generated, {} delivered",
        stats.trades_generated, stats.trades_delivered
    );
}
