//! Market announcements on the feed (its "custom features"): `new_market` and
//! `market_resolved`, read out of a frame. What they lead to is the listener's business
//! (`listener/follow.rs`); a connection only hands them up.

/// What the feed announced about a market (its condition id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Announcement {
    NewMarket(String),
    Resolved(String),
}

/// Reads the announcements out of a frame that [`super::event::parse_frame`] found to hold
/// some. Rare frames: parsed in full. Anything without a usable condition id is skipped.
pub(crate) fn announcements(frame: &str) -> Vec<Announcement> {
    use serde_json::Value;
    let one = |v: &Value| {
        let market = v
            .get("market")
            .and_then(Value::as_str)
            .filter(|m| super::event::is_identifier(m))?
            .to_owned();
        match v.get("event_type").and_then(Value::as_str)? {
            "new_market" => Some(Announcement::NewMarket(market)),
            "market_resolved" => Some(Announcement::Resolved(market)),
            _ => None,
        }
    };
    super::event::json_events(frame)
        .iter()
        .filter_map(one)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_read_from_objects_and_arrays() {
        let new = r#"{"event_type":"new_market","market":"0xabc","assets_ids":["1","2"]}"#;
        assert_eq!(
            announcements(new),
            vec![Announcement::NewMarket("0xabc".into())]
        );
        let both = r#"[{"event_type":"market_resolved","market":"0x1","winning_asset_id":"1"},
                       {"event_type":"book","market":"0x2","asset_id":"3"},
                       {"event_type":"new_market","market":"0x3"}]"#;
        assert_eq!(
            announcements(both),
            vec![
                Announcement::Resolved("0x1".into()),
                Announcement::NewMarket("0x3".into())
            ]
        );
        // No usable condition id, bad JSON: nothing.
        assert!(announcements(r#"{"event_type":"new_market","market":""}"#).is_empty());
        assert!(announcements(r#"{"event_type":"new_market","market":7}"#).is_empty());
        assert!(announcements(r#"{"event_type":"new_market""#).is_empty());
    }
}
