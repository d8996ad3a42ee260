//! End to end with the real Alertmanager (Debian `prometheus-alertmanager`)
//! on loopback: its webhook receiver points at the app under test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::app::{run_states, TestApp};
use crate::exec::require;

pub struct Alertmanager {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn binary() -> Option<PathBuf> {
    [
        "/usr/bin/prometheus-alertmanager",
        "/usr/local/bin/alertmanager",
        "/usr/bin/alertmanager",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An Alertmanager sending every alert to `webhook` (with a bearer token
/// unless `token` is empty); `cluster` replaces the no-gossip default, e.g.
/// `--cluster.listen-address=127.0.0.1:P` and `--cluster.peer=…`.
pub async fn start_alertmanager(
    bin: &PathBuf,
    webhook: &str,
    token: &str,
    cluster: &[String],
) -> Alertmanager {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let config = format!(
        r"route:
  receiver: runbookd
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 4s
receivers:
  - name: runbookd
    webhook_configs:
      - url: {webhook}
        send_resolved: true
{}",
        if token.is_empty() {
            String::new()
        } else {
            format!(
                "        http_config:\n          authorization:\n            credentials_file: {}\n",
                token_file.display()
            )
        }
    );
    let cfg = dir.path().join("alertmanager.yml");
    std::fs::write(&cfg, config).unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(if cluster.is_empty() {
            // No gossip port: nothing beyond loopback.
            vec!["--cluster.listen-address=".to_owned()]
        } else {
            cluster.to_vec()
        })
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("alertmanager starts");
    let am = Alertmanager {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .get(format!("{}/-/ready", am.url))
        .send()
        .await
        .map(|r| r.status().is_success())
        .ok()
        != Some(true)
    {
        assert!(
            Instant::now() < deadline,
            "alertmanager did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    am
}

pub async fn post_to_alertmanager(am: &Alertmanager, alerts: &Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v2/alerts", am.url))
        .json(alerts)
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "alertmanager refused the alert: {}",
        resp.text().await.unwrap()
    );
}

pub async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    secs: u64,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const RUNBOOK: &str = r#"name: e2e
title: End to end
matchers: [alertname = "RunbookdE2E"]
steps:
  - name: greet
    run: [echo, "hello from {{labels.alertname}} on {{labels.instance}}"]
on_resolved:
  - name: bye
    run: [echo, "{{labels.instance}} recovered"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_delivers_retries_resends_and_resolves_through_runbookd() {
    let Some(bin) = binary() else {
        require(
            false,
            "prometheus-alertmanager (apt-get install prometheus-alertmanager)",
        );
        return;
    };
    let token = "e2e-bearer-token";
    let app = TestApp::start(&[("e2e.yaml", RUNBOOK)], |c| {
        c.auth.bearer = Some(token.into());
    })
    .await;
    // Refuse at first: Alertmanager must retry the 503 until it is accepted.
    app.set_max_queued_runs(0);
    let am = start_alertmanager(&bin, &format!("{}/webhook", app.url), token, &[]).await;
    post_to_alertmanager(&am, &json!([{"labels": {"alertname": "RunbookdE2E", "instance": "web-7"}, "annotations": {"summary": "e2e"}, "generatorURL": "http://prometheus.example/graph"}])).await;

    wait_until("a 503 answered to Alertmanager", 20, || async {
        app.metric("runbookd_webhooks_total{outcome=\"queue_full\"} ")
            .await
            >= 1.0
    })
    .await;
    app.set_max_queued_runs(10_000);
    let inc = app
        .wait_for_incident("INC-0001", "the run after Alertmanager's retry", |v| {
            run_states(v) == ["succeeded"]
        })
        .await;
    assert_eq!(
        inc["runs"][0]["result"]["steps"][0]["attempts"][0]["stdout"],
        "hello from RunbookdE2E on web-7\n"
    );
    assert_eq!(inc["receiver"], "runbookd");
    assert_eq!(inc["group_key"], "{}:{alertname=\"RunbookdE2E\"}");

    // repeat_interval resends the same notification: recorded, never run again.
    let accepted = app
        .metric("runbookd_webhooks_total{outcome=\"accepted\"} ")
        .await;
    wait_until("a repeat_interval resend", 20, || async {
        app.metric("runbookd_webhooks_total{outcome=\"accepted\"} ")
            .await
            > accepted
    })
    .await;
    assert_eq!(
        run_states(&app.incident("INC-0001").await),
        ["succeeded"],
        "a resend started a second run"
    );

    // Resolve it in Alertmanager: the incident resolves and on_resolved runs.
    let starts = inc["alerts"][0]["starts_at"].as_str().unwrap().to_owned();
    let ends = (chrono::Utc::now() - chrono::Duration::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    post_to_alertmanager(&am, &json!([{"labels": {"alertname": "RunbookdE2E", "instance": "web-7"}, "annotations": {"summary": "e2e"}, "startsAt": starts, "endsAt": ends, "generatorURL": "http://prometheus.example/graph"}])).await;
    let inc = app
        .wait_for_incident("INC-0001", "the resolution", |v| {
            v["status"] == "resolved" && run_states(v) == ["succeeded", "succeeded"]
        })
        .await;
    assert_eq!(
        inc["runs"][1]["result"]["steps"][0]["attempts"][0]["stdout"],
        "web-7 recovered\n"
    );

    // The postmortem draft of this real incident has every section, with its data.
    let pm = app
        .client
        .get(format!("{}/api/v1/incidents/INC-0001/postmortem", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(pm.headers()["content-type"], "text/markdown; charset=utf-8");
    let pm = pm.text().await.unwrap();
    for expected in [
        "# Postmortem: End to end (INC-0001)",
        "| Severity | sev3 |",
        "| Status | resolved |",
        "## Summary\n\n1 alert(s) (RunbookdE2E) from receiver `runbookd` opened this sev3 incident at ",
        "Runbooks: `e2e` succeeded, `e2e` succeeded. The alerts ended at ",
        "## Impact\n\n- Duration: ",
        "  - **RunbookdE2E** (resolved, fingerprint ",
        "alertname=\"RunbookdE2E\", instance=\"web-7\"",
        "## Root cause\n\n_To be filled in",
        "## Detection\n\n- First alert started: ",
        "- First runbook step: 20",
        "| runbookd | `e2e` step `greet`: succeeded |",
        "| alertmanager | alert RunbookdE2E (",
        "| alertmanager | resolved: Alertmanager reports every alert of the incident resolved |",
        "## What went well\n\n- `e2e` step `greet` succeeded in ",
        "- `e2e` step `bye` succeeded in ",
        "## What went wrong\n\n- No automated step failed",
        "## Action items\n\n- [ ] Review this incident",
        "## Links\n\n- [RunbookdE2E (",
        "](http://prometheus.example/graph)",
    ] {
        assert!(pm.contains(expected), "{expected:?} missing from the postmortem:\n{pm}");
    }

    // Alertmanager's bearer credentials were accepted every time.
    assert!(
        app.metric("runbookd_webhooks_total{outcome=\"unauthorized\"} ")
            .await
            == 0.0
    );
    let without = reqwest::Client::new()
        .post(format!("{}/webhook", app.url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(without.status(), 401);
}

const SILENCING: &str = r#"name: quiet-please
matchers: ['alertname = "Noisy"']
steps:
  - name: hush
    silence:
      duration: 1h
      comment: "remediating {{labels.instance}}"
  - name: work
    run: ["/bin/sleep", "3"]
"#;

const SILENCING_UNTIL_RESOLVED: &str = r#"name: hush-until-resolved
matchers: ['alertname = "Lasting"']
steps:
  - name: hush
    silence:
      matchers: ['alertname = "Lasting"', 'instance =~ "db-.*"']
      until: resolved
"#;

/// An Alertmanager that serves only its API, and the app with these
/// runbooks silencing through it (None, after `require`, without the binary).
async fn silencing(files: &[(&str, &str)]) -> Option<(Alertmanager, TestApp)> {
    let Some(bin) = binary() else {
        require(
            false,
            "prometheus-alertmanager (apt-get install prometheus-alertmanager)",
        );
        return None;
    };
    let am = start_alertmanager(&bin, "http://127.0.0.1:9/unused", "", &[]).await;
    let am_url = am.url.clone();
    let app = TestApp::start(files, |c| {
        c.alertmanager =
            Some(runbookd::silence::Alertmanager::new(am_url.parse().unwrap(), None).unwrap());
    })
    .await;
    Some((am, app))
}

async fn silences(am: &Alertmanager) -> Vec<Value> {
    reqwest::get(format!("{}/api/v2/silences", am.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn state(s: &Value) -> &str {
    s["status"]["state"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_step_silences_the_alert_while_the_run_goes_on_and_expires_it_after() {
    let Some((am, app)) =
        silencing(&[("q.yaml", SILENCING), ("r.yaml", SILENCING_UNTIL_RESOLVED)]).await
    else {
        return;
    };
    let labels = json!({"alertname": "Noisy", "instance": "web-1"});
    assert_eq!(
        app.post_alert(crate::app::notification(
            "g-noisy",
            &[(&labels, "firing", "2026-11-24T08:00:00Z")]
        ))
        .await
        .status(),
        200
    );
    // While `work` runs, the silence is active, for the alert's labels.
    wait_until("the silence to be active", 20, || async {
        silences(&am).await.iter().any(|s| state(s) == "active")
    })
    .await;
    let active: Vec<Value> = silences(&am)
        .await
        .into_iter()
        .filter(|s| state(s) == "active")
        .collect();
    assert_eq!(active.len(), 1, "{active:#?}");
    let s = &active[0];
    assert_eq!(s["createdBy"], "runbookd");
    let comment = s["comment"].as_str().unwrap();
    assert!(
        comment.starts_with("remediating web-1 [runbookd INC-0001 run "),
        "{comment}"
    );
    let mut matchers: Vec<(String, String, bool)> = s["matchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["value"].as_str().unwrap().to_owned(),
                m["isRegex"].as_bool().unwrap(),
            )
        })
        .collect();
    matchers.sort();
    assert_eq!(
        matchers,
        [
            ("alertname".into(), "Noisy".into(), false),
            ("instance".into(), "web-1".into(), false)
        ]
    );
    let inc = app
        .wait_for_incident("INC-0001", "the run to end", |v| {
            run_states(v) == ["succeeded"]
        })
        .await;
    let id = s["id"].as_str().unwrap();
    assert_eq!(
        inc["runs"][0]["result"]["steps"][0]["silence_id"], id,
        "the incident links the silence"
    );
    let out = inc["runs"][0]["result"]["steps"][0]["attempts"][0]["stdout"]
        .as_str()
        .unwrap();
    assert!(out.contains(&format!("/#/silences/{id}")), "{out}");
    wait_until("the silence to be expired after the run", 10, || async {
        silences(&am).await.iter().all(|s| state(s) == "expired")
    })
    .await;

    // A retried step (same incident, run and step) finds its silence instead of making another.
    let client = runbookd::silence::Alertmanager::new(am.url.parse().unwrap(), None).unwrap();
    let m = runbookd::plan::SilencePlan {
        matchers: vec![runbookd::silence::ApiMatcher {
            name: "alertname".into(),
            value: "Retried".into(),
            is_regex: false,
            is_equal: true,
        }],
        duration_ms: 600_000,
        comment: String::new(),
        until: runbookd::silence::Until::RunEnd,
        alert: String::new(),
        covers_others: false,
    };
    let tag = "[runbookd INC-0099 run 7 step hush]";
    let first = client.ensure(&m, "retry", tag).await.unwrap();
    let second = client.ensure(&m, "retry", tag).await.unwrap();
    assert_eq!(first, second);
    let mine = silences(&am)
        .await
        .into_iter()
        .filter(|s| s["comment"].as_str().unwrap().contains(tag))
        .count();
    assert_eq!(mine, 1, "no duplicate silence on retry");
    client.expire(&first.id).await.unwrap();
    client.expire(&first.id).await.unwrap();

    // until: resolved — the silence outlives the run and ends with the alert.
    let lasting = json!({"alertname": "Lasting", "instance": "db-1"});
    assert_eq!(
        app.post_alert(crate::app::notification(
            "g-lasting",
            &[(&lasting, "firing", "2026-11-24T08:00:00Z")]
        ))
        .await
        .status(),
        200
    );
    let inc = app
        .wait_for_incident("INC-0002", "the silencing run to end", |v| {
            run_states(v) == ["succeeded"]
        })
        .await;
    let id = inc["runs"][0]["result"]["steps"][0]["silence_id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = silences(&am)
        .await
        .into_iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap();
    assert_eq!(state(&s), "active", "still active after the run: {s:#}");
    assert_eq!(s["matchers"][1]["isRegex"], true);
    // Run again (#23, 8): on the same incident, and the silence it keeps
    // until the alert resolves is found again, not made a second time.
    let run = inc["runs"][0]["id"].as_i64().unwrap();
    let (status, again) = crate::operators::post(
        &app,
        &format!("/api/v1/runs/{run}/rerun"),
        None,
        json!({"author": "erin"}),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["incident"], "INC-0002");
    let inc = app
        .wait_for_incident("INC-0002", "the re-run to end", |v| {
            run_states(v) == ["succeeded", "succeeded"]
        })
        .await;
    assert_eq!(
        inc["runs"][1]["result"]["steps"][0]["silence_id"],
        id.as_str()
    );
    let made: Vec<Value> = silences(&am)
        .await
        .into_iter()
        .filter(|s| s["createdBy"] == "runbookd" && s["matchers"][0]["value"] == "Lasting")
        .collect();
    assert_eq!(
        made.len(),
        1,
        "one silence for the run and its re-run: {made:#?}"
    );
    assert_eq!(
        app.get("/api/v1/incidents").await.1["total"],
        2,
        "no incident for the re-run"
    );
    assert_eq!(
        app.post_alert(crate::app::notification(
            "g-lasting",
            &[(&lasting, "resolved", "2026-11-24T08:00:00Z")]
        ))
        .await
        .status(),
        200
    );
    wait_until("the silence to expire with the alert", 10, || async {
        silences(&am)
            .await
            .iter()
            .any(|s| s["id"] == id.as_str() && state(s) == "expired")
    })
    .await;
}

/// A run that silenced its alert and then waits for approval keeps the
/// silence while it waits; cancelling it expires the silence at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_runs_silence_holds_and_ends_when_the_run_is_cancelled() {
    let rb = "name: ask\nmatchers: ['alertname = \"Risky\"']\nsteps:\n  - name: hush\n    silence: {duration: 1h}\n  - name: go\n    approve: {prompt: \"Restart?\"}\n  - name: work\n    run: [\"/bin/true\"]\n";
    let Some((am, app)) = silencing(&[("ask.yaml", rb)]).await else {
        return;
    };
    let labels = json!({"alertname": "Risky", "instance": "db-1"});
    assert_eq!(
        app.post_alert(crate::app::notification(
            "g-ask",
            &[(&labels, "firing", "2026-11-25T08:00:00Z")]
        ))
        .await
        .status(),
        200
    );
    let inc = app
        .wait_for_incident("INC-0001", "the run waiting", |v| {
            run_states(v) == ["awaiting_approval"]
        })
        .await;
    let id = inc["runs"][0]["result"]["steps"][0]["silence_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = inc["runs"][0]["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = silences(&am)
        .await
        .into_iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap();
    assert_eq!(state(&s), "active", "the silence holds while the run waits");
    let resp = app
        .client
        .post(format!("{}/api/v1/runs/{run}/cancel", app.url))
        .json(&json!({"author": "ann"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_until("the cancelled run's silence to expire", 10, || async {
        silences(&am)
            .await
            .iter()
            .any(|s| s["id"] == id.as_str() && state(s) == "expired")
    })
    .await;
}

/// #22, finding 7: an alert that carries only `alertname` (a careless or
/// hostile sender) would have its default silence cover every team's
/// alerts of that name; the silence is refused unless the runbook says
/// `covers_others`, and one that names only its own alert is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_never_covers_other_alerts_unless_the_runbook_says_so() {
    let narrow = "name: hush\nmatchers: ['alertname = \"Shared\"']\nsteps:\n  - name: hush\n    silence: {duration: 10m}\n";
    let wide = "name: hush-wide\nmatchers: ['alertname = \"Wide\"']\nsteps:\n  - name: hush\n    silence: {duration: 10m, matchers: ['alertname = \"Wide\"'], covers_others: true}\n";
    let Some((am, app)) = silencing(&[("n.yaml", narrow), ("w.yaml", wide)]).await else {
        return;
    };
    post_to_alertmanager(
        &am,
        &json!([
            {"labels": {"alertname": "Shared", "team": "payments"}},
            {"labels": {"alertname": "Shared", "team": "search"}},
            {"labels": {"alertname": "Wide", "team": "payments"}},
            {"labels": {"alertname": "Wide", "team": "search"}},
        ]),
    )
    .await;
    let fire = |group: &str, labels: Value| {
        app.post_alert(crate::app::notification(
            group,
            &[(&labels, "firing", "2026-12-01T08:00:00Z")],
        ))
    };
    assert_eq!(
        fire("g-1", json!({"alertname": "Shared"})).await.status(),
        200
    );
    let inc = app
        .wait_for_incident("INC-0001", "the silence step", crate::app::runs_ended)
        .await;
    assert_eq!(run_states(&inc), ["failed"], "{inc:#}");
    let reason = inc["runs"][0]["result"]["steps"][0]["outcome"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("would also silence 2 other alert(s)") && reason.contains("covers_others"),
        "{reason}"
    );
    assert!(silences(&am).await.is_empty(), "a silence was made");
    // The alert Alertmanager holds, named whole: its silence covers it alone.
    assert_eq!(
        fire("g-2", json!({"alertname": "Shared", "team": "payments"}))
            .await
            .status(),
        200
    );
    let inc = app
        .wait_for_incident("INC-0002", "the silence step", crate::app::runs_ended)
        .await;
    assert_eq!(run_states(&inc), ["succeeded"], "{inc:#}");
    // On purpose: the runbook says the silence covers every `Wide` alert.
    assert_eq!(
        fire("g-3", json!({"alertname": "Wide", "team": "payments"}))
            .await
            .status(),
        200
    );
    let inc = app
        .wait_for_incident("INC-0003", "the silence step", crate::app::runs_ended)
        .await;
    assert_eq!(run_states(&inc), ["succeeded"], "{inc:#}");
    assert_eq!(silences(&am).await.len(), 2);
}

/// #22, finding 8: runbookd is killed (-9) while a run holds an `until:
/// run_end` silence; the silence was recorded when made, so the restart
/// that marks the run interrupted expires it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runs_silence_is_expired_by_the_restart() {
    use crate::helpers::{serve_command, Served};
    let Some(bin) = binary() else {
        require(
            false,
            "prometheus-alertmanager (apt-get install prometheus-alertmanager)",
        );
        return;
    };
    let am = start_alertmanager(&bin, "http://127.0.0.1:9/unused", "", &[]).await;
    let runbooks = crate::helpers::runbook_dir(&[(
        "k.yaml",
        "name: k\nmatchers: ['alertname = \"Killed\"']\nsteps:\n  - name: hush\n    silence: {duration: 2h}\n  - name: long\n    run: [sleep, '30']\n",
    )]);
    let data = tempfile::tempdir().unwrap();
    let cfg = data.path().join("runbookd.yaml");
    std::fs::write(&cfg, format!("alertmanager: {{url: '{}'}}\n", am.url)).unwrap();
    let start = || {
        let mut cmd = serve_command(
            std::path::Path::new(env!("CARGO_BIN_EXE_runbookd")),
            runbooks.path(),
            &data.path().join("store"),
        );
        cmd.arg("--config").arg(&cfg);
        Served::start(cmd)
    };
    let mut served = start();
    let client = crate::helpers::operator_client(&data.path().join("store"));
    let resp = client
        .post(format!("{}/webhook", served.url))
        .header("content-type", "application/json")
        .body(crate::app::notification(
            "g-killed",
            &[(
                &json!({"alertname": "Killed", "instance": "db-9"}),
                "firing",
                "2026-12-01T08:00:00Z",
            )],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_until("the silence to be active", 20, || async {
        silences(&am).await.iter().any(|s| state(s) == "active")
    })
    .await;
    served.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        silences(&am).await.iter().any(|s| state(s) == "active"),
        "still active after the kill"
    );
    let served = start();
    wait_until(
        "the restart to expire the interrupted run's silence",
        20,
        || async { silences(&am).await.iter().all(|s| state(s) == "expired") },
    )
    .await;
    let inc = crate::app::wait_for_incident_at(
        &client,
        &served.url,
        "INC-0001",
        "the run interrupted",
        crate::app::runs_ended,
    )
    .await;
    assert_eq!(run_states(&inc), ["interrupted"]);
}

/// #23, item 2: Alertmanager sends no resolution for an alert it silences,
/// so an `until: resolved` silence swallowed its own alert's resolution.
/// runbookd asks Alertmanager's API while the silence holds: the incident
/// resolves, `on_resolved` runs and the silence ends; a silence whose
/// incident a person resolved ends too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silenced_alerts_resolution_still_resolves_its_incident() {
    let Some(bin) = binary() else {
        require(
            false,
            "prometheus-alertmanager (apt-get install prometheus-alertmanager)",
        );
        return;
    };
    let rb = "name: lasting\nmatchers: ['alertname =~ \"Lasting|Handled\"']\nsteps:\n  - name: hush\n    silence: {duration: 1h, until: resolved}\non_resolved:\n  - name: note\n    run: [echo, recovered]\n";
    // Alertmanager sends to the app, which silences through Alertmanager.
    let port = free_port();
    let token = "am-hook-token";
    let am = start_alertmanager(
        &bin,
        &format!("http://127.0.0.1:{port}/webhook"),
        token,
        &[],
    )
    .await;
    let mut am_client =
        runbookd::silence::Alertmanager::new(am.url.parse().unwrap(), None).unwrap();
    // A fresh Alertmanager: nothing to wait for in this test.
    am_client.restart_grace = Duration::ZERO;
    let app = TestApp::start(&[("l.yaml", rb)], |c| {
        c.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.alertmanager = Some(am_client.clone());
        c.auth.bearer = Some(token.into());
    })
    .await;
    let alert = json!({"labels": {"alertname": "Lasting", "instance": "db-1"}, "startsAt": "2026-12-01T08:00:00Z"});
    post_to_alertmanager(&am, &json!([alert])).await;
    let inc = app
        .wait_for_incident("INC-0001", "the silencing run", |v| {
            run_states(v) == ["succeeded"]
        })
        .await;
    let id = inc["runs"][0]["result"]["steps"][0]["silence_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Prometheus resolves it: Alertmanager holds it resolved and, silenced,
    // tells nobody.
    let mut resolved = alert.clone();
    resolved["endsAt"] = json!(chrono::Utc::now().to_rfc3339());
    post_to_alertmanager(&am, &json!([resolved])).await;
    let inc = app
        .wait_for_incident("INC-0001", "the resolution learnt from Alertmanager", |v| {
            v["status"] == "resolved" && run_states(v) == ["succeeded", "succeeded"]
        })
        .await;
    let note = inc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["phase"] == "resolution")
        .unwrap();
    assert_eq!(
        note["result"]["steps"][0]["attempts"][0]["stdout"],
        "recovered\n"
    );
    wait_until("the silence to end with its alert", 15, || async {
        silences(&am)
            .await
            .iter()
            .any(|s| s["id"] == id.as_str() && state(s) == "expired")
    })
    .await;

    // A person resolves an incident whose alert still fires: its silence ends.
    post_to_alertmanager(
        &am,
        &json!([{"labels": {"alertname": "Handled", "instance": "db-2"}}]),
    )
    .await;
    let inc = app
        .wait_for_incident("INC-0002", "the second silencing run", |v| {
            run_states(v) == ["succeeded"]
        })
        .await;
    let id = inc["runs"][0]["result"]["steps"][0]["silence_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .client
        .post(format!("{}/api/v1/incidents/INC-0002/updates", app.url))
        .json(&json!({"author": "ann", "message": "fixed by hand", "status": "resolved"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    wait_until("the silence to end with its incident", 15, || async {
        silences(&am)
            .await
            .iter()
            .any(|s| s["id"] == id.as_str() && state(s) == "expired")
    })
    .await;
}

/// `verify: {alert_resolved: true}` asks the real Alertmanager about the
/// run's alert: while it fires the step waits (each measurement recorded),
/// and once Alertmanager holds it resolved the step succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_step_waits_until_alertmanager_holds_the_alert_resolved() {
    let Some(bin) = binary() else {
        require(
            false,
            "prometheus-alertmanager (apt-get install prometheus-alertmanager)",
        );
        return;
    };
    let am = start_alertmanager(&bin, "http://127.0.0.1:9/unused", "", &[]).await;
    let mut client = runbookd::silence::Alertmanager::new(am.url.parse().unwrap(), None).unwrap();
    // Just started: by default its word on "resolved" waits out the grace.
    client.restart_grace = Duration::ZERO;
    let rb = "name: wait-gone\nmatchers: ['alertname = \"Gone\"']\nsteps:\n  - name: alert-gone\n    verify: {alert_resolved: true, interval: 200ms, timeout: 30s}\n";
    let app = TestApp::start(&[("gone.yaml", rb)], move |c| {
        c.alertmanager = Some(client);
    })
    .await;
    let labels = json!({"alertname": "Gone", "instance": "web-1"});
    let now = chrono::Utc::now();
    let firing = |ends: chrono::DateTime<chrono::Utc>| json!([{"labels": labels, "startsAt": now.to_rfc3339(), "endsAt": ends.to_rfc3339()}]);
    post_to_alertmanager(&am, &firing(now + chrono::Duration::hours(1))).await;
    assert_eq!(
        app.post_alert(crate::app::notification(
            "g-gone",
            &[(&labels, "firing", &now.to_rfc3339())]
        ))
        .await
        .status(),
        200
    );
    // It fires: the step keeps measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let inc = app.incident("INC-0001").await;
    assert_eq!(crate::app::run_states(&inc), ["running"], "{inc:#}");
    // Resolved in Alertmanager: the step succeeds.
    post_to_alertmanager(
        &am,
        &firing(chrono::Utc::now() - chrono::Duration::seconds(1)),
    )
    .await;
    let inc = app
        .wait_for_incident("INC-0001", "the verify step to end", crate::app::runs_ended)
        .await;
    let step = &inc["runs"][0]["result"]["steps"][0];
    assert_eq!(step["outcome"]["status"], "succeeded", "{inc:#}");
    let out = step["attempts"][0]["stdout"].as_str().unwrap();
    assert!(
        out.contains(" value=firing verdict=inconclusive\n")
            && out.trim_end().ends_with(" value=resolved verdict=success"),
        "{out}"
    );
}
