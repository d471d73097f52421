//! The full-resolution book tape (issue 18): every book event every connection applied, in
//! the convention researchers use for incremental L2 data (Tardis `incremental_book_L2`), in
//! files that each replay on their own.
//!
//! The connections send rows here (a full queue makes a reader wait, never drop). One
//! thread appends them to a CRC-framed segment on local disk (the spool's framing) and
//! syncs it every second, so a crash loses nothing received more than a second or two
//! before it. At each boundary of the roll period the next segment begins, and each
//! connection, as it crosses the boundary, sends it every book it holds as the period's
//! opening, ahead of any row it received after the boundary: so each file replays alone,
//! from the connections' own books (the tape thread keeps no copy of them). A connection's
//! rows received before the boundary that reach the tape after it (it was busy) still go to
//! the period they belong to, which stays open for them a grace of a few seconds past its
//! end. A closed segment becomes the tape file
//! on a second thread: written by the [`TapeFinisher`] (the CLI's Parquet writer) beside its
//! final name, synced, hashed, renamed, recorded in `book_files`, and only then deleted.
//! Segments a crash left behind are finished the same way at the next start.
//!
//! A book that desyncs, or a token no longer held, is left out of its connection's openings
//! until a fresh book arrives, which the connection writes as snapshot rows. **The replay
//! rule** (README): every `book` is one block of
//! snapshot rows sharing one `local_timestamp` (each event a socket delivers gets its own),
//! so a token's book starts afresh at a snapshot row that follows a change row of that token
//! *or* whose `local_timestamp` differs from the token's previous snapshot row's: two books
//! in a row replace, never merge. A file's opening snapshot is stamped one microsecond
//! before its period, so no `book` of the period can share its stamp.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::number::{Price, Side, Size};
use super::segment::{self, Decoder, Encoder};
use crate::health::Health;
use crate::spool::frame::{self, HEADER};

/// One row of the tape: one level of one token after one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapeRow {
    /// The token.
    pub asset_id: Arc<str>,
    /// Its market (condition id).
    pub market: Arc<str>,
    /// The event's own time (Unix µs).
    pub timestamp_us: i64,
    /// When polytape received it (Unix µs).
    pub local_timestamp_us: i64,
    /// Part of a snapshot (a `book`, or a file's opening state) rather than a change.
    pub is_snapshot: bool,
    /// The level's side.
    pub side: Side,
    /// The level's price.
    pub price: Price,
    /// The level's total after the event (zero: removed).
    pub amount: Size,
}

/// Writes a closed period's rows as the tape file: the CLI's Parquet writer.
pub trait TapeFinisher: Send + Sync {
    /// Writes every row of `rows`, in order, to a new file at `path`. An error in `rows`
    /// (a segment the disk cannot read) must fail the write.
    fn write(
        &self,
        rows: &mut dyn Iterator<Item = io::Result<TapeRow>>,
        path: &Path,
    ) -> io::Result<()>;
}

/// What the connections send.
pub(crate) enum TapeMsg {
    /// Rows, in the order their events were applied.
    Rows(Vec<TapeRow>),
    /// A connection's books as it crossed the boundary starting the period at `start_us`:
    /// one snapshot block per token, stamped one microsecond before the boundary (no `book`
    /// of the period can share the stamp).
    Opening { start_us: i64, rows: Vec<TapeRow> },
    /// Rows a connection dropped because the tape was behind (rows, tokens): the open
    /// period's file records the loss.
    Lost(u64, u64),
}

/// The roll period in µs (at least a second): the tape thread's and the connections' own.
pub(crate) fn tape_roll_us(roll: Duration) -> i64 {
    roll.as_micros().clamp(1_000_000, i64::MAX as u128) as i64
}

/// How long a period stays open past its end for rows received before the end that reach
/// the tape later (a connection that was busy): at most this, and half the roll period.
const GRACE_US: i64 = 5_000_000;

/// How long the tape thread naps between drains of its channel while rows keep coming.
const NAP: Duration = Duration::from_millis(5);

/// How often the open segment is written out and synced.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// A file's name: `book_tape_YYYYMMDDTHHMMSS` (its UTC start) and an extension.
fn file_name(start_us: i64, ext: &str) -> String {
    let t = DateTime::<Utc>::from_timestamp_micros(start_us).unwrap_or_default();
    format!("book_tape_{}.{ext}", t.format("%Y%m%dT%H%M%S"))
}

/// The period boundary after `t_us`.
pub(crate) fn next_boundary(t_us: i64, roll_us: i64) -> i64 {
    (t_us.div_euclid(roll_us) + 1) * roll_us
}

/// The tape's writer: runs on its own thread until every sender is gone.
pub(crate) struct BookTape {
    dir: PathBuf,
    roll_us: i64,
    rx: Receiver<TapeMsg>,
    health: Health,
    /// The open period.
    segment: Option<Segment>,
    /// The period before it, open for late rows until its grace ends.
    previous: Option<Segment>,
    finish_tx: Option<Sender<Job>>,
    finisher_thread: Option<std::thread::JoinHandle<()>>,
    /// Held for the tape's life: one process writes a tape folder.
    _lock: File,
}

struct Segment {
    path: PathBuf,
    file: File,
    start_us: i64,
    end_us: i64,
    buf: Vec<u8>,
    pending: usize,
    synced: Instant,
    /// Bytes written whole (a failed write is cut back to here, so what follows it reads).
    good_len: u64,
    /// What went wrong writing this period, and the rows it lost.
    error: Option<String>,
    lost: u64,
    /// Writes the rows of the record being gathered.
    enc: Encoder,
}

impl Segment {
    /// Records that this period lost `rows` (`why`), beside its segment too.
    fn record_loss(&mut self, why: &str, rows: u64) {
        self.lost += rows;
        let note = match &self.error {
            Some(e) => format!("{e}; {why}"),
            None => why.to_owned(),
        };
        let _ = fs::write(failure_note(&self.path), &note);
        self.error = Some(note);
    }

    /// Writes out and syncs what it gathered.
    fn sync(&mut self, health: &Health) {
        self.synced = Instant::now();
        if self.pending == 0 {
            return;
        }
        frame::seal(&mut self.buf);
        let result = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.good_len += self.buf.len() as u64;
                health
                    .books()
                    .tape_rows
                    .fetch_add(self.pending as u64, Relaxed);
            }
            Err(e) => {
                // A torn write is cut back, so the rows written after it still read (they
                // were read as a torn tail, and the rest of the period dropped while its file
                // was recorded complete); the period is recorded as failed, here and beside
                // the segment (a crash must not forget it).
                let cut = OpenOptions::new()
                    .write(true)
                    .open(&self.path)
                    .and_then(|f| f.set_len(self.good_len));
                if let Err(c) = cut {
                    log::error!("book tape: cannot cut {} back ({c})", self.path.display());
                }
                let pending = self.pending as u64;
                self.record_loss(&format!("{pending} rows not written: {e}"), pending);
                health.books().tape_rows_lost.fetch_add(pending, Relaxed);
                log::error!(
                    "book tape: cannot write a segment ({e}); {pending} rows lost from the \
                     tape, the period is recorded as failed"
                );
            }
        }
        self.buf.clear();
        self.pending = 0;
    }
}

/// A closed segment to turn into its file.
struct Job {
    segment: PathBuf,
    start_us: i64,
    end_us: Option<i64>,
}

/// The file beside a segment that says its period lost rows (it outlives a crash).
fn failure_note(segment: &Path) -> PathBuf {
    segment.with_extension("failed")
}

impl BookTape {
    /// The tape in `dir` rolling every `roll`; leftover segments are finished first (on the
    /// finisher thread). Files are recorded through `database_url`.
    pub(crate) fn start(
        dir: PathBuf,
        roll: Duration,
        health: Health,
        finisher: Arc<dyn TapeFinisher>,
        database_url: String,
        statement_timeout: Duration,
    ) -> io::Result<(Sender<TapeMsg>, std::thread::JoinHandle<()>)> {
        fs::create_dir_all(&dir)?;
        // One process per tape folder: two would write the same periods' segments.
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))?;
        if let Err(e) = lock.try_lock() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another process writes the book tape in {} ({e}): one process a folder",
                    dir.display()
                ),
            ));
        }
        let (tx, rx) = crossbeam_channel::bounded(4096);
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
        let mut leftovers: Vec<PathBuf> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "segment"))
            .collect();
        leftovers.sort();
        for segment in leftovers {
            let Some(start_us) = segment_start(&segment) else {
                log::warn!(
                    "book tape: {} is not a segment of ours; left alone",
                    segment.display()
                );
                continue;
            };
            log::info!(
                "book tape: finishing {} left by an earlier run",
                segment.display()
            );
            let _ = job_tx.send(Job {
                segment,
                start_us,
                end_us: None,
            });
        }
        let finisher_health = health.clone();
        let finisher_thread = std::thread::Builder::new()
            .name("polytape-files".into())
            .spawn(move || {
                let mut files = Files {
                    finisher,
                    health: finisher_health,
                    database_url,
                    statement_timeout,
                    db: None,
                };
                for job in job_rx {
                    files.finish(&job);
                }
            })?;
        let tape = BookTape {
            dir,
            roll_us: tape_roll_us(roll),
            rx,
            health,
            segment: None,
            previous: None,
            finish_tx: Some(job_tx),
            finisher_thread: Some(finisher_thread),
            _lock: lock,
        };
        let thread = std::thread::Builder::new()
            .name("polytape-tape".into())
            .spawn(move || tape.run())?;
        Ok((tx, thread))
    }

    fn run(mut self) {
        // Under load, rows come from every socket every few milliseconds. A thread that
        // blocks on the empty channel after each message is woken for nearly every one (a
        // futex wake the sender pays, and crossbeam's spin and yields before parking): that
        // was a third of this thread's time. So once a message came, the thread drains the
        // channel, naps, and drains again; it blocks only when a nap brought nothing. A nap
        // lets at most a few hundred messages gather, far from the channel's 4,096.
        let mut busy = false;
        loop {
            let next = if busy {
                match self.rx.try_recv() {
                    Ok(msg) => Ok(msg),
                    Err(TryRecvError::Empty) => {
                        std::thread::sleep(NAP);
                        busy = false;
                        Err(RecvTimeoutError::Timeout)
                    }
                    Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                }
            } else {
                self.rx.recv_timeout(Duration::from_millis(250))
            };
            busy |= next.is_ok();
            match next {
                Ok(TapeMsg::Rows(rows)) => {
                    for row in rows {
                        self.row(row);
                    }
                }
                Ok(TapeMsg::Opening { start_us, rows }) => self.opening(start_us, rows),
                Ok(TapeMsg::Lost(rows, tokens)) => {
                    self.lost(
                        &format!("{rows} rows of {tokens} tokens dropped: the tape was behind"),
                        rows,
                    );
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if let Some(seg) = &self.segment
                && seg.synced.elapsed() >= SYNC_EVERY
            {
                self.sync();
            }
            // A quiet tape still rolls on time, and a period's grace ends on time.
            let now = crate::health::now_us();
            if self.segment.as_ref().is_some_and(|s| now >= s.end_us) {
                self.roll(now);
            }
            if self
                .previous
                .as_ref()
                .is_some_and(|p| now >= p.end_us + self.grace_us())
            {
                self.close_previous();
            }
        }
        // A stop: the open period is synced and left as its segment, which the next start
        // makes its file; the stop waits for no compression (an hour of rows through zstd
        // would hold the run's clean stop). Files being finished now go on while the
        // process lives; a segment not finished stays for the next start.
        self.sync();
        for seg in [self.previous.take(), self.segment.take()]
            .into_iter()
            .flatten()
        {
            log::info!(
                "book tape: {} left for the next start to finish",
                seg.path.display()
            );
        }
        drop(self.finish_tx.take());
        drop(self.finisher_thread.take());
    }

    fn grace_us(&self) -> i64 {
        GRACE_US.min(self.roll_us / 2)
    }

    fn row(&mut self, row: TapeRow) {
        let at = row.local_timestamp_us;
        if self.segment.as_ref().is_none_or(|s| at >= s.end_us) {
            self.roll(at);
        }
        let late = self.belongs_to_previous(at);
        self.append(&row, late);
    }

    /// Whether a row (or an opening) of time `at` goes to the period still in its grace:
    /// it is before the open period and within that one.
    fn belongs_to_previous(&self, at: i64) -> bool {
        self.segment.as_ref().is_some_and(|s| at < s.start_us)
            && self.previous.as_ref().is_some_and(|p| at >= p.start_us)
    }

    /// A connection's books as it crossed the boundary at `start_us`. They open that period
    /// when it is the open one (or the one in its grace); a connection so far behind that
    /// the tape has moved on opens the open period with them instead (its rows after the
    /// boundary are all still to come, after these), stamped as that period's opening.
    fn opening(&mut self, start_us: i64, mut rows: Vec<TapeRow>) {
        if self.segment.as_ref().is_none_or(|s| start_us >= s.end_us) {
            self.roll(start_us);
        }
        let previous = self.belongs_to_previous(start_us);
        let target = if previous {
            self.previous.as_ref()
        } else {
            self.segment.as_ref()
        };
        if let Some(seg) = target
            && seg.start_us != start_us
        {
            for r in &mut rows {
                r.timestamp_us = seg.start_us;
                r.local_timestamp_us = seg.start_us - 1;
            }
        }
        for row in &rows {
            self.append(row, previous);
        }
    }

    /// Appends `row` to the open period, or to the one in its grace (`previous`).
    fn append(&mut self, row: &TapeRow, previous: bool) {
        let slot = if previous {
            &mut self.previous
        } else {
            &mut self.segment
        };
        let Some(seg) = slot else {
            return;
        };
        if seg.buf.is_empty() {
            seg.buf.extend_from_slice(&[0; HEADER as usize]);
            seg.enc.start();
        }
        seg.enc.row(row, &mut seg.buf);
        seg.pending += 1;
        if seg.buf.len() >= 4 << 20 {
            self.sync();
        }
    }

    /// Ends the grace of the period before the open one: its file is made.
    fn close_previous(&mut self) {
        if let Some(mut seg) = self.previous.take() {
            seg.sync(&self.health);
            self.close(seg, None);
        }
    }

    /// Records that the open period lost `rows` (`why`), beside its segment too.
    fn lost(&mut self, why: &str, rows: u64) {
        let now = crate::health::now_us();
        if self.segment.is_none() {
            self.roll(now);
        }
        if let Some(seg) = &mut self.segment {
            seg.record_loss(why, rows);
        }
    }

    /// Writes out and syncs what the open segment, and the one in its grace, gathered.
    fn sync(&mut self) {
        for seg in [&mut self.previous, &mut self.segment]
            .into_iter()
            .flatten()
        {
            seg.sync(&self.health);
        }
    }

    /// Opens the period holding `at_us`; the open one (if any) keeps late rows for its
    /// grace. The connections send the new period's opening books as they cross into it.
    fn roll(&mut self, at_us: i64) {
        self.sync();
        // A period still in its grace when the next one rolls (a tape far behind) is done.
        self.close_previous();
        let start_us = match self.segment.take() {
            Some(seg) => {
                let boundary = seg.end_us;
                // The next period starts at the boundary when it follows straight on.
                if at_us < boundary + self.roll_us {
                    self.previous = Some(seg);
                    boundary
                } else {
                    self.close(seg, None);
                    at_us
                }
            }
            // A run's first period.
            None => self.free_start(at_us),
        };
        let path = self.dir.join(file_name(start_us, "segment"));
        let file = match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => f,
            Err(e) => {
                log::error!(
                    "book tape: cannot open {} ({e}); no tape until it can",
                    path.display()
                );
                return;
            }
        };
        let mut good_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if good_len == 0 {
            // A new segment says its format first.
            let magic = magic_record();
            if let Err(e) = (&file).write_all(&magic) {
                log::error!(
                    "book tape: cannot write {} ({e}); no tape until it can",
                    path.display()
                );
                let _ = fs::remove_file(&path);
                return;
            }
            good_len = magic.len() as u64;
        }
        self.segment = Some(Segment {
            path,
            file,
            start_us,
            end_us: next_boundary(start_us, self.roll_us),
            buf: Vec::new(),
            pending: 0,
            synced: Instant::now(),
            good_len,
            error: None,
            lost: 0,
            enc: Encoder::default(),
        });
    }

    /// The start of a run's first period: `at_us`, unless a period an earlier run left has
    /// that second's name (a restart within the second it started), as a segment or, once
    /// finished, a file. Then the next second whose names are both free, so the earlier
    /// period is neither appended to nor replaced (files are named to the second). The
    /// finisher renames a file into place before it removes the segment: one of the two
    /// names is always there while a leftover is being finished.
    fn free_start(&self, at_us: i64) -> i64 {
        let mut start = at_us;
        while ["segment", "parquet"]
            .iter()
            .any(|ext| self.dir.join(file_name(start, ext)).exists())
        {
            start = (start.div_euclid(1_000_000) + 1) * 1_000_000;
        }
        start
    }

    fn close(&mut self, seg: Segment, end_us: Option<i64>) {
        drop(seg.file);
        if let Some(tx) = &self.finish_tx {
            let _ = tx.send(Job {
                segment: seg.path,
                start_us: seg.start_us,
                end_us: Some(end_us.unwrap_or(seg.end_us)),
            });
        }
    }
}

/// A segment's first record: the magic that says its rows are in the compact format.
fn magic_record() -> Vec<u8> {
    let mut magic = vec![0; HEADER as usize];
    magic.extend_from_slice(segment::MAGIC);
    frame::seal(&mut magic);
    magic
}

/// The start of a segment, from its name.
fn segment_start(path: &Path) -> Option<i64> {
    let stem = path.file_stem()?.to_str()?.strip_prefix("book_tape_")?;
    let t = chrono::NaiveDateTime::parse_from_str(stem, "%Y%m%dT%H%M%S").ok()?;
    Some(t.and_utc().timestamp_micros())
}

/// Turns closed segments into files.
struct Files {
    finisher: Arc<dyn TapeFinisher>,
    health: Health,
    database_url: String,
    statement_timeout: Duration,
    db: Option<postgres::Client>,
}

impl Files {
    fn finish(&mut self, job: &Job) {
        match self.try_finish(job) {
            Ok(Some(path)) => log::info!("book tape: {} written", path.display()),
            Ok(None) => {}
            Err(e) => log::error!(
                "book tape: cannot finish {} ({e}); it stays, and the next start tries again",
                job.segment.display()
            ),
        }
    }

    fn try_finish(&mut self, job: &Job) -> crate::Result<Option<PathBuf>> {
        let dir = job.segment.parent().unwrap_or(Path::new("."));
        let final_path = dir.join(file_name(job.start_us, "parquet"));
        let tmp = dir.join(format!(".{}.tmp", file_name(job.start_us, "parquet")));
        let mut reader = SegmentRows::open(&job.segment)?;
        let note = failure_note(&job.segment);
        let write_error = fs::read_to_string(&note).ok();
        if reader.is_empty() && write_error.is_none() {
            fs::remove_file(&job.segment)?;
            return Ok(None);
        }
        self.finisher.write(&mut reader, &tmp)?;
        let (rows, assets, last_us) = (reader.rows, reader.assets.len(), reader.last_us);
        File::open(&tmp)?.sync_all()?;
        let (bytes, sha256) = hash_file(&tmp)?;
        fs::rename(&tmp, &final_path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        let end_us = job.end_us.unwrap_or(last_us + 1);
        self.record(
            &final_path,
            job.start_us,
            end_us,
            rows,
            assets,
            bytes,
            &sha256,
            write_error.as_deref(),
        )?;
        fs::remove_file(&job.segment)?;
        if write_error.is_some() {
            let _ = fs::remove_file(&note);
        }
        let stats = self.health.books();
        stats.tape_bytes.fetch_add(bytes, Relaxed);
        stats.tape_files.fetch_add(1, Relaxed);
        Ok(Some(final_path))
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        path: &Path,
        start_us: i64,
        end_us: i64,
        rows: u64,
        assets: usize,
        bytes: u64,
        sha256: &str,
        write_error: Option<&str>,
    ) -> crate::Result<()> {
        let time = |us| DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default();
        let db = match &mut self.db {
            Some(db) => db,
            None => self.db.insert(crate::store::connect_with(
                &self.database_url,
                self.statement_timeout,
            )?),
        };
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let result = db.execute(
            "INSERT INTO book_files (path, period_start, period_end, rows, assets, bytes, sha256,
                                     write_error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (path) DO UPDATE SET period_start = EXCLUDED.period_start,
                 period_end = EXCLUDED.period_end, rows = EXCLUDED.rows,
                 assets = EXCLUDED.assets, bytes = EXCLUDED.bytes, sha256 = EXCLUDED.sha256,
                 write_error = EXCLUDED.write_error, written_at = now()",
            &[
                &path.to_string_lossy().as_ref(),
                &time(start_us),
                &time(end_us),
                &(rows as i64),
                &(assets as i32),
                &(bytes as i64),
                &sha256,
                &write_error,
            ],
        );
        if result.is_err() {
            self.db = None; // a fresh connection next time
        }
        result?;
        Ok(())
    }
}

fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut f = BufReader::new(File::open(path)?);
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    let digest = hasher.finalize();
    Ok((bytes, digest.iter().map(|b| format!("{b:02x}")).collect()))
}

/// The rows of a segment, record by record; a torn tail (a crash mid-write) ends it.
struct SegmentRows {
    reader: BufReader<File>,
    left: u64,
    record: Vec<u8>,
    at: usize,
    /// The segment opened with the magic record (else it is of the first format).
    compact: bool,
    decoder: Decoder,
    names: HashMap<Vec<u8>, Arc<str>>,
    rows: u64,
    /// The distinct tokens read, by address: the reader hands out one `Arc` per distinct
    /// id, so an address is an id, and a row costs no hash of its 77-byte id.
    assets: std::collections::HashSet<usize, ahash::RandomState>,
    /// The last row's token (rows come in runs of one token).
    last_asset: usize,
    last_us: i64,
}

impl SegmentRows {
    fn open(path: &Path) -> io::Result<SegmentRows> {
        let file = File::open(path)?;
        let left = file.metadata()?.len();
        let mut rows = SegmentRows {
            reader: BufReader::new(file),
            left,
            record: Vec::new(),
            at: 0,
            compact: false,
            decoder: Decoder::default(),
            names: HashMap::new(),
            rows: 0,
            assets: std::collections::HashSet::default(),
            last_asset: 0,
            last_us: 0,
        };
        // The first record says the format: the magic, or already rows of the first one.
        if let Some(first) = rows.next_record()? {
            if first == segment::MAGIC {
                rows.compact = true;
            } else {
                rows.record = first;
            }
        }
        Ok(rows)
    }

    /// The next record's payload; `None` at the end or at a torn tail (the rest is cut).
    fn next_record(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.left == 0 {
            return Ok(None);
        }
        match frame::read_record(&mut self.reader, self.left) {
            Ok((len, payload)) => {
                self.left -= len;
                Ok(Some(payload))
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                log::warn!("book tape: a segment ends in a torn record ({e}); the rest is cut");
                self.left = 0;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether it holds no row.
    fn is_empty(&self) -> bool {
        self.left == 0 && self.at >= self.record.len()
    }
}

impl Iterator for SegmentRows {
    type Item = io::Result<TapeRow>;

    fn next(&mut self) -> Option<io::Result<TapeRow>> {
        while self.at >= self.record.len() {
            match self.next_record() {
                Ok(Some(payload)) => {
                    self.record = payload;
                    self.at = 0;
                    self.decoder.start();
                }
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
        let mut rest = &self.record[self.at..];
        let before = rest.len();
        let row = if self.compact {
            self.decoder.row(&mut rest, &mut self.names)
        } else {
            segment::legacy_row(&mut rest, &mut self.names)
        };
        let Some(row) = row else {
            self.record.clear();
            self.at = 0;
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a segment row that passed its CRC does not decode",
            )));
        };
        self.at += before - rest.len();
        self.rows += 1;
        self.last_us = self.last_us.max(row.local_timestamp_us);
        let asset = Arc::as_ptr(&row.asset_id).cast::<u8>() as usize;
        if asset != self.last_asset {
            self.last_asset = asset;
            self.assets.insert(asset);
        }
        Some(Ok(row))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn tape_row(
        asset: &str,
        local: i64,
        snap: bool,
        side: Side,
        price: &str,
        amount: &str,
    ) -> TapeRow {
        TapeRow {
            asset_id: Arc::from(asset),
            market: Arc::from("0xm"),
            timestamp_us: local,
            local_timestamp_us: local,
            is_snapshot: snap,
            side,
            price: Price::parse(price).expect("p"),
            amount: Size::parse(amount).expect("s"),
        }
    }

    /// A replayed book: the local time of its last row if a snapshot row, its levels.
    type ReplayBook = (Option<i64>, std::collections::BTreeMap<(bool, u64), u64>);

    /// The README's replay rule, written here on its own (not the connections' code): per token,
    /// a snapshot row after a change row or of another `local_timestamp` starts afresh.
    pub(crate) fn replay(rows: &[TapeRow]) -> HashMap<String, Vec<(bool, u64, u64)>> {
        let mut books: HashMap<String, ReplayBook> = HashMap::new();
        for r in rows {
            let b = books.entry(r.asset_id.to_string()).or_default();
            if r.is_snapshot && b.0 != Some(r.local_timestamp_us) {
                b.1.clear();
            }
            b.0 = r.is_snapshot.then_some(r.local_timestamp_us);
            let key = (r.side == Side::Bid, r.price.units());
            if r.amount.is_zero() {
                b.1.remove(&key);
            } else {
                b.1.insert(key, r.amount.units());
            }
        }
        books
            .into_iter()
            .map(|(a, (_, l))| (a, l.into_iter().map(|((bid, p), s)| (bid, p, s)).collect()))
            .collect()
    }

    /// A finisher that writes nothing (the tests here never finish a period).
    struct NoFinish;
    impl TapeFinisher for NoFinish {
        fn write(
            &self,
            _: &mut dyn Iterator<Item = io::Result<TapeRow>>,
            _: &Path,
        ) -> io::Result<()> {
            Ok(())
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "polytape-tape-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn one_process_a_tape_folder() {
        let dir = scratch("lock");
        let start = || {
            BookTape::start(
                dir.clone(),
                Duration::from_secs(3600),
                Health::new(),
                Arc::new(NoFinish),
                "host=127.0.0.1 port=9".into(),
                Duration::from_secs(1),
            )
        };
        let (tx, thread) = start().expect("the first takes the folder");
        let second = start().map(|_| ()).expect_err("the second is refused");
        assert!(
            second.to_string().contains("one process a folder"),
            "{second}"
        );
        drop(tx);
        thread.join().expect("the tape thread ends");
        let (tx, thread) = start().expect("free again once the first is gone");
        drop(tx);
        thread.join().expect("ends");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A tape on `dir` with hour-long periods, no finisher and nothing open, driven by the
    /// test itself (its sender, to keep the channel open).
    fn bare_tape(dir: &Path) -> (BookTape, Sender<TapeMsg>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let tape = BookTape {
            dir: dir.to_path_buf(),
            roll_us: 3_600_000_000,
            rx,
            health: Health::new(),
            segment: None,
            previous: None,
            finish_tx: None,
            finisher_thread: None,
            _lock: File::create(dir.join(".lock")).expect("lock file"),
        };
        (tape, tx)
    }

    #[test]
    fn a_first_period_never_takes_the_name_of_one_an_earlier_run_left() {
        let dir = scratch("names");
        let s = 1_700_000_000_000_000i64;
        // An earlier run's period of second s, not finished yet, and one of s + 1, finished.
        let leftover = dir.join(file_name(s, "segment"));
        fs::write(&leftover, b"earlier").expect("leftover");
        fs::write(dir.join(file_name(s + 1_000_000, "parquet")), b"x").expect("file");
        let (mut tape, _tx) = bare_tape(&dir);
        // A restart 0.4 s into second s.
        tape.roll(s + 400_000);
        let seg = tape.segment.as_ref().expect("a segment is open");
        assert_eq!(
            seg.start_us,
            s + 2_000_000,
            "the next second both names are free"
        );
        assert_eq!(seg.path, dir.join(file_name(s + 2_000_000, "segment")));
        assert_eq!(fs::read(&leftover).expect("still there"), b"earlier");
        // No name taken: the period starts where it is asked to.
        assert_eq!(tape.free_start(s + 3_500_000), s + 3_500_000);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_write_is_cut_back_and_its_period_recorded_as_failed() {
        let dir = scratch("torn");
        let (mut tape, _tx) = bare_tape(&dir);
        let path = dir.join(file_name(1_000_000_000_000_000, "segment"));
        let at = 1_000_000_000_000_100;
        let open = |path: &Path, writable: bool| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .read(!writable)
                .write(writable)
                .open(path)
                .expect("segment")
        };
        let segment = |file: File| Segment {
            path: path.clone(),
            file,
            start_us: 1_000_000_000_000_000,
            end_us: 1_000_000_003_600_000,
            buf: Vec::new(),
            pending: 0,
            synced: Instant::now(),
            good_len: 0,
            error: None,
            lost: 0,
            enc: Encoder::default(),
        };
        // One good write, then a write that fails (a file the disk will not take), then a
        // good one again.
        let magic = magic_record();
        fs::write(&path, &magic).expect("magic");
        tape.segment = Some(Segment {
            good_len: magic.len() as u64,
            ..segment(open(&path, true))
        });
        tape.append(&tape_row("A", at, true, Side::Bid, "0.4", "1"), false);
        tape.sync();
        let good = tape.segment.as_ref().map_or(0, |s| s.good_len);
        assert!(good > 0);
        // A write torn by a full disk: part of a record on disk, then ENOSPC.
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&[0x55; 7]))
            .expect("a torn record");
        let full = OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let mut broken = segment(full);
        broken.good_len = good;
        tape.segment = Some(broken);
        tape.append(&tape_row("A", at + 1, false, Side::Bid, "0.4", "2"), false);
        tape.sync();
        assert_eq!(tape.health.books().tape_rows_lost.load(Relaxed), 1);
        let note = fs::read_to_string(failure_note(&path)).expect("the failure is noted");
        assert!(note.contains("1 rows not written"), "{note}");
        let mut fixed = segment(open(&path, true));
        fixed.good_len = good;
        fixed.error = tape.segment.as_ref().and_then(|s| s.error.clone());
        tape.segment = Some(fixed);
        tape.append(&tape_row("A", at + 2, false, Side::Ask, "0.5", "3"), false);
        tape.sync();
        // What was written whole reads, before and after the failure: nothing is taken for
        // a torn tail.
        let rows: Vec<TapeRow> = SegmentRows::open(&path)
            .expect("open")
            .collect::<io::Result<_>>()
            .expect("every record reads");
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[1].amount, Size::parse("3").expect("s"));
        let _ = fs::remove_dir_all(&dir);
    }

    /// The rows of every segment in `dir`, by its start.
    fn segments(dir: &Path) -> std::collections::BTreeMap<i64, Vec<TapeRow>> {
        fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| Some((segment_start(&p)?, p)))
            .map(|(start, p)| {
                let rows = SegmentRows::open(&p)
                    .expect("open")
                    .collect::<io::Result<_>>()
                    .expect("reads");
                (start, rows)
            })
            .collect()
    }

    /// Two connections cross a boundary at different moments. Each one's rows received
    /// before the boundary go to the period they belong to while it is in its grace, even
    /// after the tape rolled; each one's opening opens the new period; an opening so late
    /// that the tape moved on opens the open period instead, restamped as its opening. Every
    /// period replays, on its own, to the books the rows built (an independent replay).
    #[test]
    fn openings_and_late_rows_go_to_the_periods_they_belong_to() {
        use Side::{Ask, Bid};
        let dir = scratch("openings");
        let (mut tape, _tx) = bare_tape(&dir);
        tape.roll_us = 10_000_000;
        let h = 1_700_000_000_000_000i64; // a boundary of 10 s
        let row = |a: &str, at: i64, snap: bool, side: Side, p: &str, q: &str| {
            tape_row(a, at, snap, side, p, q)
        };
        let opening = |start: i64, rows: Vec<TapeRow>| TapeMsg::Opening {
            start_us: start,
            rows: rows
                .into_iter()
                .map(|r| TapeRow {
                    timestamp_us: start,
                    local_timestamp_us: start - 1,
                    ..r
                })
                .collect(),
        };
        let feed = |tape: &mut BookTape, msg: TapeMsg| match msg {
            TapeMsg::Rows(rows) => rows.into_iter().for_each(|r| tape.row(r)),
            TapeMsg::Opening { start_us, rows } => tape.opening(start_us, rows),
            TapeMsg::Lost(..) => {}
        };
        // Period [h, h + 10 s): books of A (connection 1) and B (connection 2).
        feed(
            &mut tape,
            TapeMsg::Rows(vec![
                row("A", h + 1, true, Bid, "0.4", "10"),
                row("A", h + 1, true, Ask, "0.6", "10"),
                row("B", h + 2, true, Bid, "0.1", "5"),
            ]),
        );
        // Connection 1 crosses into the next period first: its opening, then a change.
        let p2 = h + 10_000_000;
        feed(
            &mut tape,
            opening(
                p2,
                vec![
                    row("A", 0, true, Bid, "0.4", "10"),
                    row("A", 0, true, Ask, "0.6", "10"),
                ],
            ),
        );
        feed(
            &mut tape,
            TapeMsg::Rows(vec![row("A", p2 + 5, false, Bid, "0.45", "1")]),
        );
        // Connection 2 was busy: a change it received before the boundary comes now, then
        // its opening.
        feed(
            &mut tape,
            TapeMsg::Rows(vec![row("B", p2 - 3, false, Bid, "0.2", "7")]),
        );
        feed(
            &mut tape,
            opening(
                p2,
                vec![
                    row("B", 0, true, Bid, "0.1", "5"),
                    row("B", 0, true, Bid, "0.2", "7"),
                ],
            ),
        );
        // The tape rolls on into a third period (its grace ended for the first): a change
        // of A, then B's connection so far behind that its opening of the second period
        // comes only now.
        let p3 = p2 + 10_000_000;
        tape.close_previous();
        feed(
            &mut tape,
            opening(
                p3,
                vec![
                    row("A", 0, true, Bid, "0.45", "1"),
                    row("A", 0, true, Bid, "0.4", "10"),
                    row("A", 0, true, Ask, "0.6", "10"),
                ],
            ),
        );
        tape.close_previous();
        feed(
            &mut tape,
            opening(p2, vec![row("B", 0, true, Bid, "0.3", "2")]),
        );
        tape.sync();
        let files = segments(&dir);
        // Named to the second: the first period, which began at its first row, is `h`.
        assert_eq!(files.keys().copied().collect::<Vec<_>>(), vec![h, p2, p3]);
        let first = replay(&files[&h]);
        assert_eq!(
            first["B"],
            vec![(true, 100_000, 5_000_000), (true, 200_000, 7_000_000)]
        );
        let second = replay(&files[&p2]);
        assert_eq!(
            second["A"],
            vec![
                (false, 600_000, 10_000_000),
                (true, 400_000, 10_000_000),
                (true, 450_000, 1_000_000)
            ]
        );
        assert_eq!(
            second["B"], first["B"],
            "opened by its own connection's books"
        );
        assert!(
            files[&p2]
                .iter()
                .all(|r| r.is_snapshot || r.local_timestamp_us >= p2),
            "no late row in the second period: it went to the first"
        );
        let third = replay(&files[&p3]);
        assert_eq!(third["A"], second["A"]);
        assert_eq!(third["B"], vec![(true, 300_000, 2_000_000)]);
        assert!(
            files[&p3]
                .iter()
                .filter(|r| &*r.asset_id == "B")
                .all(|r| r.local_timestamp_us == p3 - 1 && r.timestamp_us == p3),
            "a late opening is stamped as the open period's"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_segment_of_the_first_format_still_reads() {
        // Written here as the first format wrote rows (both ids in full, fixed widths), as a
        // segment an older version left for the next start to finish.
        let dir = scratch("legacy");
        let path = dir.join(file_name(1_700_000_000_000_000, "segment"));
        let rows = [
            tape_row(
                "123",
                1_700_000_000_001_000,
                true,
                Side::Ask,
                "0.48",
                "12.5",
            ),
            tape_row("456", 1_700_000_000_002_000, true, Side::Bid, "0.5", "1"),
            tape_row("123", 1_700_000_000_003_000, false, Side::Bid, "0.47", "0"),
        ];
        let mut record = vec![0; HEADER as usize];
        for r in &rows {
            for id in [&r.asset_id, &r.market] {
                record.extend_from_slice(&(id.len() as u16).to_le_bytes());
                record.extend_from_slice(id.as_bytes());
            }
            record.extend_from_slice(&r.timestamp_us.to_le_bytes());
            record.extend_from_slice(&r.local_timestamp_us.to_le_bytes());
            record.push(u8::from(r.is_snapshot) | if r.side == Side::Ask { 2 } else { 0 });
            record.extend_from_slice(&r.price.units().to_le_bytes());
            record.extend_from_slice(&r.amount.units().to_le_bytes());
        }
        frame::seal(&mut record);
        fs::write(&path, &record).expect("segment");
        let mut reader = SegmentRows::open(&path).expect("open");
        let read: Vec<TapeRow> = reader.by_ref().collect::<io::Result<_>>().expect("reads");
        assert_eq!(read, rows);
        // Two tokens, the first one twice but not in a row (what the file's entry says).
        assert_eq!((reader.rows, reader.assets.len()), (3, 2));
        // A new segment holding the magic alone holds no row.
        fs::write(&path, magic_record()).expect("magic");
        assert!(SegmentRows::open(&path).expect("open").is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_are_by_start() {
        let name = file_name(1_700_000_000_000_000, "parquet");
        assert_eq!(name, "book_tape_20231114T221320.parquet");
        assert_eq!(
            segment_start(Path::new(&file_name(1_700_000_000_000_000, "segment"))),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(next_boundary(3_599_999_999, 3_600_000_000), 3_600_000_000);
        assert_eq!(next_boundary(3_600_000_000, 3_600_000_000), 7_200_000_000);
    }
}
