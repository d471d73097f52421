//! The simulated chain (issue 27): Polygon's settlement record of every trade the exchange
//! executed, served as JSON-RPC on `POST /rpc` (`eth_chainId` 137, `eth_blockNumber`,
//! `eth_getBlockByNumber` with `latest`/`finalized`/`earliest`/numbers, `eth_getLogs`).
//!
//! A block every 2 s from the simulator's start (block numbers after CLOB V2's first,
//! 84,902,353); a trade settles in the block of its `block_time_s` (the Data API's time).
//! Each trade is one transaction (its settlement hash, the one the feed and the Data API
//! carry) with a V2 `OrderFilled` for the taker order (its `taker` the exchange) and one for
//! the maker order; one trade in five is a Yes/No cross match, whose maker leg is on the
//! other token. NegRisk markets settle on the NegRisk exchange. `finalized` trails the head
//! by 32 blocks. Faults: a reorg above `finalized` (its logs move a block), a range or
//! result-count cap (the providers' -32005), the RPC down (503), and the provider's rate
//! limit (429).

use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use polytape_http::{Request, Response};
use serde_json::{Value, json};

use crate::data_api::block_time_s;
use crate::frames::TradeRecord;
use crate::state::SimState;
use crate::universe::SimMarket;

/// Polygon's chain id.
pub const CHAIN_ID: u64 = 137;
/// The simulator's first block.
pub const FIRST_BLOCK: u64 = 85_000_000;
/// Blocks between the head and `finalized`, by default (`SimConfig::chain_finality`).
pub const FINALITY: u64 = 32;
/// How far before the simulator's start its chain begins (empty blocks): `finalized`
/// exists from the start.
pub const HISTORY_S: i64 = 600;
/// The V2 exchanges (CTF, NegRisk), as the chain spells them.
pub const EXCHANGE: &str = "0xE111180000d2663C0091e4f400237545B87B996B";
pub const NEG_RISK_EXCHANGE: &str = "0xe2222d279d744050d28e00520010520000310F59";
/// The V1 exchanges (CTF, NegRisk), before CLOB V2.
pub const V1_EXCHANGE: &str = "0x4bFb41d5B3570DeFd03C39a9A4D8dE6Bd8B8982E";
pub const V1_NEG_RISK_EXCHANGE: &str = "0xC5d563A36AE78145C45a50134d48A1215220f80a";
/// topic0 of the V1 `OrderFilled`.
pub const ORDER_FILLED_V1: &str =
    "0xd0a08e8c493f9c94f29311604c9de1b4e8c8d4c06bd0c789af57f2d65bfec0f6";
/// CLOB V2's first block on Polygon (the simulator's default migration block: its own chain
/// starts after it, so all V2, unless `SimConfig::chain_migration_block` moves it).
pub const V2_FIRST_BLOCK: u64 = 84_902_353;
/// topic0 of the V2 `OrderFilled`.
pub const ORDER_FILLED: &str = "0xd543adfd945773f1a62f74f0ee55a5e3b9b1a28262980ba90b1a89f2ea84d8ee";
/// The most logs one `eth_getLogs` answers (past it: -32005, as providers say).
pub const MAX_LOGS: usize = 10_000;

/// The migration block that falls `seconds` after the simulator's start (its chain begins
/// [`HISTORY_S`] before it, a block every 2 s).
pub fn migration_after(seconds: u64) -> u64 {
    FIRST_BLOCK + (HISTORY_S as u64 + seconds) / 2
}

/// Block `n`'s time (Unix s), for a chain started at `t0_s`.
pub fn block_time(t0_s: i64, n: u64) -> i64 {
    t0_s + 2 * (n.saturating_sub(FIRST_BLOCK) as i64)
}

/// The block holding time `t_s`.
pub fn block_at(t0_s: i64, t_s: i64) -> u64 {
    FIRST_BLOCK + ((t_s - t0_s).max(0) / 2) as u64
}

/// How many executed trades have settled in blocks up to `head`. Counted again in full only
/// when the head moves (every 2 s); meanwhile only the trades executed since the last count
/// are looked at (a full count on every call cost the generator its lock for milliseconds,
/// every few milliseconds, under a benchmark's polling of `/sim/stats`).
pub(crate) fn settled_count(state: &SimState, head: u64) -> u64 {
    let executed = state.executed.lock();
    let mut cache = state.settled.lock();
    let settles =
        |t: &TradeRecord| trade_block(state.chain_t0_s, t, state.config.settlement_lag) <= head;
    if cache.head != head || cache.looked > executed.len() {
        *cache = Settled {
            head,
            looked: 0,
            count: 0,
        };
    }
    let new = executed.get(cache.looked..).unwrap_or_default();
    cache.count += new.iter().filter(|t| settles(t)).count() as u64;
    cache.looked = executed.len();
    cache.count
}

/// The last [`settled_count`]: at `head`, over the first `looked` executed trades.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    head: u64,
    looked: usize,
    count: u64,
}

/// The head now and `finalized`.
pub(crate) fn heads(state: &SimState) -> (u64, u64) {
    let head = block_at(state.chain_t0_s, crate::now_ms().div_euclid(1000));
    (head, head.saturating_sub(state.config.chain_finality))
}

/// The block a trade settles in.
pub fn trade_block(state_t0_s: i64, t: &TradeRecord, lag: std::time::Duration) -> u64 {
    block_at(state_t0_s, block_time_s(t, lag))
}

fn word_u(n: u128) -> String {
    format!("{n:064x}")
}

/// A uint256 in decimal text (a token id) as a 32-byte word of hex.
pub fn word_of_decimal(text: &str) -> String {
    let mut bytes = [0u8; 32];
    for d in text.bytes().filter(u8::is_ascii_digit) {
        let mut carry = u32::from(d - b'0');
        for b in bytes.iter_mut().rev() {
            let v = u32::from(*b) * 10 + carry;
            *b = (v & 0xff) as u8;
            carry = v >> 8;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn address(seed: u64) -> String {
    format!(
        "{:040x}",
        u128::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) >> 8
    )
}

/// The two `OrderFilled` logs of trade `t` (taker leg first), without block fields; `v1`:
/// before the migration (V1 layout, V1 contracts).
fn legs(t: &TradeRecord, m: &SimMarket, v1: bool) -> [Value; 2] {
    let exchange = match (v1, m.neg_risk) {
        (false, false) => EXCHANGE,
        (false, true) => NEG_RISK_EXCHANGE,
        (true, false) => V1_EXCHANGE,
        (true, true) => V1_NEG_RISK_EXCHANGE,
    };
    let shares = u128::from(TradeRecord::size_micro_of(t.seq));
    let price = u128::from(t.price_bp);
    let usdc = (shares * price + 5_000) / 10_000;
    let trader = address(t.seq.wrapping_mul(7919));
    let maker = address(t.seq.wrapping_mul(31).wrapping_add(1));
    let side = u128::from(!t.buy);
    // A taker leg: a BUY pays USDC (maker amount) for shares (taker amount).
    let (ma, ta) = if t.buy {
        (usdc, shares)
    } else {
        (shares, usdc)
    };
    let token = &m.token_ids[t.outcome as usize];
    let taker_leg = log(
        v1,
        exchange,
        t.seq * 2,
        &trader,
        &exchange.to_ascii_lowercase()[2..],
        side,
        token,
        ma,
        ta,
    );
    // The maker order: the opposite side of the same token, or (a cross match) the same
    // side of the other token at the complementary price.
    let maker_leg = if t.seq.is_multiple_of(5) {
        let other = &m.token_ids[1 - t.outcome as usize];
        let usdc_other = (shares * (10_000 - price) + 5_000) / 10_000;
        let (ma, ta) = if t.buy {
            (usdc_other, shares)
        } else {
            (shares, usdc_other)
        };
        log(
            v1,
            exchange,
            t.seq * 2 + 1,
            &maker,
            &trader,
            side,
            other,
            ma,
            ta,
        )
    } else {
        let (ma, ta) = if t.buy {
            (shares, usdc)
        } else {
            (usdc, shares)
        };
        log(
            v1,
            exchange,
            t.seq * 2 + 1,
            &maker,
            &trader,
            1 - side,
            token,
            ma,
            ta,
        )
    };
    [taker_leg, maker_leg]
}

#[allow(clippy::too_many_arguments)]
fn log(
    v1: bool,
    exchange: &str,
    order: u64,
    maker: &str,
    taker: &str,
    side: u128,
    token: &str,
    maker_amount: u128,
    taker_amount: u128,
) -> Value {
    // V2: side, token, amounts, fee, builder, metadata. V1: maker asset, taker asset (0 is
    // USDC: a BUY gives USDC for the token), amounts, fee.
    let data = if v1 {
        let (maker_asset, taker_asset) = if side == 0 {
            (word_u(0), word_of_decimal(token))
        } else {
            (word_of_decimal(token), word_u(0))
        };
        format!(
            "0x{maker_asset}{taker_asset}{}{}{}",
            word_u(maker_amount),
            word_u(taker_amount),
            word_u(0)
        )
    } else {
        format!(
            "0x{}{}{}{}{}{}{}",
            word_u(side),
            word_of_decimal(token),
            word_u(maker_amount),
            word_u(taker_amount),
            word_u(0),
            word_u(0),
            word_u(0)
        )
    };
    json!({
        "address": exchange,
        "topics": [
            if v1 { ORDER_FILLED_V1 } else { ORDER_FILLED },
            format!("0x{:064x}", u128::from(order).wrapping_mul(0x2545_F491_4F6C_DD1D)),
            format!("0x{:0>64}", maker),
            format!("0x{:0>64}", taker),
        ],
        "data": data,
        "removed": false,
    })
}

fn hex(n: u64) -> String {
    format!("0x{n:x}")
}

fn block_hash(n: u64, reorged: bool) -> String {
    format!("0x{:048x}{:016x}", u64::from(reorged) + 1, n)
}

/// A block tag or number: `None` when it is neither.
fn block_param(v: &Value, head: u64, finalized: u64) -> Option<u64> {
    match v.as_str()? {
        "latest" | "pending" | "safe" => Some(head),
        "finalized" => Some(finalized),
        "earliest" => Some(0),
        h => u64::from_str_radix(h.strip_prefix("0x")?, 16).ok(),
    }
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// `POST /rpc`: one JSON-RPC call or a batch.
pub(crate) fn rpc(state: &SimState, req: &Request, stream: &mut std::net::TcpStream) -> Response {
    if req.method != "POST" {
        return Response::json(405, &json!({"error": "POST /rpc"}));
    }
    if state.rpc_down.load(SeqCst) {
        return Response::text(503, "service unavailable\n");
    }
    if let Some(wait) = state.rpc_window.admit() {
        return Response::json(429, &json!({"error": "rate limited"}))
            .with_header("Retry-After", wait.to_string());
    }
    let body = match crate::clob::read_body(req, stream) {
        Ok(b) => b,
        Err(msg) => return Response::json(400, &json!({"error": msg})),
    };
    let Ok(call) = serde_json::from_slice::<Value>(&body) else {
        return Response::json(200, &rpc_error(&Value::Null, -32700, "parse error"));
    };
    state.rpc_requests.fetch_add(1, Relaxed);
    let answer = match call {
        Value::Array(calls) => Value::Array(calls.iter().map(|c| one(state, c)).collect()),
        c => one(state, &c),
    };
    Response::json(200, &answer)
}

fn one(state: &SimState, call: &Value) -> Value {
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let params = call
        .get("params")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    let (head, finalized) = heads(state);
    let ok = |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result});
    match call.get("method").and_then(Value::as_str) {
        Some("eth_chainId") => ok(json!(hex(CHAIN_ID))),
        Some("eth_blockNumber") => ok(json!(hex(head))),
        Some("eth_getBlockByNumber") => {
            let Some(n) = params.get(0).and_then(|v| block_param(v, head, finalized)) else {
                return rpc_error(&id, -32602, "invalid block");
            };
            if n > head || n < FIRST_BLOCK {
                return ok(Value::Null);
            }
            let reorged = state.reorg.load(SeqCst) && n > finalized;
            ok(json!({
                "number": hex(n),
                "hash": block_hash(n, reorged),
                "parentHash": block_hash(n.saturating_sub(1), false),
                "timestamp": hex(block_time(state.chain_t0_s, n) as u64),
                "transactions": [],
            }))
        }
        Some("eth_getLogs") => get_logs(state, &id, params.get(0), head, finalized),
        Some(other) => rpc_error(&id, -32601, &format!("the method {other} does not exist")),
        None => rpc_error(&id, -32600, "invalid request"),
    }
}

fn get_logs(
    state: &SimState,
    id: &Value,
    filter: Option<&Value>,
    head: u64,
    finalized: u64,
) -> Value {
    let Some(f) = filter else {
        return rpc_error(id, -32602, "a filter is required");
    };
    let from = f
        .get("fromBlock")
        .map_or(Some(head), |v| block_param(v, head, finalized));
    let to = f
        .get("toBlock")
        .map_or(Some(head), |v| block_param(v, head, finalized));
    let (Some(from), Some(to)) = (from, to.map(|t| t.min(head))) else {
        return rpc_error(id, -32602, "invalid block range");
    };
    let max_range = state.rpc_max_range.load(SeqCst);
    if max_range > 0 && to >= from && to - from + 1 > max_range {
        return rpc_error(
            id,
            -32005,
            &format!("block range is too large (max {max_range})"),
        );
    }
    let addresses: Vec<String> = match f.get("address") {
        Some(Value::String(a)) => vec![a.to_ascii_lowercase()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_ascii_lowercase)
            .collect(),
        _ => Vec::new(),
    };
    let topic0: Vec<String> = match f.get("topics").and_then(|t| t.get(0)) {
        Some(Value::String(t)) => vec![t.to_ascii_lowercase()],
        Some(Value::Array(t)) => t
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_ascii_lowercase)
            .collect(),
        _ => Vec::new(),
    };
    let wants = |topic: &str| topic0.is_empty() || topic0.iter().any(|t| t == topic);
    let markets = state.markets.read();
    let executed = state.executed.lock();
    let lag = state.config.settlement_lag;
    let reorg = state.reorg.load(SeqCst);
    let mut out: Vec<(u64, u64, Value)> = Vec::new();
    let mut per_block: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for t in executed.iter() {
        let mut block = trade_block(state.chain_t0_s, t, lag);
        // A reorg above `finalized`: its transactions land a block later, for now.
        if reorg && block > finalized {
            block += 1;
        }
        if block < from || block > to || block > head {
            continue;
        }
        let Some(m) = markets.get(t.market as usize) else {
            continue;
        };
        let v1 = block < state.config.chain_migration_block;
        if !wants(if v1 { ORDER_FILLED_V1 } else { ORDER_FILLED }) {
            continue;
        }
        for mut l in legs(t, m, v1) {
            let exchange = l["address"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !addresses.is_empty() && !addresses.contains(&exchange) {
                continue;
            }
            let index = per_block.entry(block).or_insert(0);
            l["blockNumber"] = json!(hex(block));
            l["blockHash"] = json!(block_hash(block, reorg && block > finalized));
            l["transactionHash"] = json!(t.settlement_hash());
            l["logIndex"] = json!(hex(*index));
            l["transactionIndex"] = json!(hex(t.seq % 200));
            out.push((block, *index, l));
            *index += 1;
        }
        if out.len() > MAX_LOGS {
            return rpc_error(
                id,
                -32005,
                &format!("query returned more than {MAX_LOGS} results"),
            );
        }
    }
    out.sort_by_key(|(b, i, _)| (*b, *i));
    state.rpc_log_ranges.lock().push((from, to));
    let logs: Vec<Value> = out.into_iter().map(|(_, _, l)| l).collect();
    json!({"jsonrpc": "2.0", "id": id, "result": logs})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_become_words_and_blocks_times() {
        assert_eq!(word_of_decimal("255"), format!("{:064x}", 255));
        assert_eq!(
            word_of_decimal(
                "115792089237316195423570985008687907853269984665640564039457584007913129639935"
            ),
            "f".repeat(64)
        );
        assert_eq!(block_at(1_000, 1_000), FIRST_BLOCK);
        assert_eq!(block_at(1_000, 1_005), FIRST_BLOCK + 2);
        assert_eq!(block_time(1_000, FIRST_BLOCK + 2), 1_004);
    }
}
