//! The simulated Gamma listing: `/markets/keyset` (cursor paging) and the legacy `/markets`
//! (offset paging), with the live service's rules about parameters.

use serde_json::{Value, json};

use super::SimState;
use polytape_http::{Request, Response};

/// Cursors are opaque to clients; here they are the next market index, hex-encoded behind a
/// prefix so that nobody mistakes them for offsets.
fn encode_cursor(index: usize) -> String {
    format!("sim{index:x}")
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    usize::from_str_radix(cursor.strip_prefix("sim")?, 16).ok()
}

fn bool_param(req: &Request, name: &str) -> Result<Option<bool>, Response> {
    match req.param(name) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(Response::json(
            422,
            &json!({"error": format!("invalid {name}: {other}")}),
        )),
    }
}

/// The markets matching the request's filters, from `from` on, at most `limit`; and the index
/// to continue from, if any remain.
fn select(
    state: &SimState,
    req: &Request,
    from: usize,
    limit: usize,
) -> Result<(Vec<Value>, Option<usize>), Response> {
    let closed = bool_param(req, "closed")?;
    let ids: Vec<&str> = req
        .params("condition_ids")
        .flat_map(|v| v.split(','))
        .filter(|v| !v.is_empty())
        .collect();
    let markets = state.markets.read();
    let mut out = Vec::new();
    let mut next = None;
    for (i, m) in markets.iter().enumerate().skip(from) {
        if closed.is_some_and(|c| c != m.closed) {
            continue;
        }
        if !ids.is_empty() && !ids.contains(&m.condition_id.as_str()) {
            continue;
        }
        if out.len() == limit {
            next = Some(i);
            break;
        }
        out.push(m.to_gamma_json());
    }
    Ok((out, next))
}

fn limit_param(req: &Request, default: usize) -> Result<usize, Response> {
    match req.param("limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(Response::json(
                422,
                &json!({"error": "limit must be between 1 and 100"}),
            )),
        },
    }
}

/// `GET /markets/keyset?closed=false&limit=100&after_cursor=...`
pub(super) fn keyset(state: &SimState, req: &Request) -> Response {
    if req.param("offset").is_some() {
        return Response::json(
            422,
            &json!({"error": "offset is not supported on keyset endpoints"}),
        );
    }
    let limit = match limit_param(req, 20) {
        Ok(l) => l,
        Err(r) => return r,
    };
    // `cursor=` is not a parameter of this endpoint: like the live service, ignore it.
    let from = match req.param("after_cursor") {
        None => 0,
        Some(c) => match decode_cursor(c) {
            Some(i) => i,
            None => return Response::json(422, &json!({"error": "invalid after_cursor"})),
        },
    };
    match select(state, req, from, limit) {
        Ok((markets, next)) => {
            let mut body = json!({ "markets": markets });
            if let Some(n) = next {
                body["next_cursor"] = json!(encode_cursor(n));
            }
            Response::json(200, &body)
        }
        Err(r) => r,
    }
}

/// `GET /markets?limit=&offset=`: sunset, but still answering.
pub(super) fn legacy(state: &SimState, req: &Request) -> Response {
    let limit = match limit_param(req, 20) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let offset = req
        .param("offset")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    // Offsets count matching markets, not universe indices.
    let (all, _) = match select(state, req, 0, usize::MAX) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let page: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    Response::json(200, &page)
        .with_header("Deprecation", "true")
        .with_header("Sunset", "Wed, 31 Dec 2025 00:00:00 GMT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        assert_eq!(decode_cursor(&encode_cursor(12345)), Some(12345));
        assert_eq!(decode_cursor("12345"), None);
    }
}
