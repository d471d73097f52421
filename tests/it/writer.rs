//! The trade writer on its own: idempotence, duplicates, a refused row.

use std::time::Duration;

use polytape::bench::{Health, TradeWriter};
use polytape::{Config, Decimal, Side, Trade};

use polytape_testkit::{TestDb, Watchdog};

fn trade(i: u64) -> Trade {
    Trade {
        asset_id: format!("{}", 1_000_000 + i % 7),
        market: "0xabc".into(),
        price: Decimal::parse(".48").expect("decimal"),
        size: Decimal::parse(&format!("10.{i:06}")).expect("decimal"),
        side: if i.is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        },
        fee_rate_bps: (!i.is_multiple_of(3)).then_some(0),
        timestamp_ms: 1_750_428_146_322 + i as i64,
        transaction_hash: (!i.is_multiple_of(5)).then(|| format!("0x{i:064x}")),
        received_at_us: 1_750_428_146_400_000 + i as i64,
    }
}

fn writer(db: &TestDb) -> (TradeWriter, Health) {
    let health = Health::new();
    let config = Config::builder()
        .database_url(db.url())
        .backoff_min(Duration::from_millis(10))
        .build()
        .expect("a valid config");
    (TradeWriter::new(&config, health.clone()), health)
}

#[test]
fn a_batch_written_twice_is_stored_once() {
    let _w = Watchdog::new(
        "a_batch_written_twice_is_stored_once",
        Duration::from_secs(30),
    );
    let db = TestDb::new();
    let (mut w, health) = writer(&db);
    let batch: Vec<Trade> = (0..100).map(trade).collect();
    w.commit(&batch).expect("committed");
    w.commit(&batch).expect("committed");
    // A batch that repeats a trade inside itself, plus new ones.
    let mut mixed: Vec<Trade> = (100..150).map(trade).collect();
    mixed.push(trade(120));
    mixed.push(trade(5));
    w.commit(&mixed).expect("committed");
    let s = health.snapshot();
    assert_eq!(db.count("trades"), 150);
    assert_eq!(s.trades_inserted, 150);
    assert_eq!(s.duplicates_skipped, 102);
    assert_eq!(s.rows_rejected, 0);
    // Exact values survive the trip: no float anywhere.
    let row = db
        .client()
        .query_one(
            "SELECT price::text, size::text, (extract(epoch FROM traded_at) * 1000)::bigint,
                    transaction_hash, fee_rate_bps FROM trades WHERE size = 10.000001",
            &[],
        )
        .expect("row");
    assert_eq!(row.get::<_, String>(0), "0.48");
    assert_eq!(row.get::<_, String>(1), "10.000001");
    assert_eq!(row.get::<_, i64>(2), 1_750_428_146_323);
    assert_eq!(
        row.get::<_, Option<String>>(3),
        Some(format!("0x{:064x}", 1))
    );
    assert_eq!(row.get::<_, Option<i32>>(4), Some(0));
}

#[test]
fn a_refused_row_is_isolated_and_the_rest_stored() {
    let _w = Watchdog::new("a_refused_row_is_isolated", Duration::from_secs(30));
    let db = TestDb::new();
    let (mut w, health) = writer(&db);
    let mut batch: Vec<Trade> = (0..64).map(trade).collect();
    // A library caller can build any Trade: PostgreSQL text holds no NUL byte.
    batch[37].asset_id = "12\u{0}34".into();
    w.commit(&batch).expect("committed");
    let s = health.snapshot();
    assert_eq!(db.count("trades"), 63);
    assert_eq!((s.trades_inserted, s.rows_rejected), (63, 1));
    assert!(s.db_errors >= 1);
    // Kept, with its error, never only logged.
    let row = db
        .client()
        .query_one("SELECT sqlstate, asset_id, price FROM trades_rejected", &[])
        .expect("one rejected row");
    assert_eq!(
        row.get::<_, String>(0),
        "22021",
        "character not in repertoire"
    );
    assert_eq!(row.get::<_, String>(1), "12\\034");
    assert_eq!(row.get::<_, String>(2), batch[37].price.as_str());
}

/// A trade the compact tape cannot hold exactly (a hash of half a byte, one not hex, a fee
/// beyond `smallint`) is refused alone, in either COPY format, into `trades_rejected` as
/// 22023, never stored changed; the rest of its batch, with hashes and fees at their limits,
/// is stored exactly.
#[test]
fn a_trade_the_tape_cannot_hold_is_refused_alone() {
    use polytape::bench::CopyFormat;
    let _w = Watchdog::new("a_trade_the_tape_cannot_hold", Duration::from_secs(30));
    for format in [CopyFormat::Binary, CopyFormat::Text] {
        let db = TestDb::new();
        let (mut w, health) = writer(&db);
        w.set_copy_format(format);
        let mut batch: Vec<Trade> = (0..40).map(trade).collect();
        batch[3].transaction_hash = Some("0xabc".into());
        batch[11].transaction_hash = Some(format!("0x{}", "g".repeat(64)));
        batch[20].fee_rate_bps = Some(40_000);
        batch[21].fee_rate_bps = Some(32_767);
        batch[22].transaction_hash = Some("0xABCDEF".into());
        w.commit(&batch).expect("committed");
        let s = health.snapshot();
        assert_eq!((s.trades_inserted, s.rows_rejected), (37, 3), "{format:?}");
        let mut refused: Vec<(String, Option<String>)> = db
            .client()
            .query("SELECT sqlstate, size::text FROM trades_rejected", &[])
            .expect("rejected rows")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        refused.sort();
        let want = |i: usize| ("22023".to_owned(), Some(batch[i].size.as_str().to_owned()));
        let mut expected = vec![want(3), want(11), want(20)];
        expected.sort();
        assert_eq!(refused, expected, "{format:?}");
        let row = |sql: &str| db.client().query_one(sql, &[]).expect(sql);
        let limit = row("SELECT fee_rate_bps FROM trades WHERE size = 10.000021");
        assert_eq!(limit.get::<_, Option<i32>>(0), Some(32_767), "{format:?}");
        let upper = row("SELECT transaction_hash FROM trades WHERE size = 10.000022");
        assert_eq!(
            upper.get::<_, Option<String>>(0).as_deref(),
            Some("0xabcdef"),
            "{format:?}"
        );
    }
}

/// Exact decimals of every shape survive both COPY formats unchanged.
#[test]
fn decimals_round_trip_exactly_in_both_copy_formats() {
    use polytape::bench::CopyFormat;
    let _w = Watchdog::new("decimals_round_trip_exactly", Duration::from_secs(30));
    let sizes = [
        "1",
        "10",
        "9999",
        "10000",
        "12345",
        "123456789.123456789",
        "0.1",
        "0.0001",
        "0.00001",
        "0.000000000000000001",
        "100000000.5",
        "219.217767",
        "0.480",
        "7.50",
        "100000000000000000000.000000000000000001",
    ];
    for format in [CopyFormat::Binary, CopyFormat::Text] {
        let db = TestDb::new();
        let (mut w, health) = writer(&db);
        w.set_copy_format(format);
        let batch: Vec<Trade> = sizes
            .iter()
            .enumerate()
            .map(|(i, s)| Trade {
                size: Decimal::parse(s).expect("decimal"),
                price: Decimal::parse(if i % 2 == 0 { ".48" } else { "1" }).expect("decimal"),
                ..trade(i as u64)
            })
            .collect();
        w.commit(&batch).expect("committed");
        assert_eq!(
            health.snapshot().trades_inserted,
            sizes.len() as u64,
            "{format:?}"
        );
        let mut stored: Vec<(i64, String, String, Option<i64>)> = db
            .client()
            .query(
                "SELECT (extract(epoch FROM traded_at) * 1000)::bigint, size::text, price::text,
                        (extract(epoch FROM received_at) * 1000000)::bigint
                 FROM trades ORDER BY traded_at",
                &[],
            )
            .expect("select")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        stored.sort();
        for (i, (ts, size, price, received)) in stored.iter().enumerate() {
            assert_eq!(*ts, batch[i].timestamp_ms, "{format:?}");
            assert_eq!(size, batch[i].size.as_str(), "{format:?}");
            assert_eq!(price, batch[i].price.as_str(), "{format:?}");
            assert_eq!(*received, Some(batch[i].received_at_us), "{format:?}");
        }
    }
}

/// A row a CHECK constraint refuses (23514) is kept in `trades_rejected` with its error and
/// raw values; every other row of its batch is stored.
#[test]
fn a_check_refused_row_lands_in_trades_rejected() {
    let _w = Watchdog::new("a_check_refused_row", Duration::from_secs(30));
    let db = TestDb::new();
    db.client()
        .batch_execute("ALTER TABLE tokens ADD CONSTRAINT no_poison CHECK (asset_id <> 'poison')")
        .expect("constraint");
    let (mut w, health) = writer(&db);
    let mut batch: Vec<Trade> = (0..50).map(trade).collect();
    batch[5].asset_id = "poison".into();
    w.commit(&batch).expect("committed");
    assert_eq!(db.count("trades"), 49);
    assert_eq!(db.count("trades_rejected"), 1);
    let row = db
        .client()
        .query_one(
            "SELECT sqlstate, message, asset_id, price, size, side, transaction_hash
             FROM trades_rejected",
            &[],
        )
        .expect("the rejected row");
    assert_eq!(row.get::<_, String>(0), "23514");
    assert!(row.get::<_, String>(1).contains("no_poison"));
    assert_eq!(row.get::<_, String>(2), "poison");
    assert_eq!(row.get::<_, String>(3), batch[5].price.as_str());
    assert_eq!(row.get::<_, String>(4), batch[5].size.as_str());
    assert_eq!(row.get::<_, String>(5), batch[5].side.as_str());
    assert_eq!(
        row.get::<_, Option<String>>(6),
        batch[5].transaction_hash.clone()
    );
    assert_eq!(health.snapshot().rows_rejected, 1);
}

/// A role without TEMP on the database (no staging table possible) still writes every
/// batch that holds no stored trade: the staging table is made only on the slow path. It
/// was made at connect before, and the writer retried forever, writing nothing.
#[test]
fn a_role_without_temp_still_writes_new_trades() {
    let _w = Watchdog::new("a_role_without_temp", Duration::from_secs(30));
    let db = TestDb::new();
    let role = db.role();
    db.client()
        .batch_execute(&format!(
            "DO $$ BEGIN
               EXECUTE format('REVOKE TEMP ON DATABASE %I FROM PUBLIC, {0}', current_database());
             END $$",
            role.name()
        ))
        .expect("revoke temp");
    let config = Config::builder()
        .database_url(role.url())
        .build()
        .expect("a valid config");
    let health = Health::new();
    let mut w = TradeWriter::new(&config, health.clone());
    let batch: Vec<Trade> = (0..100).map(trade).collect();
    w.commit(&batch).expect("new trades need no staging table");
    assert_eq!(db.count("trades"), 100);
    // A batch with a stored trade needs the staging table: refused, as configuration
    // (the caller spools and retries; nothing is dropped).
    let err = w.commit(&batch).expect_err("no TEMP, no staging");
    assert_eq!(err.code(), Some("42501"), "{err}");
}

/// A writer role without EXECUTE on `tape_ensure_month` (a deployment that upgraded past V7
/// and did not grant it) still stores its trades: a month it may not make keeps them in the
/// default partition, and the owner's next `tape_ensure_month` moves them into the month.
#[test]
fn a_role_without_execute_on_tape_ensure_month_still_writes() {
    let _w = Watchdog::new("a_role_without_execute", Duration::from_secs(30));
    let db = TestDb::new();
    let role = db.role();
    db.client()
        .batch_execute(&format!(
            "REVOKE EXECUTE ON FUNCTION tape_ensure_month(date) FROM {}",
            role.name()
        ))
        .expect("revoke execute");
    let config = Config::builder()
        .database_url(role.url())
        .build()
        .expect("a valid config");
    let mut w = TradeWriter::new(&config, Health::new());
    // June 2025: a month nobody made.
    let batch: Vec<Trade> = (0..100).map(trade).collect();
    w.commit(&batch)
        .expect("stored though the month cannot be made");
    assert_eq!(db.count("trades"), 100);
    assert_eq!(
        db.count("trade_tape_default"),
        100,
        "waiting in the default partition"
    );
    db.client()
        .execute("SELECT tape_ensure_month('2025-06-01')", &[])
        .expect("the owner makes the month");
    assert_eq!(db.count("trade_tape_default"), 0);
    assert_eq!(db.count("trade_tape_2025_06"), 100);
}

/// One batch holding the same (token, minute) twice (a bar closed by the quiet clock, moved
/// by a late event, sent again) is one merged row; `ON CONFLICT DO UPDATE` refused it with
/// 21000 before, which classed it as a configuration failure and held every later trade
/// behind it in the spool.
#[test]
fn a_bar_batch_with_a_minute_twice_is_merged_not_refused() {
    let _w = Watchdog::new("a_bar_batch_with_a_minute_twice", Duration::from_secs(30));
    let db = TestDb::new();
    let (mut w, _) = writer(&db);
    let bar = |o: u32, h: u32, l: u32, c: u32| polytape::prices::PriceBar {
        asset_id: "1000001".into(),
        market: "0xabc".into(),
        minute_ms: 1_750_428_120_000,
        open2: Some(o),
        high2: Some(h),
        low2: Some(l),
        close2: Some(c),
        best_bid: Some(c / 2 - 5_000),
        best_ask: Some(c / 2 + 5_000),
    };
    polytape::bench::write_bars(
        &mut w,
        &[
            bar(960_000, 980_000, 950_000, 970_000),
            bar(970_000, 1_000_000, 960_000, 990_000),
        ],
    )
    .expect("a repeated minute is merged, not refused");
    let row = db
        .client()
        .query_one(
            "SELECT open::text, high::text, low::text, close::text FROM price_bars",
            &[],
        )
        .expect("one bar");
    let got: (String, String, String, String) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        got,
        ("0.48".into(), "0.5".into(), "0.475".into(), "0.495".into()),
        "first open, highest high, lowest low, last close"
    );
}

/// An upgrade with the README's grants: a writer role granted per the README (default
/// privileges included) before V11–V13 can write the tables they make.
#[test]
fn the_readmes_grants_cover_the_tables_a_later_migration_makes() {
    let _w = Watchdog::new("the_readmes_grants", Duration::from_secs(60));
    let db = TestDb::empty();
    polytape::bench::migrate_up_to(&db.config(), 10).expect("V1-V10");
    let role = db.bare_role("upgrade");
    let owner: String = db
        .client()
        .query_one("SELECT current_user::text", &[])
        .expect("owner")
        .get(0);
    db.client()
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA public TO {w};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {w};
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {w};
             GRANT EXECUTE ON FUNCTION tape_ensure_month(date) TO {w};
             ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
                 GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {w};
             ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
                 GRANT USAGE, SELECT ON SEQUENCES TO {w};",
            w = role.name()
        ))
        .expect("the README's grants");
    polytape::bench::migrate_up_to(&db.config(), i32::MAX).expect("the upgrade");
    let mut c = postgres::Client::connect(role.url(), postgres::NoTls).expect("as the writer");
    c.batch_execute(
        "INSERT INTO tokens (asset_id, market) VALUES ('9', '0xm');
         INSERT INTO price_bar (minute, token, source, trades)
             SELECT '2026-12-01T00:00:00Z', id, 'l', 1 FROM tokens WHERE asset_id = '9';
         INSERT INTO book_snapshot (taken_at, token, source, levels)
             SELECT '2026-12-01T00:00:00Z', id, 'f', '\\x01000000'::bytea FROM tokens WHERE asset_id = '9';",
    )
    .expect("the writer writes V11-V13's tables after the upgrade");
}

/// Batches that move from one month into the next (and back) each land in their month's
/// partition: none waits in `trade_tape_default`.
#[test]
fn each_month_of_trades_lands_in_its_own_partition() {
    let _w = Watchdog::new("each_month_of_trades", Duration::from_secs(30));
    let db = TestDb::new();
    let (mut w, _) = writer(&db);
    // 2026-10-31 23:59:59.990 UTC, then across midnight into November, then December.
    let october_end = 1_793_491_199_990_i64;
    // One token throughout: only the month changes between batches.
    let at = |i: u64, ms: i64| Trade {
        timestamp_ms: ms,
        asset_id: "1000000".into(),
        ..trade(i)
    };
    w.commit(&[at(0, october_end), at(1, october_end + 5)])
        .expect("october");
    w.commit(&[at(2, october_end + 9), at(3, october_end + 10)])
        .expect("october's last ms, november's first");
    w.commit(&[at(4, october_end + 20)]).expect("november");
    w.commit(&[at(5, october_end + 31 * 86_400_000)])
        .expect("december");
    w.commit(&[at(6, october_end + 1)]).expect("october again");
    let by_partition: Vec<(String, i64)> = db
        .client()
        .query(
            "SELECT tableoid::regclass::text, count(*) FROM trade_tape GROUP BY 1 ORDER BY 1",
            &[],
        )
        .expect("partitions")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(by_partition.len(), 3, "{by_partition:?}");
    assert!(
        by_partition.iter().all(|(p, _)| !p.contains("default")),
        "{by_partition:?}"
    );
    assert_eq!(
        by_partition.iter().map(|(_, n)| n).collect::<Vec<_>>(),
        vec![&4, &2, &1],
        "{by_partition:?}"
    );
}
