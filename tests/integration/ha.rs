//! Several replicas on one PostgreSQL, end to end: real `runbookd` binaries,
//! a real PostgreSQL cluster of the test's own and real Alertmanager peers,
//! all on loopback. Steps leave one marker file per execution, named after
//! the alert's key, so "nothing ran twice" is counted on disk.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::alertmanager::{self, free_port, post_to_alertmanager, start_alertmanager, wait_until};
use crate::helpers::{open_tempdir, runbook_dir, Served};
use crate::pg::{self, Pg};

const LEASE: &str = "3s";

/// A runbook whose steps leave `MARKS/KEY.XXXXXX` and then sleep `sleep`.
fn marking_runbook(marks: &Path, sleep: &str, idempotent: bool) -> String {
    format!(
        r#"name: marked
title: Marked
matchers: [alertname =~ "Ha.*"]
concurrency: 1000
idempotent: {idempotent}
steps:
  - name: mark
    run: [mktemp, "{marks}/{{{{labels.key}}}}.XXXXXX"]
    writable_paths: [{marks}]
  - name: work
    run: [sh, -c, 'echo working; exec sleep "$1"', sh, "{sleep}"]
"#,
        marks = marks.display()
    )
}

/// Executions per key, from the markers.
fn executions(marks: &Path) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(marks).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let key = name
            .rsplit_once('.')
            .map_or(name.clone(), |(k, _)| k.to_owned());
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// The operator of every replica of a [`Cluster`].
const OPS_TOKEN: &str = "ops-token-5e1f";
/// The Alertmanagers' credential on every replica's webhook.
const HOOK_TOKEN: &str = "hook-token-77c2";

/// A client of the cluster's operator.
fn ops_client() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {OPS_TOKEN}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}

struct Cluster {
    /// Each replica's `--kill-grace`.
    kill_grace: &'static str,
    pg: Pg,
    url: String,
    runbooks: tempfile::TempDir,
    marks: tempfile::TempDir,
    data: tempfile::TempDir,
    replicas: Vec<Option<Served>>,
}

impl Cluster {
    fn start(n: usize, sleep: &str, idempotent: bool) -> Cluster {
        Cluster::start_with_grace(n, sleep, idempotent, "500ms")
    }

    fn start_with_grace(
        n: usize,
        sleep: &str,
        idempotent: bool,
        kill_grace: &'static str,
    ) -> Cluster {
        let pg = Pg::start();
        let url = pg.database();
        let marks = open_tempdir();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(marks.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let runbooks =
            runbook_dir(&[("m.yaml", &marking_runbook(marks.path(), sleep, idempotent))]);
        let mut c = Cluster {
            kill_grace,
            pg,
            url,
            runbooks,
            marks,
            data: tempfile::tempdir().unwrap(),
            replicas: Vec::new(),
        };
        // Replicas share their people (each would make an operator
        // credential of its own without them).
        let token = c.data.path().join("ops.token");
        crate::helpers::write_with_mode(&token, OPS_TOKEN, 0o600);
        let hook = c.data.path().join("hook.token");
        crate::helpers::write_with_mode(&hook, HOOK_TOKEN, 0o600);
        std::fs::write(
            c.data.path().join("runbookd.yaml"),
            format!(
                "auth: {{bearer_token_file: {}, users: [{{name: ops, token_file: {}, role: operator}}]}}\n",
                hook.display(),
                token.display()
            ),
        )
        .unwrap();
        for i in 0..n {
            let r = c.replica(i);
            c.replicas.push(Some(r));
        }
        c
    }

    fn replica(&self, i: usize) -> Served {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbookd"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--runbooks"])
            .arg(self.runbooks.path())
            .arg("--data-dir")
            .arg(self.data.path().join(format!("r{i}")))
            .args(["--store", &self.url, "--replica", &format!("replica-{i}")])
            .args(["--lease", LEASE, "--kill-grace", self.kill_grace])
            .arg("--config")
            .arg(self.data.path().join("runbookd.yaml"))
            .env("RUNBOOKD_LOG", "warn")
            .stderr(std::fs::File::create(self.data.path().join(format!("r{i}.log"))).unwrap());
        Served::start(cmd)
    }

    fn url(&self, i: usize) -> String {
        self.replicas[i].as_ref().unwrap().url.clone()
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.data.path().join(format!("r{i}.log"))).unwrap_or_default()
    }

    fn sql(&self, q: &str) -> String {
        self.pg.psql(&self.url, q)
    }

    /// The index of the replica executing `runbook`'s run (of two).
    fn owner_of(&self, runbook: &str) -> usize {
        let owner = self.sql(&format!(
            "SELECT owner FROM runs WHERE runbook = '{runbook}' AND state = 'running'"
        ));
        match owner.as_str() {
            "replica-0" => 0,
            "replica-1" => 1,
            other => panic!("no replica runs `{runbook}`: owner {other:?}"),
        }
    }

    /// The alert key of every run.
    fn run_keys(&self) -> Vec<String> {
        self.sql("SELECT a.labels::jsonb ->> 'key' FROM runs r JOIN alerts a ON a.incident_id = r.incident_id AND a.fingerprint = r.fingerprint AND a.starts_at = r.starts_at")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The runs' states, counted.
    fn states(&self) -> String {
        self.sql("SELECT string_agg(state || '=' || n, ',' ORDER BY state) FROM (SELECT state, COUNT(*) n FROM runs GROUP BY state) s")
    }
}

fn alert(key: &str) -> Vec<u8> {
    crate::app::notification(
        &format!("{{}}:{{key=\"{key}\"}}"),
        &[(
            &json!({"alertname": "HaLoad", "key": key}),
            "firing",
            "2026-11-24T08:00:00Z",
        )],
    )
}

async fn post(client: &reqwest::Client, url: &str, body: &[u8]) -> Option<u16> {
    client
        .post(format!("{url}/webhook"))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Two Alertmanager peers gossiping on loopback, each sending to a
/// different replica of three: every alert runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_ha_pair_and_three_replicas_run_each_alert_once() {
    if !pg::available() || !crate::exec::require(alertmanager::binary().is_some(), "alertmanager") {
        return;
    }
    let bin = alertmanager::binary().unwrap();
    let c = Cluster::start(3, "0.2", false);
    let (p1, p2) = (free_port(), free_port());
    let gossip = |me: u16, peer: u16| {
        vec![
            format!("--cluster.listen-address=127.0.0.1:{me}"),
            format!("--cluster.advertise-address=127.0.0.1:{me}"),
            format!("--cluster.peer=127.0.0.1:{peer}"),
            "--cluster.peer-timeout=100ms".to_owned(),
            "--cluster.gossip-interval=50ms".to_owned(),
            "--cluster.pushpull-interval=1s".to_owned(),
        ]
    };
    let am1 = start_alertmanager(
        &bin,
        &format!("{}/webhook", c.url(0)),
        HOOK_TOKEN,
        &gossip(p1, p2),
    )
    .await;
    let am2 = start_alertmanager(
        &bin,
        &format!("{}/webhook", c.url(1)),
        HOOK_TOKEN,
        &gossip(p2, p1),
    )
    .await;
    // Prometheus sends every alert to every Alertmanager, with the time it
    // became active (the peers would otherwise stamp their own, and a
    // notification from the slower peer, should gossip lag under load,
    // would be a new occurrence of the alert).
    let active_at = chrono::Utc::now().to_rfc3339();
    let alerts: Vec<Value> = (0..5)
        .map(|i| json!({"labels": {"alertname": "HaPair", "key": format!("pair-{i}")}, "startsAt": active_at}))
        .collect();
    post_to_alertmanager(&am1, &json!(alerts)).await;
    post_to_alertmanager(&am2, &json!(alerts)).await;
    wait_until("five runs to succeed", 60, || async {
        c.sql("SELECT COUNT(*) FROM runs WHERE state = 'succeeded'") == "5"
    })
    .await;
    // Resends (repeat_interval 4s) and the second peer's deliveries keep
    // arriving for a while: none may start a second run.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let counts = executions(c.marks.path());
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(
        counts.values().all(|n| *n == 1),
        "an alert ran twice: {counts:?}"
    );
    assert_eq!(c.states(), "succeeded=5");
    assert_eq!(c.sql("SELECT COUNT(*) FROM incidents"), "1");
    let from = c.sql("SELECT COUNT(DISTINCT owner_of) FROM (SELECT substring(message from 'on (replica-[0-9])') owner_of FROM timeline WHERE kind = 'run' AND message LIKE '%started%') s");
    let delivered = c.sql("SELECT COUNT(*) FROM notifications");
    eprintln!("notifications delivered: {delivered}; replicas that executed runs: {from}");
    assert!(
        delivered.parse::<u32>().unwrap() >= 2,
        "both peers or resends delivered"
    );
    drop((am1, am2));
}

/// kill -9 of the replica running a long step: another replica takes the run
/// over after the lease, the step is not run again, and the incident says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_run_is_taken_over_and_not_run_twice() {
    if !pg::available() {
        return;
    }
    let mut c = Cluster::start(2, "30", false);
    let client = ops_client();
    assert_eq!(post(&client, &c.url(0), &alert("killed")).await, Some(200));
    wait_until("the step to start", 20, || async {
        executions(c.marks.path()).len() == 1
    })
    .await;
    wait_until("the work step's output to be stored", 20, || async {
        c.sql("SELECT count(*) FROM step_output") != "0"
    })
    .await;
    let victim = c.owner_of("marked");
    let t = Instant::now();
    c.replicas[victim].as_mut().unwrap().kill9();
    wait_until("the run to be taken over", 30, || async {
        c.sql("SELECT state FROM runs") == "interrupted"
    })
    .await;
    let took = t.elapsed();
    eprintln!("taken over {took:?} after kill -9 (lease {LEASE})");
    assert!(
        took >= Duration::from_secs(2),
        "taken over before the lease expired ({took:?})"
    );
    let reason = c.sql("SELECT reason FROM runs");
    assert!(
        reason.contains(&format!("replica-{victim}")) && reason.contains("not executed again"),
        "{reason}"
    );
    let detail: Value = client
        .get(format!("{}/api/v1/incidents/INC-0001", c.url(1 - victim)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        detail["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["message"]
                .as_str()
                .unwrap()
                .contains("stopped renewing its lease")),
        "the incident says what happened: {detail:#}"
    );
    // What ran so far is kept (#23, 7): the step that finished, and the one
    // that was running with its output, and since when the owner was silent.
    assert!(
        reason.contains("step `work` was running (since ")
            && reason.contains("its owner was last heard from at "),
        "{reason}"
    );
    let steps = detail["runs"][0]["result"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{steps:#?}");
    assert_eq!(
        (
            steps[0]["name"].as_str(),
            steps[0]["outcome"]["status"].as_str()
        ),
        (Some("mark"), Some("succeeded"))
    );
    assert_eq!(
        (
            steps[1]["name"].as_str(),
            steps[1]["outcome"]["status"].as_str()
        ),
        (Some("work"), Some("interrupted"))
    );
    assert_eq!(steps[1]["attempts"][0]["stdout"], "working\n");
    assert_eq!(
        (detail["status"].as_str(), detail["run_failed"].as_bool()),
        (Some("investigating"), Some(true)),
        "an interrupted run is for people"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(executions(c.marks.path()).get("killed"), Some(&1));
}

/// An idempotent runbook's run is queued again after its replica dies and
/// runs to the end elsewhere, its attempt counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_run_is_requeued_on_another_replica() {
    if !pg::available() {
        return;
    }
    let mut c = Cluster::start(2, "4", true);
    let client = ops_client();
    assert_eq!(post(&client, &c.url(0), &alert("again")).await, Some(200));
    wait_until("the step to start", 20, || async {
        executions(c.marks.path()).len() == 1
    })
    .await;
    let victim = c.owner_of("marked");
    c.replicas[victim].as_mut().unwrap().kill9();
    wait_until("the run to succeed on the other replica", 40, || async {
        c.sql("SELECT state FROM runs") == "succeeded"
    })
    .await;
    assert_eq!(c.sql("SELECT attempt FROM runs"), "2");
    assert_eq!(
        executions(c.marks.path()).get("again"),
        Some(&2),
        "idempotent: run again, once"
    );
    // The CLI reads the shared store directly.
    let shown = crate::helpers::runbookd(&["incidents", "--store", &c.url, "show", "INC-0001"]);
    assert!(shown.status.success(), "{}", crate::helpers::stderr(&shown));
    let text = crate::helpers::stdout(&shown);
    assert!(
        text.contains("re-queued (idempotent, attempt 2)") && text.contains("succeeded"),
        "{text}"
    );
    let pm = crate::helpers::runbookd(&["postmortem", "--store", &c.url, "INC-0001"]);
    assert!(pm.status.success(), "{}", crate::helpers::stderr(&pm));
    assert!(
        crate::helpers::stdout(&pm).contains("`marked` step `mark` succeeded"),
        "{}",
        crate::helpers::stdout(&pm)
    );
}

fn step_processes(token: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(token)
            })
        })
        .count()
}

/// SIGSTOP a replica past its lease, then SIGCONT: the run is taken over
/// meanwhile, the stale owner writes nothing and its step is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_fences_itself_when_it_wakes() {
    use nix::sys::signal::{kill, Signal};
    if !pg::available() {
        return;
    }
    let c = Cluster::start(2, "47.25", false);
    let client = ops_client();
    assert_eq!(post(&client, &c.url(0), &alert("paused")).await, Some(200));
    wait_until("the step to start", 20, || async {
        step_processes("sleep 47.25") == 1
    })
    .await;
    let victim = c.owner_of("marked");
    let pid = c.replicas[victim].as_ref().unwrap().pid();
    kill(pid, Signal::SIGSTOP).unwrap();
    wait_until("the run to be taken over", 30, || async {
        c.sql("SELECT state FROM runs") == "interrupted"
    })
    .await;
    let timeline_before = c.sql("SELECT COUNT(*) FROM timeline");
    assert_eq!(
        step_processes("sleep 47.25"),
        1,
        "a paused host cannot be stopped from outside (documented)"
    );
    kill(pid, Signal::SIGCONT).unwrap();
    wait_until("the stale owner to stop its step", 10, || async {
        step_processes("sleep 47.25") == 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        c.sql("SELECT state FROM runs"),
        "interrupted",
        "the stale owner recorded nothing"
    );
    assert_eq!(
        c.sql("SELECT COUNT(*) FROM timeline"),
        timeline_before,
        "the stale owner wrote nothing"
    );
    assert_eq!(executions(c.marks.path()).get("paused"), Some(&1));
    let log = c.log(victim);
    assert!(
        log.contains("fenced") || log.contains("taken over"),
        "the replica says why it stopped: {log}"
    );
}

/// 1,000 notifications over three replicas, each sent to two of them as an
/// HA pair would, with one replica killed (kill -9) in the middle:
/// nothing acknowledged is lost and no run key executes twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_notifications_and_a_kill_lose_nothing_and_run_nothing_twice() {
    if !pg::available() {
        return;
    }
    let mut c = Cluster::start(3, "0", false);
    let client = ops_client();
    let urls: Vec<String> = (0..3).map(|i| c.url(i)).collect();
    let mut acked = std::collections::BTreeSet::new();
    let mut refused = 0;
    for batch in 0..20 {
        if batch == 10 {
            c.replicas[2].as_mut().unwrap().kill9();
        }
        let mut sends = Vec::new();
        for j in 0..50 {
            let key = format!("n{:04}", batch * 50 + j);
            let body = alert(&key);
            // Both peers of an HA pair deliver it, to two different replicas.
            let (to_one, to_other) = (urls[j % 3].clone(), urls[(j + 1) % 3].clone());
            let client = client.clone();
            sends.push(tokio::spawn(async move {
                let (one, other) = tokio::join!(
                    post(&client, &to_one, &body),
                    post(&client, &to_other, &body)
                );
                (key, one, other)
            }));
        }
        for s in sends {
            let (key, one, other) = s.await.unwrap();
            if one == Some(200) || other == Some(200) {
                acked.insert(key);
            } else {
                refused += 1;
            }
        }
    }
    assert!(
        acked.len() >= 990,
        "most notifications reach a live replica ({} acked, {refused} refused)",
        acked.len()
    );
    wait_until("every run to end", 120, || async {
        c.sql("SELECT COUNT(*) FROM runs WHERE state IN ('queued', 'running')") == "0"
    })
    .await;
    let keys = c.run_keys();
    let recorded: std::collections::BTreeSet<String> = keys.iter().cloned().collect();
    let lost: Vec<&String> = acked.difference(&recorded).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert_eq!(
        c.sql("SELECT COUNT(*) FROM runs"),
        recorded.len().to_string(),
        "one run per key"
    );
    let counts = executions(c.marks.path());
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "run keys executed twice: {twice:?}");
    eprintln!(
        "{} acknowledged, {refused} refused, runs: {}, executions: {}",
        acked.len(),
        c.states(),
        counts.len()
    );
}

/// PostgreSQL restarted under load: webhooks get 503 while it is down,
/// nothing acknowledged is lost, replicas recover without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_answers_503_meanwhile_and_loses_nothing() {
    if !pg::available() {
        return;
    }
    let mut c = Cluster::start(2, "0", false);
    let client = ops_client();
    let mut acked = Vec::new();
    let mut unavailable = 0;
    let mut ready_down = false;
    for i in 0..300 {
        if i == 100 {
            c.pg.stop();
        }
        if i == 200 {
            c.pg.restart();
        }
        let key = format!("r{i:03}");
        match post(&client, &c.url(i % 2), &alert(&key)).await {
            Some(200) => acked.push(key),
            Some(503) => unavailable += 1,
            other => panic!("a webhook during a PostgreSQL restart answered {other:?}"),
        }
        if (100..200).contains(&i) && i % 20 == 0 {
            let r = client
                .get(format!("{}/-/ready", c.url(0)))
                .send()
                .await
                .unwrap();
            ready_down |= r.status() == 503;
        }
    }
    assert!(
        unavailable > 0,
        "PostgreSQL was down, yet nothing was refused"
    );
    assert!(
        ready_down,
        "/-/ready answered 200 while PostgreSQL was down"
    );
    assert!(acked.len() >= 150, "{} acknowledged", acked.len());
    wait_until("every run to end", 60, || async {
        c.sql("SELECT COUNT(*) FROM runs WHERE state IN ('queued', 'running')") == "0"
    })
    .await;
    let keys = c.run_keys();
    let recorded: std::collections::BTreeSet<String> = keys.iter().cloned().collect();
    for k in &acked {
        assert!(recorded.contains(k), "acknowledged {k} was lost");
    }
    for i in 0..2 {
        let r = client
            .get(format!("{}/-/ready", c.url(i)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "replica {i} recovered by itself");
    }
    eprintln!(
        "{} acknowledged, {unavailable} answered 503 while PostgreSQL was down",
        acked.len()
    );
}

/// A reload asked of one replica (POST /-/reload or SIGHUP) reloads every
/// replica; cancel_on_resolved received by another replica stops the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_and_cancel_reach_every_replica() {
    if !pg::available() {
        return;
    }
    let c = Cluster::start(2, "0", false);
    let client = ops_client();
    let names = |url: String| {
        let client = client.clone();
        async move {
            let v: Value = client
                .get(format!("{url}/api/v1/runbooks"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["runbooks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names(c.url(1)).await, ["marked"]);
    std::fs::write(
        c.runbooks.path().join("slow.yaml"),
        "name: slow\nmatchers: [alertname = \"HaSlow\"]\ncancel_on_resolved: true\nsteps:\n  - name: wait\n    run: [sleep, '38.5']\n",
    )
    .unwrap();
    let r = client
        .post(format!("{}/-/reload", c.url(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until("the other replica to reload", 10, || async {
        names(c.url(1)).await.contains(&"slow".to_owned())
    })
    .await;

    let firing = |status: &str| {
        crate::app::notification(
            "{}:{alertname=\"HaSlow\"}",
            &[(
                &json!({"alertname": "HaSlow"}),
                status,
                "2026-11-24T08:00:00Z",
            )],
        )
    };
    assert_eq!(post(&client, &c.url(0), &firing("firing")).await, Some(200));
    wait_until("the slow step to start", 20, || async {
        step_processes("sleep 38.5") == 1
    })
    .await;
    let other = 1 - c.owner_of("slow");
    let t = Instant::now();
    assert_eq!(
        post(&client, &c.url(other), &firing("resolved")).await,
        Some(200)
    );
    wait_until("the owner to stop the step", 10, || async {
        step_processes("sleep 38.5") == 0
    })
    .await;
    eprintln!(
        "cancelled across replicas in {:?} (lease {LEASE}: heartbeats every 1s)",
        t.elapsed()
    );
    wait_until("the run to be cancelled", 10, || async {
        c.sql("SELECT state FROM runs WHERE runbook = 'slow'") == "cancelled"
    })
    .await;
}

/// A replica frozen in the middle of a transaction (here: holding the
/// leader row, its lease renewal having waited on a lock when SIGSTOP came)
/// does not keep its locks: PostgreSQL ends its idle session and another
/// replica takes the leader lease, so takeovers still happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_frozen_mid_transaction_does_not_block_the_others() {
    use nix::sys::signal::{kill, Signal};
    use std::io::{BufRead, Write};
    if !pg::available() {
        return;
    }
    let mut c = Cluster::start(1, "0", false);
    wait_until("replica-0 to lead", 10, || async {
        c.sql("SELECT COALESCE(MAX(owner), '') FROM leader") == "replica-0"
    })
    .await;
    // Hold the leader row so that replica-0's next renewal waits inside its
    // transaction.
    let mut held = c.pg.session(&c.url);
    let mut stdin = held.stdin.take().unwrap();
    let mut rows = std::io::BufReader::new(held.stdout.take().unwrap());
    writeln!(stdin, "BEGIN; SELECT owner FROM leader FOR UPDATE;").unwrap();
    let mut line = String::new();
    rows.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "replica-0");
    wait_until("replica-0 to wait for the lock", 10, || async {
        c.sql("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'runbookd' AND wait_event_type = 'Lock'") == "1"
    })
    .await;
    let frozen = c.replicas[0].as_ref().unwrap().pid();
    kill(frozen, Signal::SIGSTOP).unwrap();
    // Its statement now completes in the server: the frozen replica holds
    // the row, idle in its transaction.
    writeln!(stdin, "COMMIT;").unwrap();
    drop(stdin);
    let _ = held.wait();
    // Best effort: see the frozen session idle in its transaction. Under
    // load, PostgreSQL's idle-in-transaction timeout (2 s) may end it
    // before a poll sees it; the takeover below is what must happen.
    let seen_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < seen_until
        && c.sql("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'runbookd' AND state = 'idle in transaction'") == "0"
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = c.replica(1);
    c.replicas.push(Some(other));
    let t = Instant::now();
    wait_until("replica-1 to take the leader lease", 20, || async {
        c.sql("SELECT owner FROM leader") == "replica-1"
    })
    .await;
    eprintln!("leader lease passed on {:?} after the freeze", t.elapsed());
    kill(frozen, Signal::SIGCONT).unwrap();
}

/// #23, item 1: an idle replica claims runs whose steps outlast the point
/// where an unrenewed lease is fenced (1.5 s with a 3 s lease and a 1 s
/// kill grace, as 7.5 s with the defaults: 15 s and 5 s): each lease is
/// renewed when due by its own clock, whatever the heartbeat loop saw
/// before it slept, so every run succeeds and none is fenced. (Before,
/// a run claimed while the loop slept was fenced at its deadline.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_idle_replica_never_fences_its_own_runs() {
    if !pg::available() {
        return;
    }
    let c = Cluster::start_with_grace(1, "2.6", false, "1s");
    let client = ops_client();
    for i in 0..6 {
        // Idle between runs: the loop sleeps, and the next claim comes
        // at any point of that sleep.
        tokio::time::sleep(Duration::from_millis(150 * i)).await;
        assert_eq!(
            post(&client, &c.url(0), &alert(&format!("idle-{i}"))).await,
            Some(200)
        );
        wait_until("the run to end", 20, || async {
            c.sql("SELECT COUNT(*) FROM runs WHERE state NOT IN ('queued', 'running')")
                == (i + 1).to_string()
        })
        .await;
    }
    assert_eq!(c.states(), "succeeded=6", "a run was fenced");
    let metrics = client
        .get(format!("{}/metrics", c.url(0)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("runbookd_fenced_runs_total 0"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("fenced") || l.contains("runs_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
