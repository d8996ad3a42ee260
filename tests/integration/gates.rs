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

const POLICIES: &str = r"policies:
  - name: halt-when-overspent
    services: [web]
    when: budget_remaining < 0
    actions: [freeze]
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let history = crate::prom::History::web(now);
    let prometheus = crate::prom::start(&history).await;
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
    let rb = "name: look\nmatchers: ['alertname = \"Look\"']\nsteps:\n  - name: look\n    run: ['true']\n";
    let app = TestApp::start(&[("look.yaml", rb)], move |c| {
        c.slos = Some(dir);
        c.prometheus = Some(client);
        c.slo_refresh = Duration::from_secs(1);
        c.data_dir = store_dir;
    })
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
}

#[test]
fn bad_policies_get_file_line_col_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), crate::slo::WEB_SLOS).unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "policies:\n  - name: typo\n    services: [webb]\n    when: budget_remaining < 0.25\n    actions: [freeze]\n  - name: window\n    slos: [web/latency]\n    when: burn_rate(7h) > 1\n    actions: [freeze]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("q.yaml"),
        "policies:\n  - name: words\n    services: [web]\n    when: budget_left < 1\n    actions: [freeze, {notify: [slack]}]\n",
    )
    .unwrap();
    let o = runbookd(&["check", "--slos", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    let (p, q) = (dir.path().join("p.yaml"), dir.path().join("q.yaml"));
    let (p, q) = (p.display(), q.display());
    for want in [
        format!("{p}:2:5: policy `typo`: no SLO of service `webb` is defined"),
        format!("{p}:6:5: policy `window`: `burn_rate(7h)`: `web/latency` has the alert windows"),
        format!("{q}:4:11: policy `words`: `when`: unknown measure `budget_left`"),
        format!("{q}:5:23: policy `words`: `notify` is not built yet"),
    ] {
        assert!(err.contains(&want), "no `{want}` in:\n{err}");
    }
}
