//! The simulated Data API: `GET /trades`, the settled tape of every trade the exchange
//! executed, with the live service's rules (`polymarket-feed.md` §3): `market` (comma-separated
//! condition ids), `start`/`end` (epoch seconds, inclusive, on the block time), `limit`
//! 0..=10000, `offset` 0..=10000 (400 past it), newest first, prices and sizes as JSON numbers,
//! `timestamp` the block time in seconds (2 s blocks, the same or a few seconds after the match
//! time the feed carries), `transactionHash` always present, a visibility lag, and a rate
//! limit answered with 429 and `Retry-After`.

use std::collections::HashSet;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use polytape_http::{Request, Response};
use serde_json::json;

use crate::frames::TradeRecord;
use crate::state::SimState;

/// Most rows a page may ask for, and the deepest offset.
pub(crate) const MAX_LIMIT: usize = 10_000;
pub(crate) const MAX_OFFSET: usize = 10_000;

/// The settlement block time of a trade, in seconds: blocks every 2 s, the trade in the first
/// or second block at or after its match (plus the configured settlement lag).
pub fn block_time_s(t: &TradeRecord, settlement_lag: Duration) -> i64 {
    let match_ms = t.timestamp_ms + settlement_lag.as_millis() as i64;
    let match_s = match_ms.div_euclid(1000) + i64::from(match_ms.rem_euclid(1000) > 0);
    let block = match_s + match_s.rem_euclid(2);
    block + 2 * (t.seq % 2) as i64
}

/// Whether the Data API leaves trade `t` out (the `data_api_drop` fault: a fixed, seeded
/// choice per trade, so every page and every version agrees).
pub fn dropped_by_data_api(t: &TradeRecord, fraction: f64) -> bool {
    let draw = (t.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    fraction > 0.0 && draw < fraction
}

/// What both versions of `/trades` list before paging: the executed trades of the wanted
/// markets (all when `None`) with a block time in `start..=end`, settled at least the Data
/// API's lag ago, less the ones it drops (`data_api_drop`).
fn listed<'a>(
    state: &SimState,
    executed: &'a [TradeRecord],
    wanted: Option<&HashSet<u32>>,
    start: i64,
    end: i64,
) -> Vec<&'a TradeRecord> {
    let visible_until_s = (crate::now_ms() - state.config.data_api_lag.as_millis() as i64) / 1000;
    let lag = state.config.settlement_lag;
    executed
        .iter()
        .filter(|t| wanted.is_none_or(|w| w.contains(&t.market)))
        .filter(|t| !dropped_by_data_api(t, state.config.data_api_drop))
        .filter(|t| {
            let b = block_time_s(t, lag);
            b >= start && b <= end && b <= visible_until_s
        })
        .collect()
}

fn bad(msg: &str) -> Response {
    Response::json(400, &json!({"error": msg}))
}

/// The rate limit and the armed failures, one for both versions: `Some` is the answer.
fn admit(state: &SimState) -> Option<Response> {
    if let Some(wait) = state.data_api_window.admit() {
        return Some(
            Response::json(429, &json!({"error": "too many requests"}))
                .with_header("Retry-After", wait.to_string()),
        );
    }
    state.data_api_requests.fetch_add(1, SeqCst);
    let mut fault = state.data_api_fault.lock();
    match *fault {
        (0, 0, _) => None,
        (0, n, status) => {
            fault.1 = n - 1;
            Some(Response::json(
                status,
                &json!({"error": "simulated failure"}),
            ))
        }
        (skip, _, _) => {
            fault.0 = skip - 1;
            None
        }
    }
}

/// `GET /trades`.
pub(crate) fn trades(state: &SimState, req: &Request) -> Response {
    if let Some(answer) = admit(state) {
        return answer;
    }
    let num = |name: &str, default: i64| -> Result<i64, Response> {
        match req.param(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .map_err(|_| bad(&format!("invalid {name}: {v}"))),
        }
    };
    let (limit, offset, start, end) = match (
        num("limit", 100),
        num("offset", 0),
        num("start", i64::MIN),
        num("end", i64::MAX),
    ) {
        (Ok(l), Ok(o), Ok(s), Ok(e)) => (l, o, s, e),
        (Err(r), ..) | (_, Err(r), ..) | (_, _, Err(r), _) | (.., Err(r)) => return r,
    };
    if !(0..=MAX_LIMIT as i64).contains(&limit) {
        return bad("limit must be between 0 and 10000");
    }
    if !(0..=MAX_OFFSET as i64).contains(&offset) {
        return bad("max historical activity offset of 10000 exceeded");
    }
    let wanted: Option<HashSet<String>> = req.param("market").map(|m| {
        m.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let markets = state.markets.read();
    let wanted_idx: Option<HashSet<u32>> = wanted.as_ref().map(|w| {
        markets
            .iter()
            .enumerate()
            .filter(|(_, m)| w.contains(&m.condition_id))
            .map(|(i, _)| i as u32)
            .collect()
    });
    let lag = state.config.settlement_lag;
    let executed = state.executed.lock();
    let mut rows = listed(state, &executed, wanted_idx.as_ref(), start, end);
    // Newest first.
    rows.sort_by(|a, b| {
        block_time_s(b, lag)
            .cmp(&block_time_s(a, lag))
            .then(b.seq.cmp(&a.seq))
    });
    let page: Vec<serde_json::Value> = rows
        .iter()
        .skip(offset as usize)
        .take((limit as usize).min(state.config.data_api_max_page))
        .filter_map(|t| {
            let m = markets.get(t.market as usize)?;
            // Prices and sizes are JSON numbers, written from their exact decimal text.
            let number = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
            Some(json!({
                "proxyWallet": format!("0x{:040x}", t.seq.wrapping_mul(7919)),
                "side": t.side(),
                "asset": m.token_ids[t.outcome as usize],
                "conditionId": m.condition_id,
                "size": number(&t.size())?,
                "price": number(&t.price())?,
                "timestamp": block_time_s(t, lag),
                "title": m.question,
                "slug": m.slug,
                "eventSlug": m.slug,
                "outcome": m.outcomes[t.outcome as usize],
                "outcomeIndex": 999,
                "transactionHash": t.settlement_hash(),
            }))
        })
        .collect();
    Response::json(200, &page)
}

/// The price v2 shows: the raw ratio of the fill's USDC (six decimals, rounded) to its
/// shares, ten decimals at most (`0.709999959`), as the live v2 does (feed notes §6).
pub fn v2_price(t: &TradeRecord) -> String {
    let size = TradeRecord::size_micro_of(t.seq) as u128;
    let usdc = (size * t.price_bp as u128 + 5_000) / 10_000;
    let ratio = usdc * 10_000_000_000 / size; // units of 1e-10, truncated
    let text = format!("{}.{:010}", ratio / 10_000_000_000, ratio % 10_000_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Whether text is a condition id: `0x` and 64 hex digits.
fn is_condition_id(s: &str) -> bool {
    s.len() == 66 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// `GET /v2/trades`, with the live v2's rules (feed notes §6): cursor paging only (`offset`
/// is a 400), anchored on (block time, sequence id), newest first; `condition` (or
/// `condition_id`, `conditionId`), at most 20 comma-separated, a malformed one a 400;
/// `start`/`end` honoured only with `user` (a `condition` query ignores them); `limit` on
/// the first page only (the cursor carries it); an envelope `{data, pagination}` of
/// snake_case rows; prices the raw ratio.
pub(crate) fn trades_v2(state: &SimState, req: &Request) -> Response {
    if !state.config.data_api_v2 {
        return Response::json(404, &json!({"error": "not found"}));
    }
    if let Some(answer) = admit(state) {
        return answer;
    }
    state.data_api_v2_requests.fetch_add(1, SeqCst);
    if req.param("offset").is_some() {
        return bad("offset is not supported; page with cursor");
    }
    // The cursor: "<limit>.<block s>.<sequence id>", opaque to clients.
    let (limit, anchor) = match req.param("cursor") {
        Some(c) => {
            let parts: Vec<&str> = c.split('.').collect();
            let parsed = match parts[..] {
                [l, t, q] => l
                    .parse::<usize>()
                    .ok()
                    .zip(t.parse::<i64>().ok())
                    .zip(q.parse::<u64>().ok())
                    .map(|((l, t), q)| (l, Some((t, q)))),
                _ => None,
            };
            match parsed {
                Some(p) => p,
                None => return bad("invalid cursor"),
            }
        }
        None => match req.param("limit").map(str::parse::<usize>) {
            None => (100, None),
            Some(Ok(l)) if (1..=MAX_LIMIT).contains(&l) => (l, None),
            Some(_) => return bad("limit must be between 1 and 10000"),
        },
    };
    let condition = req
        .param("condition")
        .or(req.param("condition_id"))
        .or(req.param("conditionId"));
    let wanted: Option<HashSet<String>> = match condition {
        None => None,
        Some(list) => {
            let ids: HashSet<String> = list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_ascii_lowercase)
                .collect();
            if ids.len() > 20 {
                return bad("at most 20 conditions");
            }
            if !ids.iter().all(|i| is_condition_id(i)) {
                return bad("invalid condition id");
            }
            Some(ids)
        }
    };
    // Bounds only with `user` (there is no user here: every trade is someone's).
    let (start, end) = if req.param("user").is_some() {
        let n = |name: &str, d: i64| req.param(name).and_then(|v| v.parse().ok()).unwrap_or(d);
        (n("start", i64::MIN), n("end", i64::MAX))
    } else {
        (i64::MIN, i64::MAX)
    };
    let markets = state.markets.read();
    let wanted_idx: Option<HashSet<u32>> = wanted.as_ref().map(|w| {
        markets
            .iter()
            .enumerate()
            .filter(|(_, m)| w.contains(&m.condition_id.to_ascii_lowercase()))
            .map(|(i, _)| i as u32)
            .collect()
    });
    let lag = state.config.settlement_lag;
    let executed = state.executed.lock();
    let key = |t: &TradeRecord| (block_time_s(t, lag), t.seq);
    let mut rows = listed(state, &executed, wanted_idx.as_ref(), start, end);
    rows.retain(|t| anchor.is_none_or(|a| key(t) < a));
    rows.sort_by_key(|t| std::cmp::Reverse(key(t)));
    let take = limit.min(state.config.data_api_max_page);
    let has_more = rows.len() > take;
    rows.truncate(take);
    let next_cursor = if has_more {
        rows.last().map(|t| {
            let (b, q) = key(t);
            format!("{limit}.{b}.{q}")
        })
    } else {
        None
    };
    let data: Vec<serde_json::Value> = rows
        .iter()
        .filter_map(|t| {
            let m = markets.get(t.market as usize)?;
            let number = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
            Some(json!({
                "proxy_wallet": format!("0x{:040x}", t.seq.wrapping_mul(7919)),
                "side": t.side(),
                "token_id": m.token_ids[t.outcome as usize],
                "condition_id": m.condition_id,
                "size": number(&t.size())?,
                "price": number(&v2_price(t))?,
                "timestamp": block_time_s(t, lag),
                "outcome": m.outcomes[t.outcome as usize],
                "outcome_index": t.outcome,
                "slug": m.slug,
                "event_slug": m.slug,
                "transaction_hash": t.settlement_hash(),
            }))
        })
        .collect();
    Response::json(
        200,
        &json!({
            "data": data,
            "pagination": {"limit": limit, "offset": 0, "has_more": has_more, "next_cursor": next_cursor},
        }),
    )
}
