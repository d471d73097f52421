//! The `markets` table: what the listener subscribes to, and what a Gamma sync writes.

use chrono::{DateTime, Utc};
use postgres::Client;
use serde::Serialize;

use crate::error::Result;

/// One row of `markets`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarketRow {
    pub condition_id: String,
    pub gamma_id: Option<String>,
    pub question: Option<String>,
    pub slug: Option<String>,
    pub outcomes: Vec<String>,
    /// Feed asset ids, index-aligned with `outcomes`.
    pub token_ids: Vec<String>,
    pub active: bool,
    pub closed: bool,
    pub accepting_orders: bool,
    pub enable_order_book: bool,
    pub neg_risk: bool,
    pub end_date: Option<DateTime<Utc>>,
    pub version: Option<String>,
}

/// One of N disjoint parts of the markets, so N instances can share the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 0.
    pub index: u32,
    /// How many shards there are.
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = crate::Error;

    /// `I/N`, with I < N.
    fn from_str(s: &str) -> Result<Shard> {
        let bad = || crate::Error::config(format!("shard {s:?}: expected I/N with I < N"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let shard = Shard {
            index: i.trim().parse().map_err(|_| bad())?,
            count: n.trim().parse().map_err(|_| bad())?,
        };
        if shard.count == 0 || shard.index >= shard.count {
            return Err(bad());
        }
        Ok(shard)
    }
}

/// The tokens of every open order-book market, grouped by market, in a stable order
/// (by condition id), each token once.
pub fn active_token_groups(client: &mut Client) -> Result<Vec<Vec<String>>> {
    active_token_groups_in(client, None)
}

/// [`active_token_groups`], restricted to the markets of `shard` (by a hash of the condition
/// id, computed by the server so every instance agrees).
pub fn active_token_groups_in(
    client: &mut Client,
    shard: Option<Shard>,
) -> Result<Vec<Vec<String>>> {
    let (index, count) = shard.map_or((0i64, 1i64), |s| (s.index as i64, s.count as i64));
    let rows = client.query(
        "SELECT token_ids FROM markets
         WHERE active AND NOT closed AND enable_order_book AND cardinality(token_ids) > 0
           AND (hashtext(condition_id)::bigint & 2147483647) % $2 = $1
         ORDER BY condition_id",
        &[&index, &count],
    )?;
    let mut seen = std::collections::HashSet::new();
    let mut groups = Vec::with_capacity(rows.len());
    for row in rows {
        let tokens: Vec<String> = row.try_get(0)?;
        let group: Vec<String> = tokens
            .into_iter()
            .filter(|t| !t.is_empty() && seen.insert(t.clone()))
            .collect();
        if !group.is_empty() {
            groups.push(group);
        }
    }
    let markets = groups.len();
    log::info!(
        "Found {} unique tokens from {markets} active markets",
        seen.len()
    );
    Ok(groups)
}

/// Inserts or updates `markets` in one statement. Returns the number of rows written.
pub fn upsert_markets(client: &mut Client, markets: &[MarketRow]) -> Result<u64> {
    if markets.is_empty() {
        return Ok(0);
    }
    let json = serde_json::to_string(markets).map_err(|e| crate::Error::data(e.to_string()))?;
    let n = client.execute(
        "INSERT INTO markets (condition_id, gamma_id, question, slug, outcomes, token_ids, active,
                              closed, accepting_orders, enable_order_book, neg_risk, end_date,
                              version, updated_at)
         SELECT condition_id, gamma_id, question, slug, outcomes, token_ids, active, closed,
                accepting_orders, enable_order_book, neg_risk, end_date, version, now()
         FROM jsonb_to_recordset($1::text::jsonb) AS m(
             condition_id text, gamma_id text, question text, slug text, outcomes text[],
             token_ids text[], active boolean, closed boolean, accepting_orders boolean,
             enable_order_book boolean, neg_risk boolean, end_date timestamptz, version text)
         ON CONFLICT (condition_id) DO UPDATE SET
             gamma_id = EXCLUDED.gamma_id, question = EXCLUDED.question, slug = EXCLUDED.slug,
             outcomes = EXCLUDED.outcomes, token_ids = EXCLUDED.token_ids,
             active = EXCLUDED.active, closed = EXCLUDED.closed,
             accepting_orders = EXCLUDED.accepting_orders,
             enable_order_book = EXCLUDED.enable_order_book, neg_risk = EXCLUDED.neg_risk,
             end_date = EXCLUDED.end_date, version = EXCLUDED.version, updated_at = now()",
        &[&json],
    )?;
    Ok(n)
}

/// Condition ids of the markets we hold as open.
pub fn open_condition_ids(client: &mut Client) -> Result<Vec<String>> {
    let rows = client.query(
        "SELECT condition_id FROM markets WHERE NOT closed ORDER BY condition_id",
        &[],
    )?;
    rows.iter()
        .map(|r| r.try_get(0).map_err(crate::Error::from))
        .collect()
}
