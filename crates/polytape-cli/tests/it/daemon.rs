//! The `polytape` binary as a user runs it: a subprocess against the simulator and a real
//! PostgreSQL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use polytape_sim::Sim;
use polytape_sim::universe::SimResolution;

use polytape_testkit::pipeline::{self, assert_stored_equals_delivered};
use polytape_testkit::{TestDb, Watchdog, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_polytape");

/// The real binary, pointed at `db` and `sim` (health off, a spool folder of its own).
pub(crate) fn polytape(db: &TestDb, sim: &Sim) -> Command {
    let mut c = Command::new(BIN);
    c.env("DATABASE_URL", db.url())
        .env("POLYTAPE_WS_URL", sim.ws_url())
        .env("POLYTAPE_GAMMA_URL", sim.gamma_url())
        .env("POLYTAPE_HEALTH_ADDR", "")
        .env("POLYTAPE_SPOOL_DIR", db.spool_dir())
        .env("POLYTAPE_DATA_API_URL", sim.gamma_url())
        .env("POLYTAPE_CLOB_URL", sim.gamma_url())
        // The simulator's blocks trail their matches by seconds, not the default minute.
        .env("POLYTAPE_SETTLEMENT_LAG_SECS", "10")
        .env("RUST_LOG", "info");
    c
}

pub(crate) fn output(mut c: Command) -> Output {
    c.output().expect("polytape runs")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// A `polytape run` (or any long-running command) as a subprocess: its stderr forwarded to
/// the test's output and kept for the test to read; killed if the test fails while it runs.
pub(crate) struct Daemon {
    child: Child,
    /// Every line the daemon wrote to stderr so far.
    pub(crate) log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `c` (a [`polytape`] command with its arguments).
    pub(crate) fn spawn(mut c: Command) -> Daemon {
        let mut child = c.stderr(Stdio::piped()).spawn().expect("spawn polytape");
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(err) = child.stderr.take() {
            let kept = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    eprintln!("[polytape] {line}");
                    kept.lock().push(line);
                }
            });
        }
        Daemon { child, log }
    }

    /// Sends `sig` (`TERM`, `INT`, `KILL`) with kill(1).
    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the daemon to exit, up to `limit`; returns its status (None: still
    /// running) and how long it waited.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> (Option<ExitStatus>, Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (Some(status), started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (None, started.elapsed())
    }

    /// A graceful stop: SIGTERM, then exit 0 within `limit`.
    pub(crate) fn stop(self, limit: Duration) {
        self.stop_with("TERM", limit);
    }

    /// A graceful stop by `sig` (`TERM` or `INT`): exit 0 within `limit`.
    pub(crate) fn stop_with(mut self, sig: &str, limit: Duration) {
        self.signal(sig);
        let (exit, took) = self.wait_exit(limit);
        eprintln!("SIG{sig}: exited {exit:?} after {} ms", took.as_millis());
        assert!(
            exit.is_some_and(|s| s.success()),
            "exit 0 within {limit:?} of SIG{sig}: {exit:?}"
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HTTP status a daemon's health server at `addr` answers for `path` (None: no answer).
fn status_at(addr: &str, path: &str) -> Option<u16> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .map(|r| r.status().as_u16())
        .ok()
}

#[test]
fn migrate_twice() {
    let _w = Watchdog::new("migrate_twice", Duration::from_secs(60));
    let db = TestDb::empty();
    let sim = pipeline::sim(1, 0.0);
    let first = output({
        let mut c = polytape(&db, &sim);
        c.arg("migrate");
        c
    });
    assert!(first.status.success());
    assert_eq!(stdout(&first).trim(), "migrations applied: 17");
    let mut c = polytape(&db, &sim);
    c.arg("migrate");
    let second = output(c);
    assert!(second.status.success());
    assert_eq!(stdout(&second).trim(), "migrations applied: 0");
}

#[test]
fn sync_markets_stores_the_right_token_ids() {
    let _w = Watchdog::new(
        "sync_markets_stores_the_right_token_ids",
        Duration::from_secs(90),
    );
    let db = TestDb::empty();
    let sim = pipeline::sim(2600, 0.0);
    let mut c = polytape(&db, &sim);
    c.arg("sync-markets");
    let out = output(c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let markets = sim.markets();
    let expected: Vec<_> = markets
        .iter()
        .filter(|m| !m.closed && m.version != "v3")
        .collect();
    assert!(expected.len() >= 2300);
    assert!(
        stdout(&out).contains(&format!("synced {} open markets", expected.len())),
        "{}",
        stdout(&out)
    );
    let mut client = db.client();
    let rows = client
        .query(
            "SELECT condition_id, token_ids, closed, version FROM markets",
            &[],
        )
        .expect("select");
    assert_eq!(
        rows.len(),
        expected.len(),
        "no closed market, no unknown version"
    );
    let by_id: std::collections::HashMap<String, Vec<String>> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, Vec<String>>(1)))
        .collect();
    let mut v2 = 0;
    for m in expected {
        assert_eq!(
            by_id.get(&m.condition_id),
            Some(&m.token_ids.to_vec()),
            "{}",
            m.version
        );
        v2 += usize::from(m.version == "v2");
    }
    assert!(v2 > 100, "v2 markets were covered");
    assert!(rows.iter().all(|r| !r.get::<_, bool>(2)));
}

/// `run` under load, then a signal: exit 0 within 5 s, stored == delivered.
fn run_then_signal(sig: &str) {
    let db = TestDb::new();
    let sim = pipeline::sim(800, 1500.0);
    let addr = free_addr();
    let mut c = polytape(&db, &sim);
    c.args(["run", "--max-tokens-per-conn", "300"])
        .env("POLYTAPE_HEALTH_ADDR", &addr);
    let child = Daemon::spawn(c);
    let health_url = format!("http://{addr}/health");
    let fetch = || -> Option<serde_json::Value> {
        let mut resp = ureq::get(&health_url).call().ok()?;
        serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
    };
    assert!(
        wait_until(Duration::from_secs(30), || fetch()
            .is_some_and(|h| h["trades_inserted"].as_u64() > Some(2000))),
        "trades flow"
    );
    let h = fetch().expect("health");
    for key in [
        "trades_received",
        "trades_inserted",
        "batches_inserted",
        "connections_active",
        "reconnections",
        "queue_depth",
        "last_trade_ts",
        "last_insert_ts",
        "last_reconnect_ts",
        "started_at",
        "messages_received",
        "parse_errors",
        "duplicates_skipped",
        "db_errors",
        "connections",
    ] {
        assert!(h.get(key).is_some(), "/health has {key}");
    }
    assert!(h["connections"][0]["tokens"].as_u64() > Some(0));
    assert_eq!(
        ureq::get(&format!("http://{addr}/livez"))
            .call()
            .map(|r| r.status().as_u16())
            .ok(),
        Some(200)
    );
    assert_eq!(
        ureq::get(&format!("http://{addr}/readyz"))
            .call()
            .map(|r| r.status().as_u16())
            .ok(),
        Some(200)
    );
    let metrics = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("body");
    assert!(metrics.contains("# TYPE polytape_trades_inserted_total counter"));
    assert!(metrics.contains("# HELP polytape_trades_inserted_total"));
    let status = Command::new(BIN)
        .arg("status")
        .env("POLYTAPE_HEALTH_ADDR", &addr)
        .output()
        .expect("status");
    assert!(status.status.success());
    let shown = stdout(&status);
    assert!(shown.contains("trades_inserted"));
    // Every side's headline figures, the book side's included (it was trades only).
    for section in [
        "sockets:",
        "durability:",
        "completeness:",
        "books and prices:",
    ] {
        assert!(shown.contains(section), "{section} in {shown}");
    }
    let books_held = shown
        .lines()
        .find(|l| l.trim_start().starts_with("books_held"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        books_held.is_some_and(|n| n > 0),
        "books held shown: {shown}"
    );

    child.stop_with(sig, Duration::from_secs(5));
    let n = assert_stored_equals_delivered(&db, &sim);
    assert!(n > 2000);
}

#[test]
fn run_then_sigterm_stores_everything_and_exits_zero() {
    let _w = Watchdog::new("run_then_sigterm", Duration::from_secs(90));
    run_then_signal("TERM");
}

#[test]
fn run_then_sigint_stores_everything_and_exits_zero() {
    let _w = Watchdog::new("run_then_sigint", Duration::from_secs(90));
    run_then_signal("INT");
}

#[test]
fn a_second_signal_exits_at_once() {
    let _w = Watchdog::new("a_second_signal_exits_at_once", Duration::from_secs(90));
    let db = TestDb::new();
    let sim = pipeline::sim(50, 500.0);
    let mut c = polytape(&db, &sim);
    c.arg("run");
    let mut child = Daemon::spawn(c);
    assert!(wait_until(Duration::from_secs(30), || db.count("trades") > 100));
    // With the database gone, a graceful stop cannot finish: the writer keeps its batch.
    db.set_reachable(false);
    child.signal("TERM");
    let (first, _) = child.wait_exit(Duration::from_millis(1500));
    assert!(
        first.is_none(),
        "still flushing after the first signal: {first:?}"
    );
    child.signal("TERM");
    let (second, took) = child.wait_exit(Duration::from_secs(2));
    eprintln!(
        "second signal: exited {second:?} after {} ms",
        took.as_millis()
    );
    assert_eq!(second.and_then(|s| s.code()), Some(2), "non-zero at once");
    db.set_reachable(true);
}

#[test]
fn markets_added_and_closed_during_a_run_are_followed_without_a_restart() {
    let _w = Watchdog::new(
        "markets_added_and_closed_during_a_run",
        Duration::from_secs(90),
    );
    let db = TestDb::new();
    let sim = pipeline::sim(100, 300.0);
    let mut c = polytape(&db, &sim);
    c.args([
        "run",
        "--sync-interval-secs",
        "1",
        "--resolve-interval-secs",
        "1",
    ]);
    let child = Daemon::spawn(c);
    let initial = pipeline::open_tokens(&sim);
    assert!(
        pipeline::wait_stats(&sim, |s| s.subscribed_assets == initial),
        "{:?}",
        sim.stats()
    );
    let added = sim.add_market();
    assert!(
        wait_until(Duration::from_secs(15), || sim.stats().subscribed_assets
            == initial + 2),
        "the new market is subscribed: {:?}",
        sim.stats()
    );
    assert_eq!(sim.stats().sockets_opened, 1, "on the socket already open");
    assert!(
        wait_until(Duration::from_secs(15), || {
            db.client()
                .query_one(
                    "SELECT count(*) FROM trades WHERE market = $1",
                    &[&added.condition_id],
                )
                .map(|r| r.get::<_, i64>(0) > 0)
                .unwrap_or(false)
        }),
        "its trades are stored"
    );
    let victim = sim
        .markets()
        .into_iter()
        .find(|m| m.is_open() && m.version == "v1")
        .expect("an open market");
    assert!(sim.close_market(&victim.condition_id, SimResolution::Winner(1)));
    assert!(
        wait_until(Duration::from_secs(15), || sim.stats().subscribed_assets
            == initial),
        "the closed market is unsubscribed: {:?}",
        sim.stats()
    );
    // The tracker records its winner.
    assert!(
        wait_until(Duration::from_secs(15), || {
            db.client()
                .query_opt(
                    "SELECT winning_token_id FROM resolutions WHERE condition_id = $1",
                    &[&victim.condition_id],
                )
                .ok()
                .flatten()
                .map(|r| r.get::<_, Option<String>>(0))
                == Some(Some(victim.token_ids[1].clone()))
        }),
        "winner recorded"
    );
    child.stop(Duration::from_secs(5));
    assert_stored_equals_delivered(&db, &sim);
}

#[test]
fn sync_waits_out_throttling_and_server_errors() {
    let _w = Watchdog::new("sync_waits_out_throttling", Duration::from_secs(60));
    let db = TestDb::new();
    let sim = pipeline::sim(250, 0.0);
    sim.fail_gamma(2, 429);
    let gamma = polytape::gamma::GammaClient::new(&pipeline::config(&db, &sim));
    let started = Instant::now();
    let report = polytape::sync::sync_markets(&mut db.client(), &gamma).expect("sync succeeds");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 1 honoured twice"
    );
    let open = sim
        .markets()
        .iter()
        .filter(|m| !m.closed && m.version != "v3")
        .count();
    assert_eq!(report.open_markets, open);
    sim.fail_gamma(2, 503);
    let report = polytape::sync::sync_markets(&mut db.client(), &gamma).expect("sync succeeds");
    assert_eq!(report.open_markets, open);
    // A client error is not retried: it fails at once, clearly.
    sim.fail_gamma(1, 404);
    let err = polytape::sync::sync_markets(&mut db.client(), &gamma).expect_err("404 fails");
    assert!(err.to_string().contains("404"), "{err}");
}

#[test]
fn readyz_follows_the_database_and_the_password_is_never_logged() {
    let _w = Watchdog::new("readyz_follows_the_database", Duration::from_secs(90));
    let db = TestDb::new();
    let sim = pipeline::sim(50, 200.0);
    let addr = free_addr();
    let secret = "s3cr3t-never-logged";
    let mut c = polytape(&db, &sim);
    // Trust authentication ignores the password; the daemon must still never print it.
    c.env("DATABASE_URL", format!("{} password={secret}", db.url()))
        .env("POLYTAPE_HEALTH_ADDR", &addr)
        .env("RUST_LOG", "debug")
        .args(["run", "--readiness-grace-secs", "1"]);
    let child = Daemon::spawn(c);
    let log = Arc::clone(&child.log);
    let status = |path: &str| status_at(&addr, path);
    assert!(wait_until(Duration::from_secs(30), || status("/readyz") == Some(200)));
    db.set_reachable(false);
    assert!(
        wait_until(Duration::from_secs(20), || status("/readyz") == Some(503)),
        "not ready once the database is gone past the grace"
    );
    assert_eq!(status("/livez"), Some(200), "alive all the same");
    db.set_reachable(true);
    assert!(wait_until(Duration::from_secs(30), || status("/readyz") == Some(200)));
    child.stop(Duration::from_secs(5));
    let log = log.lock();
    assert!(
        log.iter().any(|l| l.contains("***")),
        "the URL is logged, redacted"
    );
    assert!(
        !log.iter().any(|l| l.contains(secret)),
        "the password never appears"
    );
}

#[test]
fn a_shard_holds_its_markets_across_resyncs() {
    let _w = Watchdog::new(
        "a_shard_holds_its_markets_across_resyncs",
        Duration::from_secs(90),
    );
    let db = TestDb::new();
    let sim = pipeline::sim(200, 100.0);
    let mut c = polytape(&db, &sim);
    c.args(["run", "--shard", "1/2", "--sync-interval-secs", "1"]);
    let child = Daemon::spawn(c);
    let log = Arc::clone(&child.log);
    // Only successful re-syncs count: "market re-sync failed" must not pass for one.
    let resyncs = || {
        log.lock()
            .iter()
            .filter(|l| l.contains("market re-sync: ") && l.contains(" open markets"))
            .count()
    };
    assert!(wait_until(Duration::from_secs(30), || resyncs() >= 1));
    let shard = "1/2".parse().expect("shard");
    let expected: usize = polytape::sync::open_token_groups(&mut db.client(), Some(shard))
        .expect("groups")
        .iter()
        .map(Vec::len)
        .sum();
    let all = pipeline::open_tokens(&sim);
    assert!(expected > 0 && expected < all, "{expected} of {all}");
    let before = resyncs();
    assert!(wait_until(Duration::from_secs(30), || resyncs() >= before + 2));
    assert_eq!(
        sim.stats().subscribed_assets,
        expected,
        "still only its shard"
    );
    child.stop(Duration::from_secs(5));
}

#[test]
fn polytape_resolve_prints_what_it_found() {
    let _w = Watchdog::new("polytape_resolve_prints", Duration::from_secs(60));
    let db = TestDb::new();
    let sim = pipeline::sim(300, 0.0);
    pipeline::load_markets(&db, &sim);
    let out = std::process::Command::new(BIN)
        .arg("resolve")
        .env("DATABASE_URL", db.url())
        .env("POLYTAPE_GAMMA_URL", sim.gamma_url())
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("asked about ") && text.contains("winners"),
        "{text}"
    );
    assert!(db.count("resolutions") > 0);
}

/// Bytes in the spool segments under `dir`.
fn spool_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// SIGKILL mid-stream, with trades in the spool, then a restart: the spool is replayed,
/// the crash window is a gap for every held token, and every delivered trade that is not
/// stored lies inside a recorded gap; the count of those is the crash's loss (the channel
/// and the batch in flight, at most), measured here.
#[test]
fn a_sigkill_is_a_gap_and_the_spool_survives_it() {
    let _w = Watchdog::new("a_sigkill_is_a_gap", Duration::from_secs(150));
    let db = TestDb::new();
    let sim = pipeline::sim(200, 300.0);
    let mut c = polytape(&db, &sim);
    c.args(["run", "--channel-capacity", "1000"]);
    let mut first = Daemon::spawn(c);
    assert!(wait_until(Duration::from_secs(30), || db.count("trades")
        > 300
        && db.count("sessions") == 1));
    // The database away for a moment: trades go to the spool.
    db.set_reachable(false);
    assert!(
        wait_until(Duration::from_secs(30), || spool_bytes(db.spool_dir()) > 0),
        "trades spooled while the database is away"
    );
    std::thread::sleep(Duration::from_secs(1));
    first.signal("KILL");
    let (exit, _) = first.wait_exit(Duration::from_secs(5));
    assert!(exit.is_some_and(|s| !s.success()), "killed: {exit:?}");
    let left = spool_bytes(db.spool_dir());
    assert!(left > 0, "the spool outlives the process");
    db.set_reachable(true);

    let mut c = polytape(&db, &sim);
    c.args(["run", "--channel-capacity", "1000"]);
    let mut second = Daemon::spawn(c);
    let log = Arc::clone(&second.log);
    let crash_gaps = || {
        db.client()
            .query_one(
                "SELECT count(*) FROM gaps WHERE connection IS NULL AND reason LIKE 'crash:%'",
                &[],
            )
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(60), || crash_gaps() == 1
            && spool_bytes(db.spool_dir()) == 0),
        "the crash is a gap and the spool is replayed: {:?}",
        log.lock().iter().rev().take(5).collect::<Vec<_>>()
    );
    let before = db.count("trades");
    assert!(wait_until(Duration::from_secs(30), || db.count("trades")
        > before + 200));
    second.signal("TERM");
    let (exit, _) = second.wait_exit(Duration::from_secs(10));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");

    let mut client = db.client();
    let sessions: Vec<(bool, bool)> = client
        .query(
            "SELECT crashed, stopped_at IS NOT NULL FROM sessions ORDER BY id",
            &[],
        )
        .expect("sessions")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(sessions, vec![(true, true), (false, true)]);
    let covered: i32 = client
        .query_one(
            "SELECT cardinality(asset_ids) FROM gaps WHERE reason LIKE 'crash:%'",
            &[],
        )
        .expect("crash gap")
        .get(0);
    assert_eq!(
        covered as usize,
        pipeline::open_tokens(&sim),
        "every held token"
    );
    let missing = pipeline::assert_missing_within_gaps(db.url(), &sim, Duration::from_secs(2));
    eprintln!(
        "SIGKILL: spool left {left} bytes (replayed); delivered {}, stored {}, lost to the \
         crash {missing} (all inside the crash gap)",
        sim.delivered_count(),
        db.count("trades")
    );
    assert!(
        missing <= 1000 + 10_000,
        "within the channel and a batch: {missing}"
    );
}

/// INSERT revoked from the daemon's role: `/readyz` answers 503 at once (no grace: nothing
/// will be written until an operator acts), `/livez` stays 200, nothing is dropped; after
/// GRANT, ready again and every delivered trade stored.
#[test]
fn a_revoked_grant_turns_readyz_503_and_loses_nothing() {
    let _w = Watchdog::new("a_revoked_grant_turns_readyz_503", Duration::from_secs(120));
    let db = TestDb::new();
    let role = db.role();
    let sim = pipeline::sim(50, 200.0);
    let addr = free_addr();
    let mut c = polytape(&db, &sim);
    c.env("DATABASE_URL", role.url())
        .env("POLYTAPE_HEALTH_ADDR", &addr)
        .args(["run", "--readiness-grace-secs", "600"]);
    let child = Daemon::spawn(c);
    let status = |path: &str| status_at(&addr, path);
    assert!(wait_until(Duration::from_secs(30), || status("/readyz")
        == Some(200)
        && db.count("trades") > 50));
    db.client()
        .batch_execute(&format!("REVOKE INSERT ON trade_tape FROM {}", role.name()))
        .expect("revoke");
    assert!(
        wait_until(Duration::from_secs(20), || status("/readyz") == Some(503)),
        "not ready while the database refuses every write"
    );
    assert_eq!(status("/livez"), Some(200));
    db.client()
        .batch_execute(&format!("GRANT INSERT ON trade_tape TO {}", role.name()))
        .expect("grant");
    assert!(wait_until(Duration::from_secs(40), || status("/readyz") == Some(200)));
    child.stop(Duration::from_secs(10));
    assert_stored_equals_delivered(&db, &sim);
}

/// `polytape backfill --market` loads a market's settled trades from the Data API (no
/// listener running at all), a second run adds nothing, and `polytape audit` shows them as
/// filled in.
#[test]
fn backfill_loads_history_once_and_audit_shows_it() {
    let _w = Watchdog::new("backfill_loads_history_once", Duration::from_secs(90));
    let db = TestDb::empty();
    let sim = pipeline::sim(30, 300.0);
    let mut c = polytape(&db, &sim);
    c.arg("sync-markets");
    assert!(output(c).status.success());
    let market = sim
        .markets()
        .into_iter()
        .find(|m| m.is_open() && m.version != "v3")
        .expect("an open market");
    let started = polytape_sim::now_ms();
    // Let the exchange trade for a while, with nobody listening.
    assert!(wait_until(Duration::from_secs(30), || {
        sim.executed()
            .iter()
            .filter(|t| t.market == market.condition_id && t.timestamp_ms > started)
            .count()
            >= 30
            // The window below (to `started` + 5 s) settled: blocks trail by up to 12 s.
            && polytape_sim::now_ms() > started + 18_000
    }));
    // A window that has settled: the exchange keeps trading after it.
    let until = chrono::DateTime::from_timestamp_millis(started + 5_000)
        .expect("a time")
        .to_rfc3339();
    let run = || {
        let mut c = polytape(&db, &sim);
        c.args([
            "backfill",
            "--market",
            &market.slug,
            "--since",
            "5m",
            "--until",
            &until,
        ]);
        let out = output(c);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out)
    };
    let first = run();
    let stored = db.count("trades");
    assert!(stored >= 30, "{first}");
    let second = run();
    assert!(
        second.contains(" 0 added"),
        "a second run adds nothing: {second}"
    );
    assert_eq!(db.count("trades"), stored);
    // Every stored trade is one the exchange executed on that market, from the Data API.
    let executed: std::collections::HashSet<(String, String)> = sim
        .executed()
        .into_iter()
        .filter(|t| t.market == market.condition_id)
        .map(|t| {
            (
                t.asset_id,
                t.size
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_owned(),
            )
        })
        .collect();
    let rows = db
        .client()
        .query("SELECT asset_id, size::text, source FROM trades", &[])
        .expect("trades");
    for r in &rows {
        let size: String = r.get(1);
        let key = (
            r.get::<_, String>(0),
            size.trim_end_matches('0').trim_end_matches('.').to_owned(),
        );
        assert!(executed.contains(&key), "never executed: {key:?}");
        assert_eq!(r.get::<_, String>(2), "data_api");
    }
    let mut c = polytape(&db, &sim);
    c.args(["audit", "--market", &market.slug, "--since", "1h"]);
    let out = output(c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.contains(&format!("{stored} filled in")) && l.ends_with("filled")),
        "{text}"
    );
}

/// A SIGKILL and a restart with the backfill on: the crash window is a gap, the restarted
/// daemon fills it from the Data API once settled, and the tape equals what the exchange
/// executed on the held markets across the crash.
#[test]
fn a_crash_window_is_filled_and_the_tape_equals_what_was_executed() {
    let _w = Watchdog::new("a_crash_window_is_filled", Duration::from_secs(120));
    let db = TestDb::new();
    let sim = pipeline::sim(100, 300.0);
    let start = |db: &TestDb| {
        let mut c = polytape(db, &sim);
        c.args(["run", "--backfill-settle-secs", "3"]);
        Daemon::spawn(c)
    };
    let first = start(&db);
    assert!(wait_until(Duration::from_secs(30), || db.count("trades")
        > 300
        && db.count("sessions") == 1));
    let from_ms = polytape_sim::now_ms();
    assert!(wait_until(Duration::from_secs(10), || db.count("trades") > 600));
    first.signal("KILL");
    drop(first);
    let crashed_at = polytape_sim::now_ms();
    // The exchange trades on while nothing listens.
    assert!(wait_until(
        Duration::from_secs(10),
        || polytape_sim::now_ms() > crashed_at + 2000
    ));
    let second = start(&db);
    let open_gaps = || {
        db.client()
            .query_one(
                "SELECT count(*) FILTER (WHERE filled_at IS NULL),
                        count(*) FILTER (WHERE reason LIKE 'crash:%' AND filled_at IS NOT NULL)
                 FROM gaps",
                &[],
            )
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
            .unwrap_or((1, 0))
    };
    assert!(
        wait_until(Duration::from_secs(60), || open_gaps() == (0, 1)),
        "the crash gap is filled: {:?}",
        open_gaps()
    );
    let to_ms = polytape_sim::now_ms() - 1000;
    second.stop(Duration::from_secs(10));
    let report = pipeline::assert_stored_equals_executed(db.url(), &sim, from_ms, to_ms);
    assert!(report.filled > 0, "{report:?}");
    eprintln!(
        "crash: executed {}, from the feed {}, filled {}, lost 0",
        report.executed, report.from_feed, report.filled
    );
}

/// `polytape resolve` on its own (from cron, say), no daemon, no sync since: markets that
/// closed in the listing after the last sync get every strict verdict on the first round.
#[test]
fn resolve_alone_finds_markets_closed_since_the_last_sync() {
    let _w = Watchdog::new("resolve_alone_finds", Duration::from_secs(60));
    let db = TestDb::empty();
    let sim = pipeline::sim(100, 0.0);
    let mut c = polytape(&db, &sim);
    c.arg("sync-markets");
    assert!(output(c).status.success());
    let before = db.count("resolutions");
    let open: Vec<_> = sim
        .markets()
        .into_iter()
        .filter(|m| m.is_open() && m.version != "v3")
        .take(12)
        .collect();
    for (i, m) in open.iter().enumerate() {
        assert!(sim.close_market(&m.condition_id, SimResolution::Winner(i % 2)));
    }
    let mut c = polytape(&db, &sim);
    c.arg("resolve");
    let out = output(c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut client = db.client();
    for (i, m) in open.iter().enumerate() {
        let row = client
            .query_opt(
                "SELECT winning_token_id FROM resolutions WHERE condition_id = $1",
                &[&m.condition_id],
            )
            .expect("select");
        let token: Option<String> = row.and_then(|r| r.get(0));
        assert_eq!(
            token.as_deref(),
            Some(m.token_ids[i % 2].as_str()),
            "{}",
            stdout(&out)
        );
    }
    assert!(db.count("resolutions") >= before + 12);
}

/// With no PostgreSQL where DATABASE_URL points, the command says where it tried, the
/// cause, and what to do.
#[test]
fn no_postgres_there_is_explained() {
    let _w = Watchdog::new("no_postgres_there_is_explained", Duration::from_secs(30));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let out = Command::new(BIN)
        .arg("migrate")
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/x"),
        )
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("refused"), "the cause: {err}");
    assert!(
        err.contains("Is PostgreSQL running") && err.contains("DATABASE_URL"),
        "{err}"
    );
}

/// A crash gap starts at the run's safe point: trades received but still waiting to be
/// committed (here a batch gathered for up to a minute while heartbeats go on) are inside it. Before,
/// the gap started at the last heartbeat, after them: they were lost outside any gap.
#[test]
fn a_crash_gap_starts_before_the_trades_that_were_not_yet_committed() {
    let _w = Watchdog::new("a_crash_gap_starts_before", Duration::from_secs(120));
    let db = TestDb::new();
    let sim = pipeline::sim(100, 300.0);
    let mut c = polytape(&db, &sim);
    c.args([
        "run",
        "--batch-size",
        "1000000",
        "--batch-max-age-ms",
        "60000",
        "--batch-wait",
    ]);
    let first = Daemon::spawn(c);
    // Trades received into a batch that gathers for a minute, then a heartbeat after them
    // (it records the safe point), and still nothing committed.
    let beat = |db: &TestDb| -> Option<String> {
        db.client()
            .query_opt("SELECT heartbeat_at::text FROM sessions", &[])
            .ok()
            .flatten()
            .map(|r| r.get(0))
    };
    assert!(
        wait_until(Duration::from_secs(60), || sim.delivered_count() > 500
            && beat(&db).is_some()),
        "trades received and the run registered"
    );
    let b1 = beat(&db);
    assert!(wait_until(Duration::from_secs(15), || beat(&db) != b1));
    assert_eq!(db.count("trades"), 0, "none committed yet");
    first.signal("KILL");
    drop(first);
    // The restart (ordinary batches) records the crash and carries on.
    let second = Daemon::spawn({
        let mut c = polytape(&db, &sim);
        c.arg("run");
        c
    });
    assert!(wait_until(Duration::from_secs(30), || {
        db.count("gaps WHERE reason LIKE 'crash:%'") == 1 && db.count("trades") > 200
    }));
    second.stop(Duration::from_secs(10));
    let missing = pipeline::assert_missing_within_gaps(db.url(), &sim, Duration::from_secs(2));
    eprintln!("a crash with a batch uncommitted: {missing} trades lost, all inside the crash gap");
    assert!(
        missing > 500,
        "the batch was lost with the process: {missing}"
    );
}

/// `db`'s markets table synced from `sim` by `polytape sync-markets`, and one open v1 market
/// of it (its token ids are the feed's), for tests that write rows by hand.
fn synced_v1_market(db: &TestDb, sim: &polytape_sim::Sim) -> polytape_sim::universe::SimMarket {
    let mut c = polytape(db, sim);
    c.arg("sync-markets");
    assert!(output(c).status.success());
    sim.markets()
        .into_iter()
        .find(|m| m.is_open() && m.version == "v1")
        .expect("an open market")
}

/// `polytape audit` shows, per market and hour, the minutes its book was not trusted: the
/// window a resync's snapshot records (here 90 s of one token, and 30 s of the other inside
/// it: the market's figure is its worst token's).
#[test]
fn audit_shows_the_minutes_without_a_trusted_book() {
    let _w = Watchdog::new("audit_blind_minutes", Duration::from_secs(60));
    let db = TestDb::empty();
    let sim = pipeline::sim(10, 0.0);
    let market = synced_v1_market(&db, &sim);
    let mut client = db.client();
    for (i, (token, blind_secs)) in market.token_ids.iter().zip([90, 30]).enumerate() {
        client
            .execute(
                "INSERT INTO tokens (asset_id, market) VALUES ($1, $2)",
                &[token, &market.condition_id],
            )
            .expect("token");
        // The snapshot that ended the window, ten minutes into the current hour... or the
        // previous one's if the hour is young: either way one hour holds it all.
        client
            .execute(
                "INSERT INTO book_snapshot (taken_at, blind_from, token, source, levels)
                 SELECT t, t - make_interval(secs => $1), k.id, 'f', '\\x0100000000'
                 FROM tokens k,
                      (SELECT date_trunc('hour', now() - interval '11 minutes')
                              + interval '10 minutes' + $2 * interval '1 second') AS x(t)
                 WHERE k.asset_id = $3",
                &[&f64::from(blind_secs), &f64::from(i as u32), token],
            )
            .expect("snapshot");
    }
    let mut c = polytape(&db, &sim);
    c.args(["audit", "--market", &market.slug, "--since", "2h"]);
    let out = output(c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(text.contains("no book"), "{text}");
    assert!(
        text.lines().any(|l| l.contains("    1.5 m")),
        "the market's hour shows 1.5 minutes: {text}"
    );
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.contains("1.5 market-minutes without a trusted book")),
        "{text}"
    );
}

/// `polytape prices` rolls minute bars up in SQL: the first open, the highest high, the
/// lowest low, the last close, trades summed.
#[test]
fn prices_rolls_minute_bars_up_right() {
    let _w = Watchdog::new("prices", Duration::from_secs(60));
    let db = TestDb::empty();
    let sim = pipeline::sim(10, 0.0);
    let market = synced_v1_market(&db, &sim);
    let mut client = db.client();
    client
        .execute(
            "INSERT INTO tokens (asset_id, market) VALUES ($1, $2)",
            &[&market.token_ids[0], &market.condition_id],
        )
        .expect("token");
    // Three minutes of one hour: open 0.40 → high 0.60 → low 0.30 → close 0.50.
    client
        .execute(
            "INSERT INTO price_bar (minute, token, source, open2, high2, low2, close2, trades,
                                    volume, notional)
             SELECT date_trunc('hour', now() - interval '3 hours') + m * interval '1 minute',
                    k.id, 'l', o, h, l, c, n, v, v * 0.5
             FROM tokens k,
                  (VALUES (0, 800000, 1200000, 700000, 900000, 2, 10.5),
                          (1, 900000, 1000000, 600000, 950000, 1, 1),
                          (2, 950000, 1100000, 800000, 1000000, 3, 2.25))
                  AS v(m, o, h, l, c, n, v)
             WHERE k.asset_id = $1",
            &[&market.token_ids[0]],
        )
        .expect("bars");
    let run = |interval: &str| {
        let mut c = polytape(&db, &sim);
        c.args([
            "prices",
            "--market",
            &market.slug,
            "--since",
            "6h",
            "--interval",
            interval,
        ]);
        let out = output(c);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out)
    };
    let minutes = run("1m");
    assert_eq!(
        minutes.lines().count(),
        4,
        "a header and three bars: {minutes}"
    );
    let hour = run("1h");
    let line = hour.lines().nth(1).expect("one hourly bar");
    let fields: Vec<&str> = line.split_whitespace().collect();
    // bar date, bar time, outcome, open, high, low, close, bid, ask, trades, volume, notional
    assert_eq!(
        &fields[3..7],
        ["0.4", "0.6", "0.3", "0.5"],
        "the first open, the highest high, the lowest low, the last close: {hour}"
    );
    assert_eq!(fields[9], "6", "trades summed: {hour}");
    assert_eq!(fields[10], "13.75", "volume summed: {hour}");
}

/// `polytape report` writes one self-contained HTML file whose numbers are the audit's: the
/// same totals line, and for every market-hour the audit prints, a heatmap cell with the
/// same counts and verdict.
#[test]
fn the_report_shows_what_the_audit_prints() {
    let _w = Watchdog::new("report", Duration::from_secs(120));
    let db = TestDb::new();
    let sim = pipeline::sim(20, 100.0);
    let mut c = polytape(&db, &sim);
    c.args(["run"]);
    let daemon = Daemon::spawn(c);
    assert!(wait_until(Duration::from_secs(40), || db.count("trades") >= 200));
    // A socket loss: a gap, filled or open, with a window and tokens.
    sim.drop_sockets();
    assert!(wait_until(Duration::from_secs(30), || db.count("gaps") >= 1));
    daemon.stop(Duration::from_secs(20));
    let out_path = db.spool_dir().join("tape.html");
    let mut c = polytape(&db, &sim);
    c.args(["report", "--since", "2h", "--out"]).arg(&out_path);
    let out = output(c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&out_path).expect("the report");
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(
        !html.contains("http://") || !html.contains("src=\"http"),
        "nothing fetched"
    );
    assert!(!html.contains("<script"), "no scripts");
    let mut c = polytape(&db, &sim);
    c.args(["audit", "--since", "2h"]);
    let audit = stdout(&output(c));
    let totals = audit.lines().last().expect("the totals line");
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    assert!(
        html.contains(&format!("<p id=\"totals\">{}</p>", esc(totals))),
        "the report's totals are the audit's: {totals}"
    );
    // Every audit line (hour, market, feed, filled, holes, filled, minutes, verdict, chain)
    // is a cell.
    let mut cells = 0;
    for line in audit.lines().skip(1).filter(|l| !l.starts_with("total:")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let n = f.len();
        let (hour, feed, filled, open, closed, minutes, verdict, chain) = (
            format!("{} {}", f[0], f[1]),
            f[n - 8],
            f[n - 7],
            f[n - 6],
            f[n - 5],
            f[n - 4],
            f[n - 2],
            f[n - 1],
        );
        let wanted = format!(
            ": feed {feed}, filled in {filled}, holes open {open}, holes filled {closed}, {minutes} min without a trusted book: {verdict}; {chain}"
        );
        assert!(
            html.contains(&format!("<title>{hour} ")) && html.contains(&wanted),
            "a cell for {line}"
        );
        cells += 1;
    }
    assert!(cells >= 10, "{cells} market-hours");
    assert!(
        html.contains("<h2>Gaps (") && html.contains("class=\"closed\"")
            || html.contains("class=\"open\"")
    );
    assert!(html.contains("<td>trade_tape</td>"), "the size per table");
    // --top: only the busiest markets are drawn, the rest summed in one line.
    let small = db.spool_dir().join("top.html");
    let mut c = polytape(&db, &sim);
    c.args(["report", "--since", "2h", "--top", "3", "--out"])
        .arg(&small);
    assert!(output(c).status.success());
    let top = std::fs::read_to_string(&small).expect("the small report");
    let drawn: std::collections::HashSet<&str> = top
        .split("<rect ")
        .skip(1)
        .filter_map(|r| r.split("<title>").nth(1))
        .filter(|t| t.contains(": feed "))
        .filter_map(|t| t.split(": feed").next()?.splitn(3, ' ').nth(2))
        .collect();
    assert_eq!(drawn.len(), 3, "three markets drawn: {drawn:?}");
    assert!(top.contains("<p id=\"rest\">and "), "the rest summed");
    assert!(top.len() < html.len(), "a smaller file");
    assert!(top.contains(&format!("<p id=\"totals\">{}</p>", esc(totals))));
}
