//! Helpers named after what a user does: run `runbookd`, write runbooks and
//! payloads, read a plan.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

/// The repository root; commands run from here, as a user would.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/alertmanager").join(name)
}

/// Every captured Alertmanager payload (`*.json`).
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/alertmanager"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    assert!(v.len() >= 15, "fixtures missing: {v:?}");
    v
}

/// Runs `runbookd ARGS` from the repository root.
pub fn runbookd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("runbookd starts")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `run --plan --output json` of a payload file against a runbook directory.
pub fn plan_json(payload: &Path, runbooks: &Path) -> (Output, Value) {
    let out = runbookd(&[
        "run",
        "--plan",
        "--output",
        "json",
        "--alert",
        payload.to_str().unwrap(),
        "--runbooks",
        runbooks.to_str().unwrap(),
    ]);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("plan is JSON ({e}): {}{}", stdout(&out), stderr(&out)));
    (out, v)
}

/// A directory of runbooks written from `(file name, YAML)` pairs.
pub fn runbook_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// A firing notification of one alert with these labels, written to `dir`.
pub fn write_alert(dir: &Path, labels: &Value) -> PathBuf {
    let payload = json!({
        "receiver": "runbookd",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": {"summary": "test alert"},
            "startsAt": "2026-11-24T08:28:24.076141237Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example/graph",
            "fingerprint": "0123456789abcdef"
        }],
        "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "version": "4",
        "groupKey": "{}:{alertname=\"x\"}",
        "truncatedAlerts": 0
    });
    let path = dir.join("alert.json");
    std::fs::write(&path, serde_json::to_vec(&payload).unwrap()).unwrap();
    path
}
