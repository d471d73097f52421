//! polytape-sim on its own: the protocol rules, the listing, each fault, determinism, and
//! its ground truth against a bare client.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use polytape_sim::universe::SimResolution;
use polytape_sim::{Sim, SimConfig};
use serde_json::Value;

use polytape_testkit::Watchdog;
use polytape_testkit::pipeline;
use polytape_testkit::ws::{self, Read};

fn open_tokens(sim: &Sim, markets: usize) -> Vec<String> {
    sim.markets()
        .iter()
        .filter(|m| m.is_open())
        .take(markets)
        .flat_map(|m| m.token_ids.clone())
        .collect()
}

fn events(text: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(a)) => a,
        Ok(v) => vec![v],
        Err(_) => Vec::new(),
    }
}

fn get(url: &str) -> (u16, String, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().expect("http get");
    let deprecation = resp
        .headers()
        .get("deprecation")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().expect("body");
    (status, body, deprecation)
}

#[test]
fn the_subscription_must_come_first() {
    let _w = Watchdog::new("the_subscription_must_come_first", Duration::from_secs(30));
    let sim = pipeline::sim(10, 0.0);
    let mut c = ws::connect(&sim.ws_url());
    ws::send(&mut c, "PING");
    match ws::read(&mut c, Duration::from_secs(5)) {
        Read::Closed(code) => assert_eq!(code, Some(1008)),
        other => panic!("expected close 1008, got {other:?}"),
    }
}

#[test]
fn ping_pong_initial_dump_and_operations() {
    let _w = Watchdog::new(
        "ping_pong_initial_dump_and_operations",
        Duration::from_secs(30),
    );
    let sim = pipeline::sim(20, 0.0);
    let tokens = open_tokens(&sim, 6);
    let mut c = ws::connect(&sim.ws_url());
    ws::subscribe(&mut c, &tokens[..6]);
    // The initial dump: one array of `book` snapshots, some without `event_type`.
    let dump =
        ws::read_until(&mut c, Duration::from_secs(5), |t| t.starts_with('[')).expect("dump");
    let books = events(&dump);
    assert_eq!(books.len(), 6);
    assert!(
        books
            .iter()
            .all(|b| b["bids"].is_array() && b["asks"].is_array())
    );
    assert!(books.iter().any(|b| b.get("event_type").is_none()));
    assert!(books.iter().any(|b| b["event_type"] == "book"));
    ws::send(&mut c, "PING");
    assert!(ws::read_until(&mut c, Duration::from_secs(5), |t| t == "PONG").is_some());
    assert!(pipeline::wait_stats(&sim, |s| s.subscribed_assets == 6));
    ws::send(
        &mut c,
        &format!(
            r#"{{"operation":"subscribe","assets_ids":["{}","{}"]}}"#,
            tokens[6], tokens[7]
        ),
    );
    assert!(pipeline::wait_stats(&sim, |s| s.subscribed_assets == 8));
    ws::send(
        &mut c,
        &format!(
            r#"{{"operation":"unsubscribe","assets_ids":["{}"]}}"#,
            tokens[0]
        ),
    );
    assert!(pipeline::wait_stats(&sim, |s| s.subscribed_assets == 7));
    // A second `type` message is refused.
    ws::subscribe(&mut c, &tokens[..2]);
    assert!(ws::read_until(&mut c, Duration::from_secs(5), |t| t == "INVALID OPERATION").is_some());
}

#[test]
fn a_silent_client_is_closed() {
    let _w = Watchdog::new("a_silent_client_is_closed", Duration::from_secs(30));
    let sim = pipeline::sim_with(SimConfig {
        listen: "127.0.0.1:0".into(),
        markets: 10,
        client_idle_timeout: Duration::from_millis(800),
        noise_per_trade: 0,
        ..SimConfig::default()
    });
    let tokens = open_tokens(&sim, 2);
    let mut c = ws::connect(&sim.ws_url());
    ws::subscribe(&mut c, &tokens);
    let started = Instant::now();
    let closed = loop {
        match ws::read(&mut c, Duration::from_secs(5)) {
            Read::Closed(_) | Read::Error(_) => break true,
            Read::Timeout => break false,
            _ => {}
        }
    };
    assert!(closed, "the socket was closed");
    assert!(started.elapsed() >= Duration::from_millis(700));
}

/// Trades in the wire form, and the ground truth: every trade the sim says it delivered was
/// received by the client, and nothing else.
#[test]
fn trades_flow_in_wire_form_and_delivered_is_exact() {
    let _w = Watchdog::new("trades_flow_in_wire_form", Duration::from_secs(60));
    let sim = pipeline::sim_with(SimConfig {
        noise_per_trade: 3,
        ..pipeline::sim_config(50, 3000.0)
    });
    let tokens = open_tokens(&sim, 20);
    let mut c = ws::connect(&sim.ws_url());
    ws::subscribe(&mut c, &tokens);
    let mut received = Vec::new();
    let (mut arrays_mixing, mut short_prices, mut with_hash, mut without_hash) = (0, 0, 0, 0);
    let mut kinds = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.len() < 2000 && Instant::now() < deadline {
        let Read::Text(t) = ws::read(&mut c, Duration::from_secs(1)) else {
            continue;
        };
        let evs = events(&t);
        let trades = evs
            .iter()
            .filter(|e| e["event_type"] == "last_trade_price")
            .count();
        if trades > 0 && trades < evs.len() {
            arrays_mixing += 1;
        }
        for e in &evs {
            kinds.insert(e["event_type"].as_str().unwrap_or("none").to_owned());
            if e["event_type"] == "last_trade_price" {
                let price = e["price"].as_str().expect("price is a string");
                short_prices += usize::from(price.starts_with('.'));
                if e.get("transaction_hash").is_some() {
                    with_hash += 1
                } else {
                    without_hash += 1
                }
                assert!(e["timestamp"].as_str().is_some_and(|t| t.len() == 13));
                assert!(tokens.contains(&e["asset_id"].as_str().unwrap_or_default().to_owned()));
                received.push(e.clone());
            }
        }
    }
    assert!(received.len() >= 2000, "received {}", received.len());
    assert!(
        arrays_mixing > 0 && short_prices > 0 && without_hash > 0 && with_hash > without_hash * 5
    );
    // Book events ride with the trades (a tick_size_change only when a midpoint crosses
    // 0.04 or 0.96: too rare to wait for here; the book's unit tests cover it).
    assert!(
        kinds.contains("price_change") && kinds.contains("book"),
        "{kinds:?}"
    );
    // Close politely and read to the end: then delivered must equal received.
    c.close(None).expect("close");
    loop {
        match ws::read(&mut c, Duration::from_secs(5)) {
            Read::Text(t) => received.extend(
                events(&t)
                    .into_iter()
                    .filter(|e| e["event_type"] == "last_trade_price"),
            ),
            Read::Other | Read::Timeout => {}
            Read::Closed(_) | Read::Error(_) => break,
        }
    }
    let got: HashSet<(String, String)> = received
        .iter()
        .map(|e| {
            (
                e["asset_id"].as_str().unwrap_or_default().to_owned(),
                e["size"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(got.len(), received.len(), "no trade twice");
    assert!(pipeline::wait_stats(&sim, |s| s.sockets_open == 0));
    let delivered: HashSet<(String, String)> = sim
        .delivered()
        .into_iter()
        .map(|t| (t.asset_id, t.size))
        .collect();
    assert_eq!(delivered, got);
}

#[test]
fn custom_features_add_and_close_markets() {
    let _w = Watchdog::new(
        "custom_features_add_and_close_markets",
        Duration::from_secs(30),
    );
    let sim = pipeline::sim(20, 500.0);
    let tokens = open_tokens(&sim, 5);
    let mut c = ws::connect(&sim.ws_url());
    let sub = serde_json::json!({"type":"market","assets_ids":tokens,"custom_feature_enabled":true,"initial_dump":false});
    ws::send(&mut c, &sub.to_string());
    assert!(
        ws::read_until(&mut c, Duration::from_secs(5), |t| t
            .contains("\"best_bid_ask\""))
        .is_some()
    );
    let added = sim.add_market();
    let announced = ws::read_until(&mut c, Duration::from_secs(5), |t| {
        t.contains("\"new_market\"")
    })
    .expect("new_market");
    assert!(announced.contains(&added.condition_id));
    let (_, body, _) = get(&format!(
        "{}/markets/keyset?closed=false&limit=100",
        sim.gamma_url()
    ));
    assert!(
        body.contains(&added.condition_id),
        "the listing shows the new market"
    );
    let target = sim
        .markets()
        .into_iter()
        .find(|m| m.token_ids[0] == tokens[0])
        .expect("market");
    let closed_at = polytape_sim::now_ms();
    assert!(sim.close_market(&target.condition_id, SimResolution::Winner(1)));
    let resolved = ws::read_until(&mut c, Duration::from_secs(5), |t| {
        t.contains("\"market_resolved\"")
    })
    .expect("market_resolved");
    assert!(resolved.contains(&target.token_ids[1]));
    let (_, body, _) = get(&format!(
        "{}/markets/keyset?closed=true&condition_ids={}",
        sim.gamma_url(),
        target.condition_id
    ));
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["markets"][0]["closed"], true);
    assert_eq!(v["markets"][0]["outcomePrices"], "[\"0\",\"1\"]");
    // No trade for the closed market is generated from now on (trades are stamped when
    // generated; allow one generator tick).
    let before = sim.delivered_count();
    assert!(pipeline::wait_stats(&sim, |s| s.trades_delivered as usize > before + 100));
    let late = sim
        .delivered()
        .into_iter()
        .filter(|t| t.market == target.condition_id && t.timestamp_ms > closed_at + 50)
        .count();
    assert_eq!(late, 0, "trades after the close");
}

#[test]
fn keyset_paging_covers_every_market_once() {
    let _w = Watchdog::new(
        "keyset_paging_covers_every_market_once",
        Duration::from_secs(60),
    );
    let sim = pipeline::sim(2500, 0.0);
    let base = sim.gamma_url();
    let mut seen = HashSet::new();
    let mut url = format!("{base}/markets/keyset?closed=false&limit=100");
    let mut pages = 0;
    loop {
        let (status, body, _) = get(&url);
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).expect("json");
        for m in v["markets"].as_array().expect("markets") {
            assert_eq!(m["closed"], false);
            assert!(m["outcomes"].is_string() && m["clobTokenIds"].is_string());
            assert!(
                seen.insert(m["conditionId"].as_str().expect("cid").to_owned()),
                "no market twice"
            );
        }
        pages += 1;
        match v.get("next_cursor").and_then(Value::as_str) {
            Some(c) => {
                url = format!("{base}/markets/keyset?closed=false&limit=100&after_cursor={c}")
            }
            None => break,
        }
    }
    let open = sim.markets().iter().filter(|m| !m.closed).count();
    assert_eq!(seen.len(), open);
    assert_eq!(pages, open.div_ceil(100));
    for bad in [
        "limit=0",
        "limit=101",
        "offset=100",
        "closed=maybe",
        "after_cursor=12",
    ] {
        assert_eq!(get(&format!("{base}/markets/keyset?{bad}")).0, 422, "{bad}");
    }
    // `cursor=` is silently ignored: page 1 again.
    let first = get(&format!("{base}/markets/keyset?closed=false&limit=5")).1;
    assert_eq!(
        get(&format!(
            "{base}/markets/keyset?closed=false&limit=5&cursor=sim64"
        ))
        .1,
        first
    );
    // The legacy offset listing still answers, with deprecation headers.
    let (status, body, deprecation) =
        get(&format!("{base}/markets?closed=true&limit=100&offset=100"));
    assert_eq!(status, 200);
    assert_eq!(deprecation.as_deref(), Some("true"));
    let closed: Vec<Value> = serde_json::from_str(&body).expect("array");
    assert_eq!(closed.len(), 100);
    assert!(
        closed
            .iter()
            .all(|m| m["closed"] == true && m["umaResolutionStatus"].is_string())
    );
    let statuses: HashSet<&str> = closed
        .iter()
        .filter_map(|m| m["umaResolutionStatus"].as_str())
        .collect();
    assert_eq!(
        statuses,
        HashSet::from(["resolved", "proposed", "disputed"])
    );
    assert!(
        closed
            .iter()
            .any(|m| m["outcomePrices"] == "[\"0.5\",\"0.5\"]"),
        "a split"
    );
    let v2 = sim
        .markets()
        .into_iter()
        .find(|m| m.version == "v2")
        .expect("a v2 market");
    let (_, body, _) = get(&format!(
        "{base}/markets/keyset?condition_ids={}",
        v2.condition_id
    ));
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["markets"][0]["version"], "v2");
    assert_eq!(v["markets"][0]["positionIds"][0], v2.token_ids[0].as_str());
}

#[test]
fn the_same_seed_gives_the_same_universe() {
    let seeded = |seed| {
        pipeline::sim_with(SimConfig {
            seed,
            ..pipeline::sim_config(300, 0.0)
        })
    };
    let (a, b, c) = (seeded(42), seeded(42), seeded(43));
    let page = |s: &Sim| get(&format!("{}/markets/keyset?limit=100", s.gamma_url())).1;
    assert_eq!(page(&a), page(&b));
    assert_ne!(page(&a), page(&c));
    assert_eq!(a.markets(), b.markets());
}

#[test]
fn faults_drop_freeze_stall_and_oversized() {
    let _w = Watchdog::new(
        "faults_drop_freeze_stall_and_oversized",
        Duration::from_secs(60),
    );
    let sim = pipeline::sim(30, 2000.0);
    let tokens = open_tokens(&sim, 10);
    // Drop: the stream ends without a close frame.
    let mut c = ws::connect(&sim.ws_url());
    ws::subscribe(&mut c, &tokens);
    assert!(
        ws::read_until(&mut c, Duration::from_secs(5), |t| t
            .contains("last_trade_price"))
        .is_some()
    );
    assert_eq!(sim.drop_sockets(), 1);
    let ended = loop {
        match ws::read(&mut c, Duration::from_secs(5)) {
            Read::Error(e) => break e,
            Read::Closed(code) => panic!("a close frame ({code:?}) came with a drop"),
            Read::Timeout => panic!("the dropped socket stayed open"),
            _ => {}
        }
    };
    assert!(
        ended.contains("closing handshake") || ended.contains("reset"),
        "{ended}"
    );

    // Freeze: PONG answered, no data.
    let mut c = ws::connect(&sim.ws_url());
    ws::subscribe(&mut c, &tokens);
    assert!(
        ws::read_until(&mut c, Duration::from_secs(5), |t| t
            .contains("last_trade_price"))
        .is_some()
    );
    sim.freeze(true);
    // Drain what was already on the wire, then expect silence but PONGs.
    let drain_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < drain_until {
        ws::read(&mut c, Duration::from_millis(50));
    }
    ws::send(&mut c, "PING");
    assert!(ws::read_until(&mut c, Duration::from_secs(5), |t| t == "PONG").is_some());
    assert!(
        ws::read_until(&mut c, Duration::from_millis(1500), |t| t != "PONG").is_none(),
        "no data while frozen"
    );
    sim.freeze(false);
    assert!(
        ws::read_until(&mut c, Duration::from_secs(5), |t| t
            .contains("last_trade_price"))
        .is_some()
    );

    // Stall one asset: its sibling keeps trading, it does not. Trades are stamped when they
    // are generated, so anything stamped after the stall must be for other assets.
    let stalled = &tokens[0];
    let stalled_at = polytape_sim::now_ms();
    assert!(sim.stall_asset(stalled, true));
    let mut late_stalled = 0;
    let mut late_other = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Read::Text(t) = ws::read(&mut c, Duration::from_millis(200)) {
            for e in events(&t)
                .iter()
                .filter(|e| e["event_type"] == "last_trade_price")
            {
                let ts: i64 = e["timestamp"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .expect("ts");
                if ts > stalled_at + 50 {
                    if e["asset_id"] == stalled.as_str() {
                        late_stalled += 1
                    } else {
                        late_other += 1
                    }
                }
            }
        }
    }
    assert!(
        late_other > 0 && late_stalled == 0,
        "{late_other} {late_stalled}"
    );

    // Oversized: one frame of the asked size, then nothing more on that socket.
    assert_eq!(sim.send_oversized(3 << 20), 1);
    let big = ws::read_until(&mut c, Duration::from_secs(5), |t| t.len() >= 3 << 20);
    assert!(big.is_some());
    assert!(
        ws::read_until(&mut c, Duration::from_millis(800), |t| t
            .contains("last_trade_price"))
        .is_none()
    );
}

#[test]
fn past_the_asset_limit_a_socket_is_silent() {
    let _w = Watchdog::new(
        "past_the_asset_limit_a_socket_is_silent",
        Duration::from_secs(30),
    );
    let sim = pipeline::sim(300, 2000.0);
    sim.set_max_assets_per_socket(100);
    let tokens = open_tokens(&sim, 100);
    let mut small = ws::connect(&sim.ws_url());
    ws::subscribe(&mut small, &tokens[..100]);
    let mut big = ws::connect(&sim.ws_url());
    ws::subscribe(&mut big, &tokens[..101]);
    let _dump = ws::read_until(&mut big, Duration::from_secs(2), |t| t.starts_with('['));
    assert!(
        ws::read_until(&mut small, Duration::from_secs(5), |t| t
            .contains("last_trade_price"))
        .is_some()
    );
    assert!(
        ws::read_until(&mut big, Duration::from_millis(1500), |_| true).is_none(),
        "silent, no error"
    );
    ws::send(&mut big, "PING");
    assert!(
        ws::read_until(&mut big, Duration::from_secs(2), |t| t == "PONG").is_some(),
        "yet alive"
    );
}

#[test]
fn upgrades_too_fast_get_429_and_control_endpoints_work() {
    let _w = Watchdog::new("upgrades_too_fast_get_429", Duration::from_secs(30));
    let sim = pipeline::sim(10, 0.0);
    let base = sim.gamma_url();
    assert_eq!(
        get(&format!("{base}/sim/faults/upgrade-limit?per_sec=1")).0,
        200
    );
    // Four opens in a row: at most one per second gets through, the rest get 429 with a
    // Retry-After (the window could roll over once mid-burst on a slow machine, never twice).
    let statuses: Vec<Option<u16>> = (0..4)
        .map(|_| match tungstenite::connect(sim.ws_url()) {
            Ok(_) => None,
            Err(tungstenite::Error::Http(resp)) => Some(resp.status().as_u16()),
            Err(other) => panic!("unexpected: {other}"),
        })
        .collect();
    let rejected = statuses.iter().filter(|s| **s == Some(429)).count();
    assert!(rejected >= 2, "{statuses:?}");
    let (_, stats, _) = get(&format!("{base}/sim/stats"));
    let stats: Value = serde_json::from_str(&stats).expect("stats");
    assert_eq!(stats["upgrades_rejected"].as_u64(), Some(rejected as u64));
    assert_eq!(get(&format!("{base}/sim/faults/nonsense")).0, 404);
    assert_eq!(get(&format!("{base}/sim/delivered")).0, 200);
}

/// The exchange trades whether or not anyone listens, and the Data API serves what it
/// executed: newest first, block times in seconds at or a few seconds after the match, hashes
/// always present, prices and sizes as exact JSON numbers, the offset cap as 400, the rate
/// limit as 429 with Retry-After.
#[test]
fn the_data_api_serves_every_executed_trade() {
    let _w = Watchdog::new("the_data_api_serves", Duration::from_secs(60));
    let sim = pipeline::sim_with(SimConfig {
        // This part polls; the rate limit gets a simulator of its own below.
        data_api_rate_limit: 0,
        ..pipeline::sim_config(20, 500.0)
    });
    // Nobody subscribes: trades are executed all the same, and none is delivered.
    assert!(polytape_testkit::wait_until(
        Duration::from_secs(10),
        || { sim.executed().len() >= 500 }
    ));
    assert_eq!(sim.delivered_count(), 0);
    let executed = sim.executed();
    let market = executed[0].market.clone();
    let base = format!("http://{}", sim.addr());
    // Settled trades show up once their block is past (a few seconds after the match).
    let page = || {
        let (status, body, _) = get(&format!("{base}/trades?market={market}&limit=10000"));
        assert_eq!(status, 200);
        serde_json::from_str::<Vec<Value>>(&body).expect("a JSON array")
    };
    assert!(polytape_testkit::wait_until(
        Duration::from_secs(10),
        || !page().is_empty()
    ));
    let rows = page();
    let executed = sim.executed();
    let mine: Vec<_> = executed.iter().filter(|t| t.market == market).collect();
    assert!(!rows.is_empty() && rows.len() <= mine.len());
    let mut last = i64::MAX;
    let mut matched = 0;
    for row in &rows {
        let ts = row["timestamp"].as_i64().expect("seconds");
        assert!(ts <= last, "newest first");
        last = ts;
        assert!(row["price"].is_number() && row["size"].is_number());
        let hash = row["transactionHash"].as_str().expect("always a hash");
        assert!(hash.starts_with("0x") && hash.len() == 66);
        // The same trade the exchange executed (by the hash the feed carries, when it
        // carries one): the block is at or up to 5 s after the match.
        if let Some(t) = mine
            .iter()
            .find(|t| t.transaction_hash.as_deref() == Some(hash))
        {
            matched += 1;
            let match_s = t.timestamp_ms / 1000;
            assert!(
                ts >= match_s && ts <= match_s + 5,
                "{ts} vs {}",
                t.timestamp_ms
            );
            assert_eq!(row["asset"].as_str(), Some(t.asset_id.as_str()));
            assert_eq!(row["side"].as_str(), Some(t.side.as_str()));
        }
    }
    assert!(
        matched * 10 >= rows.len() * 8,
        "{matched} of {} rows matched",
        rows.len()
    );
    let (status, _, _) = get(&format!("{base}/trades?market={market}&offset=10001"));
    assert_eq!(status, 400, "past the offset cap");
    let (status, _, _) = get(&format!("{base}/trades?limit=10001"));
    assert_eq!(status, 400);
    // The rate limit: 30 requests per 10 s here.
    let limited = pipeline::sim_with(SimConfig {
        data_api_rate_limit: 30,
        ..pipeline::sim_config(5, 0.0)
    });
    let base = format!("http://{}", limited.addr());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut throttled = None;
    for _ in 0..40 {
        let resp = agent
            .get(&format!("{base}/trades?limit=1"))
            .call()
            .expect("get");
        if resp.status().as_u16() == 429 {
            throttled = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            break;
        }
    }
    assert!(
        throttled.is_some_and(|r| r.parse::<u64>().is_ok()),
        "429 with Retry-After"
    );
}

/// A frame with more asset ids than the limit closes the socket, as the live service does.
#[test]
fn a_frame_with_too_many_ids_closes_the_socket() {
    let _w = Watchdog::new("a_frame_with_too_many_ids", Duration::from_secs(30));
    let sim = pipeline::sim_with(SimConfig {
        listen: "127.0.0.1:0".into(),
        markets: 100,
        max_ids_per_frame: 100,
        noise_per_trade: 0,
        ..SimConfig::default()
    });
    let tokens = open_tokens(&sim, 60);
    assert!(tokens.len() > 100);
    let mut c = ws::connect(&sim.ws_url());
    ws::subscribe(&mut c, &tokens[..101]);
    let closed = polytape_testkit::wait_until(Duration::from_secs(5), || {
        matches!(
            ws::read(&mut c, Duration::from_millis(200)),
            Read::Closed(_) | Read::Error(_)
        )
    });
    assert!(closed, "closed for 101 ids in one frame");
    assert_eq!(sim.stats().frames_refused, 1);
    // 100 is fine.
    let mut c = ws::connect(&sim.ws_url());
    ws::subscribe(&mut c, &tokens[..100]);
    assert!(polytape_testkit::wait_until(Duration::from_secs(5), || {
        sim.stats().subscribed_assets == 100
    }));
    assert_eq!(sim.stats().frames_refused, 1);
}

/// `chain_fills` in `/sim/stats` (counted in full only when the head moves, and only over
/// the trades executed since otherwise) equals a count of its own over every executed
/// trade, asked while the exchange trades and after, when the newest trades have not
/// settled yet.
#[test]
fn the_settled_count_equals_a_full_count() {
    let _w = Watchdog::new("the_settled_count", Duration::from_secs(60));
    let sim = pipeline::sim_with(SimConfig {
        max_trades: Some(600),
        ..pipeline::sim_config(10, 200.0)
    });
    let full = |head: u64| -> u64 {
        sim.executed_records()
            .iter()
            .filter(|t| {
                let t_s = polytape_sim::data_api::block_time_s(t, Duration::ZERO);
                sim.chain_block_at(t_s) <= head
            })
            .count() as u64
    };
    // While it trades: each answer counts no more than was executed by then.
    let mut asked = 0;
    while sim.stats().trades_generated < 600 {
        let s = sim.stats();
        assert!(s.chain_fills <= full(s.chain_head));
        asked += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(asked > 5, "asked while it traded");
    // Done: nothing moves but the head, and the count is exact (the last trades unsettled).
    let s = sim.stats();
    let all = sim.executed_records().len() as u64;
    assert_eq!(s.chain_fills, full(s.chain_head));
    assert!(s.chain_fills < all, "the newest trades settle later");
    assert!(polytape_testkit::wait_until(
        Duration::from_secs(10),
        || {
            let s = sim.stats();
            s.chain_fills == all && s.chain_fills == full(s.chain_head)
        }
    ));
}
