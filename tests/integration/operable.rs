//! Operating runbookd (issue #10): what an on-call engineer reads in the
//! logs, what readiness means, what the CLI does in a pipeline.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::app::{notification, run_states, runs_ended};
use crate::helpers::{runbook_dir, Served};

const T0: &str = "2026-11-24T08:00:00Z";

const FAILING: &str =
    "name: flaky\nmatchers: [alertname = \"Flaky\"]\nsteps:\n  - name: probe\n    run: ['false']\n";

/// Starts `runbookd [global] serve` with stderr captured.
fn serve(global: &[&str], runbooks: &std::path::Path, data: &std::path::Path) -> Served {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbookd"));
    cmd.args(global)
        .args(["serve", "--listen", "127.0.0.1:0", "--runbooks"])
        .arg(runbooks)
        .arg("--data-dir")
        .arg(data)
        .env_remove("RUNBOOKD_LOG")
        .stderr(Stdio::piped());
    Served::start(cmd)
}

/// Posts a failing run and a bad payload, waits for the run, stops the
/// server, and returns what it logged.
async fn activity(server: &mut Served, data: &std::path::Path) -> String {
    let url = server.url.clone();
    let client = crate::helpers::operator_client(data);
    let post = |body: Vec<u8>| {
        client
            .post(format!("{url}/webhook"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post(notification(
        "g",
        &[(&json!({"alertname": "Flaky"}), "firing", T0)],
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = post(b"{\"version\": \"4\"}".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    // A payload that tries to forge a log line through the refusal reason.
    let r = post(
        br#"{"version": "4", "status": "x\nINFO forged: webhook accepted", "receiver": "r", "groupKey": "g", "alerts": []}"#
            .to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    crate::app::wait_for_incident_at(&client, &url, "INC-0001", "the run to fail", |v| {
        run_states(v) == ["failed"]
    })
    .await;
    nix::sys::signal::kill(server.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(server.child.wait().unwrap().success());
    let mut logs = String::new();
    server
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_tells_what_was_received_what_ran_and_what_failed() {
    let runbooks = runbook_dir(&[("f.yaml", FAILING)]);
    let data = tempfile::tempdir().unwrap();
    let mut server = serve(&[], runbooks.path(), data.path());
    let first = server.first_line.clone();
    assert!(
        first.starts_with("runbookd listening on http://127.0.0.1:"),
        "{first}"
    );
    let logs = activity(&mut server, data.path()).await;
    assert!(
        !logs.contains('\u{1b}'),
        "colour codes in a log that is not a terminal:\n{logs}"
    );
    let line = |needle: &str, also: &[&str]| {
        logs.lines()
            .find(|l| l.contains(needle) && also.iter().all(|a| l.contains(a)))
            .unwrap_or_else(|| panic!("no `{needle}` line with {also:?} in:\n{logs}"))
            .to_owned()
    };
    assert!(
        !logs.lines().any(|l| l.starts_with("INFO forged")),
        "a payload forged a log line:\n{logs}"
    );
    let accepted = line(
        "webhook accepted",
        &["incident=\"INC-0001\"", "queued_runs=1", "alerts=1"],
    );
    assert!(accepted.contains("INFO"), "{accepted}");
    let refused = line("webhook refused", &["status=400"]);
    assert!(
        refused.contains("WARN") && refused.contains("reason="),
        "{refused}"
    );
    line("run started", &["incident=INC-0001", "runbook=flaky"]);
    let failed = line("step failed", &["incident=INC-0001", "step=probe"]);
    assert!(
        failed.contains("WARN") && failed.contains("exit_code"),
        "{failed}"
    );
    let ended = line("run ended", &["incident=INC-0001", "state=failed"]);
    assert!(ended.contains("WARN"), "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_stay_json_including_the_listening_line() {
    let runbooks = runbook_dir(&[("f.yaml", FAILING)]);
    let data = tempfile::tempdir().unwrap();
    let mut server = serve(&["--log-format", "json"], runbooks.path(), data.path());
    let first = server.first_line.clone();
    let announced: Value = serde_json::from_str(&first)
        .unwrap_or_else(|e| panic!("the listening line is not JSON ({e}): {first}"));
    assert_eq!(announced["fields"]["url"], server.url.as_str());
    let logs = activity(&mut server, data.path()).await;
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |msg: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == msg)
            .unwrap_or_else(|| panic!("no `{msg}` in {logs}"))
    };
    assert_eq!(find("webhook accepted")["fields"]["incident"], "INC-0001");
    assert_eq!(find("step failed")["fields"]["step"], "probe");
    assert_eq!(find("run ended")["fields"]["state"], "failed");
}

/// A store runbookd cannot write is a startup error naming the file and the
/// permission, never a server that answers ready and then 503 forever.
#[test]
fn a_store_it_cannot_write_stops_the_start_with_the_path() {
    use std::os::unix::fs::PermissionsExt;
    if !crate::exec::require_root("to start runbookd as nobody") {
        return;
    }
    let runbooks = runbook_dir(&[("f.yaml", FAILING)]);
    std::fs::set_permissions(runbooks.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = crate::helpers::open_tempdir();
    let data = work.path().join("data");
    // A store made by root (say by an earlier run under sudo).
    crate::helpers::mkdir_with_mode(&data, 0o755);
    crate::helpers::write_with_mode(&data.join("runbookd.db"), "", 0o644);
    // A copy nobody can execute wherever the checkout lives.
    let binary = work.path().join("runbookd");
    std::fs::copy(env!("CARGO_BIN_EXE_runbookd"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--runbooks"])
        .arg(runbooks.path())
        .arg("--data-dir")
        .arg(&data)
        .env("TMPDIR", work.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {err}");
    assert!(out.stdout.is_empty(), "it announced an address: {err}");
    assert!(err.contains(data.to_str().unwrap()), "no path in: {err}");
    assert!(
        err.to_lowercase().contains("permission"),
        "no cause in: {err}"
    );
}

/// Durations in Prometheus's syntax only, with errors that say what to write.
#[test]
fn durations_outside_prometheus_syntax_are_errors_at_their_place() {
    let rb = "name: d\nmatchers: [alertname = \"D\"]\ntimeout: 5M\ncooldown: 1y\nsteps:\n  - name: a\n    run: ['true']\n    timeout: 30\n  - name: b\n    run: ['true']\n    retry_delay: 2 hours\n  - name: c\n    run: ['true']\n    timeout: 1h30m\n";
    let dir = runbook_dir(&[("d.yaml", rb)]);
    let out = crate::helpers::runbookd(&["check", dir.path().to_str().unwrap()]);
    let err = crate::helpers::stdout(&out) + &crate::helpers::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for (line, what) in [
        (3, "`M` would be months"),
        (4, "years"),
        (8, "seconds would be `30s`"),
        (11, "unexpected ` `"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("d.yaml:{line}:")) && l.contains(what)),
            "no `{what}` at line {line}:\n{err}"
        );
    }
    assert!(!err.contains("d.yaml:14:"), "1h30m is valid:\n{err}");
    assert!(err.contains("4 error(s)"), "{err}");
}

/// Runs `runbookd ARGS`, reads one line of its output and closes the pipe,
/// as `| head -1` does; returns the exit code and standard error.
fn first_line_then_close(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    while line.trim().is_empty() {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
    }
    drop(reader);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        line,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::fs::PermissionsExt;
    let marks = tempfile::tempdir().unwrap();
    std::fs::set_permissions(marks.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let rb = format!(
        "name: chatty\nmatchers: [alertname = \"Chatty\"]\nsteps:\n  - name: talk\n    shell: seq 1 200000\n  - name: finish\n    writable_paths: [{0}]\n    shell: echo done > {0}/finished\n",
        marks.path().display()
    );
    let runbooks = runbook_dir(&[("c.yaml", &rb)]);
    let alert = crate::helpers::write_alert(runbooks.path(), &json!({"alertname": "Chatty"}));
    let (code, first, err) = first_line_then_close(&[
        "run",
        "--alert",
        alert.to_str().unwrap(),
        "--runbooks",
        runbooks.path().to_str().unwrap(),
    ]);
    assert!(first.contains("runbook chatty"), "{first}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        marks.path().join("finished").exists(),
        "the run stopped with the transcript"
    );

    let app = crate::app::TestApp::start(&[("c.yaml", &rb)], |_| {}).await;
    for i in 0..40 {
        app.post_alert(notification(
            &format!("g{i}"),
            &[(
                &json!({"alertname": "Chatty", "i": i.to_string()}),
                "firing",
                T0,
            )],
        ))
        .await;
    }
    let data = app.data.path().join("store");
    for args in [
        vec!["incidents", "list", "--data-dir", data.to_str().unwrap()],
        vec![
            "incidents",
            "show",
            "INC-0001",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        vec![
            "postmortem",
            "INC-0001",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    ] {
        let (code, first, err) = first_line_then_close(&args);
        assert!(!first.is_empty(), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} complained: {err}");
        assert!(matches!(code, Some(0 | 141)), "{args:?}: {code:?}");
    }
}

/// `check` takes files and directories, reports every error of a file with
/// an unknown field, and recognises other template languages and `==`.
#[test]
fn check_takes_files_reports_past_unknown_fields_and_hints() {
    let bad = "name: a\nmatchers: [alertname == \"X\"]\nbogus: 1\nsteps:\n  - name: s\n    run: [echo, \"{{ labels.x | upper }}\"]\n    timout: 5s\n  - name: t\n    run: [echo, \"{{ .Labels.x }}\"]\n    timeout: 5x\n";
    let dir = runbook_dir(&[("bad.yaml", bad)]);
    let file = dir.path().join("bad.yaml");
    let out = crate::helpers::runbookd(&["check", file.to_str().unwrap()]);
    let err = crate::helpers::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for (line, what) in [
        (2, "did you mean `=`"),
        (3, "unknown field `bogus`"),
        (6, "`|` filters are Jinja syntax"),
        (7, "unknown field `timout`"),
        (9, "Go template syntax"),
        (10, "unknown unit `x`"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("bad.yaml:{line}:")) && l.contains(what)),
            "no `{what}` at line {line}:\n{err}"
        );
    }
    assert!(err.contains("6 error(s) in 1 file(s)"), "{err}");
    // A good file among directories and files.
    let root = crate::helpers::root();
    let out = crate::helpers::runbookd(&[
        "check",
        root.join("runbooks/disk-full.yaml").to_str().unwrap(),
        root.join("runbooks").to_str().unwrap(),
    ]);
    assert!(
        out.status.code() == Some(1),
        "the same runbook twice is a duplicate"
    );
    let out = crate::helpers::runbookd(&[
        "check",
        root.join("runbooks/disk-full.yaml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", crate::helpers::stderr(&out));
    assert!(crate::helpers::stdout(&out).contains("1 runbook(s)"));
}

/// The Docker image's HEALTHCHECK command, run against the real server: it
/// passes while the store is writable, whatever Host names are allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_healthcheck_passes_against_a_ready_server() {
    let dockerfile = std::fs::read_to_string(crate::helpers::root().join("Dockerfile")).unwrap();
    let check = dockerfile
        .split("HEALTHCHECK")
        .nth(1)
        .and_then(|rest| rest.split("CMD ").nth(1))
        .map(|cmd| cmd.lines().next().unwrap().trim().to_owned())
        .expect("the Dockerfile has a HEALTHCHECK with a CMD");
    let ignore = std::fs::read_to_string(crate::helpers::root().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "data"),
        "data/ is sent to the build"
    );
    let mut app = crate::app::TestApp::start(&[("f.yaml", FAILING)], |c| {
        c.http.allowed_hosts = Some(vec!["runbookd.example.com".into()]);
    })
    .await;
    let port = app.url.rsplit(':').next().unwrap().to_owned();
    // A name not listed is refused; an address (a pod scraped by its IP) is not a name.
    for (host, code) in [
        (format!("other.example:{port}"), 421),
        (format!("10.244.1.7:{port}"), 200),
    ] {
        let r = app
            .client
            .get(format!("{}/api/v1/incidents", app.url))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code, "{host}");
    }
    let run = |cmd: &str| {
        Command::new("sh")
            .args(["-c", &cmd.replace("9095", &port)])
            .output()
            .unwrap()
    };
    let ok = run(&check);
    assert!(
        ok.status.success(),
        "{check}: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    app.stop().await;
    let down = run(&check);
    assert!(
        !down.status.success(),
        "the check passed with the server gone"
    );
}

/// `/metrics` passes `promtool check metrics`, says what it is, labels runs
/// and steps by runbook, and tells whether the last reload worked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_label_runs_by_runbook() {
    let has_promtool = Command::new("promtool").arg("--version").output().is_ok();
    if !crate::exec::require(has_promtool, "promtool (Debian package prometheus)") {
        return;
    }
    let app = crate::app::TestApp::start(&[("f.yaml", FAILING)], |_| {}).await;
    app.post_alert(notification(
        "g",
        &[(&json!({"alertname": "Flaky"}), "firing", T0)],
    ))
    .await;
    app.wait_for_incident("INC-0001", "the run", |v| run_states(v) == ["failed"])
        .await;
    std::fs::write(app.runbooks.path().join("broken.yaml"), "steps: []\n").unwrap();
    let r = app
        .client
        .post(format!("{}/-/reload", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let complaints = String::from_utf8_lossy(&checked.stdout).into_owned()
        + &String::from_utf8_lossy(&checked.stderr);
    assert!(
        checked.status.success() && complaints.trim().is_empty(),
        "promtool: {complaints}\n{text}"
    );
    for needle in [
        "runbookd_runs_total{runbook=\"flaky\",outcome=\"failed\"} 1",
        "runbookd_steps_total{runbook=\"flaky\",outcome=\"failed\"} 1",
        "runbookd_config_last_reload_successful 0",
        // #23, item 15: what running runbookd needs.
        "runbookd_alert_to_first_step_seconds_count 1",
        "runbookd_outbox_backlog 0",
        "runbookd_outbox_dead 0",
        "runbookd_fenced_runs_total 0",
        "runbookd_takeovers_total 0",
        "runbookd_leader 0",
        "runbookd_webhooks_total{outcome=\"accepted\"} 1",
        "# TYPE process_cpu_seconds_total counter",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
        &format!(
            "runbookd_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(text.contains(needle), "no `{needle}` in:\n{text}");
    }
    let rss: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no resident memory in:\n{text}"));
    assert!(rss > 1e6, "{rss}");
    // What Prometheus asks for, it gets, labelled as such.
    let r = app
        .client
        .get(format!("{}/metrics", app.url))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));
}

/// MTTR is measured to when the alerts ended (their endsAt), not to when
/// Alertmanager's resolved notification arrived; both are shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mttr_counts_to_when_the_alerts_ended_not_to_the_notification() {
    let ok = "name: ok\nmatchers: [alertname = \"Ok\"]\nsteps:\n  - name: a\n    run: ['true']\n";
    let app = crate::app::TestApp::start(&[("ok.yaml", ok)], |_| {}).await;
    let labels = json!({"alertname": "Ok"});
    app.post_alert(notification("g", &[(&labels, "firing", T0)]))
        .await;
    let inc = app
        .wait_for_incident("INC-0001", "the run", |v| run_states(v) == ["succeeded"])
        .await;
    let opened = inc["created_at"].as_str().unwrap().to_owned();
    // Alertmanager reports the resolution a while after the alert ended.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut resolved: Value =
        serde_json::from_slice(&notification("g", &[(&labels, "resolved", T0)])).unwrap();
    resolved["alerts"][0]["endsAt"] = json!(opened);
    assert_eq!(
        app.post_alert(serde_json::to_vec(&resolved).unwrap())
            .await
            .status(),
        200
    );
    let inc = app.incident("INC-0001").await;
    assert_eq!(inc["status"], "resolved");
    assert_eq!(inc["alerts_ended_at"], opened.as_str());
    assert_eq!(inc["recovered_seconds"], 0);
    let (_, stats) = app.get("/api/v1/stats").await;
    let mttr = stats["mttr_seconds"].as_f64().unwrap();
    let notified = stats["mttr_notified_seconds"].as_f64().unwrap();
    assert!(mttr < 0.5, "MTTR {mttr} s includes the notification delay");
    assert!(notified >= 1.4, "{stats}");
    let (_, page) = app.get("/incidents/INC-0001").await;
    let page = page.as_str().unwrap().to_owned();
    assert!(page.contains("alerts ended after"), "{page}");
    // An endsAt far in the future cannot make an incident last for ages.
    let other = json!({"alertname": "Ok", "instance": "b"});
    app.post_alert(notification("g2", &[(&other, "firing", T0)]))
        .await;
    app.wait_for_incident("INC-0002", "the second run", |v| {
        run_states(v) == ["succeeded"]
    })
    .await;
    let mut late: Value =
        serde_json::from_slice(&notification("g2", &[(&other, "resolved", T0)])).unwrap();
    late["alerts"][0]["endsAt"] = json!("9999-12-31T23:59:59Z");
    app.post_alert(serde_json::to_vec(&late).unwrap()).await;
    let inc = app.incident("INC-0002").await;
    assert!(inc["recovered_seconds"].as_i64().unwrap() < 60, "{inc:#}");
    assert!(page.contains("resolved notification after"), "{page}");
}

/// `incidents show` prints what the JSON has, readably: each step's command,
/// outcome and last output lines, the open checklist; `--status open` works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_show_prints_steps_output_and_checklist() {
    let rb = "name: disk\nmatchers: [alertname = \"Disk\"]\nsteps:\n  - name: look\n    manual: Check the volume graph for the last hour\n  - name: usage\n    shell: |\n      echo filesystem-usage-97\n      echo cannot-clean >&2\n      exit 3\n";
    let app = crate::app::TestApp::start(&[("d.yaml", rb)], |_| {}).await;
    app.post_alert(notification(
        "g",
        &[(&json!({"alertname": "Disk"}), "firing", T0)],
    ))
    .await;
    app.wait_for_incident("INC-0001", "the run", |v| run_states(v) == ["failed"])
        .await;
    let data = app.data.path().join("store");
    let data = data.to_str().unwrap();
    let out = crate::helpers::runbookd(&["incidents", "show", "INC-0001", "--data-dir", data]);
    let text = crate::helpers::stdout(&out);
    assert!(out.status.success(), "{}", crate::helpers::stderr(&out));
    for needle in [
        "- usage failed (exit status 3)",
        "$ echo filesystem-usage-97",
        "| filesystem-usage-97",
        "! cannot-clean",
        "checklist (`runbookd tick INC-0001 STEP` when done):",
        "[ ] Check the volume graph for the last hour",
    ] {
        assert!(text.contains(needle), "no `{needle}` in:\n{text}");
    }
    let open =
        crate::helpers::runbookd(&["incidents", "list", "--status", "open", "--data-dir", data]);
    assert!(open.status.success(), "{}", crate::helpers::stderr(&open));
    assert!(crate::helpers::stdout(&open).contains("INC-0001"));
    let resolved = crate::helpers::runbookd(&[
        "incidents",
        "list",
        "--status",
        "resolved",
        "--data-dir",
        data,
    ]);
    assert!(!crate::helpers::stdout(&resolved).contains("INC-0001"));
    let bad = crate::helpers::runbookd(&[
        "incidents",
        "list",
        "--status",
        "closed",
        "--data-dir",
        data,
    ]);
    assert!(crate::helpers::stderr(&bad).contains("expected open, investigating"));
    let (code, list) = app.get("/api/v1/incidents?status=open").await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["total"], 1);
}

/// The README, followed as a newcomer would: its curl commands against the
/// server started with the defaults it describes, its runbook example
/// through `check`, its receiver snippet through `amtool check-config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works_as_written() {
    let root = crate::helpers::root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks: Vec<(&str, String)> = readme
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|b| {
            let (lang, body) = b.split_once('\n').unwrap_or((b, ""));
            (lang.trim(), body.to_owned())
        })
        .collect();
    let data = tempfile::tempdir().unwrap();
    // `runbookd serve` from the repository root, as the README runs it; only
    // the port (any free one) and the store's place differ.
    let mut child = Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .arg("serve")
        .current_dir(&root)
        .env("RUNBOOKD_LISTEN", "127.0.0.1:0")
        .env("RUNBOOKD_DATA_DIR", data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    let url = first
        .trim()
        .strip_prefix("runbookd listening on ")
        .unwrap()
        .to_owned();
    let curls: Vec<String> = blocks
        .iter()
        .find(|(lang, body)| *lang == "sh" && body.contains("curl"))
        .expect("the README has curl commands")
        .1
        .lines()
        .filter(|l| l.starts_with("curl"))
        .map(|l| {
            l.split(" #")
                .next()
                .unwrap()
                .replace("http://127.0.0.1:9095", &url)
                .replace("data/", &format!("{}/", data.path().display()))
        })
        .collect();
    assert_eq!(curls.len(), 2, "{curls:?}");
    let sh = |cmd: &str| {
        let out = Command::new("sh")
            .args(["-c", cmd])
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ack: Value = serde_json::from_str(&sh(&curls[0])).unwrap();
    assert_eq!(ack["incident"], "INC-0001", "{ack}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let inc = loop {
        let v: Value = serde_json::from_str(&sh(&curls[1])).unwrap();
        if v["runs"].is_array() && runs_ended(&v) {
            break v;
        }
        assert!(Instant::now() < deadline, "the runs never ended: {v:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let commands: Vec<String> = inc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["result"]["steps"].as_array().cloned().unwrap_or_default())
        .map(|s| {
            s["plan"]["script"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| s["plan"]["argv"][0].as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    assert!(commands.iter().any(|c| c == "df"), "{commands:?}");
    assert!(
        commands.iter().any(|c| c.starts_with("du ")
            || c.contains("\ndu ")
            || c.contains("| du ")
            || c.contains(" du ")),
        "{commands:?}"
    );
    assert_eq!(inc["runbooks"], json!(["disk-full"]), "{inc:#}");
    // The example tells the truth: as `nobody` (runbookd is root here) du
    // cannot read everything under /, and the step says so.
    if nix::unistd::geteuid().is_root() {
        let du = inc["runs"][0]["result"]["steps"][2]["attempts"][0]["stdout"]
            .as_str()
            .unwrap_or_default();
        assert!(
            du.contains("could not be read as nobody: these sizes are lower bounds"),
            "{du}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();

    // The runbook example passes check, without warnings.
    let example = &blocks
        .iter()
        .find(|(lang, body)| *lang == "yaml" && body.contains("steps:"))
        .unwrap()
        .1;
    let dir = runbook_dir(&[("example.yaml", example)]);
    let out = crate::helpers::runbookd(&["check", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", crate::helpers::stderr(&out));
    assert!(
        !crate::helpers::stderr(&out).contains("warning"),
        "{}",
        crate::helpers::stderr(&out)
    );

    // The receiver snippet is a valid Alertmanager configuration.
    let has_amtool = Command::new("amtool").arg("--version").output().is_ok();
    if crate::exec::require(
        has_amtool,
        "amtool (Debian package prometheus-alertmanager)",
    ) {
        let receiver = &blocks
            .iter()
            .find(|(lang, body)| *lang == "yaml" && body.contains("webhook_configs"))
            .unwrap()
            .1;
        let file = dir.path().join("alertmanager.yml");
        std::fs::write(&file, receiver).unwrap();
        let out = Command::new("amtool")
            .args(["check-config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Steps drop to `nobody`; a runbook may name its own `run_as`, and hand a
/// root-only credential file to its steps explicitly (`credential_file`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbooks_choose_their_user_and_get_credential_files_explicitly() {
    if !crate::exec::require_root("steps switch users") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    crate::helpers::write_with_mode(
        &kubeconfig,
        "apiVersion: v1\nclusters: [secret-cluster-7c1]\n",
        0o600,
    );
    let k = kubeconfig.display();
    let ops = format!(
        "name: ops\nmatchers: [alertname = \"Ops\"]\nrun_as: daemon\nenv:\n  KUBECONFIG: {{credential_file: {k}}}\nsteps:\n  - name: who\n    shell: |\n      id -un\n      grep -c clusters \"$KUBECONFIG\"\n      cat {k} >/dev/null 2>&1 || echo original-unreadable\n      grep clusters \"$KUBECONFIG\"\n"
    );
    let rooted = "name: rooted\nmatchers: [alertname = \"Rooted\"]\nrun_as: root\nsteps:\n  - name: who\n    run: [id, -un]\n";
    let default = "name: plain\nmatchers: [alertname = \"Plain\"]\nsteps:\n  - name: who\n    run: [id, -un]\n";
    let app = crate::app::TestApp::start(
        &[
            ("ops.yaml", &ops),
            ("rooted.yaml", rooted),
            ("plain.yaml", default),
        ],
        |_| {},
    )
    .await;
    for (i, name) in ["Ops", "Rooted", "Plain"].iter().enumerate() {
        app.post_alert(notification(
            &format!("g{i}"),
            &[(&json!({"alertname": name}), "firing", T0)],
        ))
        .await;
    }
    let done = |v: &Value| runs_ended(v);
    let ops = app.wait_for_incident("INC-0001", "ops", done).await;
    let out = ops["runs"][0]["result"]["steps"][0]["attempts"][0]["stdout"]
        .as_str()
        .unwrap()
        .to_owned();
    // The copy's content, printed, is redacted like a secret.
    assert_eq!(
        out, "daemon\n1\noriginal-unreadable\n[redacted]\n",
        "{ops:#}"
    );
    let plan = &ops["runs"][0]["result"]["steps"][0]["plan"];
    assert_eq!(
        plan["env"]["KUBECONFIG"],
        format!("[private copy of {k}]"),
        "{plan}"
    );
    assert!(!ops.to_string().contains("secret-cluster-7c1"));
    let rooted = app.wait_for_incident("INC-0002", "rooted", done).await;
    let outcome = &rooted["runs"][0]["result"]["steps"][0]["outcome"];
    assert_eq!(outcome["status"], "spawn_failed", "{rooted:#}");
    assert!(outcome["reason"]
        .as_str()
        .unwrap()
        .contains("allow_root_steps"));
    let unnamed = app.wait_for_incident("INC-0003", "plain", done).await;
    assert_eq!(
        unnamed["runs"][0]["result"]["steps"][0]["attempts"][0]["stdout"],
        "nobody\n"
    );
}

/// A live-output client resuming after what it saw of one run still gets
/// all of the next run's output (ids of finished runs' chunks are not reused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_live_output_never_skips_the_next_run() {
    let rb = "name: talk\nmatchers: [alertname = \"Talk\"]\nsteps:\n  - name: say\n    shell: |\n      for i in 1 2 3 4; do echo \"$ALERT_LABEL_WHO-$i\"; sleep 0.3; done\n";
    let app = crate::app::TestApp::start(&[("t.yaml", rb)], |_| {}).await;
    // Two alerts of one group: one incident, two runs, one after the other.
    app.post_alert(notification(
        "g",
        &[
            (&json!({"alertname": "Talk", "who": "first"}), "firing", T0),
            (&json!({"alertname": "Talk", "who": "second"}), "firing", T0),
        ],
    ))
    .await;
    let seen = app
        .wait_for_incident("INC-0001", "the first run's output", |v| {
            v["runs"][0]["live_output"]
                .as_array()
                .is_some_and(|o| o.len() >= 2)
        })
        .await;
    let cursor = seen["runs"][0]["live_output"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["cursor"].as_i64())
        .max()
        .unwrap();
    app.wait_for_incident("INC-0001", "the first run to end", |v| {
        run_states(v).first().is_some_and(|s| s == "succeeded")
    })
    .await;
    let stream = app
        .client
        .get(format!(
            "{}/incidents/INC-0001/events?after={cursor}",
            app.url
        ))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for i in 1..=4 {
        assert!(
            stream.contains(&format!("second-{i}")),
            "second-{i} was skipped after cursor {cursor}:\n{stream}"
        );
    }
    assert!(!stream.contains("first-1"), "{stream}");
}

/// Unmatched alerts are listed with their labels shortened, whatever size
/// a sender gives them; relative secret and credential paths are errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_alerts_are_listed_small_and_file_paths_must_be_absolute() {
    let app = crate::app::TestApp::start(&[("f.yaml", FAILING)], |_| {}).await;
    let huge = "x".repeat(100_000);
    app.post_alert(notification(
        "u",
        &[(&json!({"alertname": "Nobody", "blob": huge}), "firing", T0)],
    ))
    .await;
    let (code, list) = app.get("/api/v1/unmatched").await;
    assert_eq!(code, 200, "{list}");
    let blob = list["alerts"][0]["labels"]["blob"].as_str().unwrap();
    assert!(
        blob.chars().count() <= 257 && blob.ends_with('…'),
        "{}",
        blob.len()
    );
    assert_eq!(list["alerts"][0]["alertname"], "Nobody");

    let rb = "name: rel\nmatchers: [alertname = \"R\"]\nenv:\n  A: {secret_file: token}\n  B: {credential_file: ./kubeconfig}\nsteps:\n  - name: a\n    run: ['true']\n";
    let dir = runbook_dir(&[("r.yaml", rb)]);
    let out = crate::helpers::runbookd(&["check", dir.path().to_str().unwrap()]);
    let err = crate::helpers::stderr(&out);
    for (line, file) in [(4, "token"), (5, "./kubeconfig")] {
        assert!(
            err.contains(&format!("r.yaml:{line}:"))
                && err.contains(&format!("the file `{file}` must be an absolute path")),
            "{err}"
        );
    }
}
