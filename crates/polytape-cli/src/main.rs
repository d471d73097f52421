//! `polytape`: record every Polymarket trade into PostgreSQL.
//!
//! Thin: parse the command line ([`cli`]), set up logging and signals, call the library.

mod cli;
mod daemon;
mod status;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use polytape::StopSignal;
use polytape::gamma::GammaClient;
use polytape::resolution::ResolutionTracker;

use cli::{Cli, Command, Common, RunArgs};

/// The command's failures: the library's errors and its own.
pub(crate) type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Migrate => migrate(&cli.common),
        Command::SyncMarkets => sync(&cli.common),
        Command::Run(ref args) => run(&cli.common, args),
        Command::Status => status::status(&cli.common),
        Command::Resolve => resolve(&cli.common),
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

fn resolve(common: &Common) -> Result {
    let tracker = ResolutionTracker::new(&common.config()?);
    let r = tracker.round()?;
    println!(
        "asked about {} markets: {} winners, {} splits, {} unresolved",
        r.asked, r.winners, r.splits, r.unresolved
    );
    Ok(())
}

fn run(common: &Common, args: &RunArgs) -> Result {
    // Signals first, before any thread exists. The first SIGINT/SIGTERM asks for a graceful
    // stop; a second one exits at once with status 2.
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 2, Arc::clone(&term))?;
        signal_hook::flag::register(sig, Arc::clone(&term))?;
    }
    let config = args.daemon_config(common)?;
    let shutdown = StopSignal::new();
    let watcher = shutdown.clone();
    std::thread::Builder::new()
        .name("polytape-signals".into())
        .spawn(move || {
            while !term.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            log::info!("signal received: stopping gracefully (a second signal exits at once)");
            watcher.stop();
        })?;
    daemon::run(config, shutdown)?;
    Ok(())
}
