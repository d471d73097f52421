//! Market announcements on the feed (its "custom features"): `new_market` and
//! `market_resolved`, read out of a frame. What they lead to is the listener's business
//! (`listener/follow.rs`); a connection only hands them up.

use super::scan::{Kind, Span};

/// What the feed announced about a market (its condition id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Announcement {
    NewMarket(String),
    Resolved(String),
}

/// Reads the announcements out of a frame scanned into `events` (rare events: each read in
/// full from its own range). Anything without a usable condition id is skipped.
pub(crate) fn announcements(frame: &str, events: &[Span]) -> Vec<Announcement> {
    use serde_json::Value;
    let one = |span: &Span| {
        let v: Value = serde_json::from_str(span.text(frame)).ok()?;
        let market = v
            .get("market")
            .and_then(Value::as_str)
            .filter(|m| super::event::is_identifier(m))?
            .to_owned();
        match span.kind {
            Kind::NewMarket => Some(Announcement::NewMarket(market)),
            Kind::Resolved => Some(Announcement::Resolved(market)),
            _ => None,
        }
    };
    events
        .iter()
        .filter(|s| matches!(s.kind, Kind::NewMarket | Kind::Resolved))
        .filter_map(one)
        .collect()
}

/// [`announcements`] of a frame not yet scanned (none if it is malformed).
#[cfg(any(test, feature = "bench"))]
pub(crate) fn announcements_in(frame: &str) -> Vec<Announcement> {
    let mut events = Vec::new();
    match super::scan::scan(frame, &mut events) {
        Ok(()) => announcements(frame, &events),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_read_from_objects_and_arrays() {
        let new = r#"{"event_type":"new_market","market":"0xabc","assets_ids":["1","2"]}"#;
        assert_eq!(
            announcements_in(new),
            vec![Announcement::NewMarket("0xabc".into())]
        );
        let both = r#"[{"event_type":"market_resolved","market":"0x1","winning_asset_id":"1"},
                       {"event_type":"book","market":"0x2","asset_id":"3"},
                       {"event_type":"new_market","market":"0x3"}]"#;
        assert_eq!(
            announcements_in(both),
            vec![
                Announcement::Resolved("0x1".into()),
                Announcement::NewMarket("0x3".into())
            ]
        );
        // No usable condition id, bad JSON: nothing.
        assert!(announcements_in(r#"{"event_type":"new_market","market":""}"#).is_empty());
        assert!(announcements_in(r#"{"event_type":"new_market","market":7}"#).is_empty());
        assert!(announcements_in(r#"{"event_type":"new_market""#).is_empty());
    }
}
