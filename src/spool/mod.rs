//! The disk spool: what the writer cannot commit now goes here, in order, and is replayed
//! when the database is back, so a database that goes away never reaches the sockets.
//!
//! A spool is a folder of segment files (`00000000000000000001.seg`, …), oldest first. Each
//! record is framed as a little-endian `u32` length, a `u32` CRC-32 of the payload, then the
//! payload ([`record`]); every append is `fdatasync`ed before the writer takes the next batch
//! off the channel, so what the writer spooled survives a crash. A torn record at the end of
//! the last segment (a crash mid-append) is detected by its length or CRC and cut off at
//! open, never parsed. Replay reads records in order; a segment is deleted once every record
//! in it is committed. After a crash, the records of a partly replayed segment are replayed
//! again: harmless, since trades and gaps are stored idempotently by their natural keys.
//!
//! A `LOCK` file held with an exclusive lock keeps two processes off one spool.

pub(crate) mod frame;
pub(crate) mod record;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use frame::{HEADER, read_record};
pub(crate) use record::Entry;

/// A new segment is started past this size, so that replayed segments are deleted soon.
const SEGMENT_BYTES: u64 = 16 << 20;

/// Why an append did not happen.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The spool is at its size limit: nothing was written.
    Full,
    /// The disk refused (full, read-only, gone): nothing usable was written.
    Io(io::Error),
}

struct Segment {
    seq: u64,
    path: PathBuf,
    len: u64,
}

/// The spool of one writer.
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    _lock: File,
    /// Oldest first; the last one takes appends.
    segments: VecDeque<Segment>,
    /// Append handle of the last segment, when it is open.
    append: Option<File>,
    /// Reader of the first segment, and its offset.
    reader: Option<(u64, BufReader<File>)>,
    offset: u64,
    /// The next record, read but not yet consumed: (its framed length, spooled at, entry).
    next: Option<(u64, i64, Entry)>,
    buf: Vec<u8>,
    /// Records skipped because they could not be read (counted in health, logged).
    pub(crate) corrupt: u64,
    /// When the last record read was spooled (Unix ms).
    last_at: Option<i64>,
    /// Where an unreadable run of records began (the last readable record's time), while
    /// its end (the next readable record's time) is not known yet.
    skip_from: Option<i64>,
    /// Windows whose spooled records were skipped unread: (from, to) in Unix ms.
    skipped: Vec<(i64, i64)>,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, at most `max_bytes` on disk. A spool left by a
    /// previous run is kept for replay; a torn record at its end is cut off.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        Self::open_with(dir, max_bytes, SEGMENT_BYTES)
    }

    /// [`Spool::open`], with segments rolled past `segment_bytes`.
    pub(crate) fn open_with(dir: &Path, max_bytes: u64, segment_bytes: u64) -> io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        lock.try_lock().map_err(|e| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "spool {} is in use by another process ({e}); give each instance its own \
                     POLYTAPE_SPOOL_DIR",
                    dir.display()
                ),
            )
        })?;
        let mut segments: Vec<Segment> = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let path = item?.path();
            let seq = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(seq) = seq {
                let len = std::fs::metadata(&path)?.len();
                segments.push(Segment { seq, path, len });
            }
        }
        segments.sort_by_key(|s| s.seq);
        let mut spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes,
            _lock: lock,
            segments: segments.into(),
            append: None,
            reader: None,
            offset: 0,
            next: None,
            buf: Vec::new(),
            corrupt: 0,
            last_at: None,
            skip_from: None,
            skipped: Vec::new(),
        };
        spool.cut_torn_tail()?;
        Ok(spool)
    }

    /// Bytes on disk (segments not yet deleted).
    pub(crate) fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Segment files on disk.
    pub(crate) fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Nothing left to replay.
    pub(crate) fn is_empty(&self) -> bool {
        self.next.is_none() && self.bytes().saturating_sub(self.offset) == 0
    }

    /// Where it lives.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `entry` and waits for it to reach the disk.
    pub(crate) fn append(&mut self, entry: &Entry, now_ms: i64) -> Result<(), AppendError> {
        let mut payload = std::mem::take(&mut self.buf);
        payload.clear();
        payload.extend_from_slice(&[0; HEADER as usize]);
        record::encode(entry, now_ms, &mut payload);
        frame::seal(&mut payload);
        let result = self.write_framed(&payload);
        self.buf = payload;
        result
    }

    fn write_framed(&mut self, framed: &[u8]) -> Result<(), AppendError> {
        let len = framed.len() as u64;
        if self.bytes() + len > self.max_bytes {
            return Err(AppendError::Full);
        }
        let roll = self
            .segments
            .back()
            .is_none_or(|s| s.len >= self.segment_bytes || self.append.is_none());
        if roll {
            self.new_segment().map_err(AppendError::Io)?;
        }
        let Some(file) = self.append.as_mut() else {
            return Err(AppendError::Io(io::Error::other("no segment open")));
        };
        let written = file.write_all(framed).and_then(|()| file.sync_data());
        let Some(seg) = self.segments.back_mut() else {
            return Err(AppendError::Io(io::Error::other("no segment open")));
        };
        match written {
            Ok(()) => {
                seg.len += len;
                Ok(())
            }
            Err(e) => {
                // Part of the record may be on disk: cut it off, so the segment stays a
                // sequence of whole records, and start a new segment next time.
                let _ = file.set_len(seg.len);
                self.append = None;
                Err(AppendError::Io(e))
            }
        }
    }

    fn new_segment(&mut self) -> io::Result<()> {
        let seq = self.segments.back().map_or(1, |s| s.seq + 1);
        let path = self.dir.join(format!("{seq:020}.seg"));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        // The new file's name must survive a crash too.
        File::open(&self.dir)?.sync_all()?;
        self.segments.push_back(Segment { seq, path, len: 0 });
        self.append = Some(file);
        Ok(())
    }

    /// The next record to replay, with the time it was spooled (Unix ms), without consuming
    /// it. Unreadable records (a length or CRC that does not match: corruption in the middle
    /// of a segment) are counted, logged and skipped with the rest of their segment: nothing
    /// after them in it can be framed; the window they covered is kept for
    /// [`Spool::take_skipped`]. Any other error (EIO, say) is returned as it is, nothing
    /// skipped: the same read is tried again at the next call.
    pub(crate) fn peek(&mut self) -> io::Result<Option<(i64, &Entry)>> {
        if self.next.is_none() {
            self.next = self.read_next()?;
            match &self.next {
                Some((_, at, _)) => {
                    let at = *at;
                    if let Some(from) = self.skip_from.take() {
                        self.skipped.push((from, at));
                    }
                    self.last_at = Some(at);
                }
                None => {
                    if let Some(from) = self.skip_from.take() {
                        self.skipped.push((from, crate::health::now_ms()));
                    }
                }
            }
        }
        Ok(self.next.as_ref().map(|(_, at, e)| (*at, e)))
    }

    /// The windows (from, to, Unix ms) whose spooled records were skipped unread since the
    /// last call: the trades in them are lost to the spool, and the writer records each as a
    /// gap so the backfill can fetch them again.
    pub(crate) fn take_skipped(&mut self) -> Vec<(i64, i64)> {
        std::mem::take(&mut self.skipped)
    }

    /// The record returned by [`Spool::peek`] is committed: moves past it, and deletes its
    /// segment once every record in it is.
    pub(crate) fn consume(&mut self) -> io::Result<()> {
        if let Some((len, _, _)) = self.next.take() {
            self.offset += len;
        }
        self.drop_finished_segment()
    }

    fn read_next(&mut self) -> io::Result<Option<(u64, i64, Entry)>> {
        loop {
            self.drop_finished_segment()?;
            let Some(first) = self.segments.front() else {
                return Ok(None);
            };
            if self.offset >= first.len {
                return Ok(None); // the append segment, fully replayed
            }
            let (seq, path, seg_len) = (first.seq, first.path.clone(), first.len);
            if self.reader.as_ref().is_none_or(|(s, _)| *s != seq) {
                let mut f = File::open(&path)?;
                f.seek(SeekFrom::Start(self.offset))?;
                self.reader = Some((seq, BufReader::with_capacity(256 << 10, f)));
            }
            let Some((_, reader)) = self.reader.as_mut() else {
                return Ok(None);
            };
            match read_record(reader, seg_len - self.offset) {
                Ok((len, payload)) => match record::decode(&payload) {
                    Ok((at, entry)) => return Ok(Some((len, at, entry))),
                    Err(e) => {
                        self.skip_segment(&path, &format!("undecodable record: {e}"));
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    self.skip_segment(&path, &e.to_string());
                }
                Err(e) => {
                    // Not corruption: the device failed. Read again from the same offset
                    // next time, with a fresh handle.
                    self.reader = None;
                    return Err(e);
                }
            }
        }
    }

    fn skip_segment(&mut self, path: &Path, why: &str) {
        self.corrupt += 1;
        if self.skip_from.is_none() {
            // From the last record read; a first record already unreadable: from when its
            // segment was last written, the best the disk can say.
            let from = self.last_at.unwrap_or_else(|| {
                std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or_else(crate::health::now_ms, |d| d.as_millis() as i64)
            });
            self.skip_from = Some(from);
        }
        log::error!(
            "spool: {} at offset {}: {why}; skipping the rest of this segment",
            path.display(),
            self.offset
        );
        if let Some(first) = self.segments.front() {
            self.offset = first.len;
        }
        self.reader = None;
    }

    /// Deletes the first segment when every record in it is consumed.
    fn drop_finished_segment(&mut self) -> io::Result<()> {
        let Some(first) = self.segments.front() else {
            return Ok(());
        };
        if self.offset < first.len || self.next.is_some() {
            return Ok(());
        }
        let is_append = self.segments.len() == 1;
        if is_append && first.len == 0 && self.append.is_some() {
            return Ok(()); // a fresh, empty append segment
        }
        if is_append {
            self.append = None;
        }
        let path = first.path.clone();
        self.segments.pop_front();
        self.reader = None;
        self.offset = 0;
        std::fs::remove_file(&path)
    }

    /// After a crash the last record of the last segment may be torn: cut it off.
    fn cut_torn_tail(&mut self) -> io::Result<()> {
        let Some(last) = self.segments.back_mut() else {
            return Ok(());
        };
        let mut reader = BufReader::new(File::open(&last.path)?);
        let mut good = 0u64;
        while good < last.len {
            match read_record(&mut reader, last.len - good) {
                Ok((len, _)) => good += len,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => break,
                Err(e) => return Err(e),
            }
        }
        if good < last.len {
            log::warn!(
                "spool: {}: cutting a torn record at its end ({} bytes) left by a crash",
                last.path.display(),
                last.len - good
            );
            OpenOptions::new()
                .write(true)
                .open(&last.path)?
                .set_len(good)?;
            last.len = good;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// The spool's own costs, for the benchmarks: `trades` appended in batches of `batch` (one
/// `fdatasync` each), read back and decoded, then replayed into the configured database
/// through the writer's commit path.
#[cfg(feature = "bench")]
pub fn round_trip(
    config: &crate::Config,
    trades: &[crate::Trade],
    batch: usize,
) -> crate::Result<SpoolRun> {
    use std::time::Instant;
    let io = |e: io::Error| crate::Error::from(e);
    let dir = &config.spool_dir;
    let copy = dir.with_extension("read");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(&copy);
    let mut spool = Spool::open(dir, u64::MAX).map_err(io)?;
    let started = Instant::now();
    for chunk in trades.chunks(batch.max(1)) {
        spool
            .append(&Entry::Trades(chunk.to_vec()), 0)
            .map_err(|e| match e {
                AppendError::Full => crate::Error::data("spool full"),
                AppendError::Io(e) => io(e),
            })?;
    }
    let append = started.elapsed();
    let bytes = spool.bytes();
    drop(spool);
    // Reading and decoding alone, on a copy (replay deletes what it has replayed).
    std::fs::create_dir_all(&copy).map_err(io)?;
    for item in std::fs::read_dir(dir).map_err(io)? {
        let path = item.map_err(io)?.path();
        if let Some(name) = path
            .file_name()
            .filter(|_| path.extension().is_some_and(|x| x == "seg"))
        {
            std::fs::copy(&path, copy.join(name)).map_err(io)?;
        }
    }
    let started = Instant::now();
    let mut reader = Spool::open(&copy, u64::MAX).map_err(io)?;
    let mut read_trades = 0;
    while let Some((_, e)) = reader.peek().map_err(io)? {
        read_trades += e.trades();
        reader.consume().map_err(io)?;
    }
    let read = started.elapsed();
    drop(reader);
    let _ = std::fs::remove_dir_all(&copy);
    if read_trades != trades.len() {
        return Err(crate::Error::data(format!(
            "read back {read_trades} of {} trades",
            trades.len()
        )));
    }
    // Replay into the database, as the writer does.
    let mut spool = Spool::open(dir, u64::MAX).map_err(io)?;
    let mut db = crate::store::trades::TradeWriter::new(config, crate::health::Health::new());
    let started = Instant::now();
    loop {
        let entry = match spool.peek().map_err(io)? {
            Some((_, Entry::Trades(t))) => t.clone(),
            Some((_, Entry::Gap(_) | Entry::Books(_) | Entry::Bars(_))) => Vec::new(),
            None => break,
        };
        db.commit(&entry)?;
        spool.consume().map_err(io)?;
    }
    let replay = started.elapsed();
    Ok(SpoolRun {
        append,
        read,
        replay,
        bytes,
    })
}

/// What [`round_trip`] measured.
#[cfg(feature = "bench")]
#[derive(Debug, Clone, Copy)]
pub struct SpoolRun {
    /// Appending every batch, `fdatasync` each.
    pub append: std::time::Duration,
    /// Reading and decoding every record.
    pub read: std::time::Duration,
    /// Replaying every record into the database.
    pub replay: std::time::Duration,
    /// Bytes on disk.
    pub bytes: u64,
}
