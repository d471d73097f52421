//! polytape's benchmarks, in one run on one machine: `bash bench/run [N]`.
//!
//! 1. ceiling: `psql \copy` of N rows into an empty `trades` (this schema's limit), with
//!    each index variant;
//! 2. end to end: polytape-sim (own process) → listener → writer → `trades`, N trades at full
//!    speed over 32 connections; stored == delivered checked;
//! 3. latency at a steady 1,000 trades/s;
//! 4. footprint: 40,000 tokens over 80 connections, idle for 60 s;
//! 5. parser: frames/s and MB/s on a realistic mix;
//! 6. health counters from 32 threads, against a mutex per frame.
//!
//! Needs a PostgreSQL server (`BENCH_DATABASE_URL`, default the local one) and `psql`. It
//! creates and drops its own databases.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use polytape::bench::{Health, parse_frame};
use polytape::{Config, Listener};
use polytape_sim::book::SimBook;
use polytape_sim::frames::{self, TradeRecord};
use polytape_sim::universe::generate_market;

// The storage section lives beside this file (not in `examples/`, where it would be an
// example of its own).
#[path = "bench_parts/books.rs"]
mod books;
#[path = "bench_parts/python.rs"]
mod python;
#[path = "bench_parts/storage.rs"]
mod storage;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let only: Option<String> = std::env::args().nth(2);
    let server = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres".to_owned());
    let want = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if only.as_deref().is_none_or(|o| o == "e2e") {
        println!("# polytape benchmarks, N = {n}");
        println!("machine: {} cores, {}", cores(), mem_total());
        println!("date: {}", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"));
    }
    if want("e2e") {
        end_to_end(&server, n)?;
    }
    if want("ceiling") {
        ceiling(&server, n)?;
    }
    if want("latency") {
        latency(&server)?;
    }
    if want("footprint") {
        footprint(&server)?;
    }
    if want("writer") {
        writer_paths(&server, n.min(300_000))?;
    }
    if want("spool") {
        spool(&server, n.min(300_000))?;
    }
    if want("backfill") {
        backfill(&server, n.min(200_000))?;
    }
    if want("chain") {
        chain(&server, n.min(200_000))?;
    }
    if want("parser") {
        parser();
    }
    if want("storage") {
        storage::storage(&server)?;
    }
    if want("books") {
        books::books(&server)?;
    }
    if want("python") {
        python::python(&server, n.min(100_000))?;
    }
    if want("health") {
        health_contention();
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn proc_status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_owned())
        .unwrap_or_default()
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// CPU seconds (user + system) of process `pid` ("self" for this one).
fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of /proc/PID/stat; index 11 and 12 after the comm field.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds by thread kind, as one line.
pub(crate) fn by_thread(cpu: std::collections::BTreeMap<String, f64>) -> String {
    cpu.into_iter()
        .filter(|(_, c)| *c > 0.0)
        .map(|(k, c)| format!("{k} {c:.2} s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPU seconds of this process's threads, by kind (the name up to its last `-`, so that
/// `polytape-conn-17` counts as `polytape-conn`).
fn cpu_seconds_by_thread() -> std::collections::BTreeMap<String, f64> {
    cpu_seconds_by_thread_of("self")
}

/// [`cpu_seconds_by_thread`] of process `pid`.
fn cpu_seconds_by_thread_of(pid: &str) -> std::collections::BTreeMap<String, f64> {
    let mut by = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by;
    };
    for task in dir.filter_map(|e| e.ok()) {
        let tid = task.file_name().to_string_lossy().into_owned();
        let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let kind = match name.rsplit_once('-') {
            Some((k, n)) if n.bytes().all(|b| b.is_ascii_digit()) => k.to_owned(),
            _ => name,
        };
        *by.entry(kind).or_insert(0.0) += cpu_seconds_of(&format!("{pid}/task/{tid}"));
    }
    by
}

/// CPU seconds of every `postgres` process on this machine (the server is local).
fn postgres_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(|pid| cpu_seconds_of(&pid))
        .sum()
}

/// A database of our own on the server, dropped by the returned guard.
struct BenchDb {
    server: String,
    name: String,
}

impl BenchDb {
    fn new(server: &str, name: &str) -> Result<BenchDb> {
        BenchDb::new_at(server, name, i32::MAX)
    }

    /// A database with the migrations up to `last` applied (5: the schema before the
    /// compact tape).
    fn new_at(server: &str, name: &str, last: i32) -> Result<BenchDb> {
        let mut admin =
            postgres::Client::connect(&format!("{server} dbname=postgres"), postgres::NoTls)?;
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let db = BenchDb {
            server: server.to_owned(),
            name: name.to_owned(),
        };
        polytape::bench::migrate_up_to(&Config::builder().database_url(db.url()).build()?, last)?;
        Ok(db)
    }

    fn url(&self) -> String {
        format!("{} dbname={}", self.server, self.name)
    }

    fn client(&self) -> Result<postgres::Client> {
        Ok(postgres::Client::connect(&self.url(), postgres::NoTls)?)
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Ok(mut admin) =
            postgres::Client::connect(&format!("{} dbname=postgres", self.server), postgres::NoTls)
        {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// polytape-sim as a process of its own, so its CPU is not counted as ours.
struct SimProcess {
    child: Child,
    addr: String,
}

impl SimProcess {
    fn start(args: &[&str]) -> Result<SimProcess> {
        // No book noise between trades: these sections measure the trade path (the parser
        // and books sections measure the live mix, noise included).
        SimProcess::start_with_noise(0, args)
    }

    fn start_with_noise(noise_per_trade: u32, args: &[&str]) -> Result<SimProcess> {
        let exe = std::env::current_exe()?;
        let bin = exe
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("polytape-sim"))
            .ok_or("no target dir")?;
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--noise-per-trade"])
            .arg(noise_per_trade.to_string())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .ok_or("no address")?
            .to_owned();
        Ok(SimProcess { child, addr })
    }

    fn stats(&self) -> Result<serde_json::Value> {
        let body = ureq::get(&format!("http://{}/sim/stats", self.addr))
            .call()?
            .body_mut()
            .read_to_string()?;
        Ok(serde_json::from_str(&body)?)
    }
}

/// When a run at full speed is over: the simulator has generated all `n` trades, delivered
/// every one it generated (with `--block-on-slow-sockets` each is, once its socket's queue
/// drains: a run that stopped when the count it had delivered *so far* was stored would
/// leave trades in flight out of the measurement; one did, at 81,721 of 100,000), and
/// everything delivered is stored. A delivered count that stops moving for two seconds short
/// of the generated one ends the run too (the rest is not coming).
struct RunEnd {
    n: u64,
    delivered: u64,
    moved: Instant,
}

impl RunEnd {
    fn new(n: u64) -> RunEnd {
        RunEnd {
            n,
            delivered: 0,
            moved: Instant::now(),
        }
    }

    /// Whether the run is over, given the simulator's stats and the trades stored.
    fn reached(&mut self, stats: &serde_json::Value, stored: u64) -> bool {
        let generated = stats["trades_generated"].as_u64().unwrap_or(0);
        let delivered = stats["trades_delivered"].as_u64().unwrap_or(0);
        if delivered != self.delivered {
            self.delivered = delivered;
            self.moved = Instant::now();
        }
        let all_out = delivered >= generated || self.moved.elapsed() >= Duration::from_secs(2);
        generated >= self.n && delivered > 0 && all_out && stored >= delivered
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Syncs the sim's markets into `db` and returns a listener config for them.
fn prepare(db: &BenchDb, sim: &SimProcess) -> Result<Config> {
    let mut client = db.client()?;
    // The number of connections follows from the markets and `max_tokens_per_conn`: the
    // simulators below are sized so that it comes out as each benchmark wants.
    let config = Config::builder()
        .database_url(db.url())
        .ws_url(format!("ws://{}/ws/market", sim.addr))
        .gamma_url(format!("http://{}", sim.addr))
        .data_api_url(format!("http://{}", sim.addr))
        .max_tokens_per_conn(500)
        .open_interval(Duration::from_millis(2))
        .build()?;
    let gamma = polytape::gamma::GammaClient::new(&config);
    polytape::sync::sync_markets(&mut client, &gamma)?;
    Ok(config)
}

fn end_to_end(server: &str, n: u64) -> Result {
    // 32 connections of 500 tokens: 8,000 open markets (about 88% of the universe is open
    // and of a known version).
    let sim = SimProcess::start(&[
        "--markets",
        "9000",
        "--trade-rate",
        "100000000",
        "--max-trades",
        &n.to_string(),
        "--idle-noise-ms",
        "1000",
        "--block-on-slow-sockets",
        // The exchange trades whether or not anyone listens: hold the clock until every
        // connection is subscribed, or the first million trades go to nobody.
        "--start-when-subscribed",
    ])?;
    let db = BenchDb::new(server, "polytape_bench_e2e")?;
    let mut config = prepare(&db, &sim)?;
    if let Some(b) = std::env::var("BENCH_BATCH_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config = config.to_builder().batch_size(b).build()?;
    }
    println!("batch size {}", config.batch_size());
    let listener = Listener::from_database(config)?;
    let conns = listener.chunks().len();
    let health = listener.health();
    let handle = listener.handle();
    let cpu0 = cpu_seconds();
    let sim_pid = sim.child.id().to_string();
    let sim_cpu0 = cpu_seconds_of(&sim_pid);
    let pg_cpu0 = postgres_cpu_seconds();
    let worker = std::thread::spawn(move || listener.run());
    let started = Instant::now();
    let mut first_insert: Option<Instant> = None;
    let mut last_insert = Instant::now();
    // Until the sim has generated and delivered all N and everything delivered is stored.
    let mut end = RunEnd::new(n);
    loop {
        let inserted = health.snapshot().trades_inserted;
        if inserted > 0 {
            first_insert.get_or_insert_with(Instant::now);
        }
        if end.reached(&sim.stats()?, inserted) {
            last_insert = Instant::now();
            break;
        }
        if started.elapsed() > Duration::from_secs(900) {
            println!("timed out");
            break;
        }
        // Every 20 ms: the run's ends are known to 0.2% of a ten-second run, and the two
        // processes asked (the simulator over HTTP) spend no more than that on the asking.
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = first_insert.map_or(started.elapsed(), |t| last_insert - t);
    let cpu = cpu_seconds() - cpu0;
    // The threads are still there: they started with the run.
    let threads = by_thread(cpu_seconds_by_thread());
    let sim_cpu = cpu_seconds_of(&sim_pid) - sim_cpu0;
    let pg_cpu = postgres_cpu_seconds() - pg_cpu0;
    let final_health = handle.stop();
    let _ = worker.join();
    let stats = sim.stats()?;
    let delivered = stats["trades_delivered"].as_u64().unwrap_or(0);
    let stored: i64 = db
        .client()?
        .query_one("SELECT count(*) FROM trades", &[])?
        .get(0);
    let rate = final_health.trades_inserted as f64 / elapsed.as_secs_f64();
    println!("\n## end to end (sim process → {conns} connections → writer → trades)");
    println!(
        "trades: delivered {delivered}, received {}, stored {stored}, duplicates {}, parse errors {}",
        final_health.trades_received, final_health.duplicates_skipped, final_health.parse_errors
    );
    println!(
        "stored == delivered: {}",
        stored as u64 == delivered && final_health.trades_received == delivered
    );
    println!(
        "committed: {rate:.0} trades/s over {:.2} s (first commit to last)",
        elapsed.as_secs_f64()
    );
    println!(
        "cpu: {:.2} s for the listener+writer process = {:.2} CPU s per million trades",
        cpu,
        cpu / final_health.trades_inserted.max(1) as f64 * 1e6
    );
    println!("polytape CPU by thread: {threads}");
    println!(
        "peak RSS: {}; channel blocked readers for {} ms in all",
        proc_status("VmHWM:"),
        final_health.send_blocked_ms
    );
    println!(
        "CPU over the run: polytape {cpu:.1} s, polytape-sim {sim_cpu:.1} s, PostgreSQL (all backends) {pg_cpu:.1} s, wall {:.1} s on {} cores",
        elapsed.as_secs_f64(),
        cores()
    );
    println!("E2E_RATE {rate:.0}");
    Ok(())
}

/// `psql \copy` of `n` rows into an empty `trades`, for each index variant.
fn ceiling(server: &str, n: u64) -> Result {
    let path = std::env::temp_dir().join(format!("polytape-bench-{}.tsv", std::process::id()));
    {
        let mut out = BufWriter::new(std::fs::File::create(&path)?);
        let markets: Vec<_> = (0..2000).map(|i| generate_market(7, i)).collect();
        let base_ms: i64 = 1_780_000_000_000;
        for seq in 0..n {
            let m = &markets[(seq % 2000) as usize];
            let t = TradeRecord {
                seq,
                market: 0,
                outcome: (seq % 2) as u8,
                timestamp_ms: base_ms + (seq / 30) as i64,
                price_bp: ((seq % 999 + 1) * 10) as u16,
                buy: seq % 2 == 0,
                has_tx: seq % 10 != 9,
                short_price: false,
            };
            let ts = chrono::DateTime::from_timestamp_millis(t.timestamp_ms).unwrap_or_default();
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t0\t{}\t{}\t{}",
                m.token_ids[t.outcome as usize],
                m.condition_id,
                t.price(),
                t.size(),
                t.side(),
                ts.format("%Y-%m-%d %H:%M:%S%.3f+00"),
                t.transaction_hash().unwrap_or_else(|| "\\N".into()),
                ts.format("%Y-%m-%d %H:%M:%S%.6f+00"),
            )?;
        }
    }
    println!("\n## ceiling: psql \\copy of {n} rows into an empty trades table");
    let variants: [(&str, &str); 4] = [
        ("natural key only", "DROP INDEX trades_asset_time"),
        (
            "natural key + hash (asset_id)",
            "DROP INDEX trades_asset_time; CREATE INDEX trades_asset_hash ON trades USING hash (asset_id)",
        ),
        (
            "natural key + btree (asset_id, traded_at) [shipped schema]",
            "",
        ),
        (
            "natural key + btree (asset_id, traded_at) + btree (market, traded_at)",
            "CREATE INDEX trades_market_time ON trades (market, traded_at)",
        ),
    ];
    for (name, ddl) in variants {
        // The index variants of the schema before V6 (the storage section measures V6).
        let db = BenchDb::new_at(server, "polytape_bench_ceiling", 5)?;
        if !ddl.is_empty() {
            db.client()?.batch_execute(ddl)?;
        }
        let copy = format!(
            "\\copy trades (asset_id, market, price, size, side, fee_rate_bps, traded_at, transaction_hash, received_at) from '{}'",
            path.display()
        );
        let started = Instant::now();
        let pg0 = postgres_cpu_seconds();
        let status = Command::new("psql")
            .arg(db.url())
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-c", &copy])
            .status()?;
        let secs = started.elapsed().as_secs_f64();
        let pg = postgres_cpu_seconds() - pg0;
        if !status.success() {
            return Err("psql \\copy failed".into());
        }
        println!(
            "{name}: {:.0} rows/s ({secs:.2} s; PostgreSQL CPU {pg:.1} s)",
            n as f64 / secs
        );
        if ddl.is_empty() {
            println!("CEILING_RATE {:.0}", n as f64 / secs);
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn latency(server: &str) -> Result {
    // The same load twice in one run: the writer as shipped (group commit), then the rule
    // before it (every batch waits up to 100 ms for more).
    for gather in [false, true] {
        latency_with(server, gather)?;
    }
    Ok(())
}

fn latency_with(server: &str, gather: bool) -> Result {
    let secs = 20;
    let sim = SimProcess::start(&[
        "--markets",
        "2300",
        "--trade-rate",
        "1000",
        "--idle-noise-ms",
        "1000",
    ])?;
    let db = BenchDb::new(server, "polytape_bench_latency")?;
    let config = prepare(&db, &sim)?
        .to_builder()
        .gather_to_max_age(gather)
        .build()?;
    let listener = Listener::from_database(config)?;
    let conns = listener.chunks().len();
    let health = listener.health();
    health.record_latencies();
    let handle = listener.handle();
    let pg0 = postgres_cpu_seconds();
    let worker = std::thread::spawn(move || listener.run());
    // Warm up, then measure a window.
    std::thread::sleep(Duration::from_secs(3));
    let _ = health.take_latencies();
    let batches0 = health.snapshot().batches_inserted;
    std::thread::sleep(Duration::from_secs(secs));
    let mut l = health.take_latencies();
    let batches = health.snapshot().batches_inserted - batches0;
    handle.stop();
    let _ = worker.join();
    let pg = postgres_cpu_seconds() - pg0;
    l.since_receive_us.sort_unstable();
    l.since_event_us.sort_unstable();
    println!(
        "\n## latency at 1,000 trades/s over {conns} connections ({} trades in {secs} s), writer: {}",
        l.since_receive_us.len(),
        if gather {
            "batches wait up to 100 ms (before)"
        } else {
            "group commit (shipped)"
        }
    );
    println!(
        "commit − receive: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {batches} commits; PostgreSQL CPU {pg:.1} s",
        percentile(&l.since_receive_us, 0.5),
        percentile(&l.since_receive_us, 0.99),
        percentile(&l.since_receive_us, 1.0)
    );
    println!(
        "commit − sim send: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&l.since_event_us, 0.5),
        percentile(&l.since_event_us, 0.99),
        percentile(&l.since_event_us, 1.0)
    );
    Ok(())
}

fn footprint(server: &str) -> Result {
    let idle = std::env::var("BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    // 22,800 markets: ~40,000 held tokens (the platform's peak); BENCH_FOOTPRINT_MARKETS=57000
    // for ~100,000.
    let markets = std::env::var("BENCH_FOOTPRINT_MARKETS").unwrap_or_else(|_| "22800".into());
    let sim = SimProcess::start(&[
        "--markets",
        &markets,
        "--trade-rate",
        "0",
        "--idle-noise-ms",
        "1000",
    ])?;
    let db = BenchDb::new(server, "polytape_bench_footprint")?;
    let sync_started = Instant::now();
    let config = prepare(&db, &sim)?;
    let synced_in = sync_started.elapsed();
    let listener = Listener::from_database(config)?;
    let chunks = listener.chunks();
    let tokens: usize = chunks.iter().map(Vec::len).sum();
    let health = listener.health();
    let handle = listener.handle();
    let rss_before = proc_status("VmRSS:");
    let worker = std::thread::spawn(move || listener.run());
    let deadline = Instant::now() + Duration::from_secs(180);
    let subscribing = Instant::now();
    while health.snapshot().connections_active < chunks.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "start: Gamma sync {:.1} s, every socket subscribed {:.1} s after (book dumps asked: the book side is on)",
        synced_in.as_secs_f64(),
        subscribing.elapsed().as_secs_f64()
    );
    // Idle means after the start: every book has come (and been snapshotted once), and the
    // start's writes (the held set, the first snapshots) have had BENCH_IDLE_WARMUP_SECS.
    while health.snapshot().books.books_held < tokens as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let warmup = std::env::var("BENCH_IDLE_WARMUP_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    std::thread::sleep(Duration::from_secs(warmup));
    let threads0 = cpu_seconds_by_thread();
    let cpu0 = cpu_seconds();
    std::thread::sleep(Duration::from_secs(idle));
    let cpu = cpu_seconds() - cpu0;
    println!(
        "\n## footprint: {tokens} tokens over {} connections, idle {idle} s (after every book came and {warmup} s more)",
        chunks.len()
    );
    let by_thread: Vec<String> = cpu_seconds_by_thread()
        .into_iter()
        .map(|(k, c)| (k.clone(), c - threads0.get(&k).copied().unwrap_or(0.0)))
        .filter(|(_, c)| *c > 0.0)
        .map(|(k, c)| format!("{k} {:.2}%", c / idle as f64 * 100.0))
        .collect();
    println!("CPU by thread (% of one core): {}", by_thread.join(", "));
    println!("connections up: {}", health.snapshot().connections_active);
    println!(
        "RSS: {} (before the listener: {rss_before}); threads: {}",
        proc_status("VmRSS:"),
        proc_status("Threads:")
    );
    println!(
        "CPU: {:.2}% of one core; books held {}",
        cpu / idle as f64 * 100.0,
        health.snapshot().books.books_held
    );
    handle.stop();
    let _ = worker.join();
    Ok(())
}

/// The writer alone: the same trades in batches of 1,000, straight COPY (shipped) against
/// COPY into staging + INSERT … ON CONFLICT.
/// `n` trades shaped like the simulator's, over 2,000 markets.
fn synthetic_trades(n: u64) -> Vec<polytape::Trade> {
    let markets: Vec<_> = (0..2000).map(|i| generate_market(11, i)).collect();
    (0..n)
        .map(|seq| {
            let m = &markets[(seq % 2000) as usize];
            let t = TradeRecord {
                seq,
                market: 0,
                outcome: (seq % 2) as u8,
                timestamp_ms: 1_780_000_000_000 + (seq / 30) as i64,
                price_bp: ((seq % 999 + 1) * 10) as u16,
                buy: seq % 2 == 0,
                has_tx: seq % 10 != 9,
                short_price: false,
            };
            polytape::Trade {
                asset_id: m.token_ids[t.outcome as usize].clone(),
                market: m.condition_id.clone(),
                price: polytape::Decimal::parse(&t.price()).expect("the sim's decimals parse"),
                size: polytape::Decimal::parse(&t.size()).expect("the sim's decimals parse"),
                side: if t.buy {
                    polytape::Side::Buy
                } else {
                    polytape::Side::Sell
                },
                fee_rate_bps: Some(0),
                timestamp_ms: t.timestamp_ms,
                transaction_hash: t.transaction_hash(),
                received_at_us: t.timestamp_ms * 1000 + 500,
            }
        })
        .collect()
}

fn writer_paths(server: &str, n: u64) -> Result {
    let trades = synthetic_trades(n);
    println!("\n## writer alone: {n} trades in batches of 1,000 into an empty trades table");
    use polytape::bench::CopyFormat;
    let paths = [
        (
            false,
            CopyFormat::Binary,
            "binary COPY straight into trades (shipped)",
        ),
        (false, CopyFormat::Text, "text COPY straight into trades"),
        (
            true,
            CopyFormat::Binary,
            "binary COPY to staging + INSERT … ON CONFLICT",
        ),
    ];
    for (staging, format, name) in paths {
        let db = BenchDb::new(server, "polytape_bench_writer")?;
        let config = Config::builder().database_url(db.url()).build()?;
        let health = Health::new();
        let mut writer = polytape::bench::TradeWriter::new(&config, health.clone());
        writer.set_staging_only(staging);
        writer.set_copy_format(format);
        let pg0 = postgres_cpu_seconds();
        let started = Instant::now();
        for batch in trades.chunks(1000) {
            writer
                .commit(batch)
                .expect("the benchmark database takes the batch");
        }
        let secs = started.elapsed().as_secs_f64();
        let pg = postgres_cpu_seconds() - pg0;
        println!(
            "{name}: {:.0} trades/s ({} stored; PostgreSQL CPU {pg:.1} s)",
            n as f64 / secs,
            health.snapshot().trades_inserted
        );
    }
    Ok(())
}

fn parser() {
    // The live mix: ~50 price_change per trade, book dumps in arrays, some arrays mixing
    // events. Built with the simulator's own frame writers.
    let markets: Vec<_> = (0..200).map(|i| generate_market(3, i)).collect();
    let mut corpus: Vec<String> = Vec::new();
    let now = 1_780_000_000_000;
    let mut rng = fastrand::Rng::with_seed(3);
    let mut books: Vec<SimBook> = markets
        .iter()
        .map(|m| SimBook::new(m.mid_milli as u32 * 10, now, &mut rng))
        .collect();
    for round in 0..200u64 {
        let seq = round;
        let m = &markets[(round % 200) as usize];
        let book = &mut books[(round % 200) as usize];
        let mut change = || loop {
            if let Some(c) = book.churn(now, &mut rng) {
                break c;
            }
        };
        for k in 0..48 {
            let mut f = String::new();
            frames::price_change_event(&mut f, m, &[(0, change())], round * 100 + k, now);
            corpus.push(f);
        }
        // One array mixing a trade, a price change and a tick size change.
        let t = TradeRecord {
            seq,
            market: 0,
            outcome: 0,
            timestamp_ms: now,
            price_bp: 4_800,
            buy: true,
            has_tx: true,
            short_price: seq % 7 == 3,
        };
        let mut f = String::from("[");
        frames::trade_event(&mut f, &t, m);
        f.push(',');
        frames::price_change_event(&mut f, m, &[(0, change()), (1, change())], round, now);
        f.push(',');
        frames::tick_size_event(&mut f, m, 0, 100, 10, now);
        f.push(']');
        corpus.push(f);
        if round % 20 == 0 {
            let mut f = String::from("[");
            for (i, bm) in markets.iter().take(50).enumerate() {
                if i > 0 {
                    f.push(',');
                }
                frames::book_event(&mut f, bm, 0, &books[i].state(0), None, i as u64, now);
            }
            f.push(']');
            corpus.push(f);
        }
    }
    let bytes: usize = corpus.iter().map(String::len).sum();
    println!(
        "\n## parser ({} frames, {:.1} KB per pass, 1 trade per ~50 price_change; one core, 3 s each)",
        corpus.len(),
        bytes as f64 / 1024.0
    );
    // Each way of reading the corpus, for 3 s: (frames/s, MB/s, trades or events a pass).
    let measure = |name: &str, read: &dyn Fn(&str) -> usize| {
        let mut frames_done = 0u64;
        let mut found = 0usize;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            found = corpus.iter().map(|f| read(f)).sum();
            frames_done += corpus.len() as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        let passes = frames_done as f64 / corpus.len() as f64;
        println!(
            "{name}: {:.0} frames/s, {:.0} MB/s ({found} found a pass)",
            frames_done as f64 / secs,
            passes * bytes as f64 / secs / 1e6,
        );
        secs / passes
    };
    // The baseline: one serde_json walk of every frame, reading nothing (what each of the
    // two reads of a frame cost before the scan).
    let serde_walk = measure("a serde_json walk (IgnoredAny), the baseline", &|f| {
        usize::from(serde_json::from_str::<serde::de::IgnoredAny>(f).is_ok())
    });
    let trades_only = measure("polytape, trades (the scan, trade events read)", &|f| {
        let mut trades = Vec::new();
        let _ = parse_frame(f, 0, &mut trades);
        trades.len()
    });
    // As a connection with the book side off reads a frame: a frame of book events alone
    // is passed over without its scan (one frame an event here, as the live feed sends them
    // at ordinary rates; a burst that bundles a trade with its book events is scanned).
    let passed_over = measure(
        "polytape, book side off (frames of book events alone passed over)",
        &|f| {
            if polytape::bench::book_events_only(f) {
                return 0;
            }
            let mut trades = Vec::new();
            let _ = parse_frame(f, 0, &mut trades);
            trades.len()
        },
    );
    let with_books = measure(
        "polytape, trades and book events (one scan, each event read once)",
        &|f| {
            let mut trades = Vec::new();
            polytape::bench::read_frame_with_books(f, &mut trades) + trades.len()
        },
    );
    println!(
        "against one serde_json walk: trades {:.2}x its time, book side off {:.2}x, trades and books {:.2}x",
        trades_only / serde_walk,
        passed_over / serde_walk,
        with_books / serde_walk
    );
}

fn health_contention() {
    let threads = 32;
    let per_thread = 500_000u64;
    let ops = (threads as u64 * per_thread) as f64;
    let summary = polytape::bench::FrameSummary {
        events: 1,
        trades: 1,
        ..Default::default()
    };
    let run = |f: &(dyn Fn(u64) + Sync)| {
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| (0..per_thread).for_each(f));
            }
        });
        started.elapsed().as_secs_f64() / ops * 1e9
    };
    // Shipped, on the live mix (one frame in 50 carries a trade): each thread counts
    // locally, and publishes at every frame with trades or after 64 frames without.
    let health = Health::new();
    let batched = run(&|i| {
        thread_local! {
            static COUNTS: std::cell::RefCell<polytape::bench::FrameCounts> = Default::default();
        }
        COUNTS.with(|c| {
            let mut c = c.borrow_mut();
            c.add_frame(&summary);
            if i % 50 == 0 {
                c.add_trades(1, i as i64);
                health.publish(&mut c);
            } else if c.frames >= 64 {
                health.publish(&mut c);
            }
        });
    });
    // Shared atomics touched on every frame.
    let health = Health::new();
    let atomics = run(&|i| {
        health.frame(&summary);
        health.trades_queued(1, i as i64);
    });
    // One parking_lot mutex taken on every frame.
    let lock = Arc::new(parking_lot::Mutex::new((0u64, 0u64, 0i64)));
    let mutex = run(&|i| {
        let mut g = lock.lock();
        g.0 += 1;
        g.1 += 1;
        g.2 = g.2.max(i as i64);
    });
    println!(
        "\n## health counters, {threads} threads × {per_thread} frames (wall time per frame, all threads together)"
    );
    println!(
        "local counts, published at each frame with a trade (1 in 50) or every 64 (shipped): {batched:.1} ns; shared atomics per frame: {atomics:.1} ns; one parking_lot mutex per frame: {mutex:.1} ns"
    );
}

/// The disk spool beside the COPY ceiling: appends (one fdatasync per batch of 1,000), reads,
/// and replay into PostgreSQL through the writer's commit; the baseline is the writer's
/// direct binary COPY of the same trades in the same run.
fn spool(server: &str, n: u64) -> Result {
    let trades = synthetic_trades(n);
    println!("\n## spool: {n} trades in batches of 1,000");
    let db = BenchDb::new(server, "polytape_bench_spool_direct")?;
    let config = Config::builder().database_url(db.url()).build()?;
    let mut writer = polytape::bench::TradeWriter::new(&config, Health::new());
    let started = Instant::now();
    for batch in trades.chunks(1000) {
        writer.commit(batch)?;
    }
    let direct = started.elapsed().as_secs_f64();
    drop(db);
    let db = BenchDb::new(server, "polytape_bench_spool")?;
    let dir = std::env::temp_dir().join(format!("polytape-bench-spool-{}", std::process::id()));
    let config = Config::builder()
        .database_url(db.url())
        .spool_dir(&dir)
        .build()?;
    let run = polytape::bench::spool_round_trip(&config, &trades, 1000)?;
    let _ = std::fs::remove_dir_all(&dir);
    let mb = run.bytes as f64 / 1e6;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("| step | trades/s | MB/s | vs direct COPY |");
    println!("|---|---|---|---|");
    println!(
        "| direct binary COPY into trades (baseline) | {:.0} | | 1.00 |",
        n as f64 / direct
    );
    for (name, d) in [
        ("spool append (fdatasync per batch)", run.append),
        ("spool read + decode", run.read),
        ("spool replay into trades", run.replay),
    ] {
        println!(
            "| {name} | {:.0} | {:.1} | {:.2} |",
            rate(d),
            mb / d.as_secs_f64(),
            rate(d) / (n as f64 / direct)
        );
    }
    println!(
        "spool size: {:.1} MB for {n} trades ({:.0} bytes/trade)",
        mb,
        run.bytes as f64 / n as f64
    );
    Ok(())
}

/// The backfill: trades/s from the simulator's Data API into the tape (pages of 10,000,
/// the writer's COPY), beside the writer's direct COPY of the same number of trades; and a
/// reconciliation sweep's cost, in requests and seconds per 1,000 markets.
/// Waits until the simulator has executed `n` trades.
fn wait_generated(sim: &SimProcess, n: u64) -> Result {
    loop {
        let stats: serde_json::Value = serde_json::from_str(
            &ureq::get(&format!("http://{}/sim/stats", sim.addr))
                .call()?
                .body_mut()
                .read_to_string()?,
        )?;
        if stats["trades_generated"].as_u64().unwrap_or(0) >= n {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The baseline of a loading section: `n` synthetic trades through the writer's direct
/// binary COPY (batches of 10,000) into database `name`; returns the seconds it took.
fn direct_copy(server: &str, name: &str, n: u64) -> Result<f64> {
    let trades = synthetic_trades(n);
    let db = BenchDb::new(server, name)?;
    let config = Config::builder().database_url(db.url()).build()?;
    let mut writer = polytape::bench::TradeWriter::new(&config, Health::new());
    let t0 = Instant::now();
    for batch in trades.chunks(10_000) {
        writer.commit(batch)?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// `n` trades' fills loaded from the simulator's chain into an empty tape (the first seconds
/// before the CLOB V2 migration: V1 events), the same again (finds all), then the live
/// reader's proof of the same range (`verify --chain`); the writer's direct COPY of as many
/// trades is the baseline. Then what the chain side keeps in the database, against the tape.
fn chain(server: &str, n: u64) -> Result {
    println!("\n## chain: {n} fills from Polygon's logs into an empty tape, then proven");
    // At most ~2,000 trades a 2 s block (4,000 logs; a provider answers 10,000).
    let sim = SimProcess::start(&[
        "--markets",
        "2200",
        "--trade-rate",
        "1000",
        "--max-trades",
        &n.to_string(),
        "--chain-finality",
        "2",
        "--v1-seconds",
        "20",
    ])?;
    let db = BenchDb::new(server, "polytape_bench_chain")?;
    let config = prepare(&db, &sim)?
        .to_builder()
        .polygon_rpc_url(Some(format!("http://{}/rpc", sim.addr)))
        .settlement_lag(Duration::from_secs(10))
        .chain_budget(100_000)
        .build()?;
    let since = chrono::Utc::now().timestamp_millis() - 60_000;
    wait_generated(&sim, n)?;
    // Every block settled, finalized and past the load's margin (lag 10 s + 5 s).
    std::thread::sleep(Duration::from_secs(24));
    let (t0, cpu0) = (Instant::now(), cpu_seconds());
    let load = polytape::chain::history(&config, &[], true, since)?;
    let (took, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    eprintln!("chain: load {load:?} in {took:.2} s, {cpu:.2} CPU s");
    let t1 = Instant::now();
    let again = polytape::chain::history(&config, &[], true, since)?;
    let again_took = t1.elapsed().as_secs_f64();
    // The proof: fills are compared once their block is 30 s old.
    std::thread::sleep(Duration::from_secs(12));
    let (t2, cpu2) = (Instant::now(), cpu_seconds());
    polytape::chain::catch_up(&config, since)?;
    let (verify_took, verify_cpu) = (t2.elapsed().as_secs_f64(), cpu_seconds() - cpu2);
    let mut client = db.client()?;
    let row = client.query_one(
        "SELECT coalesce(sum(chain_fills), 0)::bigint, coalesce(sum(tape_fills), 0)::bigint,
                count(*) FILTER (WHERE verified), count(*),
                (SELECT count(*) FROM trades)
         FROM chain_checks",
        &[],
    )?;
    let (chain_fills, tape_fills, verified, hours, stored): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let sizes = client.query_one(
        "SELECT ((SELECT sum(pg_total_relation_size(relid))
                  FROM pg_partition_tree('trade_tape') WHERE isleaf)
                 + pg_total_relation_size('tokens'))::bigint,
                (pg_total_relation_size('chain_checks') + pg_total_relation_size('chain_unsettled')
                 + pg_total_relation_size('chain_cursor'))::bigint,
                pg_total_relation_size('chain_fills')::bigint",
        &[],
    )?;
    let (tape_bytes, chain_bytes, fills_bytes): (i64, i64, i64) =
        (sizes.get(0), sizes.get(1), sizes.get(2));
    let direct = direct_copy(server, "polytape_bench_chain_direct", load.added)?;
    println!("| step | fills | requests | seconds | fills/s | vs direct COPY |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| direct binary COPY (baseline) | {} | | {direct:.2} | {:.0} | 1.00 |",
        load.added,
        load.added as f64 / direct
    );
    println!(
        "| backfill --from-chain, all markets, empty tape | {} added of {} ({} blocks) | {} ({:.1} per 1,000 fills) | {took:.2} | **{:.0}** | {:.2} |",
        load.added,
        load.fills,
        load.blocks,
        load.requests,
        load.requests as f64 * 1000.0 / load.fills.max(1) as f64,
        load.fills as f64 / took,
        (load.fills as f64 / took) / (load.added as f64 / direct)
    );
    println!(
        "| the same again (finds every fill) | {} added of {} | {} | {again_took:.2} | {:.0} | |",
        again.added,
        again.fills,
        again.requests,
        again.fills as f64 / again_took
    );
    println!(
        "| verify --chain of the same range (read, compare, count) | {chain_fills} chain, {tape_fills} tape, {verified}/{hours} market-hours verified | | {verify_took:.2} | {:.0} | |",
        chain_fills as f64 / verify_took
    );
    println!(
        "CPU of this process: load {cpu:.2} s ({:.1} µs a fill), verify {verify_cpu:.2} s ({:.1} µs a fill): at 100 fills/s the live reader's share is {:.2}% of a core",
        cpu * 1e6 / load.fills.max(1) as f64,
        verify_cpu * 1e6 / chain_fills.max(1) as f64,
        verify_cpu / chain_fills.max(1) as f64 * 100.0 * 100.0
    );
    println!(
        "bytes: tape {} ({} trades, {:.0} a trade); chain side kept {} ({:.2}% of the tape), chain_fills now {} (transient)",
        tape_bytes,
        stored,
        tape_bytes as f64 / stored.max(1) as f64,
        chain_bytes,
        chain_bytes as f64 * 100.0 / tape_bytes.max(1) as f64,
        fills_bytes
    );
    Ok(())
}

fn backfill(server: &str, n: u64) -> Result {
    println!("\n## backfill: {n} trades from the Data API into an empty tape");
    // Nobody listens: every trade the exchange executes is a hole to fill.
    let sim = SimProcess::start(&[
        "--markets",
        "2200",
        "--trade-rate",
        "50000",
        "--max-trades",
        &n.to_string(),
        "--data-api-rate-limit",
        "0",
    ])?;
    let db = BenchDb::new(server, "polytape_bench_backfill")?;
    let config = prepare(&db, &sim)?;
    wait_generated(&sim, n)?;
    // Every block settled (history leaves the last 12 s for later).
    std::thread::sleep(Duration::from_secs(14));
    let until = chrono::Utc::now().timestamp_millis();
    let markets: Vec<String> = db
        .client()?
        .query("SELECT condition_id FROM markets WHERE NOT closed", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let since = until - 3_600_000;
    let started = Instant::now();
    let f = polytape::backfill::history(&config, &markets, since, until)?;
    let took = started.elapsed().as_secs_f64();
    let again = Instant::now();
    let second = polytape::backfill::history(&config, &markets, since, until)?;
    let again = again.elapsed().as_secs_f64();
    // The same trades through the writer alone, for the ratio.
    let direct = direct_copy(server, "polytape_bench_backfill_direct", f.added as u64)?;
    println!("| step | trades | requests | seconds | trades/s | vs direct COPY |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| direct binary COPY (baseline) | {} | | {direct:.2} | {:.0} | 1.00 |",
        f.added,
        f.added as f64 / direct
    );
    println!(
        "| backfill, {} markets, empty tape | {} added of {} listed | {} | {took:.2} | {:.0} | {:.2} |",
        markets.len(),
        f.added,
        f.listed,
        f.requests,
        f.added as f64 / took,
        (f.added as f64 / took) / (f.added as f64 / direct)
    );
    println!(
        "| the same again (a sweep finding nothing) | {} added | {} | {again:.2} | | |",
        second.added, second.requests
    );
    println!(
        "sweep cost: {:.0} requests and {:.2} s per 1,000 markets (one window, {} trades listed)",
        second.requests as f64 * 1000.0 / markets.len() as f64,
        again * 1000.0 / markets.len() as f64,
        second.listed
    );
    Ok(())
}
