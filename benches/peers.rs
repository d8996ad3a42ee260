//! runbookd beside its peers, one machine, one run, one load generator:
//! `cargo bench --bench peers`; figures in docs/benchmarks.md.
//!
//! - runbookd (the release binary, its own process, durable store) serving a
//!   runbook whose single step is `/bin/true`: executions/s = runs completed
//!   (load plus drain) ÷ elapsed time; acknowledgement latency p50/p99;
//! - adnanh/webhook (Debian `webhook`) with a hook that executes `/bin/true`
//!   and waits for it (`include-command-output-in-response`);
//! - a bare spawn + wait loop of `/bin/true`, 1 and 2 workers: the limit.
//!
//! At 1, 8 and 64 concurrent connections, 4 s each. Then runbookd's idle RSS,
//! RSS with 1,000 queued runs and startup time with 1,000 runbooks.
//! Loopback only; every loop is bounded in count and time.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // statistics

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

const SECS: u64 = 4;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn runbookd(runbooks: &Path, data: &Path, config: Option<&Path>) -> (Proc, String, Duration) {
    let t = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbookd"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--runbooks",
        runbooks.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd
        .env("RUNBOOKD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("runbookd listening on ")
        .expect("listening line")
        .to_owned();
    (Proc(child), url, t.elapsed())
}

/// The child processes of `pid` (runbookd's spawn helper).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(s) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kib / 1024.0
}

/// Closed-loop load: `conns` workers posting back to back for `SECS`.
async fn load(
    url: &str,
    conns: usize,
    make: impl Fn(u64) -> Vec<u8> + Send + Sync + 'static,
) -> (u64, Vec<Duration>) {
    let make = Arc::new(make);
    let next = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .build()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(SECS);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, url, make, next) =
            (client.clone(), url.to_owned(), make.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                let b = make(next.fetch_add(1, Ordering::Relaxed));
                let t = Instant::now();
                if client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(b)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    (all.len() as u64, all)
}

/// (runs succeeded, runs queued or running).
async fn succeeded(client: &reqwest::Client, url: &str) -> (i64, i64) {
    let (done, queued, running) = common::run_counts(client, url).await;
    (done, queued + running)
}

fn pct(l: &[Duration], p: f64) -> f64 {
    l.get(((l.len() as f64 - 1.0) * p) as usize)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let rbdir = dir.path().join("runbooks");
        std::fs::create_dir(&rbdir).unwrap();
        std::fs::write(rbdir.join("bench.yaml"), "name: bench\nmatchers: [alertname = \"Bench\"]\nconcurrency: 64\nsteps:\n  - name: true\n    run: [/bin/true]\n").unwrap();
        std::fs::write(dir.path().join("config.yaml"), "limits: {max_concurrent_steps: 8, max_queued_runs: 1000000}\n").unwrap();
        std::fs::write(dir.path().join("hooks.json"), r#"[{"id": "true", "execute-command": "/bin/true", "include-command-output-in-response": true}]"#).unwrap();
        let client = reqwest::Client::new();
        let webhook_bin = ["/usr/bin/webhook"].into_iter().find(|p| Path::new(p).exists());

        std::fs::write(dir.path().join("config-inline.yaml"), "limits: {max_concurrent_steps: 8, max_queued_runs: 1000000}\nsandbox: {spawner: inline}\n").unwrap();
        println!("| connections | inline spawner executions/s | spawn helper executions/s | helper ack p50 / p99 | webhook executions/s | helper / inline | helper / webhook |");
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        let mut best_runbookd: f64 = 0.0;
        for conns in [1usize, 8, 64] {
            let mut rates = Vec::new();
            let mut lat = Vec::new();
            for (label, config) in [("inline", "config-inline.yaml"), ("helper", "config.yaml")] {
                let data = dir.path().join(format!("data-{conns}-{label}"));
                let (_server, url, _) = runbookd(&rbdir, &data, Some(&dir.path().join(config)));
                let (done0, _) = succeeded(&client, &url).await;
                let t0 = Instant::now();
                let (acked, l) = load(&format!("{url}/webhook"), conns, common::notification).await;
                let deadline = Instant::now() + Duration::from_secs(120);
                let done = loop {
                    let (d, pending) = succeeded(&client, &url).await;
                    if pending == 0 || Instant::now() > deadline {
                        break d;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                rates.push((done - done0) as f64 / t0.elapsed().as_secs_f64());
                lat = l;
                assert_eq!((done - done0) as u64, acked, "every acknowledged notification ran once ({label})");
            }
            let (inline_rate, rbd_rate) = (rates[0], rates[1]);
            best_runbookd = best_runbookd.max(rbd_rate);
            let wh_rate = if let Some(bin) = webhook_bin {
                let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
                let _wh = Proc(Command::new(bin).args(["-hooks", dir.path().join("hooks.json").to_str().unwrap(), "-ip", "127.0.0.1", "-port", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
                let url = format!("http://127.0.0.1:{port}/hooks/true");
                let deadline = Instant::now() + Duration::from_secs(10);
                while client.post(&url).send().await.map(|r| r.status().is_success()).ok() != Some(true) {
                    assert!(Instant::now() < deadline, "webhook did not start");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let (n, _) = load(&url, conns, |_| Vec::new()).await;
                n as f64 / SECS as f64
            } else {
                f64::NAN
            };
            println!("| {conns} | {inline_rate:.0} | {rbd_rate:.0} | {:.2} / {:.2} ms | {wh_rate:.0} | {:.2}× | {:.2}× |", pct(&lat, 0.5), pct(&lat, 0.99), rbd_rate / inline_rate, rbd_rate / wh_rate);
        }
        let b1 = tokio::task::spawn_blocking(|| common::bare_rate(1, SECS)).await.unwrap();
        let b2 = tokio::task::spawn_blocking(|| common::bare_rate(2, SECS)).await.unwrap();
        println!();
        println!("| bare `/bin/true` spawn + wait | executions/s |");
        println!("| --- | --- |");
        println!("| 1 worker | {b1:.0} |");
        println!("| 2 workers | {b2:.0} |");
        println!("| best runbookd / bare (2 workers) | {:.0}% |", best_runbookd / b2 * 100.0);

        // Footprint and startup.
        let (idle, url, _) = runbookd(&rbdir, &dir.path().join("data-idle"), None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = client.get(format!("{url}/-/healthy")).send().await;
        let idle_rss = rss_mib(idle.0.id());
        let helper_rss: f64 = children(idle.0.id()).into_iter().map(rss_mib).sum();
        drop(idle);
        let slow = dir.path().join("slow");
        std::fs::create_dir(&slow).unwrap();
        std::fs::write(slow.join("slow.yaml"), "name: slow\nmatchers: [alertname = \"Bench\"]\nconcurrency: 1\nsteps:\n  - name: wait\n    run: [sleep, '60']\n").unwrap();
        let (queued, url, _) = runbookd(&slow, &dir.path().join("data-queued"), Some(&dir.path().join("config.yaml")));
        for chunk in (0..1001u64).collect::<Vec<_>>().chunks(50) {
            let posts: Vec<_> = chunk.iter().map(|&id| client.post(format!("{url}/webhook")).header("content-type", "application/json").body(common::notification(id)).send()).collect();
            for r in futures_util::future::join_all(posts).await {
                assert_eq!(r.unwrap().status(), 200);
            }
        }
        let (_, pending) = succeeded(&client, &url).await;
        let queued_rss = rss_mib(queued.0.id());
        drop(queued);
        let many = dir.path().join("many");
        std::fs::create_dir(&many).unwrap();
        for i in 0..1000 {
            std::fs::write(many.join(format!("rb-{i:04}.yaml")), format!("name: rb-{i}\nmatchers: [alertname = \"A{i}\"]\nenv:\n  S: \"{{{{labels.service}}}}\"\nsteps:\n  - name: a\n    run: [kubectl, get, pods, -l, \"app={{{{labels.service}}}}\"]\n  - name: b\n    shell: echo {{{{labels.instance}}}} | tail -n 1\n  - name: c\n    manual: Check {{{{labels.service}}}}\n")).unwrap();
        }
        let mut starts = Vec::new();
        for i in 0..5 {
            let (p, _, took) = runbookd(&many, &dir.path().join(format!("data-many-{i}")), None);
            starts.push(took);
            drop(p);
        }
        starts.sort();
        println!();
        println!("| footprint | value | goal |");
        println!("| --- | --- | --- |");
        println!("| idle RSS | {idle_rss:.1} MiB (+ spawn helper {helper_rss:.1} MiB) | ≤ 20 MB |");
        println!("| RSS with {pending} queued runs | {queued_rss:.1} MiB | ≤ 64 MB |");
        println!("| startup with 1,000 runbooks (to listening), median of 5 | {:.0} ms | ≤ 200 ms |", starts[2].as_secs_f64() * 1e3);
    });
}
