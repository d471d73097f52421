//! polytape's `OrderFilled` decoder against the simulator's chain: every executed trade is
//! one taker leg, decoded to its side, shares, USDC, token and price exactly.

use std::collections::HashMap;
use std::time::Duration;

use polytape::chain::{NotAFill, decode};
use polytape_sim::SimConfig;
use polytape_testkit::{TestDb, Watchdog, init_logs, pipeline, wait_until};

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

/// The tape proven equal to the chain, every fault on: the Data API silently drops 2% of
/// fills, the feed is frozen for seconds (a hole the Data API fills, short of what it
/// drops), the chain reorgs above `finalized`, the provider caps ranges at 20 blocks and
/// rate-limits, and the RPC goes down for a while. After settling: every executed trade
/// once (compared with the simulator's own list, by asset and size), the dropped ones added
/// from the chain, every checked market-hour verified with chain fills == tape fills, nothing
/// flagged unsettled, and no block read twice.
#[test]
fn the_tape_equals_the_chain_with_the_data_api_dropping_fills_and_every_fault_on() {
    init_logs();
    let _w = Watchdog::new("chain: tape == chain", Duration::from_secs(300));
    let db = TestDb::new();
    let sim = pipeline::sim_with(SimConfig {
        data_api_drop: 0.02,
        chain_finality: 3,
        rpc_max_range: 20,
        rpc_rate_limit: 400,
        max_trades: Some(2_500),
        ..pipeline::sim_config(30, 80.0)
    });
    let p = pipeline::start(&db, &sim, |c| {
        c.backfill_settle(Duration::from_secs(3))
            .polygon_rpc_url(Some(sim.rpc_url()))
    });
    p.wait_up(200);
    // A hole: every socket frozen past the stale timeout, then replaced.
    sim.freeze(true);
    std::thread::sleep(Duration::from_secs(5));
    sim.freeze(false);
    sim.set_reorg(true);
    sim.set_rpc_down(true);
    assert!(wait_until(Duration::from_secs(30), || p
        .snapshot()
        .chain
        .chain_rpc_errors
        > 0));
    sim.set_rpc_down(false);
    // Everything executed, every gap filled, every fill read, compared and counted.
    assert!(wait_until(Duration::from_secs(120), || sim
        .stats()
        .trades_generated
        >= 2_500));
    sim.set_reorg(false);
    let last_ms = sim
        .executed()
        .iter()
        .map(|t| t.timestamp_ms)
        .max()
        .expect("trades");
    let mut client = postgres::Client::connect(db.url(), postgres::NoTls).expect("connect");
    let checked_past = |client: &mut postgres::Client| {
        client
            .query_opt(
                "SELECT (extract(epoch FROM checked_to) * 1000)::bigint FROM chain_cursor",
                &[],
            )
            .expect("cursor")
            .map(|r| r.get::<_, i64>(0))
            .is_some_and(|ms| ms > last_ms)
    };
    assert!(
        wait_until(Duration::from_secs(150), || checked_past(&mut client)
            && p.snapshot().gaps_open == 0),
        "{:?}",
        p.snapshot().chain
    );
    let (h, _) = p.stop();
    let first_ms: i64 = client
        .query_one(
            "SELECT (extract(epoch FROM first_time) * 1000)::bigint FROM chain_cursor",
            &[],
        )
        .expect("cursor")
        .get(0);
    let report = pipeline::assert_stored_equals_executed(db.url(), &sim, first_ms, last_ms);
    let dropped = sim
        .executed_records()
        .iter()
        .filter(|t| polytape_sim::data_api::dropped_by_data_api(t, 0.02))
        .count();
    eprintln!(
        "chain: executed {}, feed {}, data api {}, chain {}; dropped by the Data API {dropped}; {:?}",
        report.executed, report.from_feed, report.filled, report.from_chain, h.chain
    );
    assert!(
        report.from_chain > 0,
        "the Data API's drops in the hole are found on the chain only"
    );
    assert_eq!(h.chain.chain_fills_added as usize, report.from_chain);
    assert_eq!(h.chain.chain_unsettled, 0);
    assert_eq!(h.chain.chain_mismatched, 0);
    // Every checked market-hour verified, chain fills == tape fills, nothing flagged.
    let rows = client
        .query(
            "SELECT market, hour::text, chain_fills, tape_fills, verified FROM chain_checks",
            &[],
        )
        .expect("checks");
    assert!(!rows.is_empty());
    for r in &rows {
        let (chain, tape, ok): (i32, i32, bool) = (r.get(2), r.get(3), r.get(4));
        assert!(
            ok && chain == tape,
            "{:?} {:?}: chain {chain} tape {tape}",
            r.get::<_, String>(0),
            r.get::<_, String>(1)
        );
    }
    let chain_total: i64 = client
        .query_one(
            "SELECT coalesce(sum(chain_fills), 0)::bigint FROM chain_checks",
            &[],
        )
        .expect("sum")
        .get(0);
    assert!(chain_total as usize >= report.executed / 2, "{chain_total}");
    let unsettled: i64 = client
        .query_one("SELECT count(*) FROM chain_unsettled", &[])
        .expect("count")
        .get(0);
    assert_eq!(unsettled, 0);
    // A restart resumes at the cursor: it reads on, and no block twice.
    let cursor_before = h.chain.chain_cursor_block;
    let p = pipeline::start(&db, &sim, |c| {
        c.backfill_settle(Duration::from_secs(3))
            .polygon_rpc_url(Some(sim.rpc_url()))
    });
    assert!(wait_until(Duration::from_secs(60), || p
        .snapshot()
        .chain
        .chain_cursor_block
        >= cursor_before + 5));
    p.stop();
    // No block read twice.
    let mut ranges = sim.rpc_log_ranges();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        assert!(
            w[0].1 < w[1].0,
            "blocks read twice: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
}

/// History from the chain: every market's past, read from blocks on both sides of the CLOB
/// V2 migration (V1 events on the V1 contracts, then V2), equals what the simulator executed
/// (by asset and size, with price and side; compared with the simulator's own list); one
/// market first, then `--all`, which adds only the rest; a third run adds nothing.
#[test]
fn a_markets_whole_history_loads_from_the_chain_across_the_migration() {
    use std::collections::{HashMap, HashSet};
    init_logs();
    let _w = Watchdog::new("chain: history", Duration::from_secs(180));
    let sim = pipeline::sim_with(SimConfig {
        chain_finality: 2,
        chain_migration_block: polytape_sim::chain::migration_after(6),
        max_trades: Some(3_000),
        ..pipeline::sim_config(12, 300.0)
    });
    let db = TestDb::new();
    pipeline::load_markets(&db, &sim);
    let config = pipeline::config(&db, &sim)
        .to_builder()
        .polygon_rpc_url(Some(sim.rpc_url()))
        .build()
        .expect("config");
    polytape::store::migrate(&config).expect("migrate");
    let start_ms = polytape_sim::now_ms() - 3_600_000;
    assert!(wait_until(Duration::from_secs(60), || sim
        .stats()
        .trades_generated
        >= 3_000));
    // Every block settled, finalized, and older than the load's margin (lag 10 s + 5 s).
    let records = sim.executed_records();
    let last_block = records
        .iter()
        .map(|t| sim.chain_block_at(polytape_sim::data_api::block_time_s(t, Duration::ZERO)))
        .max()
        .expect("trades");
    let last_block_ms = records
        .iter()
        .map(|t| polytape_sim::data_api::block_time_s(t, Duration::ZERO) * 1000)
        .max()
        .expect("trades");
    assert!(wait_until(Duration::from_secs(60), || {
        sim.stats().chain_finalized > last_block && polytape_sim::now_ms() > last_block_ms + 17_000
    }));
    let v1 = records
        .iter()
        .filter(|t| {
            sim.chain_block_at(polytape_sim::data_api::block_time_s(t, Duration::ZERO))
                < polytape_sim::chain::migration_after(6)
        })
        .count();
    assert!(
        v1 > 0 && v1 < records.len(),
        "{v1} of {} before the migration",
        records.len()
    );
    let mut client = postgres::Client::connect(db.url(), postgres::NoTls).expect("connect");
    let held: HashMap<String, String> = client
        .query("SELECT unnest(token_ids), slug FROM markets", &[])
        .expect("markets")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let executed: HashMap<(String, String), (String, String)> = sim
        .executed()
        .into_iter()
        .filter(|t| held.contains_key(&t.asset_id))
        .map(|t| {
            let c = polytape::Decimal::canonical;
            (
                (t.asset_id.clone(), c(&t.size)),
                (c(&t.price), t.side.clone()),
            )
        })
        .collect();
    let stored = |client: &mut postgres::Client| {
        let mut out: HashMap<(String, String), (String, String)> = HashMap::new();
        for r in client
            .query(
                "SELECT asset_id, size::text, price::text, side, source, transaction_hash
                 FROM trades",
                &[],
            )
            .expect("trades")
        {
            let c = polytape::Decimal::canonical;
            assert_eq!(r.get::<_, String>(4), "chain");
            assert!(r.get::<_, Option<String>>(5).is_some());
            let key = (r.get::<_, String>(0), c(&r.get::<_, String>(1)));
            let value = (c(&r.get::<_, String>(2)), r.get::<_, String>(3));
            assert!(out.insert(key.clone(), value).is_none(), "twice: {key:?}");
        }
        out
    };
    // One market.
    let (asset, _) = executed.keys().next().expect("a trade").clone();
    let slug = held[&asset].clone();
    let one = polytape::chain::history(&config, std::slice::from_ref(&slug), false, start_ms)
        .expect("one market's history");
    let of_market: HashSet<&String> = held
        .iter()
        .filter(|(_, s)| **s == slug)
        .map(|(t, _)| t)
        .collect();
    let expected_one: HashMap<_, _> = executed
        .iter()
        .filter(|((a, _), _)| of_market.contains(a))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(stored(&mut client), expected_one);
    assert_eq!(one.added as usize, expected_one.len());
    // Every market: the rest.
    let all = polytape::chain::history(&config, &[], true, start_ms).expect("all history");
    assert_eq!(
        stored(&mut client),
        executed,
        "the tape == what was executed"
    );
    assert_eq!(all.fills as usize, executed.len());
    assert_eq!(all.added as usize, executed.len() - expected_one.len());
    // Idempotent.
    let again = polytape::chain::history(&config, &[], true, start_ms).expect("again");
    assert_eq!((again.fills, again.added), (all.fills, 0));
    eprintln!(
        "chain history: {} fills ({v1} before the migration) in {:.2} s ({:.0} fills/s), {} \
         requests ({:.1} per 1,000 fills), {} blocks",
        all.fills,
        all.seconds,
        all.fills as f64 / all.seconds,
        all.requests,
        all.requests as f64 * 1000.0 / all.fills as f64,
        all.blocks
    );
}

/// A stalled asset with the chain on: the chain reader adds the trades the stalled socket
/// missed within a minute of their blocks, long before a reconciliation sweep's window
/// settles; the sweep still takes those rows for a stall and subscribes the asset afresh
/// (without that, the chain's additions hid the stall and the asset stayed silent).
#[test]
fn a_stall_the_chain_filled_first_is_still_repaired() {
    init_logs();
    let _w = Watchdog::new("chain: stall", Duration::from_secs(240));
    let db = TestDb::new();
    let sim = pipeline::sim_with(SimConfig {
        chain_finality: 2,
        ..pipeline::sim_config(40, 200.0)
    });
    let p = pipeline::start(&db, &sim, |c| {
        c.backfill_settle(Duration::from_secs(60))
            .reconcile_interval(Duration::from_secs(2))
            .polygon_rpc_url(Some(sim.rpc_url()))
    });
    p.wait_up(101);
    let stalled = pipeline::stall_first_tokens(&sim, 3);
    // The chain adds what the stalled sockets missed first …
    assert!(
        wait_until(Duration::from_secs(90), || p
            .snapshot()
            .chain
            .chain_fills_added
            > 0),
        "{:?}",
        p.snapshot().chain
    );
    assert_eq!(p.snapshot().stalls_repaired, 0, "before any sweep saw them");
    // … and a sweep still repairs the stall.
    assert!(
        wait_until(Duration::from_secs(90), || p.snapshot().stalls_repaired
            >= stalled.len() as u64),
        "{:?}",
        p.snapshot()
    );
    // Delivering again after the fresh subscription.
    assert!(pipeline::delivering_again(
        &sim,
        &stalled,
        polytape_sim::now_ms()
    ));
    let (h, _) = p.stop();
    assert_eq!(h.gaps_recorded, 0, "a stall is not a socket loss");
    eprintln!(
        "stall with the chain on: {} added from the chain, {} stalls repaired",
        h.chain.chain_fills_added, h.stalls_repaired
    );
}
