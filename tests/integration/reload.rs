//! SIGHUP and `POST /-/reload` read the config file again: users and
//! credentials, notifiers, the Alertmanager and limits change without a
//! restart (and without dropping a run or a pending notification); an
//! invalid config is refused whole and everything in force stays.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::alertmanager::{binary, start_alertmanager, Alertmanager};
use crate::app::{notification, runs_ended, wait_for_incident_at};
use crate::exec::require;
use crate::helpers::{
    open_tempdir, operator_client, runbook_dir, serve_command, write_with_mode, Served,
};
use crate::notify::Receiver;

const T0: &str = "2026-12-05T08:00:00Z";

const HUSH: &str = r#"name: hush
matchers: ['alertname = "Hush"']
steps:
  - name: hush
    silence:
      duration: 1h
      comment: "remediating {{labels.instance}}"
  - name: work
    run: ["/bin/sleep", "4"]
communication:
  - on: [incident_opened]
    notify: [hook]
"#;

fn config(hook: &str, am: &Alertmanager, extra: &str) -> String {
    format!(
        "notifiers:\n  hook: {{type: webhook, url: '{hook}'}}\nalertmanager: {{url: '{}'}}\n{extra}",
        am.url
    )
}

fn bearer(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// The silences `am` holds: (active, all).
async fn silences(am: &Alertmanager) -> (usize, usize) {
    let all = reqwest::get(format!("{}/api/v2/silences", am.url))
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap();
    let active = all
        .iter()
        .filter(|s| s["status"]["state"] == "active")
        .count();
    (active, all.len())
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(client: &reqwest::Client, url: &str, group: &str, labels: &Value) -> Value {
    let r = client
        .post(format!("{url}/webhook"))
        .header("content-type", "application/json")
        .body(notification(group, &[(labels, "firing", T0)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn status(client: &reqwest::Client, url: &str) -> u16 {
    client
        .get(format!("{url}/api/v1/incidents"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_users_notifiers_alertmanager_and_limits_and_refuses_a_bad_config() {
    let Some(bin) = binary() else {
        require(
            false,
            "prometheus-alertmanager (apt-get install prometheus-alertmanager)",
        );
        return;
    };
    let landlock = runbookd::exec::Probe::run().landlock_abi > 0;
    let rx = Receiver::start().await;
    let am1 = start_alertmanager(&bin, "http://127.0.0.1:9/unused", "", &[]).await;
    let am2 = start_alertmanager(&bin, "http://127.0.0.1:9/unused", "", &[]).await;
    // A new user's token, world-readable: only the sandbox keeps it from
    // steps once the reload names it.
    let secrets = open_tempdir();
    let olga_token = secrets.path().join("olga.token");
    write_with_mode(&olga_token, "olga-s3cret-token\n", 0o644);
    let reader = format!(
        "name: reader\nmatchers: ['alertname = \"Read\"']\nsteps:\n  - name: cat\n    shell: cat {} >/dev/null 2>&1 && echo READ || echo denied\n",
        olga_token.display()
    );
    let runbooks = runbook_dir(&[("hush.yaml", HUSH), ("reader.yaml", &reader)]);
    let data = tempfile::tempdir().unwrap();
    let store = data.path().join("store");
    let cfg = data.path().join("runbookd.yaml");
    std::fs::write(&cfg, config(&format!("{}/one", rx.url), &am1, "")).unwrap();
    let mut cmd = serve_command(
        Path::new(env!("CARGO_BIN_EXE_runbookd")),
        runbooks.path(),
        &store,
    );
    cmd.arg("--config").arg(&cfg);
    let served = Served::start(cmd);
    let url = served.url.clone();
    let local = operator_client(&store);

    // Before: the first notifier and the first Alertmanager.
    post(
        &local,
        &url,
        "g-1",
        &json!({"alertname": "Hush", "instance": "a"}),
    )
    .await;
    rx.wait("/one", 1).await;
    wait_for("a silence in the first Alertmanager", async || {
        silences(&am1).await == (1, 1)
    })
    .await;

    // The on-call team adds a user, moves the hook, switches Alertmanager
    // and caps runs, then sends SIGHUP.
    std::fs::write(
        &cfg,
        config(
            &format!("{}/two", rx.url),
            &am2,
            &format!(
                "auth:\n  users:\n    - {{name: olga, token_file: {}, role: operator}}\nlimits:\n  run_rate: 3/1h\n",
                olga_token.display()
            ),
        ),
    )
    .unwrap();
    nix::sys::signal::kill(served.pid(), nix::sys::signal::Signal::SIGHUP).unwrap();
    let olga = bearer("olga-s3cret-token");
    wait_for("olga's token to be accepted", async || {
        status(&olga, &url).await == 200
    })
    .await;
    // With users, the local operator credential is no longer one.
    assert_eq!(status(&local, &url).await, 401);

    post(
        &olga,
        &url,
        "g-2",
        &json!({"alertname": "Hush", "instance": "b"}),
    )
    .await;
    let two = rx.wait("/two", 1).await;
    assert!(
        two[0].body.to_string().contains("INC-0002"),
        "{:?}",
        two[0].body
    );
    wait_for("a silence in the second Alertmanager", async || {
        silences(&am2).await.1 == 1
    })
    .await;
    // The first run's silence, made in the first Alertmanager while it
    // ran, is expired there when it ends (not looked for in the second).
    wait_for(
        "the first run's silence to be expired where it was made",
        async || silences(&am1).await == (0, 1),
    )
    .await;
    assert_eq!(rx.got("/one").len(), 1, "the old hook is told nothing more");

    // The reloaded config's secret files are hidden from steps at once.
    post(&olga, &url, "g-3", &json!({"alertname": "Read"})).await;
    let inc = wait_for_incident_at(&olga, &url, "INC-0003", "the reader", runs_ended).await;
    let out = inc["runs"][0]["result"]["steps"][0]["attempts"][0]["stdout"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if require(landlock, "Landlock") {
        assert_eq!(out.trim(), "denied", "a step read the new user's token");
    }

    // The new limit: three runs in the hour already, the fourth is skipped.
    let body = post(
        &olga,
        &url,
        "g-4",
        &json!({"alertname": "Hush", "instance": "c"}),
    )
    .await;
    assert_eq!(
        (body["queued_runs"].as_u64(), body["skipped_runs"].as_u64()),
        (Some(0), Some(1)),
        "limits.run_rate 3/1h after the reload: {body}"
    );

    // An invalid config is refused whole, with its error; olga, the hook
    // and the limit stay.
    std::fs::write(
        &cfg,
        "notifiers:\n  hook: {type: carrier-pigeon}\nauth:\n  users: []\n",
    )
    .unwrap();
    let r = olga.post(format!("{url}/-/reload")).send().await.unwrap();
    let code = r.status().as_u16();
    let err: Value = r.json().await.unwrap();
    assert_eq!(code, 400, "{err}");
    assert!(err.to_string().contains("carrier-pigeon"), "{err}");
    nix::sys::signal::kill(served.pid(), nix::sys::signal::Signal::SIGHUP).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status(&olga, &url).await,
        200,
        "olga's token is still in force"
    );
    assert_eq!(status(&local, &url).await, 401);
    drop(served);
}
