//! `polytape status`: a running daemon's health, as a table.

use std::time::Duration;

use crate::Result;
use crate::cli::Common;

/// Asks the daemon at `common.health_addr` for its health and prints it.
pub(crate) fn status(common: &Common) -> Result {
    if common.health_addr.trim().is_empty() {
        return Err("the health endpoint is turned off (POLYTAPE_HEALTH_ADDR is empty)".into());
    }
    let url = format!("http://{}/health", common.health_addr);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let body = agent
        .get(&url)
        .call()
        .map_err(|e| format!("no daemon answering at {url}: {e}"))?
        .body_mut()
        .read_to_string()?;
    let h: serde_json::Value = serde_json::from_str(&body)?;
    println!("polytape status ({url})");
    // Every side's headline figures, grouped as the README and the dashboard group them.
    let sections: [(&str, &[&str]); 5] = [
        (
            "trades",
            &[
                "started_at",
                "trades_received",
                "trades_inserted",
                "duplicates_skipped",
                "rows_rejected",
                "last_trade_ts",
                "last_insert_ts",
                "commit_latency_seconds",
            ],
        ),
        (
            "sockets",
            &[
                "connections_active",
                "reconnections",
                "sockets_recycled",
                "messages_received",
                "parse_errors",
                "unknown_events",
                "stalls_repaired",
            ],
        ),
        (
            "durability",
            &[
                "queue_depth",
                "db_errors",
                "db_lost_since",
                "db_failure",
                "trades_spooled",
                "spool_bytes",
                "trades_unkept",
            ],
        ),
        (
            "completeness",
            &[
                "gaps_recorded",
                "gaps_open",
                "oldest_open_gap_ts",
                "gaps_filled",
                "trades_backfilled",
                "data_api_errors",
            ],
        ),
        (
            "books and prices",
            &[
                "books_held",
                "book_events",
                "books_desynced",
                "book_false_alarms",
                "book_resnapshots",
                "book_snapshots_written",
                "book_snapshots_unverified",
                "book_rows_refused",
                "book_failure",
                "book_tape_files",
                "price_bars_written",
                "newest_price_bar_ts",
            ],
        ),
    ];
    for (title, keys) in sections {
        println!("  {title}:");
        for key in keys {
            let v = h.get(*key).or_else(|| h["books"].get(*key));
            let shown = match v {
                None | Some(serde_json::Value::Null) => "-".to_owned(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            println!("    {key:<26} {shown}");
        }
    }
    if let Some(conns) = h["connections"].as_array() {
        println!("  connections:");
        println!(
            "    {:>4} {:>7} {:<11} {:>10} last message",
            "id", "tokens", "state", "reconnects"
        );
        for c in conns {
            println!(
                "    {:>4} {:>7} {:<11} {:>10} {}",
                c["id"].to_string(),
                c["tokens"].to_string(),
                c["state"].as_str().unwrap_or("?"),
                c["reconnects"].to_string(),
                c["last_message_ts"].as_str().unwrap_or("-")
            );
        }
    }
    if h["resolution"].is_object() {
        let r = &h["resolution"];
        println!(
            "  resolution: {} rounds, {} resolved, {} errors",
            r["rounds"], r["resolved"], r["errors"]
        );
    }
    Ok(())
}
