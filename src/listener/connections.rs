//! The listener's connections: how tokens are split into chunks, and the threads that hold
//! them (started, restarted after a panic, moved to a new market set without reopening a
//! socket).

use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::error::Result;
use crate::feed::connection::{Command, Connection, ConnectionParts, Shared as ConnectionShared};
use crate::stop::StopSignal;

/// Splits market token groups into chunks of at most `max` tokens, keeping each market's
/// tokens together (a group larger than `max` is split, as nothing else can hold it).
/// Tokens seen before are skipped.
pub fn plan_chunks(groups: &[Vec<String>], max: usize) -> Vec<Vec<String>> {
    let max = max.max(1);
    let mut seen = HashSet::new();
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for group in groups {
        let group: Vec<String> = group
            .iter()
            .filter(|t| seen.insert(t.as_str()))
            .cloned()
            .collect();
        for part in group.chunks(max) {
            if current.len() + part.len() > max {
                chunks.push(std::mem::take(&mut current));
            }
            current.extend_from_slice(part);
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// How long a stop waits for connections to close politely before shutting their sockets.
const POLITE_CLOSE: Duration = Duration::from_secs(2);

/// A running connection, as the listener keeps it.
struct Slot {
    parts: ConnectionParts,
    thread: JoinHandle<()>,
}

/// The listener's running connections, one thread each.
pub(super) struct Connections {
    spawner: Spawner,
    slots: Vec<Slot>,
    /// Most tokens one connection holds.
    max_tokens: usize,
}

impl Connections {
    /// Starts one connection per chunk. Every connection's token list is kept in `registry`
    /// too (for gaps that cover them all, and resubscriptions).
    pub(super) fn start(
        shared: ConnectionShared,
        registry: Registry,
        chunks: Vec<Vec<String>>,
        max_tokens: usize,
    ) -> Result<Connections> {
        let mut connections = Connections {
            spawner: Spawner { shared, registry },
            slots: Vec::new(),
            max_tokens,
        };
        for chunk in chunks {
            let id = connections.slots.len();
            connections
                .slots
                .push(connections.spawner.spawn(id, chunk)?);
        }
        Ok(connections)
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Makes connection `id`'s thread panic (the supervision test).
    #[cfg(feature = "bench")]
    pub(super) fn crash(&self, id: usize) {
        if let Some(slot) = self.slots.get(id) {
            let _ = slot.parts.commands.send(Command::Panic);
        }
    }

    /// Stops every connection: `stop` is the signal they all watch. They close politely
    /// (their last trades still read) for a moment, then their sockets are shut down; every
    /// thread is joined. The channel's senders go with them.
    pub(super) fn stop(self, stop: &StopSignal) {
        stop.stop();
        let deadline = Instant::now() + POLITE_CLOSE;
        while self.slots.iter().any(|s| !s.thread.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for slot in &self.slots {
            if !slot.thread.is_finished() {
                slot.parts.unblock.shutdown();
            }
        }
        for slot in self.slots {
            let _ = slot.thread.join();
        }
    }

    /// Starts again every connection whose thread ended while the listener runs (a panic:
    /// nothing else ends one before a stop), with its tokens; they had no socket from its last
    /// data frame, which becomes a gap at the resubscription.
    pub(super) fn supervise(&mut self) {
        let health = &self.spawner.shared.health;
        for (id, slot) in self.slots.iter_mut().enumerate() {
            if !slot.thread.is_finished() {
                continue;
            }
            let tokens = slot.parts.tokens.lock().clone();
            let last = health.last_message_ms(id);
            let from_ms = if last > 0 {
                last
            } else {
                crate::health::now_ms()
            };
            log::error!(
                "listener: connection {id} ended unexpectedly; starting it again with its {} tokens",
                tokens.len()
            );
            match self.spawner.respawn(id, tokens, from_ms) {
                Ok(new) => {
                    let old = std::mem::replace(slot, new);
                    let _ = old.thread.join(); // finished: returns at once (with the panic)
                    health.connection_restarted();
                }
                Err(e) => log::error!("listener: cannot restart connection {id}: {e}"),
            }
        }
    }

    /// Moves the running connections to a new market set without reopening sockets.
    pub(super) fn apply(&mut self, groups: &[Vec<String>]) -> Result<()> {
        let max = self.max_tokens;
        let slots = &mut self.slots;
        let desired: HashSet<&str> = groups.iter().flatten().map(String::as_str).collect();
        let mut held: HashSet<String> = HashSet::new();
        let mut loads = Vec::with_capacity(slots.len());
        let mut removed_total = 0;
        for slot in slots.iter() {
            let tokens = slot.parts.tokens.lock().clone();
            let (keep, drop): (Vec<String>, Vec<String>) = tokens
                .into_iter()
                .partition(|t| desired.contains(t.as_str()));
            if !drop.is_empty() {
                removed_total += drop.len();
                let _ = slot.parts.commands.send(Command::Unsubscribe(drop));
            }
            loads.push(keep.len());
            held.extend(keep);
        }
        let mut fresh: Vec<Vec<String>> = Vec::new();
        let mut added_total = 0;
        for group in groups {
            let group: Vec<String> = group
                .iter()
                .filter(|t| !held.contains(*t))
                .cloned()
                .collect();
            if group.is_empty() {
                continue;
            }
            held.extend(group.iter().cloned());
            added_total += group.len();
            match loads.iter().position(|&n| n + group.len() <= max) {
                Some(i) => {
                    loads[i] += group.len();
                    let _ = slots[i].parts.commands.send(Command::Subscribe(group));
                }
                None => fresh.push(group),
            }
        }
        for chunk in plan_chunks(&fresh, max) {
            let id = slots.len();
            slots.push(self.spawner.spawn(id, chunk)?);
        }
        log::info!(
            "listener: market set updated: {added_total} tokens added, {removed_total} removed, \
             {} connections",
            slots.len()
        );
        Ok(())
    }
}

/// Every connection's token list (shared with the connection, which updates it).
pub(super) type Registry = Arc<Mutex<Vec<(Arc<Mutex<Vec<String>>>, Sender<Command>)>>>;

/// Starts connection threads, all sharing the listener's channel, health, stop and gate.
struct Spawner {
    shared: ConnectionShared,
    /// Every connection's token list, for gaps that cover them all.
    registry: Registry,
}

impl Spawner {
    fn spawn(&self, id: usize, tokens: Vec<String>) -> Result<Slot> {
        let (conn, parts) = Connection::new(id, tokens, self.shared.clone());
        self.registry
            .lock()
            .push((Arc::clone(&parts.tokens), parts.commands.clone()));
        Self::start(id, conn, parts)
    }

    /// A new thread for connection `id`, whose tokens had no socket since `from_ms`.
    fn respawn(&self, id: usize, tokens: Vec<String>, from_ms: i64) -> Result<Slot> {
        let (conn, parts) = Connection::new(id, tokens, self.shared.clone());
        let conn = conn.with_loss(from_ms, "connection thread ended unexpectedly");
        if let Some(entry) = self.registry.lock().get_mut(id) {
            *entry = (Arc::clone(&parts.tokens), parts.commands.clone());
        }
        Self::start(id, conn, parts)
    }

    fn start(id: usize, conn: Connection, parts: ConnectionParts) -> Result<Slot> {
        let thread = std::thread::Builder::new()
            .name(format!("polytape-conn-{id}"))
            .spawn(move || conn.run())?;
        Ok(Slot { parts, thread })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn chunks_of_two_from_five_tokens() {
        let groups: Vec<Vec<String>> = ["t1", "t2", "t3", "t4", "t5"]
            .iter()
            .map(|t| toks(&[t]))
            .collect();
        assert_eq!(
            plan_chunks(&groups, 2),
            vec![toks(&["t1", "t2"]), toks(&["t3", "t4"]), toks(&["t5"])]
        );
    }

    #[test]
    fn a_market_never_straddles_two_chunks() {
        let groups = vec![
            toks(&["a1", "a2"]),
            toks(&["b1", "b2"]),
            toks(&["c1", "c2"]),
        ];
        let chunks = plan_chunks(&groups, 3);
        assert_eq!(
            chunks,
            vec![
                toks(&["a1", "a2"]),
                toks(&["b1", "b2"]),
                toks(&["c1", "c2"])
            ]
        );
        let chunks = plan_chunks(&groups, 4);
        assert_eq!(
            chunks,
            vec![toks(&["a1", "a2", "b1", "b2"]), toks(&["c1", "c2"])]
        );
    }

    #[test]
    fn repeated_tokens_are_held_once() {
        let groups = vec![toks(&["a", "b"]), toks(&["b", "c"]), toks(&["a"])];
        assert_eq!(plan_chunks(&groups, 10), vec![toks(&["a", "b", "c"])]);
        assert!(plan_chunks(&[], 10).is_empty());
    }
}
