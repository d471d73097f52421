//! Polygon JSON-RPC over the HTTP client every service of polytape shares (one retry loop for
//! 429s, 5xx and transport errors, `Retry-After` honoured; one request budget), with the
//! answers the chain reader needs: blocks by tag or number, block times (cached, asked in
//! batches), and `eth_getLogs` that says when a provider found the window too wide.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::abi::{EXCHANGES, ORDER_FILLED_V1, ORDER_FILLED_V2};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::health::Health;
use crate::http::{Budget, RetryPolicy, agent, post_json_or_absent};

/// Longest wait a 429's `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Largest answer read: 10,000 logs are about 12 MB.
const BODY_LIMIT: u64 = 128 << 20;
/// Calls in one batch request (providers cap batches at 100 to 1,000).
const BATCH: usize = 100;
/// Block times kept; past it the cache starts again (the reader walks forward).
const TIME_CACHE: usize = 50_000;

/// A block as the reader needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) number: u64,
    /// Unix seconds.
    pub(crate) time_s: i64,
}

/// What `eth_getLogs` answered.
pub(crate) enum Logs {
    Found(Vec<Value>),
    /// The provider refuses this window (a range limit, more than its most results, or an
    /// answer larger than polytape reads): ask for less.
    TooMuch(String),
}

/// A JSON-RPC endpoint, its request budget and its cache of block times.
pub(crate) struct Rpc {
    agent: ureq::Agent,
    url: String,
    policy: RetryPolicy,
    budget: Budget,
    health: Health,
    times: HashMap<u64, i64>,
    next_id: u64,
    /// Requests made (each HTTP request once, a batch is one).
    pub(crate) requests: u64,
}

impl Rpc {
    pub(crate) fn new(config: &Config, url: &str, health: Health) -> Rpc {
        Rpc {
            agent: agent(config.gamma_timeout.max(Duration::from_secs(30))),
            url: url.to_owned(),
            policy: RetryPolicy::from_config(config, "polygon rpc", MAX_RETRY_AFTER, BODY_LIMIT),
            budget: Budget::new(config.chain_budget as usize, Duration::from_secs(10)),
            health,
            times: HashMap::new(),
            next_id: 1,
            requests: 0,
        }
    }

    /// POSTs one body and reads the JSON answer.
    fn post(&mut self, body: &Value) -> Result<Value> {
        self.budget.wait();
        self.requests += 1;
        self.health
            .chain()
            .rpc_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let text = post_json_or_absent(&self.agent, &self.url, &body.to_string(), &self.policy)?
            .ok_or_else(|| Error::http(format!("polygon rpc: {}: HTTP 404", self.url)))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::data(format!("polygon rpc: an answer that is not JSON ({e})")))
    }

    fn call_value(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let answer = self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method,
                                       "params": params}))?;
        result_of(&answer, method)
    }

    /// A block by tag (`latest`, `finalized`) or number; `None` when the node has none.
    pub(crate) fn block(&mut self, tag: &str) -> Result<Option<Block>> {
        let b = self.call_value("eth_getBlockByNumber", json!([tag, false]))?;
        if b.is_null() {
            return Ok(None);
        }
        let block = block_of(&b)?;
        self.remember(block);
        Ok(Some(block))
    }

    fn remember(&mut self, b: Block) {
        if self.times.len() >= TIME_CACHE {
            self.times.clear();
        }
        self.times.insert(b.number, b.time_s);
    }

    /// The times of `numbers` (Unix s), from the cache or asked in batches.
    pub(crate) fn block_times(&mut self, numbers: &[u64]) -> Result<HashMap<u64, i64>> {
        let mut wanted: Vec<u64> = numbers
            .iter()
            .copied()
            .filter(|n| !self.times.contains_key(n))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        for chunk in wanted.chunks(BATCH) {
            let calls: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    json!({"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber",
                           "params": [format!("0x{n:x}"), false]})
                })
                .collect();
            let answer = self.post(&Value::Array(calls))?;
            let Value::Array(answers) = answer else {
                return Err(Error::data("polygon rpc: a batch answered with no array"));
            };
            for a in &answers {
                let b = result_of(a, "eth_getBlockByNumber")?;
                if !b.is_null() {
                    let block = block_of(&b)?;
                    self.remember(block);
                }
            }
        }
        numbers
            .iter()
            .map(|n| {
                self.times.get(n).map(|t| (*n, *t)).ok_or_else(|| {
                    Error::data(format!(
                        "polygon rpc: block {n} has no time (not yet mined?)"
                    ))
                })
            })
            .collect()
    }

    /// The exchanges' `OrderFilled` logs (V1 and V2, all four contracts) of blocks
    /// `from..=to`.
    pub(crate) fn logs(&mut self, from: u64, to: u64) -> Result<Logs> {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "eth_getLogs", "params": [{
            "fromBlock": format!("0x{from:x}"),
            "toBlock": format!("0x{to:x}"),
            "address": EXCHANGES,
            "topics": [[ORDER_FILLED_V2, ORDER_FILLED_V1]],
        }]});
        let answer = match self.post(&body) {
            Ok(a) => a,
            // An answer past the body limit is a window too wide, not a failure.
            Err(e) if e.to_string().contains("reading body") => {
                return Ok(Logs::TooMuch(e.to_string()));
            }
            Err(e) => return Err(e),
        };
        if let Some(err) = answer.get("error") {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if is_too_much(code, &message) {
                return Ok(Logs::TooMuch(format!("{code}: {message}")));
            }
            return Err(Error::http(format!(
                "polygon rpc: eth_getLogs: {code}: {message}"
            )));
        }
        match answer.get("result") {
            Some(Value::Array(logs)) => Ok(Logs::Found(logs.clone())),
            _ => Err(Error::data("polygon rpc: eth_getLogs answered no array")),
        }
    }
}

/// Whether a provider's error says "ask for fewer blocks": the range or result-count caps
/// (-32005 "limit exceeded"; Alchemy's, Infura's and QuickNode's wordings).
fn is_too_much(code: i64, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    code == -32005
        || m.contains("more than")
        || m.contains("too large")
        || m.contains("too many")
        || m.contains("range")
        || m.contains("limit exceeded")
        || m.contains("response size")
}

fn result_of(answer: &Value, method: &str) -> Result<Value> {
    if let Some(err) = answer.get("error") {
        return Err(Error::http(format!("polygon rpc: {method}: {err}")));
    }
    answer
        .get("result")
        .cloned()
        .ok_or_else(|| Error::data(format!("polygon rpc: {method}: no result")))
}

/// A hex quantity (`0x1b4`).
pub(crate) fn quantity(v: Option<&Value>) -> Option<u64> {
    u64::from_str_radix(v?.as_str()?.strip_prefix("0x")?, 16).ok()
}

fn block_of(b: &Value) -> Result<Block> {
    match (quantity(b.get("number")), quantity(b.get("timestamp"))) {
        (Some(number), Some(t)) if t <= i64::MAX as u64 => Ok(Block {
            number,
            time_s: t as i64,
        }),
        _ => Err(Error::data(
            "polygon rpc: a block without a number or a timestamp",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_providers_caps_are_read_as_too_much() {
        assert!(is_too_much(
            -32005,
            "query returned more than 10000 results"
        ));
        assert!(is_too_much(
            -32602,
            "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range"
        ));
        assert!(is_too_much(-32000, "block range is too large"));
        assert!(!is_too_much(-32601, "the method eth_foo does not exist"));
        assert_eq!(quantity(Some(&json!("0x1b4"))), Some(436));
        assert_eq!(quantity(Some(&json!("1b4"))), None);
        assert!(block_of(&json!({"number": "0x1"})).is_err());
    }
}
