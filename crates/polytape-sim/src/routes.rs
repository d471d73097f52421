//! One TCP connection to the simulator: a WebSocket upgrade, a listing request, or a control
//! request under `/sim/`.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{Ordering::Relaxed, Ordering::SeqCst};
use std::time::Duration;

use polytape_http::{self as http, Request, Response};

use crate::state::{SimState, SocketControl};
use crate::universe::SimResolution;
use crate::{clob, gamma};
use crate::{socket, stats};

/// Every new TCP connection: a WebSocket upgrade, a listing request or a control request.
pub(crate) fn handle_connection(state: &Arc<SimState>, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let req = match http::read_request(&mut stream) {
        Ok(r) => r,
        Err(_) => return,
    };
    if req.is_websocket_upgrade() {
        upgrade(state, stream, req);
        return;
    }
    let listing = matches!(req.path.as_str(), "/markets/keyset" | "/markets");
    let failing = listing
        && state
            .gamma_failures
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let response = match req.path.as_str() {
        _ if failing => {
            let status = state.gamma_fail_status.load(SeqCst) as u16;
            let r = Response::json(status, &serde_json::json!({"error": "simulated failure"}));
            if status == 429 {
                r.with_header("Retry-After", "1")
            } else {
                r
            }
        }
        "/markets/keyset" => gamma::keyset(state, &req),
        "/markets" => gamma::legacy(state, &req),
        "/trades" => crate::data_api::trades(state, &req),
        "/v2/trades" => crate::data_api::trades_v2(state, &req),
        "/book" => clob::book(state, &req),
        "/books" => clob::books(state, &req, &mut stream),
        "/sim/book" => clob::sim_book(state, &req),
        "/prices-history" => clob::prices_history(state, &req),
        "/batch-prices-history" => clob::batch_prices_history(state, &req, &mut stream),
        "/rpc" => crate::chain::rpc(state, &req, &mut stream),
        p if p.starts_with("/sim/") => control(state, &req),
        _ => Response::text(404, "not found\n"),
    };
    let _ = response.write_to(&mut stream);
}

fn upgrade(state: &Arc<SimState>, mut stream: TcpStream, req: Request) {
    if req.path != "/ws/market" {
        let _ = Response::text(404, "not found\n").write_to(&mut stream);
        return;
    }
    if !state.admit_upgrade() {
        state.upgrades_rejected.fetch_add(1, Relaxed);
        let _ = Response::text(429, "Too Many Requests\n")
            .with_header("Retry-After", "1")
            .write_to(&mut stream);
        return;
    }
    let Some(key) = req.header("sec-websocket-key") else {
        let _ = Response::text(400, "missing Sec-WebSocket-Key\n").write_to(&mut stream);
        return;
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if io::Write::write_all(&mut stream, head.as_bytes()).is_err() {
        return;
    }
    let id = state.next_socket.fetch_add(1, Relaxed);
    state.sockets_opened.fetch_add(1, Relaxed);
    let (tx, rx) = crate::mailbox::bounded(1024);
    let control = Arc::new(SocketControl::default());
    control.frozen.store(state.freeze_new.load(SeqCst), SeqCst);
    state.register(id, tx, Arc::clone(&control));
    match socket::Session::new(id, Arc::clone(state), control, stream, req.rest, rx) {
        Ok(session) => session.run(),
        Err(_) => state.unregister(id),
    }
}

fn control(state: &Arc<SimState>, req: &Request) -> Response {
    let num = |name: &str| req.param(name).and_then(|v| v.parse::<u64>().ok());
    let on = req.param("on").is_none_or(|v| v != "0" && v != "false");
    match req.path.as_str() {
        "/sim/stats" => Response::json(200, &stats(state)),
        "/sim/delivered" => {
            let records = state.delivered.lock().clone();
            let mut body = String::new();
            for r in &records {
                if let Some(t) = state.record_to_trade(r) {
                    body.push_str(&serde_json::to_string(&t).unwrap_or_default());
                    body.push('\n');
                }
            }
            Response::new(200, "application/x-ndjson", body)
        }
        "/sim/faults/drop" => {
            Response::json(200, &state.for_each_socket(|c| c.drop.store(true, SeqCst)))
        }
        "/sim/faults/freeze" => Response::json(200, &state.freeze(on)),
        "/sim/faults/stall" => {
            let Some(asset) = req.param("asset") else {
                return Response::text(400, "asset= is required\n");
            };
            if state.stall_asset(asset, on) {
                Response::json(200, &true)
            } else {
                Response::text(404, "unknown asset\n")
            }
        }
        "/sim/faults/max-assets" => match num("n") {
            Some(n) => {
                state.set_max_assets_per_socket(n as usize);
                Response::json(200, &n)
            }
            None => Response::text(400, "n= is required\n"),
        },
        "/sim/faults/upgrade-limit" => match num("per_sec") {
            Some(n) => {
                state.upgrades_per_sec.store(n as u32, SeqCst);
                Response::json(200, &n)
            }
            None => Response::text(400, "per_sec= is required\n"),
        },
        "/sim/faults/gamma" => {
            let n = num("n").unwrap_or(1) as u32;
            let status = num("status").unwrap_or(429) as u32;
            state.gamma_fail_status.store(status, SeqCst);
            state.gamma_failures.store(n, SeqCst);
            Response::json(200, &n)
        }
        "/sim/faults/drop-deltas" => {
            let n = num("n").unwrap_or(1) as u32;
            Response::json(200, &state.drop_deltas_on_one_socket(n))
        }
        "/sim/faults/malformed" => Response::json(200, &state.send_malformed()),
        "/sim/faults/oversized" => {
            let bytes = num("bytes").unwrap_or(32 << 20) as usize;
            Response::json(200, &state.send_oversized(bytes))
        }
        "/sim/markets/add" => Response::json(200, &state.add_market().to_gamma_json()),
        "/sim/markets/close" => {
            let Some(cid) = req.param("condition_id") else {
                return Response::text(400, "condition_id= is required\n");
            };
            let resolution = match req.param("outcome").and_then(|o| o.parse::<usize>().ok()) {
                Some(i) if i < 2 => SimResolution::Winner(i),
                _ => SimResolution::Split,
            };
            Response::json(200, &state.close_market(cid, resolution))
        }
        _ => Response::text(404, "unknown control endpoint\n"),
    }
}
