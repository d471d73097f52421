//! The Data API's settled tape: a blocking client that speaks HTTP and JSON only, through
//! `GET /v2/trades` (cursor paging, `v2.rs`) where the service has it and `GET /trades` (v1)
//! where it answers v2 with a 404. v1's rules (`polymarket-feed.md` §3): condition ids comma-separated (20 a request),
//! `start`/`end` in epoch seconds on the block time, pages newest first of at most 10,000, an
//! offset cap answered with 400 (a window too deep is split in two, each with its own offset
//! budget), prices and sizes as JSON numbers (read as their decimal text, never as floats),
//! a rate limit of 200 requests per 10 s (kept well under by a budget of our own, and
//! `Retry-After` honoured).

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::feed::{Decimal, Side};
use crate::http::{RetryPolicy, get_text, get_text_or_absent};

mod v2;

/// Condition ids per request.
pub(crate) const MARKETS_PER_REQUEST: usize = 20;
/// The deepest offset the service answers.
const MAX_OFFSET: usize = 10_000;
/// Longest wait a 429's `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// One settled trade, as the Data API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiTrade {
    pub(crate) asset: String,
    pub(crate) condition_id: String,
    pub(crate) side: Side,
    pub(crate) price: Decimal,
    pub(crate) size: Decimal,
    /// Block time, epoch seconds.
    pub(crate) timestamp_s: i64,
    pub(crate) transaction_hash: String,
}

impl ApiTrade {
    /// The tape's trade for it: at its block's time, with its hash, no fee rate (the Data
    /// API and the chain give none), received at `received_at_us`.
    pub(crate) fn to_tape(&self, received_at_us: i64) -> crate::feed::Trade {
        crate::feed::Trade {
            asset_id: self.asset.clone(),
            market: self.condition_id.clone(),
            price: self.price.clone(),
            size: self.size.clone(),
            side: self.side,
            fee_rate_bps: None,
            timestamp_ms: self.timestamp_s * 1000,
            transaction_hash: Some(self.transaction_hash.clone()),
            received_at_us,
        }
    }
}

#[derive(Deserialize)]
struct Row<'a> {
    asset: Option<String>,
    #[serde(rename = "conditionId")]
    condition_id: Option<String>,
    side: Option<String>,
    #[serde(borrow)]
    price: Option<&'a RawValue>,
    #[serde(borrow)]
    size: Option<&'a RawValue>,
    timestamp: Option<i64>,
    #[serde(rename = "transactionHash")]
    transaction_hash: Option<String>,
}

impl Row<'_> {
    /// The trade, or why the row is unusable.
    fn to_trade(&self) -> std::result::Result<ApiTrade, String> {
        trade_from(
            RowFields {
                asset: self.asset.as_deref(),
                condition_id: self.condition_id.as_deref(),
                side: self.side.as_deref(),
                price: self.price,
                size: self.size,
                timestamp: self.timestamp,
                transaction_hash: self.transaction_hash.as_deref(),
            },
            Decimal::parse,
        )
    }
}

/// A row's fields, however a version of the API names them.
pub(crate) struct RowFields<'r> {
    pub(crate) asset: Option<&'r str>,
    pub(crate) condition_id: Option<&'r str>,
    pub(crate) side: Option<&'r str>,
    pub(crate) price: Option<&'r RawValue>,
    pub(crate) size: Option<&'r RawValue>,
    pub(crate) timestamp: Option<i64>,
    pub(crate) transaction_hash: Option<&'r str>,
}

/// The trade a row holds, or why it is unusable: one set of rules for both versions, the
/// price read by `price` (v1's are the matched price; v2's a raw ratio given back as it).
pub(crate) fn trade_from(
    f: RowFields<'_>,
    price: fn(&str) -> Option<Decimal>,
) -> std::result::Result<ApiTrade, String> {
    let raw = |v: Option<&RawValue>, name: &str| -> std::result::Result<String, String> {
        Ok(v.ok_or(format!("no {name}"))?
            .get()
            .trim_matches('"')
            .to_owned())
    };
    let (price_text, size_text) = (raw(f.price, "price")?, raw(f.size, "size")?);
    Ok(ApiTrade {
        asset: f
            .asset
            .filter(|a| !a.is_empty())
            .ok_or("no asset")?
            .to_owned(),
        condition_id: f.condition_id.unwrap_or_default().to_owned(),
        side: match f.side {
            Some("BUY") => Side::Buy,
            Some("SELL") => Side::Sell,
            other => return Err(format!("side {other:?}")),
        },
        price: price(&price_text).ok_or(format!("price {price_text:?} is not a plain decimal"))?,
        size: Decimal::parse(&size_text)
            .ok_or(format!("size {size_text:?} is not a plain decimal"))?,
        timestamp_s: f.timestamp.ok_or("no timestamp")?,
        transaction_hash: f
            .transaction_hash
            .filter(|h| h.starts_with("0x"))
            .ok_or("no transaction hash")?
            .to_ascii_lowercase(),
    })
}

/// One `/trades` answer: the usable trades, and how many rows were not (each logged).
/// Every byte the Data API sends goes through here: fuzzed.
pub(crate) fn decode_trades(body: &str) -> Result<(Vec<ApiTrade>, u64)> {
    let rows: Vec<Row<'_>> = serde_json::from_str(body)
        .map_err(|e| Error::http(format!("data api: not a list of trades: {e}")))?;
    let mut out = Vec::with_capacity(rows.len());
    let mut bad = 0;
    for row in &rows {
        match row.to_trade() {
            Ok(t) => out.push(t),
            Err(why) => {
                bad += 1;
                log::warn!("data api: an unusable row ({why}), skipped");
            }
        }
    }
    Ok((out, bad))
}

/// A blocking Data API client with a request budget of its own.
pub(crate) struct DataApiClient {
    base: String,
    agent: ureq::Agent,
    retry: RetryPolicy,
    page: usize,
    /// At most `data_api_budget` requests in any 10 s: well under the service's 200.
    budget: crate::http::Budget,
    /// The most rows the service has returned in one page: it may cap `limit` lower than
    /// asked without saying so, and a page of that many rows is not taken for the last.
    largest_page: usize,
    /// Whether `/v2/trades` is served (until a 404 says it is not).
    v2: bool,
    /// Requests answered, and rows it could not use (counted, logged).
    pub(crate) requests: u64,
    pub(crate) bad_rows: u64,
}

impl DataApiClient {
    pub(crate) fn new(config: &Config) -> DataApiClient {
        let agent = crate::http::agent(config.gamma_timeout);
        DataApiClient {
            base: config.data_api_url.trim_end_matches('/').to_owned(),
            agent,
            retry: RetryPolicy::from_config(config, "data api", MAX_RETRY_AFTER, 256 << 20),
            page: config.data_api_page,
            budget: crate::http::Budget::new(
                config.data_api_budget as usize,
                Duration::from_secs(10),
            ),
            largest_page: 0,
            v2: true,
            requests: 0,
            bad_rows: 0,
        }
    }

    /// Every settled trade of `markets` (at most 20) with a block time in `start..=end`
    /// (epoch seconds), newest first: through v2 while the service serves it, else v1.
    pub(crate) fn trades(
        &mut self,
        markets: &[String],
        start: i64,
        end: i64,
    ) -> Result<Vec<ApiTrade>> {
        if self.v2 {
            match self.trades_v2(markets, start, end)? {
                Some(trades) => return Ok(trades),
                None => {
                    log::info!("data api: /v2/trades is not served (404); reading /trades (v1)");
                    self.v2 = false;
                }
            }
        }
        self.trades_v1(markets, start, end)
    }

    /// v2: `start`/`end` are ignored for a `condition` query, so the walk goes from the
    /// newest row back, page by page (the cursor), until a page reaches rows older than
    /// `start`; the rows in the window are kept. `None`: v2 is not served (a 404 on the first
    /// page).
    fn trades_v2(
        &mut self,
        markets: &[String],
        start: i64,
        end: i64,
    ) -> Result<Option<Vec<ApiTrade>>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        let conditions = markets.join(",");
        loop {
            let url = match &cursor {
                None => format!(
                    "{}/v2/trades?condition={conditions}&limit={}&taker_only=true",
                    self.base, self.page
                ),
                Some(c) => format!(
                    "{}/v2/trades?condition={conditions}&cursor={}&taker_only=true",
                    self.base,
                    v2::query_value(c)
                ),
            };
            self.budget.wait();
            let Some(body) = get_text_or_absent(&self.agent, &url, &self.retry)? else {
                if cursor.is_none() {
                    return Ok(None);
                }
                return Err(Error::http(format!("data api: {url}: HTTP 404 mid-walk")));
            };
            self.requests += 1;
            let page = v2::decode_page(&body)?;
            self.bad_rows += page.bad;
            let oldest = page.trades.iter().map(|t| t.timestamp_s).min();
            out.extend(
                page.trades
                    .into_iter()
                    .filter(|t| t.timestamp_s >= start && t.timestamp_s <= end),
            );
            match page.next_cursor {
                Some(next) if oldest.is_none_or(|o| o >= start) => cursor = Some(next),
                _ => return Ok(Some(out)),
            }
        }
    }

    /// v1: windows deeper than the offset cap are split.
    ///
    /// Paging goes by the rows the service sent, not by those usable (a page with bad rows
    /// is as full as any), and a page is the last only when it is shorter than what was asked
    /// *and* than the largest page the service has sent: a service that caps `limit` lower
    /// than asked (silently) is paged through to the end all the same (one empty page more,
    /// until the cap is known).
    fn trades_v1(&mut self, markets: &[String], start: i64, end: i64) -> Result<Vec<ApiTrade>> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            if offset > MAX_OFFSET {
                // Too deep for one window: split it, each half with its own offset budget; a
                // single second too deep is split by market instead.
                if start >= end {
                    if markets.len() > 1 {
                        let (left, right) = markets.split_at(markets.len() / 2);
                        let mut both = self.trades_v1(left, start, end)?;
                        both.extend(self.trades_v1(right, start, end)?);
                        return Ok(both);
                    }
                    return Err(Error::http(format!(
                        "data api: more than {MAX_OFFSET} trades of one market in the one \
                         second {start}"
                    )));
                }
                let mid = start + (end - start) / 2;
                let mut newer = self.trades_v1(markets, mid + 1, end)?;
                newer.extend(self.trades_v1(markets, start, mid)?);
                return Ok(newer);
            }
            let (page, rows) = self.page_at(markets, start, end, offset)?;
            out.extend(page);
            let last = rows == 0 || (rows < self.page && rows < self.largest_page);
            self.largest_page = self.largest_page.max(rows);
            if last {
                return Ok(out);
            }
            offset += rows;
        }
    }

    fn page_at(
        &mut self,
        markets: &[String],
        start: i64,
        end: i64,
        offset: usize,
    ) -> Result<(Vec<ApiTrade>, usize)> {
        let url = format!(
            "{}/trades?market={}&start={start}&end={end}&limit={}&offset={offset}&takerOnly=true",
            self.base,
            markets.join(","),
            self.page
        );
        self.budget.wait();
        let body = get_text(&self.agent, &url, &self.retry)?;
        self.requests += 1;
        self.parse(&body)
    }

    /// The usable trades of a page, and how many rows it had (usable or not).
    fn parse(&mut self, body: &str) -> Result<(Vec<ApiTrade>, usize)> {
        let (trades, bad) = decode_trades(body)?;
        self.bad_rows += bad;
        let rows = trades.len() + bad as usize;
        Ok((trades, rows))
    }
}
