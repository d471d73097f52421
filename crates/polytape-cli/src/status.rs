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
    for key in [
        "started_at",
        "trades_received",
        "trades_inserted",
        "batches_inserted",
        "duplicates_skipped",
        "rows_rejected",
        "queue_depth",
        "connections_active",
        "reconnections",
        "messages_received",
        "parse_errors",
        "db_errors",
        "send_blocked_ms",
        "last_trade_ts",
        "last_insert_ts",
        "last_reconnect_ts",
        "db_lost_since",
    ] {
        let v = &h[key];
        let shown = match v {
            serde_json::Value::Null => "-".to_owned(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!("  {key:<20} {shown}");
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
