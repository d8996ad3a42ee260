//! Fault suite: a full disk, steps that fork or allocate without bound,
//! the same notification delivered concurrently, slow and flooding clients.
//! Every loop is bounded in count and time; everything stays on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::app::{notification, run_states, TestApp};
use crate::exec::require;

const T0: &str = "2026-11-24T08:00:00Z";

async fn healthy_within(app: &TestApp, limit: Duration) {
    let t = Instant::now();
    let (code, _) = app.get("/-/healthy").await;
    assert_eq!(code, 200);
    assert!(t.elapsed() < limit, "a health check took {:?}", t.elapsed());
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        require(ok, "mounting a tmpfs (root)").then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_loses_nothing_acknowledged() {
    let Some(disk) = Tmpfs::mount("3m") else {
        return;
    };
    let rb = "name: none\nmatchers: [alertname = \"NeverSent\"]\nsteps:\n  - name: a\n    run: ['true']\n";
    let mut app = TestApp::start(&[("r.yaml", rb)], |c| {
        c.data_dir = disk.0.path().join("store");
    })
    .await;
    let big = "x".repeat(16 << 10);
    let (mut acked, mut refused) = (Vec::new(), 0);
    for i in 0..2000u32 {
        let body = serde_json::to_vec(&json!({
            "receiver": "r", "status": "firing", "version": "4", "groupKey": format!("full-{i}"),
            "alerts": [{"status": "firing", "labels": {"alertname": "Fill", "i": i.to_string()}, "annotations": {"pad": big}, "startsAt": T0}]
        }))
        .unwrap();
        let resp = app.post_alert(body).await;
        match resp.status().as_u16() {
            200 => acked.push(format!("full-{i}")),
            503 => {
                assert!(resp.headers().contains_key("retry-after"));
                refused += 1;
                if refused >= 5 {
                    break;
                }
            }
            other => panic!("a full disk answered {other}"),
        }
    }
    assert!(
        refused >= 5,
        "the disk never filled ({} acknowledged)",
        acked.len()
    );
    healthy_within(&app, Duration::from_secs(2)).await;
    // Alive, but not ready: a webhook would not be acknowledged.
    let (code, why) = app.get("/-/ready").await;
    assert_eq!(code, 503);
    assert!(why.to_string().contains("cannot be written"), "{why}");
    // The dispatcher's read-only commits in between do not make it ready.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.get("/-/ready").await.0, 503);
    app.stop().await;
    let db = rusqlite::Connection::open_with_flags(
        disk.0.path().join("store/runbookd.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let stored: std::collections::BTreeSet<String> = db
        .prepare("SELECT group_key FROM notifications")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|g| !stored.contains(*g)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost on a full disk: {lost:?}"
    );
    eprintln!(
        "full disk: {} acknowledged and stored, then {refused} answered 503",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_contained_and_the_server_unharmed() {
    let probe = runbookd::exec::Probe::run();
    // Only with a pids controller: without one this would be a real fork bomb.
    if !require(
        probe.cgroups.v2_pids || probe.cgroups.v1_pids.is_some(),
        "a pids cgroup controller",
    ) {
        return;
    }
    let rb = "name: bomb\nmatchers: [alertname = \"Bomb\"]\nsteps:\n  - name: forks\n    timeout: 3s\n    resources: {pids: 64}\n    shell: 'b() { b | b & }; b; sleep 10'\n";
    let app = TestApp::start(&[("b.yaml", rb)], |_| {}).await;
    app.post_alert(notification(
        "bomb",
        &[(&json!({"alertname": "Bomb"}), "firing", T0)],
    ))
    .await;
    app.wait_for_incident("INC-0001", "the bomb to start", |v| {
        run_states(v) == ["running"]
    })
    .await;
    healthy_within(&app, Duration::from_millis(500)).await;
    let inc = app
        .wait_for_incident("INC-0001", "the bomb to be stopped", |v| {
            run_states(v) == ["failed"]
        })
        .await;
    let attempt = &inc["runs"][0]["result"]["steps"][0]["attempts"][0];
    assert_eq!(attempt["outcome"]["status"], "timed_out", "{attempt}");
    assert!(attempt["sandbox"]["applied"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l.as_str().unwrap().starts_with("pids:64")));
    assert_eq!(
        crate::exec::survivors("b | b").len(),
        0,
        "fork bomb processes survived"
    );
    healthy_within(&app, Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_contained_and_the_server_unharmed() {
    let h = runbookd::exec::Probe::run().cgroups;
    if !require(
        h.v2_memory || h.v1_memory.is_some(),
        "a memory cgroup controller",
    ) {
        return;
    }
    let rb = "name: hog\nmatchers: [alertname = \"Hog\"]\nsteps:\n  - name: eat\n    resources: {memory: 64Mi}\n    shell: x=$(head -c 400000000 /dev/zero | tr '\\0' x); echo survived\n";
    let app = TestApp::start(&[("h.yaml", rb)], |_| {}).await;
    app.post_alert(notification(
        "hog",
        &[(&json!({"alertname": "Hog"}), "firing", T0)],
    ))
    .await;
    let inc = app
        .wait_for_incident("INC-0001", "the hog to be killed", |v| {
            run_states(v) == ["failed"]
        })
        .await;
    let outcome = &inc["runs"][0]["result"]["steps"][0]["outcome"];
    assert_eq!(
        (outcome["status"].as_str(), outcome["signal"].as_i64()),
        (Some("signalled"), Some(9)),
        "{outcome}"
    );
    assert!(
        outcome["cause"].as_str().unwrap().contains("memory limit"),
        "{outcome}"
    );
    assert_eq!(inc["run_failed"], true);
    healthy_within(&app, Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_notification_on_many_connections_at_once_runs_once() {
    let rb = "name: once\nmatchers: [alertname = \"Once\"]\nsteps:\n  - name: a\n    run: [echo, once]\n";
    let app = TestApp::start(&[("o.yaml", rb)], |_| {}).await;
    let body = notification(
        "{}:{alertname=\"Once\"}",
        &[(&json!({"alertname": "Once"}), "firing", T0)],
    );
    let mut tasks = Vec::new();
    for _ in 0..16 {
        // A fresh client each: a separate connection, as two Alertmanagers of a cluster would use.
        let (url, body) = (format!("{}/webhook", app.url), body.clone());
        let token = app.webhook_token();
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let inc = app
        .wait_for_incident("INC-0001", "the run", |v| run_states(v) == ["succeeded"])
        .await;
    assert_eq!(inc["runs"].as_array().unwrap().len(), 1);
    let (_, stats) = app.get("/api/v1/stats").await;
    assert_eq!(
        (
            stats["notifications"].as_i64(),
            stats["incidents_opened"].as_i64()
        ),
        (Some(16), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_and_floods_do_not_starve_real_requests() {
    let rb = "name: f\nmatchers: [alertname = \"Flood\"]\nsteps:\n  - name: a\n    run: ['true']\n";
    let app = TestApp::start(&[("f.yaml", rb)], |_| {}).await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    // Slowloris: 200 connections that send a request one byte at a time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow: Vec<_> = (0..200)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(&addr) else { return };
                for b in b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle().take(40) {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..10 {
        healthy_within(&app, Duration::from_millis(250)).await;
        let t = Instant::now();
        let r = app
            .post_alert(notification(
                &format!("slow-{i}"),
                &[(
                    &json!({"alertname": "Flood", "i": i.to_string()}),
                    "firing",
                    T0,
                )],
            ))
            .await;
        assert_eq!(r.status(), 200);
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "a webhook took {:?} during slowloris",
            t.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in slow {
        let _ = s.join();
    }
    // A flood of 10,000 tiny requests on 32 connections (an operator's: an
    // unknown page is a 404 only to someone who may read).
    let client = app.client.clone();
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..32 {
        let (client, url) = (client.clone(), app.url.clone());
        workers.push(tokio::spawn(async move {
            let mut codes = std::collections::BTreeMap::new();
            for i in 0..313 {
                let path = if (w + i) % 2 == 0 {
                    "/-/healthy"
                } else {
                    "/nope"
                };
                let code = client
                    .get(format!("{url}{path}"))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                *codes.entry(code).or_insert(0) += 1;
            }
            codes
        }));
    }
    let mut total = std::collections::BTreeMap::new();
    for w in workers {
        for (code, n) in w.await.unwrap() {
            *total.entry(code).or_insert(0) += n;
        }
    }
    assert_eq!(
        total.keys().copied().collect::<Vec<u16>>(),
        [200, 404],
        "{total:?}"
    );
    eprintln!(
        "flood: 10,016 requests in {:?}: {total:?}",
        started.elapsed()
    );
    healthy_within(&app, Duration::from_millis(250)).await;
    // Oversized headers are refused without harming the server.
    let mut s = TcpStream::connect(&addr).unwrap();
    let _ = s.write_all(
        format!(
            "GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(1 << 20)
        )
        .as_bytes(),
    );
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "oversized headers answered: {reply:.80}"
    );
    healthy_within(&app, Duration::from_millis(250)).await;
    let r = app
        .post_alert(notification(
            "after",
            &[(&json!({"alertname": "Flood", "i": "after"}), "firing", T0)],
        ))
        .await;
    assert_eq!(r.status(), 200);
    let _: Value = r.json().await.unwrap();
}
