//! The simulated chain against the simulator's own ground truth, read with a decoder written
//! here (not polytape's): every executed trade is one taker leg in its block, with its
//! settlement hash, side, shares and USDC; the faults answer as providers do.

use std::collections::HashMap;
use std::time::Duration;

use polytape_sim::chain::{EXCHANGE, FIRST_BLOCK, NEG_RISK_EXCHANGE, ORDER_FILLED};
use polytape_sim::frames::TradeRecord;
use polytape_sim::{Sim, SimConfig};
use serde_json::{Value, json};

use polytape_testkit::{Watchdog, pipeline, wait_until};

fn rpc(sim: &Sim, body: &Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&sim.rpc_url())
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("rpc");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn call(sim: &Sim, method: &str, params: Value) -> Value {
    let (status, v) = rpc(
        sim,
        &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
    );
    assert_eq!(status, 200, "{v}");
    v
}

fn quantity(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().expect("hex").trim_start_matches("0x"), 16).expect("hex")
}

/// (side word, token word, maker amount, taker amount) of a log's data, by hand.
fn words(data: &str) -> Vec<u128> {
    let d = data.trim_start_matches("0x");
    assert_eq!(d.len(), 7 * 64, "seven words");
    [0usize, 2, 3]
        .iter()
        .map(|i| u128::from_str_radix(&d[i * 64 + 32..i * 64 + 64], 16).expect("word"))
        .collect()
}

#[test]
fn every_executed_trade_is_one_taker_leg_in_its_block() {
    let _w = Watchdog::new("chain: taker legs", Duration::from_secs(60));
    let sim = pipeline::sim_with(SimConfig {
        data_api_drop: 0.1,
        ..pipeline::sim_config(6, 80.0)
    });
    // Enough trades whose block has come (a trade settles 0-4 s after its match).
    assert!(wait_until(Duration::from_secs(30), || sim
        .stats()
        .chain_fills
        >= 500));
    assert_eq!(call(&sim, "eth_chainId", json!([]))["result"], "0x89");
    // The block before the head: every trade settled in it was executed before this call.
    let head = quantity(&call(&sim, "eth_blockNumber", json!([]))["result"]) - 1;
    let block = call(&sim, "eth_getBlockByNumber", json!(["finalized", false]));
    let finalized = quantity(&block["result"]["number"]);
    assert!(
        finalized + 33 >= head && finalized + 30 <= head,
        "{finalized} {head}"
    );
    let logs = call(
        &sim,
        "eth_getLogs",
        json!([{"fromBlock": format!("0x{FIRST_BLOCK:x}"), "toBlock": format!("0x{head:x}"),
                "address": [EXCHANGE, NEG_RISK_EXCHANGE], "topics": [[ORDER_FILLED]]}]),
    );
    let logs = logs["result"].as_array().expect("logs").clone();
    // Taker legs: the taker topic is the exchange itself.
    let mut taker_legs: HashMap<String, (bool, u128, u128)> = HashMap::new();
    for l in &logs {
        let exchange = l["address"].as_str().expect("address").to_ascii_lowercase();
        let taker = l["topics"][3].as_str().expect("taker");
        if !taker.ends_with(&exchange[2..]) {
            continue;
        }
        let w = words(l["data"].as_str().expect("data"));
        let buy = w[0] == 0;
        let (usdc, shares) = if buy { (w[1], w[2]) } else { (w[2], w[1]) };
        let tx = l["transactionHash"].as_str().expect("tx").to_owned();
        assert!(
            taker_legs.insert(tx, (buy, shares, usdc)).is_none(),
            "one taker leg a trade"
        );
    }
    let executed: Vec<TradeRecord> = sim.executed_records();
    let settled: Vec<&TradeRecord> = executed
        .iter()
        .filter(|t| {
            sim.chain_block_at(polytape_sim::data_api::block_time_s(t, Duration::ZERO)) <= head
        })
        .collect();
    assert!(settled.len() >= 100, "{}", settled.len());
    assert_eq!(
        taker_legs.len(),
        settled.len(),
        "one taker leg per executed trade"
    );
    for t in settled {
        let (buy, shares, usdc) = taker_legs[&t.settlement_hash()];
        assert_eq!(buy, t.buy);
        assert_eq!(shares, u128::from(TradeRecord::size_micro_of(t.seq)));
        assert_eq!(usdc, (shares * u128::from(t.price_bp) + 5_000) / 10_000);
    }
    assert!(
        logs.len() >= 2 * taker_legs.len(),
        "a maker leg beside each"
    );
    // The Data API leaves a tenth out; the chain has every one.
    let dropped = executed
        .iter()
        .filter(|t| polytape_sim::data_api::dropped_by_data_api(t, 0.1))
        .count();
    assert!(
        dropped > 0 && dropped < executed.len() / 4,
        "{dropped} of {}",
        executed.len()
    );
}

#[test]
fn the_chain_answers_faults_as_providers_do() {
    let _w = Watchdog::new("chain: faults", Duration::from_secs(60));
    let sim = pipeline::sim(4, 50.0);
    assert!(wait_until(Duration::from_secs(20), || sim
        .stats()
        .trades_generated
        >= 100));
    let range = |from: u64, to: u64| {
        json!({"jsonrpc": "2.0", "id": 7, "method": "eth_getLogs",
               "params": [{"fromBlock": format!("0x{from:x}"), "toBlock": format!("0x{to:x}")}]})
    };
    sim.set_rpc_max_range(3);
    let (_, v) = rpc(&sim, &range(FIRST_BLOCK, FIRST_BLOCK + 10));
    assert_eq!(v["error"]["code"], -32005, "{}", v["error"]);
    let (_, v) = rpc(&sim, &range(FIRST_BLOCK, FIRST_BLOCK + 2));
    assert!(v["result"].is_array(), "{}", v["error"]);
    sim.set_rpc_max_range(0);
    // A batch is answered as a batch.
    let (_, v) = rpc(
        &sim,
        &json!([{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"},
                                   {"jsonrpc": "2.0", "id": 2, "method": "eth_nope"}]),
    );
    assert_eq!(v[0]["result"], "0x89");
    assert_eq!(v[1]["error"]["code"], -32601);
    // A reorg above finalized moves the newest blocks' logs a block, never a finalized one's.
    let head = quantity(&call(&sim, "eth_blockNumber", json!([]))["result"]);
    let all = |sim: &Sim| -> Vec<(String, u64)> {
        call(
            sim,
            "eth_getLogs",
            json!([{"fromBlock": format!("0x{FIRST_BLOCK:x}"), "toBlock": format!("0x{head:x}")}]),
        )["result"]
            .as_array()
            .expect("logs")
            .iter()
            .map(|l| {
                (
                    l["transactionHash"].as_str().unwrap_or_default().to_owned(),
                    quantity(&l["blockNumber"]),
                )
            })
            .collect()
    };
    let before = all(&sim);
    sim.set_reorg(true);
    let during = all(&sim);
    sim.set_reorg(false);
    assert_ne!(before, during, "the unfinalized blocks moved");
    let finalized = head.saturating_sub(32);
    let stable = |v: &[(String, u64)]| -> Vec<(String, u64)> {
        v.iter().filter(|(_, b)| *b <= finalized).cloned().collect()
    };
    assert_eq!(
        stable(&before),
        stable(&during),
        "finalized blocks never change"
    );
    // The RPC down: 503.
    sim.set_rpc_down(true);
    let (status, _) = rpc(&sim, &range(FIRST_BLOCK, FIRST_BLOCK));
    assert_eq!(status, 503);
    sim.set_rpc_down(false);
}
