//! Bars where the feed was blind, from CLOB `GET /prices-history` (`market` = token id,
//! `startTs`/`endTs`, `fidelity` = 1 minute): one point a minute, `{"t": <unix s>, "p":
//! <number>}`. What `p` is (a midpoint or a last trade) the service does not document; it
//! is stored as the bar's **close** (`source = 'history'`), and open, high, low and the best
//! bid and ask stay NULL: the endpoint does not give them. The number is read as its exact
//! decimal text, never through a float; one with more than six decimals is refused and
//! counted.
//!
//! A live bar is never replaced: a minute the feed saw part of keeps what it saw.

use std::time::Duration;

use postgres::Client;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::book::Price;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::{Budget, RetryPolicy, agent, get_text};

/// Requests in any 10 s: a tenth of the service's 1,000.
const BUDGET: usize = 100;

#[derive(Deserialize)]
struct History<'a> {
    #[serde(borrow)]
    history: Vec<Point<'a>>,
}

#[derive(Deserialize)]
struct Point<'a> {
    t: i64,
    #[serde(borrow)]
    p: &'a RawValue,
}

/// A `/prices-history` client with a request budget of its own.
pub(crate) struct PriceHistory {
    base: String,
    agent: ureq::Agent,
    retry: RetryPolicy,
    budget: Budget,
    /// Points refused (a price that is not an exact decimal of at most six places).
    pub(crate) bad_points: u64,
}

impl PriceHistory {
    pub(crate) fn new(config: &Config) -> PriceHistory {
        PriceHistory {
            base: config.clob_url.trim_end_matches('/').to_owned(),
            agent: agent(config.gamma_timeout),
            retry: RetryPolicy::from_config(
                config,
                "prices-history",
                Duration::from_secs(60),
                64 << 20,
            ),
            budget: Budget::new(BUDGET, Duration::from_secs(10)),
            bad_points: 0,
        }
    }

    /// One point a minute of `token` over `[start_s, end_s]`: (minute, twice `p` in
    /// millionths).
    pub(crate) fn minutes(
        &mut self,
        token: &str,
        start_s: i64,
        end_s: i64,
    ) -> Result<Vec<(i64, i32)>> {
        let url = format!(
            "{}/prices-history?market={token}&startTs={start_s}&endTs={end_s}&fidelity=1",
            self.base
        );
        self.budget.wait();
        let body = get_text(&self.agent, &url, &self.retry)?;
        let h: History<'_> =
            serde_json::from_str(&body).map_err(|e| Error::http(format!("prices-history: {e}")))?;
        let mut out = Vec::with_capacity(h.history.len());
        for point in h.history {
            let twice = Price::parse(point.p.get()).and_then(|p| i32::try_from(p.units() * 2).ok());
            match twice {
                Some(p2) => out.push((point.t * 1000, p2)),
                None => self.bad_points += 1,
            }
        }
        Ok(out)
    }

    /// Fills the bars of every minute of `[from_ms, to_ms]` for `assets` from the service;
    /// returns the bars made or changed.
    pub(crate) fn fill(
        &mut self,
        db: &mut Client,
        assets: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<u64> {
        let start_s = super::minute_of(from_ms) / 1000;
        let end_s = to_ms.div_euclid(1000);
        let mut changed = 0;
        for asset in assets {
            let points = self.minutes(asset, start_s, end_s)?;
            if points.is_empty() {
                continue;
            }
            let minutes: Vec<chrono::DateTime<chrono::Utc>> = points
                .iter()
                .filter_map(|(ms, _)| chrono::DateTime::from_timestamp_millis(*ms))
                .collect();
            let closes: Vec<i32> = points.iter().map(|p| p.1).collect();
            // The token may be one the tape has not met yet.
            db.execute(
                "INSERT INTO tokens (asset_id, market, outcome)
                 SELECT $1, m.condition_id, m.outcomes[array_position(m.token_ids, $1)]
                 FROM markets m WHERE $1 = ANY (m.token_ids) LIMIT 1
                 ON CONFLICT (asset_id) DO NOTHING",
                &[asset],
            )?;
            changed += db.execute(
                "INSERT INTO price_bar AS b (minute, token, source, close2)
                 SELECT u.minute, k.id, 'h', u.c
                 FROM tokens k, unnest($2::timestamptz[], $3::integer[]) AS u(minute, c)
                 WHERE k.asset_id = $1
                 ON CONFLICT (token, minute) DO UPDATE SET close2 = EXCLUDED.close2, source = 'h'
                 WHERE (b.source = 'h' OR num_nulls(b.open2, b.high2, b.low2, b.close2,
                                                    b.best_bid, b.best_ask) = 6)
                   AND b.close2 IS DISTINCT FROM EXCLUDED.close2",
                &[asset, &minutes, &closes],
            )?;
        }
        Ok(changed)
    }
}

/// Fills the price bars of `assets` over `[from_ms, to_ms]` from CLOB `/prices-history`
/// where no live bar exists (a window the feed was blind to); returns the bars made or
/// changed. Idempotent: a second fill of the same window changes nothing.
pub fn fill_history(config: &Config, assets: &[String], from_ms: i64, to_ms: i64) -> Result<u64> {
    let mut db = crate::store::connect(config)?;
    PriceHistory::new(config).fill(&mut db, assets, from_ms, to_ms)
}
