//! `runbookd serve` over HTTP: the webhook contract, incidents and their
//! lifecycle, dispatch rules, the API, bad input, restarts.

use std::time::Duration;

use serde_json::{json, Value};

use crate::app::{notification, run_states, TestApp};

const ECHO: &str = r#"name: echo
title: Echo the alert
severity: sev2
matchers: [alertname = "Echo"]
steps:
  - name: say
    run: [echo, "hello {{labels.instance}} from {{incident.id}}"]
  - name: check
    manual: Check {{labels.instance}}
on_resolved:
  - name: recovered
    run: [echo, "{{labels.instance}} recovered"]
"#;

fn echo_alert(instance: &str, status: &str, starts: &str) -> Vec<u8> {
    notification(
        "{}:{alertname=\"Echo\"}",
        &[(
            &json!({"alertname": "Echo", "instance": instance, "service": "web"}),
            status,
            starts,
        )],
    )
}

const T0: &str = "2026-11-24T08:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_opens_an_incident_and_its_run_is_recorded() {
    let app = TestApp::start(&[("echo.yaml", ECHO)], |_| {}).await;
    let resp = app.post_alert(echo_alert("web-1", "firing", T0)).await;
    assert_eq!(resp.status(), 200);
    let ack: Value = resp.json().await.unwrap();
    assert_eq!(
        (ack["incident"].as_str(), ack["queued_runs"].as_u64()),
        (Some("INC-0001"), Some(1))
    );
    let inc = app
        .wait_for_incident("INC-0001", "the run to succeed", |v| {
            run_states(v) == ["succeeded"]
        })
        .await;
    // The run left a checklist item (`check`) for people: it found what to
    // do, it did not do it, so the incident is not `monitoring` (#23, 11).
    assert_eq!(inc["status"], "identified", "{inc:#}");
    assert!(
        inc["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["message"]
                .as_str()
                .unwrap()
                .contains("left 1 checklist item(s) for people")),
        "{inc:#}"
    );
    assert_eq!(
        (inc["severity"].as_str(), inc["title"].as_str()),
        (Some("sev2"), Some("Echo the alert"))
    );
    assert_eq!(inc["services"], json!(["web"]));
    let step = &inc["runs"][0]["result"]["steps"][0];
    assert_eq!(
        step["plan"]["argv"],
        json!(["echo", "hello web-1 from INC-0001"]),
        "the rendered command is recorded"
    );
    assert_eq!(step["attempts"][0]["stdout"], "hello web-1 from INC-0001\n");
    assert_eq!(step["outcome"]["status"], "succeeded");
    assert_eq!(inc["checklist"][0]["text"], "Check web-1");
    let timeline: Vec<&str> = inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["message"].as_str().unwrap())
        .collect();
    for expected in [
        "incident opened for Echo",
        "alert Echo",
        "started (remediation)",
        "identified: runbook `echo` is running",
        "succeeded: 2 step(s)",
        "identified: runbook `echo` ran and left 1 checklist item(s) for people",
    ] {
        assert!(
            timeline.iter().any(|m| m.contains(expected)),
            "{expected:?} not in {timeline:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_and_retries_never_start_a_second_run() {
    let app = TestApp::start(&[("echo.yaml", ECHO)], |_| {}).await;
    for _ in 0..3 {
        assert_eq!(
            app.post_alert(echo_alert("web-1", "firing", T0))
                .await
                .status(),
            200
        );
    }
    let inc = app
        .wait_for_incident("INC-0001", "the run", |v| run_states(v) == ["succeeded"])
        .await;
    assert_eq!(inc["runs"].as_array().unwrap().len(), 1);
    let (_, stats) = app.get("/api/v1/stats").await;
    assert_eq!(
        stats["notifications"], 3,
        "every delivery is kept for audit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolution_resolves_the_incident_and_runs_on_resolved() {
    let app = TestApp::start(&[("echo.yaml", ECHO)], |_| {}).await;
    app.post_alert(echo_alert("web-1", "firing", T0)).await;
    app.wait_for_incident("INC-0001", "the remediation run", |v| {
        run_states(v) == ["succeeded"]
    })
    .await;
    assert_eq!(
        app.post_alert(echo_alert("web-1", "resolved", T0))
            .await
            .status(),
        200
    );
    let inc = app
        .wait_for_incident("INC-0001", "on_resolved", |v| {
            run_states(v) == ["succeeded", "succeeded"]
        })
        .await;
    assert_eq!(inc["status"], "resolved");
    assert!(inc["resolved_at"].is_string());
    assert_eq!(inc["runs"][1]["phase"], "resolution");
    assert_eq!(
        inc["runs"][1]["result"]["steps"][0]["attempts"][0]["stdout"],
        "web-1 recovered\n"
    );
    assert_eq!(inc["alerts"][0]["status"], "resolved");
    let (_, stats) = app.get("/api/v1/stats?window=1d").await;
    assert_eq!(
        (
            stats["incidents_resolved"].as_i64(),
            stats["incidents_open"].as_i64()
        ),
        (Some(1), Some(0))
    );
    assert!(stats["mttr_seconds"].as_f64().unwrap() >= 0.0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_escalates_and_runs_on_failure() {
    let rb = "name: fails\nmatchers: [alertname = \"Fail\"]\nsteps:\n  - name: boom\n    shell: echo broken >&2; exit 3\non_failure:\n  - name: undo\n    run: [echo, undone]\n";
    let app = TestApp::start(&[("f.yaml", rb)], |_| {}).await;
    app.post_alert(notification(
        "g",
        &[(&json!({"alertname": "Fail"}), "firing", T0)],
    ))
    .await;
    let inc = app
        .wait_for_incident("INC-0001", "the failure", |v| run_states(v) == ["failed"])
        .await;
    // #23, item 11: one word, one meaning: the run failed; nothing was
    // escalated (no escalation timer fired).
    assert_eq!(
        (
            inc["status"].as_str(),
            inc["run_failed"].as_bool(),
            inc["escalated"].as_bool()
        ),
        (Some("investigating"), Some(true), Some(false))
    );
    let steps = inc["runs"][0]["result"]["steps"].as_array().unwrap();
    assert_eq!(steps[0]["attempts"][0]["stderr"], "broken\n");
    assert_eq!(steps[1]["phase"], "on_failure");
    assert!(inc["runs"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("`boom` failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_skips_with_the_reason_on_the_incident() {
    let rb = "name: cool\nmatchers: [alertname = \"Echo\"]\ncooldown: 1h\nsteps:\n  - name: a\n    run: ['true']\n";
    let app = TestApp::start(&[("c.yaml", rb)], |_| {}).await;
    app.post_alert(echo_alert("web-1", "firing", T0)).await;
    app.wait_for_incident("INC-0001", "the first run", |v| {
        run_states(v) == ["succeeded"]
    })
    .await;
    // The same alert firing again (a new startsAt) within the cooldown.
    let ack: Value = app
        .post_alert(echo_alert("web-1", "firing", "2026-11-24T08:05:00Z"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ack["skipped_runs"], 1);
    let inc = app.incident("INC-0001").await;
    assert_eq!(run_states(&inc), ["succeeded", "skipped"]);
    assert!(
        inc["runs"][1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("cooldown: `cool` last ran for this alert at "),
        "{}",
        inc["runs"][1]["reason"]
    );
    assert!(inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["message"].as_str().unwrap().contains("skipped: cooldown")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_queues_runs_of_the_same_runbook() {
    let rb = "name: one-at-a-time\nmatchers: [alertname = \"Echo\"]\nconcurrency: 1\nsteps:\n  - name: slow\n    run: [sleep, '0.5']\n";
    let app = TestApp::start(&[("s.yaml", rb)], |_| {}).await;
    app.post_alert(echo_alert("web-1", "firing", T0)).await;
    app.post_alert(echo_alert("web-2", "firing", T0)).await;
    let inc = app
        .wait_for_incident("INC-0001", "both runs", |v| {
            run_states(v) == ["succeeded", "succeeded"]
        })
        .await;
    let (r1, r2) = (&inc["runs"][0], &inc["runs"][1]);
    assert!(
        r2["started_at"].as_str().unwrap() >= r1["ended_at"].as_str().unwrap(),
        "the second run started before the first ended: {r1} {r2}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_resolved_stops_a_running_run() {
    let rb = "name: long\nmatchers: [alertname = \"Echo\"]\ncancel_on_resolved: true\nsteps:\n  - name: wait\n    run: [sleep, '30']\n";
    let app = TestApp::start(&[("l.yaml", rb)], |_| {}).await;
    app.post_alert(echo_alert("web-1", "firing", T0)).await;
    app.wait_for_incident("INC-0001", "the run to start", |v| {
        run_states(v) == ["running"]
    })
    .await;
    let started = std::time::Instant::now();
    app.post_alert(echo_alert("web-1", "resolved", T0)).await;
    let inc = app
        .wait_for_incident("INC-0001", "the cancel", |v| run_states(v) == ["cancelled"])
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(inc["status"], "resolved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_add_updates_with_status_and_root_cause() {
    let app = TestApp::start(&[("echo.yaml", ECHO)], |_| {}).await;
    app.post_alert(echo_alert("web-1", "firing", T0)).await;
    app.wait_for_incident("INC-0001", "the run", |v| run_states(v) == ["succeeded"])
        .await;
    let resp = app
        .client
        .post(format!("{}/api/v1/incidents/INC-0001/updates", app.url))
        .json(&json!({"author": "alice", "message": "bad deploy of web", "status": "identified", "root_cause": "release 1.2.3 leaked memory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let inc: Value = resp.json().await.unwrap();
    assert_eq!(
        (inc["status"].as_str(), inc["root_cause"].as_str()),
        (Some("identified"), Some("release 1.2.3 leaked memory"))
    );
    let last = inc["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (
            last["author"].as_str(),
            last["message"].as_str(),
            last["status"].as_str()
        ),
        (Some("alice"), Some("bad deploy of web"), Some("identified"))
    );
    for (body, code) in [
        (json!({"author": "", "message": "x"}), 400),
        (json!({"author": "a"}), 400),
        (
            json!({"author": "a", "message": "m", "status": "fixed"}),
            400,
        ),
        (json!({"author": "a", "message": "m", "extra": 1}), 400),
    ] {
        let r = app
            .client
            .post(format!("{}/api/v1/incidents/INC-0001/updates", app.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code, "{body}");
        assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    }
    let r = app
        .client
        .post(format!("{}/api/v1/incidents/INC-0099/updates", app.url))
        .json(&json!({"author": "a", "message": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_4xx_and_the_server_stays_healthy() {
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), "s3cret-token\n").unwrap();
    let app = TestApp::start(&[("echo.yaml", ECHO)], |c| {
        c.auth.bearer = Some("s3cret-token".into());
        c.body_limit = 1 << 20;
    })
    .await;
    let good: Value = serde_json::from_slice(&echo_alert("web-1", "firing", T0)).unwrap();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "invalid JSON",
            b"{\"version\": ".to_vec(),
            400,
            "invalid Alertmanager payload",
        ),
        (
            "not an object",
            b"[1,2]".to_vec(),
            400,
            "must be a JSON object",
        ),
        (
            "wrong type",
            with(&|v| v["alerts"] = json!("many")),
            400,
            "alerts: invalid type",
        ),
        (
            "missing field",
            with(&|v| {
                v.as_object_mut().unwrap().remove("groupKey");
            }),
            400,
            "missing field `groupKey`",
        ),
        (
            "version 5",
            with(&|v| v["version"] = json!("5")),
            400,
            "unsupported webhook version `5`",
        ),
        (
            "empty alerts",
            with(&|v| v["alerts"] = json!([])),
            400,
            "carries no alerts",
        ),
        (
            "10 MB body",
            vec![b' '; 10 << 20],
            413,
            "larger than the limit",
        ),
    ];
    for (what, body, code, needle) in cases {
        let resp = app.post_alert(body).await;
        assert_eq!(resp.status().as_u16(), code, "{what}");
        let v: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        assert!(v["error"].as_str().unwrap().contains(needle), "{what}: {v}");
        assert_eq!(v["status"], code);
    }
    let body = echo_alert("web-1", "firing", T0);
    for (what, auth) in [
        ("missing", None),
        ("wrong bearer", Some("Bearer wrong")),
        ("wrong scheme", Some("Token s3cret-token")),
        ("basic", Some("Basic czNjcmV0OnRva2Vu")),
    ] {
        let mut req = reqwest::Client::new()
            .post(format!("{}/webhook", app.url))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{what}");
        assert!(resp.headers().contains_key("www-authenticate"));
        assert_eq!(resp.json::<Value>().await.unwrap()["status"], 401);
    }
    let (healthy, _) = app.get("/-/healthy").await;
    assert_eq!(healthy, 200);
    assert_eq!(
        app.post_alert(body).await.status(),
        200,
        "a valid webhook is still accepted"
    );
    let (_, stats) = app.get("/api/v1/stats").await;
    assert_eq!(stats["notifications"], 1, "nothing refused was recorded");
    let metrics = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "runbookd_webhooks_total{outcome=\"invalid\"} 6",
        "runbookd_webhooks_total{outcome=\"too_large\"} 1",
        "runbookd_webhooks_total{outcome=\"unauthorized\"} 4",
        "runbookd_webhooks_total{outcome=\"accepted\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_and_records_nothing() {
    let app = TestApp::start(&[("echo.yaml", ECHO)], |c| c.max_queued_runs = 0).await;
    let resp = app.post_alert(echo_alert("web-1", "firing", T0)).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], 503);
    let (_, list) = app.get("/api/v1/incidents").await;
    assert_eq!(
        list["total"], 0,
        "a refused notification leaves nothing behind: Alertmanager will retry"
    );
    // A notification that queues nothing is still accepted.
    let other = notification("g2", &[(&json!({"alertname": "Unmatched"}), "firing", T0)]);
    assert_eq!(app.post_alert(other).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lists_filters_and_pages_incidents() {
    let rb2 = "name: other\nseverity: sev4\nmatchers: [alertname = \"Other\"]\nsteps:\n  - name: a\n    run: ['true']\n";
    let app = TestApp::start(&[("echo.yaml", ECHO), ("other.yaml", rb2)], |_| {}).await;
    for i in 0..3 {
        app.post_alert(notification(
            &format!("g{i}"),
            &[(
                &json!({"alertname": "Echo", "instance": format!("w{i}")}),
                "firing",
                T0,
            )],
        ))
        .await;
    }
    app.post_alert(notification(
        "gx",
        &[(&json!({"alertname": "Other"}), "firing", T0)],
    ))
    .await;
    let (_, all) = app.get("/api/v1/incidents").await;
    assert_eq!(all["total"], 4);
    let (_, sev) = app.get("/api/v1/incidents?severity=sev4").await;
    assert_eq!(
        (sev["total"].as_i64(), sev["incidents"][0]["id"].as_str()),
        (Some(1), Some("INC-0004"))
    );
    let (_, page) = app
        .get("/api/v1/incidents?limit=2&offset=1&runbook=echo")
        .await;
    let ids: Vec<&str> = page["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        (page["total"].as_i64(), ids),
        (Some(3), vec!["INC-0002", "INC-0001"])
    );
    let (code, bad) = app.get("/api/v1/incidents?status=burning").await;
    assert_eq!((code, bad["status"].as_i64()), (400, Some(400)));
    let (code, _) = app.get("/api/v1/incidents/INC-0042").await;
    assert_eq!(code, 404);
    let (code, _) = app.get("/api/v1/incidents/nonsense").await;
    assert_eq!(code, 400);
    let (_, rbs) = app.get("/api/v1/runbooks").await;
    assert_eq!(
        rbs["runbooks"][0]["matchers"],
        json!(["alertname=\"Echo\""])
    );
    let plan = app
        .client
        .post(format!("{}/api/v1/plan", app.url))
        .header("content-type", "application/json")
        .body(echo_alert("web-9", "firing", T0))
        .send()
        .await
        .unwrap();
    let plan: Value = plan.json().await.unwrap();
    assert_eq!(
        plan["alerts"][0]["runs"][0]["steps"][0]["argv"],
        json!(["echo", "hello web-9 from INC-PLAN"])
    );
    let (_, list) = app.get("/api/v1/incidents").await;
    assert_eq!(list["total"], 4, "planning records nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_an_invalid_set_and_keeps_the_old_one() {
    let app = TestApp::start(&[("echo.yaml", ECHO)], |_| {}).await;
    std::fs::write(
        app.runbooks.path().join("broken.yaml"),
        "matchers: [alertname=~\"(\"]\nsteps: []\n",
    )
    .unwrap();
    let resp = app
        .client
        .post(format!("{}/-/reload", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("broken.yaml:1:")),
        "{v}"
    );
    assert_eq!(
        app.post_alert(echo_alert("web-1", "firing", T0))
            .await
            .json::<Value>()
            .await
            .unwrap()["queued_runs"],
        1,
        "the old set still matches"
    );
    std::fs::write(
        app.runbooks.path().join("broken.yaml"),
        "matchers: [alertname=New]\nsteps:\n  - name: a\n    run: ['true']\n",
    )
    .unwrap();
    let v: Value = app
        .client
        .post(format!("{}/-/reload", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["runbooks"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_records_the_plan_and_executes_nothing() {
    let marker = tempfile::tempdir().unwrap();
    let file = marker.path().join("ran");
    let rb = format!("name: shadowed\nmatchers: [alertname = \"Echo\"]\nsteps:\n  - name: touch\n    run: [touch, '{}']\n", file.display());
    let app = TestApp::start(&[("s.yaml", &rb)], |c| c.shadow = true).await;
    let ack: Value = app
        .post_alert(echo_alert("web-1", "firing", T0))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ack["shadow"], true);
    let inc = app
        .wait_for_incident("INC-0001", "the plan", |v| run_states(v) == ["planned"])
        .await;
    assert_eq!(
        inc["runs"][0]["result"]["plan"]["steps"][0]["argv"],
        json!(["touch", file.display().to_string()])
    );
    assert!(inc["runs"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("nothing was executed"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!file.exists(), "shadow mode executed a step");
    let (_, list) = app.get("/api/v1/incidents").await;
    assert_eq!(list["shadow"], true);
    assert_eq!(
        list["incidents"][0]["shadow"], true,
        "the incident is marked as recorded in shadow mode"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_interrupts_running_steps_and_a_restart_keeps_everything() {
    let rb = "name: slow\nmatchers: [alertname = \"Echo\"]\nconcurrency: 1\nsteps:\n  - name: wait\n    run: [sleep, '30']\n";
    let mut app = TestApp::start(&[("s.yaml", rb)], |_| {}).await;
    app.post_alert(echo_alert("web-1", "firing", T0)).await;
    app.post_alert(echo_alert("web-2", "firing", T0)).await;
    app.wait_for_incident("INC-0001", "one running, one queued", |v| {
        run_states(v) == ["running", "queued"]
    })
    .await;
    let t = std::time::Instant::now();
    app.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t.elapsed()
    );
    app.restart().await;
    let inc = app.incident("INC-0001").await;
    assert_eq!(run_states(&inc)[0], "interrupted", "{inc:#}");
    assert!(inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["message"].as_str().unwrap().contains("interrupted")));
    app.wait_for_incident(
        "INC-0001",
        "the queued run to start after the restart",
        |v| run_states(v) == ["interrupted", "running"],
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postmortem_lists_failures_checklist_and_root_cause_and_takes_a_custom_template() {
    let rb = "name: mixed\ntitle: Mixed results\nmatchers: [alertname = \"Mixed\"]\nsteps:\n  - name: ok\n    run: [echo, fine]\n  - name: broken\n    run: ['false']\n    continue_on_failure: true\n  - name: never\n    run: [echo, x]\n    when: 'false'\n  - name: look\n    manual: Look at the | dashboard\n";
    let mut app = TestApp::start(&[("m.yaml", rb)], |_| {}).await;
    app.post_alert(notification(
        "g",
        &[(
            &json!({"alertname": "Mixed", "service": "api|v2"}),
            "firing",
            T0,
        )],
    ))
    .await;
    app.wait_for_incident("INC-0001", "the run", |v| {
        run_states(v) == ["succeeded_with_failures"]
    })
    .await;
    app.client
        .post(format!("{}/api/v1/incidents/INC-0001/updates", app.url))
        .json(&json!({"author": "bob", "message": "found it", "root_cause": "a bad flag"}))
        .send()
        .await
        .unwrap();
    let pm = app
        .client
        .get(format!("{}/api/v1/incidents/INC-0001/postmortem", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "## Root cause\n\na bad flag",
        "- Affected services: api\\|v2.",
        "- `mixed` step `ok` succeeded in ",
        "- `mixed` step `broken` failed with exit status 1",
        "- `mixed` step `never` was skipped: `when` rendered `false`",
        "- [ ] Fix or replace `mixed` step `broken`: it failed with exit status 1",
        "- [ ] Look at the \\| dashboard (checklist item of `mixed`)",
        "| bob | found it |",
        "| Status | identified |",
        "(still open)",
    ] {
        assert!(pm.contains(expected), "{expected:?} missing from\n{pm}");
    }
    let (code, _) = app.get("/api/v1/incidents/INC-0404/postmortem").await;
    assert_eq!(code, 404);
    app.stop().await;
    // The incidents CLI reads the same store.
    let store = app.data.path().join("store");
    let out =
        crate::helpers::runbookd(&["incidents", "list", "--data-dir", store.to_str().unwrap()]);
    let list = crate::helpers::stdout(&out);
    assert!(out.status.success(), "{}", crate::helpers::stderr(&out));
    assert!(
        list.contains("INC-0001   sev3  identified")
            && list.contains("Mixed results")
            && list.ends_with("1 of 1 incident(s)\n"),
        "{list}"
    );
    let out = crate::helpers::runbookd(&[
        "incidents",
        "show",
        "INC-0001",
        "--output",
        "json",
        "--data-dir",
        store.to_str().unwrap(),
    ]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            shown["root_cause"].as_str(),
            shown["runs"][0]["state"].as_str()
        ),
        (Some("a bad flag"), Some("succeeded_with_failures"))
    );
    let out = crate::helpers::runbookd(&[
        "incidents",
        "show",
        "INC-0009",
        "--data-dir",
        store.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(crate::helpers::stderr(&out).contains("no incident INC-0009"));
    let out = crate::helpers::runbookd(&["incidents", "list", "--data-dir", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::helpers::stderr(&out).contains("no store at `/nonexistent/runbookd.db`"),
        "{}",
        crate::helpers::stderr(&out)
    );
    // A custom template sees every field, through the CLI.
    let tpl = app.data.path().join("custom.hbs");
    std::fs::write(&tpl, "{{incident.id}} {{incident.severity}} {{#each went_wrong}}[{{this}}]{{/each}} {{record.root_cause}} {{runs.0.runbook}}").unwrap();
    let out = crate::helpers::runbookd(&[
        "postmortem",
        "INC-0001",
        "--template",
        tpl.to_str().unwrap(),
        "--data-dir",
        app.data.path().join("store").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", crate::helpers::stderr(&out));
    assert_eq!(
        crate::helpers::stdout(&out),
        "INC-0001 sev3 [`mixed` step `broken` failed with exit status 1][`mixed` step `never` was skipped: `when` rendered `false`] a bad flag mixed"
    );
    std::fs::write(&tpl, "{{incident.nope}}").unwrap();
    let out = crate::helpers::runbookd(&[
        "postmortem",
        "INC-0001",
        "--template",
        tpl.to_str().unwrap(),
        "--data-dir",
        app.data.path().join("store").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::helpers::stderr(&out).contains("postmortem template:"),
        "{}",
        crate::helpers::stderr(&out)
    );
}

/// The README's auth path (a webhook token, no users): the webhook's
/// credential posts alerts but is not an operator's; a person signs in to
/// the UI with the operator credential runbookd made, and acts through
/// forms; reads need a credential unless `protect_reads: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_credential_is_not_an_operators_and_people_sign_in() {
    let app = TestApp::start(&[("echo.yaml", ECHO)], |c| {
        c.auth.basic = Some(("ops".into(), "pw".into()));
    })
    .await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .post(format!("{}/webhook", app.url))
        .header("content-type", "application/json")
        .basic_auth("ops", Some("pw"))
        .body(echo_alert("web-1", "firing", T0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Anonymous: an API read is refused, a page sends the browser to sign in.
    let r = plain
        .get(format!("{}/api/v1/incidents", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = plain
        .get(format!("{}/incidents/INC-0001", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/login?next=%2Fincidents%2FINC-0001"
    );
    let (code, _) = app.get("/incidents/INC-0001").await;
    assert_eq!(code, 200, "the operator reads");
    let token = app.form_token("/incidents/INC-0001", None).await;
    let form = [
        ("csrf", token.as_str()),
        ("author", "eve"),
        ("message", "hi"),
        ("status", ""),
    ];
    // The webhook's credential cannot act, nor can nobody.
    let r = plain
        .post(format!("{}/incidents/INC-0001/updates", app.url))
        .basic_auth("ops", Some("pw"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    let r = plain
        .post(format!("{}/incidents/INC-0001/updates", app.url))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Signing in: the webhook's credential is refused, the operator's
    // gives a session cookie that the forms then carry.
    let login_token = app.form_token("/login", None).await;
    let operator = std::fs::read_to_string(app.data.path().join("store/operator.token")).unwrap();
    let sign_in = |secret: String| {
        plain
            .post(format!("{}/login", app.url))
            .form(&[
                ("csrf", login_token.clone()),
                ("secret", secret),
                ("next", "/incidents/INC-0001".to_owned()),
            ])
            .send()
    };
    let r = sign_in("pw".into()).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    let r = sign_in(operator.trim().to_owned()).await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/incidents/INC-0001");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let r = plain
        .post(format!("{}/incidents/INC-0001/updates", app.url))
        .header("cookie", &session)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers().get("location").cloned()),
        (303, Some("/incidents/INC-0001".parse().unwrap()))
    );
    let page = plain
        .get(format!("{}/incidents/INC-0001", app.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("hi"), "the update is on the page");
    // A forged or tampered session is nobody.
    let r = plain
        .get(format!("{}/api/v1/incidents", app.url))
        .header("cookie", format!("{session}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let bad = [
        ("csrf", token.as_str()),
        ("author", "eve"),
        ("message", "hi"),
        ("status", "exploded"),
    ];
    let r = plain
        .post(format!("{}/incidents/INC-0001/updates", app.url))
        .header("cookie", &session)
        .form(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A form's refusal is a page a person reads, not raw JSON (#23, 18).
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("exploded"));

    let open = TestApp::start(&[("echo.yaml", ECHO)], |c| {
        c.auth.protect_reads = false;
    })
    .await;
    for path in [
        "/",
        "/incidents",
        "/runbooks",
        "/plan",
        "/api/v1/incidents",
        "/api/v1/stats",
        "/metrics",
    ] {
        let r = plain
            .get(format!("{}{path}", open.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} with protect_reads: false");
        let r = plain
            .get(format!("{}{path}", app.url))
            .header("accept", "application/json")
            .header("authorization", "Bearer wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = plain
        .get(format!("{}/-/healthy", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "health stays open for probes");
}

/// The incident list's severity filter is parsed at the edge: an unknown
/// severity is a 400 that names it (the API and the UI), never an empty
/// list that looks like "no such incidents".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_severity_filter_is_refused_with_the_reason() {
    let rb = "name: r\nmatchers: ['alertname = \"R\"']\nseverity: sev2\nsteps:\n  - name: a\n    run: ['true']\n";
    let app = crate::app::TestApp::start(&[("r.yaml", rb)], |_| {}).await;
    let resp = app
        .post_alert(crate::app::notification(
            "g",
            &[(
                &serde_json::json!({"alertname": "R"}),
                "firing",
                "2026-12-05T08:00:00Z",
            )],
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let (code, v) = app.get("/api/v1/incidents?severity=sev2").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["incidents"][0]["severity"], "sev2", "{v}");
    let (code, v) = app.get("/api/v1/incidents?severity=sev4").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["incidents"], serde_json::json!([]));
    let (code, v) = app.get("/api/v1/incidents?severity=sev5").await;
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("sev5"), "{v}");
    let r = app
        .client
        .get(format!("{}/incidents?severity=sev5", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("sev5"));
}

/// The message positions of the timeline entries that say a run started,
/// and of those that say it `ended` (a state word).
fn start_and_end(v: &Value, ended: &str) -> (Vec<usize>, Vec<usize>) {
    let timeline = v["timeline"].as_array().unwrap();
    let find = |needle: &str| {
        timeline
            .iter()
            .enumerate()
            .filter(|(_, t)| t["kind"] == "run" && t["message"].as_str().unwrap().contains(needle))
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    (find("` started ("), find(&format!("` {ended}:")))
}

/// A run's start is on its incident while the run runs (its replica notes
/// it once the run has run 200 ms), and a short run's start is on it too,
/// just before its end (noted by the end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_start_is_noted_while_it_runs_and_before_its_end() {
    let slow = "name: slow\nmatchers: [alertname = \"Echo\", instance = \"slow\"]\nsteps:\n  - name: wait\n    run: [sleep, '3']\n";
    let quick = "name: quick\nmatchers: [alertname = \"Echo\", instance = \"quick\"]\nsteps:\n  - name: say\n    run: [echo, hi]\n";
    let app = TestApp::start(&[("slow.yaml", slow), ("quick.yaml", quick)], |_| {}).await;
    app.post_alert(notification(
        "g-slow",
        &[(
            &json!({"alertname": "Echo", "instance": "slow"}),
            "firing",
            T0,
        )],
    ))
    .await;
    let inc = app
        .wait_for_incident(
            "INC-0001",
            "the slow run's start noted while it runs",
            |v| !start_and_end(v, "succeeded").0.is_empty(),
        )
        .await;
    assert_eq!(run_states(&inc), ["running"], "{inc:#}");
    assert_eq!(inc["status"], "identified", "{inc:#}");
    app.post_alert(notification(
        "g-quick",
        &[(
            &json!({"alertname": "Echo", "instance": "quick"}),
            "firing",
            T0,
        )],
    ))
    .await;
    let inc = app
        .wait_for_incident("INC-0002", "the quick run's end", |v| {
            run_states(v) == ["succeeded"]
        })
        .await;
    let (starts, ends) = start_and_end(&inc, "succeeded");
    assert_eq!((starts.len(), ends.len()), (1, 1), "{inc:#}");
    assert!(starts[0] < ends[0], "the start before the end: {inc:#}");
    assert_eq!(inc["status"], "monitoring", "{inc:#}");
}
