//! A real Prometheus on loopback over a deterministic history: 31 days of
//! counters written as OpenMetrics, turned into TSDB blocks by `promtool
//! tsdb create-blocks-from openmetrics`, served by Debian's `prometheus`.
//! The history's own sums are the truth runbookd's numbers are held to.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::exec::require;

pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Stops it (a Prometheus that went away).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(name: &str) -> Option<PathBuf> {
    [format!("/usr/bin/{name}"), format!("/usr/local/bin/{name}")]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Both `prometheus` and `promtool`, or `None` after `require`.
pub fn available() -> bool {
    require(
        binary("prometheus").is_some() && binary("promtool").is_some(),
        "prometheus and promtool (apt-get install prometheus)",
    )
}

const STEP: u64 = 300;

/// The web service's history: every 5 minutes for 31 days up to `end`,
/// requests (`code="200"` and `code="500"`) and their latency histogram.
/// Traffic varies (busy days 08:00–20:00 UTC, quiet nights); errors are
/// 0.02% by day, 0.2% by night, 5% during an incident from 50 to 48 hours
/// before `end`, and 2% over the last two hours. The last three hours are
/// sampled every minute (5-minute windows need two samples).
pub struct History {
    pub end: u64,
    /// `(time, requests, errors)` per 5-minute step, oldest first: the
    /// counters grow by these at `time`.
    pub steps: Vec<(u64, u64, u64)>,
}

impl History {
    #[must_use]
    pub fn web(end: u64) -> History {
        // Whole minutes; 5-minute samples on multiples of 5 minutes, so
        // that every hour starts and ends on a sample.
        let end = end / 60 * 60;
        let start = (end - 31 * 86_400) / STEP * STEP;
        let fine = end - 3 * 3_600;
        let mut steps = Vec::new();
        let mut last = start;
        let times = (start / STEP + 1..)
            .map(|k| k * STEP)
            .take_while(|t| *t <= fine)
            .chain((fine / 60 + 1..=end / 60).map(|k| k * 60));
        for t in times {
            let minutes = (t - last) / 60;
            last = t;
            let hour = (t % 86_400) / 3_600;
            let day = (8..20).contains(&hour);
            let requests: u64 = if day { 1_200 } else { 200 } * minutes;
            let per_100k: u64 = if t > end - 2 * 3_600 {
                2_000
            } else if t > end - 50 * 3_600 && t <= end - 48 * 3_600 {
                5_000
            } else if day {
                20
            } else {
                200
            };
            steps.push((t, requests, requests * per_100k / 100_000));
        }
        History { end, steps }
    }

    /// Requests and errors in `(from, to]`.
    #[must_use]
    pub fn between(&self, from: u64, to: u64) -> (u64, u64) {
        self.steps
            .iter()
            .filter(|(t, ..)| *t > from && *t <= to)
            .fold((0, 0), |(r, e), (_, dr, de)| (r + dr, e + de))
    }

    /// The history as OpenMetrics.
    #[must_use]
    pub fn openmetrics(&self) -> String {
        let start = self.steps[0].0 - STEP;
        debug_assert_eq!(start % STEP, 0);
        let mut out = String::from("# TYPE http_requests counter\n");
        for code in ["200", "500"] {
            let mut c = 0u64;
            let _ = writeln!(
                out,
                "http_requests_total{{job=\"web\",code=\"{code}\"}} 0 {start}"
            );
            for (t, r, e) in &self.steps {
                c += if code == "200" { r - e } else { *e };
                let _ = writeln!(
                    out,
                    "http_requests_total{{job=\"web\",code=\"{code}\"}} {c} {t}"
                );
            }
        }
        // 95% within 100ms, 3% within 500ms, 2% within 1s.
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        let buckets = [("0.1", 95u64), ("0.5", 98), ("1", 100), ("+Inf", 100)];
        for (le, share) in buckets {
            let mut c = 0u64;
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{job=\"web\",le=\"{le}\"}} 0 {start}"
            );
            for (t, r, _) in &self.steps {
                c += r * share / 100;
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{job=\"web\",le=\"{le}\"}} {c} {t}"
                );
            }
        }
        for (name, per) in [("count", 1u64), ("sum", 0)] {
            let mut c = 0u64;
            let _ = writeln!(
                out,
                "http_request_duration_seconds_{name}{{job=\"web\"}} 0 {start}"
            );
            for (t, r, _) in &self.steps {
                c += if per == 1 { *r } else { r / 20 };
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_{name}{{job=\"web\"}} {c} {t}"
                );
            }
        }
        out.push_str("# EOF\n");
        out
    }

    /// The history, plus the hourly recordings `runbookd slo rules` makes
    /// for the availability SLO of service `web` (errors and events per
    /// second over the last hour, every 5 minutes), as a Prometheus with
    /// those rules loaded for 31 days would hold them.
    #[must_use]
    pub fn openmetrics_with_recordings(&self, slo: &str) -> String {
        let mut out = self.openmetrics();
        out.truncate(out.len() - "# EOF\n".len());
        let start = self.steps[0].0 - STEP;
        let mut cumulative = std::collections::BTreeMap::from([(start, (0u64, 0u64))]);
        let (mut r, mut e) = (0, 0);
        for (t, dr, de) in &self.steps {
            r += dr;
            e += de;
            cumulative.insert(*t, (r, e));
        }
        let labels = format!(
            "sloth_id=\"web-{slo}\",sloth_service=\"web\",sloth_slo=\"{slo}\",sloth_window=\"1h\""
        );
        for (name, errors) in [
            ("slo:sli_error:events_rate1h", true),
            ("slo:sli_total:events_rate1h", false),
        ] {
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (t, (r, e)) in &cumulative {
                let Some((r0, e0)) = cumulative.get(&(t.saturating_sub(3_600))) else {
                    continue;
                };
                if t % STEP != 0 {
                    continue;
                }
                #[allow(clippy::cast_precision_loss)]
                let v = if errors {
                    (e - e0) as f64
                } else {
                    (r - r0) as f64
                } / 3_600.0;
                let _ = writeln!(out, "{name}{{{labels}}} {v} {t}");
            }
        }
        // The alert windows' error ratios, over the last hour (what an
        // instant query reads).
        for w in [300u64, 1_800, 3_600, 7_200, 21_600, 86_400, 259_200] {
            let name = match w {
                300 => "5m",
                1_800 => "30m",
                3_600 => "1h",
                7_200 => "2h",
                21_600 => "6h",
                86_400 => "1d",
                _ => "3d",
            };
            let labels = format!(
                "sloth_id=\"web-{slo}\",sloth_service=\"web\",sloth_slo=\"{slo}\",sloth_window=\"{name}\""
            );
            let _ = writeln!(out, "# TYPE slo:sli_error:ratio_rate{name} gauge");
            for t in (self.end - 3_600..=self.end).step_by(60) {
                let at = |x: u64| cumulative.range(..=x).next_back().map(|(_, c)| *c);
                let (Some((r, e)), Some((r0, e0))) = (at(t), at(t.saturating_sub(w))) else {
                    continue;
                };
                if r > r0 {
                    #[allow(clippy::cast_precision_loss)]
                    let v = (e - e0) as f64 / (r - r0) as f64;
                    let _ = writeln!(out, "slo:sli_error:ratio_rate{name}{{{labels}}} {v} {t}");
                }
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

impl Prometheus {
    /// runbookd's client of it, answering within `timeout`.
    #[must_use]
    pub fn client(&self, timeout: Duration) -> runbookd::prometheus::Prometheus {
        runbookd::prometheus::Prometheus::new(
            self.url.parse().unwrap(),
            &std::collections::BTreeMap::new(),
            None,
            timeout,
        )
        .unwrap()
    }
}

/// A Prometheus serving `history` (no scraping, no rules).
pub async fn start(history: &History) -> Prometheus {
    serve(&history.openmetrics()).await
}

/// A Prometheus holding [`History::web`] up to now.
pub async fn start_web() -> (History, Prometheus) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let history = History::web(now);
    let prometheus = start(&history).await;
    (history, prometheus)
}

/// A Prometheus serving these OpenMetrics samples.
pub async fn serve(openmetrics: &str) -> Prometheus {
    serve_scraping(openmetrics, None).await
}

/// A Prometheus serving these OpenMetrics samples, and scraping `target`
/// (`host:port`, its `/metrics`) every second when given.
pub async fn serve_scraping(openmetrics: &str, target: Option<&str>) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let om = dir.path().join("history.om");
    std::fs::write(&om, openmetrics).unwrap();
    let tsdb = dir.path().join("tsdb");
    let out = Command::new(binary("promtool").unwrap())
        .args([
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "-q",
            "--max-block-duration=744h",
        ])
        .arg(&om)
        .arg(&tsdb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = dir.path().join("prometheus.yml");
    let config = match target {
        None => "global: {scrape_interval: 1h}\n".to_owned(),
        Some(t) => format!(
            "global: {{scrape_interval: 1h}}\nscrape_configs:\n  - job_name: exporter\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs: [{{targets: ['{t}']}}]\n"
        ),
    };
    std::fs::write(&cfg, config).unwrap();
    let port = crate::alertmanager::free_port();
    let child = Command::new(binary("prometheus").unwrap())
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg("--storage.tsdb.retention.time=90d")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("prometheus starts");
    let p = Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{}/-/ready", p.url))
        .send()
        .await
        .map(|r| r.status().is_success())
        .ok()
        != Some(true)
    {
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p
}
