//! The resolution tracker against the simulator's closed markets and a real database.

use std::collections::HashMap;
use std::time::Duration;

use polytape::resolution::ResolutionTracker;
use polytape_sim::universe::SimResolution;

use polytape_testkit::pipeline;
use polytape_testkit::{TestDb, Watchdog, wait_until};

#[test]
fn a_round_records_winners_and_splits_and_nothing_else() {
    let _w = Watchdog::new(
        "a_round_records_winners_and_splits",
        Duration::from_secs(60),
    );
    let db = TestDb::new();
    let sim = pipeline::sim(1200, 0.0);
    pipeline::load_markets(&db, &sim);
    let closed: Vec<_> = sim
        .markets()
        .into_iter()
        .filter(|m| m.closed && m.version != "v3")
        .collect();
    let count = |f: fn(&SimResolution) -> bool| {
        closed
            .iter()
            .filter(|m| m.resolution.as_ref().is_some_and(f))
            .count()
    };
    let winners = count(|r| matches!(r, SimResolution::Winner(_)));
    let splits = count(|r| matches!(r, SimResolution::Split));
    let others = closed.len() - winners - splits;
    assert!(
        winners > 10 && splits > 5 && others > 10,
        "{winners} {splits} {others}"
    );

    let tracker = ResolutionTracker::new(&pipeline::config(&db, &sim));
    let first = tracker.round().expect("round");
    assert_eq!(first.asked, closed.len());
    assert_eq!(
        (first.winners, first.splits, first.unresolved),
        (winners, splits, others)
    );

    let mut client = db.client();
    let rows: HashMap<String, (String, Option<String>, Option<String>)> = client
        .query(
            "SELECT condition_id, kind, winning_token_id, winning_outcome FROM resolutions",
            &[],
        )
        .expect("select")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    assert_eq!(rows.len(), winners + splits);
    for m in &closed {
        let row = rows.get(&m.condition_id);
        match m.resolution {
            Some(SimResolution::Winner(i)) => assert_eq!(
                row,
                Some(&(
                    "winner".to_owned(),
                    Some(m.token_ids[i].clone()),
                    Some(m.outcomes[i].clone())
                )),
                "{}",
                m.version
            ),
            Some(SimResolution::Split) => assert_eq!(row.map(|r| r.0.as_str()), Some("split")),
            _ => assert!(
                row.is_none(),
                "proposed, disputed or malformed: no resolution"
            ),
        }
    }
    // Twice changes nothing: the unresolved ones back off (asked again in 10 min, 20, …, at
    // most a day), and the report says how many wait, and why.
    let second = tracker.round().expect("round");
    assert_eq!((second.asked, second.winners, second.splits), (0, 0, 0));
    assert_eq!(second.waiting, others);
    assert_eq!(
        second.waiting_reasons.iter().map(|(_, n)| n).sum::<usize>(),
        others
    );
    assert_eq!(db.count("resolutions") as usize, winners + splits);
}

#[test]
fn a_failing_round_is_counted_and_retried_not_fatal() {
    let _w = Watchdog::new("a_failing_round_is_counted", Duration::from_secs(60));
    let db = TestDb::new();
    let sim = pipeline::sim(50, 0.0);
    pipeline::load_markets(&db, &sim);
    // Nothing listens here: every round fails to reach Gamma.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let config = db
        .config()
        .to_builder()
        .gamma_url(url)
        .gamma_attempts(2)
        .gamma_backoff_min(Duration::from_millis(10))
        .resolve_interval(Duration::from_millis(50))
        .build()
        .expect("a valid config");
    let tracker = ResolutionTracker::new(&config);
    let handle = tracker.handle();
    let thread = std::thread::spawn(move || tracker.run());
    assert!(
        wait_until(Duration::from_secs(40), || handle.health().errors >= 1),
        "{:?}",
        handle.health()
    );
    assert!(handle.health().last_error.is_some());
    handle.stop();
    thread.join().expect("the tracker thread ends cleanly");
    assert_eq!(db.count("resolutions"), 0);
}

/// A `market_resolved` announcement has the tracker check that market with Gamma at once:
/// the verdict is recorded within seconds, long before the next round (an hour away).
#[test]
fn an_announced_resolution_is_checked_at_once() {
    use polytape::Listener;
    use polytape_testkit::pipeline::Running;
    let _w = Watchdog::new("an_announced_resolution", Duration::from_secs(90));
    polytape_testkit::init_logs();
    let db = TestDb::new();
    let sim = pipeline::sim(20, 100.0);
    pipeline::load_markets(&db, &sim);
    let config = pipeline::config(&db, &sim)
        .to_builder()
        .resolve_interval(Duration::from_secs(3600))
        .build()
        .expect("config");
    let tracker = ResolutionTracker::new(&config);
    let tracker_handle = tracker.handle();
    let tracker_thread = std::thread::spawn(move || tracker.run());
    assert!(wait_until(Duration::from_secs(20), || tracker_handle
        .health()
        .rounds
        == 1));
    let listener = Listener::from_database(config)
        .expect("listener")
        .follow_markets(None, Some(tracker_handle.clone()));
    let running = Running::start(listener);
    // Subscribed on the simulator's side (custom features on), not only sent.
    let tokens = pipeline::open_tokens(&sim);
    assert!(wait_until(Duration::from_secs(20), || sim
        .stats()
        .subscribed_assets
        == tokens));
    let market = sim
        .markets()
        .into_iter()
        .find(|m| m.is_open() && m.version != "v3")
        .expect("an open market");
    assert!(sim.close_market(&market.condition_id, SimResolution::Winner(1)));
    let winner = || -> Option<String> {
        db.client()
            .query_opt(
                "SELECT winning_token_id FROM resolutions WHERE condition_id = $1",
                &[&market.condition_id],
            )
            .expect("query")
            .map(|r| r.get(0))
    };
    assert!(
        wait_until(Duration::from_secs(20), || winner().is_some()),
        "recorded after the announcement"
    );
    assert_eq!(winner().as_deref(), Some(market.token_ids[1].as_str()));
    assert_eq!(tracker_handle.health().rounds, 1, "no round ran meanwhile");
    running.stop();
    tracker_handle.stop();
    tracker_thread.join().expect("tracker");
}
