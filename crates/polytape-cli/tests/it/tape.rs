//! `polytape archive` and `polytape retention` on partitions made in the past.

use std::time::Duration;

use arrow_array::{Array, Decimal128Array, StringArray, TimestampMicrosecondArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use polytape_testkit::{TestDb, Watchdog, pipeline};

use crate::daemon::{output, polytape, stdout};

/// Trades in three months of 2024 (600 each), hand-inserted through the `trades` view.
fn old_months(db: &TestDb) {
    db.client()
        .batch_execute(
            "INSERT INTO trades (asset_id, market, price, size, side, fee_rate_bps, traded_at,
                                 transaction_hash, source)
             SELECT (5000 + g % 6)::text, '0xm' || (g % 3), (1 + g % 999)::numeric / 1000,
                    (g % 700)::numeric / 100 + 0.000001,
                    CASE WHEN g % 2 = 0 THEN 'BUY' ELSE 'SELL' END, CASE WHEN g % 5 = 0 THEN 10 END,
                    m + (g % 600) * interval '1 hour' + g * interval '1 microsecond',
                    CASE WHEN g % 4 <> 0 THEN '0x' || md5(g::text) || md5(m::text || g) END,
                    CASE WHEN g % 9 = 0 THEN 'data_api' ELSE 'feed' END
             FROM generate_series(0, 599) g,
                  unnest(ARRAY['2024-01-01', '2024-02-01', '2024-03-01']::timestamptz[]) m",
        )
        .expect("old trades");
}

#[test]
fn archives_read_back_whole_and_retention_drops_only_what_is_archived() {
    let _w = Watchdog::new("archive_and_retention", Duration::from_secs(120));
    let db = TestDb::new();
    let sim = pipeline::sim(1, 0.0);
    old_months(&db);
    let count = |sql: &str| -> i64 { db.client().query_one(sql, &[]).expect(sql).get(0) };
    assert_eq!(count("SELECT count(*) FROM trades"), 1800);
    let out = polytape_testkit::scratch_dir("archive");

    let mut c = polytape(&db, &sim);
    c.args(["archive", "--before", "2024-03", "--out"])
        .arg(&out);
    let o = output(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("trade_tape_2024_01"), "{}", stdout(&o));

    // Every row of January, read back from Parquet, equals the database's, value for value.
    let file = out.join("trade_tape_2024_01.parquet");
    let mut from_file = Vec::new();
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).expect("file"))
            .expect("parquet")
            .build()
            .expect("reader");
    for batch in reader {
        let b = batch.expect("batch");
        let text = |i: usize| b.column(i).as_any().downcast_ref::<StringArray>().cloned();
        let dec = |i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<Decimal128Array>()
                .cloned()
        };
        let (asset, price, size) = (
            text(0).expect("asset"),
            dec(2).expect("price"),
            dec(3).expect("size"),
        );
        let hash = text(7).expect("hash");
        let traded = b
            .column(6)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .cloned()
            .expect("timestamps");
        for r in 0..b.num_rows() {
            from_file.push((
                asset.value(r).to_owned(),
                traded.value(r),
                price.value_as_string(r),
                size.value_as_string(r),
                (!hash.is_null(r)).then(|| hash.value(r).to_owned()),
            ));
        }
    }
    let from_db: Vec<(String, i64, String, String, Option<String>)> = db
        .client()
        .query(
            "SELECT asset_id, (extract(epoch FROM traded_at) * 1000000)::bigint,
                    to_char(price, 'FM0.000000000000000000'), to_char(size, 'FM99990.000000000000000000'),
                    transaction_hash
             FROM trades WHERE traded_at < '2024-02-01' ORDER BY traded_at",
            &[],
        )
        .expect("january")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(from_file.len(), 600);
    assert_eq!(from_file, from_db);
    assert_eq!(
        count("SELECT count(*) FROM tape_partitions WHERE archived_at IS NOT NULL"),
        2,
        "January and February"
    );

    // Keep 12 months: January and February (archived) go; March has no archive and stays.
    let mut c = polytape(&db, &sim);
    c.args(["retention", "--keep", "12m"]);
    let o = output(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // March's months (the tape's and, empty, the book side's) have no archive and stay.
    assert!(
        stdout(&o).contains("kept 3 old partitions") && stdout(&o).contains("trade_tape_2024_03"),
        "{}",
        stdout(&o)
    );
    assert_eq!(count("SELECT count(*) FROM trades"), 600);
    assert_eq!(
        count("SELECT count(*) FROM trades WHERE traded_at >= '2024-03-01'"),
        600
    );
    assert!(file.exists(), "the archive stays");
    // Told so, March goes too; the months polytape made ahead stay.
    let mut c = polytape(&db, &sim);
    c.args(["retention", "--keep", "1y", "--no-archive"]);
    assert!(output(c).status.success());
    assert_eq!(count("SELECT count(*) FROM trades"), 0);
    assert!(count("SELECT count(*) FROM tape_partitions WHERE dropped_at IS NULL") >= 3);
    let _ = std::fs::remove_dir_all(&out);
}

/// A month archived and dropped, then a late trade for it (a backfill of an old window): the
/// month comes back with its archive still on record, `archive` writes the late row to a file
/// of its own (the month's file is left byte for byte), retention keeps the month until the
/// late rows are archived, and an archive never replaces a file that is already there.
#[test]
fn late_rows_of_an_archived_month_never_overwrite_its_archive() {
    let _w = Watchdog::new("late_rows_archive", Duration::from_secs(120));
    let db = TestDb::new();
    let sim = pipeline::sim(1, 0.0);
    old_months(&db);
    let count = |sql: &str| -> i64 { db.client().query_one(sql, &[]).expect(sql).get(0) };
    let out = polytape_testkit::scratch_dir("late-archive");
    let run = |args: &[&str]| {
        let mut c = polytape(&db, &sim);
        c.args(args);
        let o = output(c);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        stdout(&o)
    };
    let out_arg = out.to_string_lossy().into_owned();
    run(&["archive", "--before", "2024-02", "--out", &out_arg]);
    let month_file = out.join("trade_tape_2024_01.parquet");
    let original = std::fs::read(&month_file).expect("the month's archive");
    run(&["retention", "--keep", "12m"]);
    assert_eq!(
        count("SELECT count(*) FROM trades WHERE traded_at < '2024-02-01'"),
        0
    );

    // The straggler: January comes back, its archive still on record.
    db.client()
        .batch_execute(
            "INSERT INTO trades (asset_id, market, price, size, side, traded_at, source)
             VALUES ('5001', '0xm1', 0.5, 3, 'BUY', '2024-01-15 12:00:00+00', 'data_api')",
        )
        .expect("a late trade");
    let row = db
        .client()
        .query_one(
            "SELECT archive_path IS NOT NULL, archive_rows, late_rows_since IS NOT NULL,
                    dropped_at IS NULL
             FROM tape_partitions WHERE name = 'trade_tape_2024_01'",
            &[],
        )
        .expect("january's record");
    let (has_path, rows, late, live): (bool, Option<i64>, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert!(has_path && live && late, "kept its archive, marked late");
    assert_eq!(rows, Some(600));

    // Retention keeps it while the late row has no archive.
    run(&["retention", "--keep", "12m"]);
    assert_eq!(
        count("SELECT count(*) FROM trades WHERE traded_at < '2024-02-01'"),
        1
    );

    // The late row goes to a file of its own; the month's file is untouched.
    let said = run(&["archive", "--before", "2024-02", "--out", &out_arg]);
    assert!(said.contains(".late-"), "{said}");
    assert_eq!(
        std::fs::read(&month_file).expect("still there"),
        original,
        "the month's archive is byte for byte what it was"
    );
    let late_files: Vec<_> = std::fs::read_dir(&out)
        .expect("out")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".late-"))
        .collect();
    assert_eq!(late_files.len(), 1, "one file for the late rows");
    let late_rows: usize = ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(late_files[0].path()).expect("late file"),
    )
    .expect("parquet")
    .build()
    .expect("reader")
    .map(|b| b.expect("batch").num_rows())
    .sum();
    assert_eq!(late_rows, 1);
    let row = db
        .client()
        .query_one(
            "SELECT archive_path, archive_rows, cardinality(late_archives),
                    late_rows_since IS NULL
             FROM tape_partitions WHERE name = 'trade_tape_2024_01'",
            &[],
        )
        .expect("january's record");
    let (path, rows, lates, settled): (String, i64, i32, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert!(path.ends_with("trade_tape_2024_01.parquet"), "{path}");
    assert_eq!((rows, lates, settled), (601, 1, true));
    // Now archived, retention may drop it again.
    run(&["retention", "--keep", "12m"]);
    assert_eq!(
        count("SELECT count(*) FROM trades WHERE traded_at < '2024-02-01'"),
        0
    );

    // An archive never replaces a file that stands at its name: February, archived to a
    // folder where a file of that name already is, is refused and the file kept.
    let other = polytape_testkit::scratch_dir("late-archive-clash");
    std::fs::create_dir_all(&other).expect("a folder");
    std::fs::write(other.join("trade_tape_2024_02.parquet"), b"not ours").expect("write");
    let mut c = polytape(&db, &sim);
    c.args(["archive", "--before", "2024-03", "--out"])
        .arg(&other);
    let o = output(c);
    assert!(!o.status.success(), "refused");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("never writes over an archive"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read(other.join("trade_tape_2024_02.parquet")).expect("kept"),
        b"not ours"
    );
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&other);
}

/// The book side's months go the tape's way: `archive` writes each month of `book_snapshot`
/// and `price_bar` to Parquet (read back whole), `retention` drops the months it keeps no
/// more once archived, and removes the book tape's files of those months, recorded.
#[test]
fn the_book_sides_months_and_tape_files_are_archived_and_retained() {
    let _w = Watchdog::new("book side retention", Duration::from_secs(120));
    let db = TestDb::new();
    let sim = pipeline::sim(1, 0.0);
    let out = polytape_testkit::scratch_dir("side-archive");
    std::fs::create_dir_all(&out).expect("scratch");
    let tape_file = out.join("book_tape_20240115T000000.parquet");
    std::fs::write(&tape_file, b"PAR1 (a tape file of January 2024)").expect("tape file");
    db.client()
        .batch_execute(&format!(
            "SELECT tape_ensure_month('2024-01-01'), tape_ensure_month('2024-02-01');
             INSERT INTO tokens (asset_id, market) VALUES ('7001', '0xm1'), ('7002', '0xm1');
             INSERT INTO book_snapshot (taken_at, token, source, levels, levels_unchecked)
                 SELECT m + g * interval '1 minute', k.id, 'f',
                        '\\x0102000101010a05'::bytea, g % 3
                 FROM generate_series(0, 99) g, tokens k,
                      unnest(ARRAY['2024-01-01', '2024-02-01']::timestamptz[]) m;
             INSERT INTO price_bar (minute, token, source, close2, trades, volume, notional,
                                    last_trade_price)
                 SELECT m + g * interval '1 minute', k.id, 'l', 960000 + g, g, g * 1.5,
                        g * 0.72, 0.48
                 FROM generate_series(0, 49) g, tokens k,
                      unnest(ARRAY['2024-01-01', '2024-02-01']::timestamptz[]) m;
             INSERT INTO book_files (path, period_start, period_end, rows, assets, bytes, sha256)
                 VALUES ('{}', '2024-01-15', '2024-01-15 01:00', 1, 1, 1, 'x');",
            tape_file.display()
        ))
        .expect("old months of the book side");
    let count = |sql: &str| -> i64 { db.client().query_one(sql, &[]).expect(sql).get(0) };
    assert_eq!(count("SELECT count(*) FROM book_snapshots"), 400);
    // January is archived; February is not (before 2024-02).
    let mut c = polytape(&db, &sim);
    c.args(["archive", "--before", "2024-02", "--out"])
        .arg(&out);
    let o = output(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (name, rows) in [("book_snapshot_2024_01", 200), ("price_bar_2024_01", 100)] {
        let file = out.join(format!("{name}.parquet"));
        let read: usize = ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&file).expect("the archive"),
        )
        .expect("parquet")
        .build()
        .expect("reader")
        .map(|b| b.expect("batch").num_rows())
        .sum();
        assert_eq!(read, rows, "{name}");
        assert_eq!(
            count(&format!(
                "SELECT archive_rows FROM side_partitions WHERE name = '{name}'"
            )),
            rows as i64
        );
    }
    // Keep 12 months: January's months go (archived), February's stay (not archived), and
    // January's tape file is removed and recorded.
    let mut c = polytape(&db, &sim);
    c.args(["retention", "--keep", "12m"]);
    let o = output(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout(&o).contains("removed 1 book tape files"),
        "{}",
        stdout(&o)
    );
    assert_eq!(count("SELECT count(*) FROM book_snapshots"), 200);
    assert_eq!(count("SELECT count(*) FROM price_bars"), 100);
    assert_eq!(
        count("SELECT count(*) FROM side_partitions WHERE dropped_at IS NOT NULL"),
        2
    );
    assert!(
        !tape_file.exists(),
        "the tape file of a month dropped is removed"
    );
    assert_eq!(
        count("SELECT count(*) FROM book_files WHERE removed_at IS NOT NULL"),
        1
    );
    assert!(
        stdout(&o).contains("book_snapshot_2024_02"),
        "kept, unarchived: {}",
        stdout(&o)
    );
    let _ = std::fs::remove_dir_all(&out);
}
