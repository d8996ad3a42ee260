//! What a person sees, in a real headless Chromium (Debian `chromium` and
//! `chromium-driver`) driven over WebDriver against the app on loopback.
//! Screenshots of the main pages go to `tests/artifacts/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::app::{notification, run_states, TestApp};
use crate::exec::require;

struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn browser() -> Option<Browser> {
    let (chromium, driver) = (
        PathBuf::from("/usr/bin/chromium"),
        PathBuf::from("/usr/bin/chromedriver"),
    );
    if !require(
        chromium.exists() && driver.exists(),
        "Chromium and ChromeDriver (apt-get install chromium chromium-driver)",
    ) {
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let profile = tempfile::tempdir().unwrap();
    let caps = json!({"goog:chromeOptions": {"binary": chromium, "args": [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1280,1100", format!("--user-data-dir={}", profile.path().display()),
    ]}});
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session");
    Some(Browser {
        client,
        driver,
        _profile: profile,
    })
}

async fn screenshot(b: &Browser, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.png")),
        b.client.screenshot().await.unwrap(),
    )
    .unwrap();
}

/// Opens `path` of the app at `base`.
async fn visit(b: &Browser, base: &str, path: &str) {
    b.client.goto(&format!("{base}{path}")).await.unwrap();
}

async fn click(b: &Browser, what: Locator<'_>) {
    b.client.find(what).await.unwrap().click().await.unwrap();
}

async fn text_of(b: &Browser, css: &str) -> String {
    b.client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn wait_for_text(b: &Browser, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(el) = b.client.find(Locator::Css(css)).await {
            if let Ok(t) = el.text().await {
                if t.contains(needle) {
                    return t;
                }
            }
        }
        if Instant::now() >= deadline {
            let src = b.client.source().await.unwrap_or_default();
            panic!("{needle:?} never appeared in {css}; the page: {src}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A person opens `path` before signing in: the browser is sent to the
/// sign-in page, takes the operator credential runbookd made (as the
/// README says: `cat data/operator.token`), and lands on `path`.
async fn sign_in(b: &Browser, app: &TestApp, path: &str) {
    visit(b, &app.url, path).await;
    let url = b.client.current_url().await.unwrap();
    assert_eq!(
        url.path(),
        "/login",
        "an anonymous page view signs in first"
    );
    let secret = std::fs::read_to_string(app.data.path().join("store/operator.token")).unwrap();
    let form = b.client.form(Locator::Css("#login-form")).await.unwrap();
    form.set_by_name("secret", secret.trim()).await.unwrap();
    form.submit().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.client.current_url().await.unwrap().path() != path {
        assert!(
            Instant::now() < deadline,
            "not sent back to {path} after signing in"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const RUNBOOKS: &[(&str, &str)] = &[
    ("ui.yaml", "name: ui\ntitle: UI check\nseverity: sev2\nmatchers: [alertname = \"UiTest\"]\nsteps:\n  - name: show\n    run: [echo, \"output of {{labels.instance}}\"]\n  - name: look\n    manual: Look at {{labels.instance}}\n"),
    ("slow.yaml", "name: slow\ntitle: Slow one\nmatchers: [alertname = \"SlowTest\"]\nsteps:\n  - name: ticks\n    shell: for i in 1 2 3 4 5 6 7 8; do echo tick-$i; sleep 0.4; done\n"),
    ("broken.yaml", "name: broken\ntitle: Disk almost full\nmatchers: [alertname = \"BrokenTest\"]\nsteps:\n  - name: df\n    run: [echo, usage]\n  - name: clean-tmp\n    shell: echo no space left >&2; exit 4\n  - name: after\n    run: ['true']\non_failure:\n  - name: page-owner\n    manual: Page the storage owner of {{labels.instance}}\n"),
];

const HOSTILE: &str = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_incidents_output_live_updates_and_safe_labels() {
    let Some(b) = browser().await else { return };
    let app = TestApp::start(RUNBOOKS, |_| {}).await;
    app.post_alert(notification(
        "g-ui",
        &[(
            &json!({"alertname": "UiTest", "instance": HOSTILE, "service": "web"}),
            "firing",
            "2026-11-24T08:00:00Z",
        )],
    ))
    .await;
    app.wait_for_incident("INC-0001", "the run", |v| run_states(v) == ["succeeded"])
        .await;

    // The incidents list shows it; clicking through opens the incident.
    sign_in(&b, &app, "/incidents").await;
    let table = text_of(&b, "table.incidents").await;
    assert!(
        table.contains("INC-0001")
            && table.contains("UI check")
            && table.contains("sev2")
            && table.contains("identified"),
        "{table}"
    );
    screenshot(&b, "incidents").await;
    click(&b, Locator::LinkText("INC-0001")).await;
    let output = text_of(&b, "pre.stdout").await;
    assert_eq!(
        output,
        format!("output of {HOSTILE}"),
        "the step's output is shown, as text"
    );
    let labels = text_of(&b, ".labels").await;
    assert!(
        labels.contains(&format!("instance=\"{HOSTILE}\"")),
        "{labels}"
    );
    let pwned = b.client.execute("return window.__pwned === undefined && document.querySelectorAll('main script:not([src]), main img[src=x]').length", vec![]).await.unwrap();
    assert_eq!(pwned, json!(0), "alert data became markup");
    assert!(
        text_of(&b, "pre.command").await.contains("output of"),
        "the rendered command is shown"
    );
    screenshot(&b, "incident").await;

    // An update posted in the form appears in the timeline.
    click(&b, Locator::Css("#update > summary")).await;
    let form = b.client.form(Locator::Css("#update-form")).await.unwrap();
    form.set_by_name("author", "alice").await.unwrap();
    form.set_by_name("message", "rolled back the bad deploy")
        .await
        .unwrap();
    form.set_by_name("status", "identified").await.unwrap();
    form.submit().await.unwrap();
    let timeline = wait_for_text(&b, "table.timeline", "rolled back the bad deploy").await;
    assert!(timeline.contains("alice"), "{timeline}");
    assert_eq!(text_of(&b, "#status").await, "identified");

    // The checklist item is ticked from the page (#23, 12): who is shown,
    // and with nothing left for people the incident is monitoring.
    let tick = b
        .client
        .form(Locator::Css("#checklist form.tick"))
        .await
        .unwrap();
    tick.set_by_name("author", "alice").await.unwrap();
    click(&b, Locator::Css("#checklist form.tick button[name=done]")).await;
    let items = wait_for_text(&b, "#checklist", "done by alice").await;
    assert!(items.contains('☑'), "{items}");
    assert_eq!(text_of(&b, "#status").await, "monitoring");
    // Command is handed over from the page (#23, 19).
    click(&b, Locator::Css("#hand-over > summary")).await;
    let hand = b
        .client
        .form(Locator::Css("#commander-form"))
        .await
        .unwrap();
    hand.set_by_name("author", "alice").await.unwrap();
    hand.set_by_name("name", "bob").await.unwrap();
    hand.submit().await.unwrap();
    let lead = wait_for_text(&b, "#commander", "bob").await;
    assert!(lead.contains("incident commander"), "{lead}");
    let timeline = text_of(&b, "table.timeline").await;
    assert!(
        timeline.contains("alice made bob the incident commander")
            || timeline.contains("alice handed command"),
        "{timeline}"
    );

    // Live output arrives while a slow step runs, without reloading the page.
    app.post_alert(notification(
        "g-slow",
        &[(
            &json!({"alertname": "SlowTest"}),
            "firing",
            "2026-11-24T08:00:00Z",
        )],
    ))
    .await;
    // Open the page once some output is stored: the page shows it, and the
    // live stream must continue after it, not repeat it.
    app.wait_for_incident("INC-0002", "the slow run's first output", |v| {
        run_states(v) == ["running"]
            && v["runs"][0]["live_output"].as_array().is_some_and(|o| {
                o.iter()
                    .any(|c| c["text"].as_str().unwrap_or("").contains("tick-2"))
            })
    })
    .await;
    visit(&b, &app.url, "/incidents/INC-0002").await;
    b.client
        .execute("window.__sameDocument = 42", vec![])
        .await
        .unwrap();
    let live = wait_for_text(&b, "pre.live", "tick-4").await;
    assert!(
        live.starts_with("── ticks ──\ntick-1\ntick-2\ntick-3\ntick-4"),
        "{live:?}"
    );
    assert_eq!(
        live.matches("tick-1\n").count(),
        1,
        "output shown twice: {live:?}"
    );
    assert_eq!(
        b.client
            .execute("return window.__sameDocument", vec![])
            .await
            .unwrap(),
        json!(42),
        "the page reloaded to show output"
    );
    screenshot(&b, "live-output").await;
    // When the run ends the page shows its final record.
    wait_for_text(&b, "pre.stdout", "tick-8").await;

    // The other pages.
    for (path, name, needle) in [
        ("/", "overview", "Open incidents"),
        ("/runbooks", "runbooks", "alertname=\"UiTest\""),
        ("/plan", "plan", "Paste an Alertmanager"),
    ] {
        visit(&b, &app.url, path).await;
        assert!(text_of(&b, "main").await.contains(needle), "{path}");
        screenshot(&b, name).await;
    }
    let form = b.client.form(Locator::Css("main form")).await.unwrap();
    form.set_by_name(
        "payload",
        &String::from_utf8(notification(
            "g-p",
            &[(
                &json!({"alertname": "UiTest", "instance": "web-3"}),
                "firing",
                "2026-11-24T08:00:00Z",
            )],
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    form.submit().await.unwrap();
    let plan = wait_for_text(&b, "main", "output of web-3").await;
    assert!(plan.contains("ui") && plan.contains("show"), "{plan}");
    // A failed run: its first screen says what is happening, what ran,
    // what failed and what to do now, on a laptop and on a phone.
    for (i, host) in ["db-1", "db-2"].iter().enumerate() {
        app.post_alert(notification(
            &format!("g-broken-{i}"),
            &[(
                &json!({"alertname": "BrokenTest", "instance": host}),
                "firing",
                "2026-11-24T08:00:00Z",
            )],
        ))
        .await;
    }
    // An alert no runbook matches.
    app.post_alert(notification(
        "g-none",
        &[(
            &json!({"alertname": "NobodyHandlesThis", "instance": "edge-9"}),
            "firing",
            "2026-11-24T08:00:00Z",
        )],
    ))
    .await;
    app.wait_for_incident("INC-0004", "the broken run", |v| {
        run_states(v) == ["failed"]
    })
    .await;
    // Two incidents with the same title are told apart by their host.
    visit(&b, &app.url, "/incidents").await;
    let table = text_of(&b, "table.incidents").await;
    assert!(
        table.contains("Disk almost full · db-1") && table.contains("Disk almost full · db-2"),
        "{table}"
    );
    assert!(table.contains("1 (1 firing)"), "{table}");
    for (w, h, name) in [
        (1280, 900, "incident-failed"),
        (390, 844, "phone-incident-failed"),
    ] {
        b.client.set_window_size(w, h).await.unwrap();
        visit(&b, &app.url, "/incidents/INC-0004").await;
        let now = text_of(&b, "#now").await;
        for needle in [
            "BrokenTest",
            "instance=db-2",
            "broken: failed",
            "clean-tmp",
            "exit status 4",
            "Page the storage owner of db-2",
            "Add an update",
        ] {
            assert!(now.contains(needle), "{w}px: no `{needle}` in {now}");
        }
        let bottom = b
            .client
            .execute(
                "return document.getElementById('now').getBoundingClientRect().bottom <= window.innerHeight",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            bottom,
            json!(true),
            "{w}px: the summary is not on the first screen"
        );
        let times = b.client.execute("return Array.from(document.querySelectorAll('time')).map(t => t.textContent).join('|')", vec![]).await.unwrap();
        let times = times.as_str().unwrap().to_owned();
        assert!(
            !times.is_empty() && !times.contains('.') && !times.contains('T'),
            "raw timestamps: {times}"
        );
        screenshot(&b, name).await;
    }
    b.client.set_window_size(1280, 900).await.unwrap();
    visit(&b, &app.url, "/unmatched").await;
    let unmatched = text_of(&b, "main").await;
    assert!(
        unmatched.contains("NobodyHandlesThis") && unmatched.contains("instance=\"edge-9\""),
        "{unmatched}"
    );
    assert!(!unmatched.contains("BrokenTest"), "{unmatched}");
    screenshot(&b, "unmatched").await;
    visit(&b, &app.url, "/incidents/INC-0999").await;
    let missing = text_of(&b, "main").await;
    assert!(
        missing.contains("404") && missing.contains("INC-0999"),
        "{missing}"
    );
    visit(&b, &app.url, "/runbooks").await;
    assert!(text_of(&b, "#runbook-broken")
        .await
        .contains("echo no space left"));

    // Readable on a phone: no sideways scrolling of the page itself.
    b.client.set_window_size(390, 844).await.unwrap();
    for (path, name) in [
        ("/incidents", "phone-incidents"),
        ("/incidents/INC-0001", "phone-incident"),
    ] {
        visit(&b, &app.url, path).await;
        let overflow = b.client.execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth", vec![]).await.unwrap();
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{path} scrolls sideways by {overflow}px on a phone"
        );
        screenshot(&b, name).await;
    }
    b.client.clone().close().await.unwrap();
}

/// An operator approves a waiting step from the incident page: the prompt
/// shows (as text), the click resumes the run, the timeline names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_approves_a_waiting_step_from_the_incident_page() {
    let Some(b) = browser().await else { return };
    let rb = "name: risky\nmatchers: [alertname = \"Risky\"]\nsteps:\n  - name: check\n    run: [echo, checked]\n  - name: go\n    approve: {prompt: \"Restart {{labels.instance}}?\", timeout: 10m}\n  - name: restart\n    run: [echo, restarted]\n";
    let app = TestApp::start(&[("risky.yaml", rb)], |_| {}).await;
    sign_in(&b, &app, "/").await;
    app.post_alert(notification(
        "g-approve",
        &[(
            &json!({"alertname": "Risky", "instance": HOSTILE}),
            "firing",
            "2026-11-25T08:00:00Z",
        )],
    ))
    .await;
    let v = app
        .wait_for_incident("INC-0001", "the run waiting", |v| {
            run_states(v) == ["awaiting_approval"]
        })
        .await;
    let run = v["runs"][0]["id"].as_i64().unwrap();
    // #23, item 10: the overview leads with what needs a person: a run
    // waiting for a decision, and it is not acknowledged yet.
    visit(&b, &app.url, "/").await;
    let needs = text_of(&b, "#needs-decision + table").await;
    assert!(
        needs.contains("INC-0001")
            && needs.contains("needs a decision")
            && needs.contains("unacknowledged"),
        "{needs}"
    );
    screenshot(&b, "overview").await;
    visit(&b, &app.url, "/incidents/INC-0001").await;
    let ask = text_of(&b, &format!("#approval-{run}")).await;
    assert!(ask.contains(&format!("Restart {HOSTILE}?")), "{ask}");
    let pwned = b.client.execute("return window.__pwned === undefined && document.querySelectorAll('main script:not([src]), main img[src=x]').length", vec![]).await.unwrap();
    assert_eq!(pwned, json!(0), "the prompt's alert data became markup");
    screenshot(&b, "approval").await;
    let form = b
        .client
        .form(Locator::Css(&format!("#approval-{run} form")))
        .await
        .unwrap();
    form.set_by_name("author", "pat").await.unwrap();
    form.set_by_name("comment", "go ahead").await.unwrap();
    click(
        &b,
        Locator::Css(&format!("#approval-{run} button[value=approve]")),
    )
    .await;
    let v = app
        .wait_for_incident("INC-0001", "the run resumed", |v| {
            run_states(v) == ["succeeded"]
        })
        .await;
    assert_eq!(v["approvals"][0]["decided_by"], "pat");
    visit(&b, &app.url, "/incidents/INC-0001").await;
    let timeline = wait_for_text(&b, "table.timeline", "approved by pat: go ahead").await;
    assert!(timeline.contains("pat"), "{timeline}");
    assert!(
        b.client
            .find(Locator::Css(&format!("#approval-{run}")))
            .await
            .is_err(),
        "a decided approval has no buttons"
    );

    // Deny: Enter in the comment decides nothing; the Deny button does.
    app.post_alert(notification(
        "g-deny",
        &[(
            &json!({"alertname": "Risky", "instance": "db2"}),
            "firing",
            "2026-11-25T08:00:00Z",
        )],
    ))
    .await;
    let v = app
        .wait_for_incident("INC-0002", "the second run waiting", |v| {
            run_states(v) == ["awaiting_approval"]
        })
        .await;
    let run = v["runs"][0]["id"].as_i64().unwrap();
    visit(&b, &app.url, "/incidents/INC-0002").await;
    let form = b
        .client
        .form(Locator::Css(&format!("#approval-{run} form")))
        .await
        .unwrap();
    form.set_by_name("author", "pat").await.unwrap();
    let comment = b
        .client
        .find(Locator::Css(&format!(
            "#approval-{run} input[name=comment]"
        )))
        .await
        .unwrap();
    comment.send_keys("not during peak\u{E007}").await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        app.incident("INC-0002").await["approvals"][0]["state"],
        "pending",
        "Enter in the comment must not approve"
    );
    click(
        &b,
        Locator::Css(&format!("#approval-{run} button[value=deny]")),
    )
    .await;
    let v = app
        .wait_for_incident("INC-0002", "the run denied", |v| {
            run_states(v) == ["failed"]
        })
        .await;
    assert_eq!(v["approvals"][0]["state"], "denied");
    assert_eq!(v["approvals"][0]["comment"], "not during peak");
    visit(&b, &app.url, "/incidents/INC-0002").await;
    let failed = wait_for_text(&b, "#failed", "denied").await;
    assert!(failed.contains("go"), "{failed}");
}
