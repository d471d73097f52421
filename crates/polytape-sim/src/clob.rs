//! The simulated CLOB REST book endpoints, answered from the exchange's books: `GET /book`,
//! `POST /books` (at most 500 ids), with the live rate limits, and the ground truth of any
//! past moment, `GET /sim/book?token_id=&at=<unix ms>` (the same JSON).

use std::io::Read;
use std::net::TcpStream;

use polytape_http::{Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::book::{BookState, PriceBp};
use crate::frames;
use crate::state::SimState;

/// Most ids one `POST /books` may name.
pub(crate) const MAX_BOOKS: usize = 500;
/// Largest request body read.
const MAX_BODY: usize = 1 << 20;

fn bad(status: u16, msg: &str) -> Response {
    Response::json(status, &json!({"error": msg}))
}

fn throttled(wait: u64) -> Response {
    bad(429, "too many requests").with_header("Retry-After", wait.to_string())
}

/// A book as it is now (stamped so no later change shares its millisecond), or as it was at
/// `at_ms`. `None`: no such token.
pub(crate) fn book_json(state: &SimState, token_id: &str, at_ms: Option<i64>) -> Option<Value> {
    let view = book_view(state, token_id, at_ms)?;
    let markets = state.markets.read();
    let m = markets.get(view.market as usize)?;
    Some(frames::book_json(
        m,
        view.outcome,
        &view.state,
        view.last_trade,
        view.timestamp_ms,
    ))
}

/// One token's book, for the library accessor and the endpoints.
pub(crate) struct BookView {
    pub(crate) market: u32,
    pub(crate) outcome: u8,
    pub(crate) state: BookState,
    pub(crate) last_trade: Option<PriceBp>,
    pub(crate) timestamp_ms: i64,
}

pub(crate) fn book_view(state: &SimState, token_id: &str, at_ms: Option<i64>) -> Option<BookView> {
    let key = *state.asset_index.read().get(token_id)?;
    let markets = state.markets.read();
    let mut books = state.books.lock();
    let now = crate::now_ms();
    let (timestamp_ms, book_state, last_trade) = match at_ms {
        Some(at) => {
            let (book, _) = books.book(key, &markets, now)?;
            (at, book.at(at), None)
        }
        None => {
            let stamp = books.send_stamp(now);
            let (book, _) = books.book(key, &markets, now)?;
            (stamp, book.state(0), book.last_trade)
        }
    };
    Some(BookView {
        market: key.0,
        outcome: key.1,
        state: book_state,
        last_trade,
        timestamp_ms,
    })
}

/// `GET /book?token_id=`.
pub(crate) fn book(state: &SimState, req: &Request) -> Response {
    if let Some(wait) = state.book_window.admit() {
        return throttled(wait);
    }
    let Some(token) = req.param("token_id") else {
        return bad(400, "token_id is required");
    };
    match book_json(state, token, None) {
        Some(v) => Response::json(200, &v),
        None => bad(404, "No orderbook exists for the requested token id"),
    }
}

#[derive(Deserialize)]
struct BookRequest {
    token_id: String,
}

/// `POST /books`: a JSON array of `{"token_id": …}`, at most 500.
pub(crate) fn books(state: &SimState, req: &Request, stream: &mut TcpStream) -> Response {
    if req.method != "POST" {
        return bad(405, "POST /books");
    }
    if let Some(wait) = state.books_window.admit() {
        return throttled(wait);
    }
    let body = match read_body(req, stream) {
        Ok(b) => b,
        Err(msg) => return bad(400, &msg),
    };
    let Ok(asked) = serde_json::from_slice::<Vec<BookRequest>>(&body) else {
        return bad(400, "body must be a JSON array of {\"token_id\": ...}");
    };
    if asked.len() > MAX_BOOKS {
        return bad(400, &format!("at most {MAX_BOOKS} token ids per request"));
    }
    // Unknown ids are left out, as the live endpoint does.
    let out: Vec<Value> = asked
        .iter()
        .filter_map(|r| book_json(state, &r.token_id, None))
        .collect();
    Response::json(200, &out)
}

/// `GET /sim/book?token_id=&at=<unix ms>`: the ground truth (the book after every change
/// stamped at or before `at`; now when `at` is left out).
pub(crate) fn sim_book(state: &SimState, req: &Request) -> Response {
    let Some(token) = req.param("token_id") else {
        return bad(400, "token_id is required");
    };
    let at = match req.param("at").map(str::parse::<i64>) {
        None => None,
        Some(Ok(at)) => Some(at),
        Some(Err(_)) => return bad(400, "at must be Unix milliseconds"),
    };
    match book_json(state, token, at) {
        Some(v) => Response::json(200, &v),
        None => bad(404, "unknown token"),
    }
}

/// The request's body, by its `Content-Length` (what arrived with the head, then the rest).
pub(crate) fn read_body(req: &Request, stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let len = match req.header("content-length").map(str::parse::<usize>) {
        Some(Ok(n)) if n <= MAX_BODY => n,
        Some(Ok(_)) => return Err("body too large".into()),
        Some(Err(_)) => return Err("bad Content-Length".into()),
        None => req.rest.len(),
    };
    let mut body = req.rest.clone();
    body.truncate(len);
    if body.len() < len {
        let mut rest = vec![0u8; len - body.len()];
        stream
            .read_exact(&mut rest)
            .map_err(|e| format!("body: {e}"))?;
        body.extend(rest);
    }
    Ok(body)
}

/// `GET /prices-history?market=<token>&startTs=&endTs=&fidelity=<minutes>`: the true
/// midpoint at the end of each `fidelity`-minute interval in the window, `{"history":
/// [{"t": <unix s>, "p": <number>}]}`. `p` is written as the exact decimal (the live
/// service sends a JSON number; what it is, midpoint or last trade, it does not document);
/// `t` is when the point was sampled, some seconds into its interval, as on the live service
/// (not the interval's start).
pub(crate) fn prices_history(state: &SimState, req: &Request) -> Response {
    if let Some(wait) = state.history_window.admit() {
        return throttled(wait);
    }
    let num = |k: &str| req.param(k).map(str::parse::<i64>);
    let (Some(token), Some(Ok(start)), Some(Ok(end))) =
        (req.param("market"), num("startTs"), num("endTs"))
    else {
        return bad(400, "market, startTs and endTs are required");
    };
    let fidelity = match num("fidelity") {
        None => 1,
        Some(Ok(f)) if f >= 1 => f,
        Some(_) => return bad(400, "fidelity must be a whole number of minutes"),
    };
    if end < start || end - start > 31 * 86_400 {
        return bad(400, "the window is empty or longer than 31 days");
    }
    if state.history_fails.lock().as_deref() == Some(token) {
        return bad(500, "simulated failure");
    }
    let body = format!(
        r#"{{"history":{}}}"#,
        history_points(state, token, start, end, fidelity)
    );
    Response::new(200, "application/json", body)
}

/// `POST /batch-prices-history`: `{"markets": [≤ 20 token ids], "start_ts", "end_ts",
/// "fidelity"}` → `{"history": {"<token>": [{"t", "p"}, …]}}`, each list as
/// `/prices-history` gives it.
pub(crate) fn batch_prices_history(
    state: &SimState,
    req: &Request,
    stream: &mut TcpStream,
) -> Response {
    if req.method != "POST" {
        return bad(405, "POST /batch-prices-history");
    }
    if let Some(wait) = state.history_window.admit() {
        return throttled(wait);
    }
    let body = match read_body(req, stream) {
        Ok(b) => b,
        Err(msg) => return bad(400, &msg),
    };
    #[derive(serde::Deserialize)]
    struct Asked {
        markets: Vec<String>,
        start_ts: i64,
        end_ts: i64,
        fidelity: Option<i64>,
    }
    let Ok(asked) = serde_json::from_slice::<Asked>(&body) else {
        return bad(
            400,
            "body must be {\"markets\": [...], \"start_ts\", \"end_ts\"}",
        );
    };
    if asked.markets.len() > 20 {
        return bad(400, "at most 20 markets per request");
    }
    let fidelity = asked.fidelity.unwrap_or(1);
    if fidelity < 1 || asked.end_ts < asked.start_ts || asked.end_ts - asked.start_ts > 31 * 86_400
    {
        return bad(400, "bad fidelity or window");
    }
    if let Some(f) = state.history_fails.lock().as_deref()
        && asked.markets.iter().any(|m| m == f)
    {
        return bad(500, "simulated failure");
    }
    let mut body = String::from(r#"{"history":{"#);
    for (i, token) in asked.markets.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let points = history_points(state, token, asked.start_ts, asked.end_ts, fidelity);
        body.push_str(&format!(
            "{}:{points}",
            serde_json::Value::from(token.as_str())
        ));
    }
    body.push_str("}}");
    Response::new(200, "application/json", body)
}

/// The JSON array of one token's points over `[start, end]` (seconds).
fn history_points(state: &SimState, token: &str, start: i64, end: i64, fidelity: i64) -> String {
    let Some(&key) = state.asset_index.read().get(token) else {
        return "[]".into();
    };
    let step = fidelity * 60;
    // Sampled some seconds into the interval (fixed per token).
    let offset = (key.0 as i64 * 7 + key.1 as i64 * 13) % 50 + 3;
    let mut body = String::from("[");
    let books = state.books.lock();
    if let Some(book) = books.existing(key) {
        let mut t = start - start.rem_euclid(step);
        let mut first = true;
        while t <= end {
            // The midpoint as the interval closes: after every change stamped before its end.
            let s = book.at((t + step) * 1000 - 1);
            if let (Some((b, _)), Some((a, _))) = (s.bids.first(), s.asks.first()) {
                let twice = u64::from(*b + *a); // ten-thousandths, twice the midpoint
                let p = format!("{}.{:05}", twice / 20_000, (twice % 20_000) * 5);
                let p = p.trim_end_matches('0').trim_end_matches('.');
                if !first {
                    body.push(',');
                }
                first = false;
                body.push_str(&format!(r#"{{"t":{},"p":{p}}}"#, t + offset.min(step - 1)));
            }
            t += step;
        }
    }
    body.push(']');
    body
}
