//! The dashboard and the alert rules shipped in `deploy/` stay true: every metric a panel or
//! a rule uses is one a running daemon serves at `/metrics` (a renamed metric breaks CI, not
//! a dashboard), the dashboard is a Grafana dashboard model, the rules file parses as
//! Prometheus rule groups.

use std::collections::BTreeSet;
use std::time::Duration;

use polytape_sim::SimConfig;
use polytape_testkit::{TestDb, Watchdog, pipeline, wait_until};

use crate::daemon::{Daemon, free_addr, polytape};

const DASHBOARD: &str = include_str!("../../../../deploy/grafana/polytape.json");
const RULES: &str = include_str!("../../../../deploy/prometheus/polytape-rules.yml");

/// Metric names in a PromQL expression: ours and the process's.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("polytape_") || t.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

fn dashboard_exprs() -> Vec<String> {
    let d: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    // A dashboard model: a title, a uid, a schema version, panels on a grid, variables.
    assert!(
        d["title"].is_string() && d["uid"].is_string(),
        "title and uid"
    );
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        vars.contains(&"datasource") && vars.contains(&"instance"),
        "{vars:?}"
    );
    let panels = d["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("a panel id")),
            "panel ids are unique"
        );
        let g = &p["gridPos"];
        assert!(
            ["h", "w", "x", "y"].iter().all(|k| g[*k].is_u64()),
            "every panel on the grid: {p}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panels follow the variable"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let e = t["expr"].as_str().expect("an expression");
            assert!(
                e.contains("$instance"),
                "panels follow the instance variable: {e}"
            );
            exprs.push(e.to_owned());
        }
    }
    exprs
}

fn rule_exprs() -> Vec<String> {
    let r: serde_yaml::Value = serde_yaml::from_str(RULES).expect("the rules are YAML");
    let groups = r["groups"].as_sequence().expect("groups");
    let mut exprs = Vec::new();
    for g in groups {
        assert!(g["name"].is_string());
        for rule in g["rules"].as_sequence().expect("rules") {
            assert!(
                rule["alert"].is_string(),
                "every rule is an alert: {rule:?}"
            );
            assert!(
                rule["for"].is_string(),
                "every alert waits a while: {rule:?}"
            );
            assert!(
                rule["annotations"]["summary"].is_string()
                    && rule["annotations"]["runbook"].is_string(),
                "every alert says what is wrong and what to do: {rule:?}"
            );
            exprs.push(rule["expr"].as_str().expect("an expression").to_owned());
        }
    }
    exprs
}

#[test]
fn every_metric_the_dashboard_and_the_rules_use_is_served() {
    let _w = Watchdog::new("monitoring", Duration::from_secs(90));
    let db = TestDb::new();
    let sim = pipeline::sim_with(SimConfig {
        noise_per_trade: 2,
        ..pipeline::sim_config(10, 50.0)
    });
    let addr = free_addr();
    let mut c = polytape(&db, &sim);
    c.args(["run"]).env("POLYTAPE_HEALTH_ADDR", &addr);
    let daemon = Daemon::spawn(c);
    let mut served = String::new();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    assert!(
        wait_until(Duration::from_secs(40), || {
            served = agent
                .get(&format!("http://{addr}/metrics"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .unwrap_or_default();
            served.contains("polytape_ready 1")
        }),
        "the daemon serves /metrics and is ready"
    );
    daemon.stop(Duration::from_secs(20));
    let names: BTreeSet<&str> = served
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split([' ', '{']).next())
        .collect();
    let dashboard = dashboard_exprs();
    let rules = rule_exprs();
    let used: BTreeSet<String> = dashboard
        .iter()
        .chain(&rules)
        .flat_map(|e| metric_names(e))
        .collect();
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !names.contains(n.as_str()))
        .collect();
    assert!(missing.is_empty(), "used but not served: {missing:?}");
    assert!(
        used.len() >= 30,
        "the dashboard and rules use {} metrics",
        used.len()
    );
    eprintln!(
        "dashboard: {} expressions, rules: {} alerts, {} metrics used of {} served",
        dashboard.len(),
        rules.len(),
        used.len(),
        names.len()
    );
}
