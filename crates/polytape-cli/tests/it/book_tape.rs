//! The Parquet book tape against the simulator's true books: every file opens with every
//! held book and replays on its own, to exactly the true book of each token as of its last
//! row in the file; every file is recorded in `book_files` with its rows and hash.

use std::collections::HashMap;
use std::fs::File;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampMicrosecondType};
use arrow_array::{Array, Decimal128Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use polytape_sim::SimConfig;
use polytape_testkit::{TestDb, Watchdog, pipeline, wait_until};

use crate::daemon::{Daemon, polytape};

/// One row of a tape file.
struct Row {
    asset: String,
    ts_us: i64,
    local_us: i64,
    is_snapshot: bool,
    bid: bool,
    price: u64,
    amount: u64,
}

fn read_rows(path: &std::path::Path) -> Vec<Row> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).expect("open"))
        .expect("a Parquet file")
        .build()
        .expect("reader");
    let mut rows = Vec::new();
    for batch in reader {
        let b = batch.expect("batch");
        let dict = |i: usize| -> Vec<String> {
            let d = b.column(i).as_dictionary::<Int32Type>();
            let values = d.values().as_string::<i32>();
            d.keys()
                .iter()
                .map(|k| values.value(k.expect("no nulls") as usize).to_owned())
                .collect()
        };
        let (assets, sides) = (dict(0), dict(5));
        let ts = b.column(2).as_primitive::<TimestampMicrosecondType>();
        let local = b.column(3).as_primitive::<TimestampMicrosecondType>();
        let snap = b.column(4).as_boolean();
        let dec = |i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<Decimal128Array>()
                .expect("decimal")
                .clone()
        };
        let (price, amount) = (dec(6), dec(7));
        assert_eq!(
            (price.scale(), amount.scale()),
            (6, 6),
            "six decimals, exact"
        );
        for i in 0..b.num_rows() {
            rows.push(Row {
                asset: assets[i].clone(),
                ts_us: ts.value(i),
                local_us: local.value(i),
                is_snapshot: snap.value(i),
                bid: sides[i] == "bid",
                price: price.value(i) as u64,
                amount: amount.value(i) as u64,
            });
        }
    }
    rows
}

/// A token's book as a file replays it: the local time of its last row if a snapshot row,
/// its levels by (is bid, price), and its last row's time.
type Replayed = (Option<i64>, HashMap<(bool, u64), u64>, i64);

#[test]
fn every_tape_file_replays_on_its_own_to_the_true_books() {
    let _w = Watchdog::new("book tape", Duration::from_secs(150));
    let db = TestDb::new();
    let sim = pipeline::sim_with(SimConfig {
        noise_per_trade: 10,
        ..pipeline::sim_config(10, 40.0)
    });
    let dir = db.spool_dir().join("book-tape");
    let mut c = polytape(&db, &sim);
    c.args(["run"])
        .env("POLYTAPE_BOOK_SNAPSHOT_SECS", "1")
        .env("POLYTAPE_BOOK_TAPE_DIR", &dir)
        .env("POLYTAPE_BOOK_TAPE_ROLL_SECS", "2");
    let daemon = Daemon::spawn(c);
    let files = |db: &TestDb| db.count("book_files");
    assert!(
        wait_until(Duration::from_secs(60), || files(&db) >= 3),
        "three files written and recorded"
    );
    daemon.stop(Duration::from_secs(20));
    // The stop compressed nothing: the open period is left as its segment (and the period
    // before it, when the stop came within its grace for late rows, and a period whose file
    // was being finished, as their segments too); the next start finishes them.
    let others = |dir: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| !n.ends_with(".parquet") && n != ".lock")
            .collect();
        v.sort();
        v
    };
    let left = others(&dir);
    assert!(
        !left.is_empty() && left.len() <= 3 && left.iter().all(|n| n.ends_with(".segment")),
        "the open period's segment, nothing else: {left:?}"
    );
    let mut c = polytape(&db, &sim);
    c.args(["run"])
        .env("POLYTAPE_BOOK_SNAPSHOT_SECS", "1")
        .env("POLYTAPE_BOOK_TAPE_DIR", &dir)
        .env("POLYTAPE_BOOK_TAPE_ROLL_SECS", "3600");
    let again = Daemon::spawn(c);
    assert!(
        wait_until(Duration::from_secs(30), || others(&dir)
            .iter()
            .all(|n| !left.contains(n))),
        "the next start finishes what the stop left"
    );
    again.stop(Duration::from_secs(20));
    let mut client = db.client();
    let recorded = client
        .query(
            "SELECT path, rows, assets, bytes, sha256,
                    (extract(epoch FROM period_start) * 1e6)::bigint, write_error
             FROM book_files WHERE period_end - period_start < interval '1 minute'
             ORDER BY period_start",
            &[],
        )
        .expect("book_files");
    assert!(
        recorded.len() >= 4,
        "and the last period's, at the next start"
    );
    assert!(
        recorded
            .iter()
            .all(|r| r.get::<_, Option<String>>(6).is_none()),
        "every period written whole"
    );
    let (mut checked, mut events) = (0usize, 0usize);
    for (i, r) in recorded.iter().enumerate() {
        let path: String = r.get(0);
        let name = std::path::Path::new(&path)
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a name")
            .to_owned();
        assert!(
            name.starts_with("book_tape_") && name.ends_with(".parquet") && name.len() == 33,
            "book_tape_YYYYMMDDTHHMMSS.parquet: {name}"
        );
        let bytes = std::fs::read(&path).expect("the file is where book_files says");
        assert_eq!(bytes.len() as i64, r.get::<_, i64>(3), "bytes recorded");
        // The recorded hash is the file's.
        use sha2::Digest;
        let recorded_hash: String = r.get(4);
        let hash: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(recorded_hash, hash, "book_files.sha256 of {path}");
        let rows = read_rows(std::path::Path::new(&path));
        assert_eq!(rows.len() as i64, r.get::<_, i64>(1), "rows recorded");
        let assets: std::collections::HashSet<&str> =
            rows.iter().map(|r| r.asset.as_str()).collect();
        assert_eq!(assets.len() as i32, r.get::<_, i32>(2), "assets recorded");
        if i > 0 {
            // A file after the first opens with a snapshot of every held book.
            let start: i64 = r.get(5);
            let opening: std::collections::HashSet<&str> = rows
                .iter()
                .take_while(|r| r.is_snapshot && r.ts_us == start)
                .map(|r| r.asset.as_str())
                .collect();
            assert!(
                opening.len() >= 10,
                "file {i} opens with the held books: {}",
                opening.len()
            );
        }
        // Replay, alone, by the README's rule: a snapshot row after change rows, or of
        // another block (another local_timestamp), starts the token afresh.
        let mut books: HashMap<&str, Replayed> = HashMap::new();
        for row in &rows {
            let b = books.entry(&row.asset).or_insert((None, HashMap::new(), 0));
            if row.is_snapshot && b.0 != Some(row.local_us) {
                b.1.clear();
            }
            b.0 = row.is_snapshot.then_some(row.local_us);
            b.2 = row.ts_us;
            if row.amount == 0 {
                b.1.remove(&(row.bid, row.price));
            } else {
                b.1.insert((row.bid, row.price), row.amount);
            }
            events += usize::from(!row.is_snapshot);
        }
        for (asset, (_, levels, ts_us)) in &books {
            let truth = sim
                .book(asset, Some(ts_us.div_euclid(1000)))
                .expect("a known token");
            let mut want: HashMap<(bool, u64), u64> = HashMap::new();
            for (p, s) in &truth.bids {
                want.insert((true, u64::from(*p) * 100), *s);
            }
            for (p, s) in &truth.asks {
                want.insert((false, u64::from(*p) * 100), *s);
            }
            assert_eq!(
                levels, &want,
                "file {name}: {asset} replays to its true book"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 40 && events > 1_000,
        "{checked} books, {events} events checked"
    );
}

/// A crash (SIGKILL) leaves the open period's segment behind: the next start turns it into
/// its Parquet file, recorded in `book_files`, with what was received up to a second or so
/// before the kill.
#[test]
fn a_crash_leaves_a_segment_that_the_next_start_makes_a_file() {
    let _w = Watchdog::new("book tape crash", Duration::from_secs(150));
    let db = TestDb::new();
    let sim = pipeline::sim_with(SimConfig {
        noise_per_trade: 10,
        ..pipeline::sim_config(10, 40.0)
    });
    let dir = db.spool_dir().join("book-tape");
    let run = |roll: &str| {
        let mut c = polytape(&db, &sim);
        c.args(["run"])
            .env("POLYTAPE_BOOK_SNAPSHOT_SECS", "1")
            .env("POLYTAPE_BOOK_TAPE_DIR", &dir)
            .env("POLYTAPE_BOOK_TAPE_ROLL_SECS", roll);
        Daemon::spawn(c)
    };
    let segments = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "segment"))
                    .collect()
            })
            .unwrap_or_default()
    };
    // An hour's period: nothing rolls before the kill.
    let first = run("3600");
    assert!(
        wait_until(Duration::from_secs(60), || segments()
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 50_000))),
        "the segment grows (synced every second)"
    );
    first.signal("KILL");
    drop(first);
    let left = segments();
    assert_eq!(left.len(), 1, "one segment left by the crash: {left:?}");
    let left_bytes = std::fs::metadata(&left[0]).expect("segment").len();
    assert_eq!(
        db.count("book_files"),
        0,
        "nothing finished before the crash"
    );
    // The next start finishes it first.
    let second = run("3600");
    assert!(
        wait_until(Duration::from_secs(60), || db.count("book_files") >= 1),
        "the crash's segment becomes a file"
    );
    second.stop(Duration::from_secs(20));
    let mut client = db.client();
    let row = client
        .query_one(
            "SELECT path, rows FROM book_files ORDER BY period_start LIMIT 1",
            &[],
        )
        .expect("the first file");
    let path: String = row.get(0);
    let rows = read_rows(std::path::Path::new(&path));
    assert_eq!(rows.len() as i64, row.get::<_, i64>(1));
    // A segment row is ~190 bytes here (two ids of 77 and 66 characters, four 8-byte
    // numbers): the file holds every row the segment did.
    assert!(
        rows.len() as u64 >= left_bytes / 200 && rows.len() > 100,
        "the file holds what the segment held: {} rows from {left_bytes} bytes",
        rows.len()
    );
    // A clean stop leaves its own open period as a segment (the next start finishes it),
    // never the crash's.
    let now_left = segments();
    assert!(
        now_left.len() <= 1 && !now_left.contains(&left[0]),
        "the crash's segment is finished; at most the stop's own open period is left: {now_left:?}"
    );
}
