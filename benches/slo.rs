//! SLO status at scale: `cargo bench --bench slo`; figures in
//! docs/benchmarks.md. Needs Debian's `prometheus` (and its `promtool`).
//!
//! 500 SLOs (100 services × 5 objectives) over a 31-day history made with
//! `promtool tsdb create-blocks-from openmetrics`, served by a real
//! Prometheus on loopback. Measured side by side, in one run:
//! 1. a full refresh of the 500 statuses, and the queries it sends
//!    (Prometheus's own `prometheus_http_requests_total`), twice: once
//!    from the SLI queries (no rules loaded), once from the hourly
//!    recordings `runbookd slo rules` writes (written into the history as
//!    Prometheus would have recorded them); goal ≤ 5 s;
//! 2. the `/slos` page's server time with 500 SLOs (runbookd's own request
//!    histogram), goal ≤ 50 ms;
//! 3. webhook acknowledgement latency at 200/s for 5 s while the server
//!    refreshes continuously, beside the same server with no Prometheus:
//!    goal, p99 unchanged.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // statistics over counts far below 2^52

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

mod common;

const SERVICES: usize = 100;
const OBJECTIVES: [f64; 5] = [99.0, 99.5, 99.9, 99.95, 99.99];
const STEP: u64 = 300;

fn slo_files(dir: &std::path::Path) {
    for s in 0..SERVICES {
        let mut f = format!("version: prometheus/v1\nservice: svc-{s}\nslos:\n");
        for o in OBJECTIVES {
            let _ = write!(
                f,
                "  - name: avail-{}\n    objective: {o}\n    sli:\n      events:\n        error_query: sum(rate(requests_total{{svc=\"{s}\",code=\"500\"}}[{{{{.window}}}}]))\n        total_query: sum(rate(requests_total{{svc=\"{s}\"}}[{{{{.window}}}}]))\n",
                o.to_string().replace('.', "-")
            );
        }
        std::fs::write(dir.join(format!("svc-{s}.yaml")), f).unwrap();
    }
}

/// 31 days of two counters per service at 5-minute steps (busy days,
/// quiet nights, 0.1% errors), and, with `recordings`, the hourly
/// recordings of every SLO as the rules would have made them.
fn history(end: u64, recordings: bool) -> String {
    let start = (end - 31 * 86_400) / STEP * STEP;
    let times: Vec<u64> = (start..=end).step_by(STEP as usize).collect();
    let mut out = String::from("# TYPE requests counter\n");
    let mut counts: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    for s in 0..SERVICES {
        let (mut ok, mut bad) = (0u64, 0u64);
        let (mut oks, mut bads) = (Vec::new(), Vec::new());
        for t in &times {
            let day = (8..20).contains(&((t % 86_400) / 3_600));
            let n = if day { 6_000 } else { 600 } + s as u64;
            bad += n / 1_000;
            ok += n - n / 1_000;
            oks.push((ok + bad) as f64);
            bads.push(bad as f64);
        }
        for (code, list) in [("200", &oks), ("500", &bads)] {
            for (i, t) in times.iter().enumerate() {
                let v = if code == "200" {
                    list[i] - bads[i]
                } else {
                    list[i]
                };
                let _ = writeln!(out, "requests_total{{svc=\"{s}\",code=\"{code}\"}} {v} {t}");
            }
        }
        counts.push((oks, bads));
    }
    if recordings {
        // The alert windows' error ratios over the last hour.
        for (w, steps) in [
            ("5m", 1usize),
            ("30m", 6),
            ("1h", 12),
            ("2h", 24),
            ("6h", 72),
            ("1d", 288),
            ("3d", 864),
        ] {
            let name = format!("slo:sli_error:ratio_rate{w}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (s, (all, bad)) in counts.iter().enumerate() {
                for o in OBJECTIVES {
                    let slo = format!("avail-{}", o.to_string().replace('.', "-"));
                    let labels = format!(
                        "sloth_id=\"svc-{s}-{slo}\",sloth_service=\"svc-{s}\",sloth_slo=\"{slo}\",sloth_window=\"{w}\""
                    );
                    for i in times.len() - 13..times.len() {
                        let v = (bad[i] - bad[i - steps]) / (all[i] - all[i - steps]);
                        let _ = writeln!(out, "{name}{{{labels}}} {v} {}", times[i]);
                    }
                }
            }
        }
        for (name, which) in [
            ("slo:sli_error:events_rate1h", 1),
            ("slo:sli_total:events_rate1h", 0),
        ] {
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (s, (all, bad)) in counts.iter().enumerate() {
                let series = if which == 0 { all } else { bad };
                for o in OBJECTIVES {
                    let slo = format!("avail-{}", o.to_string().replace('.', "-"));
                    let labels = format!(
                        "sloth_id=\"svc-{s}-{slo}\",sloth_service=\"svc-{s}\",sloth_slo=\"{slo}\",sloth_window=\"1h\""
                    );
                    for (i, t) in times.iter().enumerate().skip(12) {
                        let rate = (series[i] - series[i - 12]) / 3_600.0;
                        let _ = writeln!(out, "{name}{{{labels}}} {rate} {t}");
                    }
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

struct Prom {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prom {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn prometheus(om: &str) -> Prom {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("h.om");
    std::fs::write(&file, om).unwrap();
    let tsdb = dir.path().join("tsdb");
    let t = Instant::now();
    let out = Command::new("promtool")
        .args([
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "-q",
            "--max-block-duration=744h",
        ])
        .arg(&file)
        .arg(&tsdb)
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("  history imported in {:.1} s", t.elapsed().as_secs_f64());
    let cfg = dir.path().join("p.yml");
    std::fs::write(&cfg, "global: {scrape_interval: 1h}\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg("--storage.tsdb.retention.time=90d")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus");
    let p = Prom {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while c
        .get(format!("{}/-/ready", p.url))
        .send()
        .await
        .map(|r| r.status().is_success())
        .ok()
        != Some(true)
    {
        assert!(Instant::now() < deadline, "prometheus did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p
}

/// Prometheus's count of answered queries.
async fn queries_answered(url: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("prometheus_http_requests_total{")
                && l.contains("handler=\"/api/v1/query\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn client_for(url: &str) -> runbookd::prometheus::Prometheus {
    runbookd::prometheus::Prometheus::new(
        url.parse().unwrap(),
        &std::collections::BTreeMap::new(),
        None,
        Duration::from_secs(30),
    )
    .unwrap()
}

async fn ack_p99(client: &reqwest::Client, base: &str) -> (f64, f64, u64) {
    let next = AtomicU64::new(0);
    let (lat, failed) = common::load(client, &[format!("{base}/webhook")], 200, 5, &next).await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(common::percentile(&lat, 0.5)),
        ms(common::percentile(&lat, 0.99)),
        failed,
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let slos = tempfile::tempdir().unwrap();
        slo_files(slos.path());
        let set = runbookd::slo::load_dir(slos.path()).unwrap();
        assert_eq!(set.len(), SERVICES * OBJECTIVES.len());
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / STEP
            * STEP;
        println!("## 1. A full refresh of {} SLOs", set.len());
        println!("| status read from | how | refresh | queries sent | per SLO |");
        println!("| --- | --- | --- | --- | --- |");
        for recordings in [false, true] {
            let prom = prometheus(&history(end, recordings)).await;
            let client = client_for(&prom.url);
            // One warm-up refresh (Prometheus loads its blocks' chunks).
            let _ = runbookd::slo::refresh::read_all(&client, &set, chrono::Utc::now()).await;
            for batched in [false, true] {
                let q0 = queries_answered(&prom.url).await;
                let t = Instant::now();
                let now = chrono::Utc::now();
                let statuses = if batched {
                    runbookd::slo::refresh::read_all(&client, &set, now).await
                } else {
                    runbookd::slo::refresh::read_each(
                        &client,
                        &set,
                        now,
                        runbookd::slo::refresh::PARALLEL,
                    )
                    .await
                };
                let took = t.elapsed();
                let q = queries_answered(&prom.url).await - q0;
                let failed = statuses.iter().filter(|s| s.error.is_some()).count();
                assert_eq!(
                    failed,
                    0,
                    "{:?}",
                    statuses.iter().find_map(|s| s.error.clone())
                );
                let source = format!("{:?}", statuses[0].source);
                assert!(statuses.iter().all(|s| format!("{:?}", s.source) == source));
                println!(
                    "| {} | {} | {:.2} s | {q:.0} | {:.2} |",
                    if recordings {
                        "hourly recordings"
                    } else {
                        "SLI queries (no rules loaded)"
                    },
                    if batched {
                        "the server's (batched where recorded)"
                    } else {
                        "each SLO alone, 2 at a time"
                    },
                    took.as_secs_f64(),
                    q / set.len() as f64
                );
            }
            if recordings {
                page_and_acks(&prom, slos.path()).await;
            }
        }
    });
}

/// Parts 2 and 3 on one warm server: the `/slos` page, then webhook
/// acknowledgements with the refresh idle (no SLO files) and busy (500
/// SLOs, refreshed every second), alternated twice.
async fn page_and_acks(prom: &Prom, all_slos: &std::path::Path) {
    let runbooks = tempfile::tempdir().unwrap();
    std::fs::write(runbooks.path().join("b.yaml"), "name: bench\nmatchers: [alertname = \"Bench\"]\nconcurrency: 64\nsteps:\n  - name: a\n    run: ['true']\n").unwrap();
    let slos = tempfile::tempdir().unwrap();
    let fill = |on: bool| {
        for e in std::fs::read_dir(all_slos).unwrap() {
            let e = e.unwrap();
            let to = slos.path().join(e.file_name());
            if on {
                std::fs::copy(e.path(), to).unwrap();
            } else {
                let _ = std::fs::remove_file(to);
            }
        }
    };
    fill(true);
    let data = tempfile::tempdir().unwrap();
    let mut cfg = common::loopback_config(runbooks.path(), data.path());
    cfg.max_queued_runs = 1_000_000;
    cfg.shadow = true;
    cfg.slos = Some(slos.path().to_owned());
    cfg.prometheus = Some(client_for(&prom.url));
    cfg.slo_refresh = Duration::from_secs(1);
    let server = runbookd::server::start(cfg).await.unwrap();
    let base = format!("http://{}", server.addr);
    let http = common::operator_client(data.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: serde_json::Value = http
            .get(format!("{base}/api/v1/slos"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !v["refreshed_at"].is_null() {
            println!(
                "\n## 2. The `/slos` page with 500 SLOs\nfirst refresh by the server: {} ms",
                v["refresh_took_ms"]
            );
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = common::route_time(&http, &base, "/slos").await;
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let r = http.get(format!("{base}/slos")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    let after = common::route_time(&http, &base, "/slos").await;
    println!(
        "| page | client median | server mean |\n| --- | --- | --- |\n| `/slos` | {:.2} ms | {:.2} ms |",
        times[25].as_secs_f64() * 1e3,
        (after.0 - before.0) / (after.1 - before.1) * 1e3
    );
    println!("\n## 3. Webhook acknowledgement at 200/s for 5 s, the same server");
    println!("| round | SLO refresh | p50 | p99 | failed |");
    println!("| --- | --- | --- | --- | --- |");
    let _ = ack_p99(&http, &base).await; // warm-up
    let mut p99 = [Vec::new(), Vec::new()];
    let mut pinned = [Vec::new(), Vec::new()];
    // Rounds 1-2: everything shares both cores. Rounds 3-4: Prometheus on
    // core 1, this process (runbookd and the load) on core 0, as with a
    // Prometheus on its own host: what runbookd's own refresh work costs
    // its webhook.
    for round in 1..=4 {
        if round == 3 {
            let pin = |cpu: &str, pid: u32| {
                let ok = Command::new("taskset")
                    .args(["-a", "-p", "-c", cpu, &pid.to_string()])
                    .stdout(Stdio::null())
                    .status()
                    .expect("taskset (util-linux)")
                    .success();
                assert!(ok, "taskset");
            };
            pin("1", prom.child.id());
            pin("0", std::process::id());
            println!("| | *Prometheus on core 1, runbookd and the load on core 0* | | | |");
        }
        for busy in [false, true] {
            fill(busy);
            let r = http.post(format!("{base}/-/reload")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (p50, p, failed) = ack_p99(&http, &base).await;
            if round <= 2 {
                p99[usize::from(busy)].push(p);
            } else {
                pinned[usize::from(busy)].push(p);
            }
            println!(
                "| {round} | {} | {p50:.2} ms | {p:.2} ms | {failed} |",
                if busy {
                    "500 SLOs, every second"
                } else {
                    "idle (no SLOs)"
                }
            );
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "p99 ratio (refreshing ÷ idle, mean of rounds), sharing both cores: {:.2}; Prometheus on its own core: {:.2}",
        mean(&p99[1]) / mean(&p99[0]),
        mean(&pinned[1]) / mean(&pinned[0])
    );
    server.stop().await.unwrap();
}
