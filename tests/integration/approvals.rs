//! Approval steps: a run waits (holding no slot) until an operator approves
//! or denies, or its timeout decides; the first decision wins; the wait
//! survives a restart; a viewer cannot decide.

use std::time::Duration;

use serde_json::{json, Value};

use crate::app::{notification, run_states, TestApp};

/// A person's decision, as the incident page and the CLI send it: it names
/// the approval the run waits on now (read first, as the page shows it)
/// unless `body` names one itself. Other posts go as they are.
async fn post(app: &TestApp, path: &str, token: Option<&str>, mut body: Value) -> (u16, Value) {
    if path.ends_with("/approval")
        && body.get("decision").is_some()
        && body.get("approval").is_none()
    {
        let (_, current) = app.get(path).await;
        if let Some(id) = current["id"].as_i64() {
            body["approval"] = json!(id);
        }
    }
    crate::operators::post(app, path, token, body).await
}

/// `before` counts its executions in `dir`; `go` asks; `after` reads
/// `before`'s output (kept across the pause); `rollback` runs on failure.
fn risky(dir: &std::path::Path, name: &str, approve: &str) -> String {
    // Steps run as an unprivileged user.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let d = dir.display();
    format!(
        "name: {name}\nmatchers: [alertname = \"{name}\"]\nconcurrency: 1\nsteps:\n  - name: before\n    shell: echo ran >> {d}/before; echo prepared-{{{{labels.instance}}}}\n    writable_paths: [\"{d}\"]\n  - name: go\n    approve: {approve}\n  - name: after\n    run: [\"/bin/echo\", \"after saw {{{{steps.before.stdout}}}}\"]\non_failure:\n  - name: rollback\n    run: [\"/bin/echo\", \"rolled back\"]\n"
    )
}

async fn fire(app: &TestApp, alertname: &str, group: &str) -> Value {
    let labels = json!({"alertname": alertname, "instance": "db1"});
    let resp = app
        .post_alert(notification(
            group,
            &[(&labels, "firing", "2026-11-25T08:00:00Z")],
        ))
        .await;
    assert_eq!(resp.status(), 200);
    app.wait_for_incident("INC-0001", "the run waiting for approval", |v| {
        run_states(v) == ["awaiting_approval"]
    })
    .await
}

fn step<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["runs"][0]["result"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
}

fn stdout(v: &Value, name: &str) -> String {
    step(v, name).map_or_else(String::new, |s| {
        s["attempts"][0]["stdout"].as_str().unwrap_or("").to_owned()
    })
}

fn timeline(v: &Value) -> Vec<(String, String)> {
    v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["author"].as_str().unwrap().to_owned(),
                t["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The operators tests' users (olga operates, victor views), with reads
/// open so that the metrics can be read without a login.
fn users(c: &mut runbookd::config::ServerConfig) {
    crate::operators::users(c);
    c.auth.protect_reads = false;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_and_the_run_goes_on_after_the_step_once() {
    let dir = tempfile::tempdir().unwrap();
    let rb = risky(
        dir.path(),
        "Risky",
        "{prompt: \"Restart {{labels.instance}}?\", timeout: 10m}",
    );
    let app = TestApp::start(&[("risky.yaml", &rb)], |c| {
        users(c);
        c.max_concurrent_steps = 1;
    })
    .await;
    let v = fire(&app, "Risky", "g-approve").await;
    let run = v["runs"][0]["id"].as_i64().unwrap();
    let a = &v["approvals"][0];
    assert_eq!(a["state"], "pending");
    assert_eq!(a["prompt"], "Restart db1?", "the prompt is rendered");
    assert_eq!(a["step"], "go");
    assert_eq!(
        step(&v, "go").unwrap()["outcome"]["status"],
        "awaiting_approval"
    );
    assert!(
        step(&v, "after").is_none(),
        "nothing after the approval ran"
    );
    assert!(timeline(&v)
        .iter()
        .any(|(_, m)| m.contains("waits for approval of step `go`: Restart db1?")));

    // A waiting run holds no slot: with one slot, another runbook's run runs.
    let other = app
        .post_alert(notification(
            "g-other",
            &[(
                &json!({"alertname": "Risky", "instance": "db2"}),
                "firing",
                "2026-11-25T08:00:00Z",
            )],
        ))
        .await;
    assert_eq!(other.status(), 200);
    app.wait_for_incident("INC-0002", "a second run waiting too", |v| {
        run_states(v) == ["awaiting_approval"]
    })
    .await;

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.metric("runbookd_runs_awaiting_approval ").await < 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the gauge counts both waiting runs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let path = format!("/api/v1/runs/{run}/approval");
    let (status, body) = post(
        &app,
        &path,
        Some("victor-token"),
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(status, 403, "a viewer cannot approve: {body}");
    assert!(body["error"].as_str().unwrap().contains("viewer"), "{body}");
    assert_eq!(
        post(
            &app,
            &path,
            Some("webhook-token"),
            json!({"decision": "approve"})
        )
        .await
        .0,
        403,
        "the webhook's credential is not an operator's"
    );
    let (status, body) = post(
        &app,
        &path,
        Some("olga-token"),
        json!({"decision": "maybe"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // A comment that would forge terminal or log output, or flood the
    // timeline, is refused; the approval stays pending.
    for comment in [
        "ok\u{1b}[2J\u{1b}[31mAPPROVED BY ADMIN".to_owned(),
        "x".repeat(2001),
    ] {
        let (status, body) = post(
            &app,
            &path,
            Some("olga-token"),
            json!({"decision": "approve", "comment": comment}),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("comment"),
            "{body}"
        );
    }
    assert_eq!(
        app.incident("INC-0001").await["approvals"][0]["state"],
        "pending"
    );
    let (status, body) = post(&app, &path, Some("olga-token"), json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("decision"),
        "{body}"
    );

    let (status, body) = post(
        &app,
        &path,
        Some("olga-token"),
        json!({"decision": "approve", "comment": "looks safe", "author": "mallory"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approval"]["state"], "approved");
    assert_eq!(
        body["approval"]["decided_by"], "olga",
        "the login, not the body"
    );
    let v = app
        .wait_for_incident("INC-0001", "the run resumed and done", |v| {
            run_states(v) == ["succeeded"]
        })
        .await;
    assert_eq!(step(&v, "go").unwrap()["outcome"]["status"], "succeeded");
    assert_eq!(step(&v, "go").unwrap()["approval"]["decided_by"], "olga");
    assert_eq!(
        stdout(&v, "after"),
        "after saw prepared-db1\n\n",
        "the steps after the approval see the results from before it"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("before")).unwrap(),
        "ran\nran\n",
        "`before` ran once per incident (two incidents), never again on resume"
    );
    assert!(timeline(&v)
        .iter()
        .any(|(who, m)| who == "olga" && m.contains("approved by olga: looks safe")));

    // The first decision won: a later one is refused with what happened.
    let (status, body) = post(&app, &path, Some("olga-token"), json!({"decision": "deny"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already decided"),
        "{body}"
    );
    let (status, _) = post(
        &app,
        "/api/v1/runs/999999/approval",
        Some("olga-token"),
        json!({"decision": "deny", "approval": 1}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_fails_the_step_and_on_failure_runs() {
    let dir = tempfile::tempdir().unwrap();
    let rb = risky(dir.path(), "Risky", "{prompt: \"Go?\"}");
    let app = TestApp::start(&[("risky.yaml", &rb)], |_| {}).await;
    let v = fire(&app, "Risky", "g-deny").await;
    let run = v["runs"][0]["id"].as_i64().unwrap();
    let (status, body) = post(
        &app,
        &format!("/api/v1/runs/{run}/approval"),
        None,
        json!({"decision": "deny", "comment": "not now", "author": "dana"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v = app
        .wait_for_incident("INC-0001", "the run failed", |v| {
            run_states(v) == ["failed"]
        })
        .await;
    let go = step(&v, "go").unwrap();
    assert_eq!(go["outcome"]["status"], "denied");
    assert!(go["outcome"]["reason"]
        .as_str()
        .unwrap()
        .contains("denied by dana: not now"));
    assert_eq!(stdout(&v, "rollback"), "rolled back\n", "on_failure ran");
    assert!(step(&v, "after").is_none(), "nothing after a denial runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_decisions_at_once_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let rb = risky(dir.path(), "Risky", "{prompt: \"Go?\"}");
    let app = TestApp::start(&[("risky.yaml", &rb)], |_| {}).await;
    let v = fire(&app, "Risky", "g-race").await;
    let run = v["runs"][0]["id"].as_i64().unwrap();
    let path = format!("/api/v1/runs/{run}/approval");
    let (a, b) = tokio::join!(
        post(
            &app,
            &path,
            None,
            json!({"decision": "approve", "author": "ann"})
        ),
        post(
            &app,
            &path,
            None,
            json!({"decision": "deny", "author": "bob"})
        ),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let winner = if a.0 == 200 { "succeeded" } else { "failed" };
    let v = app
        .wait_for_incident("INC-0001", "the run ended as the winner decided", |v| {
            run_states(v) == [winner]
        })
        .await;
    assert_eq!(v["approvals"].as_array().unwrap().len(), 1);
    let decided = timeline(&v)
        .iter()
        .filter(|(_, m)| m.contains("step `go` approved") || m.contains("step `go` denied"))
        .count();
    assert_eq!(decided, 1, "one decision recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_decides_as_on_timeout_says() {
    let dir = tempfile::tempdir().unwrap();
    let deny = risky(dir.path(), "Deny", "{prompt: \"Go?\", timeout: 1s}");
    let allow = risky(
        dir.path(),
        "Allow",
        "{prompt: \"Go?\", timeout: 1s, on_timeout: approve}",
    );
    let app = TestApp::start(&[("deny.yaml", &deny), ("allow.yaml", &allow)], |_| {}).await;
    let v = fire(&app, "Deny", "g-t1").await;
    assert_eq!(v["approvals"][0]["on_timeout"], "deny");
    let v = app
        .wait_for_incident("INC-0001", "denied by its timeout", |v| {
            run_states(v) == ["failed"]
        })
        .await;
    assert_eq!(v["approvals"][0]["state"], "timed_out");
    assert_eq!(v["approvals"][0]["decided_by"], "runbookd");
    assert_eq!(step(&v, "go").unwrap()["outcome"]["status"], "denied");
    assert_eq!(stdout(&v, "rollback"), "rolled back\n");

    let labels = json!({"alertname": "Allow", "instance": "db1"});
    assert_eq!(
        app.post_alert(notification(
            "g-t2",
            &[(&labels, "firing", "2026-11-25T08:00:00Z")]
        ))
        .await
        .status(),
        200
    );
    let v = app
        .wait_for_incident("INC-0002", "approved by its timeout", |v| {
            run_states(v) == ["succeeded"]
        })
        .await;
    assert_eq!(v["approvals"][0]["state"], "timed_out");
    assert_eq!(stdout(&v, "after"), "after saw prepared-db1\n\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_survives_a_restart_and_nothing_runs_twice() {
    let dir = tempfile::tempdir().unwrap();
    let rb = risky(dir.path(), "Risky", "{prompt: \"Go?\"}");
    let mut app = TestApp::start(&[("risky.yaml", &rb)], |_| {}).await;
    let v = fire(&app, "Risky", "g-restart").await;
    let run = v["runs"][0]["id"].as_i64().unwrap();
    app.stop().await;
    app.restart().await;
    let v = app.incident("INC-0001").await;
    assert_eq!(
        run_states(&v),
        ["awaiting_approval"],
        "still waiting, not interrupted"
    );
    assert_eq!(v["approvals"][0]["state"], "pending");
    let (status, body) = post(
        &app,
        &format!("/api/v1/runs/{run}/approval"),
        None,
        json!({"decision": "approve", "author": "ann"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v = app
        .wait_for_incident("INC-0001", "the run resumed after the restart", |v| {
            run_states(v) == ["succeeded"]
        })
        .await;
    assert_eq!(stdout(&v, "after"), "after saw prepared-db1\n\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("before")).unwrap(),
        "ran\n",
        "the step before the approval ran once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_waiting_run_withdraws_its_approval() {
    let dir = tempfile::tempdir().unwrap();
    let rb = risky(dir.path(), "Risky", "{prompt: \"Go?\"}");
    let app = TestApp::start(&[("risky.yaml", &rb)], |_| {}).await;
    let v = fire(&app, "Risky", "g-cancel").await;
    let run = v["runs"][0]["id"].as_i64().unwrap();
    let (status, body) = post(
        &app,
        &format!("/api/v1/runs/{run}/cancel"),
        None,
        json!({"author": "ann"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "cancelled");
    let v = app.incident("INC-0001").await;
    assert_eq!(run_states(&v), ["cancelled"]);
    assert_eq!(v["approvals"][0]["state"], "cancelled");
    let (status, body) = post(
        &app,
        &format!("/api/v1/runs/{run}/approval"),
        None,
        json!({"decision": "approve", "author": "ann"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        run_states(&app.incident("INC-0001").await),
        ["cancelled"],
        "it never resumes"
    );
}

#[test]
fn check_points_at_bad_approval_steps() {
    let rb = "name: d\nmatchers: [alertname = \"D\"]\ncommunication:\n  - on: [approval_requested]\n    notify: [ops]\nsteps:\n  - name: ask\n    approve: {prompt: \"Go?\", on_timeout: maybe}\n  - name: ask2\n    timeout: 5m\n    approve: {prompt: \"Go?\", timeout: 30d}\non_failure:\n  - name: ask3\n    approve: {prompt: \"Undo?\"}\n";
    let dir = crate::helpers::runbook_dir(&[("d.yaml", rb)]);
    let path = dir.path().to_str().unwrap();
    let out = crate::helpers::runbookd(&["check", path]);
    assert_eq!(out.status.code(), Some(1));
    let err = crate::helpers::stderr(&out);
    for (at, what) in [
        (
            "8:42",
            "unknown on_timeout `maybe`: expected one of deny, approve",
        ),
        (
            "10:14",
            "`timeout` does not apply to an approval step: use `approve.timeout`",
        ),
        ("11:39", "an approval waits at most 7d"),
        ("14:14", "an approval step cannot be in `on_failure`"),
    ] {
        assert!(
            err.lines().any(
                |l| l.starts_with(&format!("{path}/d.yaml:{at}: runbook `d`, step"))
                    && l.contains(what)
            ),
            "{at} {what}: {err}"
        );
    }
    assert!(
        !err.contains("approval_requested"),
        "the event is accepted now that approval steps exist: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_are_told_when_a_run_asks_for_approval() {
    use crate::notify::{notifiers, Receiver};
    let rx = Receiver::start().await;
    let yaml = format!("ops: {{type: webhook, url: '{}/ops'}}\n", rx.url);
    let rb = "name: ask\nmatchers: [alertname = \"Ask\"]\ncommunication:\n  - on: [approval_requested]\n    notify: [ops]\n    message: \"{{incident.id}} needs you: {{event}}\"\nsteps:\n  - name: go\n    approve: {prompt: \"Restart {{labels.instance}}?\"}\n";
    let app = TestApp::start(&[("ask.yaml", rb)], |c| c.notifiers = notifiers(&yaml)).await;
    fire(&app, "Ask", "g-tell").await;
    let got = rx.wait("/ops", 1).await;
    assert_eq!(got[0].body["event"], "approval_requested");
    assert_eq!(
        got[0].body["message"],
        "INC-0001 needs you: approval_requested"
    );
    assert_eq!(got[0].body["step"], "go", "{:#}", got[0].body);
    assert!(
        got[0].body["detail"]
            .as_str()
            .unwrap()
            .contains("Restart db1?"),
        "{:#}",
        got[0].body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_approves_and_denies_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let rb = risky(dir.path(), "Risky", "{prompt: \"Go?\"}");
    let app = TestApp::start(&[("risky.yaml", &rb)], |_| {}).await;
    let v = fire(&app, "Risky", "g-cli").await;
    let run = v["runs"][0]["id"].as_i64().unwrap().to_string();
    let store = app.data.path().join("store");
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", app.url.as_str(), "--as", "carol"]);
        all.extend(["--data-dir", store.to_str().unwrap()]);
        crate::helpers::runbookd(&all)
    };
    let out = cli(&["approve", &run, "--comment", "fine by me"]);
    assert!(out.status.success(), "{}", crate::helpers::stderr(&out));
    let approval = v["approvals"][0]["id"].as_i64().unwrap();
    assert_eq!(
        crate::helpers::stdout(&out),
        format!("run {run} asks: Go? (step `go`, approval {approval})\nrun {run}: step `go` approved by carol\n"),
        "what is approved is the prompt it printed"
    );
    let v = app
        .wait_for_incident("INC-0001", "the run resumed", |v| {
            run_states(v) == ["succeeded"]
        })
        .await;
    assert_eq!(v["approvals"][0]["comment"], "fine by me");
    let out = cli(&["deny", &run, "--approval", &approval.to_string()]);
    assert_eq!(out.status.code(), Some(1), "a second decision is refused");
    assert!(
        crate::helpers::stderr(&out).contains("already decided"),
        "{}",
        crate::helpers::stderr(&out)
    );
}

/// #23, item 9: a step that failed and went on before the pause still
/// counts when the run resumes: it ends `succeeded_with_failures`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_remembers_a_failure_before_its_pause() {
    let rb = "name: partly\nmatchers: [alertname = \"Partly\"]\nsteps:\n  - name: probe\n    run: [\"false\"]\n    continue_on_failure: true\n  - name: go\n    approve: {prompt: \"Go on?\"}\n  - name: after\n    run: [\"true\"]\n";
    let app = TestApp::start(&[("p.yaml", rb)], |_| {}).await;
    let v = fire(&app, "Partly", "g-partly").await;
    let run = v["runs"][0]["id"].as_i64().unwrap();
    let (status, body) = post(
        &app,
        &format!("/api/v1/runs/{run}/approval"),
        None,
        json!({"decision": "approve", "author": "ann"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v = app
        .wait_for_incident("INC-0001", "the resumed run's end", crate::app::runs_ended)
        .await;
    assert_eq!(run_states(&v), ["succeeded_with_failures"], "{v:#}");
}
