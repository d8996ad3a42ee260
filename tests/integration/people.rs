//! People working an incident from the terminal (#23, 12 and 19): who
//! leads it, ticking its checklist, posting updates and resolving it, with
//! the CLI talking to the real server, as the README shows.

use serde_json::{json, Value};

use crate::app::{notification, run_states, TestApp};
use crate::helpers::{stderr, stdout};

const DIAGNOSE: &str = r#"name: diagnose
matchers: ['alertname = "Slow"']
steps:
  - name: look
    run: [echo, looked]
  - name: watch
    manual: Watch p95 latency return under 500ms on {{labels.instance}}
  - name: tell
    manual: Tell the API team
"#;

/// `runbookd ARGS… --server URL --as WHO --data-dir STORE`.
fn cli(app: &TestApp, who: &str, args: &[&str]) -> std::process::Output {
    let store = app.store_dir.to_str().unwrap().to_owned();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--server", &app.url, "--as", who, "--data-dir", &store]);
    crate::helpers::runbookd(&all)
}

fn timeline_has(v: &Value, author: &str, message: &str) -> bool {
    v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["author"] == author && t["message"].as_str().unwrap().contains(message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_on_call_leads_ticks_updates_and_resolves_from_the_terminal() {
    let app = TestApp::start(&[("diagnose.yaml", DIAGNOSE)], |_| {}).await;
    let labels = json!({"alertname": "Slow", "instance": "web-1"});
    let fire = notification("g-slow", &[(&labels, "firing", "2026-11-24T08:00:00Z")]);
    assert_eq!(app.post_alert(fire).await.status(), 200);
    let v = app
        .wait_for_incident("INC-0001", "the run to end", |v| {
            run_states(v) == ["succeeded"]
        })
        .await;
    assert_eq!(v["status"], "identified", "two checklist items are open");
    assert_eq!(v["commander"], Value::Null);

    // The first to acknowledge leads; command is handed over explicitly.
    let out = cli(&app, "carol", &["ack", "INC-0001"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(app.incident("INC-0001").await["commander"], "carol");
    let out = cli(&app, "carol", &["handover", "INC-0001", "dave"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "INC-0001: dave leads it now (was carol)\n");
    let out = cli(&app, "carol", &["handover", "INC-0001", "dave"]);
    assert_eq!(stdout(&out), "INC-0001: dave already leads it\n");
    let v = app.incident("INC-0001").await;
    assert_eq!(v["commander"], "dave");
    assert!(timeline_has(
        &v,
        "carol",
        "carol handed command of the incident from carol to dave"
    ));
    let (_, list) = app.get("/api/v1/incidents").await;
    assert_eq!(
        list["incidents"][0]["commander"], "dave",
        "the list shows who leads"
    );

    // Tick: by step name; who and when recorded; the last one moves the
    // incident to monitoring.
    let out = cli(&app, "dave", &["tick", "INC-0001", "watch"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("INC-0001: `watch` of run #1 done (by dave)"),
        "{}",
        stdout(&out)
    );
    let out = cli(&app, "dave", &["tick", "INC-0001", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("checklist item `nope`") && stderr(&out).contains("`tell` of run #1"),
        "the error names the items there are: {}",
        stderr(&out)
    );
    let v = app.incident("INC-0001").await;
    assert_eq!(v["status"], "identified", "`tell` is still open");
    let (status, item) = crate::operators::post(
        &app,
        "/api/v1/incidents/INC-0001/checklist",
        None,
        json!({"step": "tell", "author": "erin"}),
    )
    .await;
    assert_eq!(status, 200, "{item}");
    assert_eq!(
        (item["done_by"].as_str(), item["run_id"].as_i64()),
        (Some("erin"), Some(1))
    );
    let v = app.incident("INC-0001").await;
    assert_eq!(
        v["status"], "monitoring",
        "every item is done: {:#}",
        v["timeline"]
    );
    let checklist = v["checklist"].as_array().unwrap();
    assert!(
        checklist.iter().all(|c| c["done_at"].is_string()),
        "{checklist:#?}"
    );
    assert!(timeline_has(&v, "dave", "dave ticked checklist item `watch` of run #1: Watch p95 latency return under 500ms on web-1"));
    // `incidents show` says what is done, by whom.
    let store = app.store_dir.to_str().unwrap().to_owned();
    let out = crate::helpers::runbookd(&["incidents", "--data-dir", &store, "show", "INC-0001"]);
    let shown = stdout(&out);
    assert!(
        shown.contains("led by dave (incident commander)"),
        "{shown}"
    );
    assert!(
        shown.contains("[x] Tell the API team (run #1 diagnose, step tell; done by erin"),
        "{shown}"
    );
    // Reopened from the CLI: back to identified.
    let out = cli(&app, "dave", &["tick", "INC-0001", "tell", "--undo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(app.incident("INC-0001").await["status"], "identified");

    // Update and resolve.
    let out = cli(
        &app,
        "dave",
        &[
            "update",
            "INC-0001",
            "p95 back to 310ms",
            "--root-cause",
            "a slow query",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "INC-0001: update recorded; status identified\n"
    );
    let out = cli(&app, "dave", &["resolve", "INC-0001", "query fixed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "INC-0001: update recorded; status resolved\n");
    let v = app.incident("INC-0001").await;
    assert_eq!(
        (v["status"].as_str(), v["root_cause"].as_str()),
        (Some("resolved"), Some("a slow query"))
    );
    assert!(timeline_has(&v, "dave", "query fixed"));
    // The postmortem names the commander and who did what.
    let (_, pm) = (0, app.page("/api/v1/incidents/INC-0001/postmortem").await);
    assert!(pm.contains("| Incident commander | dave |"), "{pm}");
    assert!(pm.contains("Watch p95 latency return under 500ms on web-1 (checklist item of `diagnose`) done by dave"), "{pm}");
    // A resolved incident's run is not re-run on it: the answer says what to do.
    let out = cli(&app, "dave", &["rerun", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is resolved") && stderr(&out).contains("manual run"),
        "{}",
        stderr(&out)
    );
}

/// With users, command goes only to an operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_is_handed_only_to_an_operator_when_there_are_users() {
    let app = TestApp::start(&[("diagnose.yaml", DIAGNOSE)], crate::operators::users).await;
    let labels = json!({"alertname": "Slow", "instance": "web-1"});
    let fire = notification("g-slow", &[(&labels, "firing", "2026-11-24T08:00:00Z")]);
    let resp = app
        .client
        .post(format!("{}/webhook", app.url))
        .bearer_auth("webhook-token")
        .header("Content-Type", "application/json")
        .body(fire)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let incident = || async {
        app.client
            .get(format!("{}/api/v1/incidents/INC-0001", app.url))
            .bearer_auth("olga-token")
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    for _ in 0..200 {
        if run_states(&incident().await) == ["succeeded"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let hand = |token: &'static str, name: &'static str| {
        crate::operators::post(
            &app,
            "/api/v1/incidents/INC-0001/commander",
            Some(token),
            json!({"name": name}),
        )
    };
    let (status, v) = hand("olga-token", "victor").await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("operators: olga"),
        "{v}"
    );
    let (status, v) = hand("victor-token", "victor").await;
    assert_eq!(status, 403, "a viewer hands nothing over: {v}");
    let (status, v) = hand("olga-token", "olga").await;
    assert_eq!(status, 200, "{v}");
    let v = incident().await;
    assert_eq!(
        (v["commander"].as_str(), v["acknowledged_by"].as_str()),
        (Some("olga"), Some("olga")),
        "taking command acknowledges"
    );
    assert!(timeline_has(&v, "olga", "olga leads the incident"));
}
