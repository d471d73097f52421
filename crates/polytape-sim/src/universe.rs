//! The simulated markets, generated from a seed, and their Gamma wire form.

use serde_json::{Value, json};

/// How a closed market ended, as Gamma would show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimResolution {
    /// Resolved: outcome `i` won (`outcomePrices` "1"/"0").
    Winner(usize),
    /// Resolved 50/50 (void or cancelled).
    Split,
    /// Closed, resolution proposed: prices 0.9995/0.0005 pointing at `i`.
    Proposed(usize),
    /// Closed, resolution disputed: prices 0.9995/0.0005 pointing at `i`.
    Disputed(usize),
    /// Closed and "resolved", but `outcomePrices` is not valid JSON.
    Malformed,
}

/// One simulated market with two outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct SimMarket {
    pub gamma_id: u64,
    pub condition_id: String,
    pub question: String,
    pub slug: String,
    pub outcomes: [String; 2],
    /// The feed's asset ids (what `clobTokenIds` holds for v1, `positionIds` for v2).
    pub token_ids: [String; 2],
    /// For v2 markets, stale legacy ids left in `clobTokenIds`: a client that reads them
    /// subscribes to assets that never trade.
    pub legacy_token_ids: Option<[String; 2]>,
    /// "v1", "v2", or an unknown version a client must skip.
    pub version: &'static str,
    pub closed: bool,
    pub enable_order_book: bool,
    pub neg_risk: bool,
    pub end_date_ms: i64,
    pub resolution: Option<SimResolution>,
    /// A mid price in thousandths, for the open market's `outcomePrices` and trades.
    pub mid_milli: u16,
}

impl SimMarket {
    /// Whether the sim trades it and a client should subscribe to it.
    pub fn is_open(&self) -> bool {
        !self.closed && self.enable_order_book
    }

    /// The market as Gamma's listing shows it, in the wire form: JSON-encoded strings for
    /// `outcomes`, `outcomePrices` and `clobTokenIds`, a real array for `positionIds`.
    pub fn to_gamma_json(&self) -> Value {
        let enc = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
        let yes = format!("0.{:03}", self.mid_milli);
        let no = format!("0.{:03}", 1000 - self.mid_milli);
        let (prices, status) = match self.resolution {
            None => (enc(&[yes, no]), None),
            Some(SimResolution::Winner(i)) => {
                let mut p = vec!["0".to_owned(), "0".to_owned()];
                p[i] = "1".to_owned();
                (enc(&p), Some("resolved"))
            }
            Some(SimResolution::Split) => (enc(&["0.5".into(), "0.5".into()]), Some("resolved")),
            Some(SimResolution::Proposed(i)) | Some(SimResolution::Disputed(i)) => {
                let mut p = vec!["0.0005".to_owned(), "0.0005".to_owned()];
                p[i] = "0.9995".to_owned();
                let status = if matches!(self.resolution, Some(SimResolution::Proposed(_))) {
                    "proposed"
                } else {
                    "disputed"
                };
                (enc(&p), Some(status))
            }
            Some(SimResolution::Malformed) => ("[\"1\", \"0\"".to_owned(), Some("resolved")),
        };
        let clob_ids = self.legacy_token_ids.as_ref().unwrap_or(&self.token_ids);
        let end = chrono::DateTime::from_timestamp_millis(self.end_date_ms).unwrap_or_default();
        let mut m = json!({
            "id": self.gamma_id.to_string(),
            "question": self.question,
            "conditionId": self.condition_id,
            "slug": self.slug,
            "endDate": end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "outcomes": enc(&self.outcomes),
            "outcomePrices": prices,
            "clobTokenIds": enc(clob_ids),
            "version": self.version,
            "active": true,
            "closed": self.closed,
            "acceptingOrders": !self.closed,
            "enableOrderBook": self.enable_order_book,
            "negRisk": self.neg_risk,
            "volume": format!("{}.{:02}", self.gamma_id % 100_000, self.gamma_id % 100),
            "volumeNum": (self.gamma_id % 100_000) as f64,
        });
        if self.version != "v1" {
            m["positionIds"] = json!(self.token_ids);
        }
        if let Some(status) = status {
            m["umaResolutionStatus"] = json!(status);
            // Not ISO 8601, as on the live service.
            m["closedTime"] = json!(end.format("%Y-%m-%d %H:%M:%S+00").to_string());
        }
        m
    }
}

/// Draws a ~77-digit decimal token id.
fn token_id(rng: &mut fastrand::Rng) -> String {
    let mut s = String::with_capacity(77);
    s.push(char::from(b'1' + rng.u8(0..9)));
    for _ in 0..76 {
        s.push(char::from(b'0' + rng.u8(0..10)));
    }
    s
}

fn hex(rng: &mut fastrand::Rng, digits: usize) -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    (0..digits)
        .map(|_| char::from(HEX[rng.usize(0..16)]))
        .collect()
}

const TOPICS: &[&str] = &[
    "Will the Fed cut rates",
    "Will BTC close above $100k",
    "Will it rain in London",
    "Will the incumbent win",
    "Will the bill pass",
    "Will the launch succeed",
];

/// Generates market `index` of the universe for `seed`. The same seed and index always give
/// the same market, so markets added at run time are as reproducible as the initial ones.
pub fn generate_market(seed: u64, index: u64) -> SimMarket {
    let mut rng = fastrand::Rng::with_seed(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let condition_id = format!("0x{}", hex(&mut rng, 64));
    let token_ids = [token_id(&mut rng), token_id(&mut rng)];
    // Mostly v1; every fifth a v2 with stale legacy ids; one in a hundred an unknown version.
    let version = match index % 100 {
        99 => "v3",
        i if i % 5 == 3 => "v2",
        _ => "v1",
    };
    let legacy_token_ids = (version == "v2").then(|| [token_id(&mut rng), token_id(&mut rng)]);
    // One market in ten is closed, cycling through the ways a market ends.
    let resolution = match index % 10 {
        7 => Some(match (index / 10) % 6 {
            0 | 1 => SimResolution::Winner((index / 60 % 2) as usize),
            2 => SimResolution::Split,
            3 => SimResolution::Proposed(0),
            4 => SimResolution::Disputed(1),
            _ => SimResolution::Malformed,
        }),
        _ => None,
    };
    let topic = TOPICS[rng.usize(0..TOPICS.len())];
    let outcomes = if index % 4 == 1 {
        ["Up".to_owned(), "Down".to_owned()]
    } else {
        ["Yes".to_owned(), "No".to_owned()]
    };
    SimMarket {
        gamma_id: 500_000 + index,
        condition_id,
        question: format!("{topic} (#{index})?"),
        slug: format!("sim-market-{index}"),
        outcomes,
        token_ids,
        legacy_token_ids,
        version,
        closed: resolution.is_some(),
        // A few open markets have no order book: nothing to subscribe to.
        enable_order_book: index % 50 != 11,
        neg_risk: index % 8 == 2,
        // End dates from 2028 on, so open markets are not past their end.
        end_date_ms: 1_830_000_000_000 + (index as i64 % 1000) * 86_400_000,
        resolution,
        mid_milli: 50 + rng.u16(0..900),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_market() {
        assert_eq!(generate_market(7, 3), generate_market(7, 3));
        assert_ne!(
            generate_market(7, 3).condition_id,
            generate_market(8, 3).condition_id
        );
    }

    #[test]
    fn gamma_wire_form() {
        let m = generate_market(1, 3);
        assert_eq!(m.version, "v2");
        let j = m.to_gamma_json();
        let ids: Vec<String> = j["positionIds"]
            .as_array()
            .expect("array")
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(ids, m.token_ids);
        let clob: Vec<String> =
            serde_json::from_str(j["clobTokenIds"].as_str().expect("string")).expect("json");
        assert_ne!(clob, ids, "v2 legacy ids differ from the feed ids");
        let winner = generate_market(1, 7);
        assert_eq!(winner.resolution, Some(SimResolution::Winner(0)));
        assert_eq!(winner.to_gamma_json()["outcomePrices"], "[\"1\",\"0\"]");
    }
}
