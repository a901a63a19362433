//! The operator docs against the code: every metric an alert rule or a
//! runbook names is one a service registers, every registered metric is
//! documented, and every label value they name is one the code can write.

use std::collections::BTreeSet;
use std::path::Path;

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::fs::read_to_string(root.join(path)).unwrap()
}

/// The string literals of `text` (between double quotes on one line).
fn literals(text: &str) -> BTreeSet<String> {
    text.lines()
        .flat_map(|line| {
            line.split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// How every metric name of the project ends.
const SUFFIXES: [&str; 5] = ["_total", "_seconds", "_version", "_remaining", "_open"];

fn looks_like_metric(name: &str) -> bool {
    SUFFIXES.iter().any(|s| base_name(name).ends_with(s))
}

/// Snake-case literals of `file` that look like metric names.
fn metric_names(file: &str) -> BTreeSet<String> {
    literals(&read(file))
        .into_iter()
        .filter(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_') && looks_like_metric(l))
        .collect()
}

/// Every metric name the two services can export, with the series names
/// a histogram adds.
fn registered() -> BTreeSet<String> {
    let tls = metric_names("libs/keysilo-tls/src/metrics.rs");
    let identity = metric_names("services/identity/src/metrics.rs");
    let edge = metric_names("services/edge/src/state.rs");
    let mut names = BTreeSet::new();
    for name in identity.iter().chain(&tls) {
        names.insert(format!("keysilo_{name}"));
    }
    for name in edge.iter().chain(&tls) {
        names.insert(format!("keysilo_edge_{name}"));
    }
    assert!(names.len() >= 15, "too few metrics found: {names:?}");
    names
}

/// The `keysilo_…` names a document mentions.
fn mentioned(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("keysilo_") && word.len() > "keysilo_".len())
        .map(str::to_owned)
        .collect()
}

fn base_name(series: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| series.strip_suffix(suffix))
        .unwrap_or(series)
}

#[test]
fn every_metric_the_alerts_and_runbooks_name_exists_and_every_metric_is_documented() {
    let registered = registered();
    let alerts = read("docs/alerts/keysilo.rules.yaml");
    let operations = read("docs/operations.md");
    for (document, text) in [
        ("docs/alerts/keysilo.rules.yaml", &alerts),
        ("docs/operations.md", &operations),
        ("docs/edge.md", &read("docs/edge.md")),
        ("docs/failure-modes.md", &read("docs/failure-modes.md")),
    ] {
        for name in mentioned(text).iter().filter(|n| looks_like_metric(n)) {
            assert!(
                registered.contains(base_name(name)),
                "{document} names {name}, which no service registers"
            );
        }
    }
    let documented = mentioned(&operations);
    for name in &registered {
        assert!(
            documented.contains(name),
            "{name} is registered but not in docs/operations.md's metrics"
        );
    }
}

#[test]
fn every_label_value_the_alerts_and_runbooks_name_is_one_the_code_writes() {
    let mut code = BTreeSet::new();
    for file in [
        "services/identity/src/metrics.rs",
        "services/identity/src/routes/oauth.rs",
        "services/identity/src/oauth/service.rs",
        "services/identity/src/oauth/grants/password.rs",
        "services/identity/src/routes/keys.rs",
        "services/identity/src/keys/scheduler.rs",
        "services/edge/src/validate.rs",
        "services/edge/src/feed.rs",
        "services/edge/src/state.rs",
        "services/edge/src/routes.rs",
        "libs/keysilo-tokens/src/gate/mod.rs",
        "libs/keysilo-tls/src/metrics.rs",
        "libs/keysilo-tls/src/server.rs",
    ] {
        code.extend(literals(&read(file)));
    }
    // Labels whose values are not literals: HTTP statuses and methods,
    // tenants, Prometheus' own job label.
    let free = ["status", "job", "tenant", "method", "route", "error", "le"];
    for document in [
        "docs/alerts/keysilo.rules.yaml",
        "docs/operations.md",
        "docs/edge.md",
        "docs/failure-modes.md",
    ] {
        let text = read(document);
        for line in text.lines() {
            for (i, _) in line.match_indices("=\"") {
                let label: String = line[..i]
                    .chars()
                    .rev()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                let value = line[i + 2..].split('"').next().unwrap_or_default();
                if label.is_empty() || free.contains(&label.as_str()) {
                    continue;
                }
                assert!(
                    code.contains(value),
                    "{document} names {label}=\"{value}\", which the code never writes: {line}"
                );
            }
        }
    }
}
