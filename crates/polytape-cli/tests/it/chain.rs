//! `polytape backfill --from-chain` and `polytape verify --chain` as a user runs them.

use std::time::Duration;

use polytape_sim::SimConfig;
use polytape_testkit::{TestDb, Watchdog, pipeline, wait_until};

use crate::daemon::{output, polytape, stdout};

/// A history loaded from the chain, then proven against it: every checked market-hour
/// verified but the one where a trade the chain never settled was slipped into the tape,
/// which `verify --chain` names, counts as unsettled and flags in `chain_unsettled`.
#[test]
fn verify_chain_proves_a_loaded_history_and_names_a_trade_never_settled() {
    let _w = Watchdog::new("verify --chain", Duration::from_secs(180));
    let db = TestDb::empty();
    let sim = pipeline::sim_with(SimConfig {
        chain_finality: 2,
        max_trades: Some(600),
        ..pipeline::sim_config(10, 100.0)
    });
    let cli = |args: &[&str]| {
        let mut c = polytape(&db, &sim);
        c.env("POLYTAPE_POLYGON_RPC_URL", sim.rpc_url()).args(args);
        let out = output(c);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out)
    };
    cli(&["sync-markets"]);
    // Every trade executed, its block finalized, past the load's margin (lag 10 s + 5 s) and
    // the 30 s a fill waits for its feed trade before it is compared.
    assert!(wait_until(Duration::from_secs(60), || sim
        .stats()
        .trades_generated
        >= 600));
    let last_ms = sim
        .executed_records()
        .iter()
        .map(|t| polytape_sim::data_api::block_time_s(t, Duration::ZERO) * 1000)
        .max()
        .expect("trades");
    assert!(wait_until(Duration::from_secs(60), || {
        polytape_sim::now_ms() > last_ms + 32_000
    }));
    let first = cli(&["backfill", "--from-chain", "--all", "--since", "30m"]);
    assert!(first.contains(" 0 mismatched"), "{first}");
    let again = cli(&["backfill", "--from-chain", "--all", "--since", "30m"]);
    assert!(again.contains(" 0 added"), "{again}");
    let stored = db.count("trades");
    assert!(stored >= 500, "{first}");
    // A trade the chain never settled, early in the run.
    let first_trade = sim.executed().into_iter().next().expect("a trade");
    let mut client = db.client();
    client
        .execute(
            "INSERT INTO trades (asset_id, market, price, size, side, traded_at,
                                 transaction_hash, received_at, source)
             SELECT $1, $2, 0.5, 1.234567, 'BUY',
                    'epoch'::timestamptz + $3::float8 * interval '1 millisecond',
                    '0x' || repeat('ab', 32), now(), 'feed'",
            &[
                &first_trade.asset_id,
                &first_trade.market,
                &((first_trade.timestamp_ms + 1_000) as f64),
            ],
        )
        .expect("a hand-made trade");
    let text = cli(&["verify", "--chain", "--since", "30m"]);
    let lines: Vec<&str> = text.lines().collect();
    let not_verified: Vec<&&str> = lines
        .iter()
        .filter(|l| l.ends_with("NOT VERIFIED"))
        .collect();
    assert_eq!(not_verified.len(), 1, "{text}");
    assert!(not_verified[0].contains("unsettled    1"), "{text}");
    let totals = lines.last().expect("a totals line");
    let numbers: Vec<u64> = totals
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    // chain: C fills, tape: T, added A, unsettled U, verified V/H market-hours
    let [chain, tape, added, unsettled, verified, hours] = numbers[..] else {
        panic!("{totals}");
    };
    assert!(totals.starts_with("chain: "), "{totals}");
    assert_eq!((tape, added, unsettled), (chain + 1, 0, 1), "{totals}");
    assert_eq!(verified + 1, hours, "{totals}");
    assert!(chain > 0, "{totals}");
    let flagged: i64 = client
        .query_one(
            "SELECT count(*) FROM chain_unsettled WHERE transaction_hash = '0x' || repeat('ab', 32)",
            &[],
        )
        .expect("flagged")
        .get(0);
    assert_eq!(flagged, 1);
    // Never deleted from the tape.
    assert_eq!(db.count("trades"), stored + 1);
}
