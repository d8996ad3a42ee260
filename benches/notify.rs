//! Notifications benchmark: `cargo bench --bench notify`; figures in
//! docs/benchmarks.md.
//!
//! Two real servers, one after the other in one run, on loopback, each with
//! a runbook whose single step is `/bin/true`: *quiet* tells nobody;
//! *talkative* tells a webhook notifier (a loopback sink in this process)
//! about `incident_opened`, `run_started` and `run_succeeded` and arms an
//! escalation timer, so each notification writes 3 outbox rows and a timer
//! in the transactions of its events. For each: acknowledgement latency at
//! 200 notifications/s for 5 s (each runs its step); for *talkative* also
//! deliveries/s and the delay from acknowledgement to the sink's receipt of
//! `incident_opened`. Ratios talkative/quiet at the end.
//!
//! Loopback only; every loop is bounded in count and time.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // statistics over counts far below 2^52

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

const QUIET: &str = "name: bench\nmatchers: [alertname = \"Bench\"]\nconcurrency: 64\nsteps:\n  - name: true\n    run: [/bin/true]\n";
const TALKATIVE: &str = "name: bench\nmatchers: [alertname = \"Bench\"]\nconcurrency: 64\nsteps:\n  - name: true\n    run: [/bin/true]\ncommunication:\n  - on: [incident_opened, run_started, run_succeeded]\n    notify: [sink]\nescalation:\n  - after: 1h\n    notify: [sink]\n";

/// When the sink received each incident's `incident_opened`, and how many
/// deliveries it got.
#[derive(Default)]
struct Sink {
    opened: HashMap<String, Instant>,
    total: u64,
}

async fn start_sink() -> (String, Arc<Mutex<Sink>>) {
    let sink: Arc<Mutex<Sink>> = Arc::default();
    let s = sink.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let s = s.clone();
        async move {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let mut g = s.lock().unwrap();
            g.total += 1;
            if v["event"] == "incident_opened" {
                if let Some(group) = v["incident"]["id"].as_str() {
                    g.opened.insert(group.to_owned(), Instant::now());
                }
            }
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, sink)
}

struct Figures {
    p50: Duration,
    p99: Duration,
    deliveries_per_sec: Option<f64>,
    delivery_p50: Option<Duration>,
    delivery_p99: Option<Duration>,
}

async fn measure(runbook: &str, sink: Option<(&str, Arc<Mutex<Sink>>)>) -> Figures {
    let runbooks = tempfile::tempdir().unwrap();
    std::fs::write(runbooks.path().join("bench.yaml"), runbook).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut cfg = common::loopback_config(runbooks.path(), data.path());
    cfg.max_queued_runs = 100_000;
    cfg.max_concurrent_steps = 4;
    if let Some((url, _)) = &sink {
        let file: runbookd::notify::config::NotifierFile =
            serde_yaml::from_str(&format!("{{type: webhook, url: '{url}'}}")).unwrap();
        let mut n = runbookd::notify::config::Notifiers::new();
        n.insert("sink".into(), file.check("sink").unwrap());
        cfg.notifiers = Arc::new(n);
    }
    let server = runbookd::server::start(cfg).await.unwrap();
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let next_id = AtomicU64::new(0);
    // Acknowledgement times by incident: each notification opens its own.
    let t0 = Instant::now();
    let (lat, failed) = common::load(
        &client,
        std::slice::from_ref(&format!("{base}/webhook")),
        200,
        5,
        &next_id,
    )
    .await;
    assert_eq!(failed, 0, "every notification is acknowledged");
    common::drain(&client, &base).await;
    let mut figures = Figures {
        p50: common::percentile(&lat, 0.50),
        p99: common::percentile(&lat, 0.99),
        deliveries_per_sec: None,
        delivery_p50: None,
        delivery_p99: None,
    };
    if let Some((_, sink)) = sink {
        let sent = next_id.load(std::sync::atomic::Ordering::Relaxed);
        let want = sent * 3;
        let deadline = Instant::now() + Duration::from_secs(120);
        while sink.lock().unwrap().total < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let elapsed = t0.elapsed();
        let (total, opened) = {
            let g = sink.lock().unwrap();
            (g.total, g.opened.clone())
        };
        figures.deliveries_per_sec = Some(total as f64 / elapsed.as_secs_f64());
        // The delay from the webhook's acknowledgement to the sink's receipt
        // of its incident_opened, per incident, from the incident's record.
        let mut delays = Vec::new();
        for (incident, at) in &opened {
            let v: serde_json::Value = client
                .get(format!("{base}/api/v1/incidents/{incident}"))
                .bearer_auth(common::TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let created = chrono::DateTime::parse_from_rfc3339(v["created_at"].as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono::Utc);
            let since = (chrono::Utc::now() - created).to_std().unwrap_or_default();
            delays.push(since.saturating_sub(at.elapsed()));
            if delays.len() >= 200 {
                break;
            }
        }
        delays.sort();
        figures.delivery_p50 = Some(common::percentile(&delays, 0.5));
        figures.delivery_p99 = Some(common::percentile(&delays, 0.99));
    }
    server.stop().await.unwrap();
    figures
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let quiet = measure(QUIET, None).await;
        let (url, sink) = start_sink().await;
        let talk = measure(TALKATIVE, Some((&url, sink))).await;
        println!("| runbook | p50 ack | p99 ack | deliveries/s | opened → delivered p50 | p99 |");
        println!("| --- | --- | --- | --- | --- | --- |");
        for (name, f) in [
            ("quiet", &quiet),
            ("talkative (3 notifications + 1 timer per incident)", &talk),
        ] {
            println!(
                "| {name} | {} | {} | {} | {} | {} |",
                ms(f.p50),
                ms(f.p99),
                f.deliveries_per_sec
                    .map_or("–".into(), |d| format!("{d:.0}")),
                f.delivery_p50.map_or("–".into(), ms),
                f.delivery_p99.map_or("–".into(), ms),
            );
        }
        println!();
        println!(
            "talkative/quiet: p50 ack {:.2}×, p99 ack {:.2}×",
            talk.p50.as_secs_f64() / quiet.p50.as_secs_f64(),
            talk.p99.as_secs_f64() / quiet.p99.as_secs_f64(),
        );
    });
}
