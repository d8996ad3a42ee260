//! Stores side by side: `cargo bench --bench replicas`; figures in
//! docs/benchmarks.md.
//!
//! The same load generator, in one run, against three setups of the real
//! server (durable store, default sandbox, a runbook whose single step is
//! `/bin/true`, 4 concurrent steps per replica):
//! - SQLite, one replica;
//! - PostgreSQL (a throwaway local cluster, `fsync` on), one replica;
//! - PostgreSQL, three replicas, notifications spread round-robin.
//!
//! For each: acknowledgement p50/p99 at 200 and 500 notifications/s (open
//! loop, 4 s each), then a burst of 2,000 notifications in one second:
//! completed runs per second while its backlog drains, and from its first
//! notification to the empty queue. Loopback only;
//! bounded in count (4,800 notifications per setup) and time.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // statistics over counts far below 2^52

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use runbookd::store::StoreUrl;

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/pg.rs"]
mod pg;

const RATES: [u64; 2] = [200, 500];
/// Notifications of the capacity burst, sent within one second.
const BURST: u64 = 2_000;

struct Figures {
    setup: String,
    acks: Vec<(u64, Duration, Duration, u64)>,
    /// Completed runs per second while the burst's backlog drained.
    runs_per_sec: f64,
    /// Completed runs per second from the burst's first notification to
    /// the empty queue (ingest included).
    burst_per_sec: f64,
    /// Runs still queued when the burst was in.
    backlog: i64,
}

async fn measure(setup: &str, store: &StoreUrl, replicas: usize) -> Figures {
    let runbooks = tempfile::tempdir().unwrap();
    std::fs::write(
        runbooks.path().join("bench.yaml"),
        "name: bench\nmatchers: [alertname = \"Bench\"]\nconcurrency: 64\nsteps:\n  - name: true\n    run: [/bin/true]\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    for i in 0..replicas {
        let mut cfg = common::loopback_config(runbooks.path(), &data.path().join(format!("r{i}")));
        cfg.store = Some(store.clone());
        cfg.replica = format!("bench-{i}");
        cfg.max_queued_runs = 100_000;
        cfg.max_concurrent_steps = 4;
        servers.push(runbookd::server::start(cfg).await.unwrap());
    }
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("http://{}/webhook", s.addr))
        .collect();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let next_id = AtomicU64::new(0);
    let mut acks = Vec::new();
    for rate in RATES {
        let (lat, failed) = common::load(&client, &urls, rate, 4, &next_id).await;
        acks.push((
            rate,
            common::percentile(&lat, 0.50),
            common::percentile(&lat, 0.99),
            failed,
        ));
    }
    let base = format!("http://{}", servers[0].addr);
    // Capacity: a burst far above what the replicas execute (2,000
    // notifications in 1 s) after the queue emptied, timed from its first
    // notification until the queue is empty again. (Timing only the drain
    // after the paced load measures nothing when a store keeps up with it.)
    common::drain(&client, &base).await;
    let (done0, _, _) = common::run_counts(&client, &base).await;
    let t0 = std::time::Instant::now();
    common::load(&client, &urls, BURST, 1, &next_id).await;
    let (backlog, runs_per_sec) = common::drain(&client, &base).await;
    let (done, _, _) = common::run_counts(&client, &base).await;
    let burst_per_sec = (done - done0) as f64 / t0.elapsed().as_secs_f64();
    for s in servers {
        s.stop().await.unwrap();
    }
    Figures {
        setup: setup.to_owned(),
        acks,
        runs_per_sec,
        burst_per_sec,
        backlog,
    }
}

fn main() {
    if !pg::available() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sqlite_dir = tempfile::tempdir().unwrap();
        // A hand-named SQLite store needs a directory of its own (0700).
        let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700);
        std::fs::set_permissions(sqlite_dir.path(), private).unwrap();
        let pg = pg::Pg::start_durable();
        let mut all = vec![
            measure("SQLite, 1 replica", &StoreUrl::Sqlite(sqlite_dir.path().join("bench.db")), 1).await,
        ];
        all.push(measure("PostgreSQL, 1 replica", &StoreUrl::Postgres(pg.database()), 1).await);
        all.push(measure("PostgreSQL, 3 replicas", &StoreUrl::Postgres(pg.database()), 3).await);
        let base = all[0].runs_per_sec;
        println!("| store | rate (notifications/s) | p50 ack | p99 ack | failed | queued after the burst | completed runs/s while draining | vs SQLite | runs/s from the burst's start |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for f in &all {
            for (i, (rate, p50, p99, failed)) in f.acks.iter().enumerate() {
                let (backlog, runs, ratio, burst) = if i == 0 {
                    (
                        f.backlog.to_string(),
                        format!("{:.0}", f.runs_per_sec),
                        format!("{:.2}×", f.runs_per_sec / base),
                        format!("{:.0}", f.burst_per_sec),
                    )
                } else {
                    (String::new(), String::new(), String::new(), String::new())
                };
                println!(
                    "| {} | {rate} | {:.2} ms | {:.2} ms | {failed} | {backlog} | {runs} | {ratio} | {burst} |",
                    f.setup,
                    p50.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3
                );
            }
        }
    });
}
