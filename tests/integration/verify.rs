//! `verify:` steps against a real Prometheus (the web history of
//! `prom.rs`: 2% of requests fail over its last two hours): a condition
//! that holds passes after its consecutive successes, a `failure` fails at
//! once, a timeout is inconclusive (failed, or passed with
//! `on_inconclusive: continue`), every measurement is in the step's
//! output; and hostile label values stay inside their matcher.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::app::{notification, TestApp};

const RATIO: &str = "sum(rate(http_requests_total{job=\\\"{{labels.job}}\\\",code=\\\"500\\\"}[5m])) / sum(rate(http_requests_total{job=\\\"{{labels.job}}\\\"}[5m]))";

fn runbooks() -> Vec<(&'static str, String)> {
    let step = |name: &str, extra: &str| {
        format!("  - name: {name}\n    continue_on_failure: true\n    verify:\n      query: \"{RATIO}\"\n      interval: 100ms\n{extra}")
    };
    let checks = format!(
        "name: checks\nmatchers: ['alertname = \"Checks\"']\nsteps:\n{}{}{}{}",
        step(
            "recovered",
            "      success: \"< 0.5\"\n      consecutive_success: 2\n      timeout: 10s\n"
        ),
        step(
            "still-failing",
            "      success: \"< 0.001\"\n      failure: \">= 0.01\"\n      timeout: 10s\n"
        ),
        step("never", "      success: \"< 0.001\"\n      timeout: 1s\n"),
        step(
            "never-but-go-on",
            "      success: \"< 0.001\"\n      timeout: 1s\n      on_inconclusive: continue\n"
        ),
    );
    // With the query's value `1` an injected `or vector(1)` would pass.
    let hostile = format!(
        "name: hostile\nmatchers: ['alertname = \"Hostile\"']\nsteps:\n{}",
        step("injected", "      success: \"> 0.5\"\n      timeout: 1s\n").replace(
            RATIO,
            "count(http_requests_total{job=\\\"{{labels.job}}\\\"}) + count(http_requests_total{job=~\\\"{{labels.job}}\\\"})"
        )
    );
    // The run's 2s timeout bounds a verify step that would poll for a minute.
    let bounded = format!(
        "name: bounded\nmatchers: ['alertname = \"Bounded\"']\ntimeout: 2s\nsteps:\n{}",
        step("long", "      success: \"< 0.001\"\n      timeout: 1m\n")
    );
    vec![
        ("checks.yaml", checks),
        ("hostile.yaml", hostile),
        ("bounded.yaml", bounded),
    ]
}

async fn finished_steps(app: &TestApp, incident: &str) -> Vec<Value> {
    let inc = app
        .wait_for_incident(incident, "its run to end", crate::app::runs_ended)
        .await;
    inc["runs"][0]["result"]["steps"]
        .as_array()
        .unwrap()
        .clone()
}

fn step<'a>(steps: &'a [Value], name: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}"))
}

fn measurements(s: &Value) -> Vec<String> {
    s["attempts"][0]["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| l.contains(" value="))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_steps_poll_prometheus_and_record_every_measurement() {
    if !crate::prom::available() {
        return;
    }
    let history = crate::prom::History::web(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    let prometheus = crate::prom::start(&history).await;
    let client = prometheus.client(Duration::from_secs(5));
    let files = runbooks();
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let app = TestApp::start(&files, move |c| {
        c.prometheus = Some(client);
    })
    .await;
    let resp = app
        .post_alert(notification(
            "g-checks",
            &[(
                &json!({"alertname": "Checks", "job": "web"}),
                "firing",
                "2026-12-05T08:00:00Z",
            )],
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let steps = finished_steps(&app, "INC-0001").await;
    // Held twice in a row: passed, both measurements recorded.
    let s = step(&steps, "recovered");
    assert_eq!(s["outcome"]["status"], "succeeded", "{s}");
    let m = measurements(s);
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(m.iter().all(|l| l.ends_with("verdict=success")), "{m:?}");
    let value: f64 = m[0]
        .split("value=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((value - 0.02).abs() < 0.002, "the history's 2%: {value}");
    // The plan shows the rendered query.
    assert!(
        s["plan"]["verify"]["query"]
            .as_str()
            .unwrap()
            .contains("job=\"web\""),
        "{s}"
    );
    // `failure` holds: failed at once, after one measurement.
    let s = step(&steps, "still-failing");
    assert_eq!(s["outcome"]["status"], "unverified", "{s}");
    assert!(
        s["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("verify failed"),
        "{s}"
    );
    assert_eq!(measurements(s).len(), 1);
    // Neither: inconclusive at the timeout (about 10 measurements in 1s).
    let s = step(&steps, "never");
    assert_eq!(s["outcome"]["status"], "timed_out", "{s}");
    let n = measurements(s).len();
    assert!((5..=11).contains(&n), "{n}");
    assert!(measurements(s)
        .iter()
        .all(|l| l.ends_with("verdict=inconclusive")));
    // The postmortem says what was measured.
    let pm = app.page("/api/v1/incidents/INC-0001/postmortem").await;
    assert!(
        pm.contains("`recovered` (verify: 2 measurement(s), the last"),
        "{pm}"
    );
    let s = step(&steps, "never-but-go-on");
    assert_eq!(s["outcome"]["status"], "succeeded", "{s}");
    assert!(
        s["attempts"][0]["stdout"]
            .as_str()
            .unwrap()
            .contains("on_inconclusive: continue"),
        "{s}"
    );

    let t = Instant::now();
    let resp = app
        .post_alert(notification(
            "g-bounded",
            &[(
                &json!({"alertname": "Bounded", "job": "web"}),
                "firing",
                "2026-12-05T08:00:00Z",
            )],
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let steps = finished_steps(&app, "INC-0002").await;
    let s = step(&steps, "long");
    assert_eq!(s["outcome"]["status"], "timed_out", "{s}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(
        s["attempts"][0]["duration_ms"].as_u64().unwrap() < 5_000,
        "{s}"
    );

    // Hostile label values: each stays inside its matcher, so the query
    // finds no series (and `or vector(1)` never answers 1).
    for (i, hostile) in [
        "web\"} or vector(1) or x{a=\"",
        "web\\\"} or vector(1) #",
        ".*",
        "web|.+",
        "web\n) or vector(1",
    ]
    .iter()
    .enumerate()
    {
        let resp = app
            .post_alert(notification(
                &format!("g-hostile-{i}"),
                &[(
                    &json!({"alertname": "Hostile", "job": hostile}),
                    "firing",
                    "2026-12-05T08:00:00Z",
                )],
            ))
            .await;
        assert_eq!(resp.status(), 200);
        let steps = finished_steps(&app, &format!("INC-{:04}", i + 3)).await;
        let s = step(&steps, "injected");
        assert_eq!(s["outcome"]["status"], "timed_out", "{hostile:?}: {s}");
        let m = measurements(s);
        assert!(
            !m.is_empty() && m.iter().all(|l| l.contains("value=no data")),
            "{hostile:?}: {m:?}"
        );
    }
    drop(prometheus);
}

#[test]
fn check_refuses_alert_values_outside_a_matcher_with_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("v.yaml"),
        "name: v\nmatchers: ['alertname = \"V\"']\nsteps:\n  - name: a\n    verify:\n      query: 'rate(x[{{labels.window}}])'\n      success: '< 1'\n  - name: b\n    verify:\n      query: 'x{job=\"{{labels.job}}\"}'\n      success: 'about 1'\n  - name: c\n    verify: {alert_resolved: true, timeout: 5m}\n",
    )
    .unwrap();
    let o = crate::helpers::runbookd(&["check", dir.path().to_str().unwrap()]);
    assert!(!o.status.success());
    let err = crate::helpers::stderr(&o);
    assert!(err.contains("v.yaml:6:14: runbook `v`, step `a`: `query`: a `{{…}}` in a query may stand only inside a label matcher's double-quoted value"), "{err}");
    assert!(
        err.contains("v.yaml:11:16: runbook `v`, step `b`: `success`: `about 1`"),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");
}

/// SLO burn-rate checks: the web history burns web/availability's budget
/// 20× over the last two hours (2% errors against 0.1%).
const BURN: &str = r#"name: burn
matchers: ['alertname = "Burn"']
steps:
  - name: back-under-fifty
    verify:
      slo: web/availability
      burn_rate: {window: 5m, below: 50}
      interval: 100ms
      timeout: 10s
  - name: back-to-normal
    continue_on_failure: true
    verify:
      slo: web/availability
      burn_rate: {window: 5m, below: 1}
      interval: 200ms
      timeout: 1s
"#;

/// `verify: {slo, burn_rate}` measures the SLO's own SLI over the window
/// against its budget: a real Prometheus answers 20× for the history's
/// last hours, so `below: 50` passes and `below: 1` runs out of time; the
/// plan says what it checks, the record holds the query built from the
/// SLO, and an SLO that is not defined is refused where it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_burn_rate_checks_measure_the_slo_s_own_sli() {
    if !crate::prom::available() {
        return;
    }
    let (_, prometheus) = crate::prom::start_web().await;
    let client = prometheus.client(Duration::from_secs(5));
    let slos = tempfile::tempdir().unwrap();
    std::fs::write(slos.path().join("web.yaml"), crate::slo::WEB_SLOS).unwrap();
    let dir = slos.path().to_owned();
    let app = TestApp::start(&[("burn.yaml", BURN)], move |c| {
        c.prometheus = Some(client);
        c.slos = Some(dir);
    })
    .await;
    let alert = notification(
        "g-burn",
        &[(
            &json!({"alertname": "Burn", "service": "web"}),
            "firing",
            "2026-12-05T08:00:00Z",
        )],
    );
    let plan: Value = app
        .client
        .post(format!("{}/api/v1/plan", app.url))
        .header("content-type", "application/json")
        .body(alert.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let planned = &plan["alerts"][0]["runs"][0]["steps"][0];
    assert_eq!(
        planned["text"],
        "verify the burn rate of web/availability over 5m < 50 (the query is built from the SLO's SLI when the step runs)",
        "{plan:#}"
    );
    assert_eq!(planned["verify"]["burn_rate"]["slo"], "web/availability");
    assert_eq!(app.post_alert(alert).await.status(), 200);
    let steps = finished_steps(&app, "INC-0001").await;
    let s = step(&steps, "back-under-fifty");
    assert_eq!(s["outcome"]["status"], "succeeded", "{s:#}");
    let query = s["plan"]["verify"]["query"].as_str().unwrap();
    assert!(
        query.starts_with("(sum(sum(rate(http_requests_total{job=\"web\",code=~\"5..\"}[5m]))) / sum(sum(rate(http_requests_total{job=\"web\"}[5m])))) / 0.001"),
        "{query}"
    );
    let m = measurements(s);
    let value: f64 = m[0]
        .split(" value=")
        .nth(1)
        .and_then(|v| v.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (value - 20.0).abs() < 1.0,
        "a 20× burn measured {value}: {m:?}"
    );
    let s = step(&steps, "back-to-normal");
    assert_eq!(s["outcome"]["status"], "timed_out", "{s:#}");
    assert!(
        s["outcome"]["cause"]
            .as_str()
            .unwrap()
            .starts_with("verify inconclusive after 1s: last value 2"),
        "{s:#}"
    );
    drop(prometheus);
    // Named SLOs must exist: `check --slos` and the server say where.
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("b.yaml"),
        BURN.replace(
            "slo: web/availability\n      burn_rate: {window: 5m, below: 1}",
            "slo: web/avail\n      burn_rate: {window: 5m, below: 1}",
        ),
    )
    .unwrap();
    let o = crate::helpers::runbookd(&[
        "check",
        rb.path().to_str().unwrap(),
        "--slos",
        slos.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = crate::helpers::stderr(&o);
    assert!(
        err.contains("b.yaml:13:12: runbook `burn`: SLO `web/avail` is not defined (defined: web/availability, web/latency)"),
        "{err}"
    );
}

#[test]
fn bad_burn_rate_checks_get_file_line_col_errors() {
    crate::gates::check_refuses(
        "v.yaml",
        "name: v\nmatchers: ['alertname = \"V\"']\nsteps:\n  - name: a\n    verify: {slo: web, burn_rate: {window: 5m, below: 1}}\n  - name: b\n    verify: {slo: web/availability}\n  - name: c\n    verify: {slo: web/availability, burn_rate: {window: 10s, below: 0}}\n  - name: d\n    verify: {slo: web/availability, burn_rate: {window: 5m, below: 1}, success: '< 1'}\n",
        &[
            "v.yaml:5:19: runbook `v`, step `a`: `slo: web`: name the SLO as SERVICE/NAME",
            "v.yaml:7:19: runbook `v`, step `b`: `slo:` needs `burn_rate: {window: 5m, below: 1}`",
            "runbook `v`, step `c`: a burn rate's window is 1m to 1d",
            "runbook `v`, step `c`: `below` is a positive number",
            "runbook `v`, step `d`: `success` does not go with `slo:`/`burn_rate:`",
        ],
    );
}
