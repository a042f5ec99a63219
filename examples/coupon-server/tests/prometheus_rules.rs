//! The shipped Prometheus files (`deploy/prometheus`) checked by `promtool`: the
//! configuration and the rules are valid, every alert fires in `promtool test rules`
//! on the series it names, and every metric the rules and the Grafana dashboard query
//! is one the code exports.

mod support;

use std::path::Path;
use std::process::Command;

use coupon_testkit::{Service, service};
use support::{deploy_dir as deploy, metrics_in_rules_and_dashboard};

fn promtool(promtool: &str, args: &[&str]) -> String {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {promtool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The alert names of `alerts.yml`.
fn alerts() -> Vec<String> {
    let rules = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap();
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|name| name.trim().to_owned())
        .collect()
}

/// Every Rust source file of the workspace, read.
fn sources() -> String {
    fn walk(dir: &Path, text: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && name != "target" && name != "tests" && !name.to_string_lossy().starts_with('.') {
                walk(&path, text);
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut text = String::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."), &mut text);
    text
}

#[tokio::test]
async fn the_shipped_configuration_and_rules_are_valid() {
    let Some(promtool_path) = service(Service::Promtool).await else {
        return;
    };
    let config = promtool(&promtool_path, &["check", "config", "prometheus.yml"]);
    assert!(config.contains("1 rule files found"), "{config}");
    let rules = promtool(&promtool_path, &["check", "rules", "alerts.yml"]);
    assert!(rules.contains(&format!("{} rules found", alerts().len())), "{rules}");
}

#[tokio::test]
async fn every_alert_fires_on_its_condition_and_not_on_healthy_series() {
    let Some(promtool_path) = service(Service::Promtool).await else {
        return;
    };
    let report = promtool(&promtool_path, &["test", "rules", "alerts.test.yml"]);
    assert!(report.contains("SUCCESS"), "{report}");
    // promtool checks what a test expects; this checks every alert is expected both ways.
    let tests = std::fs::read_to_string(deploy().join("prometheus/alerts.test.yml")).unwrap();
    for alert in alerts() {
        let cases: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|case| case.contains(&format!("alertname: {alert}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{alert} is never shown silent"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_labels:")),
            "{alert} is never shown firing"
        );
    }
}

#[test]
fn the_rules_and_the_dashboard_query_only_metrics_the_code_exports() {
    let sources = sources();
    let queried = metrics_in_rules_and_dashboard();
    assert!(queried.len() >= 15, "{queried:?}");
    let missing: Vec<_> = queried
        .iter()
        .filter(|name| !sources.contains(&format!("\"{name}\"")))
        .collect();
    assert!(missing.is_empty(), "queried but never exported: {missing:?}");
}
