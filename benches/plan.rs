//! Plan and load costs. `cargo bench --bench plan`; figures in docs/benchmarks.md.
//!
//! - `plan_one_alert_of_10k_runbooks`: `Plan::build` for one firing alert
//!   against 10,000 runbooks (9,900 keyed by `alertname`, 100 with only regex
//!   matchers, so every alert is tested against those 100), rendering the
//!   matched runbook's five steps. Goal: median under 50 µs.
//! - `load_1000_runbook_files`: read, parse and validate 1,000 runbook files.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use runbookd::alert::Notification;
use runbookd::plan::Plan;
use runbookd::runbook::{load_dir, RunbookSet};

fn main() {
    divan::main();
}

fn runbook_yaml(i: usize) -> String {
    let matcher = if i % 100 == 99 {
        // No equality on alertname: checked against every alert.
        format!("alertname =~ \"Generic{i}|Other.*\"")
    } else {
        format!("alertname = \"Alert{i}\"")
    };
    format!(
        r#"name: runbook-{i}
title: Runbook {i}
severity: sev{sev}
matchers:
  - {matcher}
  - severity =~ "page|critical"
timeout: 10m
env:
  SERVICE: "{{{{labels.service}}}}"
steps:
  - name: pods
    run: [kubectl, get, pods, --selector, "app={{{{labels.service}}}}"]
    timeout: 30s
    continue_on_failure: true
  - name: logs
    shell: kubectl logs deployment/{{{{labels.service}}}} --since=10m | tail -n 50
  - name: restart
    run: [kubectl, rollout, restart, "deployment/{{{{labels.service}}}}"]
    when: '{{{{eq steps.[pods].status "succeeded"}}}}'
    retries: 2
    retry_delay: 5s
  - name: watch
    manual: Watch {{{{labels.service}}}} recover.
on_failure:
  - name: rollback
    run: [kubectl, rollout, undo, "deployment/{{{{labels.service}}}}"]
"#,
        sev = i % 4 + 1
    )
}

fn write_runbooks(n: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..n {
        std::fs::write(
            dir.path().join(format!("runbook-{i:05}.yaml")),
            runbook_yaml(i),
        )
        .expect("write");
    }
    let path = dir.path().to_owned();
    (dir, path)
}

static SET_10K: LazyLock<RunbookSet> = LazyLock::new(|| {
    let (_dir, path) = write_runbooks(10_000);
    load_dir(&path).expect("valid runbooks")
});

static FILES_1K: LazyLock<(tempfile::TempDir, PathBuf)> = LazyLock::new(|| write_runbooks(1_000));

fn notification() -> Notification {
    let body = br#"{"receiver":"runbookd","status":"firing","alerts":[{"status":"firing",
        "labels":{"alertname":"Alert4242","service":"checkout","severity":"page","instance":"web-1:9100"},
        "annotations":{"summary":"p95 above 500ms"},"startsAt":"2026-11-24T08:28:24.076141237Z",
        "endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus/graph","fingerprint":"58a4d9157c1ffbd9"}],
        "groupLabels":{"alertname":"Alert4242"},"commonLabels":{},"commonAnnotations":{},
        "externalURL":"http://alertmanager","version":"4","groupKey":"{}:{alertname=\"Alert4242\"}","truncatedAlerts":0}"#;
    Notification::from_json(body).expect("valid payload")
}

#[divan::bench]
fn plan_one_alert_of_10k_runbooks(bencher: divan::Bencher) {
    let set = &*SET_10K;
    let n = notification();
    let plan = Plan::build(&n, set, "INC-0001");
    assert_eq!(plan.alerts[0].runs.len(), 1, "exactly one runbook matches");
    assert_eq!(plan.alerts[0].runs[0].steps.len(), 4);
    bencher.bench(|| Plan::build(divan::black_box(&n), set, "INC-0001"));
}

#[divan::bench]
fn match_one_alert_of_10k_runbooks(bencher: divan::Bencher) {
    let set = &*SET_10K;
    let n = notification();
    bencher.bench(|| set.matching(divan::black_box(&n.alerts[0].labels)).len());
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn load_1000_runbook_files(bencher: divan::Bencher) {
    let path: &Path = &FILES_1K.1;
    bencher.bench(|| load_dir(path).expect("valid").len());
}
