//! Bars where the feed was blind, from CLOB `GET /prices-history` (`market` = token id,
//! `startTs`/`endTs`, `fidelity` = 1 minute): one point a minute, `{"t": <unix s>, "p":
//! <number>}`. What `p` is (a midpoint or a last trade) the service does not document; it
//! is stored as the bar's **close** (`source = 'history'`), and open, high, low and the best
//! bid and ask stay NULL: the endpoint does not give them. The number is read as its exact
//! decimal text, never through a float; one with more than six decimals is refused and
//! counted.
//!
//! A live bar is never replaced: a minute the feed saw part of keeps what it saw.
//!
//! Points are stamped when the service sampled them, not at the minute: each is taken for
//! its minute (the last of a minute wins). Tokens are asked 20 at a time through `POST
//! /batch-prices-history` where the service has it (a 404: one `GET` a token from then on);
//! a token whose request fails does not stop the others: it is asked again once at the
//! end, then counted and named (`price_history_errors`).

use std::time::Duration;

use postgres::Client;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::book::Price;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::{Budget, RetryPolicy, agent, get_text, post_json_or_absent};

/// Requests in any 10 s: a tenth of the service's 1,000.
const BUDGET: usize = 100;

#[derive(Deserialize)]
struct History<'a> {
    #[serde(borrow)]
    history: Vec<Point<'a>>,
}

#[derive(Deserialize)]
struct BatchHistory<'a> {
    #[serde(borrow)]
    history: std::collections::HashMap<String, Vec<Point<'a>>>,
}

/// One token's points: (minute in Unix ms, twice the price in millionths).
type Minutes = Vec<(i64, i32)>;

/// Tokens a batch request may name.
const BATCH: usize = 20;

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
    /// Whether `POST /batch-prices-history` is served (until a 404 says not).
    batch: bool,
    /// Tokens whose history could not be had, after one more try.
    pub(crate) failed_tokens: u64,
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
            batch: true,
            failed_tokens: 0,
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
        Ok(self.per_minute(h.history))
    }

    /// The points of up to 20 `tokens` in one request; `None`: the batch form is not served.
    fn batch_minutes(
        &mut self,
        tokens: &[String],
        start_s: i64,
        end_s: i64,
    ) -> Result<Option<Vec<(String, Minutes)>>> {
        let url = format!("{}/batch-prices-history", self.base);
        let body = serde_json::json!({
            "markets": tokens, "start_ts": start_s, "end_ts": end_s, "fidelity": 1,
        })
        .to_string();
        self.budget.wait();
        let Some(answer) = post_json_or_absent(&self.agent, &url, &body, &self.retry)? else {
            return Ok(None);
        };
        let h: BatchHistory<'_> = serde_json::from_str(&answer)
            .map_err(|e| Error::http(format!("batch-prices-history: {e}")))?;
        let mut out = Vec::with_capacity(h.history.len());
        for (token, points) in h.history {
            if tokens.contains(&token) {
                out.push((token, self.per_minute(points)));
            }
        }
        Ok(Some(out))
    }

    /// Points taken for their minutes (the last of a minute wins), in order; a price that is
    /// not exact is refused and counted.
    fn per_minute(&mut self, points: Vec<Point<'_>>) -> Vec<(i64, i32)> {
        let mut out: Vec<(i64, i32)> = Vec::with_capacity(points.len());
        for point in points {
            let twice = Price::parse(point.p.get()).and_then(|p| i32::try_from(p.units() * 2).ok());
            let Some(p2) = twice else {
                self.bad_points += 1;
                continue;
            };
            let minute = super::minute_of(point.t.saturating_mul(1000));
            match out.iter_mut().find(|(m, _)| *m == minute) {
                Some(slot) => slot.1 = p2,
                None => out.push((minute, p2)),
            }
        }
        out.sort_unstable_by_key(|(m, _)| *m);
        out
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
        let mut failed: Vec<String> = Vec::new();
        for chunk in assets.chunks(BATCH) {
            if self.batch {
                match self.batch_minutes(chunk, start_s, end_s) {
                    Ok(Some(found)) => {
                        for (token, points) in found {
                            changed += store(db, &token, &points)?;
                        }
                        continue;
                    }
                    Ok(None) => {
                        log::info!("prices-history: no batch form (404); one request a token");
                        self.batch = false;
                    }
                    Err(e) => {
                        log::warn!("prices-history: a batch of {} failed ({e})", chunk.len());
                        failed.extend(chunk.iter().cloned());
                        continue;
                    }
                }
            }
            for token in chunk {
                match self.minutes(token, start_s, end_s) {
                    Ok(points) => changed += store(db, token, &points)?,
                    Err(e) => {
                        log::warn!("prices-history: {token} failed ({e})");
                        failed.push(token.clone());
                    }
                }
            }
        }
        // Each failed token once more, on its own; what still fails is named and counted.
        let mut still = Vec::new();
        for token in failed {
            match self.minutes(&token, start_s, end_s) {
                Ok(points) => changed += store(db, &token, &points)?,
                Err(_) => still.push(token),
            }
        }
        self.failed_tokens += still.len() as u64;
        if !still.is_empty() {
            return Err(Error::http(format!(
                "prices-history: {} of {} tokens have no history ({changed} bars stored for \
                 the others): {}",
                still.len(),
                assets.len(),
                still.join(", ")
            )));
        }
        Ok(changed)
    }
}

/// Stores `points` (minute, twice the price) of `asset` as history closes where no live
/// price is; returns the bars made or changed.
fn store(db: &mut Client, asset: &str, points: &[(i64, i32)]) -> Result<u64> {
    if points.is_empty() {
        return Ok(0);
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
        &[&asset],
    )?;
    Ok(db.execute(
        "INSERT INTO price_bar AS b (minute, token, source, close2)
         SELECT u.minute, k.id, 'h', u.c
         FROM tokens k, unnest($2::timestamptz[], $3::integer[]) AS u(minute, c)
         WHERE k.asset_id = $1
         ON CONFLICT (token, minute) DO UPDATE SET close2 = EXCLUDED.close2, source = 'h'
         WHERE (b.source = 'h' OR num_nulls(b.open2, b.high2, b.low2, b.close2,
                                            b.best_bid, b.best_ask) = 6)
           AND b.close2 IS DISTINCT FROM EXCLUDED.close2",
        &[&asset, &minutes, &closes],
    )?)
}

/// Fills the price bars of `assets` over `[from_ms, to_ms]` from CLOB `/prices-history`
/// where no live bar exists (a window the feed was blind to); returns the bars made or
/// changed. Idempotent: a second fill of the same window changes nothing.
pub fn fill_history(config: &Config, assets: &[String], from_ms: i64, to_ms: i64) -> Result<u64> {
    let mut db = crate::store::connect(config)?;
    PriceHistory::new(config).fill(&mut db, assets, from_ms, to_ms)
}
