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
//!
//! With `RUNBOOKD_BENCH_STATEMENTS=1`, PostgreSQL loads
//! `pg_stat_statements` and each PostgreSQL setup also prints the
//! statements PostgreSQL executed during the burst and its drain, per
//! completed run (docs/benchmarks.md).
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
    /// CPU per completed run while draining, in ms.
    cpu: Cpu,
}

/// CPU time (seconds) of: PostgreSQL's processes, this process (the
/// server, its store client and the load generator), and the rest of the
/// machine's busy time (the steps, their sandboxes and spawn helpers).
#[derive(Clone, Copy, Default)]
struct Cpu {
    postgres: f64,
    this: f64,
    rest: f64,
}

impl Cpu {
    fn now() -> Cpu {
        // utime and stime: fields 14 and 15 of /proc/PID/stat, counted
        // after the command's closing parenthesis (in ticks of 10 ms).
        let fields = |stat: &str| -> Option<(String, [f64; 2])> {
            let (head, tail) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            let f: Vec<&str> = tail.split_whitespace().collect();
            let tick =
                |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
            Some((comm, [tick(11), tick(12)]))
        };
        let mut cpu = Cpu::default();
        if let Some((_, t)) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(fields)
        {
            cpu.this = t[0] + t[1];
        }
        // The machine's busy time: /proc/stat's first line (in ticks)
        // less idle and iowait.
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let idle = ticks.get(3).unwrap_or(&0.0) + ticks.get(4).unwrap_or(&0.0);
        let busy = ticks.iter().sum::<f64>() - idle;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            if let Some((comm, t)) = fields(&stat) {
                if comm == "postgres" {
                    cpu.postgres += t[0] + t[1];
                }
            }
        }
        cpu.rest = busy / 100.0 - cpu.postgres - cpu.this;
        cpu
    }

    /// Milliseconds per run since `before`.
    fn per_run(self, before: Cpu, runs: i64) -> Cpu {
        let ms = |a: f64, b: f64| (a - b) * 1e3 / runs.max(1) as f64;
        Cpu {
            postgres: ms(self.postgres, before.postgres),
            this: ms(self.this, before.this),
            rest: ms(self.rest, before.rest),
        }
    }
}

/// The statements `url`'s database executed since the last reset, most
/// frequent first, per completed run: (calls per run, ms per run, text).
fn statements(pg: &pg::Pg, url: &str, runs: i64) -> Vec<(f64, f64, String)> {
    let out = pg.psql(
        url,
        "SELECT calls, total_exec_time, regexp_replace(left(query, 110), '\\s+', ' ', 'g') FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC LIMIT 40",
    );
    out.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '|');
            let calls: f64 = f.next()?.parse().ok()?;
            let ms: f64 = f.next()?.parse().ok()?;
            Some((calls / runs as f64, ms / runs as f64, f.next()?.to_owned()))
        })
        .collect()
}

async fn measure(
    setup: &str,
    store: &StoreUrl,
    replicas: usize,
    counting: Option<&pg::Pg>,
) -> Figures {
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
    let counted = match (counting, store) {
        (Some(pg), StoreUrl::Postgres(url)) => {
            pg.psql(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
            pg.psql(url, "SELECT pg_stat_statements_reset()");
            Some((pg, url))
        }
        _ => None,
    };
    let t0 = std::time::Instant::now();
    common::load(&client, &urls, BURST, 1, &next_id).await;
    let (done1, _, _) = common::run_counts(&client, &base).await;
    let cpu0 = Cpu::now();
    let (backlog, runs_per_sec) = common::drain(&client, &base).await;
    let cpu1 = Cpu::now();
    let (done, _, _) = common::run_counts(&client, &base).await;
    let cpu = cpu1.per_run(cpu0, done - done1);
    if let Some((pg, url)) = counted {
        let all = statements(pg, url, done - done0);
        println!(
            "{setup}: statements per completed run during the burst and its drain ({} runs)",
            done - done0
        );
        println!("| calls per run | ms per run | statement |\n| --- | --- | --- |");
        for (calls, ms, text) in &all {
            println!("| {calls:.2} | {ms:.3} | `{text}` |");
        }
        let (calls, ms) = all.iter().fold((0.0, 0.0), |(c, m), s| (c + s.0, m + s.1));
        println!("| {calls:.2} | {ms:.3} | all of the above |\n");
    }
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
        cpu,
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
        let counting = std::env::var_os("RUNBOOKD_BENCH_STATEMENTS").is_some();
        let pg = if counting {
            pg::Pg::start_durable_counting()
        } else {
            pg::Pg::start_durable()
        };
        let counting = counting.then_some(&pg);
        let mut all = vec![
            measure("SQLite, 1 replica", &StoreUrl::Sqlite(sqlite_dir.path().join("bench.db")), 1, None).await,
        ];
        all.push(measure("PostgreSQL, 1 replica", &StoreUrl::Postgres(pg.database()), 1, counting).await);
        all.push(measure("PostgreSQL, 3 replicas", &StoreUrl::Postgres(pg.database()), 3, counting).await);
        let base = all[0].runs_per_sec;
        println!("| store | rate (notifications/s) | p50 ack | p99 ack | failed | queued after the burst | completed runs/s while draining | vs SQLite | runs/s from the burst's start | CPU ms per run while draining: PostgreSQL / server / rest |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for f in &all {
            for (i, (rate, p50, p99, failed)) in f.acks.iter().enumerate() {
                let (backlog, runs, ratio, burst, cpu) = if i == 0 {
                    (
                        f.backlog.to_string(),
                        format!("{:.0}", f.runs_per_sec),
                        format!("{:.2}×", f.runs_per_sec / base),
                        format!("{:.0}", f.burst_per_sec),
                        format!("{:.2} / {:.2} / {:.2}", f.cpu.postgres, f.cpu.this, f.cpu.rest),
                    )
                } else {
                    Default::default()
                };
                println!(
                    "| {} | {rate} | {:.2} ms | {:.2} ms | {failed} | {backlog} | {runs} | {ratio} | {burst} | {cpu} |",
                    f.setup,
                    p50.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3
                );
            }
        }
    });
}
