//! Stores side by side: `cargo bench --bench replicas`; figures in
//! docs/benchmarks.md.
//!
//! The same load generator, in one run, against three setups of the real
//! server (durable store, default sandbox, a runbook whose single step is
//! `/bin/true`, 4 concurrent steps per replica), all up for the whole run:
//! - SQLite, one replica;
//! - PostgreSQL (a throwaway local cluster, `fsync` on), one replica;
//! - PostgreSQL, three replicas, notifications spread round-robin.
//!
//! For each: acknowledgement p50/p99 at 200 and 500 notifications/s (open
//! loop, 4 s each). Then six rounds of bursts, each round every setup in
//! turn, in each of the six orders of the three setups: 2,000 notifications in one second, completed runs per second
//! while its backlog drains, and from its first notification to the empty
//! queue. The table gives each figure's median over the rounds, and "vs
//! SQLite" the median of the rounds' ratios. Loopback only; bounded in
//! count (14,800 notifications per setup) and time.
//!
//! With `RUNBOOKD_BENCH_STATEMENTS=1`, PostgreSQL loads
//! `pg_stat_statements` and each PostgreSQL setup also prints the
//! statements PostgreSQL executed during its first burst and its drain,
//! per completed run (docs/benchmarks.md).
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
/// The rounds of bursts, each timing every setup once, in one of the six
/// orders of the three setups: each setup is timed twice in each place,
/// and right after each other setup twice.
const ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [1, 2, 0],
    [2, 0, 1],
    [0, 2, 1],
    [2, 1, 0],
    [1, 0, 2],
];
/// Steps each replica runs at once.
const SLOTS: u32 = 4;

/// A setup's servers, up for the whole run.
struct Setup {
    name: String,
    servers: Vec<runbookd::server::Running>,
    urls: Vec<String>,
    base: String,
    /// Its PostgreSQL, when it counts statements.
    counting: Option<(&'static pg::Pg, String)>,
    _dirs: [tempfile::TempDir; 2],
}

/// One burst and its drain.
struct Burst {
    /// Completed runs per second while the burst's backlog drained.
    runs_per_sec: f64,
    /// Completed runs per second from the burst's first notification to
    /// the empty queue (ingest included).
    from_start_per_sec: f64,
    /// Runs still queued when the burst was in.
    backlog: i64,
    /// Notifications of the burst not acknowledged with a 200.
    failed: u64,
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
        // NaN when nothing was timed (see `median`).
        let ms = |a: f64, b: f64| {
            if runs > 0 {
                (a - b) * 1e3 / runs as f64
            } else {
                f64::NAN
            }
        };
        Cpu {
            postgres: ms(self.postgres, before.postgres),
            this: ms(self.this, before.this),
            rest: ms(self.rest, before.rest),
        }
    }
}

/// The statements `url`'s database executed since the last reset, most
/// frequent first, per completed run: (calls, ms executing, plans, ms
/// planning, text).
fn statements(pg: &pg::Pg, url: &str, runs: i64) -> Vec<(f64, f64, f64, f64, String)> {
    let out = pg.psql(
        url,
        "SELECT calls, total_exec_time, plans, total_plan_time, regexp_replace(left(query, 110), '\\s+', ' ', 'g') FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC LIMIT 40",
    );
    out.lines()
        .filter_map(|l| {
            let mut f = l.splitn(5, '|');
            let mut per_run = || Some(f.next()?.parse::<f64>().ok()? / runs as f64);
            let (calls, ms, plans, plan_ms) = (per_run()?, per_run()?, per_run()?, per_run()?);
            Some((calls, ms, plans, plan_ms, f.next()?.to_owned()))
        })
        .collect()
}

async fn start(
    name: &str,
    store: &StoreUrl,
    replicas: usize,
    counting: Option<&'static pg::Pg>,
) -> Setup {
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
        cfg.max_concurrent_steps = SLOTS;
        servers.push(runbookd::server::start(cfg).await.unwrap());
    }
    let urls = servers
        .iter()
        .map(|s| format!("http://{}/webhook", s.addr))
        .collect();
    let base = format!("http://{}", servers[0].addr);
    let counting = match (counting, store) {
        (Some(pg), StoreUrl::Postgres(url)) => Some((pg, url.clone())),
        _ => None,
    };
    Setup {
        name: name.to_owned(),
        servers,
        urls,
        base,
        counting,
        _dirs: [runbooks, data],
    }
}

/// Acknowledgement p50/p99 at each of [`RATES`] (open loop, 4 s each).
async fn acks(
    s: &Setup,
    client: &reqwest::Client,
    next_id: &AtomicU64,
) -> Vec<(u64, Duration, Duration, u64)> {
    let mut acks = Vec::new();
    for rate in RATES {
        let (lat, failed) = common::load(client, &s.urls, rate, 4, next_id).await;
        acks.push((
            rate,
            common::percentile(&lat, 0.50),
            common::percentile(&lat, 0.99),
            failed,
        ));
    }
    common::drain(client, &s.base).await;
    acks
}

/// A burst far above what the replicas execute ([`BURST`] notifications
/// in 1 s) once the queue is empty: its drain while runs wait (see
/// [`busy_rate`]), and its runs from its first notification until the
/// queue is empty again. With `count`, PostgreSQL's statements meanwhile
/// are printed.
async fn burst(s: &Setup, client: &reqwest::Client, next_id: &AtomicU64, count: bool) -> Burst {
    let (done0, _, _) = common::run_counts(client, &s.base).await;
    let finished0 = finished(client, s).await;
    let counted = s.counting.as_ref().filter(|_| count);
    if let Some((pg, url)) = counted {
        pg.psql(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
        pg.psql(url, "SELECT pg_stat_statements_reset()");
    }
    let t0 = std::time::Instant::now();
    let (acked, failed) = common::load(client, &s.urls, BURST, 1, next_id).await;
    let (_, backlog, _) = common::run_counts(client, &s.base).await;
    // Each notification of the burst acknowledged queued one run.
    let total = finished0 + i64::try_from(acked.len()).unwrap();
    let cpu0 = Cpu::now();
    let (runs_per_sec, cpu1) = busy_rate(client, s, total).await;
    let cpu = cpu1.per_run(cpu0, runs_per_sec.1);
    common::drain(client, &s.base).await;
    let (done, _, _) = common::run_counts(client, &s.base).await;
    let burst_per_sec = (done - done0) as f64 / t0.elapsed().as_secs_f64();
    if let Some((pg, url)) = counted {
        let all = statements(pg, url, done - done0);
        println!(
            "{}: statements per completed run during the burst and its drain ({} runs)",
            s.name,
            done - done0
        );
        println!("| calls per run | ms executing per run | plans per run | ms planning per run | statement |\n| --- | --- | --- | --- | --- |");
        for (calls, ms, plans, plan_ms, text) in &all {
            println!("| {calls:.2} | {ms:.3} | {plans:.2} | {plan_ms:.3} | `{text}` |");
        }
        let sum = |f: fn(&(f64, f64, f64, f64, String)) -> f64| all.iter().map(f).sum::<f64>();
        println!(
            "| {:.2} | {:.3} | {:.2} | {:.3} | all of the above |\n",
            sum(|s| s.0),
            sum(|s| s.1),
            sum(|s| s.2),
            sum(|s| s.3)
        );
    }
    Burst {
        runs_per_sec: runs_per_sec.0,
        from_start_per_sec: burst_per_sec,
        backlog,
        failed,
        cpu,
    }
}

/// Runs the setup's replicas finished, by their own counters
/// (`runbookd_runs_total`, succeeded), read from `/metrics` without a
/// query of the store.
async fn finished(client: &reqwest::Client, s: &Setup) -> i64 {
    let mut n = 0.0;
    for server in &s.servers {
        n += common::metrics(client, &format!("http://{}", server.addr))
            .await
            .lines()
            .filter(|l| {
                l.starts_with("runbookd_runs_total{") && l.contains("outcome=\"succeeded\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    n as i64
}

/// Completed runs per second while runs were queued: from now until the
/// last poll (every 50 ms, at most 120 s) before fewer than two runs per
/// slot were left to finish of `total`, so that every moment
/// timed had runs waiting. The runs are counted by the replicas' own
/// counters, so that timing adds no query to the store it times. Returns
/// (the rate, the runs finished in that window) and the CPU at its end.
async fn busy_rate(client: &reqwest::Client, s: &Setup, total: i64) -> ((f64, i64), Cpu) {
    let slots = i64::from(SLOTS) * i64::try_from(s.servers.len()).unwrap();
    let done0 = finished(client, s).await;
    let t0 = std::time::Instant::now();
    let mut last = (done0, t0, Cpu::now());
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let done = finished(client, s).await;
        if done >= total - 2 * slots || t0.elapsed() > Duration::from_secs(120) {
            break;
        }
        last = (done, std::time::Instant::now(), Cpu::now());
    }
    let (done, at, cpu) = last;
    let secs = at.duration_since(t0).as_secs_f64();
    // No poll had runs waiting (the backlog was gone by the first one), or
    // none finished: nothing was timed, and the round is left out of the
    // medians.
    let rate = if secs > 0.0 && done > done0 {
        (done - done0) as f64 / secs
    } else {
        f64::NAN
    };
    ((rate, done - done0), cpu)
}

/// The median of the finite figures (a round that timed nothing is NaN,
/// and so is a ratio to it).
fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
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
        let pg: &'static pg::Pg = Box::leak(Box::new(if counting {
            pg::Pg::start_durable_counting()
        } else {
            pg::Pg::start_durable()
        }));
        let counting = counting.then_some(pg);
        // Every setup is up for the whole run, idle while another is timed.
        let setups = [
            start("SQLite, 1 replica", &StoreUrl::Sqlite(sqlite_dir.path().join("bench.db")), 1, None).await,
            start("PostgreSQL, 1 replica", &StoreUrl::Postgres(pg.database()), 1, counting).await,
            start("PostgreSQL, 3 replicas", &StoreUrl::Postgres(pg.database()), 3, counting).await,
        ];
        let client = common::client();
        let next_id = AtomicU64::new(0);
        let mut acked = Vec::new();
        for s in &setups {
            eprintln!("{}: acknowledgements", s.name);
            acked.push(acks(s, &client, &next_id).await);
        }
        // The bursts in rounds, each round every setup in turn, so that a
        // slower or faster spell of the machine falls on all of them; each
        // round in another order (`ORDERS`), so that no setup is always
        // first, or always after the same one.
        let mut rounds: Vec<Vec<Burst>> = Vec::new();
        for (round, order) in ORDERS.iter().enumerate() {
            let mut this: Vec<Option<Burst>> = setups.iter().map(|_| None).collect();
            for &i in order {
                let s = &setups[i];
                eprintln!("{}: burst {}", s.name, round + 1);
                this[i] = Some(burst(s, &client, &next_id, round == 0).await);
            }
            rounds.push(this.into_iter().map(Option::unwrap).collect());
        }
        for s in setups {
            for server in s.servers {
                server.stop().await.unwrap();
            }
        }
        println!("| store | rate (notifications/s) | p50 ack | p99 ack | failed | queued after the burst | completed runs/s while draining | vs SQLite | runs/s from the burst's start | CPU ms per run while draining: PostgreSQL / server / rest |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        let names = ["SQLite, 1 replica", "PostgreSQL, 1 replica", "PostgreSQL, 3 replicas"];
        for (i, name) in names.iter().enumerate() {
            let of = |f: fn(&Burst) -> f64| median(rounds.iter().map(|r| f(&r[i])).collect());
            let ratio = median(rounds.iter().map(|r| r[i].runs_per_sec / r[0].runs_per_sec).collect());
            for (j, (rate, p50, p99, failed)) in acked[i].iter().enumerate() {
                let (backlog, runs, vs, from_start, cpu) = if j == 0 {
                    (
                        format!("{:.0}", of(|b| b.backlog as f64)),
                        format!("{:.0}", of(|b| b.runs_per_sec)),
                        format!("{ratio:.2}×"),
                        format!("{:.0}", of(|b| b.from_start_per_sec)),
                        format!(
                            "{:.2} / {:.2} / {:.2}",
                            of(|b| b.cpu.postgres),
                            of(|b| b.cpu.this),
                            of(|b| b.cpu.rest)
                        ),
                    )
                } else {
                    Default::default()
                };
                println!(
                    "| {name} | {rate} | {:.2} ms | {:.2} ms | {failed} | {backlog} | {runs} | {vs} | {from_start} | {cpu} |",
                    p50.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3
                );
            }
        }
        round_table(
            "completed runs/s while draining (vs SQLite in the same round)",
            &names,
            &rounds,
            |r, i| {
                let failed = match r[i].failed {
                    0 => String::new(),
                    n => format!(", {n} of the burst not acknowledged"),
                };
                if r[i].runs_per_sec.is_finite() {
                    let vs = r[i].runs_per_sec / r[0].runs_per_sec;
                    let vs = if vs.is_finite() { format!("{vs:.2}×") } else { "–".to_owned() };
                    format!("{:.0} ({vs}{failed})", r[i].runs_per_sec)
                } else {
                    format!(
                        "– ({} queued after the burst, no runs timed while some waited{failed})",
                        r[i].backlog
                    )
                }
            },
        );
        round_table(
            "CPU ms per completed run while draining, PostgreSQL / server / rest",
            &names,
            &rounds,
            |r, i| {
                let c = r[i].cpu;
                if c.postgres.is_finite() {
                    format!("{:.2} / {:.2} / {:.2}", c.postgres, c.this, c.rest)
                } else {
                    "–".to_owned()
                }
            },
        );
    });
}

/// A table of every setup's figure in every round: `cell(round, setup)`.
fn round_table(
    what: &str,
    names: &[&str],
    rounds: &[Vec<Burst>],
    cell: impl Fn(&[Burst], usize) -> String,
) {
    println!("\nRound by round: {what}\n");
    println!(
        "| store | {} |",
        (1..=rounds.len())
            .map(|r| format!("round {r}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("| --- |{}", " --- |".repeat(rounds.len()));
    for (i, name) in names.iter().enumerate() {
        let cells: Vec<String> = rounds.iter().map(|r| cell(r, i)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
}
