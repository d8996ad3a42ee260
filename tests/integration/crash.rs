//! Crash test: kill -9 the real server repeatedly under a bounded load of
//! distinct notifications. Every notification that got a 200 must be in the
//! store; no run may execute twice; runs cut short are `interrupted`.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::app::notification;
use crate::helpers::{serve_command, Served};

/// `runbookd serve` on these runbooks and data, as a separate process.
fn start(runbooks: &std::path::Path, data: &std::path::Path) -> Served {
    Served::start(serve_command(
        std::path::Path::new(env!("CARGO_BIN_EXE_runbookd")),
        runbooks,
        data,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_acknowledged_and_runs_nothing_twice() {
    let runbooks = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let marks = tempfile::tempdir().unwrap();
    std::fs::set_permissions(marks.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let log = marks.path().join("executed.log");
    std::fs::write(
        runbooks.path().join("crash.yaml"),
        format!(
            "name: crash\nmatchers: [alertname = \"Crash\"]\nconcurrency: 16\nsteps:\n  - name: mark\n    shell: echo {{{{labels.id}}}} >> {}; sleep 0.05\n    writable_paths: [{}]\n",
            log.display(),
            marks.path().display()
        ),
    )
    .unwrap();
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut sent = 0u64;
    for round in 0..4u64 {
        let mut server = start(runbooks.path(), data.path());
        let client = crate::helpers::operator_client(data.path());
        let stop_at = Instant::now() + Duration::from_millis(400 + 150 * round);
        let mut tasks = Vec::new();
        for worker in 0..4u64 {
            let (client, url) = (client.clone(), server.url.clone());
            tasks.push(tokio::spawn(async move {
                let mut ok = Vec::new();
                for i in 0..40u64 {
                    if Instant::now() > stop_at {
                        break;
                    }
                    let id = round * 100_000 + worker * 1000 + i;
                    let body = notification(
                        &format!("crash-{id}"),
                        &[(
                            &serde_json::json!({"alertname": "Crash", "id": id.to_string()}),
                            "firing",
                            "2026-11-24T08:00:00Z",
                        )],
                    );
                    let sent = client
                        .post(format!("{url}/webhook"))
                        .header("content-type", "application/json")
                        .body(body)
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await;
                    if sent.is_ok_and(|r| r.status() == 200) {
                        ok.push(id);
                    }
                }
                ok
            }));
        }
        // Kill -9 while the load is still going.
        tokio::time::sleep(Duration::from_millis(250 + 100 * round)).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        for t in tasks {
            let ok = t.await.unwrap();
            sent += ok.len() as u64;
            acked.extend(ok);
        }
    }
    // A last start drains the queue, then stops cleanly.
    let mut server = start(runbooks.path(), data.path());
    let client = crate::helpers::operator_client(data.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats: serde_json::Value = client
            .get(format!("{}/api/v1/stats", server.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if stats["queued_runs"] == 0 && stats["runs_by_state"].get("running").is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queue did not drain: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nix::sys::signal::kill(server.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(
        server.child.wait().unwrap().success(),
        "SIGTERM stops cleanly"
    );

    assert!(
        acked.len() >= 20,
        "the load was too small to mean anything: {} acknowledged",
        acked.len()
    );
    let db = rusqlite::Connection::open(data.path().join("runbookd.db")).unwrap();
    let stored: BTreeSet<u64> = db
        .prepare("SELECT group_key FROM notifications")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|g| g.unwrap().strip_prefix("crash-").unwrap().parse().unwrap())
        .collect();
    let lost: Vec<&u64> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged notification(s) lost: {lost:?}",
        lost.len()
    );
    let mut executed: HashMap<String, usize> = HashMap::new();
    for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
        *executed.entry(line.to_owned()).or_default() += 1;
    }
    let twice: Vec<_> = executed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "runs executed twice: {twice:?}");
    let states: HashMap<String, i64> = db
        .prepare("SELECT state, COUNT(*) FROM runs GROUP BY state")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for state in states.keys() {
        assert!(
            ["succeeded", "interrupted"].contains(&state.as_str()),
            "unexpected run state {state}: {states:?}"
        );
    }
    let runs: i64 = states.values().sum();
    assert_eq!(
        runs,
        i64::try_from(stored.len()).unwrap(),
        "one run per stored notification"
    );
    let interrupted_noted: i64 = db.query_row("SELECT COUNT(*) FROM timeline WHERE message LIKE '%interrupted: runbookd stopped while the run was executing%'", [], |r| r.get(0)).unwrap();
    assert_eq!(
        interrupted_noted,
        states.get("interrupted").copied().unwrap_or(0),
        "every interrupted run is on its incident's timeline"
    );
    eprintln!(
        "crash test: 4 kill -9 rounds, {sent} acknowledged, {} stored, {} runs ({:?}), {} executed, 0 lost, 0 twice",
        stored.len(),
        runs,
        states,
        executed.len()
    );
}

#[test]
fn serve_refuses_invalid_runbooks_listing_every_error() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--runbooks",
            "tests/fixtures/runbooks-broken",
            "--data-dir",
            data.path().to_str().unwrap(),
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("b-many.yaml:2:11: runbook `many-problems`: unknown severity `sev5`"),
        "{err}"
    );
    assert!(
        err.contains("refusing to start: 22 error(s) in the runbooks"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "it never listened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_stops_cleanly() {
    let runbooks = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        runbooks.path().join("a.yaml"),
        "matchers: [alertname=A]\nsteps:\n  - name: a\n    run: ['true']\n",
    )
    .unwrap();
    let mut server = start(runbooks.path(), data.path());
    let client = crate::helpers::operator_client(data.path());
    let count = |v: serde_json::Value| v["runbooks"].as_array().unwrap().len();
    let list = || async {
        client
            .get(format!("{}/api/v1/runbooks", server.url))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    assert_eq!(count(list().await), 1);
    std::fs::write(
        runbooks.path().join("b.yaml"),
        "matchers: [alertname=B]\nsteps:\n  - name: b\n    run: ['true']\n",
    )
    .unwrap();
    let pid = server.pid();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(list().await) != 2 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An invalid set is refused; the previous one stays.
    std::fs::write(runbooks.path().join("c.yaml"), "matchers: []\nsteps: []\n").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(list().await), 2);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(server.child.wait().unwrap().success());
}
