//! What the benchmarks share: a loopback server configuration, a distinct
//! notification per id, and the bare `/bin/true` spawn loop they compare to.
#![allow(dead_code)] // each benchmark uses the part it needs

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runbookd::config::{Overrides, ServerConfig};

/// The server's defaults, on `127.0.0.1:0`, with these runbooks and data.
pub fn loopback_config(runbooks: &Path, data: &Path) -> ServerConfig {
    let mut cfg = ServerConfig::load(
        None,
        Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            runbooks: Some(runbooks.to_owned()),
            data_dir: Some(data.to_owned()),
            ..Overrides::default()
        },
    )
    .unwrap();
    // The spawn helper is runbookd itself, not this benchmark binary.
    cfg.sandbox.spawner = runbookd::exec::SpawnerConfig::Helper {
        program: env!("CARGO_BIN_EXE_runbookd").into(),
    };
    // The webhook's credential (it posts alerts and reads): loopback is
    // no credential.
    cfg.auth.bearer = Some(TOKEN.into());
    cfg
}

/// The benchmarks' webhook credential.
pub const TOKEN: &str = "runbookd-bench-token";

/// A client that sends the webhook's credential with every request.
pub fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(256)
        .build()
        .unwrap()
}

/// A firing notification of one `Bench` alert, distinct per `id` (its own group).
pub fn notification(id: u64) -> Vec<u8> {
    format!(
        r#"{{"receiver":"bench","status":"firing","alerts":[{{"status":"firing","labels":{{"alertname":"Bench","id":"{id}"}},"annotations":{{}},"startsAt":"2026-11-24T08:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":""}}],"groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"","version":"4","groupKey":"bench-{id}","truncatedAlerts":0}}"#
    )
    .into_bytes()
}

/// `/bin/true` spawned and waited for in a loop by `workers` threads for
/// `secs`: executions per second, the physical limit.
#[allow(clippy::cast_precision_loss)] // counts far below 2^52
pub fn bare_rate(workers: usize, secs: u64) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let count = count.clone();
            std::thread::spawn(move || {
                while Instant::now() < end {
                    Command::new("/bin/true")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / secs as f64
}

#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // counts far below 2^52
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Posts distinct notifications open-loop at `rate` per second for `secs`,
/// round-robin over `urls`: acknowledgement latencies (sorted) and failures.
pub async fn load(
    client: &reqwest::Client,
    urls: &[String],
    rate: u64,
    secs: u64,
    next_id: &AtomicU64,
) -> (Vec<Duration>, u64) {
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        ticker.tick().await;
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        #[allow(clippy::cast_possible_truncation)] // a handful of URLs
        let (client, url) = (
            client.clone(),
            urls[(id % urls.len() as u64) as usize].clone(),
        );
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let answer = client
                .post(&url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(notification(id))
                .send()
                .await;
            let failure = match answer {
                Ok(r) if r.status() == 200 => None,
                Ok(r) => Some(format!(
                    "{}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )),
                Err(e) => Some(format!("{e:?}")),
            };
            (t.elapsed(), failure)
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    let mut failures = std::collections::BTreeMap::<String, u64>::new();
    for t in tasks {
        match t.await.unwrap() {
            (d, None) => lat.push(d),
            (_, Some(why)) => *failures.entry(why).or_default() += 1,
        }
    }
    // What went wrong is worth knowing: a failure is not a latency.
    for (why, n) in &failures {
        eprintln!("{n} notification(s) not acknowledged: {why}");
    }
    lat.sort();
    (lat, failures.values().sum())
}

/// Runs succeeded, queued and running, from a server's `/api/v1/stats`
/// (`base`: `http://ADDR`).
pub async fn run_counts(client: &reqwest::Client, base: &str) -> (i64, i64, i64) {
    let response = client
        .get(format!("{base}/api/v1/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    // An error's body has none of the counts: say so rather than read zeros.
    let status = response.status();
    let v: serde_json::Value = response.json().await.unwrap();
    assert!(status.is_success(), "/api/v1/stats answered {status}: {v}");
    let runs = &v["runs_by_state"];
    (
        runs["succeeded"].as_i64().unwrap_or(0),
        v["queued_runs"].as_i64().unwrap_or(0),
        runs["running"].as_i64().unwrap_or(0),
    )
}

/// Waits (at most 120 s) for the queue to drain: (queued runs at the
/// start, completed runs per second meanwhile).
pub async fn drain(client: &reqwest::Client, base: &str) -> (i64, f64) {
    let (done0, queued0, _) = run_counts(client, base).await;
    let t0 = Instant::now();
    let (mut done, mut queued) = (done0, queued0);
    while queued > 0 && t0.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        (done, queued, _) = run_counts(client, base).await;
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let rate = (done - done0) as f64 / t0.elapsed().as_secs_f64();
    (queued0, rate)
}

/// A client with the operator credential the server made in `data` (no
/// `auth.users`): every request but the health checks needs a credential,
/// the webhook's included.
pub fn operator_client(data: &Path) -> reqwest::Client {
    let token = std::fs::read_to_string(data.join("operator.token")).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", token.trim()).parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(256)
        .build()
        .unwrap()
}

/// The server's own `/metrics` (Prometheus' text format), with `client`'s
/// credential.
pub async fn metrics(client: &reqwest::Client, base: &str) -> String {
    let response = client.get(format!("{base}/metrics")).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    // A failed answer read as counters would read as zeros.
    assert!(
        status.is_success(),
        "{base}/metrics answered {status}: {text}"
    );
    text
}

/// (sum of seconds, count) of a route's request-duration histogram, from
/// the server's own `/metrics`.
pub async fn route_time(client: &reqwest::Client, base: &str, route: &str) -> (f64, f64) {
    let text = metrics(client, base).await;
    let get = |suffix: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "runbookd_http_request_duration_seconds_{suffix}{{route=\"{route}\"}} "
                ))
            })
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (get("sum"), get("count"))
}
