//! Attacks on runbookd itself (issue #22): a step is a program on runbookd's
//! host, and an alert sender chooses labels and fingerprints. Each test
//! performs the attack against the real app over HTTP, or the real binary,
//! and failed on the code before its fix.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use runbookd::exec::Probe;
use serde_json::{json, Value};

use crate::app::{notification, run_states, runs_ended, TestApp};
use crate::exec::{require, require_root};
use crate::helpers::{open_tempdir, runbook_dir, write_with_mode, Served};

const T0: &str = "2026-12-01T08:00:00Z";

/// A runbook whose one step runs `script` with python3.
fn python(name: &str, extra: &str, script: &str) -> String {
    let mut yaml = format!(
        "name: {name}\nmatchers: [alertname = \"{name}\"]\nsteps:\n  - name: py\n{extra}    run:\n      - python3\n      - -c\n      - |\n"
    );
    for line in script.lines() {
        yaml.push_str("        ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

fn stdout_of(inc: &Value, step: usize) -> String {
    inc["runs"][0]["result"]["steps"][step]["attempts"][0]["stdout"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// What a hostile step does to reach runbookd: finds the listening TCP
/// ports on this host (`/proc/net/tcp*`; runbookd's is among them, the one
/// it tries, given as an argument so that the test does not wait on every
/// other server of the machine), and tries to approve another run's
/// approval as "oncall-lead", to post an alert for a runbook its own alert
/// does not match, and to read another incident's output.
const ACT_ON_RUNBOOKD: &str = r#"
import json, socket, sys
run, approval, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
ports = set()
for f in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        for line in open(f).read().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A":
                ports.add(int(parts[1].split(":")[1], 16))
    except OSError:
        pass
def ask(port, method, path, body=None):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect(("127.0.0.1", port))
        data = json.dumps(body).encode() if body is not None else b""
        s.sendall(("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (method, path, len(data))).encode() + data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out.decode("latin-1")
    except OSError as e:
        return "ERR errno=%s" % e.errno
    finally:
        s.close()
print("listening:", "runbookd's port found" if target in ports else "not found")
for fam, addr in ((socket.AF_INET, "127.0.0.2"), (socket.AF_INET6, "::1")):
    b = socket.socket(fam)
    try:
        b.bind((addr, target))
        b.listen(1)
        print("bind", addr, "BOUND")
    except OSError as e:
        print("bind", addr, "ERR errno=%s" % e.errno)
for port in [target]:
    r = ask(port, "POST", "/api/v1/runs/%s/approval" % run, {"decision": "approve", "approval": int(approval), "author": "oncall-lead"})
    print("port", port, "approve:", r.split("\r\n")[0])
    alert = {"version": "4", "groupKey": "evil", "status": "firing", "receiver": "runbookd", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "", "truncatedAlerts": 0,
             "alerts": [{"status": "firing", "labels": {"alertname": "Canary"}, "annotations": {}, "startsAt": "2026-12-01T08:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": ""}]}
    r = ask(port, "POST", "/webhook", alert)
    print("port", port, "webhook:", r.split("\r\n")[0])
    r = ask(port, "GET", "/api/v1/incidents/INC-0001")
    print("port", port, "read:", r.split("\r\n")[0], "LEAKED" if "s3cr3t-output" in r else "")
"#;

/// Finding 1 (and 2): a step acts as an operator and an alert sender
/// through runbookd's own API and webhook, and reads another run's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cannot_approve_post_alerts_or_read_through_runbookd() {
    let marks = open_tempdir();
    std::fs::set_permissions(marks.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let m = marks.path().display();
    let gated = format!(
        "name: gated\nmatchers: [alertname = \"Gated\"]\nsteps:\n  - name: look\n    run: [echo, s3cr3t-output]\n  - name: ask\n    approve: {{prompt: \"WIPE volumes?\"}}\n  - name: wipe\n    shell: touch {m}/wiped\n    writable_paths: [{m}]\n"
    );
    let canary = format!(
        "name: canary\nmatchers: [alertname = \"Canary\"]\nsteps:\n  - name: sing\n    shell: touch {m}/canary\n    writable_paths: [{m}]\n"
    );
    let mut evil = python("Evil", "", ACT_ON_RUNBOOKD);
    // The run and approval to attack come as labels (a real attacker would
    // enumerate them).
    evil.push_str(
        "      - '{{labels.run}}'\n      - '{{labels.approval}}'\n      - '{{labels.port}}'\n",
    );
    let app = TestApp::start(
        &[("g.yaml", &gated), ("c.yaml", &canary), ("e.yaml", &evil)],
        |_| {},
    )
    .await;
    app.post_alert(notification(
        "g-gated",
        &[(&json!({"alertname": "Gated"}), "firing", T0)],
    ))
    .await;
    let inc = app
        .wait_for_incident("INC-0001", "the run waiting for approval", |v| {
            run_states(v) == ["awaiting_approval"]
        })
        .await;
    let run = inc["runs"][0]["id"].as_i64().unwrap();
    let approval = inc["approvals"][0]["id"].as_i64().unwrap();
    assert_eq!(
        app.post_alert(notification(
            "g-evil",
            &[(
                &json!({"alertname": "Evil", "run": run.to_string(), "approval": approval.to_string(), "port": app.url.rsplit(':').next().unwrap()}),
                "firing",
                T0
            )],
        ))
        .await
        .status(),
        200
    );
    let evil = app
        .wait_for_incident("INC-0002", "the hostile step", runs_ended)
        .await;
    let out = stdout_of(&evil, 0);
    let port = app.url.rsplit(':').next().unwrap();
    assert!(
        out.contains("runbookd's port found"),
        "the step found runbookd's port: {out}"
    );
    // Steps cannot even connect to runbookd's port (EPERM from the guard).
    assert!(
        out.contains(&format!("port {port} approve: ERR errno=1")),
        "{out}"
    );
    assert!(
        !out.contains("LEAKED"),
        "a step read another run's output: {out}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let inc = app.incident("INC-0001").await;
    assert_eq!(
        run_states(&inc),
        ["awaiting_approval"],
        "a step approved a run"
    );
    assert_eq!(inc["approvals"][0]["state"], "pending");
    assert!(!marks.path().join("wiped").exists());
    let (_, list) = app.get("/api/v1/incidents").await;
    assert_eq!(
        list["incidents"].as_array().unwrap().len(),
        2,
        "a step posted an alert: {list}"
    );
    assert!(!marks.path().join("canary").exists());
    let step = &evil["runs"][0]["result"]["steps"][0]["attempts"][0]["sandbox"]["applied"];
    assert!(
        step.as_array()
            .unwrap()
            .iter()
            .any(|l| l == "connect-guard"),
        "{step}"
    );
}

/// Finding 1 where the kernel cannot keep steps from the port (runbookd
/// not root): steps share runbookd's user, and still obtain no credential,
/// so the API and the webhook refuse them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_runbookds_credentials_stay_out_of_its_steps_reach() {
    if !require_root("to start runbookd as nobody")
        || !require(Probe::run().landlock_abi > 0, "Landlock")
    {
        return;
    }
    let work = open_tempdir();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let binary = work.path().join("runbookd");
    std::fs::copy(env!("CARGO_BIN_EXE_runbookd"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A process another test forks while the copy was open for writing
    // holds that descriptor until it execs: the copy is "busy" (ETXTBSY)
    // for those moments. Wait until it runs.
    for _ in 0..50 {
        let ok = Command::new(&binary)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let runbooks = runbook_dir(&[(
        "s.yaml",
        "name: snoop\nmatchers: [alertname = \"Snoop\"]\nsteps:\n  - name: look\n    shell: for f in \"$DATA\"/*.token; do cat \"$f\" >/dev/null 2>&1 && echo READ $f || echo denied $f; done; id -u\n    env: {DATA: '{{labels.data}}'}\n",
    )]);
    std::fs::set_permissions(runbooks.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(runbooks.path()).unwrap() {
        std::fs::set_permissions(e.unwrap().path(), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    let data = work.path().join("data");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--runbooks"])
        .arg(runbooks.path())
        .arg("--data-dir")
        .arg(&data)
        .env("TMPDIR", work.path())
        .stderr(Stdio::null());
    let server = Served::start(cmd);
    // Without the guard the webhook takes only the credential runbookd made.
    let body = notification(
        "g",
        &[(
            &json!({"alertname": "Snoop", "data": data.display().to_string()}),
            "firing",
            T0,
        )],
    );
    let anonymous = reqwest::Client::new();
    let r = anonymous
        .post(format!("{}/webhook", server.url))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let refusal = r.text().await.unwrap();
    assert!(refusal.contains("webhook.token"), "{refusal}");
    let webhook = std::fs::read_to_string(data.join("webhook.token")).unwrap();
    let r = anonymous
        .post(format!("{}/webhook", server.url))
        .header("content-type", "application/json")
        .bearer_auth(webhook.trim())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let client = crate::helpers::operator_client(&data);
    let inc =
        crate::app::wait_for_incident_at(&client, &server.url, "INC-0001", "the step", runs_ended)
            .await;
    let out = stdout_of(&inc, 0);
    assert!(
        out.contains("65534"),
        "the step shares runbookd's user: {out}"
    );
    for f in ["operator.token", "webhook.token"] {
        assert!(
            out.contains(&format!("denied {}", data.join(f).display())),
            "{f} was readable: {out}"
        );
    }
    // Loopback without a credential is nobody.
    let r = anonymous
        .get(format!("{}/api/v1/incidents/INC-0001", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Finding 3: a runbook added by a reload names a secret file; steps must
/// not read it from then on (nor one a changed runbook names instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_hides_the_secret_files_the_new_runbooks_name() {
    if !require(Probe::run().landlock_abi > 0, "Landlock") {
        return;
    }
    let dir = open_tempdir();
    let (s1, s2) = (dir.path().join("s1.key"), dir.path().join("s2.key"));
    // World-readable, so that only Landlock keeps them from steps.
    write_with_mode(&s1, "first-secret\n", 0o644);
    write_with_mode(&s2, "second-secret\n", 0o644);
    let reader = format!(
        "name: reader\nmatchers: [alertname = \"Read\"]\nsteps:\n  - name: cat\n    shell: for f in {} {}; do cat \"$f\" >/dev/null 2>&1 && echo READ $f || echo denied $f; done\n",
        s1.display(),
        s2.display()
    );
    let user = |secret: &Path| {
        format!(
            "name: user\nmatchers: [alertname = \"Use\"]\nsteps:\n  - name: use\n    run: ['true']\n    env: {{KEY: {{secret_file: {}}}}}\n",
            secret.display()
        )
    };
    let app = TestApp::start(&[("reader.yaml", &reader)], |_| {}).await;
    let said = |out: &str, what: &str, f: &Path| out.contains(&format!("{what} {}", f.display()));
    let out = read_as_a_step(&app, 1).await;
    assert!(said(&out, "READ", &s1) && said(&out, "READ", &s2), "{out}");
    // Added: a runbook names s1.
    std::fs::write(app.runbooks.path().join("user.yaml"), user(&s1)).unwrap();
    reload_runbooks(&app).await;
    let out = read_as_a_step(&app, 2).await;
    assert!(said(&out, "denied", &s1), "added: {out}");
    assert!(said(&out, "READ", &s2), "{out}");
    // Changed: it names s2 instead.
    std::fs::write(app.runbooks.path().join("user.yaml"), user(&s2)).unwrap();
    reload_runbooks(&app).await;
    let out = read_as_a_step(&app, 3).await;
    assert!(said(&out, "denied", &s2), "changed: {out}");
    assert!(
        said(&out, "READ", &s1),
        "a file no runbook names is no longer runbookd's secret: {out}"
    );
    // Removed: nothing is hidden beyond the configured paths.
    std::fs::remove_file(app.runbooks.path().join("user.yaml")).unwrap();
    reload_runbooks(&app).await;
    let out = read_as_a_step(&app, 4).await;
    assert!(said(&out, "READ", &s2), "removed: {out}");
}

/// Runs the reader runbook once more (its `n`th incident): what its step
/// could read.
async fn read_as_a_step(app: &TestApp, n: usize) -> String {
    let r = app
        .post_alert(notification(
            &format!("g-{n}"),
            &[(
                &json!({"alertname": "Read", "n": n.to_string()}),
                "firing",
                T0,
            )],
        ))
        .await;
    assert_eq!(r.status(), 200);
    let inc = app
        .wait_for_incident(&format!("INC-{n:04}"), "the reader", runs_ended)
        .await;
    stdout_of(&inc, 0)
}

async fn reload_runbooks(app: &TestApp) {
    let r = app
        .client
        .post(format!("{}/-/reload", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Finding 4: a step lowers another process's limits with `prlimit` (a
/// process of the same user: another run's step, or an unprivileged
/// runbookd).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cannot_change_another_processs_limits() {
    if !require_root("to start a victim as the steps' user") {
        return;
    }
    let mut victim = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "60",
        ])
        .spawn()
        .unwrap();
    let pid = victim.id();
    let limits = || std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let before = limits();
    let rb = "name: lower\nmatchers: [alertname = \"Lower\"]\nsteps:\n  - name: prlimit\n    shell: prlimit --pid \"$ALERT_LABEL_PID\" --nofile=7:7; echo rc=$?; prlimit --nofile=512:512 true && echo own-ok\n";
    let app = TestApp::start(&[("l.yaml", rb)], |_| {}).await;
    app.post_alert(notification(
        "g",
        &[(
            &json!({"alertname": "Lower", "pid": pid.to_string()}),
            "firing",
            T0,
        )],
    ))
    .await;
    let inc = app
        .wait_for_incident("INC-0001", "the step", runs_ended)
        .await;
    let out = stdout_of(&inc, 0);
    let after = limits();
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(out.contains("rc="), "{out}");
    assert!(!out.contains("rc=0"), "prlimit succeeded: {out}");
    assert!(
        out.contains("own-ok"),
        "a step still sets its own limits: {out}"
    );
    assert_eq!(before, after, "the victim's limits changed");
}

/// Finding 5: a stale decision (a page or CLI showing the first prompt)
/// must not approve the run's next prompt, which nobody read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_approval_never_answers_the_next_prompt() {
    let rb = "name: two\nmatchers: [alertname = \"Two\"]\nsteps:\n  - name: drain\n    approve: {prompt: \"Drain node?\"}\n  - name: wipe\n    approve: {prompt: \"WIPE volumes?\"}\n  - name: done\n    run: [echo, wiped]\n";
    let app = TestApp::start(&[("t.yaml", rb)], |_| {}).await;
    app.post_alert(notification(
        "g",
        &[(&json!({"alertname": "Two"}), "firing", T0)],
    ))
    .await;
    let inc = app
        .wait_for_incident("INC-0001", "the first prompt", |v| {
            run_states(v) == ["awaiting_approval"]
        })
        .await;
    let run = inc["runs"][0]["id"].as_i64().unwrap();
    let first = inc["approvals"][0]["id"].as_i64().unwrap();
    assert_eq!(inc["approvals"][0]["prompt"], "Drain node?");
    let path = format!("/api/v1/runs/{run}/approval");
    let decide = |body: Value| {
        let req = app
            .client
            .post(format!("{}{path}", app.url))
            .json(&body)
            .send();
        async move {
            let r = req.await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // A decision that names nothing is refused: it could answer anything.
    let (status, body) = decide(json!({"decision": "approve", "author": "ann"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        decide(json!({"decision": "approve", "approval": first, "author": "ann"})).await;
    assert_eq!(status, 200, "{body}");
    let inc = app
        .wait_for_incident("INC-0001", "the second prompt", |v| {
            v["approvals"].as_array().unwrap().len() == 2 && run_states(v) == ["awaiting_approval"]
        })
        .await;
    assert_eq!(inc["approvals"][1]["prompt"], "WIPE volumes?");
    // The same click again (a double submit, a stale page): 409, and the
    // new prompt still waits.
    let (status, body) =
        decide(json!({"decision": "approve", "approval": first, "author": "ann"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("WIPE volumes?"),
        "the refusal shows what it now asks: {body}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let inc = app.incident("INC-0001").await;
    assert_eq!(inc["approvals"][1]["state"], "pending");
    assert_eq!(run_states(&inc), ["awaiting_approval"]);
}

/// Finding 6: a decoy alert claims the real alert's fingerprint, to use up
/// its cooldown or be absorbed into its run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_fingerprint_cannot_absorb_or_silence_the_real_alert() {
    let rb = "name: disk\nmatchers: [alertname = \"DiskFull\"]\ncooldown: 1h\nsteps:\n  - name: clean\n    run: [echo, 'cleaning {{labels.instance}}']\n";
    let app = TestApp::start(&[("d.yaml", rb)], |_| {}).await;
    let real = json!({"alertname": "DiskFull", "instance": "db-1"});
    let real_fp = runbookd::alert::fingerprint(&serde_json::from_value(real.clone()).unwrap());
    let payload = |group: &str, labels: &Value, fingerprint: &str| {
        serde_json::to_vec(&json!({
            "receiver": "runbookd", "status": "firing", "groupKey": group, "version": "4",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "", "truncatedAlerts": 0,
            "alerts": [{"status": "firing", "labels": labels, "annotations": {}, "startsAt": T0,
                        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fingerprint}],
        }))
        .unwrap()
    };
    let decoy = json!({"alertname": "DiskFull", "instance": "decoy"});
    assert_eq!(
        app.post_alert(payload("g-decoy", &decoy, &real_fp))
            .await
            .status(),
        200
    );
    app.wait_for_incident("INC-0001", "the decoy's run", runs_ended)
        .await;
    assert_eq!(
        app.post_alert(payload("g-real", &real, &real_fp))
            .await
            .status(),
        200
    );
    let inc = app
        .wait_for_incident("INC-0002", "the real alert's run", runs_ended)
        .await;
    assert_eq!(run_states(&inc), ["succeeded"], "{inc:#}");
    assert_eq!(stdout_of(&inc, 0), "cleaning db-1\n");
    assert_eq!(inc["runs"][0]["fingerprint"], real_fp.as_str());
}

/// Finding 9: System V shared memory and message queues a step makes stay
/// behind (memory outside its limits, a channel to later runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steps_ipc_objects_go_with_it() {
    if !require_root("IPC namespaces") {
        return;
    }
    let segments = || {
        let out = Command::new("ipcs").args(["-m", "-b"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == "77777"))
            .count()
    };
    let before = segments();
    let rb = "name: ipc\nmatchers: [alertname = \"Ipc\"]\nsteps:\n  - name: leave\n    shell: ipcmk -M 77777 && ipcmk -Q && ipcs -m -b | grep -c 77777\n  - name: find\n    shell: ipcs -m -b | grep -c 77777 || echo none\n";
    let app = TestApp::start(&[("i.yaml", rb)], |_| {}).await;
    app.post_alert(notification(
        "g",
        &[(&json!({"alertname": "Ipc"}), "firing", T0)],
    ))
    .await;
    let inc = app
        .wait_for_incident("INC-0001", "the steps", runs_ended)
        .await;
    let made = stdout_of(&inc, 0);
    assert!(
        made.contains("Shared memory id"),
        "the step made one: {made}"
    );
    assert_eq!(stdout_of(&inc, 1), "0\nnone\n", "the next step saw it");
    assert_eq!(segments(), before, "the segment outlived its step");
}

/// Finding 11: `network: none` still reached host services through Unix
/// sockets (PostgreSQL's answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_network_means_no_unix_sockets_to_the_host() {
    if !require(Probe::run().netns, "network namespaces (root)") {
        return;
    }
    let dir = open_tempdir();
    let sock = dir.path().join("service.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = format!(
        "import socket\ntry:\n    s = socket.socket(socket.AF_UNIX)\n    s.connect('{}')\n    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e.errno)\n",
        sock.display()
    );
    let rb = python("Iso", "    network: none\n", &script);
    let app = TestApp::start(&[("n.yaml", &rb)], |_| {}).await;
    app.post_alert(notification(
        "g",
        &[(&json!({"alertname": "Iso"}), "firing", T0)],
    ))
    .await;
    let inc = app
        .wait_for_incident("INC-0001", "the step", runs_ended)
        .await;
    let out = stdout_of(&inc, 0);
    assert!(out.starts_with("refused"), "{out}");
    assert!(
        listener.accept().is_err(),
        "the host's service got a connection"
    );
}

/// Finding 13: scratch had no disk limit, so a step could fill the disk
/// that holds the store. As root it is a tmpfs of `sandbox.scratch_size`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cannot_fill_the_disk_through_its_scratch() {
    if !require_root("to mount the scratch tmpfs") {
        return;
    }
    let rb = "name: fill\nmatchers: [alertname = \"Fill\"]\nsteps:\n  - name: dd\n    shell: dd if=/dev/zero of=\"$TMPDIR/fill\" bs=1M count=64 2>&1 | head -1; stat -f -c %T \"$TMPDIR\"\n";
    let app = TestApp::start(&[("f.yaml", rb)], |c| {
        c.sandbox.scratch_size = Some(16 << 20);
    })
    .await;
    app.post_alert(notification(
        "g",
        &[(&json!({"alertname": "Fill"}), "firing", T0)],
    ))
    .await;
    let inc = app
        .wait_for_incident("INC-0001", "the step", runs_ended)
        .await;
    let out = stdout_of(&inc, 0);
    assert!(out.contains("No space left on device"), "{out}");
    assert!(out.contains("tmpfs"), "{out}");
    let applied = &inc["runs"][0]["result"]["steps"][0]["attempts"][0]["sandbox"]["applied"];
    assert!(
        applied
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == &json!(format!("scratch-size:{}", 16 << 20))),
        "{applied}"
    );
}
