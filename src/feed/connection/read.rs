//! One read on a connection's socket and what it brings: frames parsed into trades for the
//! channel (a full channel makes this reader wait, never drop), counts for health, the text
//! `PING`s and the liveness verdict.

use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;
use tungstenite::Message;

use super::{Connection, is_timeout};
use crate::book::{ReadAlready, scan_reading_books};
use crate::feed::announcement::announcements;
use crate::feed::event::{Record, preview, read_trades};
use crate::feed::liveness::{Check, Liveness};
use crate::feed::scan::{book_events_only, scan};
use crate::feed::socket::{End, Socket};
use crate::health::now_us;

/// Counts of frames without trades are published to the shared health after this many
/// frames...
const PUBLISH_EVERY_FRAMES: u64 = 64;
/// ...or this long, whichever comes first.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);

impl Connection {
    /// One read on `ws` (it returns within its read timeout), and what it brought.
    pub(super) fn read_once(
        &mut self,
        ws: &mut Socket,
        liveness: &mut Liveness,
    ) -> Result<(), End> {
        match ws.read() {
            Ok(Message::Text(text)) => match text.as_str() {
                "PONG" => liveness.pong(),
                "INVALID OPERATION" => {
                    log::warn!("connection {}: server said INVALID OPERATION", self.id)
                }
                text => {
                    liveness.data(Instant::now());
                    self.on_frame(text)?;
                    if std::mem::take(&mut self.was_blocked) {
                        liveness.resume(Instant::now());
                    }
                }
            },
            Ok(Message::Binary(_)) => {
                self.counts.add_malformed();
                self.bad_frames.log(|held| {
                    log::warn!(
                        "connection {}: unexpected binary frame (+{held} held back)",
                        self.id
                    )
                });
            }
            Ok(Message::Close(frame)) => {
                // Keep reading: tungstenite answers the close and ends with ConnectionClosed.
                log::info!("connection {}: server closed: {frame:?}", self.id);
            }
            Ok(_) => {} // protocol ping/pong: tungstenite answers pings itself
            Err(e) if is_timeout(&e) => {
                self.publish(); // a quiet socket: nothing left to batch with
                // Read dry: whatever the reader fell behind on is read.
                self.behind_since_ms = None;
            }
            Err(tungstenite::Error::Capacity(e)) => {
                self.health.oversized_frame();
                return Err(End::Failed(format!("oversized frame ({e})")));
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Err(End::Failed("closed".into()));
            }
            Err(e) => return Err(End::Failed(format!("read: {e}"))),
        }
        Ok(())
    }

    /// The text `PING` when it is due, and the liveness verdict: fine, probe, or dead.
    pub(super) fn keep_alive(
        &mut self,
        ws: &mut Socket,
        liveness: &mut Liveness,
    ) -> Result<(), End> {
        let now = Instant::now();
        if liveness.ping_due(now) {
            ws.send(Message::text("PING"))
                .map_err(|e| End::Failed(format!("ping: {e}")))?;
            liveness.pinged(now);
        }
        self.book_upkeep(ws)?;
        match liveness.check(now) {
            Check::Fine => Ok(()),
            Check::Probe => {
                // Quiet or frozen? Ask for a few held tokens' books: a live socket answers.
                let probe = self.probe_tokens();
                self.ask_books(ws, &probe, "silent, probe")
            }
            Check::Dead(reason) => Err(End::Failed(reason)),
        }
    }

    pub(super) fn on_frame(&mut self, text: &str) -> Result<(), End> {
        self.on_frame_from(text, true)
    }

    /// A frame; its book events are applied when `books` (not from a recycle's replacement
    /// before it takes over).
    pub(super) fn on_frame_from(&mut self, text: &str, books: bool) -> Result<(), End> {
        // One clock read per frame, not two.
        let received_us = now_us();
        let now = received_us / 1000;
        self.status.message(now);
        self.last_data_ms = now;
        let received_us = received_us.max(self.last_stamp_us + 1);
        self.last_stamp_us = received_us;
        if self.books.is_none() && book_events_only(text) {
            // Book events alone, and no book side to read them: not scanned.
            self.counts.add_passed_over();
            self.publish_when_due();
            return Ok(());
        }
        // One scan of the frame; its trades, announcements and (below) book events are each
        // read from their own ranges.
        // With the book side on, the pass reads the book events as it reaches them.
        let mut read = ReadAlready::default();
        let scanned = if self.books.is_some() {
            scan_reading_books(text, &mut self.events, &mut read)
        } else {
            scan(text, &mut self.events)
        }
        .map(|()| read_trades(text, &self.events, received_us, &mut self.parsed));
        match scanned {
            Ok(summary) => {
                self.counts.add_frame(&summary);
                if summary.announcements > 0 {
                    self.announce_from(text);
                }
                if let Some(reason) = summary.last_invalid {
                    self.invalid_trades.log(|held| {
                        log::warn!(
                            "connection {}: refused a trade: {reason}: {} (+{held} held back)",
                            self.id,
                            preview(text)
                        )
                    });
                }
            }
            Err(e) => {
                self.counts.add_malformed();
                self.bad_frames
                    .log(|held| log::warn!("connection {}: {e} (+{held} held back)", self.id));
            }
        }
        // Delivery order within the frame: each trade a microsecond after the one before.
        for (i, t) in self.parsed.iter_mut().enumerate() {
            t.received_at_us += i as i64;
            self.last_stamp_us = t.received_at_us;
        }
        if !self.parsed.is_empty() {
            // Trades are published before they enter the channel, so a snapshot never shows
            // more trades inserted than received. Frames without trades (some fifty book
            // updates for every trade on the live feed) are only counted locally.
            let newest = self
                .parsed
                .iter()
                .map(|t| t.timestamp_ms)
                .max()
                .unwrap_or(0);
            self.counts.add_trades(self.parsed.len() as u64, newest);
            self.publish();
        }
        for trade in self.parsed.drain(..) {
            // A full channel blocks this reader (and so the socket): received trades are never
            // dropped. The time spent blocked is counted.
            match self.trades.try_send(Record::Trade(trade)) {
                Ok(()) => {}
                Err(TrySendError::Full(record)) => {
                    let start = Instant::now();
                    self.behind_since_ms.get_or_insert(now);
                    if self.trades.send(record).is_err() {
                        return Err(End::WriterGone);
                    }
                    self.health.send_blocked(start.elapsed().as_micros() as u64);
                    self.was_blocked = true;
                }
                Err(TrySendError::Disconnected(_)) => return Err(End::WriterGone),
            }
        }
        if books {
            let first = self.last_stamp_us + 1;
            self.last_stamp_us = self
                .apply_book_events(text, read, first)?
                .max(self.last_stamp_us);
        }
        self.publish_when_due();
        Ok(())
    }

    /// Publishes the counts of frames without trades every so many frames or so long.
    fn publish_when_due(&mut self) {
        if self.counts.frames >= PUBLISH_EVERY_FRAMES
            || self.last_publish.elapsed() >= PUBLISH_EVERY
        {
            self.publish();
        }
    }

    /// Passes a frame's market announcements to the follower (if the listener has one).
    fn announce_from(&self, text: &str) {
        let Some(tx) = &self.announce else { return };
        for a in announcements(text, &self.events) {
            if tx.try_send(a).is_err() {
                log::warn!(
                    "connection {}: announcement queue full; the re-sync will catch up",
                    self.id
                );
            }
        }
    }

    pub(super) fn publish(&mut self) {
        if !self.counts.is_empty() {
            self.health.publish(&mut self.counts);
        }
        self.last_publish = Instant::now();
    }
}
