//! The writer thread's policy: take batches off the channel, commit them, and when the
//! database cannot take them, spool them to disk and replay them later, in order, so the
//! channel keeps draining and the sockets never notice the database.
//!
//! ```text
//! channel ──batch──▶ spool empty, database up, not behind? ──yes──▶ commit
//!                        │ no                                   │ failed (transient or
//!                        ▼                                      ▼  configuration)
//!                      spool (append + fdatasync) ◀─────────────┘
//!                        │ database back (retry on the backoff schedule)
//!                        └──replay in order──▶ commit ──▶ segment deleted once committed
//! ```
//!
//! Live data never overtakes spooled data: while the spool holds anything, new batches are
//! appended behind it. Only a full spool (`spool_max_bytes`) makes the writer stop taking
//! from the channel, so readers block as they did before there was a spool; that window is
//! recorded as a gap for every held token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::Mutex;

use crate::backoff::Backoff;
use crate::book::BookSnapshot;
use crate::config::Config;
use crate::error::Error;
use crate::feed::{Gap, Record, Trade};
use crate::health::{Health, now_ms};
use crate::prices::PriceBar;
use crate::spool::{AppendError, Entry, Spool};
use crate::store::failure::{Failure, classify};
use crate::store::trades::TradeWriter;

/// How much larger than `batch_size` a batch may grow while the channel holds a backlog.
/// How long an idle writer waits for more after the first record of a batch: a few
/// milliseconds of latency for a few trades a commit at live rates (BENCHMARKS.md).
const GROUP_WINDOW: Duration = Duration::from_millis(10);
const BACKLOG_FACTOR: usize = 10;
/// Longest stretch of replay before the writer looks at the channel again.
const REPLAY_SLICE: Duration = Duration::from_millis(200);
/// Least time between two retries of a database that needs an operator.
const CONFIGURATION_RETRY: Duration = Duration::from_secs(10);
/// One loud log line per this, while a configuration failure lasts.
const LOUD_EVERY: Duration = Duration::from_secs(60);

/// The tokens the listener holds now (for a gap that covers all of them).
pub(crate) type HeldTokens = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// When a stopping writer must give up on the database and leave the rest in the spool.
#[derive(Clone, Default)]
pub(crate) struct StopDeadline(Arc<Mutex<Option<Instant>>>);

impl StopDeadline {
    /// Sets the deadline (an earlier one wins).
    pub(crate) fn set(&self, at: Instant) {
        let mut d = self.0.lock();
        *d = Some(d.map_or(at, |old| old.min(at)));
    }

    fn passed(&self) -> bool {
        self.0.lock().is_some_and(|d| Instant::now() >= d)
    }

    fn get(&self) -> Option<Instant> {
        *self.0.lock()
    }
}

/// The database's state, as the writer last saw it.
struct Down {
    failure: Failure,
    attempt: u32,
    retry_at: Instant,
    last_loud: Option<Instant>,
}

/// The writer thread.
pub(crate) struct Writer {
    db: TradeWriter,
    spool: Spool,
    health: Health,
    down: Option<Down>,
    backoff: Backoff,
    batch_size: usize,
    max_age: Duration,
    /// The rule before group commit: wait up to `max_age` for a batch to fill.
    gather_to_max_age: bool,
    /// Above this many queued trades the writer spools first (it is behind).
    behind_mark: usize,
    deadline: StopDeadline,
    held: HeldTokens,
    /// Since when a full spool has kept the writer from draining the channel.
    full_since: Option<i64>,
    /// Trades the writer could neither commit nor spool (a stop past its deadline with the
    /// spool full), and gaps it could not record: a run that leaves any is not clean.
    unkept: u64,
    gaps_unrecorded: u64,
    /// When a spool read error was last logged (they are retried every batch).
    read_error_logged: Option<Instant>,
    /// When a refused book-side write was last logged loudly.
    book_refused_logged: Option<Instant>,
}

impl Writer {
    pub(crate) fn new(
        config: &Config,
        health: Health,
        spool: Spool,
        deadline: StopDeadline,
        held: HeldTokens,
    ) -> Writer {
        let mut writer = Writer {
            db: TradeWriter::new(config, health.clone()),
            spool,
            health,
            down: None,
            backoff: Backoff::new(config.backoff_min, config.backoff_max),
            batch_size: config.batch_size,
            max_age: config.batch_max_age,
            gather_to_max_age: config.gather_to_max_age,
            behind_mark: (config.channel_capacity / 2).max(1),
            deadline,
            held,
            full_since: None,
            unkept: 0,
            gaps_unrecorded: 0,
            read_error_logged: None,
            book_refused_logged: None,
        };
        writer.publish_spool();
        if !writer.spool.is_empty() {
            log::warn!(
                "writer: {} bytes left in the spool at {} by an earlier run; replaying them first",
                writer.spool.bytes(),
                writer.spool.dir().display()
            );
        }
        writer
    }

    /// Connects now, so a wrong URL is reported at start (the writer retries either way).
    pub(crate) fn connect(&mut self) -> crate::Result<()> {
        self.db.connect()?;
        // Minutes a crash left uncounted in their bars.
        self.db.recount_recent_bars();
        Ok(())
    }

    /// Runs until every sender is gone and everything received is committed or, past the
    /// stop deadline, spooled. Returns whether the run ends clean: every trade received is
    /// committed or spooled, and every gap recorded (else the next start must treat this run
    /// as a crash).
    pub(crate) fn run(mut self, records: Receiver<Record>) -> bool {
        let mut batch: Vec<Trade> = Vec::with_capacity(self.batch_size);
        let mut gaps: Vec<Gap> = Vec::new();
        let mut books: Vec<BookSnapshot> = Vec::new();
        let mut bars: Vec<PriceBar> = Vec::new();
        loop {
            let open = self.fill(&records, &mut batch, &mut gaps, &mut books, &mut bars);
            let n = batch.len();
            let received = batch.iter().map(|t| t.received_at_us);
            let (oldest, newest) = (received.clone().min(), received.max());
            if let Some(oldest) = oldest {
                self.health.batch_taken(oldest);
            }
            self.health.dequeued(n);
            let behind = records.len() >= self.behind_mark;
            if !batch.is_empty() {
                self.route(Entry::Trades(std::mem::take(&mut batch)), behind);
                batch.reserve(self.batch_size);
            }
            if let Some(newest) = newest {
                // Committed or spooled (or, past a stop's deadline, counted as unkept).
                self.health.batch_durable(newest);
            }
            for gap in gaps.drain(..) {
                self.route(Entry::Gap(gap), behind);
            }
            if !books.is_empty() {
                self.route(Entry::Books(std::mem::take(&mut books)), behind);
            }
            // After the trades they follow: their trade fields are read from the tape.
            if !bars.is_empty() {
                self.route(Entry::Bars(std::mem::take(&mut bars)), behind);
            }
            self.replay(REPLAY_SLICE);
            self.record_skipped();
            // Minutes that are over count their trades in their bars (once each).
            if self.down.is_none() {
                self.db.flush_bars(false);
            }
            if !open {
                break;
            }
        }
        self.finish();
        if self.down.is_none() {
            self.db.flush_bars(true);
        }
        self.record_skipped();
        let clean = self.unkept == 0 && self.gaps_unrecorded == 0 && self.full_since.is_none();
        if !clean {
            log::error!(
                "writer: stopping unclean: {} trades not kept, {} gaps not recorded; the next \
                 start takes this run for a crash and records its window",
                self.unkept,
                self.gaps_unrecorded + u64::from(self.full_since.is_some())
            );
        }
        clean
    }

    /// Records, for every held token, a gap over each window whose spooled records could not
    /// be read back: what was in them is gone from the spool, and the backfill fetches it
    /// again.
    fn record_skipped(&mut self) {
        for (from_ms, to_ms) in self.spool.take_skipped() {
            let gap = Gap {
                connection: None,
                from_ms,
                to_ms: to_ms.max(from_ms),
                reason: "spool: unreadable records skipped".into(),
                asset_ids: (self.held)(),
            };
            log::warn!(
                "writer: spooled records from {from_ms} to {to_ms} could not be read; recording \
                 a gap for {} tokens",
                gap.asset_ids.len()
            );
            self.route(Entry::Gap(gap), false);
        }
    }

    /// Takes the next batch off the channel: what is waiting now, up to `batch_size` trades
    /// (group commit: an idle writer commits a trade as soon as it comes, and while a commit
    /// is in flight the next batch gathers by itself, so batches grow only under load).
    /// `max_age` is the old rule's wait for more, kept for the benchmark that compares the
    /// two. Returns false once every sender is gone and the channel is empty.
    fn fill(
        &mut self,
        records: &Receiver<Record>,
        batch: &mut Vec<Trade>,
        gaps: &mut Vec<Gap>,
        books: &mut Vec<BookSnapshot>,
        bars: &mut Vec<PriceBar>,
    ) -> bool {
        let mut take = |r: Record, batch: &mut Vec<Trade>, gaps: &mut Vec<Gap>| match r {
            Record::Trade(t) => batch.push(t),
            Record::Gap(g) => gaps.push(g),
            Record::Book(b) => books.push(b),
            Record::Bar(b) => bars.push(b),
        };
        // With spooled data to replay, wait only briefly, so replay runs between batches.
        let first_wait = if self.spool.is_empty() {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(20)
        };
        match records.recv_timeout(first_wait) {
            Ok(r) => take(r, batch, gaps),
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
        // Group commit, with a short window: an idle writer commits what arrived within
        // `GROUP_WINDOW` of the first record (a commit per trade would cost more CPU per trade
        // than everything else at live rates: a round trip, TLS, a WAL flush each); while a
        // commit is in flight the next batch gathers by itself. The rule before it (wait up
        // to `max_age`) is an option.
        let window = if self.gather_to_max_age {
            self.max_age
        } else {
            self.max_age.min(GROUP_WINDOW)
        };
        let deadline = Instant::now() + window;
        let mut open = true;
        while batch.len() < self.batch_size {
            match records.recv_deadline(deadline) {
                Ok(r) => take(r, batch, gaps),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // Behind (a full batch and as much again waiting): grow the batch, up to
        // `BACKLOG_FACTOR` times, so a backlog costs fewer commits (each one waits for a
        // WAL flush). At live rates batches never fill and this never runs.
        if batch.len() >= self.batch_size && records.len() >= self.batch_size {
            while batch.len() < self.batch_size * BACKLOG_FACTOR {
                match records.try_recv() {
                    Ok(r) => take(r, batch, gaps),
                    Err(_) => break,
                }
            }
        }
        open || !records.is_empty()
    }

    /// Commits `entry`, or spools it: when the spool already holds something (order), when
    /// the database is down, or when the writer is behind.
    fn route(&mut self, entry: Entry, behind: bool) {
        if self.spool.is_empty() && self.down.is_none() && !behind {
            match self.commit(&entry) {
                Ok(()) => return,
                Err(e) => self.database_failed(&e),
            }
        }
        self.spool_entry(entry);
    }

    fn commit(&mut self, entry: &Entry) -> crate::Result<()> {
        let result = match entry {
            Entry::Trades(t) => self.db.commit(t),
            Entry::Gap(g) => self.db.insert_gap(g),
            Entry::Books(b) => {
                let r = self.db.write_books(b);
                self.book_side(r, "snapshots", b.len())
            }
            Entry::Bars(b) => {
                let r = self.db.write_bars(b);
                self.book_side(r, "price bars", b.len())
            }
        };
        if result.is_ok() {
            self.database_up();
        }
        result
    }

    /// The outcome of a book-side write. The book side may fail alone, never hold up a
    /// trade: a database that is away (a transient failure) keeps the rows like the trades
    /// (spooled, retried); one that refuses them for good (a missing grant on a table made
    /// after the role's grants, a bad row) has them dropped, counted and said (`/readyz`),
    /// so the spool moves on to the trades behind them.
    fn book_side(
        &mut self,
        result: crate::Result<()>,
        what: &str,
        rows: usize,
    ) -> crate::Result<()> {
        match result {
            Ok(()) => {
                self.health.book_failure(None);
                Ok(())
            }
            Err(e) if classify(&e) == Failure::Transient => Err(e),
            Err(e) => {
                self.health.book_failure(Some(format!("{what}: {e}")));
                self.health
                    .books()
                    .rows_refused
                    .fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed);
                let loud = self
                    .book_refused_logged
                    .is_none_or(|t| t.elapsed() >= LOUD_EVERY);
                if loud {
                    log::error!(
                        "writer: the database refuses {what} ({e}): {rows} dropped, trades \
                         go on being stored; an operator must fix it (book_rows_refused)"
                    );
                    self.book_refused_logged = Some(Instant::now());
                }
                self.db.disconnect(); // a failed transaction may leave the session unusable
                Ok(())
            }
        }
    }

    /// Appends `entry` to the spool; while the spool is full (or the disk refuses), keeps
    /// replaying and retrying, and records the window as a gap once there is room.
    fn spool_entry(&mut self, entry: Entry) {
        let trades = entry.trades() as u64;
        loop {
            match self.spool.append(&entry, now_ms()) {
                Ok(()) => {
                    self.health.spooled(trades);
                    self.publish_spool();
                    if let Some(from_ms) = self.full_since.take() {
                        self.spool_full_gap(from_ms);
                    }
                    return;
                }
                Err(AppendError::Full)
                    if matches!(&entry, Entry::Trades(t) if t.len() > 1)
                        && self.spool.bytes() == 0 =>
                {
                    // Larger than the whole spool (a batch grown under a backlog, a small
                    // spool): in halves, each spooled in order.
                    let Entry::Trades(mut t) = entry else {
                        return;
                    };
                    let right = t.split_off(t.len() / 2);
                    self.spool_entry(Entry::Trades(t));
                    self.spool_entry(Entry::Trades(right));
                    return;
                }
                Err(e) if matches!(&entry, Entry::Books(_) | Entry::Bars(_)) => {
                    // The book side never waits on the spool (readers would wait behind
                    // it): an entry larger than the whole spool is split, and what still
                    // finds no room (a full spool, a disk that refuses) is dropped, said and
                    // counted.
                    let whole_spool = matches!(e, AppendError::Full) && self.spool.bytes() == 0;
                    match entry {
                        Entry::Books(mut b) if whole_spool && b.len() > 1 => {
                            let right = b.split_off(b.len() / 2);
                            self.spool_entry(Entry::Books(b));
                            self.spool_entry(Entry::Books(right));
                        }
                        Entry::Bars(mut b) if whole_spool && b.len() > 1 => {
                            let right = b.split_off(b.len() / 2);
                            self.spool_entry(Entry::Bars(b));
                            self.spool_entry(Entry::Bars(right));
                        }
                        other => {
                            let rows = match &other {
                                Entry::Books(b) => b.len(),
                                Entry::Bars(b) => b.len(),
                                _ => 0,
                            };
                            log::error!(
                                "writer: no room in the spool for {rows} book-side rows ({}); \
                                 dropped (book_rows_refused), trades go on",
                                match e {
                                    AppendError::Full if whole_spool =>
                                        "larger than the whole spool".to_owned(),
                                    AppendError::Full => "the spool is full".to_owned(),
                                    AppendError::Io(io) => io.to_string(),
                                }
                            );
                            self.health
                                .books()
                                .rows_refused
                                .fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    return;
                }
                Err(e) => {
                    if self.full_since.is_none() {
                        match &e {
                            AppendError::Full => log::error!(
                                "writer: the spool is full ({} bytes); readers will wait, and \
                                 the wait is recorded as a gap",
                                self.spool.bytes()
                            ),
                            AppendError::Io(e) => log::error!(
                                "writer: cannot write the spool at {} ({e}); readers will wait",
                                self.spool.dir().display()
                            ),
                        }
                        self.full_since = Some(now_ms());
                    }
                    if self.deadline.passed() {
                        log::error!(
                            "writer: stopping with the spool full and the database away: \
                             {trades} trades could not be kept"
                        );
                        self.health.unkept(trades);
                        self.unkept += trades;
                        if let Some(from_ms) = self.full_since.take() {
                            let gap = self.full_gap(from_ms);
                            if let Err(e) = self.db.insert_gap(&gap) {
                                log::error!("writer: cannot record the spool-full gap ({e})");
                                self.gaps_unrecorded += 1;
                            }
                        }
                        return;
                    }
                    // The database may be back: replay makes room. Else wait a little.
                    if !self.replay(REPLAY_SLICE) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
    }

    /// The gap of a full spool: every held token, from when it filled to now.
    fn full_gap(&self, from_ms: i64) -> Gap {
        Gap {
            connection: None,
            from_ms,
            to_ms: now_ms(),
            reason: "spool full: readers waited".into(),
            asset_ids: (self.held)(),
        }
    }

    /// Records [`Writer::full_gap`], behind whatever is spooled.
    fn spool_full_gap(&mut self, from_ms: i64) {
        let gap = self.full_gap(from_ms);
        log::warn!(
            "writer: the spool had no room for {} ms; recording a gap for {} tokens",
            gap.to_ms - gap.from_ms,
            gap.asset_ids.len()
        );
        // Behind whatever is spooled: in order.
        if self
            .spool
            .append(&Entry::Gap(gap.clone()), now_ms())
            .is_err()
        {
            // No room again already: commit it directly if the database takes it.
            if let Err(e) = self.db.insert_gap(&gap) {
                log::error!("writer: cannot record the spool-full gap ({e}): {gap:?}");
                self.gaps_unrecorded += 1;
            }
        }
    }

    /// Replays spooled records in order for at most `slice`, when the database is due for a
    /// try. Returns whether anything was committed.
    fn replay(&mut self, slice: Duration) -> bool {
        if self.spool.is_empty() {
            return false;
        }
        if self
            .down
            .as_ref()
            .is_some_and(|d| Instant::now() < d.retry_at)
        {
            return false;
        }
        let started = Instant::now();
        let mut replayed_trades = 0u64;
        let mut progress = false;
        while started.elapsed() < slice {
            let entry = match self.spool.peek() {
                Ok(Some((_, entry))) => entry.clone(),
                Ok(None) => break,
                Err(e) => {
                    // Not corruption (that is skipped and recorded): the disk failed a read.
                    // Nothing is dropped; the same record is read again next time.
                    self.health.spool_read_error();
                    let loud = self
                        .read_error_logged
                        .is_none_or(|t| t.elapsed() >= LOUD_EVERY);
                    if loud {
                        log::error!(
                            "writer: cannot read the spool at {} ({e}); nothing is skipped, \
                             retrying",
                            self.spool.dir().display()
                        );
                        self.read_error_logged = Some(Instant::now());
                    }
                    break;
                }
            };
            match self.commit(&entry) {
                Ok(()) => {
                    if let Err(e) = self.spool.consume() {
                        log::error!("writer: cannot delete a replayed spool segment: {e}");
                    }
                    let n = entry.trades() as u64;
                    replayed_trades += n;
                    self.health.replayed(n);
                    progress = true;
                }
                Err(e) => {
                    self.database_failed(&e);
                    break;
                }
            }
        }
        if replayed_trades > 0 {
            let secs = started.elapsed().as_secs_f64().max(0.001);
            self.health
                .replay_rate((replayed_trades as f64 / secs) as u64);
            if self.spool.is_empty() {
                log::info!("writer: the spool is replayed; writing live data again");
            }
        }
        self.publish_spool();
        progress
    }

    /// The database failed a write: the data is kept (spooled), and the next try waits on
    /// the backoff schedule (slowly, for a failure an operator must fix).
    fn database_failed(&mut self, e: &Error) {
        let failure = classify(e);
        let now = Instant::now();
        let attempt = self.down.as_ref().map_or(0, |d| d.attempt + 1);
        let mut wait = self.backoff.delay(attempt);
        if failure == Failure::Configuration {
            wait = wait.max(CONFIGURATION_RETRY);
        }
        let last_loud = self.down.as_ref().and_then(|d| d.last_loud);
        let loud = last_loud.is_none_or(|t| now.duration_since(t) >= LOUD_EVERY);
        match failure {
            Failure::Configuration => {
                self.health.db_failure(Some(e.to_string()));
                if loud {
                    log::error!(
                        "writer: the database refuses every write ({e}): an operator must fix \
                         it; trades are kept in the spool at {} and retried every {} s",
                        self.spool.dir().display(),
                        wait.as_secs()
                    );
                }
            }
            _ if self.down.is_none() => log::warn!(
                "writer: database unavailable ({e}); spooling to {} and retrying",
                self.spool.dir().display()
            ),
            _ => log::debug!(
                "writer: still unavailable ({e}); retry in {} ms",
                wait.as_millis()
            ),
        }
        self.health.db_state(false);
        self.db.disconnect();
        self.down = Some(Down {
            failure,
            attempt,
            retry_at: now + wait,
            last_loud: if loud && failure == Failure::Configuration {
                Some(now)
            } else {
                last_loud
            },
        });
    }

    fn database_up(&mut self) {
        if let Some(d) = self.down.take() {
            log::info!(
                "writer: the database takes writes again (after {:?} failures)",
                d.failure
            );
            self.health.db_failure(None);
        }
        self.health.db_state(true);
    }

    fn publish_spool(&mut self) {
        let oldest = match self.spool.peek() {
            Ok(Some((at, _))) => at,
            _ => 0,
        };
        self.health.spool_state(
            self.spool.bytes(),
            self.spool.segments(),
            oldest,
            self.spool.corrupt,
        );
    }

    /// Every sender is gone: replay what the spool holds until it is empty or the stop
    /// deadline passes; what is left stays in the spool for the next run.
    fn finish(&mut self) {
        loop {
            if self.spool.is_empty() {
                log::info!("writer: channel closed and drained; everything committed");
                return;
            }
            if self.deadline.passed() {
                log::warn!(
                    "writer: stop deadline reached; {} bytes left in the spool at {} for the \
                     next run",
                    self.spool.bytes(),
                    self.spool.dir().display()
                );
                return;
            }
            if !self.replay(REPLAY_SLICE) {
                let retry_at = self.down.as_ref().map(|d| d.retry_at);
                let until = match (retry_at, self.deadline.get()) {
                    (Some(r), Some(d)) => r.min(d),
                    (Some(r), None) => r,
                    (None, Some(d)) => d.min(Instant::now() + Duration::from_millis(100)),
                    (None, None) => Instant::now() + Duration::from_millis(100),
                };
                let wait = until.saturating_duration_since(Instant::now());
                std::thread::sleep(wait.min(Duration::from_millis(200)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{Price, Size, SnapshotSource};

    /// A snapshot batch larger than the whole spool, with the database away: split, and a
    /// single snapshot still too large dropped and counted (it looped forever before, the
    /// readers waiting on the writer).
    #[test]
    fn a_book_side_entry_larger_than_the_whole_spool_is_split_or_dropped() {
        let dir = std::env::temp_dir().join(format!(
            "polytape-writer-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        let config = Config::builder()
            .database_url("host=127.0.0.1 port=9 user=nobody connect_timeout=1")
            .backoff_min(Duration::from_millis(5))
            .backoff_max(Duration::from_millis(10))
            .build()
            .expect("config");
        let health = Health::new();
        let spool = Spool::open_with(&dir, 600, 600).expect("a small spool");
        let mut w = Writer::new(
            &config,
            health.clone(),
            spool,
            StopDeadline::default(),
            Arc::new(Vec::new),
        );
        let snapshot = |levels: u64| BookSnapshot {
            asset_id: "1".repeat(77),
            market: "0xm".into(),
            taken_at_ms: 1_764_000_000_000,
            bids: (1..=levels)
                .map(|i| {
                    let p = Price::from_units(500_000 - i * 100).expect("p");
                    (p, Size::from_units(1_000_000 + i))
                })
                .collect(),
            asks: Vec::new(),
            source: SnapshotSource::Feed,
            blind_from_ms: None,
            levels_unchecked: 0,
        };
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Two that fit the spool alone (the batch does not), and one that never fits.
            w.route(
                Entry::Books(vec![snapshot(20), snapshot(20), snapshot(400)]),
                false,
            );
            let _ = done_tx.send(w.spool.bytes());
        });
        let spooled = done
            .recv_timeout(Duration::from_secs(20))
            .expect("the writer moved on");
        assert!(spooled > 0, "the parts that fit are spooled");
        // The one that never fits is dropped; of the two that fit alone, the second finds
        // the spool full behind the first and is dropped too (the book side never waits).
        let refused = health
            .books()
            .rows_refused
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!((1..=2).contains(&refused), "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
