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
//! loop, 4 s each), then completed runs per second while the queue drains.
//! Loopback only; bounded in count (2,800 notifications per setup) and time.
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

struct Figures {
    setup: String,
    acks: Vec<(u64, Duration, Duration, u64)>,
    runs_per_sec: f64,
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
    let (_, runs_per_sec) = common::drain(&client, &format!("http://{}", servers[0].addr)).await;
    for s in servers {
        s.stop().await.unwrap();
    }
    Figures {
        setup: setup.to_owned(),
        acks,
        runs_per_sec,
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
        let pg = pg::Pg::start_durable();
        let mut all = vec![
            measure("SQLite, 1 replica", &StoreUrl::Sqlite(sqlite_dir.path().join("bench.db")), 1).await,
        ];
        all.push(measure("PostgreSQL, 1 replica", &StoreUrl::Postgres(pg.database()), 1).await);
        all.push(measure("PostgreSQL, 3 replicas", &StoreUrl::Postgres(pg.database()), 3).await);
        let base = all[0].runs_per_sec;
        println!("| store | rate (notifications/s) | p50 ack | p99 ack | failed | completed runs/s while draining | vs SQLite |");
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        for f in &all {
            for (i, (rate, p50, p99, failed)) in f.acks.iter().enumerate() {
                let (runs, ratio) = if i == 0 {
                    (format!("{:.0}", f.runs_per_sec), format!("{:.2}×", f.runs_per_sec / base))
                } else {
                    (String::new(), String::new())
                };
                println!(
                    "| {} | {rate} | {:.2} ms | {:.2} ms | {failed} | {runs} | {ratio} |",
                    f.setup,
                    p50.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3
                );
            }
        }
    });
}
