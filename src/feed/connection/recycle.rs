//! Planned replacement of a connection's socket, make before break: when it is due
//! (staggered across connections, backing off after failures) and how it is done.

use std::time::{Duration, Instant};

use tungstenite::Message;

use super::{Connection, TICK, is_timeout};
use crate::feed::liveness::Liveness;
use crate::feed::protocol;
use crate::feed::socket::{End, Socket, hand_to, open, set_read_timeout};

/// Read timeout of both sockets while a recycle overlaps them.
const OVERLAP_TICK: Duration = Duration::from_millis(20);

/// Closes a socket nobody will read again: a close frame if it goes, then the TCP close.
fn drop_socket(mut ws: Socket) {
    let _ = ws.close(None);
    let _ = ws.flush();
}

impl Connection {
    /// Make before break: a replacement socket is opened and subscribed while `ws` is still
    /// read; once the replacement has delivered (the book of one of a few held tokens, asked
    /// for after the subscription, proves the server processed it), `ws` is closed politely and the
    /// replacement takes its place. Trades of the overlap arrive twice and collide on the
    /// natural key; none is lost, so no gap is written. A replacement that fails or stays
    /// silent is dropped, the old socket kept, and the recycle tried again later.
    ///
    /// Commands wait in their channel meanwhile: the replacement is subscribed with the
    /// token list as it was, and they apply to it once it is in place.
    pub(super) fn recycle(&mut self, ws: &mut Socket, liveness: &mut Liveness) -> Result<(), End> {
        let tokens = self.tokens.lock().clone();
        let probe_tokens = self.probe_tokens();
        if probe_tokens.is_empty() {
            self.recycle.schedule(&self.config, false);
            return Ok(());
        }
        let mut new = match open(&self.config, self.tls.as_ref(), &self.unblock, OVERLAP_TICK) {
            Ok(new) => new,
            Err(end) => {
                let reason = match end {
                    End::Failed(r) => r,
                    End::RateLimited(_) => "upgrade answered 429".into(),
                    End::Stopped | End::WriterGone => "stopped".into(),
                };
                return self.recycle_failed(ws, None, &reason);
            }
        };
        let frames =
            protocol::subscription_frames(&tokens, self.announce.is_some(), self.books.is_some());
        let probe = protocol::probe_frame(&probe_tokens);
        if let Err(e) = frames
            .into_iter()
            .chain(std::iter::once(probe))
            .try_for_each(|f| new.send(Message::text(f)))
        {
            return self.recycle_failed(ws, Some(new), &format!("subscribe: {e}"));
        }
        if let Err(e) = set_read_timeout(ws, OVERLAP_TICK) {
            return self.recycle_failed(ws, Some(new), &format!("socket setup: {e}"));
        }
        let deadline = Instant::now() + self.config.connect_timeout + self.config.probe_timeout;
        let mut new_pinged = Instant::now();
        loop {
            if self.stop.is_stopped() {
                drop_socket(new);
                return Err(End::Stopped);
            }
            // The old socket stays read (and alive) until the new one is proven.
            if let Err(end) = self
                .read_once(ws, liveness)
                .and_then(|()| self.keep_alive(ws, liveness))
            {
                drop_socket(new);
                return Err(end);
            }
            match new.read() {
                Ok(Message::Text(text)) if text.as_str() == "PONG" => {}
                Ok(Message::Text(text)) if text.as_str() != "INVALID OPERATION" => {
                    // Its trades count; its book events do not, while the old socket's
                    // stream still builds the books (two streams interleaved would not).
                    self.on_frame_from(text.as_str(), false)?;
                    // Only the probe's answer proves every subscription frame before it
                    // was taken: a trade could come from the first frame alone.
                    if protocol::answers_probe(text.as_str(), &probe_tokens) {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => return self.recycle_failed(ws, Some(new), &format!("read: {e}")),
            }
            let now = Instant::now();
            if now > deadline {
                return self.recycle_failed(ws, Some(new), "no data in time");
            }
            if now.duration_since(new_pinged) >= self.config.ping_interval {
                if let Err(e) = new.send(Message::text("PING")) {
                    return self.recycle_failed(ws, Some(new), &format!("ping: {e}"));
                }
                new_pinged = now;
            }
        }
        // The replacement delivers: the old socket goes, read to its end.
        if let Err(e) = set_read_timeout(&new, TICK) {
            return self.recycle_failed(ws, Some(new), &format!("socket setup: {e}"));
        }
        let mut old = std::mem::replace(ws, new);
        self.close(&mut old);
        drop(old);
        // The books were built from the old socket's stream, which ends here: each is
        // fetched afresh on the new one (a blind window of one round trip, recorded).
        self.restart_books(ws)?;
        hand_to(&self.unblock, ws);
        *liveness = Liveness::new(&self.config, Instant::now());
        self.recycle.schedule(&self.config, true);
        self.health.socket_recycled();
        log::info!(
            "connection {}: socket recycled (make before break; {} tokens)",
            self.id,
            tokens.len()
        );
        Ok(())
    }

    /// A recycle that did not work out: the old socket stays, as it was.
    fn recycle_failed(
        &mut self,
        ws: &mut Socket,
        new: Option<Socket>,
        reason: &str,
    ) -> Result<(), End> {
        if let Some(new) = new {
            drop_socket(new);
        }
        hand_to(&self.unblock, ws);
        let retry = self.recycle.schedule(&self.config, false);
        log::warn!(
            "connection {}: recycle failed ({reason}); keeping the old socket, next try in {} s",
            self.id,
            retry.as_secs()
        );
        set_read_timeout(ws, TICK).map_err(|e| End::Failed(format!("socket setup: {e}")))
    }
}
