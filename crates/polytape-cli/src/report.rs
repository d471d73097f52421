//! `polytape report --since 7d --out tape.html`: the tape at a glance, in one self-contained
//! HTML file (inline SVG and CSS, nothing fetched from anywhere): a heatmap of markets (the
//! busiest first) by hour, coloured complete / filled / holes / no trusted book; trades per
//! hour by source; the gaps on a timeline with their fill state; the database's size per
//! table. Its numbers are the audit's (`audit::rows`, one query), down to the totals line.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::Result;
use crate::audit::{self, AuditRow};
use crate::cli::{Common, ReportArgs};

/// Escapes text for HTML (market names come from the network).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A cell's state, worst first: what the heatmap colours.
fn state(r: &AuditRow) -> &'static str {
    match r.verdict() {
        "holes" => "holes",
        _ if r.blind_minutes > 0.0 => "nobook",
        "filled" => "filled",
        _ => "complete",
    }
}

/// The audit line of one market-hour, as a tooltip (the same numbers `polytape audit`
/// prints).
pub(crate) fn cell_title(r: &AuditRow) -> String {
    format!(
        "{} {}: feed {}, filled in {}, holes open {}, holes filled {}, {:.1} min without a trusted book: {}; {}",
        r.hour,
        r.market,
        r.feed,
        r.filled,
        r.holes_open,
        r.holes_filled,
        r.blind_minutes,
        r.verdict(),
        r.chain()
    )
}

pub(crate) fn report(common: &Common, args: &ReportArgs) -> Result {
    let config = common.config()?;
    let mut db = polytape::store::connect(&config)?;
    let rows = audit::rows(&mut db, args.since, None)?;
    let since = args.since as f64;
    let gaps = db.query(
        "SELECT id, to_char(from_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                (extract(epoch FROM from_ts) * 1000)::bigint,
                (extract(epoch FROM to_ts) * 1000)::bigint, filled_at IS NOT NULL,
                coalesce(array_length(asset_ids, 1), 0), reason
         FROM gaps
         WHERE to_ts >= 'epoch'::timestamptz + $1::float8 * interval '1 millisecond'
         ORDER BY from_ts",
        &[&since],
    )?;
    let sizes = db.query(
        "SELECT t.name, (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint
                         FROM pg_partition_tree(t.name::regclass))
         FROM unnest(ARRAY['trade_tape', 'tokens', 'markets', 'gaps', 'sessions',
                           'trades_rejected', 'resolutions', 'book_snapshot', 'book_files',
                           'price_bar', 'tape_partitions']) AS t(name)
         WHERE to_regclass(t.name) IS NOT NULL
         ORDER BY 2 DESC",
        &[],
    )?;
    let html = render(&rows, &gaps, &sizes, args)?;
    std::fs::write(&args.out, &html)?;
    println!(
        "wrote {} ({} bytes): {} market-hours, {} gaps",
        args.out.display(),
        html.len(),
        rows.len(),
        gaps.len()
    );
    Ok(())
}

fn render(
    rows: &[AuditRow],
    gaps: &[postgres::Row],
    sizes: &[postgres::Row],
    args: &ReportArgs,
) -> Result<String> {
    // Markets, the busiest first; hours in order.
    let mut busy: HashMap<&str, i64> = HashMap::new();
    let mut hours: Vec<&str> = rows.iter().map(|r| r.hour.as_str()).collect();
    hours.sort_unstable();
    hours.dedup();
    for r in rows {
        *busy.entry(&r.market).or_default() += r.feed + r.filled;
    }
    let mut markets: Vec<(&str, i64)> = busy.into_iter().collect();
    markets.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    // The busiest `--top` are drawn (a week of 20,000 markets would be ~500 MB of cells);
    // the rest are one line of sums.
    let rest: Vec<&str> = if args.top > 0 && markets.len() > args.top {
        markets
            .split_off(args.top)
            .into_iter()
            .map(|m| m.0)
            .collect()
    } else {
        Vec::new()
    };
    let row_of: HashMap<&str, usize> = markets.iter().enumerate().map(|(i, m)| (m.0, i)).collect();
    let col_of: HashMap<&str, usize> = hours.iter().enumerate().map(|(i, h)| (*h, i)).collect();
    let (cw, ch, left, top) = (14usize, 10usize, 260usize, 40usize);
    let mut h = String::with_capacity(rows.len() * 200 + 10_000);
    let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>polytape tape report</title>\
         <style>body{{font:13px system-ui,sans-serif;margin:24px;color:#222}}h2{{margin-top:28px}}\
         .complete{{fill:#3a9d5d}}.filled{{fill:#4a7fd4}}.holes{{fill:#d9463b}}.nobook{{fill:#e5a33b}}\
         .feed{{fill:#3a9d5d}}.api{{fill:#4a7fd4}}.open{{fill:#d9463b}}.closed{{fill:#4a7fd4}}\
         text{{font-size:10px}}table{{border-collapse:collapse}}td,th{{padding:2px 10px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}.legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}}</style>\
         </head><body><h1>polytape: the tape since {}</h1><p>generated {generated}</p>\
         <p id=\"totals\">{}</p>",
        chrono::DateTime::from_timestamp_millis(args.since)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default(),
        esc(&audit::totals_line(rows))
    );
    // The heatmap.
    let (w, hgt) = (left + hours.len() * cw + 10, top + markets.len() * ch + 10);
    let _ = write!(
        h,
        "<h2>Markets by hour</h2><p class=\"legend\"><span style=\"background:#3a9d5d\"></span>complete\
         <span style=\"background:#4a7fd4\"></span>filled<span style=\"background:#d9463b\"></span>holes\
         <span style=\"background:#e5a33b\"></span>no trusted book</p>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hgt}\">"
    );
    for (i, hour) in hours.iter().enumerate() {
        if i % 6 == 0 {
            let _ = write!(
                h,
                "<text x=\"{}\" y=\"{}\">{}</text>",
                left + i * cw,
                top - 8,
                esc(&hour[5..])
            );
        }
    }
    for (i, (m, _)) in markets.iter().enumerate() {
        let _ = write!(
            h,
            "<text x=\"0\" y=\"{}\">{}</text>",
            top + i * ch + ch - 2,
            esc(&audit::fit(m.to_string(), 40))
        );
    }
    for r in rows {
        let (Some(&y), Some(&x)) = (row_of.get(r.market.as_str()), col_of.get(r.hour.as_str()))
        else {
            continue;
        };
        let _ = write!(
            h,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" class=\"{}\"><title>{}</title></rect>",
            left + x * cw,
            top + y * ch,
            cw - 1,
            ch - 1,
            state(r),
            esc(&cell_title(r))
        );
    }
    h.push_str("</svg>");
    if !rest.is_empty() {
        let rest: std::collections::HashSet<&str> = rest.into_iter().collect();
        let (mut feed, mut filled, mut holes, mut hours_with_holes) = (0i64, 0i64, 0i64, 0usize);
        for r in rows.iter().filter(|r| rest.contains(r.market.as_str())) {
            feed += r.feed;
            filled += r.filled;
            holes += r.holes_open;
            hours_with_holes += usize::from(r.holes_open > 0);
        }
        let _ = write!(
            h,
            "<p id=\"rest\">and {} more markets (not drawn; <code>--top</code> to draw more): \
             {feed} trades from the feed, {filled} filled in, {holes} holes open in \
             {hours_with_holes} market-hours</p>",
            rest.len()
        );
    }
    // Trades per hour by source.
    let mut per_hour: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for r in rows {
        let e = per_hour.entry(&r.hour).or_default();
        e.0 += r.feed;
        e.1 += r.filled;
    }
    let most = per_hour
        .values()
        .map(|(f, d)| f + d)
        .max()
        .unwrap_or(1)
        .max(1);
    let (bh, bw) = (160usize, 12usize);
    let _ = write!(
        h,
        "<h2>Trades per hour</h2><p class=\"legend\"><span style=\"background:#3a9d5d\"></span>from the feed\
         <span style=\"background:#4a7fd4\"></span>filled in from the Data API (most in an hour: {most})</p>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\">",
        per_hour.len() * bw + 10,
        bh + 10
    );
    for (i, (hour, (feed, filled))) in per_hour.iter().enumerate() {
        let fh = (*feed as f64 / most as f64 * bh as f64).round() as usize;
        let dh = (*filled as f64 / most as f64 * bh as f64).round() as usize;
        let x = i * bw;
        let _ = write!(
            h,
            "<g><title>{}: {feed} from the feed, {filled} filled in</title>\
             <rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{fh}\" class=\"feed\"/>\
             <rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{dh}\" class=\"api\"/></g>",
            esc(hour),
            bh - fh,
            bw - 2,
            bh - fh - dh,
            bw - 2
        );
    }
    h.push_str("</svg>");
    // Gaps on a timeline.
    let span = |r: &postgres::Row| -> Result<(i64, i64)> { Ok((r.try_get(2)?, r.try_get(3)?)) };
    let mut t0 = i64::MAX;
    let mut t1 = i64::MIN;
    for g in gaps {
        let (a, b) = span(g)?;
        t0 = t0.min(a);
        t1 = t1.max(b);
    }
    let width = 900.0;
    let _ = write!(
        h,
        "<h2>Gaps ({})</h2><p class=\"legend\"><span style=\"background:#4a7fd4\"></span>filled\
         <span style=\"background:#d9463b\"></span>open</p>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\">",
        gaps.len(),
        width as usize + 20,
        gaps.len() * 8 + 10
    );
    let range = (t1 - t0).max(1) as f64;
    for (i, g) in gaps.iter().enumerate() {
        let (a, b) = span(g)?;
        let id: i64 = g.try_get(0)?;
        let from: String = g.try_get(1)?;
        let filled: bool = g.try_get(4)?;
        let tokens: i32 = g.try_get(5)?;
        let reason: String = g.try_get(6)?;
        let x = (a - t0) as f64 / range * width;
        let w = ((b - a) as f64 / range * width).max(2.0);
        let _ = write!(
            h,
            "<rect x=\"{x:.1}\" y=\"{}\" width=\"{w:.1}\" height=\"6\" class=\"{}\"><title>gap {id} from {from} UTC, {} s, {tokens} tokens, {}: {}</title></rect>",
            i * 8,
            if filled { "closed" } else { "open" },
            (b - a) / 1000,
            if filled { "filled" } else { "open" },
            esc(&reason)
        );
    }
    h.push_str("</svg>");
    // The database's size per table.
    h.push_str("<h2>Database size</h2><table><tr><th>table</th><th>bytes (with indexes, all partitions)</th></tr>");
    for s in sizes {
        let (name, bytes): (String, i64) = (s.try_get(0)?, s.try_get(1)?);
        let _ = write!(h, "<tr><td>{}</td><td>{bytes}</td></tr>", esc(&name));
    }
    h.push_str("</table></body></html>\n");
    Ok(h)
}
