//! A bare WebSocket client for testing the simulator's protocol directly.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// Connects to `url` with a read timeout, so reads in tests never block for long.
pub fn connect(url: &str) -> Socket {
    let (ws, _) = tungstenite::connect(url).expect("websocket connects");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
    }
    ws
}

pub fn send(ws: &mut Socket, text: &str) {
    ws.send(Message::text(text)).expect("send");
}

pub fn subscribe(ws: &mut Socket, assets: &[String]) {
    let msg = serde_json::json!({"type": "market", "assets_ids": assets, "initial_dump": true});
    send(ws, &msg.to_string());
}

/// What the next read gave.
#[derive(Debug)]
pub enum Read {
    Text(String),
    /// Binary, ping or pong.
    Other,
    Closed(Option<u16>),
    Error(String),
    Timeout,
}

/// Reads one message, waiting at most `timeout`.
pub fn read(ws: &mut Socket, timeout: Duration) -> Read {
    let deadline = Instant::now() + timeout;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Read::Text(t.to_string()),
            Ok(Message::Close(frame)) => return Read::Closed(frame.map(|f| u16::from(f.code))),
            Ok(_) => return Read::Other,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    return Read::Timeout;
                }
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Read::Closed(None);
            }
            Err(e) => return Read::Error(e.to_string()),
        }
    }
}

/// Reads text frames until `pred` holds for one (returned) or `timeout` passes (None).
pub fn read_until(
    ws: &mut Socket,
    timeout: Duration,
    mut pred: impl FnMut(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match read(ws, deadline.saturating_duration_since(Instant::now())) {
            Read::Text(t) if pred(&t) => return Some(t),
            Read::Text(_) | Read::Other | Read::Timeout => {}
            Read::Closed(_) | Read::Error(_) => return None,
        }
    }
    None
}
