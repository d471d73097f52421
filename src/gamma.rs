//! The Gamma market listing: a blocking client that speaks HTTP and JSON only (the sync in
//! [`crate::sync`] is what writes the `markets` table).
//!
//! Gamma's quirks, as `polymarket-feed.md` lists them: `outcomes`, `outcomePrices` and
//! `clobTokenIds` are JSON encoded inside strings; v2 markets carry their feed ids in a real
//! `positionIds` array; keyset paging ends when `next_cursor` is absent. Requests that are
//! throttled (429) or fail on the server's side (5xx) are retried with backoff, honouring
//! `Retry-After`.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::{RetryPolicy, get_text};
use crate::store::markets::MarketRow;

/// Most markets per listing page (the endpoint's limit).
pub(crate) const PAGE_LIMIT: usize = 100;

/// Longest wait a throttled request's `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// A blocking Gamma client.
pub struct GammaClient {
    base: String,
    agent: ureq::Agent,
    retry: RetryPolicy,
}

/// One market as Gamma lists it. Every field is optional: a missing field makes a market
/// unusable, not the page.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GammaMarket {
    /// Gamma's own id.
    pub id: Option<String>,
    /// The market's condition id (the feed's `market`).
    pub condition_id: Option<String>,
    /// The question, as listed.
    pub question: Option<String>,
    /// The URL slug.
    pub slug: Option<String>,
    /// Outcome names, a JSON array inside a string.
    pub outcomes: Option<String>,
    /// Outcome prices, a JSON array of decimal strings inside a string.
    pub outcome_prices: Option<String>,
    /// v1 token ids, a JSON array inside a string (stale on v2 markets).
    pub clob_token_ids: Option<String>,
    /// v2 token ids, a real array.
    pub position_ids: Option<Vec<String>>,
    /// `v1`, `v2`, or absent (a market from before versions: v1).
    pub version: Option<String>,
    /// Listed as active.
    pub active: Option<bool>,
    /// Closed for trading.
    pub closed: Option<bool>,
    /// Accepting orders now.
    pub accepting_orders: Option<bool>,
    /// Traded on the order book (the feed carries it).
    pub enable_order_book: Option<bool>,
    /// Part of a negative-risk group.
    pub neg_risk: Option<bool>,
    /// Scheduled end, RFC 3339.
    pub end_date: Option<String>,
    /// The oracle's status: `resolved`, `proposed`, `disputed`, …
    pub uma_resolution_status: Option<String>,
}

/// Why a listed market was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    UnknownVersion,
    Malformed,
}

impl GammaMarket {
    /// The feed's asset ids, chosen by `version`: v1 from the JSON-encoded `clobTokenIds`,
    /// v2 from `positionIds`. An absent version is a market from before versions: v1.
    pub(crate) fn token_ids(&self) -> std::result::Result<Vec<String>, Skip> {
        match self.version.as_deref() {
            None | Some("v1") => {
                decode_string_list(self.clob_token_ids.as_deref()).ok_or(Skip::Malformed)
            }
            Some("v2") => self.position_ids.clone().ok_or(Skip::Malformed),
            Some(_) => Err(Skip::UnknownVersion),
        }
    }

    pub(crate) fn outcome_list(&self) -> Option<Vec<String>> {
        decode_string_list(self.outcomes.as_deref())
    }

    /// The `markets` row for this market.
    pub(crate) fn to_row(&self) -> std::result::Result<MarketRow, Skip> {
        let condition_id = self
            .condition_id
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or(Skip::Malformed)?;
        let token_ids = self.token_ids()?;
        let outcomes = self.outcome_list().ok_or(Skip::Malformed)?;
        if outcomes.len() != token_ids.len() || token_ids.iter().any(|t| t.is_empty()) {
            return Err(Skip::Malformed);
        }
        Ok(MarketRow {
            condition_id,
            gamma_id: self.id.clone(),
            question: self.question.clone(),
            slug: self.slug.clone(),
            outcomes,
            token_ids,
            active: self.active.unwrap_or(false),
            closed: self.closed.unwrap_or(false),
            accepting_orders: self.accepting_orders.unwrap_or(false),
            enable_order_book: self.enable_order_book.unwrap_or(false),
            neg_risk: self.neg_risk.unwrap_or(false),
            end_date: self
                .end_date
                .as_deref()
                .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
                .map(|d| d.with_timezone(&Utc)),
            version: self.version.clone(),
        })
    }
}

/// Decodes a JSON array of strings that Gamma sends inside a string (`"[\"Yes\", \"No\"]"`).
pub(crate) fn decode_string_list(s: Option<&str>) -> Option<Vec<String>> {
    serde_json::from_str::<Vec<String>>(s?).ok()
}

/// One page of the keyset listing.
#[derive(Debug, Default)]
pub(crate) struct Page {
    pub(crate) markets: Vec<GammaMarket>,
    /// Entries that were not market objects at all.
    pub(crate) unreadable: usize,
    pub(crate) next_cursor: Option<String>,
}

impl GammaClient {
    /// A client for `config`'s Gamma URL, with its timeout and retry policy.
    pub fn new(config: &Config) -> GammaClient {
        let agent = crate::http::agent(config.gamma_timeout);
        GammaClient {
            base: config.gamma_url.trim_end_matches('/').to_owned(),
            agent,
            retry: RetryPolicy::from_config(config, "gamma", MAX_RETRY_AFTER, 64 << 20),
        }
    }

    /// GET `path` (with its query) and parse the JSON body, retrying throttling and server
    /// errors.
    fn get_json(&self, path_and_query: &str) -> Result<Value> {
        let url = format!("{}{path_and_query}", self.base);
        let body = get_text(&self.agent, &url, &self.retry)?;
        serde_json::from_str(&body).map_err(|e| Error::http(format!("{url}: invalid JSON: {e}")))
    }

    /// One page of `/markets/keyset`.
    pub(crate) fn page(&self, query: &str, after_cursor: Option<&str>) -> Result<Page> {
        let mut path = format!("/markets/keyset?{query}&limit={PAGE_LIMIT}");
        if let Some(c) = after_cursor {
            path.push_str("&after_cursor=");
            path.push_str(c);
        }
        let v = self.get_json(&path)?;
        decode_page(&v).ok_or_else(|| Error::http(format!("{path}: no `markets` array")))
    }

    /// Every market for `query` (for example `closed=false`), page by page; `each` sees
    /// every page as it arrives.
    pub(crate) fn for_each_page(
        &self,
        query: &str,
        mut each: impl FnMut(Page) -> Result<()>,
    ) -> Result<usize> {
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        let mut seen_cursors = HashSet::new();
        loop {
            let page = self.page(query, cursor.as_deref())?;
            pages += 1;
            let next = page.next_cursor.clone();
            each(page)?;
            match next {
                // A cursor seen before would loop for ever: a broken server, not more data.
                Some(c) if seen_cursors.insert(c.clone()) => cursor = Some(c),
                Some(c) => return Err(Error::http(format!("cursor {c} repeated"))),
                None => return Ok(pages),
            }
        }
    }

    /// The closed (or open) markets among these condition ids (asked in batches of at most
    /// 100, with `closed` sent explicitly as the listing wants).
    pub(crate) fn markets_by_condition_ids(
        &self,
        ids: &[String],
        closed: bool,
    ) -> Result<Vec<GammaMarket>> {
        let mut out = Vec::new();
        for batch in ids.chunks(PAGE_LIMIT) {
            let mut query = format!("closed={closed}");
            for id in batch {
                query.push_str("&condition_ids=");
                query.push_str(id);
            }
            let page = self.page(&query, None)?;
            out.extend(page.markets);
        }
        Ok(out)
    }
}

/// One `/markets/keyset` answer: its markets (each one that does not deserialize counted as
/// unreadable, never failing the page) and the next cursor; `None` without a `markets`
/// array. Every byte Gamma sends goes through here (and [`GammaMarket::to_row`]): fuzzed.
pub(crate) fn decode_page(v: &Value) -> Option<Page> {
    let mut page = Page {
        next_cursor: v
            .get("next_cursor")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        ..Page::default()
    };
    for item in v.get("markets").and_then(Value::as_array)? {
        match GammaMarket::deserialize(item) {
            Ok(m) => page.markets.push(m),
            Err(_) => page.unreadable += 1,
        }
    }
    Some(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn market(json: &str) -> GammaMarket {
        serde_json::from_str(json).expect("market json")
    }

    #[test]
    fn token_ids_follow_the_version() {
        let v1 = market(
            r#"{"conditionId":"0x1","outcomes":"[\"Yes\", \"No\"]","clobTokenIds":"[\"11\", \"22\"]","version":"v1"}"#,
        );
        assert_eq!(v1.to_row().expect("v1").token_ids, vec!["11", "22"]);
        let v2 = market(
            r#"{"conditionId":"0x2","outcomes":"[\"Yes\",\"No\"]","clobTokenIds":"[\"old1\",\"old2\"]","positionIds":["33","44"],"version":"v2"}"#,
        );
        assert_eq!(v2.to_row().expect("v2").token_ids, vec!["33", "44"]);
        let v3 = market(
            r#"{"conditionId":"0x3","outcomes":"[\"Yes\",\"No\"]","clobTokenIds":"[\"1\",\"2\"]","version":"v3"}"#,
        );
        assert_eq!(v3.to_row(), Err(Skip::UnknownVersion));
        let bad = market(
            r#"{"conditionId":"0x4","outcomes":"[\"Yes\"]","clobTokenIds":"[\"1\",\"2\"]"}"#,
        );
        assert_eq!(bad.to_row(), Err(Skip::Malformed), "mismatched lengths");
        let bad = market(
            r#"{"conditionId":"0x5","outcomes":"[\"Yes\",\"No\"]","clobTokenIds":"not json"}"#,
        );
        assert_eq!(bad.to_row(), Err(Skip::Malformed));
    }
}
