//! SLO files and the rules made from them, checked by the real `promtool`:
//! the shipped examples, Sloth's own example files, and unit tests of the
//! generated rules (a fast burn pages, a slow one opens a ticket, a
//! low-traffic guard holds, the period ratio is weighted by traffic).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::exec::require;
use crate::helpers::{root, runbookd, stderr, stdout};

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/slo").join(name)
}

fn promtool() -> Option<PathBuf> {
    let found = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    require(found.is_some(), "promtool (apt-get install prometheus)").then_some(found?)
}

/// `runbookd slo rules --slos SLOS --out DIR/rules.yml`.
fn rules_into(slos: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("rules.yml");
    let o = runbookd(&[
        "slo",
        "rules",
        "--slos",
        slos.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

fn promtool_ok(promtool: &Path, args: &[&str]) {
    let o = Command::new(promtool).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_shipped_slos_check_and_their_rules_pass_promtool() {
    let o = runbookd(&["check", "--slos", "slos", "runbooks"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("slos: 3 SLO(s), 1 forecast(s), 4 policy(ies): ok"),
        "{}",
        stdout(&o)
    );
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_into(&root().join("slos"), dir.path());
    promtool_ok(&promtool, &["check", "rules", rules.to_str().unwrap()]);
    let text = std::fs::read_to_string(&rules).unwrap();
    // Sloth's names and labels, so that dashboards made for Sloth work.
    for needle in [
        "record: slo:sli_error:ratio_rate5m",
        "record: slo:period_error_budget_remaining:ratio",
        "sloth_id: api-availability",
        "alert: ErrorBudgetBurn",
        "sloth_severity: page",
    ] {
        assert!(text.contains(needle), "no `{needle}` in the rules");
    }
}

#[test]
fn sloth_s_own_examples_load_unchanged_and_make_rules_promtool_accepts() {
    let Some(promtool) = promtool() else { return };
    // One file at a time, as Sloth reads them (its examples reuse names).
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture("sloth"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 6);
    let mut slos = 0;
    for file in files {
        let o = runbookd(&["check", "--slos", file.to_str().unwrap(), "runbooks"]);
        assert!(o.status.success(), "{}: {}", file.display(), stderr(&o));
        let said = stdout(&o);
        slos += said
            .lines()
            .find_map(|l| {
                l.strip_suffix(" SLO(s), 0 forecast(s), 0 policy(ies): ok")?
                    .rsplit(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{said}"));
        let dir = tempfile::tempdir().unwrap();
        let rules = rules_into(&file, dir.path());
        promtool_ok(&promtool, &["check", "rules", rules.to_str().unwrap()]);
    }
    assert_eq!(slos, 9);
}

#[test]
fn the_generated_rules_page_on_a_fast_burn_ticket_a_slow_one_and_weigh_by_traffic() {
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    rules_into(&fixture("web.yaml"), dir.path());
    let test = dir.path().join("web.test.yaml");
    std::fs::copy(fixture("web.test.yaml"), &test).unwrap();
    promtool_ok(&promtool, &["test", "rules", test.to_str().unwrap()]);
}

#[test]
fn calendar_periods_count_from_the_month_s_first_day_in_the_rules() {
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_into(&fixture("calendar.yaml"), dir.path());
    promtool_ok(&promtool, &["check", "rules", rules.to_str().unwrap()]);
    let test = dir.path().join("calendar.test.yaml");
    std::fs::copy(fixture("calendar.test.yaml"), &test).unwrap();
    promtool_ok(&promtool, &["test", "rules", test.to_str().unwrap()]);
}

#[test]
fn bad_slo_files_get_file_line_col_errors_and_no_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "version: prometheus/v1\nservice: web\nslos:\n  - name: avail\n    objective: 99.9\n    sli:\n      events:\n        error_query: sum(rate(e[{{.window}}])\n        total_query: sum(rate(t[{{.window}}]))\n    period: 30days\n",
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let o = runbookd(&["check", "--slos", d, "runbooks"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("bad.yaml:8:22: slo `web/avail`: `sli.events.error_query`: not PromQL"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:10:13: slo `web/avail`: period: not a valid duration `30days`"),
        "{err}"
    );
    let o = runbookd(&["slo", "rules", "--slos", d]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty(), "no rules on stdout: {}", stdout(&o));
    // OpenSLO's own example: a threshold SLI on no Prometheus source.
    let o = runbookd(&[
        "check",
        "--slos",
        fixture("openslo").to_str().unwrap(),
        "runbooks",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("occurences-slo.yaml:16:9: slo `web-shop/search-slo`: `thresholdMetric` SLIs are not supported"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn serve_refuses_to_start_on_invalid_slo_files() {
    let dir = tempfile::tempdir().unwrap();
    let slos = dir.path().join("slos");
    std::fs::create_dir(&slos).unwrap();
    std::fs::write(slos.join("x.yaml"), "apiVersion: openslo/v2\nkind: SLO\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .current_dir(root())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--runbooks",
            "runbooks",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--slos")
        .arg(&slos)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("x.yaml:1:13: unknown apiVersion `openslo/v2`"),
        "{}",
        stderr(&o)
    );
}

pub const WEB_SLOS: &str = r#"version: "prometheus/v1"
service: "web"
slos:
  - name: "availability"
    objective: 99.9
    sli:
      events:
        error_query: sum(rate(http_requests_total{job="web",code=~"5.."}[{{.window}}]))
        total_query: sum(rate(http_requests_total{job="web"}[{{.window}}]))
  - name: "latency"
    objective: 99
    sli:
      events:
        error_query: sum(rate(http_request_duration_seconds_count{job="web"}[{{.window}}])) - sum(rate(http_request_duration_seconds_bucket{job="web",le="0.5"}[{{.window}}]))
        total_query: sum(rate(http_request_duration_seconds_count{job="web"}[{{.window}}]))
"#;

/// A directory holding `WEB_SLOS`.
fn web_slos() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), WEB_SLOS).unwrap();
    dir
}

/// `runbookd slo status --output json` for the SLOs in `dir`.
fn slo_status_json(dir: &Path, prometheus: &str) -> serde_json::Value {
    let o = runbookd(&[
        "slo",
        "status",
        "--slos",
        dir.to_str().unwrap(),
        "--prometheus",
        prometheus,
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        (got - want).abs() <= rel * want.abs().max(1e-12),
        "{what}: runbookd says {got}, the history {want}"
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn find<'a>(list: &'a serde_json::Value, slo: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["slo"] == slo)
        .unwrap_or_else(|| panic!("no {slo} in {list}"))
}

/// Holds an availability status to the history: the period (30 days, in
/// whole hours up to the hour it was read in), its errors and events, the
/// budget, the last hour's burn rate.
fn holds_to_the_history(s: &serde_json::Value, history: &crate::prom::History) {
    let checked = chrono::DateTime::parse_from_rfc3339(s["checked_at"].as_str().unwrap()).unwrap();
    let t = u64::try_from(checked.timestamp()).unwrap() / 3600 * 3600;
    let (requests, errors) = history.between(t - 720 * 3600, t);
    #[allow(clippy::cast_precision_loss)]
    let (requests, errors) = (requests as f64, errors as f64);
    close(s["events"].as_f64().unwrap(), requests, 1e-6, "events");
    close(s["errors"].as_f64().unwrap(), errors, 1e-6, "errors");
    let ratio = errors / requests;
    close(
        s["error_ratio"].as_f64().unwrap(),
        ratio,
        1e-6,
        "error ratio",
    );
    close(s["budget_minutes"].as_f64().unwrap(), 43.2, 1e-9, "budget");
    close(
        s["remaining"].as_f64().unwrap(),
        1.0 - ratio / 0.001,
        1e-5,
        "remaining",
    );
    // The last two hours fail about 2%: twenty times the budget's pace,
    // over the page tier's 14.4 in both its windows.
    let (r, e) = history.between(history.end - 3600, history.end);
    #[allow(clippy::cast_precision_loss)]
    let pace = e as f64 / r as f64 / 0.001;
    assert!(pace > 14.4, "{pace}");
    let tier = &s["tiers"][0];
    assert_eq!(
        (
            tier["short"]["window"].as_str(),
            tier["long"]["window"].as_str()
        ),
        (Some("5m"), Some("1h"))
    );
    close(
        tier["long"]["burn_rate"].as_f64().unwrap(),
        pace,
        0.01,
        "the 1h burn rate",
    );
    close(
        tier["short"]["burn_rate"].as_f64().unwrap(),
        pace,
        0.01,
        "the 5m burn rate",
    );
    assert_eq!(tier["burning"], true);
    // At that pace, what is left lasts remaining × 30 days ÷ pace.
    close(
        s["exhaustion_seconds"].as_f64().unwrap(),
        (1.0 - ratio / 0.001) * 30.0 * 86_400.0 / pace,
        0.02,
        "time to exhaustion",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_status_from_a_real_prometheus_is_the_history_s_event_weighted_truth() {
    if !crate::prom::available() {
        return;
    }
    let history = crate::prom::History::web(unix_now());
    let prometheus = crate::prom::start(&history).await;
    let dir = web_slos();
    let list = slo_status_json(dir.path(), &prometheus.url);
    let avail = find(&list, "availability");
    holds_to_the_history(avail, &history);
    assert_eq!(avail["source"], "queries", "no rules are loaded");
    // Budget left, but the page tier burns: critical.
    assert!(avail["remaining"].as_f64().unwrap() > 0.0, "{avail}");
    assert_eq!(avail["state"], "critical");
    // The latency SLO: 2% slower than 500ms against 1% allowed, and its
    // 99th percentile interpolated in the (0.5, 1] bucket.
    let latency = find(&list, "latency");
    // (within 0.1%: the quiet hours' bucket counts are whole requests.)
    close(
        latency["error_ratio"].as_f64().unwrap(),
        0.02,
        1e-3,
        "latency error ratio",
    );
    assert_eq!(latency["latency"]["threshold"], 0.5);
    assert_eq!(latency["latency"]["quantile"], 0.99);
    close(
        latency["latency"]["value"].as_f64().unwrap(),
        0.75,
        0.01,
        "p99",
    );
    // In text, a line per SLO, the least budget left first.
    let o = runbookd(&[
        "slo",
        "status",
        "--slos",
        dir.path().to_str().unwrap(),
        "--prometheus",
        &prometheus.url,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("web/availability") && text.contains("critical"),
        "{text}"
    );
}

/// The server reads SLO status in the background: the API and the pages
/// serve the last numbers, a Prometheus that goes away leaves them marked
/// stale with the error, and alerts are still taken at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_shows_slos_from_prometheus_and_keeps_them_stale_when_it_goes() {
    use crate::app::{notification, TestApp};
    use serde_json::{json, Value};
    use std::time::{Duration, Instant};
    if !crate::prom::available() {
        return;
    }
    let history = crate::prom::History::web(unix_now());
    let mut prometheus = crate::prom::start(&history).await;
    let slos = web_slos();
    let client = prometheus.client(Duration::from_secs(5));
    let dir = slos.path().to_owned();
    let rb = "name: web-down\nmatchers: ['alertname = \"WebDown\"']\nsteps:\n  - name: look\n    run: ['true']\n";
    let app = TestApp::start(&[("web.yaml", rb)], move |c| {
        c.slos = Some(dir);
        c.prometheus = Some(client);
        c.slo_refresh = Duration::from_secs(1);
    })
    .await;
    let get = |path: &'static str| {
        let (client, url) = (app.client.clone(), app.url.clone());
        async move {
            let r = client.get(format!("{url}{path}")).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let list: Value = loop {
        let (code, body) = get("/api/v1/slos").await;
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if !v["refreshed_at"].is_null() {
            break v;
        }
        assert!(Instant::now() < deadline, "never refreshed: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let avail = find(&list["slos"], "availability");
    holds_to_the_history(avail, &history);
    let remaining = avail["remaining"].as_f64().unwrap();
    // Least budget left first: the latency SLO (2% slow against 1%) is
    // overspent.
    assert_eq!(list["slos"][0]["slo"], "latency", "{list}");
    // An incident of the service shows on its SLO.
    let resp = app
        .post_alert(notification(
            "g-web",
            &[(
                &json!({"alertname": "WebDown", "service": "web"}),
                "firing",
                "2026-12-05T08:00:00Z",
            )],
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let (code, body) = get("/api/v1/slos/web/availability").await;
    assert_eq!(code, 200, "{body}");
    let one: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(one["incidents"][0]["id"], "INC-0001", "{one}");
    assert_eq!(one["definition"]["budget_minutes"], 43.2);
    assert_eq!(one["definition"]["windows"]["page"][0]["long"], "1h");
    // What the incident cost, so far: the budget its service's SLOs spent
    // since it opened (at least the last 5 minutes).
    let (code, body) = get("/api/v1/incidents/INC-0001").await;
    assert_eq!(code, 200, "{body}");
    let inc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(inc["slo_affecting"], true, "{inc}");
    let spent = inc["slo_budget"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["slo"] == "availability")
        .unwrap_or_else(|| panic!("{inc}"));
    let (_, recent_errors) = history.between(history.end - 300, history.end);
    #[allow(clippy::cast_precision_loss)]
    let recent_errors = recent_errors as f64;
    close(
        spent["errors"].as_f64().unwrap(),
        recent_errors,
        0.25,
        "errors during the incident",
    );
    let events = avail["events"].as_f64().unwrap();
    close(
        spent["minutes"].as_f64().unwrap(),
        spent["errors"].as_f64().unwrap() / (0.001 * events) * 43.2,
        0.01,
        "budget minutes spent",
    );
    let (code, md) = get("/api/v1/incidents/INC-0001/postmortem").await;
    assert_eq!(code, 200);
    assert!(
        md.contains("- SLO `web/availability`: ") && md.contains("## Monitoring queries"),
        "{md}"
    );
    let (code, page) = get("/incidents/INC-0001").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("id=\"slo-budget\"") && page.contains("SLO-affecting"),
        "{page}"
    );
    // Resolved, what it cost is recorded once, on its timeline, and it is
    // SLO-affecting in the list; an incident of a service without SLOs
    // (sev3) is not.
    let resp = app
        .post_alert(notification(
            "g-other",
            &[(
                &json!({"alertname": "WebDown", "service": "other"}),
                "firing",
                "2026-12-05T08:00:00Z",
            )],
        ))
        .await;
    assert_eq!(resp.status(), 200);
    for id in ["INC-0001", "INC-0002"] {
        let r = app
            .client
            .post(format!("{}/api/v1/incidents/{id}/updates", app.url))
            .header("content-type", "application/json")
            .body(r#"{"author": "olga", "message": "fixed", "status": "resolved"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let note = loop {
        let v: Value = serde_json::from_str(&get("/api/v1/incidents/INC-0001").await.1).unwrap();
        let found = v["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["kind"] == "slo")
            .cloned();
        if let Some(t) = found {
            break t;
        }
        assert!(Instant::now() < deadline, "no SLO note: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let msg = note["message"].as_str().unwrap();
    assert!(
        msg.starts_with("SLO budget spent: web/availability: ") && msg.contains("web/latency"),
        "{msg}"
    );
    let listed = |q: &'static str| {
        let get = &get;
        async move {
            let v: Value = serde_json::from_str(&get(q).await.1).unwrap();
            v["incidents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed("/api/v1/incidents?slo_affecting=true").await,
        ["INC-0001"]
    );
    assert_eq!(
        listed("/api/v1/incidents?slo_affecting=false").await,
        ["INC-0002"]
    );
    let (code, page) = get("/incidents?slo_affecting=true").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("INC-0001") && !page.contains("INC-0002"),
        "{page}"
    );
    let (code, body) = get("/api/v1/slos/web/nope").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("web/nope"), "{body}");
    // The pages.
    let (code, page) = get("/slos").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("href=\"/slos/web/availability\"") && page.contains("slo-critical"),
        "{page}"
    );
    let (code, page) = get("/slos/web/availability").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("<svg class=\"chart\"") && page.contains("<polyline"),
        "{page}"
    );
    assert!(page.contains("INC-0001"), "{page}");
    // Prometheus goes away: the numbers stay, marked stale with why.
    prometheus.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    let avail = loop {
        let v: Value = serde_json::from_str(&get("/api/v1/slos").await.1).unwrap();
        let a = find(&v["slos"], "availability").clone();
        if a["stale"] == true {
            break a;
        }
        assert!(Instant::now() < deadline, "never stale: {a}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        avail["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach Prometheus"),
        "{avail}"
    );
    assert_eq!(avail["remaining"].as_f64(), Some(remaining));
    // Alerts are taken at once all the same.
    let t0 = Instant::now();
    let resp = app
        .post_alert(notification(
            "g-web-2",
            &[(
                &json!({"alertname": "WebDown", "service": "web", "instance": "b"}),
                "firing",
                "2026-12-05T08:01:00Z",
            )],
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let (code, page) = get("/slos/web/availability").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("stale") && page.contains("cannot draw the budget"),
        "{page}"
    );
}

/// Once the rules' hourly recordings cover the period, status reads them
/// (one series per SLO) instead of the SLI queries, with the same numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_status_reads_the_rules_recordings_once_they_cover_the_period() {
    if !crate::prom::available() {
        return;
    }
    let history = crate::prom::History::web(unix_now());
    let prometheus = crate::prom::serve(&history.openmetrics_with_recordings("availability")).await;
    let dir = web_slos();
    let list = slo_status_json(dir.path(), &prometheus.url);
    let avail = find(&list, "availability");
    assert_eq!(avail["source"], "recordings", "{avail}");
    holds_to_the_history(avail, &history);
    // The latency SLO has no recordings: its SLI queries, as before.
    assert_eq!(find(&list, "latency")["source"], "queries");
    // The batch (a few queries for every SLO) says what each SLO's own
    // queries say.
    let set = runbookd::slo::load_dir(dir.path()).unwrap();
    let prom = prometheus.client(std::time::Duration::from_secs(10));
    let now = chrono::Utc::now();
    let batched = runbookd::slo::refresh::read_all(&prom, &set, now).await;
    let alone = runbookd::slo::refresh::read_each(&prom, &set, now, 2).await;
    assert_eq!(batched.len(), alone.len());
    for (b, a) in batched.iter().zip(&alone) {
        let num = |s: &runbookd::slo::status::Status| {
            let mut v = vec![
                s.events,
                s.errors,
                s.error_ratio,
                s.remaining,
                s.exhaustion_seconds,
            ];
            v.extend(
                s.tiers
                    .iter()
                    .flat_map(|t| [t.short.burn_rate, t.long.burn_rate]),
            );
            v
        };
        assert_eq!(
            (b.state, b.source, &b.error),
            (a.state, a.source, &a.error),
            "{}",
            b.slo
        );
        for (x, y) in num(b).into_iter().zip(num(a)) {
            match (x, y) {
                (Some(x), Some(y)) => close(x, y, 1e-9, &b.slo),
                (x, y) => assert_eq!(x, y, "{}", b.slo),
            }
        }
    }
}

/// SLO files reload with the runbooks: an invalid one refuses the reload
/// (with its file:line:col) and the SLOs in force stay; a valid change is
/// served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_takes_valid_slo_files_and_refuses_invalid_ones() {
    use crate::helpers::{operator_client, serve_command, Served};
    let dir = tempfile::tempdir().unwrap();
    let slos = dir.path().join("slos");
    std::fs::create_dir(&slos).unwrap();
    std::fs::write(slos.join("web.yaml"), WEB_SLOS).unwrap();
    let store = dir.path().join("data");
    let mut cmd = serve_command(
        Path::new(env!("CARGO_BIN_EXE_runbookd")),
        &root().join("runbooks"),
        &store,
    );
    cmd.arg("--slos").arg(&slos);
    let served = Served::start(cmd);
    let client = operator_client(&store);
    let names = || async {
        let v: serde_json::Value = client
            .get(format!("{}/api/v1/slos", served.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut n: Vec<String> = v["slos"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{}/{}",
                    s["service"].as_str().unwrap(),
                    s["slo"].as_str().unwrap()
                )
            })
            .collect();
        n.sort();
        (n, v)
    };
    let (n, v) = names().await;
    assert_eq!(n, ["web/availability", "web/latency"]);
    assert!(
        v["slos"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no `prometheus:`"),
        "{v}"
    );
    std::fs::write(
        slos.join("api.yaml"),
        "version: prometheus/v1\nservice: api\nslos:\n  - name: up\n    objective: 101\n    sli:\n      raw:\n        error_ratio_query: x{w=\"{{.window}}\"}\n",
    )
    .unwrap();
    let r = client
        .post(format!("{}/-/reload", served.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err = r.text().await.unwrap();
    assert!(
        err.contains("api.yaml:5:16: slo `api/up`: objective 101"),
        "{err}"
    );
    assert_eq!(names().await.0, ["web/availability", "web/latency"]);
    std::fs::write(
        slos.join("api.yaml"),
        "version: prometheus/v1\nservice: api\nslos:\n  - name: up\n    objective: 99\n    sli:\n      raw:\n        error_ratio_query: avg_over_time(x[{{.window}}])\n",
    )
    .unwrap();
    let r = client
        .post(format!("{}/-/reload", served.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        names().await.0,
        ["api/up", "web/availability", "web/latency"]
    );
}

/// Replicas on one PostgreSQL store: only the leader asks Prometheus; the
/// others show what it stored (here a replica whose own Prometheus URL
/// answers nothing still shows the numbers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replicas_read_of_prometheus_serves_all() {
    use crate::helpers::{operator_client, serve_command, Served};
    use serde_json::Value;
    use std::time::{Duration, Instant};
    if !crate::prom::available() || !crate::pg::available() {
        return;
    }
    let history = crate::prom::History::web(unix_now());
    let prometheus = crate::prom::start(&history).await;
    let pg = crate::pg::Pg::start();
    let store = pg.database();
    let dir = tempfile::tempdir().unwrap();
    let slos = dir.path().join("slos");
    std::fs::create_dir(&slos).unwrap();
    std::fs::write(slos.join("web.yaml"), WEB_SLOS).unwrap();
    let start = |i: usize, prom: &str| {
        let cfg = dir.path().join(format!("r{i}.yaml"));
        std::fs::write(
            &cfg,
            format!("prometheus: {{url: '{prom}', refresh: 5s, timeout: 2s}}\n"),
        )
        .unwrap();
        let data = dir.path().join(format!("r{i}"));
        let mut cmd = serve_command(
            Path::new(env!("CARGO_BIN_EXE_runbookd")),
            &root().join("runbooks"),
            &data,
        );
        cmd.arg("--slos")
            .arg(&slos)
            .args(["--store", &store, "--replica", &format!("replica-{i}")])
            .arg("--config")
            .arg(&cfg);
        (Served::start(cmd), operator_client(&data))
    };
    let slo_list = |served: &Served, client: &reqwest::Client| {
        let (url, client) = (served.url.clone(), client.clone());
        async move {
            client
                .get(format!("{url}/api/v1/slos"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let read = |v: &Value| -> Option<f64> {
        let a = find(&v["slos"], "availability");
        if a["error"].is_null() {
            a["remaining"].as_f64()
        } else {
            None
        }
    };
    let (leader, leader_client) = start(0, &prometheus.url);
    let deadline = Instant::now() + Duration::from_secs(30);
    let leaders = loop {
        if let Some(r) = read(&slo_list(&leader, &leader_client).await) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never read Prometheus"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A second replica whose own Prometheus answers nothing.
    let (follower, follower_client) = start(1, "http://127.0.0.1:9");
    let deadline = Instant::now() + Duration::from_secs(30);
    let followers = loop {
        let v = slo_list(&follower, &follower_client).await;
        if let Some(r) = read(&v) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never showed the leader's read: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    close(
        followers,
        leaders,
        0.01,
        "the follower shows the leader's numbers",
    );
    drop((leader, follower));
}
