//! Helpers that put the simulator, the markets table and a listener together.

use std::thread::JoinHandle;
use std::time::Duration;

use crate::wait_until;

use polytape::bench::Health;
use polytape::bench::MarketRow;
use polytape::{Config, ConfigBuilder, Decimal, HealthSnapshot, Listener, ListenerHandle};
use polytape_sim::universe::SimMarket;
use polytape_sim::{Sim, SimConfig, SimTrade};

use super::TestDb;

/// A simulator on a free loopback port.
pub fn sim(markets: u64, trade_rate: f64) -> Sim {
    sim_with(sim_config(markets, trade_rate))
}

/// The tests' simulator: a free loopback port, `markets` markets trading `trade_rate` trades
/// a second, no book events between trades. Change what a test is about with
/// `SimConfig { noise_per_trade: 2, ..sim_config(60, 400.0) }`.
pub fn sim_config(markets: u64, trade_rate: f64) -> SimConfig {
    SimConfig {
        listen: "127.0.0.1:0".into(),
        markets,
        trade_rate,
        // The live feed sends ~50 book events per trade (the simulator's default); tests
        // that are not about parsing load keep debug builds fast without them.
        noise_per_trade: 0,
        idle_noise: Duration::from_millis(200),
        ..SimConfig::default()
    }
}

pub fn sim_with(config: SimConfig) -> Sim {
    Sim::start(config).expect("the simulator starts")
}

/// The `markets` row a correct Gamma sync would write for a simulated market.
pub fn market_row(m: &SimMarket) -> MarketRow {
    MarketRow {
        condition_id: m.condition_id.clone(),
        gamma_id: Some(m.gamma_id.to_string()),
        question: Some(m.question.clone()),
        slug: Some(m.slug.clone()),
        outcomes: m.outcomes.to_vec(),
        token_ids: m.token_ids.to_vec(),
        active: true,
        closed: m.closed,
        accepting_orders: !m.closed,
        enable_order_book: m.enable_order_book,
        neg_risk: m.neg_risk,
        end_date: None,
        version: Some(m.version.to_owned()),
    }
}

/// Writes the simulator's known-version markets into `db`; returns how many are open.
pub fn load_markets(db: &TestDb, sim: &Sim) -> usize {
    load_markets_at(db.url(), sim)
}

/// [`load_markets`] for a database given by URL.
pub fn load_markets_at(url: &str, sim: &Sim) -> usize {
    let rows: Vec<MarketRow> = sim
        .markets()
        .iter()
        .filter(|m| m.version != "v3")
        .map(market_row)
        .collect();
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    polytape::bench::upsert_markets(&mut client, &rows).expect("upsert markets");
    rows.iter()
        .filter(|r| !r.closed && r.enable_order_book)
        .count()
}

/// A listener configuration for tests: the sim's URL, short timeouts, quick backoff.
pub fn config(db: &TestDb, sim: &Sim) -> Config {
    config_for(db.url(), sim)
        .to_builder()
        .spool_dir(db.spool_dir())
        .build()
        .expect("a valid test configuration")
}

/// [`config`] for a database given by URL.
pub fn config_for(url: &str, sim: &Sim) -> Config {
    Config::builder()
        .database_url(url)
        .spool_dir(crate::spool_dir("pipeline"))
        .ws_url(sim.ws_url())
        .gamma_url(sim.gamma_url())
        .data_api_url(sim.gamma_url())
        .clob_url(sim.gamma_url())
        .ping_interval(Duration::from_millis(500))
        .pong_timeout(Duration::from_secs(2))
        .stale_timeout(Duration::from_secs(3))
        .probe_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(2))
        .open_interval(Duration::from_millis(5))
        .backoff_min(Duration::from_millis(50))
        .backoff_max(Duration::from_millis(500))
        .gamma_backoff_min(Duration::from_millis(10))
        .gamma_backoff_max(Duration::from_millis(200))
        // The simulator's blocks trail their matches by at most ~4 s (unless a test asks for
        // more); the default 60 s would make every gap fill wait a minute.
        .settlement_lag(Duration::from_secs(10))
        .build()
        .expect("a valid test configuration")
}

/// A listener running on its own thread.
pub struct Running {
    pub handle: ListenerHandle,
    thread: Option<JoinHandle<polytape::Result<HealthSnapshot>>>,
}

impl Running {
    pub fn start(listener: Listener) -> Running {
        let handle = listener.handle();
        let thread = std::thread::spawn(move || listener.run());
        Running {
            handle,
            thread: Some(thread),
        }
    }

    /// Stops the listener and returns the final health from both `stop()` and `run()`.
    pub fn stop(mut self) -> (HealthSnapshot, HealthSnapshot) {
        let from_stop = self.handle.stop();
        let from_run = self
            .thread
            .take()
            .expect("running")
            .join()
            .expect("run() did not panic")
            .expect("run() succeeded");
        (from_stop, from_run)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.stop();
        }
    }
}

/// A running test pipeline: the simulator's markets in the database, a listener over all of
/// them on its own thread, and its live health. What most integration tests start with:
///
/// ```no_run
/// # use std::time::Duration;
/// # use polytape_testkit::{TestDb, pipeline};
/// let db = TestDb::new();
/// let sim = pipeline::sim(100, 300.0);
/// let p = pipeline::start(&db, &sim, |c| c.max_tokens_per_conn(100));
/// p.wait_up(200); // every connection subscribed, 200 trades stored
/// let (health, _) = p.stop();
/// pipeline::assert_stored_equals_delivered(&db, &sim);
/// ```
pub struct Pipeline {
    /// The listener's live counters.
    pub health: Health,
    /// How many connections the listener opened (one per chunk).
    pub conns: usize,
    running: Running,
}

/// Loads `sim`'s markets into `db`, builds the test configuration ([`config`]) changed by
/// `configure`, and starts a listener over every open market of the table.
pub fn start(
    db: &TestDb,
    sim: &Sim,
    configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> Pipeline {
    load_markets(db, sim);
    start_with(config(db, sim), configure)
}

/// [`start`] for a database given by URL (a private cluster): markets loaded, the test
/// configuration for that URL changed by `configure`.
pub fn start_at(
    url: &str,
    sim: &Sim,
    configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> Pipeline {
    load_markets_at(url, sim);
    start_with(config_for(url, sim), configure)
}

fn start_with(base: Config, configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Pipeline {
    let config = configure(base.to_builder())
        .build()
        .expect("a valid test configuration");
    let listener = Listener::from_database(config).expect("a listener over the markets table");
    Pipeline {
        health: listener.health(),
        conns: listener.chunks().len(),
        running: Running::start(listener),
    }
}

impl Pipeline {
    /// The listener's health now.
    pub fn snapshot(&self) -> HealthSnapshot {
        self.health.snapshot()
    }

    /// The listener's handle (market-set changes, stops).
    pub fn handle(&self) -> &ListenerHandle {
        &self.running.handle
    }

    /// Waits up to `timeout` for `cond` on the health; panics with `what` and the last
    /// snapshot when it does not come.
    pub fn wait(
        &self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&HealthSnapshot) -> bool,
    ) {
        let mut last = None;
        let ok = wait_until(timeout, || {
            let s = self.health.snapshot();
            let ok = cond(&s);
            last = Some(s);
            ok
        });
        assert!(ok, "waited {timeout:?} for {what}: {last:?}");
    }

    /// Waits (30 s) until every connection is subscribed and at least `inserted` trades are
    /// stored.
    pub fn wait_up(&self, inserted: u64) {
        let conns = self.conns;
        self.wait(Duration::from_secs(30), "every connection up", |h| {
            h.connections_active == conns && h.trades_inserted >= inserted
        });
    }

    /// Waits (30 s) until `more` trades are stored beyond those stored now.
    pub fn wait_more_trades(&self, more: u64) {
        let before = self.snapshot().trades_inserted;
        self.wait(Duration::from_secs(30), "more trades stored", |h| {
            h.trades_inserted >= before + more
        });
    }

    /// Stops the listener; the final health from both `stop()` and `run()`.
    pub fn stop(self) -> (HealthSnapshot, HealthSnapshot) {
        self.running.stop()
    }
}

/// Every stored trade, in the simulator's terms, sorted.
pub fn stored(url: &str) -> Vec<SimTrade> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    let rows = client
        .query(
            "SELECT (extract(epoch FROM traded_at) * 1000)::bigint, asset_id, market,
                    price::text, size::text, side, transaction_hash
             FROM trades",
            &[],
        )
        .expect("select trades");
    let mut out: Vec<SimTrade> = rows
        .iter()
        .map(|r| SimTrade {
            timestamp_ms: r.get(0),
            asset_id: r.get(1),
            market: r.get(2),
            price: r.get(3),
            size: r.get(4),
            side: r.get(5),
            transaction_hash: r.get(6),
        })
        .collect();
    out.sort();
    out
}

/// Asserts that the trades table holds exactly what the simulator delivered: nothing
/// missing, nothing twice, nothing extra. Returns the count.
pub fn assert_stored_equals_delivered(db: &TestDb, sim: &Sim) -> usize {
    assert_stored_at_equals_delivered(db.url(), sim)
}

/// [`assert_stored_equals_delivered`] for a database given by URL.
pub fn assert_stored_at_equals_delivered(url: &str, sim: &Sim) -> usize {
    let mut delivered = sim.delivered();
    delivered.sort();
    let before = delivered.len();
    delivered.dedup();
    assert_eq!(
        before,
        delivered.len(),
        "the simulator delivered a trade twice"
    );
    let stored = stored(url);
    if stored != delivered {
        let s: std::collections::BTreeSet<_> = stored.iter().collect();
        let d: std::collections::BTreeSet<_> = delivered.iter().collect();
        let missing: Vec<_> = d.difference(&s).take(3).collect();
        let extra: Vec<_> = s.difference(&d).take(3).collect();
        panic!(
            "stored {} != delivered {}; missing (first 3): {missing:?}; extra (first 3): {extra:?}",
            stored.len(),
            delivered.len()
        );
    }
    stored.len()
}

/// Tokens of the simulator's open, known-version markets.
pub fn open_tokens(sim: &Sim) -> usize {
    sim.markets()
        .iter()
        .filter(|m| m.is_open() && m.version != "v3")
        .count()
        * 2
}

/// The simulator's markets polytape holds after a sync: open, of a known version, with an
/// order book.
pub fn held_markets(sim: &Sim) -> Vec<SimMarket> {
    sim.markets()
        .into_iter()
        .filter(|m| m.is_open() && m.version != "v3" && m.enable_order_book)
        .collect()
}

/// The condition ids of [`held_markets`].
pub fn held_market_ids(sim: &Sim) -> Vec<String> {
    held_markets(sim)
        .into_iter()
        .map(|m| m.condition_id)
        .collect()
}

/// Stalls the first token of each of the first `n` held markets (they trade, the feed sends
/// nothing of them, no socket is lost); returns them.
pub fn stall_first_tokens(sim: &Sim, n: usize) -> Vec<String> {
    let stalled: Vec<String> = held_markets(sim)
        .iter()
        .take(n)
        .map(|m| m.token_ids[0].clone())
        .collect();
    for a in &stalled {
        assert!(sim.stall_asset(a, true), "{a} stalled");
    }
    stalled
}

/// Waits (up to 20 s) until the simulator delivers a trade of one of `assets` matched after
/// `after_ms`: a repaired stall delivers again.
pub fn delivering_again(sim: &Sim, assets: &[String], after_ms: i64) -> bool {
    wait_until(Duration::from_secs(20), || {
        sim.delivered()
            .iter()
            .any(|t| assets.contains(&t.asset_id) && t.timestamp_ms > after_ms)
    })
}

/// Waits (up to 10 s) until the simulator's stats satisfy `cond`.
pub fn wait_stats(sim: &Sim, mut cond: impl FnMut(&polytape_sim::SimStats) -> bool) -> bool {
    super::wait_until(Duration::from_secs(10), || cond(&sim.stats()))
}

/// For tests where trades may be lost for a reason polytape records (a crash, a dropped
/// socket, a full spool): asserts that nothing is stored twice or stored that was never
/// delivered, and that every delivered trade that is not stored lies inside a recorded gap
/// of its asset (within `slack` of its window). Returns how many delivered trades are
/// missing.
pub fn assert_missing_within_gaps(url: &str, sim: &Sim, slack: Duration) -> usize {
    use std::collections::BTreeSet;
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    let dupes: i64 = client
        .query_one(
            "SELECT count(*) - count(DISTINCT (traded_at, asset_id, price, size, side,
                                               transaction_hash)) FROM trades",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(dupes, 0, "no trade is stored twice");
    let delivered: BTreeSet<SimTrade> = sim.delivered().into_iter().collect();
    let maybe: BTreeSet<SimTrade> = sim.maybe_delivered().into_iter().collect();
    let stored: BTreeSet<SimTrade> = stored(url).into_iter().collect();
    // A dropped client may have read part of what the simulator could not confirm.
    let extra: Vec<_> = stored
        .difference(&delivered)
        .filter(|t| !maybe.contains(t))
        .take(3)
        .collect();
    assert!(extra.is_empty(), "stored but never delivered: {extra:?}");
    let gaps: Vec<(i64, i64, Vec<String>)> = client
        .query(
            "SELECT (extract(epoch FROM from_ts) * 1000)::bigint,
                    (extract(epoch FROM to_ts) * 1000)::bigint, asset_ids FROM gaps",
            &[],
        )
        .expect("gaps")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let slack = slack.as_millis() as i64;
    let missing: Vec<&SimTrade> = delivered.difference(&stored).collect();
    let uncovered: Vec<&&SimTrade> = missing
        .iter()
        .filter(|t| {
            !gaps.iter().any(|(from, to, assets)| {
                assets.contains(&t.asset_id)
                    && t.timestamp_ms >= from - slack
                    && t.timestamp_ms <= to + slack
            })
        })
        .take(3)
        .collect();
    assert!(
        uncovered.is_empty(),
        "{} delivered trades missing, some outside every gap (first 3): {uncovered:?}; gaps: {}",
        missing.len(),
        gaps.len()
    );
    missing.len()
}

/// What [`assert_stored_equals_executed`] found.
#[derive(Debug, Clone, Copy, Default)]
pub struct Completeness {
    /// Trades the exchange executed on held assets inside the window.
    pub executed: usize,
    /// Of those, stored from the feed, and filled from the Data API.
    pub from_feed: usize,
    pub filled: usize,
    /// Added from the chain's logs (missed by the feed and the Data API).
    pub from_chain: usize,
}

/// The complete-tape check: every trade the simulator *executed* on an asset the listener
/// held (open order-book markets in `markets`) with a match time in `from_ms..=to_ms` is
/// stored exactly once, with its price and side; nothing is stored that was never executed;
/// and each row's `source` is right (`feed` for what the feed delivered, `data_api` for the
/// rest). The simulator's sizes are unique per trade, so (asset, size) identifies a trade
/// across the two sources, whose times differ (match vs block).
pub fn assert_stored_equals_executed(
    url: &str,
    sim: &Sim,
    from_ms: i64,
    to_ms: i64,
) -> Completeness {
    use std::collections::{HashMap, HashSet};
    let canon = Decimal::canonical;
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    let held: HashSet<String> = client
        .query(
            "SELECT unnest(token_ids) FROM markets WHERE NOT closed AND enable_order_book",
            &[],
        )
        .expect("held tokens")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let rows = client
        .query(
            "SELECT asset_id, size::text, price::text, side, source FROM trades",
            &[],
        )
        .expect("trades");
    let mut stored: HashMap<(String, String), (String, String, String)> = HashMap::new();
    for r in &rows {
        let key = (r.get::<_, String>(0), canon(&r.get::<_, String>(1)));
        let value = (canon(&r.get::<_, String>(2)), r.get(3), r.get(4));
        assert!(
            stored.insert(key.clone(), value).is_none(),
            "stored twice: {key:?}"
        );
    }
    let executed = sim.executed();
    let executed_keys: HashSet<(String, String)> = executed
        .iter()
        .map(|t| (t.asset_id.clone(), canon(&t.size)))
        .collect();
    let extra: Vec<_> = stored
        .keys()
        .filter(|k| !executed_keys.contains(*k))
        .take(3)
        .collect();
    assert!(extra.is_empty(), "stored but never executed: {extra:?}");
    let delivered: HashSet<(String, String)> = sim
        .delivered()
        .iter()
        .chain(sim.maybe_delivered().iter())
        .map(|t| (t.asset_id.clone(), canon(&t.size)))
        .collect();
    let mut report = Completeness::default();
    let mut missing = Vec::new();
    for t in executed.iter().filter(|t| {
        t.timestamp_ms >= from_ms && t.timestamp_ms <= to_ms && held.contains(&t.asset_id)
    }) {
        report.executed += 1;
        let key = (t.asset_id.clone(), canon(&t.size));
        match stored.get(&key) {
            None => missing.push(t.clone()),
            Some((price, side, source)) => {
                assert_eq!(price, &canon(&t.price), "price of {key:?}");
                assert_eq!(side, &t.side, "side of {key:?}");
                let was_delivered = delivered.contains(&key);
                match source.as_str() {
                    "feed" => {
                        assert!(
                            was_delivered,
                            "a feed row the feed never delivered: {key:?}"
                        );
                        report.from_feed += 1;
                    }
                    "data_api" => report.filled += 1,
                    "chain" => report.from_chain += 1,
                    other => panic!("unknown source {other}"),
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} executed trades missing (first 3): {:?}",
        missing.len(),
        report.executed,
        missing.iter().take(3).collect::<Vec<_>>()
    );
    report
}
