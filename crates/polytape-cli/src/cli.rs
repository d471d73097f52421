//! The command line: every option a flag and an environment variable, with the library's
//! defaults (one source of truth), turned into a validated [`polytape::Config`].

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use polytape::config::defaults;
use polytape::sync::Shard;

use crate::daemon::DaemonConfig;

/// Where `run` serves health, and where `status` asks for it.
const HEALTH_ADDR: &str = "127.0.0.1:9464";
/// Seconds between market re-syncs.
const SYNC_INTERVAL_SECS: u64 = 300;
/// Seconds between summary log lines.
const SUMMARY_INTERVAL_SECS: u64 = 60;
/// Seconds without the database after which `/readyz` answers 503.
const READINESS_GRACE_SECS: u64 = 30;

/// Records every trade on Polymarket into PostgreSQL, live, without losing any.
///
/// Every option can also come from the environment variable named beside it.
#[derive(Parser, Debug)]
#[command(version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) common: Common,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args, Debug)]
pub(crate) struct Common {
    /// PostgreSQL connection string (URL or key=value; sslmode=require/verify-ca/verify-full
    /// use TLS through rustls).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = defaults::DATABASE_URL,
        hide_env_values = true,
        global = true
    )]
    pub(crate) database_url: String,
    /// Gamma listing base URL.
    #[arg(long, env = "POLYTAPE_GAMMA_URL", default_value = defaults::GAMMA_URL, global = true)]
    pub(crate) gamma_url: String,
    /// Data API base URL (the settled tape, for filling holes).
    #[arg(long, env = "POLYTAPE_DATA_API_URL", default_value = defaults::DATA_API_URL, global = true)]
    pub(crate) data_api_url: String,
    /// CLOB REST base URL (`/prices-history`: price bars where the feed was blind).
    #[arg(long, env = "POLYTAPE_CLOB_URL", default_value = defaults::CLOB_URL, global = true)]
    pub(crate) clob_url: String,
    /// Seconds a trade's block may trail its match (a congested chain): how far past a
    /// window the Data API is read, and how far before its block a trade without a hash is
    /// matched.
    #[arg(long, global = true, env = "POLYTAPE_SETTLEMENT_LAG_SECS", default_value_t = defaults::SETTLEMENT_LAG.as_secs())]
    pub(crate) settlement_lag_secs: u64,
    /// A Polygon JSON-RPC endpoint: `run` proves the tape against the exchanges'
    /// `OrderFilled` logs and adds what it lacks; `verify --chain` and `backfill
    /// --from-chain` read it. Unset: no chain side.
    #[arg(long, env = "POLYTAPE_POLYGON_RPC_URL", global = true)]
    pub(crate) polygon_rpc_url: Option<String>,
    /// Polygon JSON-RPC requests per 10 s at most.
    #[arg(long, env = "POLYTAPE_CHAIN_BUDGET", global = true, default_value_t = defaults::CHAIN_BUDGET)]
    pub(crate) chain_budget: u32,
    /// Address of a running daemon's health endpoint (for `status`), and where `run` serves
    /// it; an empty value turns it off.
    #[arg(
        long,
        env = "POLYTAPE_HEALTH_ADDR",
        default_value = HEALTH_ADDR,
        global = true
    )]
    pub(crate) health_addr: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
    /// Load past trades of markets from the Data API (or the chain) into the tape
    /// (idempotent).
    Backfill(BackfillArgs),
    /// Prove the tape against the chain now: read up to `finalized`, add what the tape
    /// lacks, print every market-hour not verified and the totals.
    Verify(VerifyArgs),
    /// Per market and hour: trades from the feed, trades filled in, open gaps; a verdict.
    Audit(AuditArgs),
    /// Print a market's price bars: open/high/low/close of the midpoint, best bid and ask,
    /// trades, volume and notional, per minute or rolled up (5m, 1h, 1d) in SQL.
    Prices(PricesArgs),
    /// Write the tape at a glance to one self-contained HTML file: markets × hours coloured
    /// complete / filled / holes / no trusted book, trades per hour by source, the gaps, the
    /// database's size per table.
    Report(ReportArgs),
    /// Write whole monthly partitions of the tape to Parquet (zstd), checked by reading back.
    #[cfg(feature = "archive")]
    Archive(ArchiveArgs),
    /// Detach and drop monthly partitions older than a number of months (archived ones only,
    /// unless told otherwise).
    Retention(RetentionArgs),
}

#[cfg(feature = "archive")]
#[derive(Args, Debug)]
pub(crate) struct ArchiveArgs {
    /// Archive every partition of a month before this one (`YYYY-MM`).
    #[arg(long, value_parser = parse_month)]
    pub(crate) before: chrono::NaiveDate,
    /// The folder for the Parquet files (one per month: `trade_tape_YYYY_MM.parquet`).
    #[arg(long)]
    pub(crate) out: std::path::PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct RetentionArgs {
    /// Months to keep besides the current one: `12m`, or `1y` (= `12m`).
    #[arg(long, value_parser = parse_months)]
    pub(crate) keep: u32,
    /// Drop partitions even when no archive of them is recorded (their trades are gone).
    #[arg(long)]
    pub(crate) no_archive: bool,
}

/// `YYYY-MM` as the first day of that month.
#[cfg(feature = "archive")]
pub(crate) fn parse_month(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(&format!("{}-01", s.trim()), "%Y-%m-%d")
        .map_err(|_| format!("{s:?}: expected a month as YYYY-MM"))
}

/// `12m` or `1y`: a number of months.
pub(crate) fn parse_months(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u32 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected months like 12m, or years like 1y"))?;
    match unit {
        "m" => Ok(n),
        "y" => n
            .checked_mul(12)
            .ok_or_else(|| format!("{s:?}: too many years")),
        _ => Err(format!("{s:?}: the unit must be m (months) or y (years)")),
    }
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// Against Polygon's settlement logs (the only check there is; the flag says so).
    #[arg(long, required = true)]
    pub(crate) chain: bool,
    /// How far back: a duration (`24h`, `7d`) or an RFC 3339 time.
    #[arg(long, default_value = "24h", value_parser = parse_when)]
    pub(crate) since: i64,
    /// Only this market (slug or condition id).
    #[arg(long)]
    pub(crate) market: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct BackfillArgs {
    /// Market slug or condition id (repeat for several); it must be in `markets`.
    #[arg(long = "market", required_unless_present = "all")]
    pub(crate) markets: Vec<String>,
    /// Every market in `markets` (with `--from-chain`).
    #[arg(long, requires = "from_chain")]
    pub(crate) all: bool,
    /// Read the fills from Polygon's `OrderFilled` logs (V1 and V2 exchanges) instead of the
    /// Data API: the only full history.
    #[arg(long)]
    pub(crate) from_chain: bool,
    /// From when: a duration ago (`24h`, `7d`, `90m`) or an RFC 3339 time.
    #[arg(long, default_value = "24h", value_parser = parse_when)]
    pub(crate) since: i64,
    /// Until when (same forms); default now.
    #[arg(long, value_parser = parse_when)]
    pub(crate) until: Option<i64>,
}

#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    /// How far back: a duration (`24h`, `7d`) or an RFC 3339 time.
    #[arg(long, default_value = "24h", value_parser = parse_when)]
    pub(crate) since: i64,
    /// Only this market (slug or condition id).
    #[arg(long)]
    pub(crate) market: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct ReportArgs {
    /// How far back: a duration (`7d`, `24h`) or an RFC 3339 time.
    #[arg(long, default_value = "7d", value_parser = parse_when)]
    pub(crate) since: i64,
    /// The HTML file to write.
    #[arg(long, default_value = "tape.html")]
    pub(crate) out: std::path::PathBuf,
    /// Markets drawn in the heatmap: the busiest N (the rest are summed in one line; the
    /// totals and the hourly chart count every market). 0: every market.
    #[arg(long, default_value_t = 200)]
    pub(crate) top: usize,
}

#[derive(Args, Debug)]
pub(crate) struct PricesArgs {
    /// The market (slug or condition id).
    #[arg(long)]
    pub(crate) market: String,
    /// How far back: a duration (`24h`, `7d`) or an RFC 3339 time.
    #[arg(long, default_value = "24h", value_parser = parse_when)]
    pub(crate) since: i64,
    /// Bar length: 1m, 5m, 1h or 1d.
    #[arg(long, default_value = "1m", value_parser = ["1m", "5m", "1h", "1d"])]
    pub(crate) interval: String,
}

/// A point in time as Unix ms: `24h`/`7d`/`90m`/`30s` ago, or an RFC 3339 timestamp.
pub(crate) fn parse_when(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 24h or an RFC 3339 time"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    Ok(chrono::Utc::now().timestamp_millis() - secs * 1000)
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Market channel URL.
    #[arg(long, env = "POLYTAPE_WS_URL", default_value = defaults::WS_URL)]
    pub(crate) ws_url: String,
    /// PEM file of extra roots to trust for wss:// (beside the built-in web roots).
    #[arg(long, env = "POLYTAPE_WS_CA_FILE")]
    pub(crate) ws_ca_file: Option<String>,
    /// Most tokens on one socket (the live feed goes silent past ~500).
    #[arg(long, env = "POLYTAPE_MAX_TOKENS_PER_CONN", default_value_t = defaults::MAX_TOKENS_PER_CONN)]
    pub(crate) max_tokens_per_conn: usize,
    /// Seconds without a data frame after which a socket is replaced.
    #[arg(long, env = "POLYTAPE_STALE_TIMEOUT_SECS", default_value_t = defaults::STALE_TIMEOUT.as_secs())]
    pub(crate) stale_timeout_secs: u64,
    /// Seconds after which a socket is replaced, make before break (staggered; 0: never).
    #[arg(long, env = "POLYTAPE_RECYCLE_SECS", default_value_t = defaults::RECYCLE_INTERVAL.as_secs())]
    pub(crate) recycle_secs: u64,
    /// Seconds between market re-syncs.
    #[arg(long, env = "POLYTAPE_SYNC_INTERVAL_SECS", default_value_t = SYNC_INTERVAL_SECS)]
    pub(crate) sync_interval_secs: u64,
    /// Seconds between resolution rounds.
    #[arg(long, env = "POLYTAPE_RESOLVE_INTERVAL_SECS", default_value_t = defaults::RESOLVE_INTERVAL.as_secs())]
    pub(crate) resolve_interval_secs: u64,
    /// Trades per database batch.
    #[arg(long, env = "POLYTAPE_BATCH_SIZE", default_value_t = defaults::BATCH_SIZE)]
    pub(crate) batch_size: usize,
    /// Longest a trade waits for its batch, in milliseconds.
    #[arg(long, env = "POLYTAPE_BATCH_MAX_AGE_MS", default_value_t = defaults::BATCH_MAX_AGE.as_millis() as u64)]
    pub(crate) batch_max_age_ms: u64,
    /// Batches wait up to --batch-max-age-ms to fill (fewer, larger commits at low rates)
    /// instead of committing as soon as the writer is idle (group commit, the default).
    #[arg(long, env = "POLYTAPE_BATCH_WAIT")]
    pub(crate) batch_wait: bool,
    /// Capacity of the channel between sockets and writer (a full channel blocks readers).
    #[arg(long, env = "POLYTAPE_CHANNEL_CAPACITY", default_value_t = defaults::CHANNEL_CAPACITY)]
    pub(crate) channel_capacity: usize,
    /// Seconds between summary log lines.
    #[arg(long, env = "POLYTAPE_SUMMARY_INTERVAL_SECS", default_value_t = SUMMARY_INTERVAL_SECS)]
    pub(crate) summary_interval_secs: u64,
    /// Seconds without the database after which /readyz answers 503.
    #[arg(long, env = "POLYTAPE_READINESS_GRACE_SECS", default_value_t = READINESS_GRACE_SECS)]
    pub(crate) readiness_grace_secs: u64,
    /// Hold only shard I of N of the markets (`I/N`), to split the load over N instances.
    #[arg(long, env = "POLYTAPE_SHARD")]
    pub(crate) shard: Option<Shard>,
    /// Folder of the disk spool, where trades wait while the database is away [default:
    /// polytape-spool in $STATE_DIRECTORY, $XDG_STATE_HOME/polytape or
    /// ~/.local/state/polytape].
    #[arg(long, env = "POLYTAPE_SPOOL_DIR")]
    pub(crate) spool_dir: Option<std::path::PathBuf>,
    /// Most bytes the spool may hold; past it, readers wait (recorded as a gap).
    #[arg(long, env = "POLYTAPE_SPOOL_MAX_BYTES", default_value_t = defaults::SPOOL_MAX_BYTES)]
    pub(crate) spool_max_bytes: u64,
    /// Seconds a stop waits for the database before leaving the rest in the spool.
    #[arg(long, env = "POLYTAPE_STOP_DEADLINE_SECS", default_value_t = defaults::STOP_DEADLINE.as_secs())]
    pub(crate) stop_deadline_secs: u64,
    /// Seconds a gap must age before it is filled from the Data API (the settled tape lags).
    #[arg(long, env = "POLYTAPE_BACKFILL_SETTLE_SECS", default_value_t = defaults::BACKFILL_SETTLE.as_secs())]
    pub(crate) backfill_settle_secs: u64,
    /// Seconds between reconciliation sweeps of every held market (0: none).
    #[arg(long, env = "POLYTAPE_RECONCILE_INTERVAL_SECS", default_value_t = defaults::RECONCILE_INTERVAL.as_secs())]
    pub(crate) reconcile_interval_secs: u64,
    /// Seconds between book snapshots of every changed book (0: the book side is off: no
    /// books held, no snapshots, no tape).
    #[arg(long, env = "POLYTAPE_BOOK_SNAPSHOT_SECS", default_value_t = defaults::BOOK_SNAPSHOT_INTERVAL.as_secs())]
    pub(crate) book_snapshot_secs: u64,
    /// Levels per side in a stored book snapshot (0: every level).
    #[arg(long, env = "POLYTAPE_BOOK_DEPTH", default_value_t = 0)]
    pub(crate) book_depth: usize,
    /// Directory of the full-resolution Parquet book tape (unset: no tape).
    #[arg(long, env = "POLYTAPE_BOOK_TAPE_DIR")]
    pub(crate) book_tape_dir: Option<std::path::PathBuf>,
    /// Seconds each book tape file covers (it rolls at a boundary of this period).
    #[arg(long, env = "POLYTAPE_BOOK_TAPE_ROLL_SECS", default_value_t = defaults::BOOK_TAPE_ROLL.as_secs())]
    pub(crate) book_tape_roll_secs: u64,
}

impl Common {
    /// The library configuration for the commands that only need the database and Gamma.
    pub(crate) fn config(&self) -> polytape::Result<polytape::Config> {
        polytape::Config::builder()
            .database_url(&self.database_url)
            .gamma_url(&self.gamma_url)
            .data_api_url(&self.data_api_url)
            .clob_url(&self.clob_url)
            .settlement_lag(Duration::from_secs(self.settlement_lag_secs))
            .polygon_rpc_url(self.polygon_rpc_url.clone())
            .chain_budget(self.chain_budget)
            .build()
    }

    /// The health address, or `None` when it is turned off (an empty value).
    pub(crate) fn health_addr(&self) -> Option<String> {
        Some(self.health_addr.trim().to_owned()).filter(|a| !a.is_empty())
    }
}

impl RunArgs {
    /// What `polytape run` needs, validated.
    pub(crate) fn daemon_config(&self, common: &Common) -> polytape::Result<DaemonConfig> {
        let listener = polytape::Config::builder()
            .database_url(&common.database_url)
            .gamma_url(&common.gamma_url)
            .data_api_url(&common.data_api_url)
            .clob_url(&common.clob_url)
            .settlement_lag(Duration::from_secs(common.settlement_lag_secs))
            .polygon_rpc_url(common.polygon_rpc_url.clone())
            .chain_budget(common.chain_budget)
            .backfill_settle(Duration::from_secs(self.backfill_settle_secs))
            .reconcile_interval(Duration::from_secs(self.reconcile_interval_secs))
            .ws_url(&self.ws_url)
            .ws_ca_file(self.ws_ca_file.clone())
            .max_tokens_per_conn(self.max_tokens_per_conn)
            .stale_timeout(Duration::from_secs(self.stale_timeout_secs))
            .recycle_interval(Duration::from_secs(self.recycle_secs))
            .batch_size(self.batch_size)
            .batch_max_age(Duration::from_millis(self.batch_max_age_ms))
            .gather_to_max_age(self.batch_wait)
            .channel_capacity(self.channel_capacity)
            .resolve_interval(Duration::from_secs(self.resolve_interval_secs.max(1)))
            .spool_dir(self.spool_dir.clone().unwrap_or_else(defaults::spool_dir))
            .spool_max_bytes(self.spool_max_bytes)
            .stop_deadline(Duration::from_secs(self.stop_deadline_secs))
            .book_snapshot_interval(Duration::from_secs(self.book_snapshot_secs))
            .book_depth(self.book_depth)
            .book_tape_dir(self.book_tape_dir.clone())
            .book_tape_roll(Duration::from_secs(self.book_tape_roll_secs.max(1)))
            .build()?;
        Ok(DaemonConfig {
            listener,
            health_addr: common.health_addr(),
            sync_interval: Duration::from_secs(self.sync_interval_secs.max(1)),
            summary_interval: Duration::from_secs(self.summary_interval_secs.max(1)),
            readiness_grace: Duration::from_secs(self.readiness_grace_secs),
            shard: self.shard,
        })
    }
}
