//! Test helpers: real databases, a real simulator, real sockets, and a watchdog so that no
//! network test can hang CI.

// `new()` here makes a database or a certificate: nothing a `Default` should do.
#![allow(clippy::new_without_default)]

pub mod books;
pub mod db;
pub mod pipeline;
pub mod tls_proxy;
pub mod watchdog;
pub mod ws;

use std::time::{Duration, Instant};

pub use db::TestDb;
pub use watchdog::Watchdog;

/// Polls `cond` until it holds or `timeout` passes; returns whether it held. Use this instead
/// of sleeping: it returns as soon as the condition is true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `command` to completion; panics with `what` and its standard error when it fails.
/// For the tools the helpers drive (initdb, pg_ctl, openssl): a failure there is a broken
/// test machine, said plainly.
pub fn run(command: &mut std::process::Command, what: &str) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run it: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new, empty folder for a disk spool, under the temporary directory, named after `name`.
pub fn spool_dir(name: &str) -> std::path::PathBuf {
    scratch_dir(&format!("spool-{name}"))
}

/// A path for a folder of this test's own under the temporary directory (unique to the
/// process and the call, named after `purpose`); nothing is there yet.
pub fn scratch_dir(purpose: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "polytape-{purpose}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Sends log output to the test harness's captured output, once.
pub fn init_logs() {
    let _ = env_logger::builder()
        .is_test(true)
        .filter_level(log::LevelFilter::Info)
        .parse_default_env()
        .try_init();
}
