//! Notifications end to end: the real server delivers to a loopback HTTP
//! receiver standing in for Slack, PagerDuty and a webhook (which checks
//! each request's shape and can answer 500, 429 or not at all), and to a
//! real SMTP server (Debian's python3-aiosmtpd) on loopback.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Value};

use crate::app::{notification, TestApp};

/// What the receiver answers next.
#[derive(Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// 429 with `Retry-After: N`.
    TooMany(u64),
    /// No answer for this long (the notifier's timeout fires first).
    Hang(Duration),
}

#[derive(Debug, Clone)]
pub struct Got {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

/// A loopback HTTP receiver: records every request, answers from a script
/// (200 once the script is empty).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Got>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let script: Arc<Mutex<VecDeque<Reply>>> = Arc::default();
        let (g, sc) = (got.clone(), script.clone());
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let (g, sc) = (g.clone(), sc.clone());
                async move {
                    let body = serde_json::from_slice(&body)
                        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
                    g.lock().unwrap().push(Got {
                        path: uri.path().to_owned(),
                        headers,
                        body,
                        at: Instant::now(),
                    });
                    let next = sc.lock().unwrap().pop_front();
                    match next {
                        None => StatusCode::OK.into_response(),
                        Some(Reply::Status(s)) => {
                            (StatusCode::from_u16(s).unwrap(), "receiver says no").into_response()
                        }
                        Some(Reply::TooMany(secs)) => (
                            StatusCode::TOO_MANY_REQUESTS,
                            [("Retry-After", secs.to_string())],
                            "slow down",
                        )
                            .into_response(),
                        Some(Reply::Hang(d)) => {
                            tokio::time::sleep(d).await;
                            StatusCode::OK.into_response()
                        }
                    }
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, got, script }
    }

    pub fn clear_script(&self) {
        self.script.lock().unwrap().clear();
    }

    pub fn script(&self, replies: &[Reply]) {
        self.script.lock().unwrap().extend(replies.iter().copied());
    }

    pub fn got(&self, path: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` received `n` requests (at most 20 s).
    pub async fn wait(&self, path: &str, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.got(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{path} got {} requests, expected {n}: {:#?}",
                got.len(),
                got.iter().map(|g| &g.body).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Notifiers from YAML, as `notifiers:` in the server config.
pub fn notifiers(yaml: &str) -> Arc<runbookd::notify::config::Notifiers> {
    let files: std::collections::BTreeMap<String, runbookd::notify::config::NotifierFile> =
        serde_yaml::from_str(yaml).unwrap();
    Arc::new(
        files
            .iter()
            .map(|(k, v)| (k.clone(), v.check(k).unwrap()))
            .collect(),
    )
}

async fn wait_for_states(
    app: &TestApp,
    id: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Value {
    app.wait_for_incident(id, what, |v| {
        v["notifications"].as_array().is_some_and(|n| done(n))
    })
    .await
}

fn states(v: &Value) -> Vec<(String, String, String)> {
    v["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["notifier"].as_str().unwrap().to_owned(),
                n["event"].as_str().unwrap().to_owned(),
                n["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

const HOSTILE: &str = "<!channel> <https://evil.example|click> & \"quotes\" https://evil.example/login #general @here \u{1b}]0;pwned\u{7}\u{1b}[2J\r\nBcc: victim@example.com";

/// Every mrkdwn text object of a Slack message that shows `needle` (alert
/// data) is `verbatim`: Slack neither auto-links its URLs nor link-ifies its
/// #channels and @names.
fn assert_verbatim(message: &Value, needle: &str) {
    fn walk(v: &Value, needle: &str, seen: &mut usize) {
        match v {
            Value::Object(o) => {
                if o.get("type") == Some(&json!("mrkdwn"))
                    && o["text"].as_str().is_some_and(|t| t.contains(needle))
                {
                    *seen += 1;
                    assert_eq!(o.get("verbatim"), Some(&json!(true)), "auto-linked: {v}");
                }
                o.values().for_each(|v| walk(v, needle, seen));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, needle, seen)),
            _ => {}
        }
    }
    let mut seen = 0;
    walk(message, needle, &mut seen);
    assert!(seen > 0, "the alert data is not in the message: {message}");
    assert_eq!(
        message["mrkdwn"],
        json!(false),
        "the fallback text is formatted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_pagerduty_and_webhooks_get_their_documented_shapes() {
    let rx = Receiver::start().await;
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), "R0UTINGKEY0123456789012345678901\n").unwrap();
    let yaml = format!(
        "slack-ops: {{type: slack, url: '{0}/slack'}}\npd: {{type: pagerduty, url: '{0}/pd', routing_key_file: '{1}'}}\nhook: {{type: webhook, url: '{0}/hook'}}\n",
        rx.url,
        key.path().display()
    );
    let runbook = r#"
name: disk-full
title: "Disk full"
severity: sev1
matchers: ['alertname = "DiskFull"']
steps:
  - name: clean
    run: ["/bin/false"]
communication:
  - on: [incident_opened, step_failed, run_failed, incident_resolved]
    notify: [slack-ops, pd]
    message: "{{runbook.title}} on {{labels.instance}}: {{event}}"
  - on: [run_failed]
    notify: [hook]
    message: "{{incident.id}} {{runbook.title}} on {{labels.instance}}: {{event}}"
"#;
    let app = TestApp::start(&[("disk.yaml", runbook)], |c| {
        c.notifiers = notifiers(&yaml);
        c.external_url = "https://runbookd.example".into();
    })
    .await;
    let long = "x".repeat(3000);
    let labels =
        json!({"alertname": "DiskFull", "instance": HOSTILE, "service": "db", "long": long});
    let body = notification("g-shapes", &[(&labels, "firing", "2026-11-24T08:00:00Z")]);
    assert_eq!(app.post_alert(body).await.status(), 200);

    // Slack: opened, step_failed, run_failed; PagerDuty the same; the hook run_failed.
    let slack = rx.wait("/slack", 3).await;
    let pd = rx.wait("/pd", 3).await;
    let hook = rx.wait("/hook", 1).await;
    for s in &slack {
        let text = s.body["text"].as_str().unwrap();
        assert!(!text.is_empty());
        let all = s.body.to_string();
        assert!(
            !all.contains("<!channel>"),
            "a mention reached Slack: {all}"
        );
        assert!(
            !all.contains("<https://evil"),
            "a link of the sender's choosing reached Slack: {all}"
        );
        let blocks = s.body["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert!(blocks[0]["text"]["text"]
            .as_str()
            .unwrap()
            .starts_with("INC-"));
        // #23, item 16: the header names what the incident is about.
        assert!(
            blocks[0]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("· Disk full · &lt;!channel&gt;"),
            "{}",
            blocks[0]["text"]["text"]
        );
        assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= 150);
        let link = blocks.last().unwrap()["elements"][0]["text"]
            .as_str()
            .unwrap();
        assert!(
            link.starts_with("<https://runbookd.example/incidents/INC-"),
            "{link}"
        );
        assert_eq!(s.headers["content-type"], "application/json");
        assert_verbatim(&s.body, "https://evil.example/login #general @here");
    }
    let failed_step = slack
        .iter()
        .find(|s| s.body.to_string().contains("Failed step"))
        .expect("the step_failed message names the step");
    assert!(failed_step.body.to_string().contains("clean"));

    let incident = pd[0].body["dedup_key"].as_str().unwrap().to_owned();
    assert!(incident.starts_with("INC-"));
    for p in &pd {
        let b = &p.body;
        assert_eq!(b["routing_key"], "R0UTINGKEY0123456789012345678901");
        assert_eq!(b["event_action"], "trigger");
        assert_eq!(b["dedup_key"], incident.as_str());
        assert!(b["dedup_key"].as_str().unwrap().len() <= 255);
        let summary = b["payload"]["summary"].as_str().unwrap();
        assert!(
            !summary.is_empty() && summary.chars().count() <= 1024,
            "{}",
            summary.len()
        );
        assert!(!summary.contains('\n'));
        assert_eq!(b["payload"]["severity"], "critical", "sev1 is critical");
        assert_eq!(b["payload"]["source"], "db");
        assert!(b["payload"]["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            b["links"][0]["href"],
            format!("https://runbookd.example/incidents/{incident}")
        );
    }

    let h = &hook[0];
    assert_eq!(h.body["version"], "1");
    assert_eq!(h.body["event"], "run_failed");
    assert_eq!(h.body["incident"]["id"], incident.as_str());
    assert_eq!(h.body["incident"]["severity"], "sev1");
    assert_eq!(h.body["runbook"], "disk-full");
    assert!(h.body["run_id"].is_i64());
    assert_eq!(
        h.body["message"],
        format!("{incident} Disk full on {HOSTILE}: run_failed"),
        "the hostile label is a JSON string value, byte for byte"
    );
    assert!(h.headers.contains_key("x-runbookd-delivery"));
    assert_eq!(
        h.body["alert"]["labels"], labels,
        "the webhook carries the alert's labels"
    );
    assert_eq!(h.body["subject"], HOSTILE);

    // Resolution: PagerDuty resolves the same dedup_key.
    let resolved = notification("g-shapes", &[(&labels, "resolved", "2026-11-24T08:00:00Z")]);
    assert_eq!(app.post_alert(resolved).await.status(), 200);
    let pd = rx.wait("/pd", 4).await;
    let last = &pd.last().unwrap().body;
    assert_eq!(last["event_action"], "resolve");
    assert_eq!(last["dedup_key"], incident.as_str());
    assert!(last.get("payload").is_none());

    let v = wait_for_states(&app, &incident, "every notification delivered", |n| {
        n.len() == 9 && n.iter().all(|m| m["state"] == "delivered")
    })
    .await;
    assert!(states(&v).contains(&("hook".into(), "run_failed".into(), "delivered".into())));
    let count = app
        .metric("runbookd_deliveries_total{notifier=\"pd\",outcome=\"delivered\"}")
        .await;
    assert!((count - 4.0).abs() < 0.5, "{count}");
    let page = app.page(&format!("/incidents/{incident}")).await;
    assert!(page.contains("<h2>Notifications</h2>") && page.contains("slack-ops"));
    assert!(!page.contains("<!channel>"), "the UI escapes it too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_retry_honour_retry_after_and_end_dead() {
    let rx = Receiver::start().await;
    let runbook = r#"
name: flappy
matchers: ['alertname = "Flappy"']
steps:
  - name: ok
    run: ["/bin/true"]
communication:
  - on: [incident_opened]
    notify: [flaky, wrong, down]
"#;
    // flaky: 500, a hang past its timeout, 429 Retry-After 2, then 200;
    // wrong: 404 (permanent); down: 503 until its max_age.
    let wrong = Receiver::start().await;
    wrong.script(&[Reply::Status(404)]);
    let down = Receiver::start().await;
    down.script(&[Reply::Status(503); 64]);
    let yaml = format!(
        "flaky: {{type: webhook, url: '{0}/flaky', backoff: 100ms, timeout: 500ms}}\n\
         wrong: {{type: webhook, url: '{1}/wrong', backoff: 100ms}}\n\
         down: {{type: webhook, url: '{2}/down', backoff: 100ms, max_age: 1s}}\n",
        rx.url, wrong.url, down.url
    );
    rx.script(&[
        Reply::Status(500),
        Reply::Hang(Duration::from_secs(3)),
        Reply::TooMany(2),
    ]);
    let app = TestApp::start(&[("f.yaml", runbook)], |c| c.notifiers = notifiers(&yaml)).await;
    let labels = json!({"alertname": "Flappy"});
    assert_eq!(
        app.post_alert(notification(
            "g-flaky",
            &[(&labels, "firing", "2026-11-24T08:00:00Z")]
        ))
        .await
        .status(),
        200
    );
    let flaky = rx.wait("/flaky", 4).await;
    let gap = flaky[3].at.duration_since(flaky[2].at);
    assert!(
        gap >= Duration::from_secs(2),
        "Retry-After: 2 was honoured: {gap:?}"
    );
    let v = wait_for_states(
        &app,
        "INC-0001",
        "flaky delivered, wrong and down dead",
        |n| {
            let st = |name: &str| {
                n.iter()
                    .find(|m| m["notifier"] == name)
                    .map(|m| m["state"].clone())
            };
            st("flaky") == Some(json!("delivered"))
                && st("wrong") == Some(json!("dead"))
                && st("down") == Some(json!("dead"))
        },
    )
    .await;
    let by = |name: &str| {
        v["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["notifier"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by("flaky")["attempts"], 4);
    assert_eq!(by("wrong")["attempts"], 1, "a 404 is not retried");
    let err = by("wrong")["last_error"].as_str().unwrap().to_owned();
    assert!(
        err.contains("HTTP 404") && err.contains("not retried"),
        "{err}"
    );
    let err = by("down")["last_error"].as_str().unwrap().to_owned();
    assert!(err.contains("gave up") && err.contains("HTTP 503"), "{err}");
    assert_eq!(wrong.got("/wrong").len(), 1);
    assert!(
        down.got("/down").len() >= 2,
        "a 503 is retried until max_age"
    );
    let count = app
        .metric("runbookd_deliveries_total{notifier=\"flaky\",outcome=\"failed\"}")
        .await;
    assert!((count - 3.0).abs() < 0.5, "{count}");
    // A dead notification is listed and can be queued again.
    let (status, list) = app.get("/api/v1/notifications?state=dead").await;
    assert_eq!(status, 200);
    assert_eq!(list["notifications"].as_array().unwrap().len(), 2);
    let id = by("wrong")["id"].as_i64().unwrap();
    let resp = app
        .client
        .post(format!("{}/api/v1/notifications/{id}/retry", app.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wrong.wait("/wrong", 2).await;
    wait_for_states(&app, "INC-0001", "the retried one delivered", |n| {
        n.iter()
            .any(|m| m["notifier"] == "wrong" && m["state"] == "delivered")
    })
    .await;
    let flaky_id = by("flaky")["id"].as_i64().unwrap();
    let resp = app
        .client
        .post(format!("{}/api/v1/notifications/{flaky_id}/retry", app.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409, "only a dead notification is retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_incident_escalates_once_and_an_acknowledged_one_does_not() {
    let rx = Receiver::start().await;
    let yaml = format!("pager: {{type: webhook, url: '{}/pager'}}\n", rx.url);
    let runbook = r#"
name: slow
matchers: ['alertname = "Slow"']
steps:
  - name: look
    run: ["/bin/false"]
escalation:
  - after: 1500ms
    notify: [pager]
    message: "{{incident.id}} escalated: {{event}}"
"#;
    let app = TestApp::start(&[("s.yaml", runbook)], |c| c.notifiers = notifiers(&yaml)).await;
    for group in ["g-ignored", "g-handled"] {
        let labels = json!({"alertname": "Slow", "group": group});
        assert_eq!(
            app.post_alert(notification(
                group,
                &[(&labels, "firing", "2026-11-24T08:00:00Z")]
            ))
            .await
            .status(),
            200
        );
    }
    // INC-0002 is acknowledged before its escalation is due.
    let resp = app
        .client
        .post(format!("{}/api/v1/incidents/INC-0002/acknowledge", app.url))
        .json(&json!({"author": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ack: Value = resp.json().await.unwrap();
    assert_eq!(ack["acknowledged"], true);
    assert_eq!(ack["acknowledged_by"], "alice");
    let pages = rx.wait("/pager", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pages_after = rx.got("/pager");
    assert_eq!(
        pages_after.len(),
        1,
        "one escalation, once: {pages_after:?}"
    );
    assert_eq!(pages[0].body["incident"]["id"], "INC-0001");
    assert_eq!(pages[0].body["event"], "escalated");
    assert_eq!(pages[0].body["message"], "INC-0001 escalated: escalated");
    let one = app.incident("INC-0001").await;
    assert_eq!(one["escalated"], true);
    assert_eq!(one["escalations"][0]["state"], "fired");
    assert!(one["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["kind"] == "escalation" && t["message"].as_str().unwrap().contains("pager")));
    let two = app.incident("INC-0002").await;
    assert_eq!(two["escalations"][0]["state"], "cancelled");
    assert_eq!(two["acknowledged_by"], "alice");
    assert!(two["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["author"] == "alice" && t["message"] == "acknowledged by alice"));
    // Bad acknowledgements are 4xx with a reason.
    let resp = app
        .client
        .post(format!("{}/api/v1/incidents/INC-0999/acknowledge", app.url))
        .json(&json!({"author": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = app
        .client
        .post(format!("{}/api/v1/incidents/INC-0001/acknowledge", app.url))
        .json(&json!({"author": "a\r\nb"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reaches_a_real_smtp_server_without_header_injection() {
    let python = std::path::Path::new("/usr/bin/python3");
    let has_aiosmtpd = std::process::Command::new(python)
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_aiosmtpd {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3-aiosmtpd is needed (./scripts/test installs it)"
        );
        eprintln!("skipped: python3-aiosmtpd is not installed");
        return;
    }
    let maildir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut smtp = std::process::Command::new(python)
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(maildir.path().join("box"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the SMTP server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let yaml = format!(
        "mail: {{type: email, smtp: '127.0.0.1:{port}', tls: none, from: 'runbookd <runbookd@example.com>', to: [oncall@example.com]}}\n"
    );
    let runbook = r#"
name: mailer
title: "Queue stuck"
matchers: ['alertname = "Stuck"']
steps:
  - name: ok
    run: ["/bin/true"]
communication:
  - on: [incident_opened]
    notify: [mail]
    message: "stuck queue {{labels.queue}}"
"#;
    let app = TestApp::start(&[("m.yaml", runbook)], |c| c.notifiers = notifiers(&yaml)).await;
    let labels = json!({"alertname": "Stuck", "queue": HOSTILE});
    assert_eq!(
        app.post_alert(notification(
            "g-mail",
            &[(&labels, "firing", "2026-11-24T08:00:00Z")]
        ))
        .await
        .status(),
        200
    );
    wait_for_states(&app, "INC-0001", "the email delivered", |n| {
        n.iter().any(|m| m["state"] == "delivered")
    })
    .await;
    let new = maildir.path().join("box").join("new");
    let mails: Vec<_> = std::fs::read_dir(&new).unwrap().collect();
    assert_eq!(mails.len(), 1);
    let text = std::fs::read_to_string(mails[0].as_ref().unwrap().path()).unwrap();
    let text = text.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap();
    let head = head.replace("\n ", " ").replace("\n\t", " ");
    let subject = head
        .lines()
        .find(|l| l.starts_with("Subject: "))
        .unwrap_or_else(|| panic!("no subject: {head}"));
    assert!(
        subject.starts_with("Subject: [runbookd] INC-0001 sev3: stuck queue"),
        "{subject}"
    );
    assert_eq!(
        subject.matches("sev3").count(),
        1,
        "the severity once: {subject}"
    );
    assert!(
        subject.contains("Bcc: victim@example.com"),
        "the value stays inside the subject: {subject}"
    );
    assert!(
        !head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "no header injection: {head}"
    );
    assert!(
        head.lines().any(|l| l == "To: oncall@example.com"),
        "{head}"
    );
    assert!(body.contains("INC-0001"), "{body}");
    assert!(
        body.contains("http://127.0.0.1:"),
        "the incident link: {body}"
    );
    // The body as a mail reader shows it (transfer encoding undone): the
    // label's terminal escapes (set the window title, clear the screen)
    // are not there to drive the reader's terminal.
    let decoded = std::process::Command::new(python)
        .args([
            "-c",
            "import email,sys; m=email.message_from_binary_file(open(sys.argv[1],'rb')); sys.stdout.buffer.write(m.get_payload(decode=True))",
        ])
        .arg(mails[0].as_ref().unwrap().path())
        .output()
        .unwrap();
    assert!(decoded.status.success());
    let shown = String::from_utf8_lossy(&decoded.stdout);
    assert!(shown.contains("stuck queue <!channel>"), "{shown}");
    assert!(
        !shown
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t'),
        "control characters from alert data reach the mail body: {shown:?}"
    );
    let _ = smtp.kill();
    let _ = smtp.wait();
}

#[test]
fn check_points_at_bad_notification_rules_and_unknown_notifiers() {
    let dir = crate::helpers::runbook_dir(&[(
        "talk.yaml",
        r#"name: talk
matchers: ['alertname = "X"']
steps:
  - name: a
    run: ["/bin/true"]
communication:
  - on: [incident_opened, opened]
    notify: [slack-ops]
    message: "{{incident.id}} {{steps.a.status}}"
escalation:
  - after: soon
    unless: [acked]
    notify: [pager]
"#,
    )]);
    let path = dir.path().to_str().unwrap();
    let out = crate::helpers::runbookd(&["check", path]);
    assert_eq!(out.status.code(), Some(1));
    let err = crate::helpers::stderr(&out);
    let f = format!("{path}/talk.yaml");
    for want in [
        format!("{f}:7:27: runbook `talk`: unknown event `opened`: expected one of incident_opened, run_started, run_succeeded, run_failed, step_failed, approval_requested, incident_acknowledged, incident_resolved, escalated"),
        format!("{f}:9:14: runbook `talk`: unknown template variable `steps.a.status`: a message has no `steps`"),
        format!("{f}:11:12: runbook `talk`: bad `after`: not a valid duration `soon`"),
        format!("{f}:12:14: runbook `talk`: unknown condition `acked`: expected one of acknowledged, resolved, succeeded"),
    ] {
        assert!(err.contains(&want), "missing {want}\nin:\n{err}");
    }
    // With the server's config, names must be configured notifiers.
    let fixed = crate::helpers::runbook_dir(&[(
        "talk.yaml",
        "name: talk\nmatchers: ['alertname = \"X\"']\nsteps:\n  - name: a\n    run: [\"/bin/true\"]\ncommunication:\n  - on: [incident_opened]\n    notify: [slack-ops, pager]\n",
    )]);
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        "notifiers:\n  pager: {type: webhook, url: 'http://127.0.0.1:9/x'}\n",
    )
    .unwrap();
    let path = fixed.path().to_str().unwrap();
    let out = crate::helpers::runbookd(&["check", path]);
    assert!(out.status.success(), "{}", crate::helpers::stderr(&out));
    let out = crate::helpers::runbookd(&["check", path, "--config", cfg.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = crate::helpers::stderr(&out);
    assert!(
        err.contains(&format!("{path}/talk.yaml:8:14: runbook `talk`: notifier `slack-ops` is not configured (configured: pager)")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_before_delivery_loses_nothing_and_a_restart_resends_nothing_confirmed() {
    use crate::helpers::{serve_command, Served};
    let rx = Receiver::start().await;
    rx.script(&[Reply::Status(503); 200]);
    let runbooks = crate::helpers::runbook_dir(&[(
        "k.yaml",
        "name: k\nmatchers: ['alertname = \"K\"']\nsteps:\n  - name: a\n    run: [\"/bin/true\"]\ncommunication:\n  - on: [incident_opened]\n    notify: [hook]\n",
    )]);
    let data = tempfile::tempdir().unwrap();
    let cfg = data.path().join("runbookd.yaml");
    std::fs::write(
        &cfg,
        format!(
            "notifiers:\n  hook: {{type: webhook, url: '{}/hook', backoff: 200ms}}\n",
            rx.url
        ),
    )
    .unwrap();
    let start = || {
        let mut cmd = serve_command(
            std::path::Path::new(env!("CARGO_BIN_EXE_runbookd")),
            runbooks.path(),
            &data.path().join("store"),
        );
        cmd.arg("--config").arg(&cfg);
        Served::start(cmd)
    };
    let mut served = start();
    let client = crate::helpers::operator_client(&data.path().join("store"));
    let labels = json!({"alertname": "K"});
    let resp = client
        .post(format!("{}/webhook", served.url))
        .header("Content-Type", "application/json")
        .body(notification(
            "g-kill",
            &[(&labels, "firing", "2026-11-24T08:00:00Z")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    rx.wait("/hook", 1).await;
    // runbookd dies with the notification acknowledged and not delivered.
    served.kill9();
    rx.clear_script();
    let before = rx.got("/hook").len();
    let served = start();
    let v = crate::app::wait_for_incident_at(
        &client,
        &served.url,
        "INC-0001",
        "delivered after the restart",
        |v| v["notifications"][0]["state"] == "delivered",
    )
    .await;
    assert!(v["notifications"][0]["attempts"].as_u64().unwrap() >= 2);
    let delivered = rx.got("/hook").len();
    assert!(delivered > before, "the restarted runbookd sent it");
    // Confirmed once: another restart sends nothing more.
    drop(served);
    let served = start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rx.got("/hook").len(),
        delivered,
        "nothing confirmed is sent twice"
    );
    drop(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_records_what_would_be_sent_and_sends_nothing() {
    let rx = Receiver::start().await;
    let yaml = format!("hook: {{type: webhook, url: '{}/hook'}}\n", rx.url);
    let runbook = r#"
name: quiet
matchers: ['alertname = "Quiet"']
steps:
  - name: a
    run: ["/bin/false"]
communication:
  - on: [incident_opened, run_started, run_failed]
    notify: [hook]
escalation:
  - after: 200ms
    unless: [acknowledged]
    notify: [hook]
"#;
    let app = TestApp::start(&[("q.yaml", runbook)], |c| {
        c.notifiers = notifiers(&yaml);
        c.shadow = true;
    })
    .await;
    let labels = json!({"alertname": "Quiet"});
    assert_eq!(
        app.post_alert(notification(
            "g-quiet",
            &[(&labels, "firing", "2026-11-24T08:00:00Z")]
        ))
        .await
        .status(),
        200
    );
    let v = wait_for_states(&app, "INC-0001", "the notification recorded", |n| {
        !n.is_empty()
    })
    .await;
    assert!(
        states(&v).iter().all(|s| s.2 == "suppressed"),
        "{:?}",
        states(&v)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rx.got("/hook").is_empty(), "shadow mode sent something");
    // A person resolving the incident cancels every escalation, whatever its `unless`.
    let resp = app
        .client
        .post(format!("{}/api/v1/incidents/INC-0001/updates", app.url))
        .json(&json!({"author": "bob", "message": "fixed by hand", "status": "resolved"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v = app.incident("INC-0001").await;
    assert_eq!(v["escalations"][0]["state"], "cancelled", "{v:#}");
}

#[test]
fn a_plan_shows_who_would_be_told_and_sends_nothing() {
    let dir = crate::helpers::runbook_dir(&[(
        "p.yaml",
        "name: p\nmatchers: ['alertname = \"P\"']\nsteps:\n  - name: a\n    run: [\"/bin/true\"]\ncommunication:\n  - on: [incident_opened, run_failed]\n    notify: [slack-ops]\nescalation:\n  - after: 15m\n    notify: [pager]\n",
    )]);
    let alert = crate::helpers::write_alert(dir.path(), &json!({"alertname": "P"}));
    let (out, v) = crate::helpers::plan_json(&alert, dir.path());
    assert!(out.status.success());
    let notices = &v["alerts"][0]["runs"][0]["notifications"];
    assert_eq!(notices[0]["on"], json!(["incident_opened", "run_failed"]));
    assert_eq!(notices[0]["notify"], json!(["slack-ops"]));
    assert_eq!(notices[1]["after_ms"], 900_000);
    assert_eq!(notices[1]["unless"], json!(["acknowledged", "resolved"]));
    let out = crate::helpers::runbookd(&[
        "run",
        "--plan",
        "--alert",
        alert.to_str().unwrap(),
        "--runbooks",
        dir.path().to_str().unwrap(),
    ]);
    let text = crate::helpers::stdout(&out);
    assert!(
        text.contains("notifies slack-ops on incident_opened, run_failed (not sent by a plan)")
            && text.contains(
                "notifies pager after 15m unless acknowledged or resolved (not sent by a plan)"
            ),
        "{text}"
    );
}

/// An alert storm over many fingerprints (#23, 20): a runbook's `rate`
/// caps its runs per window, the server's `limits.run_rate` caps all runs;
/// runs over a cap are recorded `skipped` with the reason, and people are
/// told once per storm, not once per alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_storm_runs_up_to_the_rate_and_tells_people_once() {
    let rx = Receiver::start().await;
    let yaml = format!("ops: {{type: webhook, url: '{}/ops'}}\n", rx.url);
    let capped = r#"
name: restart-unit
matchers: ['alertname = "UnitDown"']
concurrency: 50
rate: 5/1m
steps:
  - name: restart
    run: ["true"]
communication:
  - on: [runs_rate_limited]
    notify: [ops]
"#;
    let other = r#"
name: note-disk
matchers: ['alertname = "DiskFull"']
concurrency: 50
steps:
  - name: note
    run: ["true"]
communication:
  - on: [runs_rate_limited]
    notify: [ops]
"#;
    let app = TestApp::start(&[("a.yaml", capped), ("b.yaml", other)], |c| {
        c.notifiers = notifiers(&yaml);
        c.run_rate = Some("8/1m".parse().unwrap());
    })
    .await;
    // 20 units go down at once, in two notifications (two Alertmanager
    // groups); then 6 disks fill.
    let unit = |i: usize| json!({"alertname": "UnitDown", "unit": format!("u{i}.service")});
    let units: Vec<Value> = (0..20).map(unit).collect();
    for (group, range) in [("g-units-1", 0..10), ("g-units-2", 10..20)] {
        let alerts: Vec<(&Value, &str, &str)> = units[range]
            .iter()
            .map(|l| (l, "firing", "2026-11-24T08:00:00Z"))
            .collect();
        let resp = app.post_alert(notification(group, &alerts)).await;
        assert_eq!(resp.status(), 200);
    }
    let disks: Vec<Value> = (0..6)
        .map(|i| json!({"alertname": "DiskFull", "instance": format!("db-{i}")}))
        .collect();
    let alerts: Vec<(&Value, &str, &str)> = disks
        .iter()
        .map(|l| (l, "firing", "2026-11-24T08:00:00Z"))
        .collect();
    let resp = app.post_alert(notification("g-disks", &alerts)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["queued_runs"].as_u64(), body["skipped_runs"].as_u64()),
        (Some(3), Some(3)),
        "5 unit runs + 3 disk runs reach the server's 8/1m: {body}"
    );

    let runs = |v: &Value| -> Vec<(String, String)> {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["state"].as_str().unwrap().to_owned(),
                    r["reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let mut all = Vec::new();
    for id in ["INC-0001", "INC-0002"] {
        let v = app
            .wait_for_incident(id, "the storm's runs to end", crate::app::runs_ended)
            .await;
        all.extend(runs(&v));
    }
    let ran = all.iter().filter(|(s, _)| s == "succeeded").count();
    let skipped: Vec<&String> = all
        .iter()
        .filter(|(s, _)| s == "skipped")
        .map(|(_, r)| r)
        .collect();
    assert_eq!((ran, skipped.len()), (5, 15), "{all:#?}");
    assert!(
        skipped
            .iter()
            .all(|r| r.contains("`restart-unit` started 5 runs in the last 1m (its `rate: 5/1m`)")),
        "{skipped:#?}"
    );
    let disks = app
        .wait_for_incident("INC-0003", "the disk runs to end", crate::app::runs_ended)
        .await;
    let disk_runs = runs(&disks);
    assert_eq!(
        disk_runs.iter().filter(|(s, _)| s == "skipped").count(),
        3,
        "{disk_runs:#?}"
    );
    assert!(disk_runs
        .iter()
        .any(|(_, r)| r.contains("the server's `limits.run_rate: 8/1m`")));

    // Told once per storm and runbook: two messages, not eighteen.
    rx.wait("/ops", 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let told = rx.got("/ops");
    assert_eq!(
        told.len(),
        2,
        "{:#?}",
        told.iter().map(|g| &g.body).collect::<Vec<_>>()
    );
    assert!(told.iter().all(|g| g.body["event"] == "runs_rate_limited"));
    assert!(told.iter().any(|g| g.body["message"]
        .as_str()
        .unwrap()
        .contains("alert storm: rate: `restart-unit`")));
    let first = app.incident("INC-0001").await;
    assert!(first["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["message"]
            .as_str()
            .unwrap()
            .contains("people are told once per storm")));

    // People's own runs are not capped.
    let (status, v) = crate::operators::post(
        &app,
        "/api/v1/runbooks/restart-unit/runs",
        None,
        json!({"labels": {"unit": "u99.service"}, "author": "dana"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["runs"].as_array().unwrap().len(), 1, "{v}");
}
