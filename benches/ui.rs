//! UI pages with 10,000 incidents in the store. `cargo bench --bench ui`;
//! figures in docs/benchmarks.md. Goal: the incidents list page, with paging
//! and filters, renders in under 100 ms server-side.
//!
//! The store is filled through the real webhook (shadow mode, so the 10,000
//! runs are planned, not executed); then each page is fetched 50 times over
//! loopback and the server-side time is read from runbookd's own
//! `http_request_duration_seconds` histogram (sum / count per route), beside
//! the client-side median.

#![allow(clippy::cast_precision_loss)] // timing statistics

use std::time::{Duration, Instant};

mod common;

fn body(id: u64) -> Vec<u8> {
    let status = if id % 3 == 0 { "resolved" } else { "firing" };
    format!(
        r#"{{"receiver":"bench","status":"{status}","alerts":[{{"status":"firing","labels":{{"alertname":"Ui","id":"{id}","service":"svc-{}"}},"annotations":{{"summary":"bench"}},"startsAt":"2026-11-24T08:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":""}}],"groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"","version":"4","groupKey":"ui-{id}","truncatedAlerts":0}}"#,
        id % 40
    )
    .into_bytes()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let runbooks = tempfile::tempdir().unwrap();
        std::fs::write(runbooks.path().join("ui.yaml"), "name: ui\nmatchers: [alertname = \"Ui\"]\nconcurrency: 64\nsteps:\n  - name: a\n    run: [echo, '{{labels.id}}']\n").unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut cfg = common::loopback_config(runbooks.path(), data.path());
        cfg.max_queued_runs = 100_000;
        cfg.shadow = true;
        let server = runbookd::server::start(cfg).await.unwrap();
        let base = format!("http://{}", server.addr);
        let client = common::client();
        let t = Instant::now();
        let mut pending = Vec::new();
        for id in 0..10_000u64 {
            pending.push(client.post(format!("{base}/webhook")).header("content-type", "application/json").body(body(id)).send());
            if pending.len() == 64 {
                for r in futures_util::future::join_all(pending.drain(..)).await {
                    assert_eq!(r.unwrap().status(), 200);
                }
            }
        }
        for r in futures_util::future::join_all(pending).await {
            assert_eq!(r.unwrap().status(), 200);
        }
        println!("10,000 incidents stored in {:.1} s", t.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(3)).await; // let the shadow plans settle
        println!("| page | client median | server mean (runbookd histogram) |");
        println!("| --- | --- | --- |");
        for path in ["/incidents", "/incidents?status=monitoring", "/incidents?severity=sev3&page=40", "/incidents?page=199", "/", "/incidents/INC-5000", "/api/v1/incidents?limit=50"] {
            let before = common::route_time(&client, &base, route(path)).await;
            let mut times = Vec::new();
            for _ in 0..50 {
                let t = Instant::now();
                let r = client.get(format!("{base}{path}")).send().await.unwrap();
                assert_eq!(r.status(), 200, "{path}");
                let _ = r.bytes().await.unwrap();
                times.push(t.elapsed());
            }
            times.sort();
            let after = common::route_time(&client, &base, route(path)).await;
            let server_ms = (after.0 - before.0) / (after.1 - before.1) * 1e3;
            println!("| `{path}` | {:.2} ms | {server_ms:.2} ms |", times[25].as_secs_f64() * 1e3);
        }
        server.stop().await.unwrap();
    });
}

fn route(path: &str) -> &'static str {
    match path.split('?').next().unwrap() {
        "/" => "/",
        "/incidents" => "/incidents",
        "/api/v1/incidents" => "/api/v1/incidents",
        _ => "/incidents/{id}",
    }
}
