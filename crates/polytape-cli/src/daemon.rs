//! `polytape run`: migrations, market sync, the listener, periodic re-sync, the resolution
//! tracker, a one-line summary a minute, and health over HTTP, until told to stop.

use std::process::ExitCode;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use polytape::gamma::GammaClient;
use polytape::resolution::{ResolutionTracker, TrackerHandle};
use polytape::sync::{Shard, open_token_groups, sync_markets};
use polytape::{Config, Listener, ListenerHandle, StopSignal};
use polytape_http::{Request, Response, serve_requests_with_priority};

/// Everything `polytape run` needs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The library's configuration: database, feed, Gamma, batching, resolution.
    pub listener: Config,
    /// Where to serve `/health`, `/livez`, `/readyz`, `/metrics`; `None` turns it off.
    pub health_addr: Option<String>,
    pub sync_interval: Duration,
    pub summary_interval: Duration,
    /// `/readyz` fails once the writer has been without the database this long.
    pub readiness_grace: Duration,
    /// Hold only this shard of the markets.
    pub shard: Option<Shard>,
}

/// The daemon's failures: the library's errors, and its own (a listener that ended on its
/// own, a health address it cannot serve on).
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A running daemon's moving parts, for the HTTP handlers.
struct State {
    listener: ListenerHandle,
    tracker: TrackerHandle,
    readiness_grace: Duration,
}

/// Runs until `shutdown` fires, then stops within the configured deadline, or at once when
/// `hurry` fires too. Exit status 0 for a stop, 2 for a hurried one (what was not committed
/// is in the spool; the log says how much and where).
pub fn run(config: DaemonConfig, shutdown: StopSignal, hurry: StopSignal) -> Result<ExitCode> {
    let lc = &config.listener;
    log::info!(
        "polytape {}: database {}, feed {}, gamma {}",
        env!("CARGO_PKG_VERSION"),
        polytape::store::redact(lc.database_url()),
        lc.ws_url(),
        lc.gamma_url()
    );
    let applied = polytape::store::migrate(lc)?;
    log::info!("migrations: {applied} applied");
    let mut db = polytape::store::connect(lc)?;
    // This month's partition and the next two; the slow part of maintenance (rebuilding a
    // past month's index) runs after the first re-sync, off the start path.
    if let Err(e) = polytape::store::tape::prepare(&mut db, chrono::Utc::now()) {
        log::warn!(
            "tape: cannot make the next months' partitions yet ({e}); trades go to the default partition meanwhile"
        );
    }
    let gamma = GammaClient::new(lc);
    match sync_markets(&mut db, &gamma) {
        Ok(r) => log::info!(
            "market sync: {} open markets over {} pages, {} skipped (unknown version {}, malformed {})",
            r.open_markets,
            r.pages,
            r.skipped_unknown_version + r.skipped_malformed,
            r.skipped_unknown_version,
            r.skipped_malformed
        ),
        // Without Gamma we can still hold what the table has; the next sync tries again.
        Err(e) => log::error!("market sync failed, using the markets already stored: {e}"),
    }
    let groups = open_token_groups(&mut db, config.shard)?;
    drop(db);
    let tracker = ResolutionTracker::new(lc);
    let tracker_handle = tracker.handle();
    // New markets are subscribed as the feed announces them, resolutions checked as they
    // are announced; the re-sync and the tracker's rounds catch whatever is missed.
    let listener = Listener::new(lc.clone(), groups)?
        .wait_for_markets()
        .follow_markets(config.shard, Some(tracker_handle.clone()));
    // The book tape's files are Parquet, written by the `archive` feature's code.
    #[cfg(feature = "archive")]
    let listener = listener.book_tape_finisher(std::sync::Arc::new(crate::book_tape::ParquetTape));
    let handle = listener.handle();
    let listener_thread = spawn("polytape-listener", move || listener.run())?;

    let aux_stop = StopSignal::new();
    let tracker_thread = spawn("polytape-resolver", move || tracker.run())?;
    let sync_thread = {
        let (stop, handle, config) = (aux_stop.clone(), handle.clone(), config.clone());
        spawn("polytape-sync", move || {
            resync_loop(&stop, &handle, &config)
        })?
    };
    let summary_thread = {
        let (stop, handle, every) = (aux_stop.clone(), handle.clone(), config.summary_interval);
        spawn("polytape-summary", move || {
            summary_loop(&stop, &handle, every)
        })?
    };
    let state = Arc::new(State {
        listener: handle.clone(),
        tracker: tracker_handle.clone(),
        readiness_grace: config.readiness_grace,
    });
    let mut server = match config.health_addr.as_deref() {
        Some(addr) => {
            let state = Arc::clone(&state);
            let server =
                serve_requests_with_priority(addr, "polytape-http", &["/livez"], move |req| {
                    handle_http(&state, req)
                })
                .map_err(|e| format!("cannot serve health on {addr}: {e}"))?;
            log::info!("health on http://{}", server.addr());
            Some(server)
        }
        None => None,
    };

    // Wait for the signal, or for the listener to end on its own (it should not: that is a
    // failure, and the process exits non-zero so a supervisor restarts it).
    let mut failed = false;
    while !shutdown.wait_timeout(Duration::from_millis(200)) {
        if listener_thread.is_finished() {
            log::error!("the listener ended on its own");
            failed = true;
            break;
        }
    }
    let started = Instant::now();
    log::info!("stopping: closing sockets, draining the channel, writing every trade");
    aux_stop.stop();
    tracker_handle.stop();
    // The graceful stop runs on its own thread, so a second signal can cut it short.
    let stopping = {
        let handle = handle.clone();
        spawn("polytape-stop", move || handle.stop())?
    };
    while !stopping.is_finished() {
        if hurry.wait_timeout(Duration::from_millis(50)) {
            handle.stop_within(Duration::ZERO);
            break;
        }
    }
    let snapshot = stopping
        .join()
        .map_err(|_| "the stopping thread panicked")?;
    let listener_result = listener_thread.join();
    for t in [sync_thread, summary_thread, tracker_thread] {
        let _ = t.join();
    }
    if let Some(s) = server.as_mut() {
        s.shutdown();
    }
    log::info!(
        "stopped in {} ms: {} trades received, {} inserted, {} duplicates, {} rejected, {} spooled",
        started.elapsed().as_millis(),
        snapshot.trades_received,
        snapshot.trades_inserted,
        snapshot.duplicates_skipped,
        snapshot.rows_rejected,
        snapshot.trades_spooled
    );
    if snapshot.spool_bytes > 0 {
        log::warn!(
            "left {} bytes in the spool at {} (replayed at the next start)",
            snapshot.spool_bytes,
            lc.spool_dir().display()
        );
    }
    if snapshot.trades_unkept > 0 {
        log::error!(
            "{} trades could be neither committed nor spooled (the spool was full)",
            snapshot.trades_unkept
        );
    }
    match listener_result {
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err("the listener thread panicked".into()),
        Ok(Ok(_)) if failed => Err("the listener ended on its own".into()),
        Ok(Ok(_)) if hurry.is_stopped() => Ok(ExitCode::from(2)),
        Ok(Ok(_)) => Ok(ExitCode::SUCCESS),
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    Ok(std::thread::Builder::new().name(name.into()).spawn(f)?)
}

/// Every `every`: sync markets from Gamma, then hand the listener the new open set.
fn resync_loop(stop: &StopSignal, handle: &ListenerHandle, config: &DaemonConfig) {
    let lc = &config.listener;
    let gamma = GammaClient::new(lc);
    while !stop.wait_timeout(config.sync_interval) {
        let result = polytape::store::connect(lc).and_then(|mut db| {
            let report = sync_markets(&mut db, &gamma)?;
            let groups = open_token_groups(&mut db, config.shard)?;
            Ok((report, groups, db))
        });
        match result {
            Ok((report, groups, mut db)) => {
                log::info!(
                    "market re-sync: {} open markets, {} refreshed as closed",
                    report.open_markets,
                    report.refreshed
                );
                handle.set_markets(groups);
                // After the listener has its markets: a rebuild may take minutes.
                maintain_tape(&mut db);
            }
            Err(e) => log::warn!("market re-sync failed, will retry: {e}"),
        }
    }
}

/// The tape's partitions: the next months made ahead, a month that is over compacted. A
/// failure is logged and tried again at the next re-sync (the default partition takes any
/// trade whose month is missing meanwhile).
fn maintain_tape(db: &mut postgres::Client) {
    match polytape::store::tape::maintain(db, chrono::Utc::now()) {
        Ok(m) if m.created > 0 || !m.compacted.is_empty() => log::info!(
            "tape: {} partitions made ahead, {} compacted",
            m.created,
            m.compacted.len()
        ),
        Ok(_) => {}
        Err(e) => log::warn!("tape maintenance failed, will retry: {e}"),
    }
}

/// One line every `every`: trades/s, connections, queue depth, reconnects.
fn summary_loop(stop: &StopSignal, handle: &ListenerHandle, every: Duration) {
    let mut last = handle.health();
    let mut at = Instant::now();
    while !stop.wait_timeout(every) {
        let now = handle.health();
        let secs = at.elapsed().as_secs_f64().max(0.001);
        log::info!(
            "summary: {:.1} trades/s inserted, {} connections up of {}, queue {}, {} reconnects, {} parse errors, {} db errors",
            (now.trades_inserted - last.trades_inserted) as f64 / secs,
            now.connections_active,
            now.connections.len(),
            now.queue_depth,
            now.reconnections - last.reconnections,
            now.parse_errors,
            now.db_errors
        );
        last = now;
        at = Instant::now();
    }
}

fn handle_http(state: &State, req: &Request) -> Response {
    if req.method != "GET" {
        return Response::text(405, "only GET\n");
    }
    match req.path.as_str() {
        "/livez" => Response::text(200, "ok\n"),
        "/health" => {
            let mut body = match serde_json::to_value(state.listener.health()) {
                Ok(v) => v,
                Err(e) => return Response::text(500, format!("{e}\n")),
            };
            body["resolution"] = serde_json::to_value(state.tracker.health()).unwrap_or_default();
            Response::json(200, &body)
        }
        "/readyz" => match state.listener.health().not_ready(state.readiness_grace) {
            Some(why) => Response::text(503, format!("not ready: {why}\n")),
            None => Response::text(200, "ready\n"),
        },
        "/metrics" => Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            state
                .listener
                .health()
                .to_prometheus_with(state.readiness_grace),
        ),
        _ => Response::text(404, "not found\n"),
    }
}
