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
        17,
        "V1 to V17 once each: {applied:?}"
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
        "book_snapshots",
        "book_files",
        "price_bars",
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
    // Every field of the key tells two trades apart (V17 keeps all but token and time in a
    // hash: each one changed alone must still make a new row).
    let base = (
        "'1'",
        "0.48",
        "10",
        "'BUY'",
        "'2025-06-20 14:02:26.322+00'",
        "'0xff'",
    );
    let variants = [
        ("'2'", base.1, base.2, base.3, base.4, base.5),
        (base.0, "0.49", base.2, base.3, base.4, base.5),
        (base.0, base.1, "10.000001", base.3, base.4, base.5),
        (base.0, base.1, base.2, "'SELL'", base.4, base.5),
        (
            base.0,
            base.1,
            base.2,
            base.3,
            "'2025-06-20 14:02:26.323+00'",
            base.5,
        ),
        (base.0, base.1, base.2, base.3, base.4, "'0xfe'"),
        (base.0, base.1, base.2, base.3, base.4, "'0xff00'"),
    ];
    for (asset, price, size, side, at, tx) in variants {
        let sql = format!(
            "INSERT INTO trades (asset_id, market, price, size, side, traded_at, transaction_hash)
             VALUES ({asset}, '0xa', {price}, {size}, {side}, {at}, {tx}) ON CONFLICT DO NOTHING"
        );
        assert_eq!(c.execute(&sql, &[]).expect("variant"), 1, "{sql}");
        assert_eq!(c.execute(&sql, &[]).expect("its repeat"), 0, "{sql}");
    }
    let stored: i64 = c
        .query_one("SELECT count(*) FROM trades", &[])
        .expect("count")
        .get(0);
    assert_eq!(stored, 2 + variants.len() as i64);
    assert!(c
        .execute("INSERT INTO trades (asset_id, market, price, size, side, traded_at) VALUES ('1','0xa',0.5,1,'HOLD',now())", &[])
        .is_err(), "side is checked");
}

/// V6 (the compact, partitioned tape) keeps every row of the old `trades` table: read back
/// through the `trades` view, the same values in every contract column; the months get
/// partitions; a row the compact tape cannot hold exactly (a hash that is not hex) lands in
/// `trades_rejected` instead of being changed; and the natural key still stores a repeat once.
#[test]
fn the_compact_tape_migration_keeps_existing_data() {
    let _w = Watchdog::new("the_compact_tape_migration", Duration::from_secs(120));
    let db = TestDb::empty();
    assert_eq!(
        polytape::bench::migrate_up_to(&db.config(), 5).expect("V1-V5"),
        5
    );
    let mut c = db.client();
    // 3,000 trades over two months, 40 assets, every 10th without a hash, some filled from
    // the Data API, mixed decimal spellings; and one with a hash that is not hex.
    c.batch_execute(
        "INSERT INTO trades (asset_id, market, price, size, side, fee_rate_bps, traded_at,
                             transaction_hash, received_at, source)
         SELECT (7000000000000000000 + g % 40)::text, '0xm' || (g % 40 / 2),
                round((1 + g % 997)::numeric / 1000, 3), (g % 5000)::numeric / 100 + 0.10,
                CASE WHEN g % 3 = 0 THEN 'SELL' ELSE 'BUY' END,
                CASE WHEN g % 4 = 0 THEN 0 END,
                '2026-09-20'::timestamptz + g * interval '17 minutes',
                CASE WHEN g % 10 <> 0 THEN '0x' || md5(g::text) || md5('x' || g) END,
                '2026-09-20'::timestamptz + g * interval '17 minutes' + interval '40 ms',
                CASE WHEN g % 7 = 0 THEN 'data_api' ELSE 'feed' END
         FROM generate_series(1, 3000) g;
         INSERT INTO trades (asset_id, market, price, size, side, traded_at, transaction_hash)
         VALUES ('1', '0xa', 0.5, 1, 'BUY', '2026-10-01', '0xnothex');",
    )
    .expect("old rows");
    let contract = "SELECT asset_id, market, price::text, size::text, side, fee_rate_bps,
                           traded_at, transaction_hash, received_at, source
                    FROM trades WHERE asset_id <> '1' ORDER BY traded_at, asset_id";
    type Row = (
        String,
        String,
        String,
        String,
        String,
        Option<i32>,
        std::time::SystemTime,
        Option<String>,
        std::time::SystemTime,
        String,
    );
    let read = |c: &mut postgres::Client| -> Vec<Row> {
        c.query(contract, &[])
            .expect("contract query")
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                    r.get(7),
                    r.get(8),
                    r.get(9),
                )
            })
            .collect()
    };
    let before = read(&mut c);
    assert_eq!(before.len(), 3000);
    assert_eq!(
        polytape::bench::migrate_up_to(&db.config(), 6).expect("V6"),
        1
    );
    let after = read(&mut c);
    assert_eq!(before, after, "every row, every contract column, unchanged");
    let count =
        |c: &mut postgres::Client, sql: &str| -> i64 { c.query_one(sql, &[]).expect(sql).get(0) };
    assert_eq!(count(&mut c, "SELECT count(*) FROM tokens"), 40);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM trades_rejected WHERE transaction_hash = '0xnothex'"
        ),
        1,
        "kept, not changed"
    );
    // 2026-09-20 + 3,000 × 17 min reaches late October: two months, each its partition
    // (October from g = 932 on), and nothing left in the default partition.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM tape_partitions WHERE month IN ('2026-09-01', '2026-10-01')"
        ),
        2
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM trade_tape_default"), 0);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM trade_tape_2026_10"),
        2069
    );
    // The natural key still holds through the view.
    let repeat = "INSERT INTO trades (asset_id, market, price, size, side, traded_at,
                                      transaction_hash)
                  SELECT asset_id, market, price, size, side, traded_at, transaction_hash
                  FROM trades WHERE asset_id <> '1' ORDER BY traded_at LIMIT 5";
    assert_eq!(c.execute(repeat, &[]).expect("repeat"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM trades"), 3000);
}

/// Partitions: made ahead of the current month; a month that is over gets its index rebuilt
/// once; a trade that arrived before its month's partition existed (in the default
/// partition) moves into that partition when it is made.
#[test]
fn partitions_are_made_ahead_compacted_once_and_take_over_the_default() {
    use chrono::{Datelike, Utc};
    let _w = Watchdog::new("partitions", Duration::from_secs(60));
    let db = TestDb::new();
    let mut c = db.client();
    c.batch_execute(
        "INSERT INTO trades (asset_id, market, price, size, side, traded_at)
         VALUES ('1', '0xa', 0.5, 3, 'BUY', '2025-05-07 10:00:00+00');
         INSERT INTO tokens (asset_id, market) VALUES ('2', '0xb');
         INSERT INTO trade_tape (traded_at, received_at, token, is_buy, price, size)
         SELECT '2031-05-03 12:00:00+00', now(), id, false, 0.25, 7 FROM tokens WHERE asset_id = '2';",
    )
    .expect("rows");
    let count =
        |c: &mut postgres::Client, sql: &str| -> i64 { c.query_one(sql, &[]).expect(sql).get(0) };
    assert_eq!(count(&mut c, "SELECT count(*) FROM trade_tape_default"), 1);
    let now = Utc::now();
    let first = polytape::store::tape::maintain(&mut c, now).expect("maintain");
    assert!(
        first.compacted.contains(&"trade_tape_2025_05".to_owned()),
        "{first:?}"
    );
    let months: Vec<String> = (0..3)
        .map(|k| {
            let m = now.year() * 12 + now.month0() as i32 + k;
            format!("trade_tape_{:04}_{:02}", m / 12, m % 12 + 1)
        })
        .collect();
    for m in &months {
        assert!(
            c.query_one("SELECT to_regclass($1) IS NOT NULL", &[m])
                .expect("regclass")
                .get::<_, bool>(0),
            "{m} made ahead"
        );
    }
    let second = polytape::store::tape::maintain(&mut c, now).expect("maintain again");
    assert!(
        second.compacted.is_empty() && second.created == 0,
        "{second:?}"
    );
    // The month of the stray row is made: the row moves out of the default partition.
    c.execute("SELECT tape_ensure_month('2031-05-01')", &[])
        .expect("ensure");
    assert_eq!(count(&mut c, "SELECT count(*) FROM trade_tape_default"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM trade_tape_2031_05"), 1);
    assert_eq!(count(&mut c, "SELECT count(*) FROM trades"), 2);
}

/// A past month's rebuild runs without the connection's statement timeout (it takes as long
/// as the month is large: before, a month over the 30 s limit failed at every start and left
/// an invalid `_ccnew` index each time), and such a leftover is dropped first.
#[test]
fn compaction_has_no_statement_timeout_and_drops_leftover_indexes() {
    let _w = Watchdog::new("compaction_no_timeout", Duration::from_secs(120));
    let db = TestDb::new();
    let mut c = db.client();
    c.batch_execute(
        "SELECT tape_ensure_month('2025-03-01');
         INSERT INTO tokens (asset_id, market) SELECT g::text, '0xm' FROM generate_series(1, 50) g;
         INSERT INTO trade_tape (traded_at, received_at, token, is_buy, price, size)
         SELECT '2025-03-01'::timestamptz + g * interval '1 second', now(), 1 + g % 50,
                g % 2 = 0, (1 + g % 99)::numeric / 100, g
         FROM generate_series(1, 400000) g;",
    )
    .expect("a past month of 400,000 trades");
    // What an interrupted REINDEX CONCURRENTLY leaves: an invalid index named …_ccnew.
    let leftover = c.batch_execute(
        "CREATE UNIQUE INDEX CONCURRENTLY trade_tape_2025_03_natural_ccnew
             ON trade_tape_2025_03 (token)",
    );
    assert!(
        leftover.is_err(),
        "duplicates make it fail, and stay invalid"
    );
    let invalid = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT count(*) FROM pg_index WHERE NOT indisvalid", &[])
            .expect("pg_index")
            .get(0)
    };
    assert_eq!(invalid(&mut c), 1);
    // A connection whose statements may take 100 ms: far less than this rebuild.
    let config = db
        .config()
        .to_builder()
        .statement_timeout(Duration::from_millis(100))
        .build()
        .expect("config");
    let mut short = polytape::store::connect(&config).expect("connect");
    let report = polytape::store::tape::maintain(&mut short, chrono::Utc::now()).expect("maintain");
    assert!(
        report.compacted.contains(&"trade_tape_2025_03".to_owned()),
        "{report:?}"
    );
    assert_eq!(invalid(&mut c), 0, "no invalid index left");
    let timeout: String = short
        .query_one("SHOW statement_timeout", &[])
        .expect("show")
        .get(0);
    assert_eq!(timeout, "100ms", "the session's own timeout is back");
}

/// The attack on V6's `tape_ensure_month` (SECURITY DEFINER, `search_path FROM CURRENT`,
/// unqualified names, EXECUTE for PUBLIC): a role with nothing but CONNECT and TEMP puts a
/// temporary `tape_partitions` with a trigger in front of the real one and gets its trigger
/// run as the role that migrated. Shown working against V6, then refused by V7 (no EXECUTE
/// for PUBLIC; and with EXECUTE granted, the schema-qualified names never reach pg_temp);
/// the writer role, with the documented grant, still opens a new month.
#[test]
fn tape_ensure_month_cannot_be_hijacked_through_pg_temp() {
    let _w = Watchdog::new("tape_ensure_month_hijack", Duration::from_secs(60));
    let db = TestDb::empty();
    polytape::bench::migrate_up_to(&db.config(), 6).expect("V1-V6");
    let attacker = db.bare_role("attacker");
    let attack = |month: &str| -> Result<(), postgres::Error> {
        let mut c = postgres::Client::connect(attacker.url(), postgres::NoTls).expect("connect");
        c.batch_execute(
            "CREATE TEMP TABLE tape_partitions (
                 name text PRIMARY KEY, month date UNIQUE, created_at timestamptz,
                 compacted_at timestamptz, archived_at timestamptz, archive_path text,
                 archive_rows bigint, dropped_at timestamptz, late_rows_since timestamptz,
                 late_archives text[]);
             CREATE FUNCTION pg_temp.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 CREATE TABLE public.escalated ();
                 RETURN NEW;
             END $$;
             CREATE TRIGGER escalate BEFORE INSERT ON pg_temp.tape_partitions
                 FOR EACH ROW EXECUTE FUNCTION pg_temp.escalate();",
        )?;
        c.query_one("SELECT tape_ensure_month($1::text::date)", &[&month])?;
        Ok(())
    };
    let escalated = || -> bool {
        db.client()
            .query_one("SELECT to_regclass('public.escalated') IS NOT NULL", &[])
            .expect("look")
            .get(0)
    };
    // V6: the attack works (this is the hole).
    attack("2031-01-01").expect("under V6 the attacker may call the function");
    assert!(
        escalated(),
        "V6: the attacker's trigger ran as the migrating role"
    );
    db.client()
        .batch_execute("DROP TABLE public.escalated")
        .expect("clean up");

    // V7: refused outright, since EXECUTE is no longer PUBLIC's.
    assert_eq!(
        polytape::bench::migrate_up_to(&db.config(), 7).expect("V7"),
        1
    );
    let refused = attack("2031-02-01").expect_err("no EXECUTE for PUBLIC");
    assert_eq!(
        refused.code(),
        Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{refused}"
    );
    assert!(!escalated(), "V7: nothing ran as the migrating role");
    // Even a role that was granted EXECUTE cannot redirect it: every name is qualified.
    db.client()
        .batch_execute(&format!(
            "GRANT EXECUTE ON FUNCTION tape_ensure_month(date) TO {}",
            attacker.name()
        ))
        .expect("grant");
    attack("2031-03-01").expect("a grantee may open a month");
    assert!(!escalated(), "the temporary table was never used");
    let recorded: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM public.tape_partitions WHERE month = '2031-03-01'",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(recorded, 1, "the month is recorded in the real table");

    // The writer role, with the grant README documents, opens a new month.
    let writer = db.role();
    let mut w = postgres::Client::connect(writer.url(), postgres::NoTls).expect("connect");
    let made: bool = w
        .query_one("SELECT tape_ensure_month('2031-04-01')", &[])
        .expect("the writer opens a month")
        .get(0);
    assert!(made);
}
