//! The spool's tests: order, restarts, torn tails, corruption, read errors, a full spool,
//! one process per folder.

use super::record::tests::trade;
use super::*;
use std::io::Read;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "polytape-spool-test-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn batch(from: u64, n: u64) -> Entry {
    Entry::Trades((from..from + n).map(trade).collect())
}

fn drain(spool: &mut Spool) -> Vec<Entry> {
    let mut out = Vec::new();
    while let Some((_, e)) = spool.peek().expect("peek") {
        out.push(e.clone());
        spool.consume().expect("consume");
    }
    out
}

#[test]
fn append_replay_in_order_and_delete() {
    let d = dir("order");
    let mut spool = Spool::open(&d, 1 << 30).expect("open");
    assert!(spool.is_empty());
    let entries: Vec<Entry> = (0..50).map(|i| batch(i * 10, 10)).collect();
    for e in &entries {
        spool.append(e, 7).expect("append");
    }
    assert!(!spool.is_empty() && spool.bytes() > 0);
    assert_eq!(spool.peek().expect("peek").map(|(at, _)| at), Some(7));
    assert_eq!(drain(&mut spool), entries);
    assert!(spool.is_empty());
    assert_eq!(spool.segments(), 0, "replayed segments are deleted");
    // Appends after a full replay start a new segment and replay too.
    spool.append(&batch(0, 1), 8).expect("append");
    assert_eq!(drain(&mut spool), vec![batch(0, 1)]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_spool_survives_a_restart_and_a_torn_tail_is_cut() {
    let d = dir("restart");
    let entries: Vec<Entry> = (0..5).map(|i| batch(i * 3, 3)).collect();
    {
        let mut spool = Spool::open(&d, 1 << 30).expect("open");
        for e in &entries {
            spool.append(e, 1).expect("append");
        }
    }
    // A crash mid-append: half a record at the end.
    let seg = d.join(format!("{:020}.seg", 1));
    let mut f = OpenOptions::new().append(true).open(&seg).expect("seg");
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9])
        .expect("torn");
    drop(f);
    let mut spool = Spool::open(&d, 1 << 30).expect("reopen");
    assert_eq!(
        drain(&mut spool),
        entries,
        "whole records replayed, the torn one cut"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_corrupt_record_is_skipped_counted_and_never_parsed() {
    let d = dir("corrupt");
    {
        // One record per segment.
        let mut spool = Spool::open_with(&d, 1 << 30, 1).expect("open");
        spool.append(&batch(0, 2), 1).expect("append");
        spool.append(&batch(2, 2), 1).expect("append");
        assert_eq!(spool.segments(), 2);
    }
    // Flip a byte inside the first record's payload.
    let seg = d.join(format!("{:020}.seg", 1));
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[20] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");
    let mut spool = Spool::open_with(&d, 1 << 30, 1).expect("reopen");
    // cut_torn_tail looks only at the tail; reading finds the bad CRC in the middle.
    let got = drain(&mut spool);
    // Only the segment with the bad CRC is skipped; the next one replays.
    assert_eq!(
        got,
        vec![batch(2, 2)],
        "nothing in a corrupt record is guessed at"
    );
    assert_eq!(spool.corrupt, 1);
    assert_eq!(spool.segments(), 0);
    let _ = std::fs::remove_dir_all(&d);
}

/// What was skipped is a window the writer can record as a gap: from the last record
/// read to the next one readable.
#[test]
fn skipped_records_are_a_window_from_the_last_read_to_the_next() {
    let d = dir("skipped-window");
    {
        let mut spool = Spool::open_with(&d, 1 << 30, 1).expect("open");
        spool.append(&batch(0, 2), 1_000).expect("append");
        spool.append(&batch(2, 2), 2_000).expect("append");
        spool.append(&batch(4, 2), 3_000).expect("append");
    }
    let seg = d.join(format!("{:020}.seg", 2));
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[20] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");
    let mut spool = Spool::open_with(&d, 1 << 30, 1).expect("reopen");
    let got = drain(&mut spool);
    assert_eq!(got, vec![batch(0, 2), batch(4, 2)]);
    assert_eq!(spool.take_skipped(), vec![(1_000, 3_000)]);
    assert!(spool.take_skipped().is_empty(), "taken once");
    let _ = std::fs::remove_dir_all(&d);
}

/// A read that fails on the device (EIO) is an error to retry, not corruption: nothing
/// is skipped, nothing deleted.
#[test]
fn an_io_error_is_not_taken_for_corruption() {
    struct FailingDisk;
    impl Read for FailingDisk {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("Input/output error (EIO)"))
        }
    }
    let e = read_record(&mut FailingDisk, 100).expect_err("fails");
    assert_ne!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert_eq!(e.kind(), io::ErrorKind::Other);
    // Cut short is still corruption (or a torn tail).
    let e = read_record(&mut &[1u8, 2, 3][..], 100).expect_err("short");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn full_means_nothing_written_and_room_comes_back_after_replay() {
    let d = dir("full");
    let mut one = Vec::new();
    record::encode(&batch(0, 10), 0, &mut one);
    let record_bytes = one.len() as u64 + HEADER;
    // Room for three records of about this size, not four.
    let mut spool = Spool::open(&d, record_bytes * 3 + 400).expect("open");
    for i in 0..3 {
        spool.append(&batch(i, 10), 0).expect("fits");
    }
    assert!(matches!(
        spool.append(&batch(9, 10), 0),
        Err(AppendError::Full)
    ));
    assert!(spool.bytes() <= record_bytes * 3 + 400);
    assert_eq!(drain(&mut spool).len(), 3);
    spool.append(&batch(9, 10), 0).expect("room again");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn one_process_per_spool() {
    let d = dir("lock");
    let _first = Spool::open(&d, 1 << 20).expect("open");
    let second = Spool::open(&d, 1 << 20);
    assert!(second.is_err_and(|e| e.to_string().contains("in use")));
    let _ = std::fs::remove_dir_all(&d);
}
