//! What polytape sends on the market channel: the subscription and the later operations,
//! never more than [`MAX_IDS_PER_FRAME`] asset ids in one frame.
//!
//! A client that sent thousands of ids in one frame was closed ~100 ms later, for good
//! (`polymarket-feed.md` §4, rs-clob-client-v2 issue 116); others settled on 100 a frame: the
//! first frame is the `type: market` subscription, the rest `operation: subscribe` frames.
//! Book dumps (`initial_dump`) are asked for only when the book side is on: then every
//! (re)subscription must start each token's book from a snapshot; without it, 500 books on
//! every reconnect are megabytes of nothing.

use serde_json::json;

/// Most asset ids in one frame.
pub(crate) const MAX_IDS_PER_FRAME: usize = 100;

/// The frames that subscribe `tokens` on a new socket: a `type: market` frame first (it must
/// be the socket's first frame; it turns the custom features on, for the market
/// announcements, when `announcements`), then `operation: subscribe` frames; each token's
/// book is asked for when `dumps`.
pub(crate) fn subscription_frames(
    tokens: &[String],
    announcements: bool,
    dumps: bool,
) -> Vec<String> {
    let mut chunks = tokens.chunks(MAX_IDS_PER_FRAME);
    let first = chunks.next().unwrap_or(&[]);
    let mut first_frame = json!({"type": "market", "assets_ids": first, "initial_dump": dumps});
    if announcements {
        first_frame["custom_feature_enabled"] = json!(true);
    }
    let mut frames = vec![first_frame.to_string()];
    frames.extend(operation_frames("subscribe", &tokens[first.len()..], dumps));
    frames
}

/// `operation: subscribe` or `unsubscribe` frames for `ids` on a live socket; a subscribe
/// asks for each token's book when `dumps` (a held token's too: that is how a book is
/// fetched afresh without touching the socket).
pub(crate) fn operation_frames(op: &str, ids: &[String], dumps: bool) -> Vec<String> {
    ids.chunks(MAX_IDS_PER_FRAME)
        .map(|chunk| {
            if op == "subscribe" {
                json!({"operation": op, "assets_ids": chunk, "initial_dump": dumps}).to_string()
            } else {
                json!({"operation": op, "assets_ids": chunk}).to_string()
            }
        })
        .collect()
}

/// How many markets a probe asks a book of. The exchange sends some markets' books seconds
/// late; one late market must not make a live socket look frozen.
pub(crate) const PROBE_MARKETS: usize = 3;

/// A subscribe operation for a few held tokens, their books asked for: a live socket
/// answers with those books (a quiet one included), a frozen one does not.
pub(crate) fn probe_frame(tokens: &[String]) -> String {
    operation_frames("subscribe", tokens, true)
        .pop()
        .unwrap_or_default()
}

/// Whether `frame` carries the book of one of the `tokens` that [`probe_frame`] asked for (a
/// dump's book may come without its `event_type`, as the live feed sends them: the scan
/// takes an event with `bids` for a book). Read by the book side's own reader: it is called
/// on the few frames of a recycle's replacement only.
pub(crate) fn answers_probe(frame: &str, tokens: &[String]) -> bool {
    crate::book::book_events(frame).events.iter().any(|e| {
        matches!(e, crate::book::BookEvent::Snapshot { asset_id, .. }
            if tokens.iter().any(|t| t == asset_id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn ids(frame: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(frame).expect("json");
        v["assets_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|s| s.as_str().expect("str").to_owned())
            .collect()
    }

    #[test]
    fn never_more_than_100_ids_a_frame_and_every_id_once() {
        for n in [0usize, 1, 99, 100, 101, 250, 500] {
            let tokens: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
            let frames = subscription_frames(&tokens, false, false);
            assert_eq!(frames.len(), n.div_ceil(100).max(1), "{n}");
            assert!(!frames[0].contains("custom_feature_enabled"));
            let custom = subscription_frames(&tokens, true, false);
            let dumps = subscription_frames(&tokens, false, true);
            assert!(dumps.iter().all(|f| f.contains("\"initial_dump\":true")));
            assert!(custom[0].contains("\"custom_feature_enabled\":true"));
            assert!(custom[1..].iter().all(|f| !f.contains("custom_feature")));
            assert!(
                frames[0].contains("\"type\":\"market\""),
                "{n}: first is the subscription"
            );
            assert!(
                frames[1..]
                    .iter()
                    .all(|f| f.contains("\"operation\":\"subscribe\""))
            );
            assert!(frames.iter().all(|f| !f.contains("\"initial_dump\":true")));
            let sent: Vec<String> = frames.iter().flat_map(|f| ids(f)).collect();
            assert_eq!(sent, tokens, "{n}: every id once, in order");
            assert!(frames.iter().all(|f| ids(f).len() <= MAX_IDS_PER_FRAME));
        }
        let un = operation_frames(
            "unsubscribe",
            &(0..150).map(|i| i.to_string()).collect::<Vec<_>>(),
            true,
        );
        assert_eq!(un.len(), 2);
        assert!(
            un.iter()
                .all(|f| f.contains("\"operation\":\"unsubscribe\""))
        );
    }

    #[test]
    fn a_probe_is_answered_by_one_of_its_tokens_books_only() {
        let asked = ["7".to_owned(), "9".to_owned()];
        let frame = probe_frame(&asked);
        assert_eq!(ids(&frame), asked, "one frame asks for every probed book");
        assert!(frame.contains("\"initial_dump\":true"));
        let book = r#"{"event_type":"book","asset_id":"7","market":"0xa","bids":[],"asks":[]}"#;
        assert!(answers_probe(book, &asked));
        assert!(answers_probe(
            r#"[{"asset_id":"8","market":"0xa","bids":[]},{"asset_id":"9","market":"0xa","bids":[]}]"#,
            &asked
        ));
        assert!(
            !answers_probe(book, &["8".to_owned()]),
            "another token's book"
        );
        assert!(!answers_probe(
            r#"{"event_type":"last_trade_price","asset_id":"7","price":"0.5"}"#,
            &asked
        ));
        assert!(!answers_probe("PONG", &asked));
        assert!(!answers_probe("[1, 2", &asked));
    }
}
