//! The schema and the migration runner, on a real database.

use std::time::Duration;

use polytape_testkit::{TestDb, Watchdog};

#[test]
fn migrations_are_idempotent_and_concurrent_safe() {
    let _w = Watchdog::new(
        "migrations_are_idempotent_and_concurrent_safe",
        Duration::from_secs(60),
    );
    let db = TestDb::empty();
    // Four processes' worth of clients migrate at once: every migration is applied once.
    let applied: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| polytape::store::migrate(&db.config()).expect("migrate")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect()
    });
    assert_eq!(
        applied.iter().sum::<usize>(),
        5,
        "V1 to V5 once each: {applied:?}"
    );
    assert_eq!(polytape::store::migrate(&db.config()).expect("again"), 0);
    for table in [
        "markets",
        "trades",
        "resolutions",
        "gaps",
        "trades_rejected",
        "sessions",
        "resolution_attempts",
    ] {
        assert_eq!(db.count(table), 0);
    }
}

#[test]
fn a_repeated_trade_is_stored_once_even_without_a_hash() {
    let _w = Watchdog::new(
        "a_repeated_trade_is_stored_once_even_without_a_hash",
        Duration::from_secs(60),
    );
    let db = TestDb::new();
    let mut c = db.client();
    let insert =
        "INSERT INTO trades (asset_id, market, price, size, side, traded_at, transaction_hash)
                  VALUES ('1', '0xa', 0.48, 10, 'BUY', '2025-06-20 14:02:26.322+00', $1)
                  ON CONFLICT DO NOTHING";
    let none: Option<&str> = None;
    assert_eq!(c.execute(insert, &[&none]).expect("first"), 1);
    assert_eq!(
        c.execute(insert, &[&none]).expect("repeat"),
        0,
        "NULL hash still collides"
    );
    assert_eq!(c.execute(insert, &[&Some("0xff")]).expect("other hash"), 1);
    // 0.480 and 0.48 are the same price.
    let same =
        "INSERT INTO trades (asset_id, market, price, size, side, traded_at, transaction_hash)
                VALUES ('1', '0xa', 0.480, 10.0, 'BUY', '2025-06-20 14:02:26.322+00', '0xff')
                ON CONFLICT DO NOTHING";
    assert_eq!(c.execute(same, &[]).expect("same value"), 0);
    assert!(c
        .execute("INSERT INTO trades (asset_id, market, price, size, side, traded_at) VALUES ('1','0xa',0.5,1,'HOLD',now())", &[])
        .is_err(), "side is checked");
}
