//! Operators in the loop: users and roles, acknowledgements and
//! cancellations through the API, the UI and the CLI; the timeline names
//! who did what.

use std::time::Duration;

use serde_json::{json, Value};

use crate::app::{notification, run_states, TestApp};

const SLOW: &str = "name: slow\nmatchers: [alertname = \"Slow\"]\nconcurrency: 1\nsteps:\n  - name: wait\n    run: [\"/bin/sleep\", \"30\"]\n";

pub fn users(c: &mut runbookd::config::ServerConfig) {
    use runbookd::config::{Role, User};
    c.auth.users = vec![
        User {
            name: "olga".into(),
            password: Some("olga-pw".into()),
            token: Some("olga-token".into()),
            role: Role::Operator,
        },
        User {
            name: "victor".into(),
            password: Some("victor-pw".into()),
            token: Some("victor-token".into()),
            role: Role::Viewer,
        },
    ];
    c.auth.bearer = Some("webhook-token".into());
    c.auth.protect_reads = true;
}

pub async fn post(app: &TestApp, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = app.client.post(format!("{}{path}", app.url)).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get_as(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let resp = app
        .client
        .get(format!("{}{path}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_but_cannot_act_an_operator_acts_under_their_name() {
    let app = TestApp::start(&[("slow.yaml", SLOW)], users).await;
    let labels = json!({"alertname": "Slow"});
    // Two alerts: the first run runs, the second waits in the queue.
    let body = notification(
        "g-ops",
        &[
            (&labels, "firing", "2026-11-24T08:00:00Z"),
            (
                &json!({"alertname": "Slow", "n": "2"}),
                "firing",
                "2026-11-24T08:00:00Z",
            ),
        ],
    );
    assert_eq!(app.post_alert(body).await.status(), 200);
    let (status, _) = get_as(&app, "/api/v1/incidents/INC-0001", "victor-token").await;
    assert_eq!(status, 200, "a viewer reads");
    // A viewer's page shows no button they cannot use; an operator's does
    // (#23, 18).
    let page_as = |token: &'static str| {
        let req = app
            .client
            .get(format!("{}/incidents/INC-0001", app.url))
            .bearer_auth(token)
            .send();
        async move { req.await.unwrap().text().await.unwrap() }
    };
    let viewer = page_as("victor-token").await;
    let operator = page_as("olga-token").await;
    for form in ["update-form", "/acknowledge\"", "run-action"] {
        assert!(!viewer.contains(form), "a viewer sees {form}");
        assert!(operator.contains(form), "an operator misses {form}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let runs = loop {
        let (_, v) = get_as(&app, "/api/v1/incidents/INC-0001", "olga-token").await;
        if run_states(&v) == ["running", "queued"] {
            break v["runs"].clone();
        }
        assert!(std::time::Instant::now() < deadline, "{v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (running, queued) = (
        runs[0]["id"].as_i64().unwrap(),
        runs[1]["id"].as_i64().unwrap(),
    );

    // A viewer cannot act: 403 with the reason, for every write.
    let writes = [
        (
            "/api/v1/incidents/INC-0001/acknowledge".to_owned(),
            json!({}),
        ),
        (
            "/api/v1/incidents/INC-0001/updates".to_owned(),
            json!({"message": "looking"}),
        ),
        (format!("/api/v1/runs/{running}/cancel"), json!({})),
        ("/-/reload".to_owned(), json!({})),
    ];
    for (path, body) in &writes {
        let (status, v) = post(&app, path, Some("victor-token"), body.clone()).await;
        assert_eq!(status, 403, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("viewer"), "{v}");
        // Nor can the webhook's credential (not a person's), or nobody.
        assert_eq!(
            post(&app, path, Some("webhook-token"), body.clone())
                .await
                .0,
            403,
            "{path}"
        );
        assert_eq!(post(&app, path, None, body.clone()).await.0, 401, "{path}");
    }

    // An operator acts, under their own name whatever the request says.
    let (status, v) = post(
        &app,
        "/api/v1/incidents/INC-0001/updates",
        Some("olga-token"),
        json!({"author": "mallory", "message": "looking into it"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = post(
        &app,
        "/api/v1/incidents/INC-0001/acknowledge",
        Some("olga-token"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["acknowledged_by"], "olga");
    let (status, v) = post(
        &app,
        &format!("/api/v1/runs/{queued}/cancel"),
        Some("olga-token"),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("cancelled")),
        "{v}"
    );
    let (status, v) = post(
        &app,
        &format!("/api/v1/runs/{running}/cancel"),
        Some("olga-token"),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("cancelling")),
        "{v}"
    );
    let v = crate::app::wait_for_incident_at(
        &app.client,
        &app.url.replace("http://", "http://olga:olga-pw@"),
        "INC-0001",
        "both runs cancelled",
        |v| run_states(v) == ["cancelled", "cancelled"],
    )
    .await;
    let timeline: Vec<(String, String)> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["author"].as_str().unwrap().to_owned(),
                t["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        timeline.contains(&("olga".into(), "looking into it".into())),
        "{timeline:?}"
    );
    assert!(
        !timeline.iter().any(|t| t.0 == "mallory"),
        "the request cannot name someone else"
    );
    assert!(
        timeline.contains(&("olga".into(), "acknowledged by olga".into())),
        "{timeline:?}"
    );
    assert!(
        timeline
            .iter()
            .any(|t| t.1.contains("cancelled by olga before it started")),
        "{timeline:?}"
    );
    assert!(
        timeline
            .iter()
            .any(|t| t.1.contains("olga asked to cancel it")),
        "{timeline:?}"
    );
    // An ended run cannot be cancelled; an unknown one is 404.
    let (status, v) = post(
        &app,
        &format!("/api/v1/runs/{queued}/cancel"),
        Some("olga-token"),
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(
        post(
            &app,
            "/api/v1/runs/99999/cancel",
            Some("olga-token"),
            json!({})
        )
        .await
        .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_acknowledges_and_cancels_through_the_server() {
    let app = TestApp::start(&[("slow.yaml", SLOW)], |_| {}).await;
    let labels = json!({"alertname": "Slow"});
    assert_eq!(
        app.post_alert(notification(
            "g-cli",
            &[(&labels, "firing", "2026-11-24T08:00:00Z")]
        ))
        .await
        .status(),
        200
    );
    let v = app
        .wait_for_incident("INC-0001", "the run running", |v| {
            run_states(v) == ["running"]
        })
        .await;
    let run = v["runs"][0]["id"].as_i64().unwrap().to_string();
    let store = app.data.path().join("store");
    let store = store.to_str().unwrap();
    let out = crate::helpers::runbookd(&[
        "ack",
        "INC-0001",
        "--server",
        &app.url,
        "--as",
        "carol",
        "--data-dir",
        store,
    ]);
    assert!(out.status.success(), "{}", crate::helpers::stderr(&out));
    assert_eq!(crate::helpers::stdout(&out), "INC-0001 acknowledged\n");
    // Someone else's acknowledgement is not reported as mine (#23, 18).
    let out = crate::helpers::runbookd(&[
        "ack",
        "INC-0001",
        "--server",
        &app.url,
        "--as",
        "dave",
        "--data-dir",
        store,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::helpers::stderr(&out).contains("INC-0001 was already acknowledged by carol"),
        "{}",
        crate::helpers::stderr(&out)
    );
    let out = crate::helpers::runbookd(&[
        "cancel",
        &run,
        "--server",
        &app.url,
        "--as",
        "carol",
        "--data-dir",
        store,
    ]);
    assert!(out.status.success(), "{}", crate::helpers::stderr(&out));
    let v = app
        .wait_for_incident("INC-0001", "the run cancelled", |v| {
            run_states(v) == ["cancelled"]
        })
        .await;
    assert_eq!(v["acknowledged_by"], "carol");
    let out = crate::helpers::runbookd(&[
        "cancel",
        &run,
        "--server",
        &app.url,
        "--as",
        "carol",
        "--data-dir",
        store,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::helpers::stderr(&out).contains("already ended"),
        "{}",
        crate::helpers::stderr(&out)
    );
    // Without users and without a name, nobody is recorded: refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(["ack", "INC-0001", "--server", &app.url, "--data-dir", store])
        .env_remove("USER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("author"));
    // Without the operator credential (another data directory): refused,
    // saying what is missing, wherever the CLI runs from (loopback is not a
    // credential).
    let elsewhere = tempfile::tempdir().unwrap();
    let out = crate::helpers::runbookd(&[
        "ack",
        "INC-0001",
        "--server",
        &app.url,
        "--as",
        "mallory",
        "--data-dir",
        elsewhere.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = crate::helpers::stderr(&out);
    assert!(
        err.contains("HTTP 401") && err.contains("operator.token"),
        "{err}"
    );
}

const ECHO: &str = r#"name: echo
matchers: [alertname = "NeverFires"]
steps:
  - name: argv
    run: ["/bin/echo", "{{labels.target}}"]
  - name: script
    shell: echo "{{labels.target}}" "{{annotations.why}}"
"#;

fn stdout_of(v: &Value, step: &str) -> String {
    v["runs"][0]["result"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == step)
        .unwrap()["attempts"][0]["stdout"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_run_with_hostile_labels_is_as_inert_as_a_webhook_alert() {
    let app = TestApp::start(&[("echo.yaml", ECHO)], |_| {}).await;
    let hostile = "$(id) `id` ';id;' \"x\"\n$HOME";
    // The plan first: nothing is recorded.
    let (status, plan) = post(
        &app,
        "/api/v1/runbooks/echo/runs",
        None,
        json!({"labels": {"target": hostile}, "annotations": {"why": "drill"}, "plan": true}),
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["alerts"][0]["runs"][0]["runbook"], "echo");
    assert_eq!(
        plan["alerts"][0]["labels"]["alertname"], "echo",
        "alertname defaults to the runbook"
    );
    let (_, list) = app.get("/api/v1/incidents").await;
    assert_eq!(list["total"], 0, "a plan records nothing");

    let (status, v) = post(
        &app,
        "/api/v1/runbooks/echo/runs",
        None,
        json!({"labels": {"target": hostile}, "annotations": {"why": "drill"}, "author": "dana"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let id = v["incident"].as_str().unwrap().to_owned();
    let done = app
        .wait_for_incident(&id, "the manual run to end", crate::app::runs_ended)
        .await;
    assert_eq!(run_states(&done), ["succeeded"], "{done:#}");
    assert_eq!(done["receiver"], "runbookd-manual");
    assert!(
        done["alerts"][0]["labels"]["runbookd_origin"]
            .as_str()
            .unwrap()
            .starts_with("manual "),
        "a manual run's alert is never the real alert with the same labels"
    );
    // Nobody else may post as runbookd's own receivers.
    let forged = String::from_utf8(crate::app::notification(
        "g-forged",
        &[(
            &json!({"alertname": "echo"}),
            "firing",
            "2026-11-24T08:00:00Z",
        )],
    ))
    .unwrap()
    .replace(
        "\"receiver\":\"runbookd\"",
        "\"receiver\":\"runbookd-manual\"",
    );
    assert!(forged.contains("runbookd-manual"));
    let resp = app.post_alert(forged).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(stdout_of(&done, "argv"), format!("{hostile}\n"));
    assert_eq!(
        stdout_of(&done, "script"),
        format!("{hostile} drill\n"),
        "the shell saw values, never source"
    );
    assert!(done["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["author"] == "dana" && t["message"] == "started a manual run of `echo`"));

    // Re-run: the same incident, the same alert, in the original's place;
    // the timeline says who.
    let run = done["runs"][0]["id"].as_i64().unwrap();
    let (status, again) = post(
        &app,
        &format!("/api/v1/runs/{run}/rerun"),
        None,
        json!({"author": "dana"}),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["incident"],
        id.as_str(),
        "a re-run belongs to its incident"
    );
    assert_eq!(again["rerun_of"], run);
    let second = again["runs"][0].as_i64().unwrap();
    let rerun = app
        .wait_for_incident(&id, "the re-run to end", |v| {
            crate::app::runs_ended(v) && v["runs"].as_array().unwrap().len() == 2
        })
        .await;
    assert_eq!(rerun["runs"][1]["id"], second);
    assert_eq!(rerun["runs"][1]["rerun_of"], run);
    assert_eq!(
        rerun["runs"][1]["result"]["steps"][0]["attempts"][0]["stdout"],
        format!("{hostile}\n"),
        "the same alert's labels, as inert as the first time"
    );
    assert!(rerun["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["author"] == "dana"
            && t["message"] == format!("dana re-ran run #{run} of `echo` as run #{second}")));
    let (_, all) = app.get("/api/v1/incidents").await;
    assert_eq!(all["total"], 1, "no second incident: {all}");

    // Bad requests are 4xx with the reason.
    let (status, v) = post(
        &app,
        "/api/v1/runbooks/nope/runs",
        None,
        json!({"author": "dana"}),
    )
    .await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = post(
        &app,
        "/api/v1/runbooks/echo/runs",
        None,
        json!({"labels": {"bad-name": "x"}, "author": "dana"}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("bad label name"),
        "{v}"
    );
    let (status, _) = post(&app, "/api/v1/runbooks/echo/runs", None, json!({})).await;
    assert_eq!(status, 400, "without users a manual run names its author");

    // From the runbook page's form, and from the CLI.
    let token = app.form_token("/runbooks", None).await;
    let resp = app
        .client
        .post(format!("{}/runbooks/echo/runs", app.url))
        .header("Origin", &app.url)
        .form(&[
            ("csrf", token.as_str()),
            ("author", "erin"),
            ("labels", "target=from-the-form\n"),
            ("mode", "run"),
        ])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let landed = resp.url().path().to_owned();
    assert!(
        landed.starts_with("/incidents/INC-"),
        "redirected to the incident: {landed}"
    );
    let out = crate::helpers::runbookd(&[
        "trigger",
        "echo",
        "--label",
        "target=from-the-cli",
        "--server",
        &app.url,
        "--as",
        "finn",
        "--data-dir",
        app.data.path().join("store").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", crate::helpers::stderr(&out));
    let said = crate::helpers::stdout(&out);
    assert!(
        said.starts_with("INC-") && said.contains("of `echo` queued"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cannot_trigger_or_rerun() {
    let app = TestApp::start(&[("echo.yaml", ECHO)], users).await;
    let (status, v) = post(
        &app,
        "/api/v1/runbooks/echo/runs",
        Some("victor-token"),
        json!({"labels": {"target": "x"}}),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    let (status, _) = post(
        &app,
        "/api/v1/runbooks/echo/runs",
        Some("victor-token"),
        json!({"plan": true}),
    )
    .await;
    assert_eq!(status, 200, "a viewer may see the plan");
    let (status, v) = post(
        &app,
        "/api/v1/runbooks/echo/runs",
        Some("olga-token"),
        json!({"labels": {"target": "x"}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let run = v["runs"][0].as_i64().unwrap();
    assert_eq!(
        post(
            &app,
            &format!("/api/v1/runs/{run}/rerun"),
            Some("victor-token"),
            json!({})
        )
        .await
        .0,
        403
    );
    assert_eq!(
        post(&app, &format!("/api/v1/runs/{run}/rerun"), None, json!({}))
            .await
            .0,
        401
    );
}

const GAMEDAY: &str = r#"name: gameday
matchers: [alertname = "NeverFires"]
steps:
  - name: say
    run: ["/bin/echo", "{{labels.target}}"]
communication:
  - on: [incident_opened, run_succeeded]
    notify: [hook]
drills:
  - schedule: "*/2 * * * * *"
    labels: {target: planned}
  - schedule: "*/3 * * * * *"
    labels: {target: real}
    mode: execute
"#;

/// A drill incident's note, from its timeline.
fn drill_note(v: &Value) -> String {
    v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|t| t["message"].as_str().filter(|m| m.starts_with("drill of")))
        .unwrap_or_else(|| panic!("no drill note: {v:#}"))
        .to_owned()
}

/// (mode, due) of each drill incident, from its timeline.
fn drill_of(v: &Value) -> (String, chrono::DateTime<chrono::Utc>) {
    let note = drill_note(v);
    let mode = if note.contains("(plan mode") {
        "plan"
    } else {
        "execute"
    };
    let due = note.rsplit("due ").next().unwrap().trim_end_matches(')');
    (
        mode.to_owned(),
        chrono::DateTime::parse_from_rfc3339(due)
            .unwrap()
            .with_timezone(&chrono::Utc),
    )
}

/// Drills due at 03:00 UTC, each allowed at other days and hours.
const WINDOWS: &str = r#"name: windows
matchers: [alertname = "NeverFires"]
steps:
  - name: go
    run: ["/bin/echo", "{{labels.kind}}"]
drills:
  - schedule: "0 0 3 * * *"
    labels: {service: web, kind: night-shift}
    mode: execute
    requires: {days: [wednesday], hours: "02:00-04:00"}
  - schedule: "0 0 3 * * *"
    labels: {service: web, kind: office-hours}
    mode: execute
    requires: {hours: "09:00-17:00"}
  - schedule: "0 0 3 * * *"
    labels: {service: web, kind: mondays}
    mode: execute
    requires: {days: [monday]}
"#;

/// A drill's schedule and its `requires:` days and hours are read on
/// runbookd's clock (`ServerConfig::clock`), so they are tested at a chosen
/// time whatever the time the suite runs. On a Wednesday (UTC), the drill
/// allowed on Wednesdays from 02:00 to 04:00 runs at 03:00; the ones
/// allowed from 09:00 to 17:00, or on Mondays, record their plan and why,
/// and run nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drills_schedule_days_and_hours_are_read_on_runbookds_clock() {
    let clock = std::sync::Arc::new(runbookd::clock::Set::at(
        "2026-12-02T02:00:00Z".parse().unwrap(),
    ));
    let app = TestApp::start(&[("windows.yaml", WINDOWS)], {
        let clock = clock.clone();
        move |c| c.clock = clock
    })
    .await;
    // The scheduler's first look (every 500 ms) learns the drills before
    // 03:00, however long the server took to start; then 03:00 comes.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    clock.set("2026-12-02T02:59:58Z".parse().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let ended = loop {
        let (_, list) = app.get("/api/v1/incidents?limit=100").await;
        let list = list["incidents"].as_array().unwrap().clone();
        if list.len() == 3 && list.iter().all(|i| i["status"] == "resolved") {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "three drills did not end: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut seen = std::collections::BTreeMap::new();
    for i in ended {
        let v = app.incident(i["id"].as_str().unwrap()).await;
        let kind = v["alerts"][0]["labels"]["kind"]
            .as_str()
            .unwrap()
            .to_owned();
        let note = drill_note(&v);
        let due = note.split("due ").nth(1).and_then(|r| r.split(')').next());
        assert_eq!(due, Some("2026-12-02T03:00:00Z"), "{note}");
        seen.insert(
            kind,
            (v["runs"][0]["state"].as_str().unwrap().to_owned(), note),
        );
    }
    assert_eq!(seen["night-shift"].0, "succeeded", "{seen:#?}");
    assert!(!seen["night-shift"].1.contains("refused"), "{seen:#?}");
    assert_eq!(seen["office-hours"].0, "planned", "{seen:#?}");
    assert!(
        seen["office-hours"]
            .1
            .contains("nothing run: it is 03:00 UTC, outside 09:00-17:00"),
        "{seen:#?}"
    );
    assert_eq!(seen["mondays"].0, "planned", "{seen:#?}");
    assert!(
        seen["mondays"]
            .1
            .contains("nothing run: it is wed (UTC), and it runs on mon"),
        "{seen:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_fire_on_schedule_once_each_and_page_nobody() {
    let rx = crate::notify::Receiver::start().await;
    let yaml = format!("hook: {{type: webhook, url: '{}/hook'}}\n", rx.url);
    let app = TestApp::start(&[("gameday.yaml", GAMEDAY)], |c| {
        c.notifiers = crate::notify::notifiers(&yaml);
    })
    .await;
    tokio::time::sleep(Duration::from_millis(7500)).await;
    let (_, list) = app.get("/api/v1/incidents?limit=100").await;
    let mut drills: Vec<(String, chrono::DateTime<chrono::Utc>)> = Vec::new();
    for i in list["incidents"].as_array().unwrap() {
        assert_eq!(i["receiver"], "runbookd-drill", "{i}");
        let id = i["id"].as_str().unwrap();
        let v = app
            .wait_for_incident(id, "the drill's run to end", crate::app::runs_ended)
            .await;
        let (mode, due) = drill_of(&v);
        // #23, item 6: a drill's incident says it is one, and closes when
        // its run ends (plan drills too).
        assert_eq!(v["drill"], true, "{v:#}");
        let v = app
            .wait_for_incident(id, "the drill's incident to close", |v| {
                v["status"] == "resolved"
            })
            .await;
        if mode == "plan" {
            assert_eq!(run_states(&v), ["planned"], "a plan drill executes nothing");
        } else {
            assert_eq!(run_states(&v), ["succeeded"]);
            let out = v["runs"][0]["result"]["steps"][0]["attempts"][0]["stdout"]
                .as_str()
                .unwrap();
            assert_eq!(out, "real\n");
        }
        assert!(
            v["notifications"].as_array().unwrap().is_empty(),
            "a drill pages nobody unless it says so"
        );
        drills.push((mode, due));
    }
    for (mode, every) in [("plan", 2), ("execute", 3)] {
        let mut dues: Vec<_> = drills.iter().filter(|d| d.0 == mode).map(|d| d.1).collect();
        dues.sort();
        assert!(dues.len() >= 2, "{mode}: {dues:?}");
        let span = (*dues.last().unwrap() - dues[0]).num_seconds();
        assert_eq!(
            i64::try_from(dues.len()).unwrap() - 1,
            span / every,
            "{mode}: every occurrence once, none skipped: {dues:?}"
        );
    }
    assert!(rx.got("/hook").is_empty());
    assert!(
        app.metric("runbookd_open_incidents ").await.abs() < 0.5,
        "drills are never open incidents"
    );
    let page = app.page("/incidents").await;
    assert!(page.contains("badge drill"), "the list marks drills");
}

#[test]
fn check_points_at_a_bad_drill() {
    let dir = crate::helpers::runbook_dir(&[(
        "d.yaml",
        "name: d\nmatchers: [alertname = \"D\"]\nsteps:\n  - name: a\n    run: [\"/bin/true\"]\ndrills:\n  - schedule: \"every monday\"\n    mode: sometimes\n",
    )]);
    let path = dir.path().to_str().unwrap();
    let out = crate::helpers::runbookd(&["check", path]);
    assert_eq!(out.status.code(), Some(1));
    let err = crate::helpers::stderr(&out);
    assert!(
        err.contains(&format!(
            "{path}/d.yaml:7:15: runbook `d`: bad drill `schedule` `every monday`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{path}/d.yaml:8:11: runbook `d`: unknown drill mode `sometimes`"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_page_cancels_a_run_and_runs_it_again() {
    let app = TestApp::start(&[("slow.yaml", SLOW)], |_| {}).await;
    let labels = json!({"alertname": "Slow"});
    assert_eq!(
        app.post_alert(notification(
            "g-ui",
            &[(&labels, "firing", "2026-11-24T08:00:00Z")]
        ))
        .await
        .status(),
        200
    );
    let v = app
        .wait_for_incident("INC-0001", "the run running", |v| {
            run_states(v) == ["running"]
        })
        .await;
    let run = v["runs"][0]["id"].as_i64().unwrap();
    let page = app.page("/incidents/INC-0001").await;
    assert!(
        page.contains(&format!("action=\"/runs/{run}/cancel\"")),
        "a running run has a Cancel button"
    );
    let token = app.form_token("/incidents/INC-0001", None).await;
    assert!(
        page.contains("id=\"ack-form\""),
        "an unacknowledged incident has the button"
    );
    let resp = app
        .client
        .post(format!("{}/incidents/INC-0001/acknowledge", app.url))
        .header("Origin", &app.url)
        .form(&[("csrf", token.as_str()), ("author", "gina")])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(app.incident("INC-0001").await["acknowledged_by"], "gina");
    let page = app.page("/incidents/INC-0001").await;
    assert!(page.contains("acknowledged by gina") && !page.contains("id=\"ack-form\""));
    let resp = app
        .client
        .post(format!("{}/incidents/INC-0001/acknowledge", app.url))
        .header("Origin", &app.url)
        .form(&[("csrf", token.as_str()), ("author", "a\nb")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "a name with a line break is refused");
    let resp = app
        .client
        .post(format!("{}/runs/{run}/cancel", app.url))
        .header("Origin", &app.url)
        .form(&[("csrf", token.as_str()), ("author", "gina")])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.url().path(), "/incidents/INC-0001");
    app.wait_for_incident("INC-0001", "the run cancelled", |v| {
        run_states(v) == ["cancelled"]
    })
    .await;
    let page = app.page("/incidents/INC-0001").await;
    assert!(
        page.contains(&format!("action=\"/runs/{run}/rerun\"")),
        "an ended run has a Run again button"
    );
    // Without the page's token, nothing happens.
    let resp = app
        .client
        .post(format!("{}/runs/{run}/rerun", app.url))
        .header("Origin", &app.url)
        .form(&[("csrf", "forged"), ("author", "gina")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = app
        .client
        .post(format!("{}/runs/{run}/rerun", app.url))
        .header("Origin", &app.url)
        .form(&[("csrf", token.as_str()), ("author", "gina")])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.url().path(), "/incidents/INC-0001");
    let again = app
        .wait_for_incident("INC-0001", "the re-run running", |v| {
            run_states(v) == ["cancelled", "running"]
        })
        .await;
    let rerun = again["runs"][1]["id"].as_i64().unwrap();
    let (status, _) = post(
        &app,
        &format!("/api/v1/runs/{rerun}/cancel"),
        None,
        json!({"author": "gina"}),
    )
    .await;
    assert_eq!(status, 200);
    let first = app.incident("INC-0001").await;
    assert!(first["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["author"] == "gina" && t["message"].as_str().unwrap().contains("re-ran")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_runs_silence_covers_the_real_alerts_labels() {
    let rb = "name: hush\nmatchers: [alertname = \"Never\"]\nsteps:\n  - name: hush\n    silence: {duration: 10m}\n";
    let app = TestApp::start(&[("hush.yaml", rb)], |_| {}).await;
    let (status, plan) = post(
        &app,
        "/api/v1/runbooks/hush/runs",
        None,
        json!({"labels": {"alertname": "DiskFull", "instance": "db-1"}, "plan": true}),
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    let run = &plan["alerts"][0]["runs"][0];
    assert!(plan["alerts"][0]["labels"]["runbookd_origin"].is_string());
    let names: Vec<&str> = run["steps"][0]["silence"]["matchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["alertname", "instance"],
        "runbookd's own mark is not silenced on"
    );
    assert_eq!(run["steps"][0]["kind"], "silence");
}

/// #23, item 14: a runbook declares the labels a manual run must give; a
/// run (or its plan) without them, or with a value its pattern refuses, is
/// refused with what is needed, and *Run now* asks for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_run_must_give_the_runbooks_declared_inputs() {
    let rb = "name: unit-down\nmatchers: [alertname = \"UnitDown\"]\ninputs:\n  - label: unit\n    description: the systemd unit\n    matches: '[a-z0-9@._-]+\\.service'\nsteps:\n  - name: status\n    run: [echo, 'systemctl status {{labels.unit}}']\n";
    let app = TestApp::start(&[("u.yaml", rb)], |_| {}).await;
    for (labels, needle) in [
        (json!({}), "label `unit` (the systemd unit) is needed"),
        (
            json!({"unit": ""}),
            "label `unit` (the systemd unit) is needed",
        ),
        (
            json!({"unit": "x; rm -rf /"}),
            "must match `[a-z0-9@._-]+\\.service`",
        ),
    ] {
        for plan in [false, true] {
            let (status, v) = post(
                &app,
                "/api/v1/runbooks/unit-down/runs",
                None,
                json!({"labels": labels, "plan": plan, "author": "ann"}),
            )
            .await;
            assert_eq!(status, 400, "{labels} {plan}: {v}");
            assert!(v["error"].as_str().unwrap().contains(needle), "{v}");
        }
    }
    let (_, list) = app.get("/api/v1/incidents").await;
    assert_eq!(
        list["incidents"].as_array().unwrap().len(),
        0,
        "nothing was run"
    );
    let (status, v) = post(
        &app,
        "/api/v1/runbooks/unit-down/runs",
        None,
        json!({"labels": {"unit": "nginx.service"}, "author": "ann"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let page = app.page("/runbooks").await;
    assert!(
        page.contains("A manual run needs: <code>unit</code> (the systemd unit)"),
        "{page}"
    );
    // check: a bad input is an error at its place.
    let dir = crate::helpers::runbook_dir(&[(
        "b.yaml",
        "name: b\nmatchers: [alertname = \"B\"]\ninputs:\n  - label: 9lives\n  - label: ok\n    matches: '(['\nsteps:\n  - name: a\n    run: ['true']\n",
    )]);
    let out = crate::helpers::runbookd(&["check", dir.path().to_str().unwrap()]);
    let err = crate::helpers::stdout(&out) + &crate::helpers::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("b.yaml:4:12: runbook `b`: bad input label `9lives`"),
        "{err}"
    );
    assert!(err.contains("b.yaml:6:14:"), "{err}");
}
