//! Market announcements on the feed (its "custom features"): `new_market` gets a market
//! fetched from Gamma, stored and subscribed within seconds instead of at the next re-sync;
//! `market_resolved` gets a resolution check of that market now.
//!
//! Both are hints. The event alone never writes a market or a winner: Gamma is asked, and
//! what Gamma says is stored (`market_resolved` arrives about a minute after Gamma closes a
//! market, sometimes never, and is not replayed after a reconnect). The periodic re-sync and
//! the resolution tracker's rounds stay the safety net for every announcement missed.
//!
//! Every socket receives the same broadcast, so each announcement arrives once per
//! connection: the follower keeps what it handled recently and acts once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::feed::Announcement;
use crate::gamma::GammaClient;
use crate::resolution::TrackerHandle;
use crate::stop::StopSignal;
use crate::store::markets::Shard;

/// An announcement handled this recently is a repeat (one copy per connection).
const REPEAT_WINDOW: Duration = Duration::from_secs(600);
/// Announcements arriving this close together are handled together (one Gamma request,
/// one re-plan of the connections).
const GATHER: Duration = Duration::from_millis(200);
/// A new market Gamma does not list yet is asked about again this many times (backing
/// off from 1 s), then left to the re-sync.
const NEW_MARKET_TRIES: u32 = 6;

/// Where the listener's announcements go.
pub(crate) struct Follower {
    config: Config,
    gamma: GammaClient,
    shard: Option<Shard>,
    resolver: Option<TrackerHandle>,
    /// Hands the new open set to the listener (its `set_markets`).
    subscribe: Box<dyn Fn(Vec<Vec<String>>) + Send>,
    seen: HashMap<Announcement, Instant>,
    /// New markets Gamma did not list yet: (condition id, tries, next try).
    pending: Vec<(String, u32, Instant)>,
}

impl Follower {
    pub(crate) fn new(
        config: &Config,
        shard: Option<Shard>,
        resolver: Option<TrackerHandle>,
        subscribe: impl Fn(Vec<Vec<String>>) + Send + 'static,
    ) -> Self {
        Follower {
            config: config.clone(),
            gamma: GammaClient::new(config),
            shard,
            resolver,
            subscribe: Box::new(subscribe),
            seen: HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// Handles announcements until `stop` (or until every connection is gone).
    pub(crate) fn run(mut self, rx: Receiver<Announcement>, stop: StopSignal) {
        loop {
            if stop.is_stopped() {
                return;
            }
            let first = match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(a) => Some(a),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch: Vec<Announcement> = first.into_iter().collect();
            if !batch.is_empty() {
                let until = Instant::now() + GATHER;
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    match rx.recv_timeout(left) {
                        Ok(a) => batch.push(a),
                        Err(_) => break,
                    }
                }
            }
            self.handle(batch);
        }
    }

    fn handle(&mut self, batch: Vec<Announcement>) {
        let now = Instant::now();
        self.seen
            .retain(|_, at| now.duration_since(*at) < REPEAT_WINDOW);
        let mut new_markets = Vec::new();
        let mut resolved = Vec::new();
        for a in batch {
            if self.seen.insert(a.clone(), now).is_some() {
                continue; // the same broadcast, from another connection
            }
            match a {
                Announcement::NewMarket(id) => new_markets.push(id),
                Announcement::Resolved(id) => resolved.push(id),
            }
        }
        // New markets Gamma did not know at the last try, if their time has come.
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(_, _, at)| *at <= now);
        self.pending = later;
        let mut tries: HashMap<String, u32> = due.into_iter().map(|(id, n, _)| (id, n)).collect();
        new_markets.extend(tries.keys().cloned());
        new_markets.sort();
        new_markets.dedup();
        if !new_markets.is_empty() {
            log::info!(
                "announced: {} new markets; fetching them from Gamma",
                new_markets.len()
            );
            if let Err(e) = self.add_markets(&new_markets, &mut tries) {
                log::warn!("announced markets: {e}; the next re-sync will add them");
            }
        }
        if !resolved.is_empty() {
            log::info!(
                "announced: {} markets resolved; checking with Gamma",
                resolved.len()
            );
            if let Some(resolver) = &self.resolver {
                resolver.check_now(resolved);
            }
        }
    }

    /// Fetches the markets, stores them, and hands the listener the new open set (from the
    /// table, in this listener's shard: the same rule as a re-sync).
    fn add_markets(
        &mut self,
        ids: &[String],
        tries: &mut HashMap<String, u32>,
    ) -> crate::Result<()> {
        let markets = self.gamma.markets_by_condition_ids(ids, false)?;
        let mut rows = Vec::new();
        for m in &markets {
            if let Ok(row) = m.to_row() {
                rows.push(row);
            }
        }
        let listed: std::collections::HashSet<&str> =
            rows.iter().map(|r| r.condition_id.as_str()).collect();
        for id in ids.iter().filter(|id| !listed.contains(id.as_str())) {
            let n = tries.get(id).copied().unwrap_or(0) + 1;
            if n < NEW_MARKET_TRIES {
                let wait = Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).delay(n);
                self.pending.push((id.clone(), n, Instant::now() + wait));
            } else {
                log::info!("announced market {id}: not on Gamma yet; left to the re-sync");
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut db = crate::store::connect(&self.config)?;
        crate::store::markets::upsert_markets(&mut db, &rows)?;
        let groups = crate::store::markets::active_token_groups_in(&mut db, self.shard)?;
        log::info!("announced: {} markets stored; subscribing", rows.len());
        (self.subscribe)(groups);
        Ok(())
    }
}
