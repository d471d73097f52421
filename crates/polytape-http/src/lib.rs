//! A small blocking HTTP/1.1 server: enough for the daemon's health endpoints and for the
//! simulator's Gamma listing, control endpoints and WebSocket upgrades on one port.
//!
//! One thread per connection and `Connection: close` on every response: the callers are
//! scrapers, tests and a handful of sockets, not the open internet.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest request head we read.
const MAX_HEAD: usize = 16 * 1024;
/// Most requests a plain request/response server handles at once; more are answered 503 at
/// once and closed, so no number of clients can pile up threads.
pub const MAX_CONNECTIONS: usize = 32;
/// The time a client has to send its whole request head.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Connections taken beyond [`MAX_CONNECTIONS`] while every place is held (by slow clients,
/// say), each given [`OVERFLOW_DEADLINE`] for its head and answered only on a priority path
/// (a liveness probe); the rest still get 503 at once.
pub const MAX_OVERFLOW: usize = 16;
/// The time an overflow connection has to send its head: a prober sends it at once.
pub const OVERFLOW_DEADLINE: Duration = Duration::from_millis(500);

/// A parsed request head, plus any bytes read past it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// Bytes that arrived after the head (a body, or the first WebSocket frames).
    pub rest: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn params<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_websocket_upgrade(&self) -> bool {
        self.header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    }
}

/// Reads one request head from `stream`.
pub fn read_request(stream: &mut TcpStream) -> io::Result<Request> {
    read_request_by(stream, None)
}

/// [`read_request`], all of it by `deadline`: a client that trickles a byte now and then
/// cannot hold a connection longer than that (a slowloris).
pub fn read_request_by(stream: &mut TcpStream, deadline: Option<Instant>) -> io::Result<Request> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_len = loop {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "request too slow"));
            }
            stream.set_read_timeout(Some(left))?;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a request",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    };
    parse_request(&buf, head_len)
}

/// Parses a request whose head is `buf[..head_len]` (the rest of `buf` is kept as what
/// followed it). Public for the fuzzer: every byte a client sends goes through here.
pub fn parse_request(buf: &[u8], head_len: usize) -> io::Result<Request> {
    let head_len = head_len.min(buf.len());
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "incomplete request head",
            ));
        }
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let headers = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok(Request {
        method: req.method.unwrap_or("GET").to_owned(),
        path: path.to_owned(),
        query,
        headers,
        rest: buf[head_len..].to_vec(),
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // Two hex digits exactly: `u8::from_str_radix` alone would take "+1" as 1.
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                let hex = [bytes[i + 1], bytes[i + 2]];
                let hex = std::str::from_utf8(&hex).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response to write.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn json(status: u16, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::new(status, "application/json", body),
            Err(e) => Self::text(500, format!("cannot serialise: {e}\n")),
        }
    }

    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn write_to(&self, stream: &mut impl Write) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(&self.body)?;
        stream.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// An accept loop on its own thread, handing each connection to `handle` on a thread of its
/// own. Dropping or calling [`Server::shutdown`] stops accepting.
pub struct Server {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` and starts accepting. `handle` owns the stream: it may answer one request
    /// or keep the socket (a WebSocket).
    pub fn start<F>(addr: &str, name: &str, handle: F) -> io::Result<Server>
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        Self::start_bounded(addr, name, None, handle)
    }

    /// [`Server::start`], with at most `max` connections handled at once: the accept loop
    /// counts each before its thread starts, and answers one more 503 at once.
    pub fn start_bounded<F>(
        addr: &str,
        name: &str,
        max: Option<usize>,
        handle: F,
    ) -> io::Result<Server>
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        Self::start_with_overflow(addr, name, max, handle, None::<fn(TcpStream)>)
    }

    /// [`Server::start_bounded`], and while every place is held, up to [`MAX_OVERFLOW`] more
    /// connections handed to `overflow` (which must be quick to give its place back) before
    /// any is turned away.
    pub fn start_with_overflow<F, O>(
        addr: &str,
        name: &str,
        max: Option<usize>,
        handle: F,
        overflow: Option<O>,
    ) -> io::Result<Server>
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
        O: Fn(TcpStream) + Send + Sync + 'static,
    {
        let overflow = overflow.map(Arc::new);
        let overflow_active = Arc::new(AtomicUsize::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        let stop = Arc::clone(&stopping);
        let thread_name = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-accept"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let stream = match stream {
                        Ok(s) => s,
                        Err(e) => {
                            log::warn!("{thread_name}: accept failed: {e}");
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    };
                    let full = max.is_some_and(|max| active.load(Ordering::SeqCst) >= max);
                    let spawned = match (&overflow, full) {
                        (_, false) => spawn_counted(&thread_name, &active, &handle, stream),
                        (Some(o), true)
                            if overflow_active.load(Ordering::SeqCst) < MAX_OVERFLOW =>
                        {
                            spawn_counted(&thread_name, &overflow_active, o, stream)
                        }
                        _ => {
                            let mut stream = stream;
                            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                            let _ = Response::text(503, "busy\n").write_to(&mut stream);
                            continue;
                        }
                    };
                    if let Err(e) = spawned {
                        log::warn!("{thread_name}: cannot spawn a connection thread: {e}");
                    }
                }
            })?;
        Ok(Server {
            addr,
            stopping,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the accept thread. Connections already handed out finish on
    /// their own.
    pub fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stopping.store(true, Ordering::SeqCst);
            // Wake the blocked accept() with a connection of our own.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Hands `stream` to `handle` on a thread of its own, holding one of `places` (counted here,
/// in the accept loop, and given back on every path the thread ends by, a panic included).
fn spawn_counted<F>(
    name: &str,
    places: &Arc<AtomicUsize>,
    handle: &Arc<F>,
    stream: TcpStream,
) -> io::Result<()>
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    struct Place(Arc<AtomicUsize>);
    impl Drop for Place {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    places.fetch_add(1, Ordering::SeqCst);
    let place = Place(Arc::clone(places));
    let handle = Arc::clone(handle);
    std::thread::Builder::new()
        .name(format!("{name}-conn"))
        .spawn(move || {
            let _place = place;
            handle(stream)
        })
        .map(drop)
}

/// Serves plain request/response handlers: reads one request, writes the handler's answer.
/// Hardened for a port that may be reachable beyond loopback: at most [`MAX_CONNECTIONS`] at
/// once (the rest get 503 at once), the request head within [`REQUEST_DEADLINE`] and 16 KiB,
/// the answer written within 5 s.
pub fn serve_requests<F>(addr: &str, name: &str, handler: F) -> io::Result<Server>
where
    F: Fn(&Request) -> Response + Send + Sync + 'static,
{
    serve_requests_with_priority(addr, name, &[], handler)
}

/// [`serve_requests`], with `priority` paths (a liveness probe) still answered while slow
/// clients hold every place: up to [`MAX_OVERFLOW`] more connections, each with
/// [`OVERFLOW_DEADLINE`] for its head, are answered on those paths and 503 on any other.
pub fn serve_requests_with_priority<F>(
    addr: &str,
    name: &str,
    priority: &[&str],
    handler: F,
) -> io::Result<Server>
where
    F: Fn(&Request) -> Response + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let priority: Vec<String> = priority.iter().map(|p| (*p).to_owned()).collect();
    let overflow = (!priority.is_empty()).then(|| {
        let handler = Arc::clone(&handler);
        move |stream| {
            answer(stream, OVERFLOW_DEADLINE, |req| {
                if priority.contains(&req.path) {
                    handler(req)
                } else {
                    Response::text(503, "busy\n")
                }
            })
        }
    });
    Server::start_with_overflow(
        addr,
        name,
        Some(MAX_CONNECTIONS),
        move |stream| answer(stream, REQUEST_DEADLINE, |req| handler(req)),
        overflow,
    )
}

/// Reads one request head from `stream` within `within`, and writes `handler`'s answer
/// (within 5 s). A client that closes or is too slow gets nothing; a bad head, 400.
fn answer(mut stream: TcpStream, within: Duration, handler: impl FnOnce(&Request) -> Response) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let deadline = Instant::now() + within;
    let response = match read_request_by(&mut stream, Some(deadline)) {
        Ok(req) => handler(&req),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            return;
        }
        Err(e) => Response::text(400, format!("bad request: {e}\n")),
    };
    let _ = response.write_to(&mut stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Server {
        serve_requests("127.0.0.1:0", "test-http", |_| Response::text(200, "ok\n")).expect("bind")
    }

    fn get(addr: SocketAddr) -> Option<u16> {
        get_path(addr, "/")
    }

    /// The status a GET of `path` is answered with.
    fn get_path(addr: SocketAddr, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .ok()?;
        // A turned-away connection may be reset after its 503 (the request it sent is never
        // read): what arrived before the reset is the answer.
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    #[test]
    fn a_slow_client_is_cut_off_at_the_deadline() {
        let server = server();
        let mut s = TcpStream::connect(server.addr()).expect("connect");
        let started = Instant::now();
        // A byte a second keeps a per-read timeout happy forever; not the deadline.
        let mut closed = false;
        for _ in 0..10 {
            if s.write_all(b"G").is_err() {
                closed = true;
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            let mut probe = [0u8; 1];
            s.set_read_timeout(Some(Duration::from_millis(10)))
                .expect("timeout");
            if matches!(s.read(&mut probe), Ok(0)) {
                closed = true;
                break;
            }
        }
        assert!(closed, "the slow client was cut off");
        let took = started.elapsed();
        assert!(took < REQUEST_DEADLINE + Duration::from_secs(3), "{took:?}");
        assert_eq!(get(server.addr()), Some(200), "others are served");
    }

    #[test]
    fn connections_are_bounded_and_heads_are_limited() {
        let server = server();
        // Hold every place with clients that send nothing.
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(server.addr()).expect("connect"))
            .collect();
        // The accept loop counts them in order, so the next one is turned away; a retry or two
        // covers a connect still in the kernel's queue.
        let mut busy = None;
        for _ in 0..50 {
            busy = get(server.addr());
            if busy == Some(503) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(busy, Some(503), "one more is turned away at once");
        drop(idle);
        let mut ok = None;
        for _ in 0..50 {
            ok = get(server.addr());
            if ok == Some(200) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(ok, Some(200), "places come back");
        // A head past 16 KiB: 400.
        let mut s = TcpStream::connect(server.addr()).expect("connect");
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        let _ = s.write_all(huge.as_bytes());
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    }

    /// Slow clients holding every place do not silence a liveness probe: a priority path is
    /// still answered (others get 503 at once).
    #[test]
    fn a_priority_path_is_answered_while_every_place_is_held() {
        let server = serve_requests_with_priority("127.0.0.1:0", "test-http", &["/livez"], |r| {
            Response::text(200, format!("{}\n", r.path))
        })
        .expect("bind");
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(server.addr()).expect("connect"))
            .collect();
        let ask = |path: &str| get_path(server.addr(), path);
        // Once the accept loop has counted every idle client, /health is turned away ...
        let mut busy = None;
        for _ in 0..50 {
            busy = ask("/health");
            if busy == Some(503) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(busy, Some(503));
        // ... and /livez answered all the same.
        assert_eq!(ask("/livez"), Some(200));
        drop(idle);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        // Not hex digits, though `from_str_radix` takes a sign (found reading for the fuzzer).
        assert_eq!(percent_decode("%+1x"), "% 1x");
        assert_eq!(percent_decode("%-1"), "%-1");
        assert_eq!(percent_decode("%e2%82%AC"), "€");
        assert_eq!(percent_decode("%%41"), "%A");
    }

    #[test]
    fn any_bytes_parse_to_a_request_or_an_error() {
        let good = b"GET /health?x=%41 HTTP/1.1\r\nHost: a\r\n\r\nrest";
        let r = parse_request(good, good.len() - 4).expect("parses");
        assert_eq!(
            (r.path.as_str(), r.rest.as_slice()),
            ("/health", &b"rest"[..])
        );
        assert_eq!(r.query, vec![("x".to_owned(), "A".to_owned())]);
        for bad in [&b""[..], b"\xff\xfe\r\n\r\n", b"GET / HTTP/1.1\r\n"] {
            assert!(parse_request(bad, bad.len()).is_err(), "{bad:?}");
        }
        assert!(
            parse_request(good, 10_000).is_ok(),
            "a head length past the end is clamped"
        );
    }
}
