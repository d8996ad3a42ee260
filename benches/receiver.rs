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
//! Loopback only; every loop is bounded in count and time.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // statistics over counts far below 2^52

use std::sync::atomic::AtomicU64;

mod common;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let runbooks = tempfile::tempdir().unwrap();
        std::fs::write(runbooks.path().join("bench.yaml"), "name: bench\nmatchers: [alertname = \"Bench\"]\nconcurrency: 64\nsteps:\n  - name: true\n    run: [/bin/true]\n").unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut cfg = common::loopback_config(runbooks.path(), data.path());
        cfg.max_queued_runs = 100_000;
        cfg.max_concurrent_steps = 4;
        let server = runbookd::server::start(cfg).await.unwrap();
        let url = format!("http://{}/webhook", server.addr);
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
        let next_id = AtomicU64::new(0);
        println!("| rate (notifications/s) | sent | p50 ack | p99 ack | max ack | failed |");
        println!("| --- | --- | --- | --- | --- | --- |");
        for rate in [200u64, 1000] {
            let (lat, failed) = common::load(&client, std::slice::from_ref(&url), rate, 5, &next_id).await;
            println!(
                "| {rate} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {failed} |",
                lat.len() + failed as usize,
                common::percentile(&lat, 0.50).as_secs_f64() * 1e3,
                common::percentile(&lat, 0.99).as_secs_f64() * 1e3,
                lat.last().unwrap().as_secs_f64() * 1e3
            );
        }
        // Completed runs per second while the queue drains.
        let (queued0, runs_per_sec) = common::drain(&client, &format!("http://{}", server.addr)).await;
        server.stop().await.unwrap();
        let bare = tokio::task::spawn_blocking(|| common::bare_rate(2, 3)).await.unwrap();
        println!();
        println!("| measure | value |");
        println!("| --- | --- |");
        println!("| queue at the end of the load | {queued0} runs |");
        println!("| completed runs/s while draining (4 concurrent steps) | {runs_per_sec:.0} |");
        println!("| bare /bin/true spawn+wait, 2 workers | {bare:.0}/s |");
        println!("| runbookd / bare | {:.0}% |", runs_per_sec / bare * 100.0);
    });
}
