//! The listener end to end: simulator → sockets → channel → writer → PostgreSQL.

use std::time::{Duration, Instant};

use polytape::Listener;
use polytape::bench::{MarketRow, active_token_groups, upsert_markets};

use polytape_testkit::pipeline::{self, Running, assert_stored_equals_delivered};
use polytape_testkit::{TestDb, Watchdog, init_logs, wait_until};

fn row(cid: &str, tokens: &[&str], closed: bool) -> MarketRow {
    MarketRow {
        condition_id: cid.into(),
        gamma_id: None,
        question: None,
        slug: None,
        outcomes: tokens.iter().map(|_| "x".to_owned()).collect(),
        token_ids: tokens.iter().map(|t| t.to_string()).collect(),
        active: true,
        closed,
        accepting_orders: !closed,
        enable_order_book: true,
        neg_risk: false,
        end_date: None,
        version: Some("v1".into()),
    }
}

#[test]
fn active_tokens_are_flattened_and_deduplicated() {
    let _w = Watchdog::new(
        "active_tokens_are_flattened_and_deduplicated",
        Duration::from_secs(60),
    );
    let db = TestDb::new();
    let mut c = db.client();
    assert!(
        active_token_groups(&mut c).expect("query").is_empty(),
        "empty table, no tokens"
    );
    upsert_markets(
        &mut c,
        &[
            row("0xb", &["t3", "t4"], false),
            row("0xa", &["t1", "t2"], false),
            row("0xc", &["t2", "t5"], false),
            row("0xd", &["t8", "t9"], true),
        ],
    )
    .expect("upsert");
    let groups = active_token_groups(&mut c).expect("query");
    let as_str: Vec<Vec<&str>> = groups
        .iter()
        .map(|g| g.iter().map(String::as_str).collect())
        .collect();
    // Ordered by condition id; t2 once; the closed market left out.
    assert_eq!(as_str, vec![vec!["t1", "t2"], vec!["t3", "t4"], vec!["t5"]]);
}

#[test]
fn no_tokens_returns_at_once() {
    let _w = Watchdog::new("no_tokens_returns_at_once", Duration::from_secs(30));
    let db = TestDb::new();
    let config = polytape::Config::builder()
        .database_url(db.url())
        .ws_url("ws://127.0.0.1:9/ws/market")
        .build()
        .expect("a valid config");
    let listener = Listener::from_database(config).expect("listener");
    assert!(listener.chunks().is_empty());
    let handle = listener.handle();
    let started = Instant::now();
    let snapshot = listener.run().expect("run");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(snapshot.connections.is_empty(), "no connection was started");
    assert_eq!(snapshot.started_at, None, "nothing started");
    assert_eq!(
        handle.stop(),
        snapshot,
        "stop after run returns the same final health"
    );
}

#[test]
fn health_counts_what_happens() {
    let _w = Watchdog::new("health_counts_what_happens", Duration::from_secs(60));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(40, 200.0);
    pipeline::load_markets(&db, &sim);
    let listener = Listener::from_database(pipeline::config(&db, &sim)).expect("listener");
    let health = listener.health();
    let zero = health.snapshot();
    assert_eq!(
        (
            zero.trades_received,
            zero.trades_inserted,
            zero.batches_inserted,
            zero.queue_depth
        ),
        (0, 0, 0, 0)
    );
    assert!(
        zero.connections.is_empty()
            && zero.last_insert_ts.is_none()
            && zero.last_trade_ts.is_none()
    );
    let running = Running::start(listener);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let s = health.snapshot();
            s.trades_inserted > 0 && s.last_insert_ts.is_some()
        }),
        "trades were inserted: {:?}",
        health.snapshot()
    );
    let s = health.snapshot();
    assert!(s.trades_received >= s.trades_inserted);
    assert!(s.batches_inserted > 0 && s.messages_received > 0 && s.last_trade_ts.is_some());
    assert_eq!(s.connections_active, 1);
    assert_eq!(
        s.connections[0].tokens as usize,
        pipeline::open_tokens(&sim)
    );
    let (from_stop, from_run) = running.stop();
    assert_eq!(from_stop, from_run);
    assert_eq!(from_stop.queue_depth, 0, "drained");
    assert_eq!(
        from_stop.trades_received,
        from_stop.trades_inserted + from_stop.duplicates_skipped
    );
    assert_eq!(from_stop.connections_active, 0);
    assert_stored_equals_delivered(&db, &sim);
}

#[test]
fn queue_depth_reflects_queued_trades_while_the_database_is_away() {
    let _w = Watchdog::new(
        "queue_depth_reflects_queued_trades",
        Duration::from_secs(90),
    );
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(40, 300.0);
    pipeline::load_markets(&db, &sim);
    // A spool with little room: once it is full, trades wait in the channel (the readers
    // wait as they would without a spool), which is what the queue depth shows.
    let config = pipeline::config(&db, &sim)
        .to_builder()
        .spool_max_bytes(64 * 1024)
        .build()
        .expect("config");
    let listener = Listener::from_database(config).expect("listener");
    let health = listener.health();
    // Take the database away first, so the writer cannot store anything.
    db.set_reachable(false);
    let running = Running::start(listener);
    assert!(
        wait_until(Duration::from_secs(20), || health.snapshot().queue_depth
            >= 20),
        "trades queue up: {:?}",
        health.snapshot()
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            let s = health.snapshot();
            s.db_lost_since.is_some() && s.db_errors > 0
        }),
        "the writer noticed: {:?}",
        health.snapshot()
    );
    let s = health.snapshot();
    assert_eq!((s.trades_inserted, s.rows_rejected), (0, 0));
    db.set_reachable(true);
    assert!(wait_until(Duration::from_secs(20), || health
        .snapshot()
        .trades_inserted
        > 0));
    let (final_health, _) = running.stop();
    assert_eq!(final_health.queue_depth, 0);
    assert_stored_equals_delivered(&db, &sim);
}

/// At least 2,000 tokens over at least 5 connections, trades flowing; then every socket
/// fault in turn (all sockets dropped, malformed frames, all sockets frozen), each seen to
/// take effect and trades seen to flow again after it. At the end the table equals the
/// simulator's delivered set: nothing delivered is lost, nothing is stored twice.
/// With the book side off, a frame of book events alone is passed over unscanned; every
/// trade is still stored, and bad frames and unknown events are still counted.
#[test]
fn with_the_book_side_off_every_trade_is_stored_and_bad_frames_counted() {
    let _w = Watchdog::new(
        "with_the_book_side_off_every_trade_is_stored_and_bad_frames_counted",
        Duration::from_secs(90),
    );
    init_logs();
    let db = TestDb::new();
    // Trades come with their book events in one frame (which is scanned); a socket quiet
    // for 20 ms gets book events alone (which are passed over).
    let sim = pipeline::sim_with(polytape_sim::SimConfig {
        noise_per_trade: 20,
        idle_noise: Duration::from_millis(20),
        ..pipeline::sim_config(30, 40.0)
    });
    pipeline::load_markets(&db, &sim);
    let config = pipeline::config(&db, &sim)
        .to_builder()
        .book_snapshot_interval(Duration::ZERO)
        .build()
        .expect("a valid config");
    let listener = Listener::from_database(config).expect("listener");
    let health = listener.health();
    let running = Running::start(listener);
    assert!(wait_until(Duration::from_secs(30), || {
        health.snapshot().trades_inserted >= 200
    }));
    let before = health.snapshot();
    assert!(sim.send_malformed() > 0);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = health.snapshot();
            s.parse_errors > before.parse_errors && s.unknown_events > before.unknown_events
        }),
        "{:?}",
        health.snapshot()
    );
    let (stopped, _) = running.stop();
    assert_eq!(stopped.books.books_held, 0, "no book side");
    // The quiet sockets' book events: passed over, counted.
    assert!(
        stopped.frames_passed_over > 0 && stopped.messages_received > stopped.frames_passed_over,
        "{stopped:?}"
    );
    let n = assert_stored_equals_delivered(&db, &sim);
    assert!(n >= 200, "{n} trades");
}

#[test]
fn end_to_end_stored_equals_delivered() {
    let _w = Watchdog::new(
        "end_to_end_stored_equals_delivered",
        Duration::from_secs(180),
    );
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(1200, 1500.0);
    let open = pipeline::load_markets(&db, &sim);
    assert!(open * 2 >= 2000, "{open} open markets");
    let config = pipeline::config(&db, &sim)
        .to_builder()
        .max_tokens_per_conn(400)
        .build()
        .expect("a valid config");
    let listener = Listener::from_database(config).expect("listener");
    let chunks = listener.chunks();
    let n_conns = chunks.len();
    assert!(n_conns >= 5, "{n_conns} connections");
    let health = listener.health();
    let running = Running::start(listener);
    let all_up = || health.snapshot().connections_active == n_conns;
    assert!(wait_until(Duration::from_secs(20), all_up));
    let t0 = Instant::now();
    let start_count = health.snapshot().trades_inserted;
    let flowing = |more: u64| {
        let from = health.snapshot().trades_inserted;
        wait_until(Duration::from_secs(30), || {
            health.snapshot().trades_inserted >= from + more
        })
    };
    assert!(flowing(3000));
    let rate =
        (health.snapshot().trades_inserted - start_count) as f64 / t0.elapsed().as_secs_f64();
    eprintln!("end to end: {rate:.0} trades/s inserted over {n_conns} connections");

    // 1. Every socket dropped: each connection reconnects and resubscribes.
    let before = health.snapshot().reconnections;
    assert_eq!(sim.drop_sockets(), n_conns, "the sim dropped every socket");
    assert!(wait_until(Duration::from_secs(20), || {
        health.snapshot().reconnections >= before + n_conns as u64 && all_up()
    }));
    assert!(flowing(1000), "trades flow after the drop");

    // 2. Malformed frames on every socket: counted, nothing wrong stored.
    let errors = health.snapshot().parse_errors;
    assert!(sim.send_malformed() > 0);
    assert!(wait_until(Duration::from_secs(10), || {
        health.snapshot().parse_errors > errors
    }));
    assert!(flowing(1000), "trades flow after malformed frames");

    // 3. Every socket frozen (open, answering nothing): replaced after the stale timeout.
    let before = health.snapshot().reconnections;
    assert!(sim.freeze_open_sockets() > 0);
    assert!(wait_until(Duration::from_secs(30), || {
        health.snapshot().reconnections >= before + n_conns as u64 && all_up()
    }));
    assert!(flowing(1000), "trades flow after the freeze");

    let (final_health, _) = running.stop();
    let n = assert_stored_equals_delivered(&db, &sim);
    assert!(n >= 6000, "{n} trades");
    assert_eq!(final_health.rows_rejected, 0);
    // Two losses per connection (the drop, the freeze), each on record; start and stop
    // add none.
    assert_eq!(final_health.gaps_recorded, 2 * n_conns as u64);
    assert_eq!(db.count("gaps"), 2 * n_conns as i64);
}

#[test]
fn stop_writes_what_was_queued_and_ends_every_thread() {
    let _w = Watchdog::new("stop_writes_what_was_queued", Duration::from_secs(60));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(200, 3000.0);
    let p = pipeline::start(&db, &sim, |c| {
        c.max_tokens_per_conn(100)
            .batch_size(50_000)
            .batch_max_age(Duration::from_secs(30))
            // Held in one batch until the stop (not group commit: this is about the stop).
            .gather_to_max_age(true)
            .channel_capacity(100_000)
    });
    assert!(wait_until(Duration::from_secs(20), || p
        .snapshot()
        .trades_received
        >= 2000));
    assert_eq!(
        p.snapshot().trades_inserted,
        0,
        "nothing written before the stop"
    );
    let started = Instant::now();
    let (final_health, _) = p.stop();
    let took = started.elapsed();
    eprintln!(
        "stop took {} ms with {} trades queued",
        took.as_millis(),
        final_health.trades_received
    );
    assert!(
        final_health
            .connections
            .iter()
            .all(|c| c.state == polytape::ConnectionState::Stopped)
    );
    assert_eq!(final_health.trades_inserted, final_health.trades_received);
    assert_stored_equals_delivered(&db, &sim);
}

/// A simulator that closes any socket whose frame carries more than 100 asset ids: 500
/// tokens on one socket, then 200 more added live, and no socket is ever closed for it.
#[test]
fn no_frame_carries_more_than_100_asset_ids() {
    let _w = Watchdog::new("no_frame_carries_more_than_100", Duration::from_secs(60));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim_with(polytape_sim::SimConfig {
        max_ids_per_frame: 100,
        ..pipeline::sim_config(400, 300.0)
    });
    pipeline::load_markets(&db, &sim);
    let mut groups = polytape::bench::active_token_groups(&mut db.client()).expect("groups");
    let later: Vec<Vec<String>> = groups.split_off(250);
    let config = pipeline::config(&db, &sim);
    let listener = Listener::new(config, groups.clone()).expect("listener");
    let handle = listener.handle();
    let health = listener.health();
    let running = Running::start(listener);
    assert!(wait_until(Duration::from_secs(20), || {
        let h = health.snapshot();
        h.connections_active == 1 && h.trades_inserted > 100
    }));
    assert_eq!(sim.stats().subscribed_assets, 500);
    // More tokens, live: operation frames, 100 ids at most each (on a new socket too).
    let more: Vec<Vec<String>> = later.into_iter().take(100).collect();
    let expected = 500 + more.iter().map(Vec::len).sum::<usize>();
    assert!(expected > 600, "{expected}");
    let mut all = groups;
    all.extend(more);
    handle.set_markets(all);
    assert!(
        wait_until(Duration::from_secs(20), || {
            sim.stats().subscribed_assets == expected
        }),
        "{} of {expected}",
        sim.stats().subscribed_assets
    );
    let (h, _) = running.stop();
    assert_eq!(sim.stats().frames_refused, 0, "no frame over the limit");
    assert_eq!(h.reconnections, 0);
    assert_stored_equals_delivered(&db, &sim);
}

/// Planned recycling is make before break: across 20 recycles under load, every delivered
/// trade is stored once, no gap is written and no reconnection counted. (With break before
/// make, each recycle would be a reconnection with a gap, and the trades of its second lost.)
#[test]
fn recycling_sockets_loses_no_trade_and_writes_no_gap() {
    let _w = Watchdog::new("recycling_sockets", Duration::from_secs(120));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim_with(polytape_sim::SimConfig {
        noise_per_trade: 2,
        ..pipeline::sim_config(60, 400.0)
    });
    let p = pipeline::start(&db, &sim, |c| {
        c.max_tokens_per_conn(40)
            .recycle_interval(Duration::from_millis(400))
    });
    assert!(wait_until(Duration::from_secs(20), || p
        .snapshot()
        .connections_active
        == 3));
    // From here on every executed trade of a held token must be stored: stored == delivered
    // alone would not see trades lost while no socket was subscribed.
    let from_ms = polytape::bench::now_ms() + 500;
    assert!(
        wait_until(Duration::from_secs(60), || p.snapshot().sockets_recycled
            >= 20),
        "{:?}",
        p.snapshot()
    );
    let to_ms = polytape::bench::now_ms() - 500;
    let (h, _) = p.stop();
    let stats = sim.stats();
    eprintln!(
        "recycles {}, sockets opened {}, trades delivered {}, repeats in overlaps {}, \
         duplicates skipped {}",
        h.sockets_recycled,
        stats.sockets_opened,
        stats.trades_delivered,
        stats.repeat_deliveries,
        h.duplicates_skipped
    );
    assert_eq!(h.reconnections, 0, "a recycle is not a reconnection");
    assert_eq!(
        db.count("gaps"),
        0,
        "a recycle loses nothing, so records no gap"
    );
    assert!(stats.trades_delivered > 1000);
    assert_stored_equals_delivered(&db, &sim);
    let tape = pipeline::assert_stored_equals_executed(db.url(), &sim, from_ms, to_ms);
    eprintln!("recycling: {tape:?}");
    assert!(tape.executed > 500, "{tape:?}");
    assert_eq!(tape.filled, 0, "all from the feed: {tape:?}");
}

/// A replacement that cannot be opened (every upgrade answered 429) costs nothing: the old
/// socket stays, no gap, no reconnection; the recycle succeeds once upgrades are let through.
#[test]
fn a_failed_recycle_keeps_the_old_socket() {
    let _w = Watchdog::new("a_failed_recycle", Duration::from_secs(90));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(20, 200.0);
    let p = pipeline::start(&db, &sim, |c| c.recycle_interval(Duration::from_secs(1)));
    assert!(wait_until(Duration::from_secs(20), || p
        .snapshot()
        .connections_active
        == 1));
    sim.refuse_upgrades(true);
    assert!(
        wait_until(Duration::from_secs(30), || sim.stats().upgrades_rejected
            >= 2),
        "the recycle was tried: {:?}",
        sim.stats()
    );
    let during = p.snapshot();
    assert_eq!(during.sockets_recycled, 0);
    assert_eq!(during.connections_active, 1, "the old socket is kept");
    sim.refuse_upgrades(false);
    assert!(
        wait_until(Duration::from_secs(30), || p.snapshot().sockets_recycled
            >= 1),
        "recycled once upgrades go through: {:?}",
        p.snapshot()
    );
    let (h, _) = p.stop();
    assert_eq!(h.reconnections, 0);
    assert_eq!(db.count("gaps"), 0);
    assert_stored_equals_delivered(&db, &sim);
}

/// `new_market` announcements: each market is fetched from Gamma, stored, and subscribed
/// within seconds (no re-sync runs here), only if it is in this listener's shard, and on a
/// new connection when the running ones are full.
#[test]
fn announced_new_markets_are_subscribed_within_seconds_in_their_shard() {
    use polytape::sync::{Shard, open_token_groups};
    let _w = Watchdog::new("announced_new_markets", Duration::from_secs(90));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(30, 300.0);
    pipeline::load_markets(&db, &sim);
    let shard = Shard { index: 0, count: 2 };
    let groups = open_token_groups(&mut db.client(), Some(shard)).expect("groups");
    let held: usize = groups.iter().map(Vec::len).sum();
    // The running connection is full: a new market needs a new one.
    let config = pipeline::config(&db, &sim)
        .to_builder()
        .max_tokens_per_conn(held)
        .build()
        .expect("config");
    let listener = Listener::new(config, groups)
        .expect("listener")
        .follow_markets(Some(shard), None);
    let health = listener.health();
    let running = Running::start(listener);
    // Subscribed on the simulator's side (custom features on), not only sent.
    assert!(wait_until(Duration::from_secs(20), || sim
        .stats()
        .subscribed_assets
        == held));
    let added: Vec<String> = (0..10).map(|_| sim.add_market().condition_id).collect();
    let announced = Instant::now();
    let stored = |db: &TestDb| -> i64 {
        db.client()
            .query_one(
                "SELECT count(*) FROM markets WHERE condition_id = ANY($1)",
                &[&added],
            )
            .expect("count")
            .get(0)
    };
    assert!(
        wait_until(Duration::from_secs(20), || stored(&db) == 10),
        "every announced market stored: {}",
        stored(&db)
    );
    let expected: usize = open_token_groups(&mut db.client(), Some(shard))
        .expect("groups")
        .iter()
        .map(Vec::len)
        .sum();
    let in_shard = (expected - held) / 2;
    assert!(
        in_shard > 0 && in_shard < 10,
        "the seed puts some markets in each shard: {in_shard}"
    );
    assert!(
        wait_until(Duration::from_secs(20), || sim.stats().subscribed_assets
            == expected),
        "subscribed {} of {expected}",
        sim.stats().subscribed_assets
    );
    eprintln!(
        "10 markets announced, {in_shard} in this shard: stored and subscribed in {} ms",
        announced.elapsed().as_millis()
    );
    let h = health.snapshot();
    assert_eq!(
        h.connections.len(),
        2,
        "a second connection for the newcomers"
    );
    assert!(h.connections.iter().all(|c| c.tokens as usize <= held));
    // Trades of the newcomers are stored.
    let newcomer_trades = || -> i64 {
        db.client()
            .query_one(
                "SELECT count(*) FROM trades WHERE market = ANY($1)",
                &[&added],
            )
            .expect("count")
            .get(0)
    };
    assert!(wait_until(Duration::from_secs(20), || newcomer_trades() > 0));
    let (h, _) = running.stop();
    assert_eq!(h.reconnections, 0);
    assert_eq!(sim.stats().frames_refused, 0);
    assert_stored_equals_delivered(&db, &sim);
}
