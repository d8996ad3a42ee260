//! `TestApp`: the real server, in process, on `127.0.0.1:0`, with its own
//! runbooks and data directory; helpers named after what a user does.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use runbookd::config::{Overrides, ServerConfig};
use runbookd::server::{self, Running};
use serde_json::Value;

pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub running: Option<Running>,
    pub data: tempfile::TempDir,
    pub runbooks: tempfile::TempDir,
    pub token: Option<String>,
    /// The server's data directory (its store and credentials).
    pub store_dir: PathBuf,
}

pub fn config(runbooks: PathBuf, data: PathBuf) -> ServerConfig {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        runbooks: Some(runbooks),
        data_dir: Some(data),
        ..Overrides::default()
    };
    let mut cfg = ServerConfig::load(None, overrides).unwrap();
    // Quick stops and kills, so tests of shutdown and timeouts stay short.
    cfg.max_concurrent_steps = 8;
    cfg.shutdown_grace = Duration::from_millis(500);
    cfg.kill_grace = Duration::from_millis(300);
    // The spawn helper is runbookd itself, not this test binary.
    cfg.sandbox.spawner = crate::exec::helper();
    cfg
}

/// The client of a person at the server whose data directory is `store`:
/// with the local operator credential when the server made one (no
/// `auth.users`), without any otherwise (tests then send a user's).
pub fn client_for(store: &std::path::Path) -> reqwest::Client {
    if store.join("operator.token").exists() {
        crate::helpers::operator_client(store)
    } else {
        reqwest::Client::new()
    }
}

impl TestApp {
    /// Starts the app with these runbook files; `tweak` adjusts the config.
    pub async fn start(files: &[(&str, &str)], tweak: impl FnOnce(&mut ServerConfig)) -> TestApp {
        let runbooks = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(runbooks.path().join(name), text).unwrap();
        }
        let data = tempfile::tempdir().unwrap();
        let mut cfg = config(runbooks.path().to_owned(), data.path().join("store"));
        tweak(&mut cfg);
        let token = cfg.auth.bearer.clone();
        let store = cfg.data_dir.clone();
        let running = server::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
        TestApp {
            url: format!("http://{}", running.addr),
            client: client_for(&store),
            store_dir: store,
            running: Some(running),
            data,
            runbooks,
            token,
        }
    }

    /// Starts again on the same data directory (a restart).
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await;
    }

    /// [`TestApp::restart`], `tweak` adjusting the config as at start (on
    /// the same data directory unless it names another).
    pub async fn restart_with(&mut self, tweak: impl FnOnce(&mut ServerConfig)) {
        let mut cfg = config(
            self.runbooks.path().to_owned(),
            self.data.path().join("store"),
        );
        tweak(&mut cfg);
        let store = cfg.data_dir.clone();
        let running = server::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
        self.client = client_for(&store);
        self.url = format!("http://{}", running.addr);
        self.running = Some(running);
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
    }

    /// The value of the metric line starting with `prefix` (0 when absent).
    pub async fn metric(&self, prefix: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn set_max_queued_runs(&self, n: u64) {
        self.running
            .as_ref()
            .unwrap()
            .state
            .max_queued_runs
            .store(n, Ordering::Relaxed);
    }

    /// The webhook's credential: the configured one, or the one runbookd
    /// made in its data directory.
    pub fn webhook_token(&self) -> String {
        self.token.clone().unwrap_or_else(|| {
            std::fs::read_to_string(self.store_dir.join("webhook.token"))
                .unwrap()
                .trim()
                .to_owned()
        })
    }

    /// Alertmanager posting a notification (with the configured token).
    pub async fn post_alert(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        let req = self
            .client
            .post(format!("{}/webhook", self.url))
            .header("Content-Type", "application/json")
            .body(body)
            .bearer_auth(self.webhook_token());
        req.send().await.unwrap()
    }

    /// A page as text (HTML), as a browser would get it.
    pub async fn page(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The token the UI's forms carry, read from a page as a browser would
    /// (`auth`: basic credentials for a page behind `protect_reads`).
    pub async fn form_token(&self, page: &str, auth: Option<(&str, &str)>) -> String {
        let mut req = self.client.get(format!("{}{page}", self.url));
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        let html = req.send().await.unwrap().text().await.unwrap();
        let needle = "name=\"csrf\" value=\"";
        let at = html
            .find(needle)
            .unwrap_or_else(|| panic!("no form token on {page}: {html}"));
        html[at + needle.len()..]
            .split('"')
            .next()
            .unwrap()
            .to_owned()
    }

    pub async fn incident(&self, id: &str) -> Value {
        let (status, v) = self.get(&format!("/api/v1/incidents/{id}")).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Polls an incident until `done` holds (at most 20 s).
    pub async fn wait_for_incident(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for_incident_at(&self.client, &self.url, id, what, done).await
    }
}

/// Polls incident `id` of the server at `url` until `done` holds (at most 20 s).
pub async fn wait_for_incident_at(
    client: &reqwest::Client,
    url: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let resp = client
            .get(format!("{url}/api/v1/incidents/{id}"))
            .send()
            .await
            .unwrap();
        let ok = resp.status() == 200;
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if ok && done(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether every run of the incident has ended (and there is one).
pub fn runs_ended(incident: &Value) -> bool {
    let states = run_states(incident);
    !states.is_empty()
        && states
            .iter()
            .all(|s| s != "queued" && s != "running" && s != "awaiting_approval")
}

/// The states of an incident's runs, in order.
pub fn run_states(incident: &Value) -> Vec<String> {
    incident["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .collect()
}

/// A firing (or resolved) notification of alerts with these labels.
pub fn notification(group_key: &str, alerts: &[(&Value, &str, &str)]) -> Vec<u8> {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(labels, status, starts)| {
            serde_json::json!({
                "status": status, "labels": labels, "annotations": {},
                "startsAt": starts,
                "endsAt": if *status == "resolved" { "2026-11-24T09:00:00Z" } else { "0001-01-01T00:00:00Z" },
                "generatorURL": "http://prometheus.example/graph?g0.expr=up",
            })
        })
        .collect();
    let any_firing = alerts.iter().any(|a| a["status"] == "firing");
    serde_json::to_vec(&serde_json::json!({
        "receiver": "runbookd", "status": if any_firing { "firing" } else { "resolved" },
        "alerts": alerts, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.example", "version": "4", "groupKey": group_key, "truncatedAlerts": 0
    }))
    .unwrap()
}
