//! Opening one socket to the market channel: TCP with timeouts, TLS through rustls, the
//! WebSocket handshake; the handle that unblocks a reader from another thread; and the gate
//! that spaces socket opens over all connections.

use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Connector, HandshakeError, WebSocket};

use crate::config::Config;
use crate::http::retry_after;
use crate::stop::StopSignal;

/// The most one read of a socket takes (tungstenite's read chunk; see `connect`).
const READ_CHUNK: usize = 64 * 1024;

/// Why a socket session ended (or could not start).
pub(crate) enum End {
    Stopped,
    /// The writer is gone: nothing more can be stored.
    WriterGone,
    Failed(String),
    RateLimited(Option<Duration>),
}

/// Longest wait a 429's `Retry-After` may ask of a socket.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// A blocking WebSocket, plain or TLS.
pub(crate) type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// Shuts down a connection's current socket from another thread, which unblocks its reader at
/// once.
#[derive(Clone, Default)]
pub(crate) struct Unblock(Arc<Mutex<Option<TcpStream>>>);

impl Unblock {
    pub(crate) fn set(&self, stream: Option<TcpStream>) {
        *self.0.lock() = stream;
    }

    pub(crate) fn shutdown(&self) {
        if let Some(s) = self.0.lock().as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Spaces socket opens over all connections: the live service answers bursts of upgrades
/// with 429.
pub(crate) struct OpenGate {
    interval: Duration,
    next: Mutex<Instant>,
}

impl OpenGate {
    pub(crate) fn new(interval: Duration) -> Self {
        OpenGate {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Books the next turn without waiting for it: for a caller with a socket to keep
    /// reading meanwhile.
    pub(crate) fn reserve(&self) -> Instant {
        let mut next = self.next.lock();
        let slot = (*next).max(Instant::now());
        *next = slot + self.interval;
        slot
    }

    /// Waits for this caller's turn; false when stopped meanwhile.
    pub(crate) fn wait_turn(&self, stop: &StopSignal) -> bool {
        let slot = self.reserve();
        let wait = slot.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            !stop.is_stopped()
        } else {
            !stop.wait_timeout(wait)
        }
    }
}

/// Opens a socket to `config`'s market channel: TCP with timeouts (its clone handed to
/// `unblock`), TLS for `wss://`, the WebSocket handshake; reads then time out every `tick`.
/// A 429 on the upgrade comes back as [`End::RateLimited`] with its `Retry-After`.
pub(crate) fn open(
    config: &Config,
    tls_config: Option<&Arc<rustls::ClientConfig>>,
    unblock: &Unblock,
    tick: Duration,
) -> Result<Socket, End> {
    let url = config.ws_url.as_str();
    let request = url
        .into_client_request()
        .map_err(|e| End::Failed(format!("bad url {url}: {e}")))?;
    let uri = request.uri();
    let tls = uri.scheme_str() == Some("wss");
    let host = uri.host().unwrap_or("").trim_matches(['[', ']']).to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let timeout = config.connect_timeout;
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| End::Failed(format!("resolve {host}: {e}")))?
        .collect();
    let mut last_err = None;
    let stream = addrs
        .iter()
        .find_map(|a| match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => Some(s),
            Err(e) => {
                last_err = Some(e);
                None
            }
        })
        .ok_or_else(|| {
            End::Failed(format!(
                "connect {host}:{port}: {}",
                last_err.map_or("no address".to_owned(), |e| e.to_string())
            ))
        })?;
    let io = |e: std::io::Error| End::Failed(format!("socket setup: {e}"));
    stream.set_nodelay(true).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    unblock.set(Some(stream.try_clone().map_err(io)?));
    // What one read may take from the socket. A busy socket's frames run to tens of KB (the
    // live mix bundles a trade with its book events): 8 KB reads took 7.3 times the recv
    // calls of 64 KB ones (560,381 against 76,708 over the python section's runs) for 5-10%
    // more of the connections' CPU. 64 KB a socket is 13 MB at 100,000 tokens.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size));
    let connector = match (tls_config, tls) {
        (Some(cfg), true) => Connector::Rustls(Arc::clone(cfg)),
        (None, true) => return Err(End::Failed("wss:// without a TLS config".into())),
        (_, false) => Connector::Plain,
    };
    let (ws, _response) =
        tungstenite::client_tls_with_config(request, stream, Some(ws_config), Some(connector))
            .map_err(|e| match e {
                HandshakeError::Failure(tungstenite::Error::Http(resp))
                    if resp.status().as_u16() == 429 =>
                {
                    let retry = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry_after(v, SystemTime::now(), MAX_RETRY_AFTER));
                    End::RateLimited(retry)
                }
                HandshakeError::Failure(e) => End::Failed(format!("handshake: {e}")),
                HandshakeError::Interrupted(_) => End::Failed("handshake timed out".into()),
            })?;
    set_read_timeout(&ws, tick).map_err(io)?;
    Ok(ws)
}

/// The TCP stream under a socket, plain or TLS.
fn tcp(ws: &Socket) -> Option<&TcpStream> {
    match ws.get_ref() {
        MaybeTlsStream::Plain(s) => Some(s),
        MaybeTlsStream::Rustls(s) => Some(s.get_ref()),
        _ => None,
    }
}

/// How long a read on `ws` may block before it returns `WouldBlock`/`TimedOut`.
pub(crate) fn set_read_timeout(ws: &Socket, timeout: Duration) -> std::io::Result<()> {
    match tcp(ws) {
        Some(s) => s.set_read_timeout(Some(timeout)),
        None => Ok(()),
    }
}

/// Makes `ws` the socket `unblock` shuts down.
pub(crate) fn hand_to(unblock: &Unblock, ws: &Socket) {
    unblock.set(tcp(ws).and_then(|s| s.try_clone().ok()));
}

/// The rustls client configuration shared by every socket: webpki roots built in, plus the
/// PEM roots of `extra_roots` when given.
pub(crate) fn tls_config(
    extra_roots: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, crate::Error> {
    let roots = crate::tls::root_store(extra_roots, true, "ws CA file")?;
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::Error::config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
