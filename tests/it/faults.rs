//! The listener under the live feed's known failures, and a database that goes away. After
//! each, the trades table must equal the simulator's delivered set exactly.

use std::time::{Duration, Instant};

use polytape::Listener;

use polytape_testkit::db::PrivateCluster;
use polytape_testkit::pipeline::{self, Running, assert_stored_equals_delivered};
use polytape_testkit::{TestDb, Watchdog, init_logs, wait_until};

/// Waits until `n` more trades than now are inserted.
fn wait_for_more_trades(health: &polytape::bench::Health, n: u64) {
    let start = health.snapshot().trades_inserted;
    assert!(
        wait_until(Duration::from_secs(30), || health
            .snapshot()
            .trades_inserted
            >= start + n),
        "trades flow again: {:?}",
        health.snapshot()
    );
}

#[test]
fn dropped_sockets_reconnect_and_resubscribe() {
    let _w = Watchdog::new(
        "dropped_sockets_reconnect_and_resubscribe",
        Duration::from_secs(90),
    );
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(300, 1000.0);
    let p = pipeline::start(&db, &sim, |c| c.max_tokens_per_conn(200));
    let conns = p.conns;
    p.wait_more_trades(500);
    assert_eq!(sim.drop_sockets(), conns);
    p.wait(Duration::from_secs(20), "every socket back", |s| {
        s.reconnections >= conns as u64 && s.connections_active == conns
    });
    assert!(
        wait_until(Duration::from_secs(10), || {
            sim.stats().subscribed_assets == pipeline::open_tokens(&sim)
        }),
        "every token resubscribed: {:?}",
        sim.stats()
    );
    p.wait_more_trades(500);
    let (h, _) = p.stop();
    assert!(h.last_reconnect_ts.is_some());
    assert!(h.connections.iter().all(|c| c.reconnects >= 1));
    assert_stored_equals_delivered(&db, &sim);
    // Each loss is on record: which tokens, from when to when.
    assert_eq!(h.gaps_recorded, conns as u64);
    let rows = db
        .client()
        .query(
            "SELECT connection, from_ts <= to_ts, to_ts - from_ts < interval '10 seconds',
                    cardinality(asset_ids), reason FROM gaps ORDER BY connection",
            &[],
        )
        .expect("gaps");
    assert_eq!(rows.len(), conns);
    let tokens: i32 = rows.iter().map(|r| r.get::<_, i32>(3)).sum();
    assert_eq!(tokens as usize, pipeline::open_tokens(&sim));
    for r in &rows {
        assert!(
            r.get::<_, bool>(1) && r.get::<_, bool>(2),
            "a short, ordered window"
        );
        assert!(!r.get::<_, String>(4).is_empty());
    }
}

#[test]
fn a_frozen_socket_is_replaced_within_the_stale_timeout() {
    let _w = Watchdog::new("a_frozen_socket_is_replaced", Duration::from_secs(90));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(60, 300.0);
    pipeline::load_markets(&db, &sim);
    let config = pipeline::config(&db, &sim);
    // pipeline::config's stale timeout.
    let stale = Duration::from_secs(3);
    let listener = Listener::from_database(config).expect("listener");
    let health = listener.health();
    let running = Running::start(listener);
    wait_for_more_trades(&health, 100);
    // Frozen: PONG still answered, no data. Sockets opened afterwards work.
    let frozen_at = Instant::now();
    assert_eq!(sim.freeze_open_sockets(), 1);
    assert!(wait_until(stale + Duration::from_secs(5), || health
        .snapshot()
        .reconnections
        >= 1));
    let replaced_after = frozen_at.elapsed();
    eprintln!(
        "frozen socket replaced after {} ms (stale_timeout {} ms)",
        replaced_after.as_millis(),
        stale.as_millis()
    );
    assert!(replaced_after >= stale, "not before the stale timeout");
    wait_for_more_trades(&health, 100);
    running.stop();
    assert_stored_equals_delivered(&db, &sim);
}

#[test]
fn malformed_and_oversized_frames_are_counted_and_nothing_wrong_is_stored() {
    let _w = Watchdog::new("malformed_and_oversized_frames", Duration::from_secs(90));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(200, 500.0);
    pipeline::load_markets(&db, &sim);
    let config = pipeline::config(&db, &sim)
        .to_builder()
        .max_tokens_per_conn(200)
        .max_message_size(256 * 1024)
        .build()
        .expect("a valid config");
    let listener = Listener::from_database(config).expect("listener");
    let conns = listener.chunks().len() as u64;
    let health = listener.health();
    let running = Running::start(listener);
    wait_for_more_trades(&health, 200);
    assert_eq!(sim.send_malformed() as u64, conns);
    // Per socket: 10 bad text frames or refused trades, 1 binary frame; 1 unknown event.
    assert!(
        wait_until(Duration::from_secs(10), || health.snapshot().parse_errors
            >= 11 * conns),
        "{:?}",
        health.snapshot()
    );
    let s = health.snapshot();
    assert_eq!(s.parse_errors, 11 * conns);
    assert_eq!(s.invalid_trades, 7 * conns);
    assert_eq!(s.unknown_events, conns);
    assert_eq!(s.reconnections, 0, "bad frames do not cost the socket");
    assert_eq!(sim.send_oversized(300 * 1024) as u64, conns);
    assert!(wait_until(Duration::from_secs(10), || health
        .snapshot()
        .oversized_frames
        == conns));
    assert!(wait_until(Duration::from_secs(10), || health
        .snapshot()
        .reconnections
        >= conns));
    wait_for_more_trades(&health, 200);
    let (h, _) = running.stop();
    assert_eq!(h.rows_rejected, 0);
    assert_stored_equals_delivered(&db, &sim);
}

#[test]
fn upgrades_answered_429_are_retried_until_every_socket_is_open() {
    let _w = Watchdog::new("upgrades_answered_429", Duration::from_secs(90));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(300, 50.0);
    sim.set_upgrades_per_sec(2);
    let p = pipeline::start(&db, &sim, |c| c.max_tokens_per_conn(100));
    assert!(
        wait_until(Duration::from_secs(30), || p.snapshot().connections_active
            == p.conns),
        "{:?}",
        p.snapshot()
    );
    assert!(sim.stats().upgrades_rejected > 0, "the burst was throttled");
    p.stop();
    assert_stored_equals_delivered(&db, &sim);
}

#[test]
fn a_postgresql_restart_mid_run_loses_nothing() {
    let _w = Watchdog::new(
        "a_postgresql_restart_mid_run_loses_nothing",
        Duration::from_secs(120),
    );
    init_logs();
    let Some(cluster) = PrivateCluster::start() else {
        panic!("initdb is needed for this test (PostgreSQL server binaries)");
    };
    let url = cluster.database_url();
    let sim = pipeline::sim(100, 500.0);
    {
        let rows: Vec<_> = sim
            .markets()
            .iter()
            .filter(|m| m.version != "v3")
            .map(pipeline::market_row)
            .collect();
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        polytape::bench::upsert_markets(&mut c, &rows).expect("markets");
    }
    let config = pipeline::config_for(&url, &sim)
        .to_builder()
        .stale_timeout(Duration::from_secs(30))
        .build()
        .expect("a valid config");
    let listener = Listener::from_database(config).expect("listener");
    let health = listener.health();
    let running = Running::start(listener);
    wait_for_more_trades(&health, 300);
    cluster.stop();
    assert!(wait_until(Duration::from_secs(10), || health
        .snapshot()
        .db_lost_since
        .is_some()));
    // Trades keep arriving while the server is down; they wait in the channel.
    let received = health.snapshot().trades_received;
    assert!(wait_until(Duration::from_secs(10), || health
        .snapshot()
        .trades_received
        > received + 300));
    cluster.start_again();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let s = health.snapshot();
            s.db_lost_since.is_none() && s.queue_depth < 100
        }),
        "{:?}",
        health.snapshot()
    );
    let (h, _) = running.stop();
    assert!(h.db_errors > 0);
    assert_eq!(h.rows_rejected, 0);
    pipeline::assert_stored_at_equals_delivered(&url, &sim);
}

/// Tokens still without a socket when the listener stops get their gap written before it
/// returns (it would otherwise be written only at a resubscription that never comes).
#[test]
fn a_socket_still_lost_at_the_stop_is_a_gap() {
    let _w = Watchdog::new("a_socket_still_lost_at_the_stop", Duration::from_secs(60));
    init_logs();
    let db = TestDb::new();
    let mut sim = pipeline::sim(60, 300.0);
    pipeline::load_markets(&db, &sim);
    let listener = Listener::from_database(pipeline::config(&db, &sim)).expect("listener");
    let conns = listener.chunks().len();
    let health = listener.health();
    let running = Running::start(listener);
    wait_for_more_trades(&health, 100);
    // The feed goes away for good: every socket is lost and none comes back.
    sim.shutdown();
    assert!(wait_until(Duration::from_secs(20), || {
        let h = health.snapshot();
        h.connections_active == 0 && h.reconnections >= conns as u64
    }));
    let (h, _) = running.stop();
    let at_stop: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM gaps WHERE reason LIKE '%until the stop%'",
            &[],
        )
        .expect("gaps")
        .get(0);
    assert_eq!(at_stop, conns as i64, "one gap per lost connection: {h:?}");
}

/// A connection thread that panics is started again with its tokens: the time they had no
/// socket is a gap, health counts the restart, trades flow again, and the stop still ends.
#[test]
fn a_connection_thread_that_panics_is_restarted_with_its_tokens() {
    let _w = Watchdog::new("a_connection_thread_that_panics", Duration::from_secs(60));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(60, 300.0);
    pipeline::load_markets(&db, &sim);
    let listener = Listener::from_database(pipeline::config(&db, &sim)).expect("listener");
    let conns = listener.chunks().len();
    let handle = listener.handle();
    let health = listener.health();
    let running = Running::start(listener);
    wait_for_more_trades(&health, 100);
    handle.crash_connection(0);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let h = health.snapshot();
            h.connections_restarted == 1 && h.connections_active == conns && h.gaps_recorded >= 1
        }),
        "{:?}",
        health.snapshot()
    );
    wait_for_more_trades(&health, 100);
    let (h, _) = running.stop();
    assert_eq!(h.connections_restarted, 1);
    assert_eq!(
        h.connections.len(),
        conns,
        "the restarted connection replaced the old entry"
    );
    let gaps: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM gaps
             WHERE connection = 0 AND reason = 'connection thread ended unexpectedly'",
            &[],
        )
        .expect("gaps")
        .get(0);
    assert_eq!(gaps, 1);
    pipeline::assert_missing_within_gaps(db.url(), &sim, Duration::from_secs(2));
}

/// Quiet is not frozen: a feed with no data at all for five stale timeouts keeps its
/// sockets (each silence is probed, and a book answers), with no gap and no reconnect.
#[test]
fn a_quiet_feed_keeps_its_sockets_and_writes_no_gap() {
    let _w = Watchdog::new("a_quiet_feed_keeps_its_sockets", Duration::from_secs(60));
    init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim_with(polytape_sim::SimConfig {
        idle_noise: Duration::from_secs(3600),
        ..pipeline::sim_config(300, 0.0)
    });
    let p = pipeline::start(&db, &sim, |c| {
        c.max_tokens_per_conn(200)
            // Room for a loaded machine to answer a probe.
            .probe_timeout(Duration::from_secs(3))
    });
    assert!(wait_until(Duration::from_secs(20), || p
        .snapshot()
        .connections_active
        == p.conns));
    // Five stale timeouts (3 s each) of silence.
    let quiet_until = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < quiet_until {
        let h = p.snapshot();
        assert_eq!(h.reconnections, 0, "a quiet socket is kept: {h:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (h, _) = p.stop();
    assert_eq!((h.reconnections, h.gaps_recorded), (0, 0));
    assert_eq!(db.count("gaps"), 0, "no false gap");
    assert!(
        h.messages_received > 0,
        "the probes were answered with books"
    );
}
