//! Minute price bars against the simulator's ground truth: the midpoint path of each minute
//! and the trades executed in it.

use std::collections::HashMap;
use std::time::Duration;

use polytape::book::{Price, Size};
use polytape_sim::SimConfig;
use polytape_testkit::pipeline;
use polytape_testkit::{TestDb, Watchdog, init_logs};

fn twice(text: Option<String>) -> Option<u32> {
    text.map(|t| {
        let p = Price::parse(&t).unwrap_or_else(|| panic!("exact midpoint {t}"));
        (p.units() * 2) as u32
    })
}

#[test]
fn live_bars_follow_the_true_midpoint_and_count_what_was_executed() {
    init_logs();
    let _w = Watchdog::new("prices: live bars", Duration::from_secs(150));
    let db = TestDb::new();
    let sim = pipeline::sim_with(SimConfig {
        noise_per_trade: 10,
        ..pipeline::sim_config(10, 30.0)
    });
    let p = pipeline::start(&db, &sim, |c| {
        c.book_snapshot_interval(Duration::from_secs(5))
    });
    p.wait_up(1);
    // The first minute boundary after the start makes the first bars final.
    p.wait(
        Duration::from_secs(100),
        "bars of a whole minute stored",
        |h| h.books.price_bars_written >= 10 && h.books.newest_price_bar_ts.is_some(),
    );
    let (_, health) = p.stop();
    // The minute the stop cut short is stored as far as it went; the truth goes on.
    let stopped = polytape_sim::now_ms();
    let mut c = db.client();
    // When each token's first book came: its first bar opens there, not at the minute.
    let first_book: HashMap<String, i64> = c
        .query(
            "SELECT asset_id, (extract(epoch FROM min(taken_at)) * 1000)::bigint
             FROM book_snapshots GROUP BY 1",
            &[],
        )
        .expect("snapshots")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // Windows without a trusted book (a frame the simulator could not hand a slow reader
    // under load is a lost delta): a bar there is only as good as what was trusted.
    let blind: Vec<(String, i64, i64)> = c
        .query(
            "SELECT asset_id, (extract(epoch FROM blind_from) * 1000)::bigint,
                    (extract(epoch FROM taken_at) * 1000)::bigint
             FROM book_snapshots WHERE blind_from IS NOT NULL",
            &[],
        )
        .expect("blind windows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let bars = c
        .query(
            "SELECT asset_id, (extract(epoch FROM minute) * 1000)::bigint, open::text,
                    high::text, low::text, close::text, trades, volume::text, source
             FROM price_bars ORDER BY minute, asset_id",
            &[],
        )
        .expect("price_bars");
    assert!(bars.len() >= 10, "{health:?}");
    let delivered = sim.delivered();
    let mut checked = 0;
    for b in &bars {
        let (asset, minute): (String, i64) = (b.get(0), b.get(1));
        assert_eq!(b.get::<_, String>(8), "live");
        if minute + 60_000 > stopped {
            continue;
        }
        if blind
            .iter()
            .any(|(a, from, to)| *a == asset && *from < minute + 60_000 && *to >= minute)
        {
            continue;
        }
        let stored = (
            twice(b.get(2)),
            twice(b.get(3)),
            twice(b.get(4)),
            twice(b.get(5)),
        );
        match first_book.get(&asset) {
            // The book came after the minute (a late book: its token traded first): no
            // trusted book priced it, so the bar has its trades and no prices.
            None => assert_eq!(stored, (None, None, None, None), "{asset} at {minute}"),
            Some(t) if *t >= minute + 60_000 => {
                assert_eq!(stored, (None, None, None, None), "{asset} at {minute}")
            }
            Some(t) => {
                let from = (t + 1).max(minute);
                let truth = sim
                    .midpoint_bar(&asset, from, minute + 60_000)
                    .expect("a book the sim knows");
                assert_eq!(stored, truth, "{asset} at {minute}: open, high, low, close");
            }
        }
        // Every trade delivered in that minute, counted once: stored == delivered (the
        // tape's own test holds stored == executed; here the socket path is what counts).
        let mine: Vec<_> = delivered
            .iter()
            .filter(|t| {
                t.asset_id == asset && t.timestamp_ms >= minute && t.timestamp_ms < minute + 60_000
            })
            .collect();
        assert_eq!(
            b.get::<_, i32>(6) as usize,
            mine.len(),
            "{asset} at {minute}: trades"
        );
        let volume: u64 = mine
            .iter()
            .map(|t| Size::parse(&t.size).expect("size").units())
            .sum();
        let stored_volume = Size::parse(&b.get::<_, String>(7))
            .expect("exact volume")
            .units();
        assert_eq!(stored_volume, volume, "{asset} at {minute}: volume");
        checked += 1;
    }
    assert!(checked >= 8, "{checked} bars checked of {}", bars.len());
    // A bar for every token-minute with a trade, its trade fields equal to the tape's
    // (grouped here in the test's own SQL, not the writer's).
    let missing: Vec<(String, String, i64, Option<i64>)> = c
        .query(
            "SELECT t.asset_id, t.m::text, t.n, b.trades::bigint
             FROM (SELECT asset_id, date_trunc('minute', traded_at) AS m, count(*) AS n,
                          sum(size) AS v
                   FROM trades GROUP BY 1, 2) t
             LEFT JOIN price_bars b ON b.asset_id = t.asset_id AND b.minute = t.m
             WHERE b.trades IS DISTINCT FROM t.n OR b.volume IS DISTINCT FROM t.v",
            &[],
        )
        .expect("bars vs tape")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert!(
        missing.is_empty(),
        "token-minutes whose bar is not the tape's: {missing:?}"
    );
    let (traded, unpriced): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE close IS NULL AND open IS NULL)
                 FROM price_bars WHERE trades > 0",
                &[],
            )
            .expect("bar counts");
        (r.get(0), r.get(1))
    };
    eprintln!(
        "bars: {} rows, {checked} checked against the true midpoint, {traded} token-minutes \
         with trades (each == the tape), {unpriced} of them without a trusted book",
        bars.len()
    );
    // The live feed's untidiness was there: trades of tokens whose book had not come yet
    // (late books), counted in their bars like every other.
    let before_book = delivered
        .iter()
        .filter(|t| {
            first_book
                .get(&t.asset_id)
                .is_none_or(|b| t.timestamp_ms < *b)
        })
        .count();
    assert!(before_book > 0, "no trade came before its token's book");
    let dupes: i64 = c
        .query_one(
            "SELECT count(*) FROM (SELECT asset_id, minute FROM price_bars GROUP BY 1, 2
             HAVING count(*) > 1) d",
            &[],
        )
        .expect("dupes")
        .get(0);
    assert_eq!(dupes, 0);
}

/// Minutes the feed was blind to are filled from CLOB `/prices-history`: the close is the
/// true midpoint at the minute's end, `source = 'history'`, and a second fill changes
/// nothing.
#[test]
fn blind_minutes_are_filled_from_the_price_history_once() {
    init_logs();
    let _w = Watchdog::new("prices: history fill", Duration::from_secs(90));
    let db = TestDb::new();
    // The exchange trades a little, with nobody listening, then its books stand still.
    let sim = pipeline::sim_with(SimConfig {
        noise_per_trade: 10,
        max_trades: Some(200),
        ..pipeline::sim_config(5, 200.0)
    });
    pipeline::load_markets(&db, &sim);
    let started = polytape_sim::now_ms();
    assert!(polytape_testkit::wait_until(
        Duration::from_secs(30),
        || { sim.stats().trades_generated >= 200 }
    ));
    let tokens: Vec<String> = sim
        .markets()
        .iter()
        .filter(|m| m.is_open())
        .flat_map(|m| m.token_ids.to_vec())
        .collect();
    let config = pipeline::config(&db, &sim);
    let (from, to) = (started - 120_000, polytape_sim::now_ms());
    let made = polytape::prices::fill_history(&config, &tokens, from, to).expect("filled");
    assert!(
        made >= tokens.len() as u64,
        "a bar a token at least: {made}"
    );
    let mut c = db.client();
    let rows = c
        .query(
            "SELECT asset_id, (extract(epoch FROM minute) * 1000)::bigint, close::text,
                    open IS NULL AND high IS NULL AND low IS NULL AND best_bid IS NULL
                    AND best_ask IS NULL, source
             FROM price_bars",
            &[],
        )
        .expect("price_bars");
    assert_eq!(rows.len() as u64, made);
    for r in &rows {
        let (asset, minute): (String, i64) = (r.get(0), r.get(1));
        // The service stamps a point when it sampled it, seconds into its minute: the bar
        // is the minute's.
        assert_eq!(
            minute % 60_000,
            0,
            "{asset}: a bar on its minute, not at {minute}"
        );
        assert_eq!(r.get::<_, String>(4), "history");
        assert!(
            r.get::<_, bool>(3),
            "only what the endpoint gives: its p, as the close"
        );
        let truth = sim
            .midpoint_bar(&asset, minute, minute + 60_000)
            .expect("known");
        assert_eq!(twice(r.get(2)), truth.3, "{asset} at {minute}: the close");
    }
    // Again: nothing changes, nothing is added.
    assert_eq!(
        polytape::prices::fill_history(&config, &tokens, from, to).expect("again"),
        0
    );
    assert_eq!(db.count("price_bars") as usize, rows.len());
    // One token whose history the service refuses does not cost the others theirs: they
    // are filled, it is named (before: the first failure abandoned every token after it).
    c.batch_execute("DELETE FROM price_bar").expect("clear");
    let bad = tokens[0].clone();
    sim.fail_price_history_of(Some(&bad));
    let err = polytape::prices::fill_history(&config, &tokens, from, to)
        .expect_err("a token without history is said");
    assert!(err.to_string().contains(&bad), "{err}");
    let per_token: Vec<(String, i64)> = c
        .query("SELECT asset_id, count(*) FROM price_bars GROUP BY 1", &[])
        .expect("bars")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        per_token.len(),
        tokens.len() - 1,
        "every other token: {per_token:?}"
    );
    assert!(per_token.iter().all(|(a, _)| *a != bad));
}
