//! Every tunable of the listener and writer, with its default, validated once.

use std::time::Duration;

use crate::error::{Error, Result};

/// The live market channel.
pub const LIVE_WS_URL: &str = "wss://ws-subscriptions-clob.polymarket.com/ws/market";
/// The live Gamma listing.
pub const LIVE_GAMMA_URL: &str = "https://gamma-api.polymarket.com";

/// How the listener connects, batches and writes.
#[derive(Debug, Clone)]
pub struct Config {
    /// PostgreSQL connection string (URL or key=value form).
    pub database_url: String,
    /// The market channel's URL (`ws://` or `wss://`).
    pub ws_url: String,
    /// Most tokens on one socket. The live feed silently stops delivering past ~500.
    pub max_tokens_per_conn: usize,
    /// Text `PING` interval.
    pub ping_interval: Duration,
    /// A socket whose `PONG` is this late is dead.
    pub pong_timeout: Duration,
    /// A socket with no data frame for this long is dead (the live feed freezes while still
    /// answering `PONG`).
    pub stale_timeout: Duration,
    /// TCP connect, TLS and WebSocket handshake, each.
    pub connect_timeout: Duration,
    /// Least time between two socket opens, over all connections (the live service answers
    /// bursts with 429).
    pub open_interval: Duration,
    /// Reconnect backoff: first delay and cap (full jitter in between).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Largest WebSocket message accepted (initial dumps reach ~2 MiB).
    pub max_message_size: usize,
    /// Capacity of the channel between the sockets and the writer.
    pub channel_capacity: usize,
    /// A batch is written when it holds this many trades...
    pub batch_size: usize,
    /// ...or when its oldest trade has waited this long (100 ms: a p99 of commit − receive
    /// well under 250 ms at live rates, at ~10 commits a second).
    pub batch_max_age: Duration,
    /// Server-side limit on each statement of the writer, so a vanished server cannot hang
    /// it forever.
    pub statement_timeout: Duration,
    /// PEM file of extra roots to trust for `wss://` (a TLS-intercepting proxy's CA, say),
    /// beside the built-in web roots.
    pub ws_ca_file: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            ws_url: LIVE_WS_URL.into(),
            max_tokens_per_conn: 500,
            ping_interval: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(10),
            stale_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            open_interval: Duration::from_millis(50),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            max_message_size: 16 << 20,
            channel_capacity: 10_000,
            batch_size: 1_000,
            batch_max_age: Duration::from_millis(100),
            statement_timeout: Duration::from_secs(30),
            ws_ca_file: None,
        }
    }
}

impl Config {
    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: &str| Err(Error::config(m));
        if !(self.ws_url.starts_with("ws://") || self.ws_url.starts_with("wss://")) {
            return fail("ws_url must start with ws:// or wss://");
        }
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
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return fail("backoff_min must be positive and at most backoff_max");
        }
        if self.max_message_size < 64 * 1024 {
            return fail("max_message_size must be at least 64 KiB");
        }
        Ok(())
    }
}

/// A connection string with any password replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.rsplit_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
        return url.to_owned();
    }
    // key=value form
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***".to_owned()
            } else {
                kv.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
        let bad = Config {
            max_tokens_per_conn: 1,
            ..Config::default()
        };
        assert!(bad.validate().is_err_and(|e| e.is_config()));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
    }
}
