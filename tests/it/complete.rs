//! A complete tape: stored == executed, not only delivered. Holes are filled from the
//! simulator's Data API once settled; never a duplicate; each row's source right.

use std::time::Duration;

use polytape_testkit::pipeline;
use polytape_testkit::{TestDb, Watchdog, init_logs, wait_until};

/// Every socket dropped by the server (a reconnect within a second): the short hole each
/// leaves is filled, and the tape equals what the exchange executed.
#[test]
fn dropped_sockets_are_filled_from_the_data_api() {
    let _w = Watchdog::new("dropped_sockets_are_filled", Duration::from_secs(120));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(120, 600.0);
    let p = pipeline::start(&db, &sim, |c| {
        c.max_tokens_per_conn(100)
            .backfill_settle(Duration::from_secs(3))
    });
    p.wait_up(201);
    let from_ms = polytape_sim::now_ms();
    assert_eq!(sim.drop_sockets(), p.conns);
    assert!(wait_until(Duration::from_secs(30), || {
        let h = p.snapshot();
        h.gaps_recorded >= p.conns as u64 && h.connections_active == p.conns
    }));
    p.wait_more_trades(301);
    let to_ms = polytape_sim::now_ms();
    assert!(
        wait_until(Duration::from_secs(60), || {
            let h = p.snapshot();
            h.gaps_filled >= h.gaps_recorded && h.gaps_open == 0
        }),
        "{:?}",
        p.snapshot()
    );
    let (h, _) = p.stop();
    let report = pipeline::assert_stored_equals_executed(db.url(), &sim, from_ms, to_ms);
    eprintln!(
        "dropped sockets: executed {}, from the feed {}, filled {}, lost 0; {} gaps filled",
        report.executed, report.from_feed, report.filled, h.gaps_filled
    );
}

/// Every socket frozen, then replaced (a hole of a few seconds on every held token, which
/// the exchange kept trading through): after the settle, the backfill fills it, and the
/// tape equals what the exchange executed on the held markets.
#[test]
fn a_frozen_feed_is_filled_from_the_data_api() {
    let _w = Watchdog::new("a_frozen_feed_is_filled", Duration::from_secs(120));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(120, 300.0);
    let p = pipeline::start(&db, &sim, |c| {
        c.backfill_settle(Duration::from_secs(3)).data_api_page(50) // small pages: paging and window splitting run for real
    });
    p.wait_up(101);
    let from_ms = polytape_sim::now_ms();
    // The hole: frozen sockets deliver nothing until the listener replaces them.
    assert!(sim.freeze_open_sockets() > 0);
    assert!(wait_until(Duration::from_secs(30), || p
        .snapshot()
        .gaps_recorded
        >= p.conns as u64));
    p.wait_more_trades(301);
    let to_ms = polytape_sim::now_ms();
    // Settled and filled: every recorded gap.
    assert!(
        wait_until(Duration::from_secs(60), || {
            let h = p.snapshot();
            h.gaps_filled >= h.gaps_recorded && h.gaps_open == 0
        }),
        "{:?}",
        p.snapshot()
    );
    // The window checked ends before the fill: a socket lost later (a loaded machine) would
    // have a gap of its own, not yet settled.
    let (h, _) = p.stop();
    let report = pipeline::assert_stored_equals_executed(db.url(), &sim, from_ms, to_ms);
    assert!(report.filled > 0, "the hole was filled: {report:?}");
    assert!(h.trades_backfilled as usize >= report.filled, "{report:?}");
    eprintln!(
        "frozen feed: executed {}, stored from the feed {}, filled {}, lost 0; {} gaps filled, \
         {} Data API requests",
        report.executed,
        report.from_feed,
        report.filled,
        h.gaps_filled,
        sim.data_api_requests()
    );
}

/// Assets stalled on live sockets (they trade, the feed sends nothing, no socket is lost:
/// no gap, no counter): a reconciliation sweep finds their missing trades, fills them, takes
/// the assets for stalled and subscribes them afresh, which gets them delivering again.
#[test]
fn stalled_assets_are_found_filled_and_resubscribed() {
    let _w = Watchdog::new("stalled_assets_are_found", Duration::from_secs(120));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(60, 400.0);
    let p = pipeline::start(&db, &sim, |c| {
        c.backfill_settle(Duration::from_secs(2))
            .reconcile_interval(Duration::from_secs(2))
    });
    p.wait_up(101);
    // The sweeps start a little after the first socket is up (block times trail match
    // times): stall only once one has run.
    assert!(wait_until(Duration::from_secs(40), || sim
        .data_api_requests()
        > 0));
    let from_ms = polytape_sim::now_ms();
    let stalled = pipeline::stall_first_tokens(&sim, 3);
    assert!(
        wait_until(Duration::from_secs(40), || p.snapshot().stalls_repaired
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
    // Everything up to `to_ms` swept, then the check: settle (2 s) + block lag (≤ 5 s) + a
    // sweep interval (2 s) + a poll (1 s).
    let to_ms = polytape_sim::now_ms();
    let filled_before = p.snapshot().trades_backfilled;
    assert!(wait_until(Duration::from_secs(20), || {
        polytape_sim::now_ms() > to_ms + 11_000
    }));
    let (h, _) = p.stop();
    let report = pipeline::assert_stored_equals_executed(db.url(), &sim, from_ms, to_ms);
    assert!(report.filled > 0 && filled_before > 0, "{report:?}");
    assert_eq!(h.reconnections, 0, "no socket was lost");
    assert_eq!(h.gaps_recorded, 0, "a stall is not a socket loss");
    eprintln!(
        "stalled assets: {} stalled, {} repaired; executed {}, from the feed {}, filled {}, lost 0",
        stalled.len(),
        h.stalls_repaired,
        report.executed,
        report.from_feed,
        report.filled
    );
}

/// A Data API that pages by 20 rows whatever `limit` asks (it may cap lower than asked,
/// without saying so): `backfill::history` still pages to the end of every window, and the
/// tape equals what was executed. (Paging stopped at the first page shorter than the limit
/// asked: 20 of the window's trades, the gap taken for filled.)
#[test]
fn a_data_api_that_pages_by_fewer_rows_than_asked_is_read_to_the_end() {
    let _w = Watchdog::new("a_data_api_that_pages_by_fewer", Duration::from_secs(90));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim_with(polytape_sim::SimConfig {
        data_api_max_page: 20,
        data_api_rate_limit: 0,
        ..pipeline::sim_config(4, 100.0)
    });
    pipeline::load_markets(&db, &sim);
    let from_ms = polytape_sim::now_ms();
    // Twenty seconds of trades: history reads all but the last 12, whose blocks may still
    // be coming.
    assert!(wait_until(Duration::from_secs(30), || {
        polytape_sim::now_ms() > from_ms + 20_000
    }));
    let to_ms = polytape_sim::now_ms();
    let config = pipeline::config(&db, &sim)
        .to_builder()
        .data_api_page(50)
        .build()
        .expect("config");
    let markets = pipeline::held_market_ids(&sim);
    // history leaves the last 12 s to a later run: the window checked ends there.
    let filled = polytape::backfill::history(&config, &markets, from_ms, to_ms).expect("history");
    let report = pipeline::assert_stored_equals_executed(db.url(), &sim, from_ms, to_ms - 12_000);
    eprintln!("paged by 20: {report:?}, {filled:?}");
    assert!(report.executed > 100, "{report:?}");
    assert_eq!(report.filled, report.executed, "all from the Data API");
}

/// The Data API as it is now (`/v2/trades`: cursor paging, bounds ignored for a condition
/// query, raw-ratio prices) and as it was (`/trades` only, v2 answered with 404): a hole is
/// filled through each, the tape equal to what was executed, nothing twice.
#[test]
fn holes_are_filled_through_v2_and_through_v1_where_v2_is_absent() {
    let _w = Watchdog::new("holes_are_filled_through_v2", Duration::from_secs(150));
    init_logs();
    for v2 in [true, false] {
        let db = TestDb::new();
        let sim = pipeline::sim_with(polytape_sim::SimConfig {
            data_api_v2: v2,
            data_api_max_page: 30,
            data_api_rate_limit: 0,
            ..pipeline::sim_config(6, 80.0)
        });
        pipeline::load_markets(&db, &sim);
        let from_ms = polytape_sim::now_ms();
        assert!(wait_until(Duration::from_secs(40), || {
            polytape_sim::now_ms() > from_ms + 16_000
        }));
        let config = pipeline::config(&db, &sim)
            .to_builder()
            .data_api_page(50)
            .build()
            .expect("config");
        let markets = pipeline::held_market_ids(&sim);
        // The hole is the window's first 4 s; v2 walks back to it from the newest row.
        let hole_to = from_ms + 4_000;
        let filled =
            polytape::backfill::history(&config, &markets, from_ms, hole_to).expect("history");
        let report = pipeline::assert_stored_equals_executed(db.url(), &sim, from_ms, hole_to);
        eprintln!(
            "v2 {v2}: {report:?}, {filled:?}, {} v2 requests",
            sim.data_api_v2_requests()
        );
        assert!(report.executed > 50, "{report:?}");
        assert_eq!(
            report.filled, report.executed,
            "all from the Data API (v2 {v2})"
        );
        let v2_asked = sim.data_api_v2_requests();
        if v2 {
            // Pages of 30 from the newest row back past the hole: more than one.
            assert!(v2_asked > 1, "walked by cursor: {v2_asked}");
            assert_eq!(sim.data_api_requests(), v2_asked, "v1 never asked");
        } else {
            assert_eq!(v2_asked, 0);
            assert!(sim.data_api_requests() > 1, "v1 after a 404");
        }
        // Again: nothing twice.
        polytape::backfill::history(&config, &markets, from_ms, hole_to).expect("again");
        let again = pipeline::assert_stored_equals_executed(db.url(), &sim, from_ms, hole_to);
        assert_eq!(again.filled, report.filled);
    }
}

/// Blocks 40 s after their match (a congested chain): the sweeps list every feed trade again
/// by its block, long after it was stored, and find it by its hash whatever the time between
/// them: nothing is stored twice. (Looked up by time within 15 s of the window, each was
/// taken for missing and stored a second time.)
#[test]
fn blocks_long_after_their_match_are_never_stored_twice() {
    let _w = Watchdog::new("blocks_long_after_their_match", Duration::from_secs(150));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim_with(polytape_sim::SimConfig {
        settlement_lag: Duration::from_secs(40),
        ..pipeline::sim_config(40, 100.0)
    });
    let p = pipeline::start(&db, &sim, |c| {
        c.backfill_settle(Duration::from_secs(2))
            .reconcile_interval(Duration::from_secs(2))
            .settlement_lag(Duration::from_secs(60))
    });
    p.wait_up(50);
    let from_ms = polytape_sim::now_ms();
    // The first trades' blocks come 40 s later; sweeps read them from then on.
    let requests = sim.data_api_requests();
    assert!(wait_until(Duration::from_secs(90), || {
        polytape_sim::now_ms() > from_ms + 55_000 && sim.data_api_requests() > requests + 10
    }));
    let to_ms = polytape_sim::now_ms() - 2_000;
    let (h, _) = p.stop();
    let report = pipeline::assert_stored_equals_executed(db.url(), &sim, from_ms, to_ms);
    eprintln!(
        "settlement lag 40 s: executed {}, from the feed {}, filled {}, lost 0, duplicates 0; \
         {} Data API requests, {} backfilled, {} stalls",
        report.executed,
        report.from_feed,
        report.filled,
        sim.data_api_requests(),
        h.trades_backfilled,
        h.stalls_repaired
    );
    assert!(report.executed > 1000, "{report:?}");
    // (Trades matched before the start whose blocks fell after it are added: they belong to
    // the tape. Inside the window, the feed had everything.)
    assert_eq!(
        report.filled, 0,
        "nothing in the window was missing: {report:?}"
    );
}

/// Assets that stall as soon as they are subscribed, before any sweep has run: the sweeps
/// start at the listener's start, so the trades of the first seconds are filled too, and the
/// tape equals what was executed from the start. (The first sweep began 12 s after the first
/// socket was up: what stalled assets traded before then was lost, in no gap.)
#[test]
fn assets_that_stall_in_the_first_seconds_lose_nothing() {
    let _w = Watchdog::new("assets_that_stall_in_the_first", Duration::from_secs(120));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(60, 400.0);
    let p = pipeline::start(&db, &sim, |c| {
        c.backfill_settle(Duration::from_secs(2))
            .reconcile_interval(Duration::from_secs(2))
    });
    let started = p.snapshot().started_at.map_or(0, |t| t.timestamp_millis());
    let stalled: Vec<String> = pipeline::held_markets(&sim)
        .iter()
        .take(20)
        .flat_map(|m| m.token_ids.clone())
        .collect();
    p.wait(Duration::from_secs(30), "every connection up", |h| {
        h.connections_active == p.conns
    });
    for a in &stalled {
        assert!(sim.stall_asset(a, true));
    }
    let from_ms = polytape_sim::now_ms();
    // Every stalled asset's trades from then on are missing from the feed; the sweeps fill
    // them (and subscribe the assets afresh once past the start's grace).
    p.wait(Duration::from_secs(60), "the stalls repaired", |h| {
        h.stalls_repaired >= stalled.len() as u64
    });
    let to_ms = polytape_sim::now_ms();
    // Swept past to_ms: settle (2 s) + block lag (≤ 5 s) + a sweep interval (2 s) + a poll.
    assert!(wait_until(Duration::from_secs(30), || {
        polytape_sim::now_ms() > to_ms + 11_000
    }));
    let (h, _) = p.stop();
    let report = pipeline::assert_stored_equals_executed(db.url(), &sim, from_ms, to_ms);
    eprintln!(
        "stalled at the start ({} ms after the listener started): {} assets; executed {}, \
         from the feed {}, filled {}, lost 0; {} stalls repaired",
        from_ms - started,
        stalled.len(),
        report.executed,
        report.from_feed,
        report.filled,
        h.stalls_repaired
    );
    assert!(report.filled > 0, "{report:?}");
}

/// A gap is filled slice by slice: when the Data API fails part way, what was read is
/// stored, the gap says how far it got (`filled_to`, `filled_trades`) and why it stopped,
/// and the next try resumes there. Nothing twice, nothing lost. (Before, a failure
/// discarded everything the fill had read.)
#[test]
fn a_gap_fill_that_fails_part_way_keeps_its_progress() {
    let _w = Watchdog::new("a_gap_fill_that_fails_part_way", Duration::from_secs(150));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(60, 300.0);
    let p = pipeline::start(&db, &sim, |c| {
        c.backfill_settle(Duration::from_secs(2))
            .reconcile_interval(Duration::ZERO)
            .backfill_slice(Duration::from_secs(1))
    });
    p.wait_up(100);
    let from_ms = polytape_sim::now_ms();
    assert!(sim.freeze_open_sockets() > 0);
    p.wait(Duration::from_secs(30), "the hole recorded", |h| {
        h.gaps_recorded >= p.conns as u64
    });
    // Six slices read (three requests each: 20 markets a request; six seconds of blocks
    // from the gap's start, where its missing trades' blocks are), then the Data API fails
    // (400: not retried) with the rest of the window (the freeze and the settlement lag)
    // still to read.
    sim.fail_data_api_after(18, 1_000_000, 400);
    p.wait_more_trades(300);
    let to_ms = polytape_sim::now_ms();
    let progress = |db: &TestDb| -> (i64, i64) {
        let row = db
            .client()
            .query_one(
                "SELECT count(*) FILTER (WHERE fill_error IS NOT NULL AND filled_to > from_ts),
                        coalesce(sum(filled_trades), 0)
                 FROM gaps WHERE filled_at IS NULL",
                &[],
            )
            .expect("gaps");
        (row.get(0), row.get(1))
    };
    assert!(
        wait_until(Duration::from_secs(60), || progress(&db).0 >= 1),
        "a fill stopped part way, its progress kept: {:?}",
        progress(&db)
    );
    let (_, kept) = progress(&db);
    eprintln!("fill stopped part way with {kept} trades stored");
    assert!(kept > 0, "what was read before the failure is kept");
    // The service is back; the retry is brought forward (its backoff is a minute).
    sim.fail_data_api_after(0, 0, 0);
    db.client()
        .batch_execute("UPDATE gaps SET next_attempt_at = now() WHERE filled_at IS NULL")
        .expect("retry now");
    p.wait(Duration::from_secs(60), "every gap filled", |h| {
        h.gaps_filled >= h.gaps_recorded && h.gaps_open == 0
    });
    let (h, _) = p.stop();
    let report = pipeline::assert_stored_equals_executed(db.url(), &sim, from_ms, to_ms);
    eprintln!(
        "part-way fill: executed {}, from the feed {}, filled {} ({kept} before the failure), \
         lost 0, duplicates 0; {} gaps",
        report.executed, report.from_feed, report.filled, h.gaps_filled
    );
    assert!(report.filled > 0, "{report:?}");
}

/// A sweep that the Data API cannot answer for some markets records those as a gap (filled
/// later with its own retries) and goes on: the next sweeps still run, and the tape ends
/// complete. (Before, one failure failed the whole sweep, whose window then grew without
/// bound.)
#[test]
fn a_sweep_that_cannot_check_some_markets_records_them_as_a_gap() {
    let _w = Watchdog::new("a_sweep_that_cannot_check", Duration::from_secs(150));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(60, 300.0);
    let p = pipeline::start(&db, &sim, |c| {
        c.backfill_settle(Duration::from_secs(2))
            .reconcile_interval(Duration::from_secs(2))
    });
    p.wait_up(100);
    let from_ms = polytape_sim::now_ms();
    let requests = sim.data_api_requests();
    assert!(wait_until(Duration::from_secs(40), || sim
        .data_api_requests()
        > requests));
    // The next two requests fail: a sweep's first groups of markets.
    sim.fail_data_api_after(0, 2, 400);
    assert!(
        wait_until(Duration::from_secs(40), || {
            db.count("gaps WHERE reason LIKE 'reconcile: not checked%'") >= 1
        }),
        "the unchecked markets are a gap"
    );
    let after = sim.data_api_requests();
    assert!(
        wait_until(Duration::from_secs(40), || sim.data_api_requests()
            > after + 3),
        "the sweeps go on"
    );
    p.wait(Duration::from_secs(60), "every gap filled", |h| {
        h.gaps_open == 0 && h.gaps_filled >= h.gaps_recorded
    });
    let to_ms = polytape_sim::now_ms() - 15_000;
    let (h, _) = p.stop();
    let report = pipeline::assert_stored_equals_executed(db.url(), &sim, from_ms, to_ms);
    eprintln!(
        "a sweep with failing groups: {} gaps recorded and filled; executed {}, lost 0",
        h.gaps_filled, report.executed
    );
}
