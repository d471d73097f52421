//! The connection's part in the book side: each frame's book events applied to its
//! [`LiveBooks`], the snapshots they yield sent to the writer (like trades: a full channel
//! makes the reader wait, never drop), and fresh books asked for on the same socket.

use tungstenite::Message;

use super::Connection;
use crate::book::TapeMsg;
use crate::book::{ReadAlready, book_events_read};
use crate::feed::event::Record;
use crate::feed::protocol;
use crate::feed::socket::{End, Socket};
use crate::health::now_ms;

impl Connection {
    /// Applies the book events of `text` (scanned into `self.events`, some read already by
    /// the pass: `read`), the first stamped
    /// `first_us` (local time) and each next one a microsecond later (delivery order).
    /// Returns the last stamp used.
    pub(super) fn apply_book_events<'a>(
        &mut self,
        text: &'a str,
        read: ReadAlready<'a>,
        first_us: i64,
    ) -> Result<i64, End> {
        let Some(books) = &mut self.books else {
            return Ok(first_us - 1);
        };
        let found = book_events_read(text, &self.events, read);
        if found.invalid > 0 {
            self.health.books().invalid.fetch_add(
                u64::from(found.invalid),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let mut stamp = first_us - 1;
        for event in found.events {
            stamp += 1;
            books.apply(event, stamp);
        }
        self.send_snapshots()?;
        Ok(stamp)
    }

    /// Sends the snapshots the books yielded to the writer.
    pub(super) fn send_snapshots(&mut self) -> Result<(), End> {
        let Some(books) = &mut self.books else {
            return Ok(());
        };
        for snapshot in books.take_snapshots() {
            if self.trades.send(Record::Book(snapshot)).is_err() {
                return Err(End::WriterGone);
            }
        }
        // Behind every trade of their minute this socket delivered (same channel, in order).
        for bar in books.take_bars() {
            if self.trades.send(Record::Bar(bar)).is_err() {
                return Err(End::WriterGone);
            }
        }
        if let Some(tape) = &self.tape {
            // The sockets never wait for the tape: rows it has no room for are dropped,
            // counted and told to it (its period's file records the loss); their tokens are
            // left out of the tape until their next fresh book, asked for now. A period's
            // opening or a `Lost` is never dropped: it waits, in order, and rows behind it
            // are dropped.
            let mut queue = std::mem::take(&mut self.tape_backlog);
            queue.extend(books.take_tape());
            let mut dropped: Vec<std::sync::Arc<str>> = Vec::new();
            let mut lost = 0u64;
            for msg in queue {
                let msg = if self.tape_backlog.is_empty() {
                    match tape.try_send(msg) {
                        Ok(()) => continue,
                        Err(crossbeam_channel::TrySendError::Full(m)) => m,
                        Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                            self.tape_backlog.clear();
                            break;
                        }
                    }
                } else {
                    msg
                };
                match msg {
                    TapeMsg::Rows(rows) => {
                        lost += rows.len() as u64;
                        dropped.extend(rows.into_iter().map(|r| r.asset_id));
                    }
                    must => self.tape_backlog.push(must),
                }
            }
            if lost > 0 {
                dropped.sort_unstable();
                dropped.dedup();
                log::warn!(
                    "connection {}: the book tape is behind; {lost} rows of {} tokens dropped \
                     from it (recorded; their fresh books asked for)",
                    self.id,
                    dropped.len()
                );
                self.health
                    .books()
                    .tape_rows_lost
                    .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
                self.tape_backlog
                    .push(TapeMsg::Lost(lost, dropped.len() as u64));
                books.tape_dropped(&dropped);
            }
        }
        Ok(())
    }

    /// The clock's part (cuts on a quiet socket), and the fresh books wanted, asked for on
    /// `ws` by subscribing those tokens again.
    pub(super) fn book_upkeep(&mut self, ws: &mut Socket) -> Result<(), End> {
        let Some(books) = &mut self.books else {
            return Ok(());
        };
        if books.tick(now_ms()) {
            books.publish(self.health.books());
        }
        let wanted = books.take_resync();
        self.ask_books(ws, &wanted, "book resync")?;
        self.send_snapshots()
    }

    /// Asks the socket for the books of `tokens` (held ones: a subscribe operation with its
    /// dump, which a live socket answers with each book); `why` names it in the log and in
    /// a failure.
    pub(super) fn ask_books(
        &self,
        ws: &mut Socket,
        tokens: &[String],
        why: &str,
    ) -> Result<(), End> {
        if tokens.is_empty() {
            return Ok(());
        }
        log::debug!(
            "connection {}: {why}: asking for {} books",
            self.id,
            tokens.len()
        );
        for frame in protocol::operation_frames("subscribe", tokens, true) {
            ws.send(Message::text(frame))
                .map_err(|e| End::Failed(format!("{why}: {e}")))?;
        }
        Ok(())
    }

    /// The tokens to probe a socket with ([`protocol::PROBE_MARKETS`] of them, each of another
    /// market): held ones whose books have come (their answer is sure), else held ones
    /// spread over the list (both tokens of a market sit side by side in it). Empty when
    /// none is held.
    pub(super) fn probe_tokens(&self) -> Vec<String> {
        let tokens = self.tokens.lock();
        let trusted: Vec<String> = self
            .books
            .as_ref()
            .map(|b| b.trusted_tokens(protocol::PROBE_MARKETS))
            .unwrap_or_default()
            .into_iter()
            .filter(|t| tokens.iter().any(|h| h == t))
            .map(str::to_owned)
            .collect();
        if !trusted.is_empty() {
            return trusted;
        }
        let mut spread: Vec<String> = (0..protocol::PROBE_MARKETS)
            .filter_map(|i| {
                tokens
                    .get(i * tokens.len() / protocol::PROBE_MARKETS)
                    .cloned()
            })
            .collect();
        spread.dedup();
        spread
    }

    /// The socket the books were built from is gone: none is trusted until a fresh book
    /// comes (the next subscription asks for every one).
    pub(super) fn books_lost(&mut self) {
        let last = self.last_data_ms;
        if let Some(books) = &mut self.books {
            let now = now_ms();
            books.lost(if last > 0 { last } else { now }, now);
        }
        // The writer is gone only at the very end; a snapshot unsent then is a stop's loss.
        let _ = self.send_snapshots();
    }

    /// After a recycle: every book fetched afresh on the new socket `ws`.
    pub(super) fn restart_books(&mut self, ws: &mut Socket) -> Result<(), End> {
        if self.books.is_none() {
            return Ok(());
        }
        if let Some(books) = &mut self.books {
            let now = now_ms();
            books.lost(now, now);
        }
        self.send_snapshots()?;
        let tokens = self.tokens.lock().clone();
        for frame in protocol::operation_frames("subscribe", &tokens, true) {
            ws.send(Message::text(frame))
                .map_err(|e| End::Failed(format!("book resync: {e}")))?;
        }
        Ok(())
    }
}
