//! Error-budget policies and the gate they make, against a real
//! Prometheus holding a backfilled month: a service whose latency budget is
//! overspent is frozen (423, with the policy, the SLO and its value as the
//! reason, and the recommendations), a service whose budget cannot be read
//! is frozen by a policy that holds when it cannot tell and allowed by one
//! that ignores it, an unknown service is 404, and `runbookd gate` says the
//! same with its exit status.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::app::TestApp;
use crate::helpers::{runbookd, stderr, stdout};

/// Services with no data in Prometheus: their budgets are unknown.
fn ghosts() -> String {
    ["ghost", "shade"]
        .map(|service| {
            format!(
                r#"version: "prometheus/v1"
service: "{service}"
slos:
  - name: "availability"
    objective: 99
    sli:
      events:
        error_query: sum(rate(nothing_here_errors_total[{{{{.window}}}}]))
        total_query: sum(rate(nothing_here_total[{{{{.window}}}}]))
"#
            )
        })
        .join("---\n")
}

/// Steps that ask their service's gate.
const GATED: &str = r#"name: gated
matchers: ['alertname = "WebSlow"']
steps:
  - name: risky
    risk: high
    run: ['true']
  - name: must
    requires: {budget: web}
    on_frozen: fail
    continue_on_failure: true
    run: ['true']
  - name: elsewhere
    requires: {budget: shade}
    run: ['true']
  - name: plain
    run: ['true']
"#;

/// A frozen step an operator may let through.
const OVERRIDE: &str = r#"name: override
matchers: ['alertname = "WebDeploy"']
steps:
  - name: deploy
    requires: {budget: web}
    on_frozen: approve
    shell: echo deployed
  - name: after
    run: ['true']
"#;

const POLICIES: &str = r"policies:
  - name: halt-when-overspent
    services: [web]
    when: budget_remaining < 0
    actions: [freeze, {notify: [ops]}]
    recommend: Halt web releases.
  - name: halt-when-burning-fast
    slos: [web/availability]
    when: burn_rate(1h) > 100000
    actions: [freeze]
  - name: note-when-under-twice
    slos: [web/availability]
    when: budget_remaining < 2
    recommend: Review web's incidents.
  - name: ghost-fails-closed
    services: [ghost]
    when: burn_rate(period) > 0.8
    actions: [freeze]
  - name: shade-ignores-unknown
    services: [shade]
    when: burn_rate(period) > 0.8
    actions: [freeze]
    on_unknown: ignore
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_freezes_a_service_whose_budget_is_spent_and_the_gate_says_so() {
    if !crate::prom::available() {
        return;
    }
    let (_, prometheus) = crate::prom::start_web().await;
    let slos = tempfile::tempdir().unwrap();
    std::fs::write(slos.path().join("web.yaml"), crate::slo::WEB_SLOS).unwrap();
    std::fs::write(slos.path().join("ghosts.yaml"), ghosts()).unwrap();
    std::fs::write(slos.path().join("policies.yaml"), POLICIES).unwrap();
    let o = runbookd(&["check", "--slos", slos.path().to_str().unwrap()]);
    assert!(
        stdout(&o).contains("5 policy(ies): ok"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let dir = slos.path().to_owned();
    let client = prometheus.client(Duration::from_secs(5));
    let data = tempfile::tempdir().unwrap();
    let store = data.path().join("store");
    let store_dir = store.clone();
    let rx = crate::notify::Receiver::start().await;
    let ops = format!("ops: {{type: webhook, url: '{}/ops'}}\n", rx.url);
    let at_start = ops.clone();
    let mut app = TestApp::start(
        &[("gated.yaml", GATED), ("override.yaml", OVERRIDE)],
        move |c| {
            c.slos = Some(dir);
            c.prometheus = Some(client);
            c.slo_refresh = Duration::from_secs(1);
            c.data_dir = store_dir;
            c.notifiers = crate::notify::notifiers(&at_start);
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = app.get("/api/v1/slos").await;
        if !v["refreshed_at"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "never refreshed: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gate = |service: &'static str| {
        let (client, url) = (app.client.clone(), app.url.clone());
        async move {
            let r = client
                .get(format!("{url}/api/v1/gates/{service}"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // web: latency overspent (2% slow against 1%): frozen, and why.
    let (code, web) = gate("web").await;
    assert_eq!(code, 423, "{web:#}");
    assert_eq!(web["allowed"], false);
    let reasons: Vec<&str> = web["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 1, "{web:#}");
    assert!(
        reasons[0]
            .starts_with("policy `halt-when-overspent`: budget_remaining of web/latency is -")
            && reasons[0].ends_with("(budget_remaining < 0)"),
        "{reasons:?}"
    );
    assert_eq!(
        web["recommendations"],
        serde_json::json!(["Halt web releases.", "Review web's incidents."])
    );
    // The freeze is written once, on web's timeline, and told to the
    // policy's notifier (ghost's policy names none: nobody is told).
    let told = rx.wait("/ops", 1).await;
    let body = &told[0].body;
    assert_eq!(body["event"], "budget_frozen", "{body:#}");
    assert_eq!(body["incident"]["id"], "budget:web", "{body:#}");
    assert_eq!(body["incident"]["title"], "Error budget of web");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("`web` frozen by its error-budget policies: policy `halt-when-overspent`"),
        "{body:#}"
    );
    let (_, now) = gate("web").await;
    assert_eq!(now["timeline"][0]["kind"], "frozen", "{now:#}");
    assert_eq!(now["timeline"][0]["author"], "runbookd");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.got("/ops").len(), 1, "told once, however many refreshes");
    // The measured value is the SLO page's.
    let (_, latency) = app.get("/api/v1/slos/web/latency").await;
    let policy = web["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == "halt-when-overspent")
        .unwrap();
    let measured = policy["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["slo"] == "web/latency")
        .unwrap();
    assert_eq!(
        measured["value"], latency["status"]["remaining"],
        "{policy:#}"
    );
    // A fast-burn policy that does not hold is listed, not triggered.
    let fast = web["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == "halt-when-burning-fast")
        .unwrap();
    assert_eq!(fast["triggered"], false, "{fast:#}");
    assert!(fast["measurements"][0]["value"].is_number(), "{fast:#}");
    // Budgets that cannot be read: frozen by default, allowed when the
    // policy says to ignore them.
    let (code, ghost) = gate("ghost").await;
    assert_eq!(code, 423, "{ghost:#}");
    assert!(
        ghost["reasons"][0]
            .as_str()
            .unwrap()
            .contains("burn_rate(period) of ghost/availability is unknown"),
        "{ghost:#}"
    );
    let (code, shade) = gate("shade").await;
    assert_eq!(code, 200, "{shade:#}");
    assert_eq!(shade["allowed"], true);
    let (code, none) = gate("nosuch").await;
    assert_eq!(code, 404, "{none}");
    assert!(none["error"].as_str().unwrap().contains("nosuch"), "{none}");
    // Steps that ask: a frozen service's risky step is skipped, a required
    // one fails (with the reasons); another service's, allowed, runs.
    let alert = crate::app::notification(
        "g-web",
        &[(
            &serde_json::json!({"alertname": "WebSlow", "service": "web"}),
            "firing",
            "2026-12-05T08:00:00Z",
        )],
    );
    let (code, plan) = {
        let r = app
            .client
            .post(format!("{}/api/v1/plan", app.url))
            .header("content-type", "application/json")
            .body(alert.clone())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(code, 200, "{plan}");
    let steps = &plan["alerts"][0]["runs"][0]["steps"];
    assert_eq!(
        steps[0]["gate"],
        serde_json::json!({"service": "web", "on_frozen": "skip"}),
        "{plan:#}"
    );
    assert_eq!(steps[3]["gate"], Value::Null, "{plan:#}");
    assert_eq!(app.post_alert(alert).await.status(), 200);
    let inc = app
        .wait_for_incident("INC-0001", "the gated run", crate::app::runs_ended)
        .await;
    let outcome = |i: usize| inc["runs"][0]["result"]["steps"][i]["outcome"].clone();
    assert_eq!(outcome(0)["status"], "skipped", "{inc:#}");
    let why = outcome(0)["reason"].as_str().unwrap().to_owned();
    assert!(
        why.starts_with(
            "`web` is frozen by its error-budget policies: policy `halt-when-overspent`"
        ),
        "{why}"
    );
    assert_eq!(outcome(1)["status"], "denied", "{inc:#}");
    assert_eq!(outcome(1)["reason"], why.as_str());
    assert_eq!(outcome(2)["status"], "succeeded", "{inc:#}");
    assert_eq!(outcome(3)["status"], "succeeded", "{inc:#}");
    // on_frozen: approve: the run waits, asking with the reasons; approved,
    // the step runs, the approval (who, why) on its record.
    let deploy = crate::app::notification(
        "g-deploy",
        &[(
            &serde_json::json!({"alertname": "WebDeploy", "service": "web"}),
            "firing",
            "2026-12-05T08:00:00Z",
        )],
    );
    assert_eq!(app.post_alert(deploy).await.status(), 200);
    let inc = app
        .wait_for_incident("INC-0002", "the run to wait", |v| {
            crate::app::run_states(v) == ["awaiting_approval"]
        })
        .await;
    let prompt = inc["approvals"][0]["prompt"].as_str().unwrap();
    assert!(
        prompt.starts_with(
            "`web` is frozen by its error-budget policies: policy `halt-when-overspent`"
        ) && prompt.ends_with("Run step `deploy` anyway?"),
        "{prompt}"
    );
    approve(&app, &inc, "hotfix for the outage").await;
    let inc = app
        .wait_for_incident("INC-0002", "the run to end", crate::app::runs_ended)
        .await;
    let steps = &inc["runs"][0]["result"]["steps"];
    assert_eq!(steps[0]["outcome"]["status"], "succeeded", "{inc:#}");
    assert_eq!(steps[0]["attempts"][0]["stdout"], "deployed\n");
    assert_eq!(steps[0]["approval"]["decided_by"], "ann", "{inc:#}");
    assert_eq!(steps[1]["outcome"]["status"], "succeeded", "{inc:#}");
    // The CLI, for pipelines: exit 1 and the reason; 0 when allowed; 2 when it cannot tell.
    let ask = |service: &str, json: bool| {
        let mut args = vec![
            "gate",
            service,
            "--server",
            &app.url,
            "--data-dir",
            store.to_str().unwrap(),
        ];
        if json {
            args.extend(["--output", "json"]);
        }
        runbookd(&args)
    };
    let o = ask("web", false);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("web: FROZEN\n"), "{}", stdout(&o));
    assert!(stdout(&o).contains(reasons[0]), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("recommended: Halt web releases."),
        "{}",
        stdout(&o)
    );
    let o = ask("web", true);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["allowed"], false);
    let o = ask("shade", false);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "shade: allowed\n");
    let o = ask("nosuch", false);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("service `nosuch`"), "{}", stderr(&o));
    let (dir, client) = (
        slos.path().to_owned(),
        prometheus.client(Duration::from_secs(5)),
    );
    let data_dir = store.clone();
    overrides(&mut app, &store, move |c| {
        c.slos = Some(dir);
        c.prometheus = Some(client);
        c.slo_refresh = Duration::from_secs(1);
        c.data_dir = data_dir;
        c.notifiers = crate::notify::notifiers(&ops);
    })
    .await;
}

/// Ann approves the first pending approval of the incident's first run.
async fn approve(app: &TestApp, inc: &Value, comment: &str) {
    approve_as(app, inc, &inc["approvals"][0], ("ann", comment)).await;
}

/// Approves `approval` of the incident's first run as `who`, saying why.
async fn approve_as(app: &TestApp, inc: &Value, approval: &Value, (who, comment): (&str, &str)) {
    let r = app
        .client
        .post(format!(
            "{}/api/v1/runs/{}/approval",
            app.url, inc["runs"][0]["id"]
        ))
        .json(&serde_json::json!({
            "approval": approval["id"],
            "decision": "approve",
            "author": who,
            "comment": comment
        }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// `method` `path` with a JSON body: the status and the JSON answer.
async fn send(app: &TestApp, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .request(method, format!("{}{path}", app.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        r.status().as_u16(),
        r.json::<Value>().await.unwrap_or_default(),
    )
}

/// An operator overrides web's freeze: the gate says yes with who, why and
/// until when (and still what it overrides), gated steps run, the override
/// outlives a restart, and ending it freezes the service again. Bad
/// requests are 4xx with the reason.
async fn overrides(
    app: &mut TestApp,
    store: &std::path::Path,
    config: impl FnOnce(&mut runbookd::config::ServerConfig),
) {
    let post = |body: Value| {
        send(
            app,
            reqwest::Method::POST,
            "/api/v1/gates/web/override",
            body,
        )
    };
    for (body, says) in [
        (
            serde_json::json!({"author": "ann", "for": "2h"}),
            "`reason` must say why",
        ),
        (
            serde_json::json!({"author": "ann", "reason": "hotfix", "for": "soon"}),
            "`for` must be how long",
        ),
        (
            serde_json::json!({"author": "ann", "reason": "hotfix", "for": "8d"}),
            "at most 7d",
        ),
        (
            serde_json::json!({"author": "ann", "reason": "hotfix", "for": "2h", "until": "x"}),
            "unknown field `until`",
        ),
    ] {
        let (code, v) = post(body.clone()).await;
        assert_eq!(code, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    let (code, v) = send(
        app,
        reqwest::Method::POST,
        "/api/v1/gates/nosuch/override",
        serde_json::json!({"author": "ann", "reason": "hotfix", "for": "2h"}),
    )
    .await;
    assert_eq!(code, 404, "{v}");
    let (code, v) = post(
        serde_json::json!({"author": "ann", "reason": "ship the fix for INC-0001", "for": "2h"}),
    )
    .await;
    assert_eq!(code, 200, "{v:#}");
    assert_eq!(v["allowed"], true);
    assert_eq!(v["overridden"]["by"], "ann");
    assert_eq!(v["overridden"]["reason"], "ship the fix for INC-0001");
    let until =
        chrono::DateTime::parse_from_rfc3339(v["overridden"]["until"].as_str().unwrap()).unwrap();
    let left = until.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(119) && left <= chrono::Duration::hours(2),
        "{left}"
    );
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("policy `halt-when-overspent`"),
        "what it overrides is still said: {v:#}"
    );
    // The SLO page says so, with the service's timeline.
    let page = app.page("/slos/web/latency").await;
    assert!(
        page.contains("id=\"slo-gate\"")
            && page.contains("overridden</span> by <b>ann</b>")
            && page.contains(": ship the fix for INC-0001")
            && page.contains("id=\"slo-gate-timeline\""),
        "{page}"
    );
    // Gated steps run while it is in force.
    let alert = crate::app::notification(
        "g-web-overridden",
        &[(
            &serde_json::json!({"alertname": "WebSlow", "service": "web", "instance": "b"}),
            "firing",
            "2026-12-05T08:00:00Z",
        )],
    );
    assert_eq!(app.post_alert(alert).await.status(), 200);
    let inc = app
        .wait_for_incident("INC-0003", "the overridden run", crate::app::runs_ended)
        .await;
    let steps = &inc["runs"][0]["result"]["steps"];
    assert_eq!(steps[0]["outcome"]["status"], "succeeded", "{inc:#}");
    assert_eq!(steps[1]["outcome"]["status"], "succeeded", "{inc:#}");
    // It outlives a restart (the store holds it).
    app.stop().await;
    app.restart_with(config).await;
    let (code, v) = app.get("/api/v1/gates/web").await;
    assert_eq!(code, 200, "{v:#}");
    assert_eq!(v["overridden"]["by"], "ann");
    // On web's timeline, with who and why.
    assert_eq!(v["timeline"][0]["kind"], "overridden", "{v:#}");
    assert_eq!(v["timeline"][0]["author"], "ann");
    assert!(
        v["timeline"][0]["message"]
            .as_str()
            .unwrap()
            .ends_with(": ship the fix for INC-0001"),
        "{v:#}"
    );
    let cli = |args: &[&str]| {
        let mut all = vec![
            "gate",
            "web",
            "--server",
            &app.url,
            "--data-dir",
            store.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        runbookd(&all)
    };
    let o = cli(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("web: allowed, overridden by ann until ")
            && stdout(&o).contains(
                ": ship the fix for INC-0001\n  overridden: policy `halt-when-overspent`"
            ),
        "{}",
        stdout(&o)
    );
    // Ended: frozen again; a second end finds none.
    let end = || {
        send(
            app,
            reqwest::Method::DELETE,
            "/api/v1/gates/web/override",
            serde_json::json!({"author": "bob"}),
        )
    };
    let (code, v) = end().await;
    assert_eq!(code, 423, "{v:#}");
    assert_eq!(v["overridden"], Value::Null);
    let (code, v) = end().await;
    assert_eq!(code, 404, "{v:#}");
    let (_, v) = app.get("/api/v1/gates/web").await;
    assert_eq!(v["timeline"][0]["kind"], "override_ended", "{v:#}");
    assert_eq!(v["timeline"][0]["author"], "bob");
    let page = app.page("/slos/web/latency").await;
    assert!(
        page.contains("<span class=\"badge slo-critical\">frozen</span>")
            && page.contains("override_ended</span> gate override ended early by bob"),
        "{page}"
    );
    // The CLI overrides and ends, for pipelines' operators.
    let o = cli(&["--override", "deploy window", "--for", "30m", "--as", "cat"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("web: allowed, overridden by cat until "),
        "{}",
        stdout(&o)
    );
    // A reason is shown, never run: markup in it is inert on the page.
    let (code, _) = send(
        app,
        reqwest::Method::POST,
        "/api/v1/gates/web/override",
        serde_json::json!({
            "author": "cat", "reason": "<img src=x onerror=alert(1)> window", "for": "30m"
        }),
    )
    .await;
    assert_eq!(code, 200);
    let page = app.page("/slos/web/latency").await;
    assert!(
        page.contains("&lt;img src&#x3D;x onerror&#x3D;alert(1)&gt; window")
            && !page.contains("<img src=x"),
        "{page}"
    );
    let o = cli(&["--override", "deploy window"]);
    assert_eq!(o.status.code(), Some(2), "--override needs --for");
    let o = cli(&["--end-override", "--as", "cat"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("web: FROZEN\n"), "{}", stdout(&o));
}

/// `runbookd check --slos` on a directory holding `WEB_SLOS` and `files`.
fn check_slos(files: &[(&str, &str)]) -> (tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), crate::slo::WEB_SLOS).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let o = runbookd(&["check", "--slos", dir.path().to_str().unwrap()]);
    (dir, o)
}

#[test]
fn bad_policies_get_file_line_col_errors() {
    let (dir, o) = check_slos(&[
        (
            "p.yaml",
            "policies:\n  - name: typo\n    services: [webb]\n    when: budget_remaining < 0.25\n    actions: [freeze]\n  - name: window\n    slos: [web/latency]\n    when: burn_rate(7h) > 1\n    actions: [freeze]\n",
        ),
        (
            "q.yaml",
            "policies:\n  - name: words\n    services: [web]\n    when: budget_left < 1\n    actions: [freeze, {wait: 1h}]\n",
        ),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    let (p, q) = (dir.path().join("p.yaml"), dir.path().join("q.yaml"));
    let (p, q) = (p.display(), q.display());
    for want in [
        format!("{p}:2:5: policy `typo`: no SLO of service `webb` is defined"),
        format!("{p}:6:5: policy `window`: `burn_rate(7h)`: `web/latency` has the alert windows"),
        format!("{q}:4:11: policy `words`: `when`: unknown measure `budget_left`"),
        format!("{q}:5:23: policy `words`: unknown action wait: 1h: expected `freeze`, `require_postmortem` or `{{notify: [NOTIFIER, …]}}`"),
    ] {
        assert!(err.contains(&want), "no `{want}` in:\n{err}");
    }
}

#[test]
fn bad_gated_steps_get_file_line_col_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("g.yaml"),
        "name: g\nmatchers: ['alertname = \"G\"']\nsteps:\n  - name: a\n    risk: extreme\n    run: ['true']\n  - name: b\n    requires: {budget: web}\n    on_frozen: ask\n    run: ['true']\n  - name: c\n    on_frozen: fail\n    run: ['true']\n  - name: d\n    requires: {budget: '{{steps.a.status}}'}\n    run: ['true']\n",
    )
    .unwrap();
    let o = runbookd(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    let f = dir.path().join("g.yaml");
    let f = f.display();
    for want in [
        format!("{f}:5:11: runbook `g`, step `a`: unknown risk `extreme`"),
        format!("{f}:9:16: runbook `g`, step `b`: unknown `on_frozen: ask`"),
        format!("{f}:12:16: runbook `g`, step `c`: `on_frozen` needs `requires: {{budget: SERVICE}}` or `risk: high`"),
        format!("{f}:15:"),
    ] {
        assert!(err.contains(&want), "no `{want}` in:\n{err}");
    }
}

/// `runbookd run` has no SLO statuses: `--plan` says which gate a step
/// asks, and a run skips (or fails) the gated step, saying it cannot tell.
#[test]
fn runbookd_run_cannot_tell_and_holds_gated_steps() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gated.yaml"), GATED).unwrap();
    let alert = dir.path().join("alert.json");
    std::fs::write(
        &alert,
        crate::app::notification(
            "g-web",
            &[(
                &serde_json::json!({"alertname": "WebSlow", "service": "web"}),
                "firing",
                "2026-12-05T08:00:00Z",
            )],
        ),
    )
    .unwrap();
    let (rb, alert) = (dir.path().to_str().unwrap(), alert.to_str().unwrap());
    let o = runbookd(&["run", "--plan", "--runbooks", rb, "--alert", alert]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("asks the error-budget gate of \"web\": while frozen, skipped"),
        "{}",
        stdout(&o)
    );
    let o = runbookd(&[
        "run",
        "--runbooks",
        rb,
        "--alert",
        alert,
        "--output",
        "json",
    ]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(out.contains("cannot tell whether `web` is frozen"), "{out}");
}

/// Policies over what one incident cost.
const COST_POLICIES: &str = r"policies:
  - name: postmortem-past-a-hundredth-of-a-percent
    slos: [web/availability]
    when: incident_budget_consumed > 0.0001
    actions: [require_postmortem, {notify: [ops]}]
    recommend: Write the postmortem with at least one P0 action item.
  - name: postmortem-past-half
    slos: [web/latency]
    when: incident_budget_consumed > 0.5
    actions: [require_postmortem]
";

/// A remediation that did not work, and rules for the budget's events.
const REMEDIATION: &str = r#"name: web-down
matchers: ['alertname = "WebDown"']
communication:
  - on: [postmortem_required, verify_failed]
    notify: [team]
steps:
  - name: recovered
    continue_on_failure: true
    verify:
      query: vector(1)
      success: "< 0"
      failure: ">= 1"
      interval: 100ms
      timeout: 10s
"#;

/// An incident that spent more of web/availability's budget (20× burn in
/// the last two hours of the history) than its policy allows is marked
/// postmortem-required once it resolved, with the policy, the SLO and the
/// share as the reason: on the API, the page and the draft (a P0 action
/// item first), on its timeline, and told once to the incident's rules and
/// the policy's notifier. A verify step that fails tells `verify_failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_that_spends_past_its_policy_requires_a_postmortem_and_says_so() {
    if !crate::prom::available() {
        return;
    }
    let (_, prometheus) = crate::prom::start_web().await;
    let slos = tempfile::tempdir().unwrap();
    std::fs::write(slos.path().join("web.yaml"), crate::slo::WEB_SLOS).unwrap();
    std::fs::write(slos.path().join("policies.yaml"), COST_POLICIES).unwrap();
    let rx = crate::notify::Receiver::start().await;
    let yaml = format!(
        "team: {{type: webhook, url: '{0}/team'}}\nops: {{type: webhook, url: '{0}/ops'}}\n",
        rx.url
    );
    let dir = slos.path().to_owned();
    let client = prometheus.client(Duration::from_secs(5));
    let app = TestApp::start(&[("web.yaml", REMEDIATION)], move |c| {
        c.slos = Some(dir);
        c.prometheus = Some(client);
        c.slo_refresh = Duration::from_secs(1);
        c.notifiers = crate::notify::notifiers(&yaml);
    })
    .await;
    let alert = crate::app::notification(
        "g-web",
        &[(
            &serde_json::json!({"alertname": "WebDown", "service": "web"}),
            "firing",
            "2026-12-05T08:00:00Z",
        )],
    );
    assert_eq!(app.post_alert(alert).await.status(), 200);
    let inc = app
        .wait_for_incident("INC-0001", "the run", crate::app::runs_ended)
        .await;
    let step = &inc["runs"][0]["result"]["steps"][0];
    assert_eq!(step["outcome"]["status"], "unverified", "{inc:#}");
    assert_eq!(
        step["outcome"]["reason"], "verify failed: 1 is >= 1",
        "{inc:#}"
    );
    // The page lists it among what failed.
    let page = app.page("/incidents/INC-0001").await;
    let failed = &page[page.find("id=\"failed\"").unwrap()..];
    assert!(
        failed[..failed.find("</dd>").unwrap()]
            .contains("recovered</b></a> <span class=\"badge o-unverified\">unverified"),
        "{page}"
    );
    let told = rx.wait("/team", 1).await;
    assert_eq!(told[0].body["event"], "verify_failed", "{:#}", told[0].body);
    assert_eq!(told[0].body["step"], "recovered");
    // Open, nothing is required yet.
    assert_eq!(inc["postmortem_required"], Value::Null, "{inc:#}");
    let r = app
        .client
        .post(format!("{}/api/v1/incidents/INC-0001/updates", app.url))
        .json(&serde_json::json!({"author": "olga", "message": "fixed", "status": "resolved"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let inc = app
        .wait_for_incident("INC-0001", "the postmortem to be required", |v| {
            !v["postmortem_required"].is_null()
        })
        .await;
    let share = |slo: &str| {
        inc["slo_budget"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["slo"] == slo)
            .unwrap_or_else(|| panic!("{inc:#}"))["share"]
            .as_f64()
            .unwrap()
    };
    let (availability, latency) = (share("availability"), share("latency"));
    assert!(
        availability > 0.0001 && latency < 0.5,
        "the history burns web/availability past a hundredth of a percent in 5 minutes, by day and by night (its traffic is a sixth at night): {availability}, {latency}"
    );
    let why = inc["postmortem_required"].as_str().unwrap();
    assert!(
        why.starts_with(&format!(
            "policy `postmortem-past-a-hundredth-of-a-percent` (incident_budget_consumed > 0.0001): web/availability: {:.3}% of its budget",
            availability * 100.0
        )) && why.ends_with("Recommended: Write the postmortem with at least one P0 action item"),
        "{why}"
    );
    assert!(!why.contains("postmortem-past-half"), "{why}");
    let entries: Vec<&Value> = inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "postmortem")
        .collect();
    assert_eq!(entries.len(), 1, "{inc:#}");
    assert_eq!(
        entries[0]["message"],
        format!("postmortem required: {why}").as_str()
    );
    // On web's timeline too.
    let (_, gate) = app.get("/api/v1/gates/web").await;
    assert_eq!(
        gate["timeline"][0]["kind"], "postmortem_required",
        "{gate:#}"
    );
    assert_eq!(
        gate["timeline"][0]["message"],
        format!("INC-0001 requires a postmortem: {why}").as_str()
    );
    // Told once each: the incident's rule and the policy's notifier.
    let team = rx.wait("/team", 2).await;
    assert_eq!(
        team[1].body["event"], "postmortem_required",
        "{:#}",
        team[1].body
    );
    let ops = rx.wait("/ops", 1).await;
    assert_eq!(ops[0].body["event"], "postmortem_required");
    assert_eq!(ops[0].body["incident"]["id"], "INC-0001");
    assert!(
        ops[0].body["message"].as_str().unwrap().contains(why),
        "{:#}",
        ops[0].body
    );
    let (code, md) = {
        let r = app
            .client
            .get(format!("{}/api/v1/incidents/INC-0001/postmortem", app.url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(code, 200);
    assert!(
        md.contains(
            "| Postmortem | **required**: policy `postmortem-past-a-hundredth-of-a-percent`"
        ),
        "{md}"
    );
    assert!(
        md.contains("## Action items\n\n- [ ] **P0**: _to be filled in"),
        "{md}"
    );
    let page = app.page("/incidents/INC-0001").await;
    assert!(
        page.contains("id=\"postmortem-required\"") && page.contains("postmortem required</span>"),
        "{page}"
    );
    // Nothing more is sent later: the cost is recorded once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rx.got("/ops").len(), 1);
    assert_eq!(rx.got("/team").len(), 2);
}

/// Policy actions that do not fit their condition, and notifiers the
/// server does not have, are refused where they are written.
#[test]
fn policy_actions_must_fit_their_condition_and_name_known_notifiers() {
    let (dir, o) = check_slos(&[(
        "q.yaml",
        "policies:\n  - name: mixed\n    services: [web]\n    when: budget_remaining < 0.5\n    actions: [{wait: 1}, {notify: [ops]}]\n  - name: cost\n    services: [web]\n    when: incident_budget_consumed > 0.2\n    actions: [freeze]\n",
    )]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    let q = dir.path().join("q.yaml");
    let q = q.display();
    for want in [
        format!("{q}:5:26: policy `mixed`: `notify` is told when the policy freezes or unfreezes its service (with `freeze`)"),
        format!("{q}:9:15: policy `cost`: `freeze` follows a service's budget"),
        "policy `cost`: a policy over an incident's cost says `require_postmortem`".to_owned(),
    ] {
        assert!(err.contains(&want), "no `{want}` in:\n{err}");
    }
    std::fs::write(
        dir.path().join("q.yaml"),
        "policies:\n  - name: cost\n    services: [web]\n    when: incident_budget_consumed > 0.2\n    actions: [require_postmortem, {notify: [ops, nobody]}]\n",
    )
    .unwrap();
    let o = runbookd(&["check", "--slos", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let elsewhere = tempfile::tempdir().unwrap();
    let config = elsewhere.path().join("config.yaml");
    std::fs::write(
        &config,
        "notifiers:\n  ops: {type: webhook, url: 'http://127.0.0.1:9/'}\n",
    )
    .unwrap();
    let o = runbookd(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "--slos",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(&format!(
            "{q}:2:5: policy `cost`: notifier `nobody` is not configured (configured: ops)"
        )),
        "{}",
        stderr(&o)
    );
}

/// `runbookd check` on `yaml` written as `file`: exit 1, and each of
/// `wants` in what it says, `{f}` standing for the file's path.
pub fn check_refuses(file: &str, yaml: &str, wants: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    std::fs::write(&path, yaml).unwrap();
    let o = runbookd(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    for want in wants {
        let want = want.replace("{f}", &path.display().to_string());
        assert!(err.contains(&want), "no `{want}` in:\n{err}");
    }
}

/// A drill incident that ended: (kind, its drill note, its run's state,
/// the step's output).
type Ended = (String, String, String, Option<String>);

/// Chaos drills that run only when it is safe.
fn experiments(today: chrono::Weekday) -> String {
    let other_days: Vec<String> = (1..7)
        .map(|i| {
            let mut d = today;
            for _ in 0..i {
                d = d.succ();
            }
            d.to_string().to_lowercase()
        })
        .collect();
    format!(
        r#"name: experiment
matchers: [alertname = "NeverFires"]
steps:
  - name: break-things
    run: ["/bin/echo", "{{{{labels.kind}}}}"]
drills:
  - schedule: "*/2 * * * * *"
    labels: {{service: web, kind: budget}}
    mode: execute
    requires: {{budget_above: 0.5}}
  - schedule: "*/2 * * * * *"
    labels: {{service: web, kind: calm}}
    mode: execute
    requires: {{no_open_incident: true, hours: "00:00-24:00"}}
  - schedule: "*/2 * * * * *"
    labels: {{service: web, kind: elsewhen}}
    mode: execute
    requires: {{days: [{}]}}
"#,
        other_days.join(", ")
    )
}

/// A drill whose `requires:` does not hold records its plan and why, and
/// runs nothing: web/latency's budget is overspent (not above half), a real
/// incident of web is open, or it is not one of its days. One that holds
/// runs its steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_run_only_when_their_requirements_hold() {
    if !crate::prom::available() {
        return;
    }
    let (_, prometheus) = crate::prom::start_web().await;
    let slos = tempfile::tempdir().unwrap();
    std::fs::write(slos.path().join("web.yaml"), crate::slo::WEB_SLOS).unwrap();
    let dir = slos.path().to_owned();
    let client = prometheus.client(Duration::from_secs(5));
    // A Wednesday noon (UTC) on runbookd's clock, whatever the day the
    // suite runs (it was the wall clock's: a drill due just after midnight
    // ran on a day the test had computed as another).
    let today = chrono::Weekday::Wed;
    let clock = runbookd::clock::Set::at("2026-12-02T12:00:00Z".parse().unwrap());
    let drills = experiments(today);
    let down = "name: web-down\nmatchers: ['alertname = \"WebDown\"']\nsteps:\n  - name: look\n    run: ['true']\n";
    let app = TestApp::start(
        &[("experiment.yaml", &drills), ("web.yaml", down)],
        move |c| {
            c.slos = Some(dir);
            c.prometheus = Some(client);
            c.slo_refresh = Duration::from_secs(1);
            c.clock = std::sync::Arc::new(clock);
        },
    )
    .await;
    // (kind, refusal note or None, planned or the step's output) of each
    // drill incident that ended.
    let seen = || async {
        let (_, list) = app.get("/api/v1/incidents?limit=500").await;
        let mut out = Vec::new();
        for i in list["incidents"].as_array().unwrap() {
            if i["drill"] != true || i["status"] != "resolved" {
                continue;
            }
            let v = app.incident(i["id"].as_str().unwrap()).await;
            let kind = v["alerts"][0]["labels"]["kind"]
                .as_str()
                .unwrap()
                .to_owned();
            let note = v["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|t| t["message"].as_str().filter(|m| m.starts_with("drill of")))
                .unwrap()
                .to_owned();
            let ran = v["runs"][0]["result"]["steps"][0]["attempts"][0]["stdout"]
                .as_str()
                .map(str::to_owned);
            out.push((
                kind,
                note,
                v["runs"][0]["state"].as_str().unwrap().to_owned(),
                ran,
            ));
        }
        out
    };
    let wait_for = |what: &'static str, want: Box<dyn Fn(&Ended) -> bool>| {
        let seen = &seen;
        async move {
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                let all = seen().await;
                if let Some(found) = all.iter().find(|d| want(d)) {
                    return found.clone();
                }
                assert!(Instant::now() < deadline, "no drill {what}: {all:#?}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    let (_, note, state, ran) = wait_for(
        "refused for the budget",
        Box::new(|d| d.0 == "budget" && d.1.contains("not above 50.0%")),
    )
    .await;
    assert_eq!((state.as_str(), ran), ("planned", None), "{note}");
    assert!(
        note.contains("(execute mode, schedule `*/2 * * * * *`, due ")
            && note.contains(") refused, its plan recorded and nothing run: ")
            && note.contains("web/latency has -"),
        "{note}"
    );
    let (_, note, state, ran) = wait_for("allowed", Box::new(|d| d.0 == "calm")).await;
    assert_eq!(state, "succeeded", "{note}");
    assert_eq!(ran.as_deref(), Some("calm\n"));
    assert!(!note.contains("refused"), "{note}");
    let (_, note, state, _) =
        wait_for("refused for the day", Box::new(|d| d.0 == "elsewhen")).await;
    assert_eq!(state, "planned");
    assert!(
        note.contains(&format!(
            "nothing run: it is {} (UTC), and it runs on ",
            today.to_string().to_lowercase()
        )),
        "{note}"
    );
    // A real incident of web opens: the calm drill is refused from then on.
    let resp = app
        .post_alert(crate::app::notification(
            "g-web",
            &[(
                &serde_json::json!({"alertname": "WebDown", "service": "web"}),
                "firing",
                "2026-12-05T08:00:00Z",
            )],
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let (_, list) = app.get("/api/v1/incidents?limit=500").await;
    let real = list["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["drill"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, note, state, _) = wait_for(
        "refused for the open incident",
        Box::new(|d| d.0 == "calm" && d.1.contains("has open incidents")),
    )
    .await;
    assert_eq!(state, "planned");
    assert!(
        note.ends_with(&format!("nothing run: `web` has open incidents: {real}")),
        "{note}"
    );
    // What an executed drill spent of web's budget is recorded, as for any
    // incident, once it ended.
    let deadline = Instant::now() + Duration::from_secs(30);
    let spent = loop {
        let (_, list) = app.get("/api/v1/incidents?limit=500").await;
        let mut found = None;
        for i in list["incidents"].as_array().unwrap() {
            if i["drill"] != true {
                continue;
            }
            let v = app.incident(i["id"].as_str().unwrap()).await;
            if v["runs"][0]["state"] == "succeeded"
                && v["slo_budget"].as_array().is_some_and(|b| !b.is_empty())
            {
                found = Some(v);
                break;
            }
        }
        if let Some(v) = found {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no executed drill's budget recorded"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let availability = spent["slo_budget"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["slo"] == "availability")
        .unwrap_or_else(|| panic!("{spent:#}"));
    assert!(availability["share"].as_f64().unwrap() > 0.0, "{spent:#}");
    assert!(
        spent["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["kind"] == "slo"),
        "{spent:#}"
    );
    drop(prometheus);
}

#[test]
fn bad_drill_requirements_get_file_line_col_errors() {
    check_refuses(
        "d.yaml",
        "name: d\nmatchers: ['alertname = \"D\"']\nsteps:\n  - name: a\n    run: ['true']\ndrills:\n  - schedule: '0 3 * * 1'\n    requires: {budget_above: 0.5}\n  - schedule: '0 3 * * 1'\n    labels: {service: web}\n    requires: {budget_above: 2, days: [someday], hours: '17:00-09:00'}\n",
        &[
            "{f}:8:15: runbook `d`: `requires:` counts a service's budget and incidents: give `service:` or a `service` label",
            "{f}:11:30: runbook `d`: `budget_above` is the share of the budget that must be left",
            "{f}:11:40: runbook `d`: `someday` is not a day",
            "{f}:11:57: runbook `d`: `hours: 17:00-09:00`: write `HH:MM-HH:MM` in UTC",
        ],
    );
}

/// A small exporter on loopback: `drill_error_ratio` at whatever the test
/// sets, for a Prometheus to scrape.
struct Exporter {
    addr: String,
    value: std::sync::Arc<std::sync::Mutex<f64>>,
}

impl Exporter {
    async fn start(value: f64) -> Exporter {
        let value = std::sync::Arc::new(std::sync::Mutex::new(value));
        let v = value.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let v = v.clone();
                async move {
                    format!(
                        "# TYPE drill_error_ratio gauge\ndrill_error_ratio {}\n",
                        *v.lock().unwrap()
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Exporter { addr, value }
    }

    fn set(&self, v: f64) {
        *self.value.lock().unwrap() = v;
    }
}

/// A chaos drill whose safeguard trips while it runs: the series it
/// watches degrades (a real Prometheus scrapes it every second), so the
/// running step is stopped long before its end, the next step never
/// runs, `on_failure` rolls back, and the run records the drill aborted
/// with the measurement that tripped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_safeguard_aborts_a_drill_when_the_series_degrades() {
    if !crate::prom::available() {
        return;
    }
    let exporter = Exporter::start(0.01).await;
    let now = chrono::Utc::now();
    let placeholder = format!(
        "# TYPE placeholder gauge\nplaceholder 1 {}\n# EOF\n",
        now.timestamp() - 3600
    );
    let prometheus = crate::prom::serve_scraping(&placeholder, Some(&exporter.addr)).await;
    let prom = prometheus.client(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(30);
    while prom
        .query("max(drill_error_ratio)", None)
        .await
        .map_or(0, |s| s.len())
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the exporter"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second = (chrono::Timelike::second(&chrono::Utc::now()) + 6) % 60;
    let chaos = format!(
        r#"name: chaos
matchers: [alertname = "NeverFires"]
steps:
  - name: inject
    run: ["/bin/sleep", "40"]
  - name: after
    run: ["/bin/echo", "never"]
on_failure:
  - name: rollback
    run: ["/bin/echo", "rolled back"]
drills:
  - schedule: "{second} * * * * *"
    labels: {{service: web}}
    mode: execute
    safeguards:
      - name: errors-stay-low
        query: max(drill_error_ratio)
        holds: "< 0.5"
        interval: 300ms
"#
    );
    let client = prometheus.client(Duration::from_secs(5));
    let app = TestApp::start(&[("chaos.yaml", &chaos)], move |c| {
        c.prometheus = Some(client);
    })
    .await;
    // The drill starts and its chaos step runs; the safeguard holds.
    let deadline = Instant::now() + Duration::from_secs(75);
    let id = loop {
        let (_, list) = app.get("/api/v1/incidents").await;
        if let Some(i) = list["incidents"].as_array().unwrap().first() {
            let id = i["id"].as_str().unwrap().to_owned();
            let v = app.incident(&id).await;
            if crate::app::run_states(&v) == ["running"] {
                break id;
            }
        }
        assert!(Instant::now() < deadline, "the drill never ran: {list:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        crate::app::run_states(&app.incident(&id).await),
        ["running"],
        "the safeguard held"
    );
    // The series degrades: the drill aborts within a few scrapes.
    let degraded = Instant::now();
    exporter.set(0.9);
    let v = app
        .wait_for_incident(&id, "the drill to abort", crate::app::runs_ended)
        .await;
    assert!(
        degraded.elapsed() < Duration::from_secs(15),
        "aborted after {:?}",
        degraded.elapsed()
    );
    let run = &v["runs"][0];
    assert_eq!(run["state"], "failed", "{v:#}");
    let why = run["result"]["aborted"].as_str().unwrap();
    assert!(
        why.starts_with(
            "safeguard `errors-stay-low` tripped: `max(drill_error_ratio)` measured 0.9 at "
        ) && why.ends_with("which breaks `< 0.5`"),
        "{why}"
    );
    assert!(
        v["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["message"]
                .as_str()
                .unwrap()
                .contains(&format!("drill aborted: {why}"))),
        "the timeline says so: {v:#}"
    );
    let steps = run["result"]["steps"].as_array().unwrap();
    let names: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["outcome"]["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("inject", "cancelled"), ("rollback", "succeeded")],
        "{v:#}"
    );
    assert_eq!(steps[1]["attempts"][0]["stdout"], "rolled back\n");
    let page = app.page(&format!("/incidents/{id}")).await;
    assert!(
        page.contains("drill aborted</span> safeguard &#x60;errors-stay-low&#x60; tripped"),
        "{page}"
    );
    drop(prometheus);
}

#[test]
fn bad_safeguards_get_file_line_col_errors() {
    check_refuses(
        "d.yaml",
        "name: d\nmatchers: ['alertname = \"D\"']\nsteps:\n  - name: a\n    run: ['true']\ndrills:\n  - schedule: '0 3 * * 1'\n    safeguards:\n      - {name: s, query: up, holds: '< 1'}\n  - schedule: '0 3 * * 1'\n    mode: execute\n    safeguards:\n      - {name: t, query: 'up{job=\"{{labels.job}}\"}', holds: '< 1'}\n      - {name: u, query: up, holds: 'small'}\n      - {name: v, query: up}\n",
        &[
            "{f}:9:7: runbook `d`: `safeguards` watch a drill that runs its steps: say `mode: execute`",
            "{f}:13:26: runbook `d`: a safeguard's query is written out in full",
            "{f}:14:37: runbook `d`: `holds`: ",
            "{f}:15:9: runbook `d`: a safeguard is `query:` with `holds:`",
        ],
    );
}

/// Runbooks that ask their service's gate as a whole.
const HELD: [(&str, &str); 4] = [
    (
        "held.yaml",
        "name: held\nmatchers: ['alertname = \"Held\"']\nrequires: {budget: web}\nsteps:\n  - name: a\n    run: ['true']\n",
    ),
    (
        "held-fail.yaml",
        "name: held-fail\nmatchers: ['alertname = \"HeldFail\"']\nrisk: high\non_frozen: fail\nsteps:\n  - name: a\n    run: ['true']\non_failure:\n  - name: never\n    run: ['true']\n",
    ),
    (
        "held-ask.yaml",
        "name: held-ask\nmatchers: ['alertname = \"HeldAsk\"']\nrequires: {budget: '{{labels.service}}'}\non_frozen: approve\nsteps:\n  - name: a\n    when: '{{#if labels.never}}yes{{/if}}'\n    shell: echo first\n  - name: b\n    shell: echo second\n",
    ),
    (
        "held-approve.yaml",
        "name: held-approve\nmatchers: ['alertname = \"HeldApprove\"']\nrequires: {budget: web}\non_frozen: approve\nsteps:\n  - name: ask\n    approve: {prompt: 'Restart web?', timeout: 10m}\n  - name: b\n    shell: echo restarted\n",
    ),
];

/// A runbook that says `requires:`/`risk:` asks its service's gate before
/// its first step: frozen, it is skipped (nothing runs, saying why), fails
/// (without a rollback: nothing ran), or waits for an operator once, then
/// runs every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_service_holds_runbooks_that_require_its_budget() {
    if !crate::prom::available() {
        return;
    }
    let (_, prometheus) = crate::prom::start_web().await;
    let slos = tempfile::tempdir().unwrap();
    std::fs::write(slos.path().join("web.yaml"), crate::slo::WEB_SLOS).unwrap();
    std::fs::write(
        slos.path().join("policies.yaml"),
        "policies:\n  - name: halt\n    services: [web]\n    when: budget_remaining < 0\n    actions: [freeze]\n",
    )
    .unwrap();
    let dir = slos.path().to_owned();
    let client = prometheus.client(Duration::from_secs(5));
    let app = TestApp::start(&HELD, move |c| {
        c.slos = Some(dir);
        c.prometheus = Some(client);
        c.slo_refresh = Duration::from_secs(1);
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.get("/api/v1/slos").await.1["refreshed_at"].is_null() {
        assert!(Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, gate) = app.get("/api/v1/gates/web").await;
    assert_eq!(code, 423, "{gate:#}");
    // The plan says which gate the run asks.
    let alert = |name: &str, group: &str| {
        crate::app::notification(
            group,
            &[(
                &serde_json::json!({"alertname": name, "service": "web"}),
                "firing",
                "2026-12-05T08:00:00Z",
            )],
        )
    };
    let plan: Value = app
        .client
        .post(format!("{}/api/v1/plan", app.url))
        .header("content-type", "application/json")
        .body(alert("HeldAsk", "g-ask"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        plan["alerts"][0]["runs"][0]["gate"],
        serde_json::json!({"service": "web", "on_frozen": "approve"}),
        "{plan:#}"
    );
    for (name, group) in [
        ("Held", "g-held"),
        ("HeldFail", "g-fail"),
        ("HeldAsk", "g-ask"),
        ("HeldApprove", "g-approve"),
    ] {
        assert_eq!(app.post_alert(alert(name, group)).await.status(), 200);
    }
    let frozen = "`web` is frozen by its error-budget policies: policy `halt`: budget_remaining of web/latency is -";
    // Skipped: nothing ran, and why.
    let inc = app
        .wait_for_incident("INC-0001", "the held run", crate::app::runs_ended)
        .await;
    let run = &inc["runs"][0];
    assert_eq!(run["state"], "skipped", "{inc:#}");
    assert!(
        run["result"]["held"].as_str().unwrap().starts_with(frozen),
        "{run:#}"
    );
    assert_eq!(run["result"]["steps"], serde_json::json!([]));
    // Failed: people must act; no rollback of what never ran.
    let inc = app
        .wait_for_incident("INC-0002", "the failed run", crate::app::runs_ended)
        .await;
    let run = &inc["runs"][0];
    assert_eq!(run["state"], "failed", "{inc:#}");
    assert!(run["result"]["held"].as_str().unwrap().starts_with(frozen));
    assert_eq!(run["result"]["steps"], serde_json::json!([]), "{run:#}");
    assert_eq!(inc["run_failed"], true);
    // Approve: asked once, before the first step, whatever that step's
    // `when` says; approved, the run goes on.
    let inc = app
        .wait_for_incident("INC-0003", "the run to ask", |v| {
            crate::app::run_states(v) == ["awaiting_approval"]
        })
        .await;
    let prompt = inc["approvals"][0]["prompt"].as_str().unwrap();
    assert!(
        prompt.starts_with(frozen) && prompt.ends_with("Run runbook `held-ask` anyway?"),
        "{inc:#}"
    );
    approve(&app, &inc, "the fix must ship").await;
    let inc = app
        .wait_for_incident("INC-0003", "the run to end", crate::app::runs_ended)
        .await;
    let steps = &inc["runs"][0]["result"]["steps"];
    assert_eq!(inc["runs"][0]["state"], "succeeded", "{inc:#}");
    assert_eq!(steps[0]["outcome"]["status"], "skipped", "{inc:#}");
    assert_eq!(steps[0]["approval"]["decided_by"], "ann");
    assert_eq!(steps[1]["attempts"][0]["stdout"], "second\n");
    assert_eq!(inc["approvals"].as_array().unwrap().len(), 1, "asked once");
    // An approval step under the frozen gate: granting the gate's question
    // does not answer the step's own, which is asked next.
    let inc = app
        .wait_for_incident("INC-0004", "the gate's question", |v| {
            crate::app::run_states(v) == ["awaiting_approval"]
        })
        .await;
    assert!(
        inc["approvals"][0]["prompt"]
            .as_str()
            .unwrap()
            .ends_with("Run runbook `held-approve` anyway?"),
        "{inc:#}"
    );
    approve(&app, &inc, "ship it").await;
    let pending = |v: &Value| {
        v["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["state"] == "pending")
            .cloned()
    };
    let inc = app
        .wait_for_incident("INC-0004", "the step's own question", |v| {
            pending(v).is_some_and(|a| a["prompt"] == "Restart web?")
        })
        .await;
    approve_as(&app, &inc, &pending(&inc).unwrap(), ("bob", "restart it")).await;
    let inc = app
        .wait_for_incident("INC-0004", "the run to end", crate::app::runs_ended)
        .await;
    let steps = &inc["runs"][0]["result"]["steps"];
    assert_eq!(inc["runs"][0]["state"], "succeeded", "{inc:#}");
    assert_eq!(steps[0]["approval"]["prompt"], "Restart web?", "{inc:#}");
    assert_eq!(steps[0]["approval"]["decided_by"], "bob");
    assert_eq!(steps[1]["attempts"][0]["stdout"], "restarted\n");
    assert_eq!(inc["approvals"].as_array().unwrap().len(), 2, "{inc:#}");
    drop(prometheus);
}

/// A drill whose safeguards cannot be watched (this server has no
/// Prometheus) runs none of its steps, and so rolls nothing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_whose_safeguards_cannot_be_watched_runs_nothing() {
    let second = (chrono::Timelike::second(&chrono::Utc::now()) + 4) % 60;
    let chaos = format!(
        r#"name: blind
matchers: [alertname = "NeverFires"]
steps:
  - name: inject
    run: ["/bin/echo", "chaos"]
on_failure:
  - name: rollback
    run: ["/bin/echo", "rolled back"]
drills:
  - schedule: "{second} * * * * *"
    labels: {{service: web}}
    mode: execute
    safeguards:
      - {{name: errors-stay-low, query: max(drill_error_ratio), holds: "< 0.5"}}
"#
    );
    let app = TestApp::start(&[("blind.yaml", &chaos)], |_| {}).await;
    let deadline = Instant::now() + Duration::from_secs(75);
    let inc = loop {
        let (_, list) = app.get("/api/v1/incidents").await;
        if let Some(i) = list["incidents"].as_array().unwrap().first() {
            let v = app.incident(i["id"].as_str().unwrap()).await;
            if crate::app::runs_ended(&v) {
                break v;
            }
        }
        assert!(Instant::now() < deadline, "the drill never ran: {list:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let run = &inc["runs"][0];
    assert_eq!(run["state"], "failed", "{inc:#}");
    assert!(
        run["result"]["aborted"]
            .as_str()
            .unwrap()
            .starts_with("no Prometheus to watch the drill's safeguards"),
        "{run:#}"
    );
    assert_eq!(
        run["result"]["steps"],
        serde_json::json!([]),
        "nothing ran, nothing rolled back"
    );
}
