//! The `storage` section: the shipped schema before V6 (one `trades` table, three indexes)
//! against the compact tape (V6), with the same N trades in one run: bytes per trade, the
//! `psql \copy` ceiling, and the README's example queries under `EXPLAIN (ANALYZE, BUFFERS)`.

use std::io::{BufWriter, Write};
use std::process::Command;
use std::time::Instant;

use polytape::bench::{MarketRow, upsert_markets};
use polytape_sim::frames::TradeRecord;
use polytape_sim::universe::generate_market;

use super::{BenchDb, Result, postgres_cpu_seconds};

const MARKETS: u64 = 2000;
/// 2026-05-29 00:26:40 UTC: the tape crosses into June, so two monthly partitions.
const BASE_MS: i64 = 1_780_014_400_000;
/// One trade every 35 ms: 10 million trades over four days (the live rate is ~2.6 million
/// a day).
const STEP_MS: i64 = 35;

pub(crate) fn storage(server: &str) -> Result {
    let n: u64 = std::env::var("BENCH_STORAGE_TRADES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let markets: Vec<_> = (0..MARKETS).map(|i| generate_market(7, i)).collect();
    let dir = std::env::temp_dir();
    let old_path = dir.join(format!("polytape-storage-old-{}.tsv", std::process::id()));
    let new_path = dir.join(format!("polytape-storage-new-{}.tsv", std::process::id()));
    {
        let mut old = BufWriter::new(std::fs::File::create(&old_path)?);
        let mut new = BufWriter::new(std::fs::File::create(&new_path)?);
        for seq in 0..n {
            let mi = seq % MARKETS;
            let m = &markets[mi as usize];
            let t = TradeRecord {
                seq,
                market: 0,
                outcome: (seq / MARKETS % 2) as u8,
                timestamp_ms: BASE_MS + seq as i64 * STEP_MS,
                price_bp: ((seq * 7919 % 999 + 1) * 10) as u16,
                buy: seq % 3 != 0,
                has_tx: seq % 10 != 9,
                short_price: false,
            };
            let ts = chrono::DateTime::from_timestamp_millis(t.timestamp_ms).unwrap_or_default();
            let traded = ts.format("%Y-%m-%d %H:%M:%S%.3f+00");
            let received =
                (ts + chrono::Duration::milliseconds(40)).format("%Y-%m-%d %H:%M:%S%.6f+00");
            let hash = t.transaction_hash();
            writeln!(
                old,
                "{}\t{}\t{}\t{}\t{}\t0\t{traded}\t{}\t{received}",
                m.token_ids[t.outcome as usize],
                m.condition_id,
                t.price(),
                t.size(),
                t.side(),
                hash.clone().unwrap_or_else(|| "\\N".into()),
            )?;
            let token = mi * 2 + t.outcome as u64 + 1;
            let tx = hash.map_or_else(
                || "\\N".to_owned(),
                |h| format!("\\\\x{}", h.trim_start_matches("0x")),
            );
            writeln!(
                new,
                "{traded}\t{received}\t{token}\t0\t{}\tf\t{}\t{}\t{tx}",
                if t.buy { "t" } else { "f" },
                t.price(),
                t.size(),
            )?;
        }
    }
    let end = chrono::DateTime::from_timestamp_millis(BASE_MS + n as i64 * STEP_MS)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S+00")
        .to_string();
    println!("\n## storage: the schema before V6 against the compact tape, {n} trades");

    let old = BenchDb::new_at(server, "polytape_bench_storage_old", 5)?;
    let new = BenchDb::new_at(server, "polytape_bench_storage_new", i32::MAX)?;
    for db in [&old, &new] {
        fill_markets(db, &markets)?;
    }
    {
        let mut c = new.client()?;
        // The months of the tape, as the writer makes them before its first batch.
        c.batch_execute("SELECT tape_ensure_month('2026-05-01'), tape_ensure_month('2026-06-01')")?;
        // Token ids as the TSV has them: market index · 2 + outcome + 1.
        let mut tx = c.transaction()?;
        for (i, m) in markets.iter().enumerate() {
            for (o, token) in m.token_ids.iter().enumerate() {
                tx.execute(
                    "INSERT INTO tokens (id, asset_id, market, outcome) OVERRIDING SYSTEM VALUE
                     VALUES ($1, $2, $3, $4)",
                    &[
                        &((i * 2 + o + 1) as i32),
                        token,
                        &m.condition_id,
                        &m.outcomes.get(o).cloned(),
                    ],
                )?;
            }
        }
        tx.commit()?;
    }
    let old_rate = copy(
        &old,
        &format!(
            "\\copy trades (asset_id, market, price, size, side, fee_rate_bps, traded_at, transaction_hash, received_at) from '{}'",
            old_path.display()
        ),
        n,
        "before V6: \\copy into trades",
    )?;
    let new_rate = copy(
        &new,
        &format!(
            "\\copy trade_tape (traded_at, received_at, token, fee_rate_bps, is_buy, source, price, size, tx) from '{}'",
            new_path.display()
        ),
        n,
        "V6: \\copy into trade_tape",
    )?;
    println!(
        "ceiling ratio new / old: {:.2} (same run)",
        new_rate / old_rate.max(1.0)
    );
    let _ = std::fs::remove_file(&old_path);
    let _ = std::fs::remove_file(&new_path);
    for db in [&old, &new] {
        db.client()?.batch_execute("VACUUM ANALYZE")?;
    }
    let old_bytes = sizes(&old, "trades", n, "before V6")?;
    let live = sizes(&new, "trade_tape", n, "V6, live month (index as written)")?;
    tx_lookups(&new, n)?;
    // What `maintain` does once a month is over: rebuild its partitions' indexes.
    let compact_started = Instant::now();
    let report = {
        let mut c = new.client()?;
        let later = chrono::DateTime::parse_from_rfc3339("2026-08-01T00:00:00Z")?
            .with_timezone(&chrono::Utc);
        polytape::store::tape::maintain(&mut c, later)?
    };
    println!(
        "compaction of {} past partitions: {:.1} s",
        report.compacted.len(),
        compact_started.elapsed().as_secs_f64()
    );
    let rest = sizes(&new, "trade_tape", n, "V6, month over (compacted)")?;
    println!(
        "bytes per trade: before V6 {old_bytes:.0}, V6 live {live:.0} ({:.2}×), V6 at rest {rest:.0} ({:.2}×)",
        live / old_bytes,
        rest / old_bytes
    );
    println!("\n### README queries (second run of each; data ends {end})");
    let queries = [
        (
            "last hour of one market",
            format!(
                "SELECT t.traded_at, m.outcomes[array_position(m.token_ids, t.asset_id)] AS outcome,
                        t.side, t.price, t.size
                 FROM markets m JOIN trades t ON t.asset_id = ANY (m.token_ids)
                 WHERE m.slug = '{}' AND t.traded_at > '{end}'::timestamptz - interval '1 hour'
                 ORDER BY t.traded_at",
                markets[17].slug
            ),
        ),
        (
            "daily volume per market",
            "SELECT m.question, date_trunc('day', t.traded_at) AS day,
                    sum(t.size) AS shares, sum(t.size * t.price) AS notional
             FROM trades t JOIN markets m ON t.asset_id = ANY (m.token_ids)
             GROUP BY 1, 2 ORDER BY 2 DESC, 4 DESC"
                .to_owned(),
        ),
        (
            "trades of resolved markets",
            "SELECT m.question, r.kind, r.winning_outcome, count(*) AS trades,
                    sum(t.size) FILTER (WHERE t.asset_id = r.winning_token_id AND t.side = 'BUY')
                        AS winner_shares_bought
             FROM resolutions r JOIN markets m USING (condition_id)
             JOIN trades t ON t.asset_id = ANY (m.token_ids)
             GROUP BY 1, 2, 3"
                .to_owned(),
        ),
    ];
    for (name, sql) in &queries {
        let a = explain(&old, sql)?;
        let b = explain(&new, sql)?;
        println!(
            "{name}: before V6 {:.1} ms ({} buffers; {}), V6 {:.1} ms ({} buffers; {}); ratio {:.2}",
            a.0,
            a.1,
            a.2,
            b.0,
            b.1,
            b.2,
            b.0 / a.0.max(0.001)
        );
    }
    Ok(())
}

/// The markets of the tape, 10% of them resolved.
fn fill_markets(db: &BenchDb, markets: &[polytape_sim::universe::SimMarket]) -> Result {
    let rows: Vec<MarketRow> = markets
        .iter()
        .map(|m| MarketRow {
            condition_id: m.condition_id.clone(),
            gamma_id: None,
            question: Some(m.question.clone()),
            slug: Some(m.slug.clone()),
            outcomes: m.outcomes.to_vec(),
            token_ids: m.token_ids.to_vec(),
            active: true,
            closed: false,
            accepting_orders: true,
            enable_order_book: true,
            neg_risk: false,
            end_date: None,
            version: Some("v1".into()),
        })
        .collect();
    let mut c = db.client()?;
    upsert_markets(&mut c, &rows)?;
    c.batch_execute(
        "INSERT INTO resolutions (condition_id, kind, winning_token_id, winning_outcome)
         SELECT condition_id, 'winner', token_ids[1], outcomes[1] FROM markets
         ORDER BY condition_id LIMIT 200",
    )?;
    Ok(())
}

fn copy(db: &BenchDb, command: &str, n: u64, name: &str) -> Result<f64> {
    let started = Instant::now();
    let pg0 = postgres_cpu_seconds();
    let status = Command::new("psql")
        .arg(db.url())
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c", command])
        .status()?;
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        return Err(format!("{name}: psql \\copy failed").into());
    }
    let rate = n as f64 / secs;
    println!(
        "{name}: {rate:.0} rows/s ({secs:.1} s; PostgreSQL CPU {:.1} s)",
        postgres_cpu_seconds() - pg0
    );
    Ok(rate)
}

/// Bytes per trade of `relation` with every partition, index and TOAST table, plus (for the
/// compact tape) the token dictionary.
/// The two ways of finding a settled trade's hash in the tape (issue 28), measured in one
/// run on the same rows: through the natural key, one token's hour before the block (what
/// polytape does since V16), and through V8's hash index on `tx` (made here for the
/// comparison, then dropped): 5,000 lookups each, and the index's bytes.
fn tx_lookups(db: &BenchDb, n: u64) -> Result {
    let mut c = db.client()?;
    // 5,000 hashed trades spread over the tape, each looked up from a block 3 s after it.
    let sample = "CREATE TEMP TABLE sample AS
                  SELECT token, traded_at + interval '3 seconds' AS block, tx
                  FROM trade_tape TABLESAMPLE SYSTEM (2) WHERE tx IS NOT NULL LIMIT 5000";
    c.batch_execute(sample)?;
    let by_key = "SELECT count(*) FROM sample s CROSS JOIN LATERAL (
                      SELECT 1 FROM trade_tape t
                      WHERE t.token = s.token
                        AND t.traded_at >= s.block - interval '1 hour'
                        AND t.traded_at <= s.block + interval '2 seconds'
                        AND t.tx = s.tx) x";
    let by_hash = "SELECT count(*) FROM sample s CROSS JOIN LATERAL (
                       SELECT 1 FROM trade_tape t WHERE t.tx = s.tx) x";
    let time = |c: &mut postgres::Client, sql: &str| -> Result<(f64, i64)> {
        c.query_one(sql, &[])?; // warm
        let t0 = Instant::now();
        let found: i64 = c.query_one(sql, &[])?.get(0);
        Ok((t0.elapsed().as_secs_f64() * 1000.0, found))
    };
    let (key_ms, key_found) = time(&mut c, by_key)?;
    let t0 = Instant::now();
    c.batch_execute("CREATE INDEX bench_tx ON trade_tape USING hash (tx)")?;
    let build_s = t0.elapsed().as_secs_f64();
    let (hash_ms, hash_found) = time(&mut c, by_hash)?;
    let index_bytes: i64 = c
        .query_one(
            "SELECT sum(pg_relation_size(relid))::bigint FROM pg_partition_tree('bench_tx')",
            &[],
        )?
        .get(0);
    c.batch_execute("DROP INDEX bench_tx")?;
    println!(
        "tx lookups, 5,000 (one run): natural key, an hour back {key_ms:.0} ms ({key_found} found), \
         hash index {hash_ms:.0} ms ({hash_found} found); the hash index: {:.1} bytes a trade, \
         built in {build_s:.1} s",
        index_bytes as f64 / n as f64
    );
    Ok(())
}

fn sizes(db: &BenchDb, relation: &str, n: u64, name: &str) -> Result<f64> {
    let mut c = db.client()?;
    let row = c.query_one(
        "WITH parts AS (
             SELECT relid FROM pg_partition_tree($1::text::regclass) WHERE isleaf
             UNION ALL SELECT $1::text::regclass WHERE NOT EXISTS
                 (SELECT 1 FROM pg_partition_tree($1::text::regclass) WHERE NOT isleaf))
         SELECT sum(pg_relation_size(relid))::bigint, sum(pg_indexes_size(relid))::bigint,
                sum(pg_total_relation_size(relid))::bigint
         FROM parts",
        &[&relation],
    )?;
    let (heap, indexes, total): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let dictionary: i64 = c
        .query_one(
            "SELECT coalesce(pg_total_relation_size(to_regclass('tokens')), 0)",
            &[],
        )?
        .get(0);
    let per = |b: i64| b as f64 / n as f64;
    let all = per(total + dictionary);
    println!(
        "{name}: {all:.0} bytes/trade all-in (heap {:.0}, indexes {:.0}, TOAST {:.1}, token dictionary {:.1})",
        per(heap),
        per(indexes),
        per(total - heap - indexes),
        per(dictionary)
    );
    Ok(all)
}

/// (execution ms, shared buffers hit + read, the plan's top nodes) of `sql`'s second run.
fn explain(db: &BenchDb, sql: &str) -> Result<(f64, i64, String)> {
    let mut c = db.client()?;
    let q = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}");
    // The simple protocol hands the plan over as text (EXPLAIN's JSON is of type json).
    c.simple_query(&q)?;
    let text = c
        .simple_query(&q)?
        .into_iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .ok_or("EXPLAIN returned no plan")?;
    let text: serde_json::Value = serde_json::from_str(&text)?;
    let plan = &text[0];
    let ms = plan["Execution Time"].as_f64().unwrap_or(0.0);
    let top = &plan["Plan"];
    let buffers = top["Shared Hit Blocks"].as_i64().unwrap_or(0)
        + top["Shared Read Blocks"].as_i64().unwrap_or(0);
    let mut nodes = Vec::new();
    collect_scans(top, &mut nodes);
    nodes.sort();
    nodes.dedup();
    Ok((ms, buffers, nodes.join(", ")))
}

/// The scan nodes of a plan (what each relation is read through).
fn collect_scans(node: &serde_json::Value, out: &mut Vec<String>) {
    if let Some(kind) = node["Node Type"].as_str()
        && kind.contains("Scan")
    {
        let on = node["Index Name"]
            .as_str()
            .or(node["Relation Name"].as_str())
            .unwrap_or("");
        // One line for every monthly partition: trade_tape_2026_05_… → trade_tape_M_….
        let on = match on.strip_prefix("trade_tape_") {
            Some(rest) if rest.len() >= 7 && rest.as_bytes()[0].is_ascii_digit() => {
                format!("trade_tape_M{}", &rest[7..])
            }
            _ => on.to_owned(),
        };
        out.push(format!("{kind} {on}"));
    }
    if let Some(children) = node["Plans"].as_array() {
        for c in children {
            collect_scans(c, out);
        }
    }
}
