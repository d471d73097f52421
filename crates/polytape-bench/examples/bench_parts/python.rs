//! The `python` section (issue 20): polytape against the same design in Python
//! (`bench/python_design.py`: asyncio + websockets + asyncpg COPY) on the live mix (50 book
//! events a trade), the same simulator settings, the same machine, one run: CPU per trade
//! and trades/s. polytape twice: the book side off (trades only), and on (books checked,
//! snapshots, price bars). Python: `BENCH_PYTHON` (an interpreter with asyncpg and
//! websockets), else `python3`; skipped when it cannot import them.

use std::process::Command;
use std::time::{Duration, Instant};

use polytape::Listener;

use super::{
    BenchDb, Result, RunEnd, SimProcess, by_thread, cpu_seconds, cpu_seconds_by_thread, prepare,
};

fn sim(n: u64) -> Result<SimProcess> {
    SimProcess::start_with_noise(
        50,
        &[
            "--markets",
            "2300",
            "--trade-rate",
            "100000000",
            "--max-trades",
            &n.to_string(),
            "--idle-noise-ms",
            "1000",
            "--block-on-slow-sockets",
            "--start-when-subscribed",
        ],
    )
}

/// (trades stored, wall seconds, CPU seconds) of polytape over `n` trades.
fn polytape_run(server: &str, n: u64, books: bool) -> Result<(u64, f64, f64)> {
    let sim = sim(n)?;
    let db = BenchDb::new(server, "polytape_bench_python_cmp")?;
    let config = prepare(&db, &sim)?
        .to_builder()
        .book_snapshot_interval(if books {
            Duration::from_secs(300)
        } else {
            Duration::ZERO
        })
        .build()?;
    let listener = Listener::from_database(config)?;
    let health = listener.health();
    let handle = listener.handle();
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let worker = std::thread::spawn(move || listener.run());
    let mut end = RunEnd::new(n);
    loop {
        if end.reached(&sim.stats()?, health.snapshot().trades_inserted) {
            break;
        }
        if started.elapsed() > Duration::from_secs(900) {
            return Err("polytape did not finish in 15 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    // Where it went (the threads are still there; they started with the run).
    println!(
        "polytape, book side {}: CPU by thread: {}",
        if books { "on" } else { "off" },
        by_thread(cpu_seconds_by_thread())
    );
    let stored = handle.stop().trades_inserted;
    let _ = worker.join();
    Ok((stored, wall, cpu))
}

/// (trades stored, wall seconds, CPU seconds) of the `polytape run` daemon as shipped, with
/// books, snapshots, bars and the Parquet book tape on (rolling every 5 s, so files are
/// written within the run), over `n` trades. Its CPU is the whole process's from its start
/// (the Gamma sync and migrations included, a fraction of a second here).
fn daemon_run(server: &str, n: u64) -> Result<(u64, f64, f64)> {
    use std::process::{Command, Stdio};
    let sim = sim(n)?;
    let db = BenchDb::new(server, "polytape_bench_python_cmp")?;
    let addr = super::books::free_addr()?;
    let dir = std::env::temp_dir().join(format!("polytape-bench-python-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = super::books::daemon(&db, &sim, &addr, &dir)?
        .env("POLYTAPE_BOOK_TAPE_DIR", dir.join("tape"))
        .env("POLYTAPE_BOOK_SNAPSHOT_SECS", "300")
        .env("POLYTAPE_BOOK_TAPE_ROLL_SECS", "5")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id().to_string();
    let started = Instant::now();
    let mut end = RunEnd::new(n);
    let stored = loop {
        let inserted = super::books::health(&addr)
            .ok()
            .and_then(|h| h["trades_inserted"].as_u64())
            .unwrap_or(0);
        if end.reached(&sim.stats()?, inserted) {
            break inserted;
        }
        if started.elapsed() > Duration::from_secs(900) {
            let _ = child.kill();
            return Err("the daemon did not finish in 15 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = started.elapsed().as_secs_f64();
    // The daemon is charged for every row's file: the run goes on, with no more trades,
    // until the file of the period the last trade fell in is made (its grace for late rows
    // past, then compressed), a few seconds of an otherwise idle daemon. A stop would leave
    // that period to the next start.
    let traded_until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let filed = Instant::now();
    let last_file_made = || -> Result<bool> {
        let made: i64 = db
            .client()?
            .query_one(
                "SELECT count(*) FROM book_files
                 WHERE extract(epoch FROM period_end)::float8 >= $1",
                &[&traded_until],
            )?
            .get(0);
        Ok(made > 0)
    };
    loop {
        match last_file_made() {
            Ok(true) => break,
            Ok(false) if filed.elapsed() < Duration::from_secs(60) => {}
            other => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the last tape file was not made: {other:?}").into());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu = super::cpu_seconds_of(&pid);
    let health = super::books::health(&addr).ok();
    let field = |k: &str| health.as_ref().and_then(|h| h[k].as_u64()).unwrap_or(0);
    let (files, tape_rows) = (field("book_tape_files"), field("book_tape_rows"));
    println!(
        "polytape run with the Parquet tape: {files} tape files ({tape_rows} rows) written, the \
         last {:.1} s after the last trade; CPU by thread: {}",
        filed.elapsed().as_secs_f64(),
        by_thread(super::cpu_seconds_by_thread_of(&pid))
    );
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok((stored, wall, cpu))
}

fn python_run(server: &str, n: u64, python: &str) -> Result<(u64, f64, f64)> {
    let sim = sim(n)?;
    let db = BenchDb::new(server, "polytape_bench_python_cmp")?;
    prepare(&db, &sim)?;
    // asyncpg takes a URL.
    let kv: std::collections::HashMap<&str, &str> = db
        .url()
        .leak()
        .split_whitespace()
        .filter_map(|p| p.split_once('='))
        .collect();
    let dsn = format!(
        "postgresql://{}@{}:{}/{}",
        kv.get("user").unwrap_or(&"postgres"),
        kv.get("host").unwrap_or(&"127.0.0.1"),
        kv.get("port").unwrap_or(&"5432"),
        kv.get("dbname").unwrap_or(&"postgres")
    );
    let out = Command::new(python)
        .args([
            "bench/python_design.py",
            &dsn,
            &format!("ws://{}/ws/market", sim.addr),
            &n.to_string(),
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("PYTHON "))
        .ok_or_else(|| format!("python: {}", String::from_utf8_lossy(&out.stderr)))?;
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    Ok((field("trades=") as u64, field("seconds="), field("cpu=")))
}

pub(crate) fn python(server: &str, n: u64) -> Result {
    let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let can = Command::new(&python)
        .args(["-c", "import asyncpg, websockets"])
        .status()
        .is_ok_and(|s| s.success());
    println!("\n## polytape against the same design in Python, live mix, {n} trades");
    let off = polytape_run(server, n, false)?;
    let on = polytape_run(server, n, true)?;
    let daemon = daemon_run(server, n)?;
    let show = |name: &str, (t, w, c): (u64, f64, f64)| {
        println!(
            "{name}: {t} trades in {w:.1} s = {:.0} trades/s; CPU {c:.1} s = {:.1} CPU µs a trade",
            t as f64 / w,
            c / t.max(1) as f64 * 1e6
        );
    };
    show("polytape, book side off", off);
    show("polytape, book side on (books, snapshots, bars)", on);
    show(
        "polytape run (the daemon: books, snapshots, bars and the Parquet tape)",
        daemon,
    );
    if !can {
        println!(
            "python: skipped ({python} cannot import asyncpg and websockets; set BENCH_PYTHON)"
        );
        return Ok(());
    }
    let py = python_run(server, n, &python)?;
    show("python (asyncio + websockets + asyncpg)", py);
    let per = |(t, _, c): (u64, f64, f64)| c / t.max(1) as f64;
    println!(
        "CPU a trade, python / polytape: {:.1}× with the book side off; {:.1}× with it on; {:.1}× for the daemon with the Parquet tape",
        per(py) / per(off),
        per(py) / per(on),
        per(py) / per(daemon)
    );
    Ok(())
}
