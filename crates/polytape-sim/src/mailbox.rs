//! A bounded queue from the exchange to one socket's thread, whose reader parks as soon as it
//! finds the queue empty. crossbeam's channel spins and then yields before it parks: with
//! dozens of socket threads waiting on one generator at full speed, those yields were a
//! tenth of the simulator's CPU, taken from the two cores the client under test runs on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use parking_lot::{Condvar, Mutex};

struct Inner<T> {
    state: Mutex<State<T>>,
    /// Signalled when an item comes or the last sender goes.
    readable: Condvar,
    /// Signalled when an item is taken or the reader goes.
    writable: Condvar,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    senders: usize,
    reader: bool,
}

/// The sending side; cloned for each send made outside the exchange's lock.
pub(crate) struct Post<T> {
    inner: Arc<Inner<T>>,
}

/// The receiving side: one socket's thread.
pub(crate) struct Mailbox<T> {
    inner: Arc<Inner<T>>,
}

/// A queue of at most `capacity` items.
pub(crate) fn bounded<T>(capacity: usize) -> (Post<T>, Mailbox<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            reader: true,
        }),
        readable: Condvar::new(),
        writable: Condvar::new(),
        capacity: capacity.max(1),
    });
    (
        Post {
            inner: Arc::clone(&inner),
        },
        Mailbox { inner },
    )
}

impl<T> Post<T> {
    /// Sends `item`, waiting for room until `deadline` (`None`: as long as it takes). The
    /// item back when the reader is gone or the deadline passed.
    fn send_until(&self, item: T, deadline: Option<Instant>) -> Result<(), T> {
        let mut state = self.inner.state.lock();
        while state.reader && state.items.len() >= self.inner.capacity {
            match deadline {
                None => self.inner.writable.wait(&mut state),
                Some(d) => {
                    if self.inner.writable.wait_until(&mut state, d).timed_out() {
                        return Err(item);
                    }
                }
            }
        }
        if !state.reader {
            return Err(item);
        }
        state.items.push_back(item);
        drop(state);
        self.inner.readable.notify_one();
        Ok(())
    }

    /// Sends `item`, waiting for room as long as it takes; the item back when the reader is
    /// gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        self.send_until(item, None)
    }

    /// Sends `item`, waiting for room up to `timeout`.
    pub(crate) fn send_timeout(&self, item: T, timeout: Duration) -> Result<(), T> {
        self.send_until(item, Some(Instant::now() + timeout))
    }

    /// Sends `item` if there is room now.
    pub(crate) fn try_send(&self, item: T) -> Result<(), T> {
        self.send_until(item, Some(Instant::now()))
    }
}

impl<T> Clone for Post<T> {
    fn clone(&self) -> Post<T> {
        self.inner.state.lock().senders += 1;
        Post {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> Drop for Post<T> {
    fn drop(&mut self) {
        let last = {
            let mut state = self.inner.state.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.inner.readable.notify_all();
        }
    }
}

impl<T> Mailbox<T> {
    /// The next item, waiting up to `timeout`; `Disconnected` once it is empty and every
    /// sender is gone.
    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.inner.state.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                drop(state);
                self.inner.writable.notify_one();
                return Ok(item);
            }
            if state.senders == 0 {
                return Err(RecvTimeoutError::Disconnected);
            }
            if self
                .inner
                .readable
                .wait_until(&mut state, deadline)
                .timed_out()
                && state.items.is_empty()
            {
                return Err(RecvTimeoutError::Timeout);
            }
        }
    }

    /// The next item if one is waiting.
    pub(crate) fn try_recv(&self) -> Option<T> {
        let item = self.inner.state.lock().items.pop_front();
        if item.is_some() {
            self.inner.writable.notify_one();
        }
        item
    }
}

impl<T> Drop for Mailbox<T> {
    fn drop(&mut self) {
        self.inner.state.lock().reader = false;
        self.inner.writable.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_in_order_and_a_full_queue_waits_for_room() {
        let (tx, rx) = bounded(2);
        tx.send(1).expect("room");
        tx.send(2).expect("room");
        assert_eq!(tx.try_send(3), Err(3), "full");
        assert_eq!(
            tx.send_timeout(3, Duration::from_millis(20)),
            Err(3),
            "still full"
        );
        let writer = std::thread::spawn(move || tx.send(3).map(|()| tx));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        let tx = writer.join().expect("thread").expect("room came");
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(3));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(20)),
            Err(RecvTimeoutError::Timeout)
        );
        drop(tx);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(RecvTimeoutError::Disconnected),
            "every sender gone"
        );
    }

    #[test]
    fn a_reader_waiting_wakes_for_an_item_and_a_sender_for_the_readers_end() {
        let (tx, rx) = bounded::<u32>(1);
        let again = tx.clone();
        let reader = std::thread::spawn(move || rx.recv_timeout(Duration::from_secs(10)));
        // Most likely waiting by now (the test holds either way: an item sent first is
        // found at once).
        std::thread::sleep(Duration::from_millis(20));
        again.send(7).expect("a reader");
        assert_eq!(reader.join().expect("thread"), Ok(7));
        // The reader is gone: a send fails at once, even one waiting for room.
        assert_eq!(tx.send(8), Err(8));
        let (tx, rx) = bounded::<u32>(1);
        tx.send(1).expect("room");
        let blocked = std::thread::spawn(move || tx.send(2));
        // Most likely waiting for room by now (a send after the drop fails the same way).
        std::thread::sleep(Duration::from_millis(20));
        drop(rx);
        assert_eq!(blocked.join().expect("thread"), Err(2));
    }
}
