//! History from the chain: a market's (or every market's) past fills, read from the
//! exchanges' logs across the 2026-04-28 migration (V1 events before block 84,902,353, V2
//! after) and added to the tape where it lacks them, by the one matching rule (idempotent
//! with every other source: a second run adds nothing).

use std::collections::HashMap;
use std::time::Instant;

use super::reader::{Window, block_at_or_before, of_markets, taker_legs};
use super::rpc::{Logs, Rpc};
use super::verify::{self, State};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::health::{Health, now_ms};
use crate::store::trades::{Source, TradeWriter};

/// How far behind the settlement lag a load stops: a live feed's trade of a later block may
/// still be on its way to the tape.
const FEED_MARGIN_MS: i64 = 5_000;

/// What a load read and added.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ChainLoad {
    /// Blocks read.
    pub blocks: u64,
    /// Fills (taker legs) of the markets asked for.
    pub fills: u64,
    /// Of those, the ones the tape lacked, now added as `chain`.
    pub added: u64,
    /// Fills whose transaction the tape holds on their token with other shares or USDC
    /// (left as they are, counted).
    pub mismatched: u64,
    /// JSON-RPC requests made.
    pub requests: u64,
    /// Seconds the load took.
    pub seconds: f64,
}

/// Loads the fills of `markets` (slugs or condition ids in the `markets` table; every market
/// there when `all`) settled from `from_ms` (Unix ms) to the newest finalized block that no
/// live feed trade can race (the settlement lag and 5 s back), through the writer's COPY
/// path as `chain`.
pub fn history(config: &Config, markets: &[String], all: bool, from_ms: i64) -> Result<ChainLoad> {
    let started = Instant::now();
    let url = config.polygon_rpc_url.clone().ok_or_else(|| {
        Error::config(
            "a chain load needs a Polygon endpoint (--polygon-rpc-url or POLYTAPE_POLYGON_RPC_URL)",
        )
    })?;
    let mut db = crate::store::connect(config)?;
    let rows = db.query(
        "SELECT condition_id, slug, token_ids FROM markets
         WHERE $2 OR condition_id = ANY($1) OR slug = ANY($1)",
        &[&markets, &all],
    )?;
    let mut tokens: HashMap<String, String> = HashMap::new();
    let mut known: Vec<String> = Vec::new();
    for r in &rows {
        let id: String = r.try_get(0)?;
        let slug: Option<String> = r.try_get(1)?;
        for t in r.try_get::<_, Vec<String>>(2)? {
            tokens.insert(t, id.clone());
        }
        known.push(id);
        known.extend(slug);
    }
    if let Some(m) = markets.iter().find(|m| !known.contains(m)) {
        return Err(Error::config(format!(
            "the market {m:?} is not in the markets table; run `polytape sync-markets`, or give \
             a condition id or slug it lists"
        )));
    }
    let health = Health::new();
    let mut rpc = Rpc::new(config, &url, health.clone());
    let mut writer = TradeWriter::new(config, health.clone()).with_source(Source::Chain);
    let finalized = rpc
        .block("finalized")?
        .ok_or_else(|| Error::data("polygon rpc: no finalized block"))?;
    let lag_ms = config.settlement_lag.as_millis() as i64;
    let last = block_at_or_before(
        &mut rpc,
        (now_ms() - lag_ms - FEED_MARGIN_MS).div_euclid(1000),
        finalized,
    )?;
    let mut at = block_at_or_before(&mut rpc, from_ms.div_euclid(1000) - 1, finalized)?;
    let mut window = Window::new();
    let mut load = ChainLoad::default();
    let first = at;
    while at < last {
        let to = window.end(at, last);
        let logs = match rpc.logs(at + 1, to)? {
            Logs::TooMuch(why) => {
                window.refused(at, to, &why)?;
                continue;
            }
            Logs::Found(logs) => logs,
        };
        window.answered(logs.len());
        let mut fills = of_markets(&taker_legs(&logs, &health), &tokens, &health);
        let blocks: Vec<u64> = fills.iter().map(|f| f.block).collect();
        let times = rpc.block_times(&blocks)?;
        for f in fills.iter_mut() {
            f.block_s = times.get(&f.block).copied().unwrap_or(0);
        }
        // Only fills from `from_ms` on (the first block may start a little before it).
        fills.retain(|f| f.block_s * 1000 >= from_ms);
        let outcome = verify::resolve(&mut db, &mut writer, &health, &fills, lag_ms)?;
        load.fills += fills.len() as u64;
        load.added += outcome.iter().filter(|o| o.0 == State::Added).count() as u64;
        load.mismatched += outcome.iter().filter(|o| o.0 == State::Mismatched).count() as u64;
        at = to;
    }
    load.blocks = at - first;
    load.requests = rpc.requests;
    load.seconds = started.elapsed().as_secs_f64();
    Ok(load)
}
