//! Long-lived helper threads that outlive their own panics: the backfill, the sessions
//! keeper, the announcement follower. A panic there (a bug, bad data we did not foresee)
//! must not silently end every fill and sweep for the rest of the run: the body is started
//! again after a backoff, the restart counted (`threads_restarted`) and logged with the
//! panic's message. Connection threads have their own supervision (they carry a gap);
//! the writer's end stops the listener (nothing could be stored).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::health::Health;
use crate::stop::StopSignal;

/// Runs `body` on a thread named `polytape-{name}` until it returns; a panic starts it again
/// (1 s, doubling to a minute between tries) unless `stop` was given meanwhile.
pub(crate) fn spawn_supervised(
    name: &'static str,
    health: Health,
    stop: StopSignal,
    mut body: impl FnMut() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("polytape-{name}"))
        .spawn(move || {
            let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
            let mut attempt = 0;
            loop {
                let Err(panic) = catch_unwind(AssertUnwindSafe(&mut body)) else {
                    return;
                };
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                health.thread_restarted();
                if stop.is_stopped() {
                    log::error!("{name}: the thread panicked ({what}) while stopping");
                    return;
                }
                let wait = backoff.delay(attempt);
                attempt = attempt.saturating_add(1);
                log::error!(
                    "{name}: the thread panicked ({what}); starting it again in {} ms",
                    wait.as_millis()
                );
                if stop.wait_timeout(wait) {
                    return;
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn a_panicking_body_is_started_again_and_counted() {
        let health = Health::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        let thread = spawn_supervised("test", health.clone(), StopSignal::new(), move || {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("the first run fails");
            }
        })
        .expect("spawn");
        thread.join().expect("the supervisor itself never panics");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "run again after the panic");
        assert_eq!(health.snapshot().threads_restarted, 1);
    }

    #[test]
    fn a_stop_ends_the_retries() {
        let health = Health::new();
        let stop = StopSignal::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        let stopper = stop.clone();
        let thread = spawn_supervised("test", health.clone(), stop, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            stopper.stop();
            panic!("always");
        })
        .expect("spawn");
        thread.join().expect("joined");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
