//! `polytape`: record every Polymarket trade into PostgreSQL.

mod daemon;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use daemon::DaemonConfig;
use polytape::config::{Config, LIVE_GAMMA_URL, LIVE_WS_URL};
use polytape::gamma::{GammaClient, sync_markets};
use polytape::resolution::ResolutionTracker;
use polytape::stop::StopSignal;

/// Records every trade on Polymarket into PostgreSQL, live, without losing any.
///
/// Every option can also come from the environment variable named beside it.
#[derive(Parser, Debug)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Common {
    /// PostgreSQL connection string (URL or key=value; sslmode=require/verify-ca/verify-full
    /// use TLS through rustls).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true,
        global = true
    )]
    database_url: String,
    /// Gamma listing base URL.
    #[arg(long, env = "POLYTAPE_GAMMA_URL", default_value = LIVE_GAMMA_URL, global = true)]
    gamma_url: String,
    /// Address of a running daemon's health endpoint (for `status`), and where `run` serves
    /// it; an empty value turns it off.
    #[arg(
        long,
        env = "POLYTAPE_HEALTH_ADDR",
        default_value = "127.0.0.1:9464",
        global = true
    )]
    health_addr: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Apply the database migrations (idempotent; safe when two run at once).
    Migrate,
    /// Page through the Gamma listing and upsert the `markets` table.
    SyncMarkets,
    /// Run the daemon: migrate, sync, listen, write, re-sync, resolve, serve health.
    Run(RunArgs),
    /// Show the health of a running daemon.
    Status,
    /// Run one resolution round and print what it found.
    Resolve,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Market channel URL.
    #[arg(long, env = "POLYTAPE_WS_URL", default_value = LIVE_WS_URL)]
    ws_url: String,
    /// PEM file of extra roots to trust for wss:// (beside the built-in web roots).
    #[arg(long, env = "POLYTAPE_WS_CA_FILE")]
    ws_ca_file: Option<String>,
    /// Most tokens on one socket (the live feed goes silent past ~500).
    #[arg(long, env = "POLYTAPE_MAX_TOKENS_PER_CONN", default_value_t = 500)]
    max_tokens_per_conn: usize,
    /// Seconds without a data frame after which a socket is replaced.
    #[arg(long, env = "POLYTAPE_STALE_TIMEOUT_SECS", default_value_t = 60)]
    stale_timeout_secs: u64,
    /// Seconds between market re-syncs.
    #[arg(long, env = "POLYTAPE_SYNC_INTERVAL_SECS", default_value_t = 300)]
    sync_interval_secs: u64,
    /// Seconds between resolution rounds.
    #[arg(long, env = "POLYTAPE_RESOLVE_INTERVAL_SECS", default_value_t = 600)]
    resolve_interval_secs: u64,
    /// Trades per database batch.
    #[arg(long, env = "POLYTAPE_BATCH_SIZE", default_value_t = 1000)]
    batch_size: usize,
    /// Longest a trade waits for its batch, in milliseconds.
    #[arg(long, env = "POLYTAPE_BATCH_MAX_AGE_MS", default_value_t = 100)]
    batch_max_age_ms: u64,
    /// Capacity of the channel between sockets and writer (a full channel blocks readers).
    #[arg(long, env = "POLYTAPE_CHANNEL_CAPACITY", default_value_t = 10_000)]
    channel_capacity: usize,
    /// Seconds between summary log lines.
    #[arg(long, env = "POLYTAPE_SUMMARY_INTERVAL_SECS", default_value_t = 60)]
    summary_interval_secs: u64,
    /// Seconds without the database after which /readyz answers 503.
    #[arg(long, env = "POLYTAPE_READINESS_GRACE_SECS", default_value_t = 30)]
    readiness_grace_secs: u64,
    /// Hold only shard I of N of the markets (`I/N`), to split the load over N instances.
    #[arg(long, env = "POLYTAPE_SHARD")]
    shard: Option<polytape::store::markets::Shard>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Migrate => migrate(&cli.common),
        Command::SyncMarkets => sync(&cli.common),
        Command::Run(ref args) => run(&cli.common, args),
        Command::Status => status(&cli.common),
        Command::Resolve => resolve(&cli.common),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("polytape: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn connect(common: &Common) -> Result<postgres::Client> {
    Ok(polytape::store::connect(
        &common.database_url,
        Duration::from_secs(60),
    )?)
}

fn migrate(common: &Common) -> Result {
    let applied = polytape::store::migrate(&mut connect(common)?)?;
    println!("migrations applied: {applied}");
    Ok(())
}

fn sync(common: &Common) -> Result {
    let mut db = connect(common)?;
    polytape::store::migrate(&mut db)?;
    let report = sync_markets(&mut db, &GammaClient::new(&common.gamma_url))?;
    println!(
        "synced {} open markets over {} pages ({} listed, {} rows written, {} refreshed as closed, skipped: {} unknown version, {} malformed)",
        report.open_markets,
        report.pages,
        report.listed,
        report.upserted,
        report.refreshed,
        report.skipped_unknown_version,
        report.skipped_malformed
    );
    Ok(())
}

fn resolve(common: &Common) -> Result {
    let tracker = ResolutionTracker::new(&common.database_url, &common.gamma_url);
    let r = tracker.round()?;
    println!(
        "asked about {} markets: {} winners, {} splits, {} unresolved",
        r.asked, r.winners, r.splits, r.unresolved
    );
    Ok(())
}

fn run(common: &Common, args: &RunArgs) -> Result {
    // Signals first, before any thread exists. The first SIGINT/SIGTERM asks for a graceful
    // stop; a second one exits at once with status 2.
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 2, Arc::clone(&term))?;
        signal_hook::flag::register(sig, Arc::clone(&term))?;
    }
    let health_addr = Some(common.health_addr.trim().to_owned()).filter(|a| !a.is_empty());
    let config = DaemonConfig {
        listener: Config {
            database_url: common.database_url.clone(),
            ws_url: args.ws_url.clone(),
            max_tokens_per_conn: args.max_tokens_per_conn,
            stale_timeout: Duration::from_secs(args.stale_timeout_secs),
            batch_size: args.batch_size,
            batch_max_age: Duration::from_millis(args.batch_max_age_ms),
            channel_capacity: args.channel_capacity,
            ws_ca_file: args.ws_ca_file.clone(),
            ..Config::default()
        },
        gamma_url: common.gamma_url.clone(),
        health_addr,
        sync_interval: Duration::from_secs(args.sync_interval_secs.max(1)),
        resolve_interval: Duration::from_secs(args.resolve_interval_secs.max(1)),
        summary_interval: Duration::from_secs(args.summary_interval_secs.max(1)),
        readiness_grace: Duration::from_secs(args.readiness_grace_secs),
        shard: args.shard,
    };
    config.listener.validate()?;
    let shutdown = StopSignal::new();
    let watcher = shutdown.clone();
    std::thread::Builder::new()
        .name("polytape-signals".into())
        .spawn(move || {
            while !term.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            log::info!("signal received: stopping gracefully (a second signal exits at once)");
            watcher.stop();
        })?;
    daemon::run(config, shutdown)?;
    Ok(())
}

fn status(common: &Common) -> Result {
    if common.health_addr.trim().is_empty() {
        return Err("the health endpoint is turned off (POLYTAPE_HEALTH_ADDR is empty)".into());
    }
    let url = format!("http://{}/health", common.health_addr);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let body = agent
        .get(&url)
        .call()
        .map_err(|e| format!("no daemon answering at {url}: {e}"))?
        .body_mut()
        .read_to_string()?;
    let h: serde_json::Value = serde_json::from_str(&body)?;
    println!("polytape status ({url})");
    for key in [
        "started_at",
        "trades_received",
        "trades_inserted",
        "batches_inserted",
        "duplicates_skipped",
        "rows_rejected",
        "queue_depth",
        "connections_active",
        "reconnections",
        "messages_received",
        "parse_errors",
        "db_errors",
        "send_blocked_ms",
        "last_trade_ts",
        "last_insert_ts",
        "last_reconnect_ts",
        "db_lost_since",
    ] {
        let v = &h[key];
        let shown = match v {
            serde_json::Value::Null => "-".to_owned(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!("  {key:<20} {shown}");
    }
    if let Some(conns) = h["connections"].as_array() {
        println!("  connections:");
        println!(
            "    {:>4} {:>7} {:<11} {:>10} last message",
            "id", "tokens", "state", "reconnects"
        );
        for c in conns {
            println!(
                "    {:>4} {:>7} {:<11} {:>10} {}",
                c["id"].to_string(),
                c["tokens"].to_string(),
                c["state"].as_str().unwrap_or("?"),
                c["reconnects"].to_string(),
                c["last_message_ts"].as_str().unwrap_or("-")
            );
        }
    }
    if h["resolution"].is_object() {
        let r = &h["resolution"];
        println!(
            "  resolution: {} rounds, {} resolved, {} errors",
            r["rounds"], r["resolved"], r["errors"]
        );
    }
    Ok(())
}
