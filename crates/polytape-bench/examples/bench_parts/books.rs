//! The `books` section (issue 18): the `polytape run` daemon, as shipped, against the
//! simulator's live mix (~50 book events a trade) over 20,000 markets (40,000 tokens'
//! books), twice in one run: the book side off (`POLYTAPE_BOOK_SNAPSHOT_SECS=0`, the
//! baseline), then on with snapshots every 60 s and the Parquet tape rolling every 20 s.
//! CPU and RSS are the daemon process's own (`/proc`); book events, snapshots and the tape's
//! rows and bytes come from its `/health`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{BenchDb, Result, SimProcess, cpu_seconds_of};

/// About 88% of the simulator's markets are open and of a known version: 22,800 markets
/// hold ~40,000 tokens.
const MARKETS: &str = "22800";

struct Phase {
    cpu_pct: f64,
    rss: String,
    book_events_per_s: f64,
    trades_per_s: f64,
    health: serde_json::Value,
}

pub(crate) fn health(addr: &str) -> Result<serde_json::Value> {
    let body = ureq::get(&format!("http://{addr}/health"))
        .call()?
        .body_mut()
        .read_to_string()?;
    Ok(serde_json::from_str(&body)?)
}

fn rss_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l["VmRSS:".len()..].trim().to_owned())
        .unwrap_or_default()
}

pub(crate) fn free_addr() -> Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string())
}

pub(crate) fn polytape_bin() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("polytape"))
        .ok_or("no target dir")?)
}

/// `polytape run` against `sim`, storing into `db`, its health on `addr`, its spool in `dir`.
pub(crate) fn daemon(
    db: &BenchDb,
    sim: &SimProcess,
    addr: &str,
    dir: &std::path::Path,
) -> Result<Command> {
    let mut cmd = Command::new(polytape_bin()?);
    cmd.arg("run")
        .env("DATABASE_URL", db.url())
        .env("POLYTAPE_WS_URL", format!("ws://{}/ws/market", sim.addr))
        .env("POLYTAPE_GAMMA_URL", format!("http://{}", sim.addr))
        .env("POLYTAPE_DATA_API_URL", format!("http://{}", sim.addr))
        .env("POLYTAPE_HEALTH_ADDR", addr)
        .env("POLYTAPE_SPOOL_DIR", dir.join("spool"));
    Ok(cmd)
}

fn phase(server: &str, sim: &SimProcess, on: bool, window: Duration) -> Result<Phase> {
    let db = BenchDb::new(
        server,
        if on {
            "polytape_bench_books_on"
        } else {
            "polytape_bench_books_off"
        },
    )?;
    let addr = free_addr()?;
    let dir =
        std::env::temp_dir().join(format!("polytape-bench-books-{}-{on}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cmd = daemon(&db, sim, &addr, &dir)?;
    if on {
        cmd.env("POLYTAPE_BOOK_TAPE_DIR", dir.join("tape"));
    }
    let mut child: Child = cmd
        .env("POLYTAPE_BOOK_SNAPSHOT_SECS", if on { "60" } else { "0" })
        .env("POLYTAPE_BOOK_TAPE_ROLL_SECS", "20")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let started = Instant::now();
    loop {
        // Every connection up (the open markets' tokens at 500 a socket).
        if let Ok(h) = health(&addr)
            && let Some(conns) = h["connections"].as_array()
            && !conns.is_empty()
            && h["connections_active"].as_u64() == Some(conns.len() as u64)
            && h["trades_inserted"].as_u64().unwrap_or(0) > 0
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            return Err("the daemon did not subscribe every socket in 180 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let subscribed_in = started.elapsed();
    // Let the initial books settle before measuring.
    std::thread::sleep(Duration::from_secs(5));
    let h0 = health(&addr)?;
    let cpu0 = cpu_seconds_of(&pid.to_string());
    let t0 = Instant::now();
    std::thread::sleep(window);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds_of(&pid.to_string()) - cpu0;
    let h1 = health(&addr)?;
    let rss = rss_of(pid);
    let d = |k: &str| {
        h1[k]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(h0[k].as_u64().unwrap_or(0)) as f64
    };
    let p = Phase {
        cpu_pct: cpu / secs * 100.0,
        rss,
        book_events_per_s: d("book_events") / secs,
        trades_per_s: d("trades_inserted") / secs,
        health: h1,
    };
    let tokens: u64 = p.health["connections"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["tokens"].as_u64()).sum())
        .unwrap_or(0);
    println!(
        "book side {}: {tokens} tokens, {} books held; subscribed in {:.1} s; {:.0} book events/s, {:.0} trades/s; CPU {:.1}% of one core; RSS {}",
        if on { "on " } else { "off" },
        p.health["books_held"],
        subscribed_in.as_secs_f64(),
        p.book_events_per_s,
        p.trades_per_s,
        p.cpu_pct,
        p.rss
    );
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    if on {
        let h = health_after(&db)?;
        println!("{h}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(p)
}

/// Snapshot storage as the database has it after the run.
fn health_after(db: &BenchDb) -> Result<String> {
    let mut c = db.client()?;
    let row = c.query_one(
        "SELECT count(*), coalesce(sum(pg_column_size(s.*)), 0)::bigint,
                (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint
                 FROM pg_partition_tree('book_snapshot')),
                coalesce(avg(length(levels)), 0)::float8,
                coalesce(avg(array_length(l.bid_prices, 1) + array_length(l.ask_prices, 1)), 0)::float8
         FROM book_snapshot s CROSS JOIN LATERAL book_levels(s.levels) l",
        &[],
    )?;
    let (n, row_bytes, total, levels_bytes, levels): (i64, i64, i64, f64, f64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let files = c.query_one(
        "SELECT count(*), coalesce(sum(rows), 0)::bigint, coalesce(sum(bytes), 0)::bigint FROM book_files",
        &[],
    )?;
    let (nf, tape_rows, tape_bytes): (i64, i64, i64) = (files.get(0), files.get(1), files.get(2));
    let per_event = tape_bytes as f64 / tape_rows.max(1) as f64;
    let bars = c.query_one(
        "SELECT count(*), coalesce(sum(pg_column_size(b.*)), 0)::bigint,
                (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint
                 FROM pg_partition_tree('price_bar')),
                count(DISTINCT token)
         FROM price_bar b",
        &[],
    )?;
    let (nb, bar_bytes, bar_total, bar_tokens): (i64, i64, i64, i64) =
        (bars.get(0), bars.get(1), bars.get(2), bars.get(3));
    let bar_row = bar_bytes as f64 / nb.max(1) as f64;
    let bar_all_in = bar_total as f64 / nb.max(1) as f64;
    let bar_day_rows = 16_000.0 * 1440.0 / 1e6;
    let bar_day_gb = bar_all_in * 16_000.0 * 1440.0 / 1e9;
    let per_row = if n > 0 {
        row_bytes as f64 / n as f64
    } else {
        0.0
    };
    let all_in = if n > 0 { total as f64 / n as f64 } else { 0.0 };
    // A day of 16,000 tokens' snapshots every 5 minutes, at this row size, all in.
    let day = all_in * 16_000.0 * 288.0 / 1e9;
    Ok(format!(
        "price bars: {nb} rows for {bar_tokens} tokens, {bar_row:.0} bytes a row, {bar_all_in:.0} \
         all in; 16,000 tokens changing every minute: {bar_day_rows:.1} M rows, {bar_day_gb:.2} GB a day\n\
         book tape: {nf} files, {tape_rows} rows, {tape_bytes} bytes = {per_event:.2} bytes a book event\n\
         snapshots: {n} rows, {per_row:.0} bytes a row ({levels_bytes:.0} of levels for {levels:.1} levels), \
         {all_in:.0} bytes a row all in (indexes, pages); a day of 16,000 tokens every 5 min: {day:.2} GB"
    ))
}

pub(crate) fn books(server: &str) -> Result {
    let window = Duration::from_secs(
        std::env::var("BENCH_BOOKS_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    );
    // ~600 trades/s × (50 churns + the take and the book after it) ≈ 31,000 book events/s.
    let sim = SimProcess::start_with_noise(
        50,
        &[
            "--markets",
            MARKETS,
            "--trade-rate",
            "600",
            "--idle-noise-ms",
            "1000",
        ],
    )?;
    println!(
        "\n## books: the daemon on the live mix, 40,000 tokens' books, {} s windows",
        window.as_secs()
    );
    let off = phase(server, &sim, false, window)?;
    let on = phase(server, &sim, true, window)?;
    let rows = on.health["book_tape_rows"].as_u64().unwrap_or(0);
    let bytes = on.health["book_tape_bytes"].as_u64().unwrap_or(0);
    let files = on.health["book_tape_files"].as_u64().unwrap_or(0);
    println!(
        "book tape: {files} files finished while measuring, {bytes} bytes; rows appended {rows}"
    );
    println!(
        "book side on / off: CPU {:.1}% / {:.1}% of one core ({:+.1} points for {:.0} book events/s)",
        on.cpu_pct,
        off.cpu_pct,
        on.cpu_pct - off.cpu_pct,
        on.book_events_per_s
    );
    Ok(())
}
