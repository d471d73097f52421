//! polytape's `OrderFilled` decoder against the simulator's chain: every executed trade is
//! one taker leg, decoded to its side, shares, USDC, token and price exactly.

use std::collections::HashMap;
use std::time::Duration;

use polytape::chain::{NotAFill, decode};
use polytape_sim::SimConfig;
use polytape_testkit::{Watchdog, init_logs, pipeline, wait_until};

#[test]
fn the_simulators_chain_decodes_to_what_it_executed() {
    init_logs();
    let _w = Watchdog::new("chain: decode", Duration::from_secs(60));
    let sim = pipeline::sim_with(SimConfig {
        chain_finality: 2,
        ..pipeline::sim_config(8, 60.0)
    });
    // Trades settle in 2 s blocks, finalized two blocks later.
    let finalized_trades = |sim: &polytape_sim::Sim| {
        let f = sim.stats().chain_finalized;
        sim.executed_records()
            .iter()
            .filter(|t| {
                sim.chain_block_at(polytape_sim::data_api::block_time_s(t, Duration::ZERO)) <= f
            })
            .count()
    };
    assert!(wait_until(Duration::from_secs(40), || finalized_trades(
        &sim
    ) >= 100));
    let stats = sim.stats();
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
        "params": [{"fromBlock": format!("0x{:x}", polytape_sim::chain::FIRST_BLOCK),
                    "toBlock": format!("0x{:x}", stats.chain_finalized)}]});
    let text = ureq::post(&sim.rpc_url())
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("rpc")
        .body_mut()
        .read_to_string()
        .expect("body");
    let answer: serde_json::Value = serde_json::from_str(&text).expect("json");
    let logs = answer["result"].as_array().expect("logs");
    let mut taker: HashMap<String, polytape::chain::Fill> = HashMap::new();
    let mut makers = 0;
    for l in logs {
        let f = match decode(l) {
            Ok(f) => f,
            Err(NotAFill::Other) => continue,
            Err(NotAFill::Malformed(why)) => panic!("a log of ours that does not decode: {why}"),
        };
        if f.is_taker_leg() {
            assert!(
                taker.insert(f.transaction_hash.clone(), f).is_none(),
                "one a trade"
            );
        } else {
            makers += 1;
        }
    }
    let markets = sim.markets();
    let settled: Vec<_> = sim
        .executed_records()
        .into_iter()
        .filter(|t| {
            sim.chain_block_at(polytape_sim::data_api::block_time_s(t, Duration::ZERO))
                <= stats.chain_finalized
        })
        .collect();
    assert!(
        settled.len() >= 50,
        "{} settled of {stats:?}",
        settled.len()
    );
    assert_eq!(taker.len(), settled.len(), "every settled trade, once");
    assert_eq!(makers, taker.len(), "a maker leg beside each taker leg");
    for t in settled {
        let f = &taker[&t.settlement_hash()];
        let m = &markets[t.market as usize];
        assert_eq!(f.token_id, m.token_ids[t.outcome as usize]);
        assert_eq!(f.buy, t.buy);
        assert_eq!(
            f.shares,
            u128::from(polytape_sim::frames::TradeRecord::size_micro_of(t.seq))
        );
        // The chain's price, USDC / shares to six decimals, is the trade's (a tick of 0.0001
        // or coarser, shares of at least one).
        assert_eq!(
            f.price().map(|p| polytape::Decimal::canonical(&p)),
            Some(polytape::Decimal::canonical(&t.price())),
            "{t:?}"
        );
        let neg = f.exchange == polytape::chain::abi::EXCHANGES[1];
        assert_eq!(
            neg, m.neg_risk,
            "NegRisk markets settle on the NegRisk exchange"
        );
    }
}
