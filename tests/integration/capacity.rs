//! Capacity forecasts against a real Prometheus over backfilled histories
//! with known shapes (linear growth, noise, a step change, a sawtooth, a
//! shrinking disk): the projected dates hold to the truth within stated
//! tolerances, the sawtooth is flagged instead of forecast; the same
//! numbers through `runbookd capacity`, the server's API and its page; the
//! generated `predict_linear` alert passes promtool's unit tests.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{root, runbookd, stderr, stdout};

const DAY: f64 = 86_400.0;
const GB: f64 = 1e9;

/// The shipped runbook that answers the forecasts' alert.
const RUNBOOK: &str = include_str!("../../runbooks/capacity-filling-up.yaml");

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/capacity").join(name)
}

/// The disks' used bytes on day `d` of the history (0 = its start).
#[allow(clippy::cast_precision_loss)]
fn used(mountpoint: &str, d: f64, k: u64) -> f64 {
    match mountpoint {
        // 2 GB a day from 200 GB.
        "/linear" => 200.0 * GB + 2.0 * GB * d,
        // 3 GB a day from 100 GB, ±4 GB of (deterministic) noise.
        "/noisy" => {
            let r = (k
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407)
                >> 33) as f64
                / f64::from(u32::MAX >> 1);
            100.0 * GB + 3.0 * GB * d + (r - 0.5) * 8.0 * GB
        }
        // 1 GB a day, and a restore of 60 GB on day 10.
        "/step" => 50.0 * GB + GB * d + if d >= 10.0 { 60.0 * GB } else { 0.0 },
        // Filled by 20 GB a day, cleaned every second day.
        "/saw" => 10.0 * GB + 20.0 * GB * (d % 2.0),
        // Shrinking.
        _ => 80.0 * GB - 0.1 * GB * d,
    }
}

const DISKS: [(&str, f64); 5] = [
    ("/linear", 300.0 * GB),
    ("/noisy", 200.0 * GB),
    ("/step", 150.0 * GB),
    ("/saw", 100.0 * GB),
    ("/shrinking", 100.0 * GB),
];

/// 15 days of 5-minute samples up to `end` (unix seconds), and the queue's.
#[allow(clippy::cast_precision_loss)]
fn history(end: u64) -> String {
    let end = end / 300 * 300;
    let start = end - 15 * 86_400;
    let mut out = String::from("# TYPE disk_used_bytes gauge\n");
    for (m, _) in DISKS {
        for (k, t) in (start..=end).step_by(300).enumerate() {
            let d = (t - start) as f64 / DAY;
            let _ = writeln!(
                out,
                "disk_used_bytes{{mountpoint=\"{m}\"}} {} {t}",
                used(m, d, k as u64)
            );
        }
    }
    out.push_str("# TYPE disk_size_bytes gauge\n");
    for (m, size) in DISKS {
        for t in (start..=end).step_by(300) {
            let _ = writeln!(out, "disk_size_bytes{{mountpoint=\"{m}\"}} {size} {t}");
        }
    }
    out.push_str("# EOF\n");
    out
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The projection of one mountpoint.
fn of<'a>(list: &'a Value, mountpoint: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["labels"]["mountpoint"] == mountpoint)
        .unwrap_or_else(|| panic!("no {mountpoint} in {list}"))
}

fn full_at(p: &Value) -> f64 {
    let s = p["full_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no date: {p}"));
    #[allow(clippy::cast_precision_loss)]
    let t = chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp() as f64;
    t
}

/// The history's own truth, checked in the projections: each date within
/// its tolerance of when the noiseless line reaches the capacity.
#[allow(clippy::cast_precision_loss)]
fn holds_to_the_truth(list: &Value, end: u64) {
    let start = (end / 300 * 300 - 15 * 86_400) as f64;
    let truth = |u0: f64, per_day: f64, cap: f64| start + (cap - u0) / per_day * DAY;
    // Linear: within 2 hours (the samples lag the range query's steps by
    // up to 5 minutes), growth exact, a perfect fit.
    let p = of(list, "/linear");
    assert_eq!(p["verdict"], "filling", "{p}");
    let t = truth(200.0 * GB, 2.0 * GB, 300.0 * GB);
    assert!((full_at(p) - t).abs() < 2.0 * 3_600.0, "{p}: truth {t}");
    assert!(
        (p["growth_per_day"].as_f64().unwrap() / GB - 2.0).abs() < 0.01,
        "{p}"
    );
    assert!(p["r2"].as_f64().unwrap() > 0.999, "{p}");
    assert_eq!(p["confidence"], "high");
    // Noise: within a day and a half; the band holds the truth.
    let p = of(list, "/noisy");
    assert_eq!(p["verdict"], "filling_soon", "{p}");
    let t = truth(100.0 * GB, 3.0 * GB, 200.0 * GB);
    assert!((full_at(p) - t).abs() < 1.5 * DAY, "{p}: truth {t}");
    let band = |k: &str| {
        #[allow(clippy::cast_precision_loss)]
        let v = chrono::DateTime::parse_from_rfc3339(p[k].as_str().unwrap())
            .unwrap()
            .timestamp() as f64;
        v
    };
    assert!(
        band("earliest") <= t && t <= band("latest"),
        "{p}: truth {t}"
    );
    assert!(p["r2"].as_f64().unwrap() > 0.9, "{p}");
    // A step: fitted after it, so the growth is the 1 GB a day since and
    // the date within half a day (a fit over the whole lookback would say
    // ~5 GB a day and a date 20 days early).
    let p = of(list, "/step");
    let t = truth(110.0 * GB, GB, 150.0 * GB);
    assert!((full_at(p) - t).abs() < 0.5 * DAY, "{p}: truth {t}");
    assert!(p["note"].as_str().unwrap().contains("a step up on"), "{p}");
    // The sawtooth: flagged, no date.
    let p = of(list, "/saw");
    assert_eq!(p["verdict"], "irregular", "{p}");
    assert!(p["full_at"].is_null(), "{p}");
    assert!(
        p["note"].as_str().unwrap().contains("fill-and-clean"),
        "{p}"
    );
    // Shrinking: never full.
    let p = of(list, "/shrinking");
    assert_eq!(p["verdict"], "not_filling", "{p}");
    assert!(p["growth_per_day"].as_f64().unwrap() < 0.0, "{p}");
    // Soonest full first.
    let order: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["labels"]["mountpoint"].as_str().unwrap())
        .collect();
    assert_eq!(order[..3], ["/noisy", "/step", "/linear"], "{order:?}");
}

fn forecasts_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("disks.yaml"),
        "forecasts:\n  - name: disk\n    service: db\n    usage: disk_used_bytes\n    capacity: disk_size_bytes\n    lookback: 14d\n    horizon: 90d\n    warn_within: 30d\n",
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecasts_from_a_real_prometheus_hold_to_the_history_s_truth() {
    use crate::app::TestApp;
    if !crate::prom::available() {
        return;
    }
    let end = unix_now();
    let prometheus = crate::prom::serve(&history(end)).await;
    let dir = forecasts_dir();
    // The CLI, straight from Prometheus.
    let o = runbookd(&[
        "capacity",
        "--slos",
        dir.path().to_str().unwrap(),
        "--prometheus",
        &prometheus.url,
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cli: Value = serde_json::from_str(&stdout(&o)).unwrap();
    holds_to_the_truth(&cli, end);
    let o = runbookd(&[
        "capacity",
        "--slos",
        dir.path().to_str().unwrap(),
        "--prometheus",
        &prometheus.url,
    ]);
    let text = stdout(&o);
    let line = text.lines().find(|l| l.contains("/saw")).unwrap();
    assert!(line.contains("irregular"), "{text}");
    // The server: the same figures, in the API and on the page.
    let client = prometheus.client(Duration::from_secs(5));
    let slos = dir.path().to_owned();
    let mut app = TestApp::start(&[("capacity.yaml", RUNBOOK)], move |c| {
        c.slos = Some(slos);
        c.prometheus = Some(client);
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let list: Value = loop {
        let (code, v) = app.get("/api/v1/forecasts").await;
        assert_eq!(code, 200, "{v}");
        if !v["refreshed_at"].is_null() {
            break v;
        }
        assert!(Instant::now() < deadline, "never read: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    holds_to_the_truth(&list["forecasts"], end);
    assert!(list["forecasts"][0].get("history").is_none(), "{list}");
    let (code, one) = app.get("/api/v1/forecasts/db/disk").await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["definition"]["usage"], "disk_used_bytes");
    assert!(
        one["series"][0]["history"].as_array().unwrap().len() > 100,
        "{one}"
    );
    let (code, body) = app.get("/api/v1/forecasts/db/nope").await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = app.get("/api/v1/forecasts?colour=red").await;
    assert_eq!(code, 400, "{body}");
    let page = app.page("/capacity").await;
    let noisy = page.find("/noisy").unwrap();
    let linear = page.find("/linear").unwrap();
    assert!(noisy < linear, "soonest full first");
    assert!(page.contains("fill-and-clean"), "the sawtooth is flagged");
    assert!(
        page.matches("<svg class=\"chart\"").count() == 5,
        "one chart per series"
    );
    app.stop().await;
    drop(prometheus);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_that_goes_away_keeps_the_last_forecast_with_the_error() {
    use crate::app::TestApp;
    if !crate::prom::available() {
        return;
    }
    let end = unix_now();
    let mut prometheus = crate::prom::serve(&history(end)).await;
    let dir = forecasts_dir();
    let client = prometheus.client(Duration::from_secs(2));
    let slos = dir.path().to_owned();
    let mut app = TestApp::start(&[("capacity.yaml", RUNBOOK)], move |c| {
        c.slos = Some(slos);
        c.prometheus = Some(client);
    })
    .await;
    let read = |after: Option<String>| {
        let app = &app;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (_, v) = app.get("/api/v1/forecasts").await;
                if !v["refreshed_at"].is_null()
                    && v["refreshed_at"].as_str().map(str::to_owned) != after
                {
                    return v;
                }
                assert!(Instant::now() < deadline, "never read: {v}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let first = read(None).await;
    assert!(first["forecasts"][0]["error"].is_null(), "{first}");
    prometheus.kill();
    // A reload reads again at once.
    let r = app
        .client
        .post(format!("{}/-/reload", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let second = read(first["refreshed_at"].as_str().map(str::to_owned)).await;
    let p = of(&second["forecasts"], "/linear");
    assert!(
        p["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach Prometheus"),
        "{p}"
    );
    assert_eq!(p["verdict"], "filling", "the last figures stay: {p}");
    assert!(p["full_at"].is_string(), "{p}");
    app.stop().await;
}

#[test]
fn the_forecast_alert_fires_for_a_fast_fill_and_not_a_slow_one() {
    let Some(promtool) = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            crate::exec::require(false, "promtool (apt-get install prometheus)");
            None
        })
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    let o = runbookd(&[
        "slo",
        "rules",
        "--slos",
        fixture("forecasts.yaml").to_str().unwrap(),
        "--out",
        rules.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let test = dir.path().join("forecasts.test.yaml");
    std::fs::copy(fixture("forecasts.test.yaml"), &test).unwrap();
    for args in [
        vec!["check", "rules", rules.to_str().unwrap()],
        vec!["test", "rules", test.to_str().unwrap()],
    ] {
        let o = std::process::Command::new(&promtool)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn a_bad_forecast_is_refused_by_check_with_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cap.yaml");
    std::fs::write(
        &file,
        "forecasts:\n  - name: disk\n    service: db\n    usage: disk_used_bytes[5m]\n    capacity: disk_size_bytes\n    lookback: 2 weeks\n",
    )
    .unwrap();
    let o = runbookd(&["check", "--slos", file.to_str().unwrap(), "runbooks"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    let f = file.display();
    assert!(
        err.contains(&format!(
            "{f}:4:12: forecast `db/disk`: `usage`: the query gives a matrix"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:6:15: forecast `db/disk`: `lookback`: not a valid duration `2 weeks`"
        )),
        "{err}"
    );
    let o = runbookd(&[
        "capacity",
        "--slos",
        file.to_str().unwrap(),
        "--prometheus",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}
