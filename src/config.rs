//! Every tunable of polytape in one place: the defaults (as constants the command line
//! reuses), and a [`Config`] that is valid by construction.
//!
//! ```
//! use std::time::Duration;
//!
//! let config = polytape::Config::builder()
//!     .database_url("postgres://postgres@127.0.0.1:5432/tape")
//!     .batch_size(500)
//!     .stale_timeout(Duration::from_secs(90))
//!     .build()?;
//! assert_eq!(config.batch_size(), 500);
//! // Nonsense is refused when the Config is built, not when the listener runs:
//! assert!(polytape::Config::builder().max_tokens_per_conn(1).build().is_err());
//! # Ok::<(), polytape::Error>(())
//! ```

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// The defaults, one constant per tunable that the command line offers as a flag.
pub mod defaults {
    use std::time::Duration;

    /// The local server, as `psql` would reach it.
    pub const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
    /// The live market channel.
    pub const WS_URL: &str = "wss://ws-subscriptions-clob.polymarket.com/ws/market";
    /// The live Gamma listing.
    pub const GAMMA_URL: &str = "https://gamma-api.polymarket.com";
    /// The live Data API (the settled tape).
    pub const DATA_API_URL: &str = "https://data-api.polymarket.com";
    /// CLOB REST (books, prices history).
    pub const CLOB_URL: &str = "https://clob.polymarket.com";
    /// A hole is filled from the Data API once it is this old (the settled tape lags).
    pub const BACKFILL_SETTLE: Duration = Duration::from_secs(600);
    /// Period of the reconciliation sweeps over every held market (zero: none).
    pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(900);
    /// How long a trade's block may trail its match (blocks come within seconds; a
    /// congested chain or a retrying relayer makes it tens of seconds): the Data API lists a
    /// trade by its block, so windows read from it reach this far past the matches they
    /// cover, and a trade without a hash is matched this far before its block.
    pub const SETTLEMENT_LAG: Duration = Duration::from_secs(60);
    /// A gap is filled, and a sweep reads, in slices of this much block time: each slice is
    /// stored (and a gap's progress recorded) before the next is read.
    pub const BACKFILL_SLICE: Duration = Duration::from_secs(600);
    /// Polygon JSON-RPC requests per 10 s at most, by default (a public endpoint allows
    /// about this; a paid one more).
    pub const CHAIN_BUDGET: u32 = 50;
    /// Every changed book is stored this often (`POLYTAPE_BOOK_SNAPSHOT_SECS`; zero turns
    /// the book side off).
    pub const BOOK_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(300);
    /// The Parquet book tape rolls to a new file this often (`POLYTAPE_BOOK_TAPE_ROLL_SECS`).
    pub const BOOK_TAPE_ROLL: Duration = Duration::from_secs(3600);
    /// Tokens per socket: the live feed silently stops delivering past ~500.
    pub const MAX_TOKENS_PER_CONN: usize = 500;
    /// A socket without a data frame this long is replaced.
    pub const STALE_TIMEOUT: Duration = Duration::from_secs(60);
    /// A socket is replaced, make before break, after this long (staggered; zero: never):
    /// long-lived sockets are where single assets stall.
    pub const RECYCLE_INTERVAL: Duration = Duration::from_secs(6 * 3600);
    /// Trades per database batch.
    pub const BATCH_SIZE: usize = 1_000;
    /// Longest a trade waits for its batch (a p99 of commit − receive well under 250 ms at
    /// live rates, about ten commits a second).
    pub const BATCH_MAX_AGE: Duration = Duration::from_millis(100);
    /// Trades between the sockets and the writer.
    pub const CHANNEL_CAPACITY: usize = 10_000;
    /// Period of the resolution tracker's rounds.
    pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(600);
    /// Most bytes the disk spool may hold (1 GiB: about five million trades).
    pub const SPOOL_MAX_BYTES: u64 = 1 << 30;
    /// How long a stop waits for the database before it leaves the rest in the spool
    /// (under the README's systemd `TimeoutStopSec=30`).
    pub const STOP_DEADLINE: Duration = Duration::from_secs(20);

    /// Where the spool lives by default: a `polytape-spool` folder in the state directory:
    /// `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else `$XDG_STATE_HOME/polytape`,
    /// else `~/.local/state/polytape`, else the working directory.
    pub fn spool_dir() -> std::path::PathBuf {
        use std::path::PathBuf;
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let state = env("STATE_DIRECTORY")
            // systemd may list several, separated by ':': the first is ours.
            .map(|p| PathBuf::from(p.to_string_lossy().split(':').next().unwrap_or(".")))
            .or_else(|| env("XDG_STATE_HOME").map(|p| p.join("polytape")))
            .or_else(|| env("HOME").map(|h| h.join(".local/state/polytape")))
            .unwrap_or_else(|| PathBuf::from("."));
        state.join("polytape-spool")
    }
}

const PING_INTERVAL: Duration = Duration::from_secs(10);
const PONG_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const OPEN_INTERVAL: Duration = Duration::from_millis(50);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const MAX_MESSAGE_SIZE: usize = 16 << 20;
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(3600);
const GAMMA_TIMEOUT: Duration = Duration::from_secs(30);
const GAMMA_ATTEMPTS: u32 = 6;
const GAMMA_BACKOFF_MIN: Duration = Duration::from_millis(500);
const GAMMA_BACKOFF_MAX: Duration = Duration::from_secs(30);
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// How polytape connects, listens, batches, writes and asks Gamma. Build one with
/// [`Config::builder`] (or take [`Config::default`]): a `Config` that exists has been
/// validated.
#[derive(Clone)]
pub struct Config {
    pub(crate) database_url: String,
    pub(crate) ws_url: String,
    pub(crate) ws_ca_file: Option<String>,
    pub(crate) gamma_url: String,
    pub(crate) max_tokens_per_conn: usize,
    pub(crate) ping_interval: Duration,
    pub(crate) pong_timeout: Duration,
    pub(crate) stale_timeout: Duration,
    pub(crate) probe_timeout: Duration,
    pub(crate) recycle_interval: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) open_interval: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) channel_capacity: usize,
    pub(crate) batch_size: usize,
    pub(crate) batch_max_age: Duration,
    pub(crate) statement_timeout: Duration,
    pub(crate) migration_timeout: Duration,
    pub(crate) gamma_timeout: Duration,
    pub(crate) gamma_attempts: u32,
    pub(crate) gamma_backoff_min: Duration,
    pub(crate) gamma_backoff_max: Duration,
    pub(crate) resolve_interval: Duration,
    pub(crate) spool_dir: std::path::PathBuf,
    pub(crate) spool_max_bytes: u64,
    pub(crate) stop_deadline: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) data_api_url: String,
    pub(crate) clob_url: String,
    pub(crate) data_api_page: usize,
    pub(crate) data_api_budget: u32,
    pub(crate) backfill_settle: Duration,
    pub(crate) reconcile_interval: Duration,
    pub(crate) settlement_lag: Duration,
    pub(crate) backfill_slice: Duration,
    pub(crate) book_snapshot_interval: Duration,
    pub(crate) book_depth: usize,
    pub(crate) book_tape_dir: Option<std::path::PathBuf>,
    pub(crate) book_tape_roll: Duration,
    pub(crate) polygon_rpc_url: Option<String>,
    pub(crate) chain_budget: u32,
    /// The writer's rule before group commit (benchmarks compare the two).
    pub(crate) gather_to_max_age: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: defaults::DATABASE_URL.into(),
            ws_url: defaults::WS_URL.into(),
            ws_ca_file: None,
            gamma_url: defaults::GAMMA_URL.into(),
            max_tokens_per_conn: defaults::MAX_TOKENS_PER_CONN,
            ping_interval: PING_INTERVAL,
            pong_timeout: PONG_TIMEOUT,
            stale_timeout: defaults::STALE_TIMEOUT,
            probe_timeout: PROBE_TIMEOUT,
            recycle_interval: defaults::RECYCLE_INTERVAL,
            connect_timeout: CONNECT_TIMEOUT,
            open_interval: OPEN_INTERVAL,
            backoff_min: BACKOFF_MIN,
            backoff_max: BACKOFF_MAX,
            max_message_size: MAX_MESSAGE_SIZE,
            channel_capacity: defaults::CHANNEL_CAPACITY,
            batch_size: defaults::BATCH_SIZE,
            batch_max_age: defaults::BATCH_MAX_AGE,
            statement_timeout: STATEMENT_TIMEOUT,
            migration_timeout: MIGRATION_TIMEOUT,
            gamma_timeout: GAMMA_TIMEOUT,
            gamma_attempts: GAMMA_ATTEMPTS,
            gamma_backoff_min: GAMMA_BACKOFF_MIN,
            gamma_backoff_max: GAMMA_BACKOFF_MAX,
            resolve_interval: defaults::RESOLVE_INTERVAL,
            spool_dir: defaults::spool_dir(),
            spool_max_bytes: defaults::SPOOL_MAX_BYTES,
            stop_deadline: defaults::STOP_DEADLINE,
            heartbeat_interval: HEARTBEAT_INTERVAL,
            data_api_url: defaults::DATA_API_URL.into(),
            clob_url: defaults::CLOB_URL.into(),
            data_api_page: 10_000,
            data_api_budget: 100,
            backfill_settle: defaults::BACKFILL_SETTLE,
            settlement_lag: defaults::SETTLEMENT_LAG,
            backfill_slice: defaults::BACKFILL_SLICE,
            reconcile_interval: defaults::RECONCILE_INTERVAL,
            book_snapshot_interval: defaults::BOOK_SNAPSHOT_INTERVAL,
            book_depth: 0,
            book_tape_dir: None,
            book_tape_roll: defaults::BOOK_TAPE_ROLL,
            polygon_rpc_url: None,
            chain_budget: defaults::CHAIN_BUDGET,
            gather_to_max_age: false,
        }
    }
}

/// The password never shows, even in `{:?}`.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &crate::connstr::redact(&self.database_url))
            .field("ws_url", &self.ws_url)
            .field("gamma_url", &self.gamma_url)
            .field("max_tokens_per_conn", &self.max_tokens_per_conn)
            .field("stale_timeout", &self.stale_timeout)
            .field("channel_capacity", &self.channel_capacity)
            .field("batch_size", &self.batch_size)
            .field("batch_max_age", &self.batch_max_age)
            .field("spool_dir", &self.spool_dir)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder(Config::default())
    }

    /// A builder starting from this configuration, to change some of it.
    pub fn to_builder(&self) -> ConfigBuilder {
        ConfigBuilder(self.clone())
    }

    /// The PostgreSQL connection string (log [`crate::store::redact`] of it, never this).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The market channel's URL.
    pub fn ws_url(&self) -> &str {
        &self.ws_url
    }

    /// The Gamma listing's base URL.
    pub fn gamma_url(&self) -> &str {
        &self.gamma_url
    }

    /// Trades per database batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Period of the resolution tracker's rounds.
    pub fn resolve_interval(&self) -> Duration {
        self.resolve_interval
    }

    /// The Polygon JSON-RPC endpoint, when the chain side is on.
    pub fn polygon_rpc_url(&self) -> Option<&str> {
        self.polygon_rpc_url.as_deref()
    }

    /// The Data API's base URL.
    pub fn data_api_url(&self) -> &str {
        &self.data_api_url
    }

    /// Where the disk spool lives.
    pub fn spool_dir(&self) -> &std::path::Path {
        &self.spool_dir
    }

    /// How long a stop waits for the database before leaving the rest in the spool.
    pub fn stop_deadline(&self) -> Duration {
        self.stop_deadline
    }

    fn validate(&self) -> Result<()> {
        let fail = |m: &str| Err(Error::config(m));
        if !self.book_snapshot_interval.is_zero()
            && self.book_snapshot_interval < Duration::from_secs(1)
        {
            return fail("book_snapshot_interval must be zero (off) or at least 1 s");
        }
        if self.book_tape_roll < Duration::from_secs(1) {
            return fail("book_tape_roll must be at least 1 s");
        }
        if !(self.ws_url.starts_with("ws://") || self.ws_url.starts_with("wss://")) {
            return fail("ws_url must start with ws:// or wss://");
        }
        if !(self.gamma_url.starts_with("http://") || self.gamma_url.starts_with("https://")) {
            return fail("gamma_url must start with http:// or https://");
        }
        crate::connstr::ConnString::parse(&self.database_url)?;
        if self.max_tokens_per_conn < 2 {
            return fail("max_tokens_per_conn must be at least 2 (both tokens of a market)");
        }
        if self.channel_capacity == 0 || self.batch_size == 0 {
            return fail("channel_capacity and batch_size must be positive");
        }
        if self.ping_interval.is_zero() || self.stale_timeout.is_zero() {
            return fail("ping_interval and stale_timeout must be positive");
        }
        if self.stale_timeout <= self.ping_interval {
            return fail("stale_timeout must be longer than ping_interval");
        }
        if self.pong_timeout.is_zero()
            || self.connect_timeout.is_zero()
            || self.probe_timeout.is_zero()
        {
            return fail("pong_timeout and connect_timeout must be positive");
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return fail("backoff_min must be positive and at most backoff_max");
        }
        if self.gamma_backoff_min.is_zero() || self.gamma_backoff_max < self.gamma_backoff_min {
            return fail("gamma_backoff_min must be positive and at most gamma_backoff_max");
        }
        if self.gamma_attempts == 0 {
            return fail("gamma_attempts must be at least 1");
        }
        if self.max_message_size < 64 * 1024 {
            return fail("max_message_size must be at least 64 KiB");
        }
        if self.spool_max_bytes < 1 << 16 {
            return fail("spool_max_bytes must be at least 64 KiB");
        }
        if !(self.clob_url.starts_with("http://") || self.clob_url.starts_with("https://")) {
            return fail("clob_url must start with http:// or https://");
        }
        if !(self.data_api_url.starts_with("http://") || self.data_api_url.starts_with("https://"))
        {
            return fail("data_api_url must start with http:// or https://");
        }
        if !(1..=10_000).contains(&self.data_api_page) || self.data_api_budget == 0 {
            return fail("data_api_page must be 1..=10000 and data_api_budget positive");
        }
        if let Some(url) = &self.polygon_rpc_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return fail("polygon_rpc_url must start with http:// or https://");
        }
        if self.chain_budget == 0 {
            return fail("chain_budget must be positive");
        }
        if self.heartbeat_interval.is_zero() {
            return fail("heartbeat_interval must be positive");
        }
        if self.backfill_slice < Duration::from_secs(1) {
            return fail("backfill_slice must be at least 1 s");
        }
        if self.settlement_lag < Duration::from_secs(5) {
            return fail("settlement_lag must be at least 5 s (blocks trail matches by seconds)");
        }
        if self.statement_timeout.is_zero() || self.resolve_interval.is_zero() {
            return fail("statement_timeout and resolve_interval must be positive");
        }
        Ok(())
    }
}

/// Builds a [`Config`]; [`ConfigBuilder::build`] validates it.
#[derive(Debug, Clone)]
pub struct ConfigBuilder(Config);

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.0.$name = value;
                self
            }
        )*
    };
}

impl ConfigBuilder {
    /// PostgreSQL connection string, URL or key=value form; `sslmode` `require`,
    /// `verify-ca` and `verify-full` (with `sslrootcert`) use TLS through rustls.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.0.database_url = url.into();
        self
    }

    /// The market channel's URL (`ws://` or `wss://`).
    pub fn ws_url(mut self, url: impl Into<String>) -> Self {
        self.0.ws_url = url.into();
        self
    }

    /// A PEM file of extra roots to trust for `wss://` (a TLS-intercepting proxy's CA),
    /// beside the built-in web roots.
    pub fn ws_ca_file(mut self, path: Option<String>) -> Self {
        self.0.ws_ca_file = path;
        self
    }

    /// The Gamma listing's base URL.
    pub fn gamma_url(mut self, url: impl Into<String>) -> Self {
        self.0.gamma_url = url.into();
        self
    }

    setters! {
        /// Most tokens on one socket (at least 2: both tokens of a market share one).
        max_tokens_per_conn: usize,
        /// Text `PING` interval (10 s).
        ping_interval: Duration,
        /// A socket whose `PONG` is this late is dead (10 s).
        pong_timeout: Duration,
        /// A socket with no data frame this long is replaced (the live feed can freeze while
        /// still answering `PONG`); longer than the ping interval.
        stale_timeout: Duration,
        /// How long a probed silent socket has to answer before it is taken for frozen (5 s).
        probe_timeout: Duration,
        /// A socket is replaced after this long, make before break (6 h, staggered over the
        /// connections; zero: never).
        recycle_interval: Duration,
        /// TCP connect, TLS and WebSocket handshake, each (10 s).
        connect_timeout: Duration,
        /// Least time between two socket opens over all connections (50 ms; the live
        /// service answers bursts of upgrades with 429).
        open_interval: Duration,
        /// First reconnect delay of sockets and of the writer (250 ms).
        backoff_min: Duration,
        /// Longest reconnect delay of sockets and of the writer (30 s).
        backoff_max: Duration,
        /// Largest WebSocket message accepted (16 MiB; initial dumps reach ~2 MiB).
        max_message_size: usize,
        /// Trades between the sockets and the writer; a full channel makes readers wait.
        channel_capacity: usize,
        /// Trades per database batch.
        batch_size: usize,
        /// Longest a trade waits for its batch.
        batch_max_age: Duration,
        /// Server-side limit on each statement (30 s), so a vanished server cannot hang a
        /// caller forever.
        statement_timeout: Duration,
        /// Statement limit while migrating (1 h: a migration may rewrite a large table).
        migration_timeout: Duration,
        /// Whole-request limit of a Gamma request (30 s).
        gamma_timeout: Duration,
        /// Tries of a Gamma request that is throttled or fails on the server's side (6).
        gamma_attempts: u32,
        /// First delay between Gamma tries, unless `Retry-After` says otherwise (500 ms).
        gamma_backoff_min: Duration,
        /// Longest delay between Gamma tries (30 s).
        gamma_backoff_max: Duration,
        /// Period of the resolution tracker's rounds.
        resolve_interval: Duration,
    }

    /// The folder of the disk spool (one per running listener: it is locked).
    pub fn spool_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.0.spool_dir = dir.into();
        self
    }

    /// The Data API's base URL (the settled tape, for filling holes).
    pub fn data_api_url(mut self, url: impl Into<String>) -> Self {
        self.0.data_api_url = url.into();
        self
    }

    /// A Polygon JSON-RPC endpoint: the chain reader proves the tape against the exchanges'
    /// `OrderFilled` logs and adds the fills it lacks (`None`, the default: no chain side).
    pub fn polygon_rpc_url(mut self, url: Option<String>) -> Self {
        self.0.polygon_rpc_url = url.filter(|u| !u.trim().is_empty());
        self
    }

    /// Polygon JSON-RPC requests per 10 s at most (50).
    pub fn chain_budget(mut self, per_10s: u32) -> Self {
        self.0.chain_budget = per_10s;
        self
    }

    /// CLOB REST's base URL (`/prices-history`, for price bars where the feed was blind).
    pub fn clob_url(mut self, url: impl Into<String>) -> Self {
        self.0.clob_url = url.into();
        self
    }

    setters! {
        /// Rows per Data API page (10,000, the service's most).
        data_api_page: usize,
        /// Data API requests per 10 s at most (100: half the service's limit).
        data_api_budget: u32,
        /// How old a hole must be before it is filled (10 min: the settled tape lags).
        backfill_settle: Duration,
        /// Period of the reconciliation sweeps that find holes nobody recorded and stalled
        /// assets (15 min; zero turns them off).
        reconcile_interval: Duration,
        /// How long a trade's block may trail its match (60 s).
        settlement_lag: Duration,
        /// Block time read, matched and stored at a time by a gap fill or a sweep (10 min).
        backfill_slice: Duration,
    }

    setters! {
        /// How often every changed book is stored in `book_snapshot` (300 s); zero turns
        /// the book side off entirely (no books held, no snapshots, no tape).
        book_snapshot_interval: Duration,
        /// Levels per side in a stored snapshot (0: every level).
        book_depth: usize,
        /// Where the full-resolution Parquet book tape goes (`None`: no tape).
        book_tape_dir: Option<std::path::PathBuf>,
        /// How often the book tape rolls to a new file, at a boundary of this period (1 h).
        book_tape_roll: Duration,
    }

    setters! {
        /// Most bytes the spool may hold; past it, readers wait (recorded as a gap).
        spool_max_bytes: u64,
        /// How long a stop waits for the database before leaving the rest in the spool.
        stop_deadline: Duration,
        /// How often a running listener marks its session alive (5 s).
        heartbeat_interval: Duration,
    }

    /// Every batch waits up to `batch_max_age` to fill (fewer, larger commits and less WAL
    /// at low rates, for ~`batch_max_age` of latency) instead of group commit (the default:
    /// an idle writer commits at once).
    pub fn gather_to_max_age(mut self, on: bool) -> Self {
        self.0.gather_to_max_age = on;
        self
    }

    /// The configuration, if its values make sense together.
    pub fn build(self) -> Result<Config> {
        self.0.validate()?;
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_refused() {
        Config::default().validate().expect("defaults validate");
        type Change = fn(ConfigBuilder) -> ConfigBuilder;
        let bad: &[(&str, Change)] = &[
            ("max_tokens_per_conn", |b| b.max_tokens_per_conn(1)),
            ("ws_url", |b| b.ws_url("http://x")),
            ("gamma_url", |b| b.gamma_url("ftp://x")),
            ("connection string", |b| b.database_url("host='open")),
            ("batch_size", |b| b.batch_size(0)),
            ("channel_capacity", |b| b.channel_capacity(0)),
            ("stale_timeout", |b| b.stale_timeout(Duration::from_secs(5))),
            ("backoff_min", |b| b.backoff_min(Duration::ZERO)),
            ("backoff_min", |b| b.backoff_max(Duration::from_millis(1))),
            ("gamma_attempts", |b| b.gamma_attempts(0)),
            ("max_message_size", |b| b.max_message_size(1024)),
        ];
        for (what, change) in bad {
            let err = change(Config::builder()).build().expect_err(what);
            assert!(err.is_config(), "{what}: {err}");
        }
        let ok = Config::builder().batch_size(7).build().expect("valid");
        assert_eq!(
            ok.to_builder().build().expect("still valid").batch_size(),
            7
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = Config::builder()
            .database_url("postgres://u:hunter2@h/db?password=swordfish")
            .build()
            .expect("valid");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("swordfish"),
            "{shown}"
        );
    }
}
