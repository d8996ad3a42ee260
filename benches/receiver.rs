//! Receiver benchmark: `cargo bench --bench receiver`; figures in docs/benchmarks.md.
//!
//! Starts the real server (durable store on, default sandbox) on loopback with
//! a runbook whose single step is `/bin/true`, then:
//! 1. posts distinct notifications open-loop at fixed rates (200/s, then
//!    1,000/s, 5 s each) and reports acknowledgement latency p50/p99/max;
//!    goal: p99 ≤ 10 ms at 1,000/s;
//! 2. measures completed runs per second while draining the queue;
//! 3. reports a bare spawn + wait loop of `/bin/true` with 2 workers beside it.
//!
//! Both ways of generating load, in one run, each against a fresh server:
//! from a separate process (this binary run again as the load generator,
//! which is what the goal is about) and from inside the server's process
//! (the earlier figures).
//!
//! Loopback only; every loop is bounded in count and time.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // statistics over counts far below 2^52

use std::sync::atomic::AtomicU64;
use std::time::Duration;

mod common;

/// Set in the load generator's environment: the webhook URL and the rate.
const LOAD_URL: &str = "RUNBOOKD_BENCH_LOAD_URL";
const LOAD_RATE: &str = "RUNBOOKD_BENCH_LOAD_RATE";
const SECS: u64 = 5;

/// (sent, p50, p99, max in ms, failed) of one rate.
type Row = (usize, f64, f64, f64, u64);

async fn measure(url: &str, rate: u64) -> Row {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let next_id = AtomicU64::new(0);
    let (lat, failed) = common::load(
        &client,
        std::slice::from_ref(&url.to_owned()),
        rate,
        SECS,
        &next_id,
    )
    .await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        lat.len() + failed as usize,
        ms(common::percentile(&lat, 0.50)),
        ms(common::percentile(&lat, 0.99)),
        lat.last().map_or(0.0, |d| ms(*d)),
        failed,
    )
}

/// The same measurement from a process of its own (this binary again).
fn measure_elsewhere(url: &str, rate: u64) -> Row {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(LOAD_URL, url)
        .env(LOAD_RATE, rate.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let f: Vec<&str> = text.split_whitespace().collect();
    (
        f[0].parse().unwrap(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        f[4].parse().unwrap(),
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let (Ok(url), Ok(rate)) = (std::env::var(LOAD_URL), std::env::var(LOAD_RATE)) {
        let (sent, p50, p99, max, failed) = rt.block_on(measure(&url, rate.parse().unwrap()));
        println!("{sent} {p50} {p99} {max} {failed}");
        return;
    }
    rt.block_on(async {
        let runbooks = tempfile::tempdir().unwrap();
        std::fs::write(runbooks.path().join("bench.yaml"), "name: bench\nmatchers: [alertname = \"Bench\"]\nconcurrency: 64\nsteps:\n  - name: true\n    run: [/bin/true]\n").unwrap();
        let mut drained = Vec::new();
        println!("| load generator | rate (notifications/s) | sent | p50 ack | p99 ack | max ack | failed |");
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        for separate in [true, false] {
            let data = tempfile::tempdir().unwrap();
            let mut cfg = common::loopback_config(runbooks.path(), data.path());
            cfg.max_queued_runs = 100_000;
            cfg.max_concurrent_steps = 4;
            let server = runbookd::server::start(cfg).await.unwrap();
            let url = format!("http://{}/webhook", server.addr);
            let who = if separate { "separate process" } else { "same process" };
            for rate in [200u64, 1000] {
                let (sent, p50, p99, max, failed) = if separate {
                    let url = url.clone();
                    tokio::task::spawn_blocking(move || measure_elsewhere(&url, rate))
                        .await
                        .unwrap()
                } else {
                    measure(&url, rate).await
                };
                println!("| {who} | {rate} | {sent} | {p50:.2} ms | {p99:.2} ms | {max:.2} ms | {failed} |");
            }
            // Completed runs per second while the queue drains.
            let client = reqwest::Client::new();
            drained.push((who, common::drain(&client, &format!("http://{}", server.addr)).await));
            server.stop().await.unwrap();
        }
        let bare = tokio::task::spawn_blocking(|| common::bare_rate(2, 3)).await.unwrap();
        println!();
        println!("| measure | value |");
        println!("| --- | --- |");
        for (who, (queued0, runs_per_sec)) in drained {
            println!("| {who}: queue at the end of the load | {queued0} runs |");
            println!("| {who}: completed runs/s while draining (4 concurrent steps) | {runs_per_sec:.0} ({:.0}% of bare) |", runs_per_sec / bare * 100.0);
        }
        println!("| bare /bin/true spawn+wait, 2 workers | {bare:.0}/s |");
    });
}
