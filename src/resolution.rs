//! Market outcomes: a winner inferred strictly from Gamma, never guessed.
//!
//! [`infer_winner`] is a pure function over one Gamma market. [`ResolutionTracker`] asks
//! Gamma about the closed markets we hold without a resolution, and records what it can
//! infer in `resolutions`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::error::Result;
use crate::feed::Decimal;
use crate::gamma::{GammaClient, GammaMarket, decode_string_list};
use crate::health::now_ms;
use crate::stop::StopSignal;

/// What a closed market's Gamma fields say about its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inference {
    /// Exactly one outcome priced "1", every other "0".
    Winner {
        /// Position of the winner in the market's outcomes.
        index: usize,
        /// The winning outcome's name.
        outcome: String,
        /// The winning outcome's token id.
        token_id: String,
    },
    /// Two outcomes at "0.5" each: voided or cancelled, no winner.
    Split {
        /// The outcome prices, as listed.
        prices: Vec<String>,
    },
    /// Anything else: not resolved (yet), or not readable. Never a guess.
    Unresolved {
        /// Why no verdict.
        reason: String,
    },
}

fn unresolved(reason: impl Into<String>) -> Inference {
    Inference::Unresolved {
        reason: reason.into(),
    }
}

/// Infers a market's outcome. Only a market that is `closed` with `umaResolutionStatus`
/// "resolved" can have one; prices like 0.9995 during a proposal or dispute are not a win.
pub fn infer_winner(m: &GammaMarket) -> Inference {
    if m.closed != Some(true) {
        return unresolved("not closed");
    }
    match m.uma_resolution_status.as_deref() {
        Some("resolved") => {}
        Some(other) => return unresolved(format!("resolution status is {other:?}")),
        None => return unresolved("no resolution status"),
    }
    let token_ids = match m.token_ids() {
        Ok(ids) => ids,
        Err(crate::gamma::Skip::UnknownVersion) => {
            return unresolved(format!("unknown version {:?}", m.version));
        }
        Err(crate::gamma::Skip::Malformed) => return unresolved("malformed token ids"),
    };
    let Some(outcomes) = m.outcome_list() else {
        return unresolved("malformed outcomes");
    };
    let Some(prices) = decode_string_list(m.outcome_prices.as_deref()) else {
        return unresolved("malformed outcomePrices");
    };
    if outcomes.len() < 2 || outcomes.len() != prices.len() || outcomes.len() != token_ids.len() {
        return unresolved(format!(
            "{} outcomes, {} prices, {} token ids",
            outcomes.len(),
            prices.len(),
            token_ids.len()
        ));
    }
    let mut values = Vec::with_capacity(prices.len());
    for p in &prices {
        match Decimal::parse(p.trim()) {
            Some(d) => values.push(d),
            None => return unresolved(format!("price {p:?} is not a decimal")),
        }
    }
    let is_one = |d: &Decimal| d.at_most_one() && !d.is_zero() && d.as_str().starts_with('1');
    let ones: Vec<usize> = (0..values.len()).filter(|&i| is_one(&values[i])).collect();
    let zeros = values.iter().filter(|d| d.is_zero()).count();
    if ones.len() == 1 && zeros == values.len() - 1 {
        let i = ones[0];
        return Inference::Winner {
            index: i,
            outcome: outcomes[i].clone(),
            token_id: token_ids[i].clone(),
        };
    }
    if ones.len() > 1 {
        return unresolved("several outcomes priced 1");
    }
    let half = |d: &Decimal| {
        d.as_str()
            .strip_prefix("0.5")
            .is_some_and(|rest| rest.bytes().all(|b| b == b'0'))
    };
    if values.len() == 2 && values.iter().all(half) {
        return Inference::Split { prices };
    }
    unresolved(format!("prices {prices:?} name no winner"))
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RoundReport {
    /// Closed markets Gamma listed without a verdict stored yet.
    pub asked: usize,
    /// Winners recorded.
    pub winners: usize,
    /// Splits recorded.
    pub splits: usize,
    /// Markets without a strict verdict yet.
    pub unresolved: usize,
    /// Closed markets backing off after an unresolvable answer (asked again later).
    pub waiting: usize,
    /// Why they wait: (reason, how many).
    pub waiting_reasons: Vec<(String, usize)>,
}

impl RoundReport {
    /// Winners and splits.
    pub fn resolved(&self) -> usize {
        self.winners + self.splits
    }
}

/// Counters of a tracker, as its health shows them.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct TrackerHealth {
    /// Rounds completed.
    pub rounds: u64,
    /// Markets resolved, over all rounds.
    pub resolved: u64,
    /// Rounds that failed (and were retried).
    pub errors: u64,
    /// When the last round completed (Unix ms).
    pub last_round_ms: Option<i64>,
    /// The last failure, as text.
    pub last_error: Option<String>,
}

/// Polls Gamma for the outcomes of closed markets we hold.
pub struct ResolutionTracker {
    config: Config,
    gamma: GammaClient,
    health: Arc<Mutex<TrackerHealth>>,
    stop: StopSignal,
    urgent: Urgent,
}

/// Stops a running tracker and reads its health. Cheap to clone.
#[derive(Clone)]
pub struct TrackerHandle {
    health: Arc<Mutex<TrackerHealth>>,
    stop: StopSignal,
    urgent: Urgent,
}

/// Markets to check soon: (condition id, tries so far, when).
type Urgent = Arc<Mutex<Vec<(String, u32, Instant)>>>;

/// How often a tracker between rounds looks for markets to check now.
const URGENT_POLL: Duration = Duration::from_millis(250);
const URGENT_FIRST_RETRY: Duration = Duration::from_secs(15);
const URGENT_TRIES: u32 = 6;

impl TrackerHandle {
    /// Stops the tracker after its current round.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// The tracker's counters now.
    pub fn health(&self) -> TrackerHealth {
        self.health.lock().clone()
    }

    /// Asks the running tracker to check these markets now rather than at its next round
    /// (a `market_resolved` announcement). Gamma stays the source of truth: a market it does
    /// not list as closed yet is asked about again over the next minutes.
    pub fn check_now(&self, condition_ids: Vec<String>) {
        let now = Instant::now();
        let mut urgent = self.urgent.lock();
        for id in condition_ids {
            if !urgent.iter().any(|u| u.0 == id) {
                urgent.push((id, 0, now));
            }
        }
    }
}

impl ResolutionTracker {
    /// A tracker for `config`'s database and Gamma listing, with its round interval.
    pub fn new(config: &Config) -> Self {
        ResolutionTracker {
            config: config.clone(),
            gamma: GammaClient::new(config),
            health: Arc::default(),
            stop: StopSignal::new(),
            urgent: Arc::default(),
        }
    }

    /// A handle to stop the tracker and read its health from another thread.
    pub fn handle(&self) -> TrackerHandle {
        TrackerHandle {
            health: Arc::clone(&self.health),
            stop: self.stop.clone(),
            urgent: Arc::clone(&self.urgent),
        }
    }

    /// One round: asks Gamma about every closed (or past its end date) market we hold that
    /// has no resolution, records winners and splits, marks the markets closed.
    pub fn round(&self) -> Result<RoundReport> {
        let mut db = crate::store::connect(&self.config)?;
        // Every held market without a verdict, open ones too: a market that closed since the
        // last sync is found here (a round needs no daemon and no sync), except those
        // backing off after an unresolvable answer.
        let ids: Vec<String> = db
            .query(
                "SELECT m.condition_id FROM markets m
                 WHERE NOT EXISTS (SELECT 1 FROM resolutions r
                                   WHERE r.condition_id = m.condition_id)
                   AND NOT EXISTS (SELECT 1 FROM resolution_attempts a
                                   WHERE a.condition_id = m.condition_id
                                     AND a.next_attempt_at > now())
                 ORDER BY m.condition_id",
                &[],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        let (mut report, _) = self.resolve(&mut db, &ids)?;
        // Those still waiting, and why.
        for row in db.query(
            "SELECT last_reason, count(*) FROM resolution_attempts
             WHERE next_attempt_at > now() GROUP BY 1 ORDER BY 2 DESC",
            &[],
        )? {
            let n: i64 = row.try_get(1)?;
            report.waiting += n as usize;
            report.waiting_reasons.push((row.try_get(0)?, n as usize));
        }
        Ok(report)
    }

    /// Asks Gamma about these markets and records every strict verdict; returns the report
    /// and the ids Gamma listed as closed.
    fn resolve(
        &self,
        db: &mut postgres::Client,
        ids: &[String],
    ) -> Result<(RoundReport, HashSet<String>)> {
        let mut report = RoundReport::default();
        let mut listed = HashSet::new();
        if !ids.is_empty() {
            // Gamma lists only the closed ones among them.
            let markets = self.gamma.markets_by_condition_ids(ids, true)?;
            let asked: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
            let mut tx = db.transaction()?;
            for m in &markets {
                let Some(cid) = m.condition_id.as_deref() else {
                    continue;
                };
                if !asked.contains(cid) {
                    continue;
                }
                report.asked += 1;
                listed.insert(cid.to_owned());
                tx.execute(
                    "UPDATE markets SET closed = true, accepting_orders = false, updated_at = now()
                     WHERE condition_id = $1 AND NOT closed",
                    &[&cid],
                )?;
                let (kind, token, outcome, prices) = match infer_winner(m) {
                    Inference::Winner {
                        token_id, outcome, ..
                    } => ("winner", Some(token_id), Some(outcome), None),
                    Inference::Split { prices } => ("split", None, None, Some(prices)),
                    Inference::Unresolved { reason } => {
                        // Asked again after 10 min, 20, 40 … at most a day.
                        tx.execute(
                            "INSERT INTO resolution_attempts
                                 (condition_id, attempts, next_attempt_at, last_reason)
                             VALUES ($1, 1, now() + interval '10 minutes', $2)
                             ON CONFLICT (condition_id) DO UPDATE SET
                                 attempts = resolution_attempts.attempts + 1,
                                 next_attempt_at = now() + least(
                                     interval '10 minutes' * power(2, resolution_attempts.attempts),
                                     interval '1 day'),
                                 last_reason = excluded.last_reason",
                            &[&cid, &reason],
                        )?;
                        log::debug!("resolution: {cid}: unresolved: {reason}");
                        report.unresolved += 1;
                        continue;
                    }
                };
                let n = tx.execute(
                    "INSERT INTO resolutions (condition_id, kind, winning_token_id, winning_outcome,
                                              outcome_prices)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (condition_id) DO NOTHING",
                    &[&cid, &kind, &token, &outcome, &prices],
                )?;
                tx.execute(
                    "DELETE FROM resolution_attempts WHERE condition_id = $1",
                    &[&cid],
                )?;
                if n == 1 {
                    if kind == "winner" {
                        report.winners += 1;
                    } else {
                        report.splits += 1;
                    }
                }
            }
            tx.commit()?;
        }
        Ok((report, listed))
    }

    /// Checks the markets [`TrackerHandle::check_now`] asked about whose time has come; one
    /// Gamma does not list as closed yet is asked again later (15 s, doubling, six times),
    /// then left to the rounds.
    fn check_urgent(&self) {
        let now = Instant::now();
        let due: Vec<(String, u32)> = {
            let mut urgent = self.urgent.lock();
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut *urgent)
                .into_iter()
                .partition(|u| u.2 <= now);
            *urgent = later;
            due.into_iter().map(|(id, n, _)| (id, n)).collect()
        };
        if due.is_empty() {
            return;
        }
        let ids: Vec<String> = due.iter().map(|(id, _)| id.clone()).collect();
        let result =
            crate::store::connect(&self.config).and_then(|mut db| self.resolve(&mut db, &ids));
        let listed = match result {
            Ok((report, listed)) => {
                self.health.lock().resolved += report.resolved() as u64;
                log::info!(
                    "resolution: checked {} announced markets: {} winners, {} splits, {} unresolved",
                    ids.len(),
                    report.winners,
                    report.splits,
                    report.unresolved
                );
                listed
            }
            Err(e) => {
                log::warn!("resolution: announced markets: {e}; will retry");
                HashSet::new()
            }
        };
        let mut urgent = self.urgent.lock();
        for (id, n) in due {
            if !listed.contains(&id) && n + 1 < URGENT_TRIES {
                // The one backoff schedule, without jitter: 15 s, 30 s, 60 s …
                let wait = Backoff::new(URGENT_FIRST_RETRY, Duration::from_secs(3600)).step(n);
                urgent.push((id, n + 1, Instant::now() + wait));
            }
        }
    }

    /// Runs a round every configured resolve interval until [`TrackerHandle::stop`]; a failed
    /// round is counted, logged and tried again at the next one. Between rounds, markets
    /// passed to [`TrackerHandle::check_now`] are checked as they come.
    pub fn run(self) {
        let interval = self.config.resolve_interval;
        loop {
            match self.round() {
                Ok(report) => {
                    let mut h = self.health.lock();
                    h.rounds += 1;
                    h.resolved += report.resolved() as u64;
                    h.last_round_ms = Some(now_ms());
                    drop(h);
                    log::info!(
                        "resolution: asked about {} markets: {} winners, {} splits, {} unresolved",
                        report.asked,
                        report.winners,
                        report.splits,
                        report.unresolved
                    );
                }
                Err(e) => {
                    let mut h = self.health.lock();
                    h.errors += 1;
                    h.last_error = Some(e.to_string());
                    drop(h);
                    log::warn!("resolution: round failed, will retry: {e}");
                }
            }
            // Between rounds, the announced markets are checked as they come.
            let next_round = Instant::now() + interval;
            loop {
                let left = next_round.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                if self.stop.wait_timeout(left.min(URGENT_POLL)) {
                    return;
                }
                self.check_urgent();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn market(closed: bool, status: &str, prices: &str) -> GammaMarket {
        GammaMarket {
            condition_id: Some("0xabc".into()),
            closed: Some(closed),
            uma_resolution_status: Some(status.into()).filter(|s: &String| !s.is_empty()),
            outcomes: Some(r#"["Yes", "No"]"#.into()),
            outcome_prices: Some(prices.into()),
            clob_token_ids: Some(r#"["111", "222"]"#.into()),
            version: Some("v1".into()),
            ..GammaMarket::default()
        }
    }

    fn winner(i: usize, outcome: &str, token: &str) -> Inference {
        Inference::Winner {
            index: i,
            outcome: outcome.into(),
            token_id: token.into(),
        }
    }

    fn is_unresolved(i: &Inference) -> bool {
        matches!(i, Inference::Unresolved { .. })
    }

    /// The table of cases: each is (what, market, expected).
    #[test]
    fn inference_table() {
        let split = Inference::Split {
            prices: vec!["0.5".into(), "0.5".into()],
        };
        let v2 = GammaMarket {
            version: Some("v2".into()),
            position_ids: Some(vec!["333".into(), "444".into()]),
            ..market(true, "resolved", r#"["0", "1"]"#)
        };
        let cases: Vec<(&str, GammaMarket, Option<Inference>)> = vec![
            (
                "yes wins",
                market(true, "resolved", r#"["1", "0"]"#),
                Some(winner(0, "Yes", "111")),
            ),
            (
                "no wins",
                market(true, "resolved", r#"["0", "1"]"#),
                Some(winner(1, "No", "222")),
            ),
            (
                "1.0 and 0.00 are exact",
                market(true, "resolved", r#"["1.0", "0.00"]"#),
                Some(winner(0, "Yes", "111")),
            ),
            ("v2 takes positionIds", v2, Some(winner(1, "No", "444"))),
            (
                "50/50 split",
                market(true, "resolved", r#"["0.5", "0.5"]"#),
                Some(split),
            ),
            (
                "proposed at 0.9995",
                market(true, "proposed", r#"["0.9995", "0.0005"]"#),
                None,
            ),
            (
                "disputed at 0.9995",
                market(true, "disputed", r#"["0.0005", "0.9995"]"#),
                None,
            ),
            (
                "resolved at 0.9995 is not a win",
                market(true, "resolved", r#"["0.9995", "0.0005"]"#),
                None,
            ),
            (
                "open market",
                market(false, "resolved", r#"["1", "0"]"#),
                None,
            ),
            ("no status", market(true, "", r#"["1", "0"]"#), None),
            (
                "several ones",
                market(true, "resolved", r#"["1", "1"]"#),
                None,
            ),
            ("all zero", market(true, "resolved", r#"["0", "0"]"#), None),
            (
                "malformed prices",
                market(true, "resolved", r#"["1", "0""#),
                None,
            ),
            (
                "prices not decimals",
                market(true, "resolved", r#"["one", "zero"]"#),
                None,
            ),
            (
                "negative price",
                market(true, "resolved", r#"["-1", "0"]"#),
                None,
            ),
            (
                "mismatched lengths",
                market(true, "resolved", r#"["1", "0", "0"]"#),
                None,
            ),
            (
                "unknown version",
                GammaMarket {
                    version: Some("v9".into()),
                    ..market(true, "resolved", r#"["1", "0"]"#)
                },
                None,
            ),
            (
                "malformed outcomes",
                GammaMarket {
                    outcomes: Some("Yes,No".into()),
                    ..market(true, "resolved", r#"["1", "0"]"#)
                },
                None,
            ),
            (
                "missing token ids",
                GammaMarket {
                    clob_token_ids: None,
                    ..market(true, "resolved", r#"["1", "0"]"#)
                },
                None,
            ),
            (
                "uneven split",
                market(true, "resolved", r#"["0.6", "0.4"]"#),
                None,
            ),
        ];
        assert!(cases.len() >= 15);
        for (what, m, expected) in cases {
            let got = infer_winner(&m);
            match expected {
                Some(e) => assert_eq!(got, e, "{what}"),
                None => assert!(is_unresolved(&got), "{what}: {got:?}"),
            }
        }
    }

    #[test]
    fn real_shaped_gamma_json() {
        let json = r#"{"id":"3914648","question":"Will it rain?","conditionId":"0x6a67b9d8",
            "slug":"will-it-rain","endDate":"2026-09-09T12:00:00Z","closedTime":"2026-09-09 14:25:04+00",
            "outcomes":"[\"Yes\", \"No\"]","outcomePrices":"[\"0\", \"1\"]",
            "clobTokenIds":"[\"1141220715\", \"2241220715\"]","version":"v1","active":true,
            "closed":true,"umaResolutionStatus":"resolved","volume":"1234.5","volumeNum":1234.5}"#;
        let m: GammaMarket = serde_json::from_str(json).expect("parses");
        assert_eq!(infer_winner(&m), winner(1, "No", "2241220715"));
    }
}
