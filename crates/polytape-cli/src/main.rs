//! `polytape`: record every Polymarket trade into PostgreSQL.
//!
//! Thin: parse the command line ([`cli`]), set up logging and signals, call the library.

mod audit;
#[cfg(feature = "archive")]
mod book_tape;
mod cli;
mod daemon;
mod prices;
mod report;
mod status;
mod tape;
mod verify;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use polytape::StopSignal;
use polytape::gamma::GammaClient;
use polytape::resolution::ResolutionTracker;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use cli::{BackfillArgs, Cli, Command, Common, RunArgs};

/// The command's failures: the library's errors and its own.
pub(crate) type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Migrate => migrate(&cli.common),
        Command::SyncMarkets => sync(&cli.common),
        Command::Run(ref args) => match run(&cli.common, args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Status => status::status(&cli.common),
        Command::Resolve => resolve(&cli.common),
        Command::Backfill(ref args) => backfill(&cli.common, args),
        Command::Audit(ref args) => audit::audit(&cli.common, args),
        Command::Verify(ref args) => verify::verify(&cli.common, args),
        Command::Prices(ref args) => prices::prices(&cli.common, args),
        Command::Report(ref args) => report::report(&cli.common, args),
        #[cfg(feature = "archive")]
        Command::Archive(ref args) => tape::archive(&cli.common, args),
        Command::Retention(ref args) => tape::retention(&cli.common, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("polytape: {e}");
            ExitCode::FAILURE
        }
    }
}

fn migrate(common: &Common) -> Result {
    let applied = polytape::store::migrate(&common.config()?)?;
    println!("migrations applied: {applied}");
    Ok(())
}

fn sync(common: &Common) -> Result {
    let config = common.config()?;
    polytape::store::migrate(&config)?;
    let mut db = polytape::store::connect(&config)?;
    let report = polytape::sync::sync_markets(&mut db, &GammaClient::new(&config))?;
    println!(
        "synced {} open markets over {} pages ({} listed, {} rows written, {} refreshed as closed, skipped: {} unknown version, {} malformed)",
        report.open_markets,
        report.pages,
        report.listed,
        report.upserted,
        report.refreshed,
        report.skipped_unknown_version,
        report.skipped_malformed
    );
    Ok(())
}

fn backfill(common: &Common, args: &BackfillArgs) -> Result {
    let config = common.config()?;
    polytape::store::migrate(&config)?;
    let until = args
        .until
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    if args.from_chain {
        let load = polytape::chain::history(&config, &args.markets, args.all, args.since)?;
        println!(
            "backfill --from-chain: {} blocks, {} fills, {} added ({} already in the tape, {} \
             mismatched), {} requests ({:.1} per 1,000 fills), {:.1} s ({:.0} fills/s)",
            load.blocks,
            load.fills,
            load.added,
            load.fills - load.added - load.mismatched,
            load.mismatched,
            load.requests,
            load.requests as f64 * 1000.0 / (load.fills.max(1) as f64),
            load.seconds,
            load.fills as f64 / load.seconds.max(0.001)
        );
        return Ok(());
    }
    let started = std::time::Instant::now();
    let f = polytape::backfill::history(&config, &args.markets, args.since, until)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "backfill: {} trades listed by the Data API, {} added ({} already in the tape), {} requests, {:.1} s ({:.0} trades/s)",
        f.listed,
        f.added,
        f.listed - f.added,
        f.requests,
        secs,
        f.listed as f64 / secs.max(0.001)
    );
    Ok(())
}

fn resolve(common: &Common) -> Result {
    let tracker = ResolutionTracker::new(&common.config()?);
    let r = tracker.round()?;
    println!(
        "asked about {} markets: {} winners, {} splits, {} unresolved; {} waiting to be asked again",
        r.asked, r.winners, r.splits, r.unresolved, r.waiting
    );
    for (reason, n) in &r.waiting_reasons {
        println!("  {n} waiting: {reason}");
    }
    Ok(())
}

fn run(common: &Common, args: &RunArgs) -> Result<ExitCode> {
    // Signals first, before any thread exists. The first SIGINT/SIGTERM asks for a graceful
    // stop (everything committed, or spooled once the stop deadline passes); a second one
    // asks for it now: what is not committed goes to the spool, and the exit status is 2.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let config = args.daemon_config(common)?;
    let shutdown = StopSignal::new();
    let hurry = StopSignal::new();
    {
        let (shutdown, hurry) = (shutdown.clone(), hurry.clone());
        std::thread::Builder::new()
            .name("polytape-signals".into())
            .spawn(move || {
                let mut received = 0;
                for _ in signals.forever() {
                    received += 1;
                    if received == 1 {
                        log::info!(
                            "signal received: stopping gracefully (a second signal stops at once)"
                        );
                        shutdown.stop();
                    } else {
                        log::warn!(
                            "second signal: stopping now; what is not committed goes to the spool"
                        );
                        hurry.stop();
                        // The spool append is durable record by record: if stopping still
                        // hangs (a socket stuck in a system call), leave anyway.
                        std::thread::sleep(Duration::from_secs(3));
                        log::error!("second signal: not stopped after 3 s; exiting now");
                        std::process::exit(2);
                    }
                }
            })?;
    }
    let outcome = daemon::run(config, shutdown, hurry)?;
    Ok(outcome)
}
