//! A stop flag that sleeping threads can wait on, so a stop wakes them at once instead of
//! after their sleep.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// A stop flag threads can sleep on: [`StopSignal::stop`] wakes every waiter at once. Cheap to clone; clones share the flag.
#[derive(Clone, Default)]
pub struct StopSignal {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl StopSignal {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the signal, waking every waiter.
    pub fn stop(&self) {
        let (lock, cvar) = &*self.inner;
        *lock.lock() = true;
        cvar.notify_all();
    }

    /// Whether the signal was given.
    pub fn is_stopped(&self) -> bool {
        *self.inner.0.lock()
    }

    /// Sleeps for `timeout` or until stopped; returns true when stopped.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.inner;
        let mut stopped = lock.lock();
        while !*stopped {
            if cvar.wait_until(&mut stopped, deadline).timed_out() {
                break;
            }
        }
        *stopped
    }
}
