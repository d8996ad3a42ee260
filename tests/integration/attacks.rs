//! Attacks: a hostile alert sender, a hostile step and a careless operator
//! doing exactly what issue #9 found, against the real binary or the real app
//! over HTTP. Each test failed on the code before the fix.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runbookd::exec::Probe;
use serde_json::{json, Value};

use crate::app::{notification, run_states, runs_ended, wait_for_incident_at, TestApp};
use crate::exec::{require, require_root, run_yaml, survivors};
use crate::helpers::{
    mkdir_with_mode, open_tempdir, runbook_dir, stderr, stdout, write_alert, write_with_mode,
    Served,
};

const T0: &str = "2026-11-24T08:00:00Z";

/// The header of the operator credential a server made in `data`.
fn operator_headers(data: &Path) -> reqwest::header::HeaderMap {
    let token = std::fs::read_to_string(data.join("operator.token")).unwrap();
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", token.trim()).parse().unwrap(),
    );
    h
}

/// `runbookd serve ARGS` from `binary`, under a descriptor limit when given.
fn serve(binary: &Path, args: &[&str], nofile: Option<u64>) -> Served {
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::null());
    Served::start(cmd)
}

async fn post_json(client: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::Response {
    client
        .post(format!("{url}/webhook"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Polls INC-0001 of a separate server until `done` holds.
async fn wait_for(
    client: &reqwest::Client,
    url: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    wait_for_incident_at(client, url, "INC-0001", what, done).await
}

/// A runbook whose one step runs `script` with python3 (`extra`: more step
/// fields, each line indented as a step field).
fn python_runbook(alertname: &str, extra: &str, script: &str) -> String {
    let mut yaml = format!(
        "matchers: [alertname={alertname}]\nsteps:\n  - name: py\n{extra}    run:\n      - python3\n      - -c\n      - |\n"
    );
    for line in script.lines() {
        let _ = writeln!(yaml, "        {line}");
    }
    yaml
}

fn step_stdout(inc: &Value, run: usize, step: usize) -> String {
    inc["runs"][run]["result"]["steps"][step]["attempts"][0]["stdout"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Finding 2: a step pushing characters into the terminal runbookd was
/// started from (TIOCSTI on /dev/tty or an inherited descriptor).
#[test]
fn a_step_cannot_type_into_the_operators_terminal() {
    let step = r#"
import fcntl, os, termios
def push(fd):
    for c in b"echo INJ" + b"ECTED\n":
        fcntl.ioctl(fd, termios.TIOCSTI, bytes([c]))
try:
    fd = os.open("/dev/tty", os.O_RDWR)
    try:
        push(fd)
        print("tty: PUSH" + "ED")
    except OSError as e:
        print("tty: ioctl refused", e.errno)
except OSError as e:
    print("tty: open refused", e.errno)
for fd in (0, 1, 2):
    try:
        push(fd)
        print("fd%d: PUSH" % fd + "ED")
    except OSError as e:
        print("fd%d: refused" % fd, e.errno)
"#;
    let yaml = python_runbook("T", "", step);
    let dir = runbook_dir(&[("t.yaml", &yaml)]);
    let alert = write_alert(dir.path(), &json!({"alertname": "T"}));
    let transcript = dir.path().join("transcript");
    // The operator's shell: a session on a pseudo-terminal that starts
    // `runbookd run` (root steps allowed, the worst case), then reads what
    // is typed next. Anything a step pushed would be read and echoed here.
    let harness = r#"
import os, pty, sys
pid, master = pty.fork()
if pid == 0:
    os.execv("/bin/bash", ["bash", "-c",
        '"$0" run --allow-root-steps --alert "$1" --runbooks "$2" >"$3" 2>&1; '
        'read -r -t 2 line; echo "NEXT-LINE:[$line]"',
        sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]])
out = b""
while True:
    try:
        chunk = os.read(master, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf-8", "replace"))
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            harness,
            env!("CARGO_BIN_EXE_runbookd"),
            alert.to_str().unwrap(),
            dir.path().to_str().unwrap(),
            transcript.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let terminal = stdout(&out);
    let ran = std::fs::read_to_string(&transcript).unwrap_or_default();
    assert!(
        ran.contains("tty: ") && ran.contains("fd2: "),
        "the step did not run: {ran}"
    );
    assert!(!ran.contains("PUSHED"), "a push succeeded: {ran}");
    assert!(
        terminal.contains("NEXT-LINE:[]"),
        "the operator's terminal received input from a step: {terminal:?}\n{ran}"
    );
    assert!(!terminal.contains("INJECTED"), "{terminal:?}");
}

/// Finding 3: cross-site posts (a `text/plain` form to /webhook, a forged
/// UI update), trailing bytes after the JSON, and a rebinding Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_and_foreign_hosts_are_refused() {
    let rb = "name: echo\nmatchers: [alertname = \"Echo\"]\nsteps:\n  - name: say\n    run: [echo, hi]\n";
    let app = TestApp::start(&[("e.yaml", rb)], |_| {}).await;
    let body = notification("g", &[(&json!({"alertname": "Echo"}), "firing", T0)]);
    // What a browser sends for <form enctype="text/plain"> from another site.
    let r = app
        .client
        .post(format!("{}/webhook", app.url))
        .header("content-type", "text/plain")
        .header("origin", "http://evil.example")
        .header("sec-fetch-site", "cross-site")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The same from a browser that sends no fetch metadata.
    let r = app
        .client
        .post(format!("{}/webhook", app.url))
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("application/json"),
        "{err}"
    );
    let mut trailing = body.clone();
    trailing.extend_from_slice(b"&x=1");
    assert_eq!(app.post_alert(trailing).await.status(), 400);
    let (_, list) = app.get("/api/v1/incidents").await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 0, "{list}");

    assert_eq!(app.post_alert(body).await.status(), 200);
    app.wait_for_incident("INC-0001", "the run", |v| run_states(v) == ["succeeded"])
        .await;
    let token = app.form_token("/incidents/INC-0001", None).await;
    let forged = |csrf: &str| {
        vec![
            ("csrf", csrf.to_owned()),
            ("author", "mallory".to_owned()),
            ("message", "all good".to_owned()),
            ("status", "resolved".to_owned()),
        ]
    };
    let url = format!("{}/incidents/INC-0001/updates", app.url);
    // From another site, even with a token lifted from the page.
    let r = app
        .client
        .post(&url)
        .header("origin", "http://evil.example")
        .header("sec-fetch-site", "cross-site")
        .form(&forged(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Same site but without the page's token (a script that never saw it).
    let r = app
        .client
        .post(&url)
        .form(&forged("0000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let inc = app.incident("INC-0001").await;
    assert_ne!(
        inc["status"], "resolved",
        "a forged post changed the incident"
    );
    // The page's own form, same origin, works.
    let r = app
        .client
        .post(&url)
        .header("origin", app.url.as_str())
        .form(&forged(&token))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(app.incident("INC-0001").await["status"], "resolved");

    // DNS rebinding: a page on evil.example resolving to 127.0.0.1.
    let port = app.url.rsplit(':').next().unwrap();
    let r = app
        .client
        .get(format!("{}/api/v1/incidents", app.url))
        .header("host", format!("evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
}

/// Finding 4: a `javascript:` generator URL and HTML in labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_html_and_script_urls_stay_text() {
    let rb = "name: echo\nmatchers: [alertname = \"Echo\"]\nsteps:\n  - name: say\n    run: [echo, hi]\n";
    let app = TestApp::start(&[("e.yaml", rb)], |_| {}).await;
    let mut n: Value = serde_json::from_slice(&notification(
        "g",
        &[(
            &json!({"alertname": "Echo", "service": "<img src=x onerror=alert(1)>"}),
            "firing",
            T0,
        )],
    ))
    .unwrap();
    n["alerts"][0]["generatorURL"] = json!("javascript:alert(document.cookie)");
    assert_eq!(
        app.post_alert(serde_json::to_vec(&n).unwrap())
            .await
            .status(),
        200
    );
    app.wait_for_incident("INC-0001", "the run", |v| run_states(v) == ["succeeded"])
        .await;
    let html = app.page("/incidents/INC-0001").await;
    assert!(
        !html.contains("href=\"javascript:"),
        "a script URL became a link"
    );
    assert!(!html.contains("<img src=x"), "label HTML was not escaped");
    let (_, md) = app.get("/api/v1/incidents/INC-0001/postmortem").await;
    let md = md.as_str().map_or_else(|| md.to_string(), str::to_owned);
    assert!(!md.contains("<img"), "postmortem carries raw HTML: {md}");
    assert!(
        !md.contains("](javascript:"),
        "postmortem links a script URL: {md}"
    );
    for path in [
        "/",
        "/incidents/INC-0001",
        "/api/v1/incidents",
        "/metrics",
        "/assets/ui.css",
        "/no-such-page",
    ] {
        let r = app
            .client
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        let h = r.headers();
        let csp = h
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("no CSP on {path}"))
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    }
}

/// Finding 5: a step (root steps allowed: the worst case) reading the store,
/// its WAL, the config and the bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_cannot_read_the_store_config_or_secrets() {
    if !require(Probe::run().landlock_abi > 0, "Landlock") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = dir.path().join("token");
    write_with_mode(&token, "tok-3e1c0d5b9f", 0o600);
    let config = dir.path().join("runbookd.yaml");
    std::fs::write(
        &config,
        format!(
            "auth: {{bearer_token_file: {}}}\nsandbox: {{allow_root_steps: true}}\n",
            token.display()
        ),
    )
    .unwrap();
    let targets = [
        data.join("runbookd.db"),
        data.join("runbookd.db-wal"),
        config.clone(),
        token.clone(),
    ];
    let mut script = String::new();
    for p in &targets {
        let p = p.display();
        let _ = write!(
            script,
            "if cat {p} >/dev/null 2>&1; then echo READ {p}; else echo denied {p}; fi; "
        );
    }
    script += "whoami";
    let rb = format!(
        "name: snoop\nmatchers: [alertname = \"Snoop\"]\nsteps:\n  - name: read\n    shell: '{script}'\n"
    );
    let runbooks = runbook_dir(&[("s.yaml", &rb)]);
    let server = serve(
        Path::new(env!("CARGO_BIN_EXE_runbookd")),
        &[
            "--config",
            config.to_str().unwrap(),
            "--runbooks",
            runbooks.path().to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        None,
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("runbookd.db")), 0o600);
    let client = crate::helpers::operator_client(&data);
    let r = client
        .post(format!("{}/webhook", server.url))
        .header("content-type", "application/json")
        .bearer_auth("tok-3e1c0d5b9f")
        .body(notification(
            "g",
            &[(
                &json!({"alertname": "Snoop", "customer": "label-in-the-wal"}),
                "firing",
                T0,
            )],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inc = wait_for(&client, &server.url, "the step", runs_ended).await;
    let out = step_stdout(&inc, 0, 0);
    assert!(out.contains("root"), "the step ran as root: {out}");
    for p in &targets {
        assert!(
            out.contains(&format!("denied {}", p.display())),
            "{} was readable: {out}",
            p.display()
        );
    }
}

/// Finding 7: 1,100 silent connections against a server limited to 1,024
/// descriptors; Alertmanager must still get in and a step must still start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_exhaust_descriptors() {
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    if soft < 4096 {
        nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_NOFILE,
            hard.min(8192),
            hard,
        )
        .unwrap();
    }
    let rb = "name: files\nmatchers: [alertname = \"Files\"]\nsteps:\n  - name: open\n    shell: 'for f in /etc/hostname /etc/passwd /etc/group; do exec 3<\"$f\"; done; echo opened'\n";
    let runbooks = runbook_dir(&[("f.yaml", rb)]);
    let data = tempfile::tempdir().unwrap();
    let server = serve(
        Path::new(env!("CARGO_BIN_EXE_runbookd")),
        &[
            "--runbooks",
            runbooks.path().to_str().unwrap(),
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        Some(1024),
    );
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..1100 {
        match std::net::TcpStream::connect(&addr) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect #{}: {e}", idle.len()),
        }
    }
    let client = reqwest::Client::builder()
        .default_headers(operator_headers(data.path()))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let t = Instant::now();
    let r = post_json(
        &client,
        &server.url,
        notification("g", &[(&json!({"alertname": "Files"}), "firing", T0)]),
    )
    .await;
    assert_eq!(r.status(), 200);
    eprintln!(
        "webhook answered in {} ms with {} idle connections open",
        t.elapsed().as_millis(),
        idle.len()
    );
    let inc = wait_for(&client, &server.url, "the step", runs_ended).await;
    assert_eq!(run_states(&inc), ["succeeded"], "{inc:#}");
    assert!(step_stdout(&inc, 0, 0).contains("opened"));
    drop(idle);
}

/// Finding 8: namespaces through clone/clone3 and io_uring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_cannot_create_namespaces_or_use_io_uring() {
    if !require(Probe::run().seccomp, "seccomp") {
        return;
    }
    let script = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def report(name, r):
    if r == 0:
        os._exit(0)
    print(name, "ok" if r > 0 else "errno=%d" % ctypes.get_errno())
    if r > 0:
        os.waitpid(r, 0)
CLONE_NEWUSER, CLONE_NEWNS, SIGCHLD = 0x10000000, 0x00020000, 17
report("clone", libc.syscall(56, CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0))
args = (ctypes.c_uint64 * 11)()
args[0] = CLONE_NEWUSER
args[4] = SIGCHLD
report("clone3", libc.syscall(435, ctypes.byref(args), ctypes.sizeof(args)))
print("unshare", "ok" if libc.unshare(CLONE_NEWUSER) == 0 else "errno=%d" % ctypes.get_errno())
params = (ctypes.c_uint8 * 120)()
fd = libc.syscall(425, 8, ctypes.byref(params))
print("io_uring_setup", "ok" if fd >= 0 else "errno=%d" % ctypes.get_errno())
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print("plain fork ok")
"#;
    let yaml = python_runbook("N", "", script);
    let r = run_yaml(
        &yaml,
        &json!({"alertname": "N"}),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await;
    let out = r.steps[0]
        .attempts
        .last()
        .map(|a| a.stdout.clone())
        .unwrap_or_default();
    assert!(out.contains("clone errno=1"), "{out}");
    assert!(
        out.contains("clone3 errno=38"),
        "clone3 must look unimplemented: {out}"
    );
    assert!(out.contains("unshare errno=1"), "{out}");
    assert!(out.contains("io_uring_setup errno=1"), "{out}");
    assert!(
        out.contains("plain fork ok"),
        "ordinary forks still work: {out}"
    );
}

/// A copy of the binary under another name (finding 9: ownership of step
/// cgroups once went by process name).
fn renamed_binary(dir: &Path) -> PathBuf {
    let renamed = dir.join("rbd-renamed");
    std::fs::copy(env!("CARGO_BIN_EXE_runbookd"), &renamed).unwrap();
    std::fs::set_permissions(&renamed, std::fs::Permissions::from_mode(0o755)).unwrap();
    renamed
}

/// Finding 9: a second server on the same store, and other instances
/// starting, must leave a live instance's running step alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_store_leaves_the_live_one_alone() {
    let bin = tempfile::tempdir().unwrap();
    let renamed = renamed_binary(bin.path());
    let rb = "name: slow\nmatchers: [alertname = \"Slow\"]\nsteps:\n  - name: wait\n    shell: sleep 2; echo finished-9f2\n";
    let runbooks = runbook_dir(&[("s.yaml", rb)]);
    let data = tempfile::tempdir().unwrap();
    let args = [
        "--runbooks",
        runbooks.path().to_str().unwrap(),
        "--data-dir",
        data.path().to_str().unwrap(),
    ];
    let server = serve(&renamed, &args, None);
    let client = crate::helpers::operator_client(data.path());
    let r = post_json(
        &client,
        &server.url,
        notification("g", &[(&json!({"alertname": "Slow"}), "firing", T0)]),
    )
    .await;
    assert_eq!(r.status(), 200);
    wait_for(&client, &server.url, "the step to start", |v| {
        run_states(v) == ["running"]
    })
    .await;
    // The same store: refused, before touching anything.
    let mut second = Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while second.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second server started on the same store");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = second.wait_with_output().unwrap();
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("in use by another runbookd"),
        "{}",
        stderr(&second)
    );
    // Another instance with a store of its own starts (and reaps what is
    // provably dead) without touching the renamed instance's step.
    let other_data = tempfile::tempdir().unwrap();
    let other_runbooks = runbook_dir(&[("s.yaml", rb)]);
    let other = serve(
        Path::new(env!("CARGO_BIN_EXE_runbookd")),
        &[
            "--runbooks",
            other_runbooks.path().to_str().unwrap(),
            "--data-dir",
            other_data.path().to_str().unwrap(),
        ],
        None,
    );
    let inc = wait_for(&client, &server.url, "the step to finish", |v| {
        run_states(v).first().is_some_and(|s| s != "running")
    })
    .await;
    assert_eq!(run_states(&inc), ["succeeded"], "{inc:#}");
    assert!(step_stdout(&inc, 0, 0).contains("finished-9f2"));
    drop(other);
}

/// Finding 9 and 11: what a kill -9 leaves is cleaned up. With the spawn
/// helper (the default) the step's processes, a `setsid` escapee included,
/// die with runbookd: the helper sees its socket close and kills them. With
/// `spawner: inline` they live until the next start reaps them. The scratch
/// dir is removed by the next start in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_killed_server_are_reaped_at_the_next_start() {
    let h = Probe::run().cgroups;
    if !require(h.v2.is_some() || h.v1_pids.is_some(), "a cgroup hierarchy") {
        return;
    }
    // The helper takes escapees with it through `cgroup.kill` (v2).
    if h.v2.is_some() {
        killed_server_leftovers("helper").await;
    }
    killed_server_leftovers("inline").await;
}

async fn killed_server_leftovers(spawner: &str) {
    let work = tempfile::tempdir().unwrap();
    let runtime = work.path().join("rt");
    let config = work.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "sandbox: {{runtime_dir: {}, spawner: {spawner}}}\n",
            runtime.display()
        ),
    )
    .unwrap();
    // A token of this test process: leftovers of an earlier failed run of
    // the test cannot be mistaken for this one's.
    let token = format!("sleep 47.{}", std::process::id());
    let rb = format!("name: orphan\nmatchers: [alertname = \"Orphan\"]\nsteps:\n  - name: linger\n    timeout: 60s\n    shell: echo left > \"$TMPDIR/mark\"; setsid {token} & {token}\n");
    let runbooks = runbook_dir(&[("o.yaml", &rb)]);
    let data = tempfile::tempdir().unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--runbooks",
        runbooks.path().to_str().unwrap(),
        "--data-dir",
        data.path().to_str().unwrap(),
    ];
    let bin = Path::new(env!("CARGO_BIN_EXE_runbookd"));
    let mut first = serve(bin, &args, None);
    let client = crate::helpers::operator_client(data.path());
    post_json(
        &client,
        &first.url,
        notification("g", &[(&json!({"alertname": "Orphan"}), "firing", T0)]),
    )
    .await;
    wait_for(&client, &first.url, "the step to start", |v| {
        run_states(v) == ["running"]
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while survivors(&token).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the step never started its sleeps"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill9();
    if spawner == "helper" {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !survivors(&token).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the step outlived runbookd: {:?}",
                survivors(&token)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    } else {
        assert!(
            survivors(&token).len() >= 2,
            "kill -9 leaves the step behind"
        );
    }
    let scratch_files = || {
        walkdir(&runtime)
            .into_iter()
            .filter(|p| p.ends_with("mark"))
            .count()
    };
    assert_eq!(
        scratch_files(),
        1,
        "the scratch dir is left behind: {:?}",
        walkdir(&runtime)
    );
    let second = serve(bin, &args, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !survivors(&token).is_empty() {
        assert!(
            Instant::now() < deadline,
            "leftover step processes: {:?}",
            survivors(&token)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        scratch_files(),
        0,
        "the dead instance's scratch dir survived"
    );
    let inc = wait_for(&client, &second.url, "the record", |_| true).await;
    assert_eq!(run_states(&inc), ["interrupted"], "{inc:#}");
    // Stopped, the second takes its own scratch root (a tmpfs of its own,
    // as root) with it: nothing is left mounted in the runtime directory.
    let root = runtime.canonicalize().unwrap();
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&format!(" {}/", root.display()))
    };
    assert_eq!(
        mounted(),
        nix::unistd::geteuid().is_root(),
        "a scratch root of its own while it runs, as root"
    );
    let mut second = second;
    assert!(second.terminate().success());
    assert!(
        !mounted(),
        "a stopped server left a mount in {}",
        root.display()
    );
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            found.extend(walkdir(&p));
        }
        found.push(p);
    }
    found
}

/// Finding 10: a label nobody uses with a NUL byte or 200 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpassable_labels_no_step_uses_do_not_fail_the_run() {
    let yaml = "matchers: [alertname=Big]\nsteps:\n  - name: first\n    run: [echo, \"{{labels.service}}\"]\n  - name: second\n    run: ['true']\n";
    let r = run_yaml(
        yaml,
        &json!({
            "alertname": "Big",
            "service": "web",
            "junk": "a\u{0}b",
            "huge": "x".repeat(200 << 10),
        }),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await;
    for s in &r.steps {
        assert_eq!(
            s.outcome
                .as_ref()
                .map(runbookd::record::StepOutcome::status),
            Some("succeeded"),
            "{}: {:?}",
            s.name,
            s.outcome
        );
        let warnings = s.plan.warnings.join("\n");
        assert!(warnings.contains("ALERT_LABEL_JUNK"), "{warnings}");
        assert!(warnings.contains("ALERT_LABEL_HUGE"), "{warnings}");
    }
}

/// Finding 11: a run listing or reading another run's scratch dir, with the
/// same uid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cannot_read_or_find_another_runs_scratch() {
    let drop_box = tempfile::tempdir().unwrap();
    std::fs::set_permissions(drop_box.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let d = drop_box.path().display();
    let a = format!(
        "name: a\nmatchers: [alertname = \"A\"]\nsteps:\n  - name: keep\n    writable_paths: [{d}]\n    shell: echo secret-a71 > \"$TMPDIR/loot\"; echo \"$TMPDIR\" > {d}/where; sleep 3\n"
    );
    let b = format!(
        "name: b\nmatchers: [alertname = \"B\"]\nsteps:\n  - name: snoop\n    shell: |\n      p=$(cat {d}/where)\n      cat \"$p/loot\" 2>&1\n      ls \"$p/..\" && echo LISTED-PARENT\n      ls \"$p\" && echo LISTED-A\n      echo done\n"
    );
    let app = TestApp::start(&[("a.yaml", &a), ("b.yaml", &b)], |_| {}).await;
    app.post_alert(notification(
        "a",
        &[(&json!({"alertname": "A"}), "firing", T0)],
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !drop_box.path().join("where").exists() {
        assert!(Instant::now() < deadline, "run A never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let where_a = std::fs::read_to_string(drop_box.path().join("where")).unwrap();
    app.post_alert(notification(
        "b",
        &[(&json!({"alertname": "B"}), "firing", T0)],
    ))
    .await;
    let inc = app
        .wait_for_incident("INC-0002", "run B", |v| {
            run_states(v).first().is_some_and(|s| s == "succeeded")
        })
        .await;
    let out = step_stdout(&inc, 0, 0);
    assert!(out.contains("done"), "{out}");
    assert!(out.contains(where_a.trim()), "run B tried A's path: {out}");
    assert!(
        !out.contains("secret-a71"),
        "run B read run A's file: {out}"
    );
    assert!(
        !out.contains("LISTED-PARENT"),
        "run B listed the scratch root: {out}"
    );
}

/// Finding 12: a fork loop without a `resources.pids` of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_loop_is_bounded_by_the_default_pids_limit() {
    let h = Probe::run().cgroups;
    if !require(h.v2_pids || h.v1_pids.is_some(), "a pids cgroup controller") {
        return;
    }
    let script = r#"
import os, time
n = 0
try:
    while n < 5000:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except OSError as e:
    print("fork refused after", n, "errno", e.errno)
"#;
    let yaml = python_runbook("F", "    timeout: 20s\n", script);
    let r = run_yaml(
        &yaml,
        &json!({"alertname": "F"}),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await;
    let attempt = r.steps[0].attempts.last().unwrap();
    assert!(
        attempt
            .sandbox
            .applied
            .iter()
            .any(|l| l.starts_with("pids:512")),
        "{:?}",
        attempt.sandbox
    );
    let out = &attempt.stdout;
    let n: u32 = out
        .split("fork refused after ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the loop was never stopped: {out}"));
    assert!(n < 512, "{n} forks");
    assert!(survivors("forks").is_empty());
}

/// Finding 13: a secret in a runbook's env, shown nowhere but to the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_step_and_nothing_else() {
    let dir = open_tempdir();
    let secret = dir.path().join("api-key");
    write_with_mode(&secret, "sk-live-5bd0e2\n", 0o600);
    // What the step compares against, outside the runbook's text.
    let expected = dir.path().join("expected");
    write_with_mode(&expected, "sk-live-5bd0e2", 0o644);
    let rb = format!(
        "name: s\nmatchers: [alertname = \"S\"]\nsteps:\n  - name: use\n    env:\n      API_KEY: {{secret_file: {}}}\n    shell: |\n      test \"$API_KEY\" = \"$(cat {})\" && echo matches\n      echo \"leak: $API_KEY\"\n",
        secret.display(),
        expected.display()
    );
    let runbooks = runbook_dir(&[("s.yaml", &rb)]);
    let alert = write_alert(runbooks.path(), &json!({"alertname": "S"}));
    let plan = crate::helpers::runbookd(&[
        "run",
        "--plan",
        "--output",
        "json",
        "--alert",
        alert.to_str().unwrap(),
        "--runbooks",
        runbooks.path().to_str().unwrap(),
    ]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert!(!stdout(&plan).contains("sk-live"), "{}", stdout(&plan));
    assert!(stdout(&plan).contains("[redacted]"), "{}", stdout(&plan));
    let ran = crate::helpers::runbookd(&[
        "run",
        "--alert",
        alert.to_str().unwrap(),
        "--runbooks",
        runbooks.path().to_str().unwrap(),
    ]);
    let text = stdout(&ran) + &stderr(&ran);
    assert!(text.contains("matches"), "the step did not see it: {text}");
    assert!(!text.contains("sk-live"), "{text}");

    let app = TestApp::start(&[("s.yaml", &rb)], |_| {}).await;
    app.post_alert(notification(
        "s",
        &[(&json!({"alertname": "S"}), "firing", T0)],
    ))
    .await;
    let inc = app
        .wait_for_incident("INC-0001", "the run", |v| run_states(v) == ["succeeded"])
        .await;
    let record = inc.to_string();
    assert!(record.contains("matches"), "{record}");
    assert!(!record.contains("sk-live"), "{record}");
    let page = app.page("/incidents/INC-0001").await;
    assert!(page.contains("[redacted]"), "{page}");
    assert!(!page.contains("sk-live"), "{page}");
}

/// Finding 6: `check` warns where a value lands in argv[0], an option
/// position or a URL host, with file:line:col; the examples have none.
#[test]
fn check_warns_where_a_value_can_become_an_option_a_program_or_a_host() {
    let rb = "name: w\nmatchers: [alertname = \"W\"]\nsteps:\n  - name: prog\n    run: [\"{{labels.tool}}\", status]\n  - name: opt\n    run: [kubectl, get, pods, \"{{labels.pod}}\"]\n  - name: host\n    run: [curl, -fsS, \"http://{{labels.instance}}/healthz\"]\n  - name: safe\n    run: [kubectl, get, pods, --, \"{{labels.pod}}\"]\n";
    let dir = runbook_dir(&[("w.yaml", rb)]);
    let out = crate::helpers::runbookd(&["check", dir.path().to_str().unwrap()]);
    let text = stdout(&out) + &stderr(&out);
    for (line, what) in [(5, "prog"), (7, "opt"), (9, "host")] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("w.yaml:{line}:")) && l.contains("warning")),
            "no warning for {what} at line {line}: {text}"
        );
    }
    assert!(!text.contains("w.yaml:11:"), "`--` makes it safe: {text}");
    assert!(text.contains("3 warning"), "{text}");
    let examples = crate::helpers::runbookd(&["check", "runbooks"]);
    assert!(examples.status.success());
    assert!(
        !(stdout(&examples) + &stderr(&examples)).contains("warning"),
        "{}",
        stdout(&examples)
    );
}

/// A step plants symlinks in the run's scratch directory (which its user
/// owns) where runbookd might copy a later step's credential file: the copy
/// must never land outside the scratch directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cannot_redirect_a_credential_copy() {
    if !require_root("steps run as nobody") {
        return;
    }
    let work = open_tempdir();
    let victim = work.path().join("victim");
    mkdir_with_mode(&victim, 0o755);
    let cred = work.path().join("kubeconfig");
    write_with_mode(&cred, "token: c0ffee\n", 0o600);
    let v = victim.display();
    let rb = format!(
        "name: plant\nmatchers: [alertname = \"Plant\"]\nsteps:\n  - name: plant\n    shell: |\n      for n in .credentials .credentials-0 KUBECONFIG kubeconfig; do ln -s {v} \"$TMPDIR/$n\"; done\n      ls -a \"$TMPDIR\"\n  - name: use\n    env:\n      KUBECONFIG: {{credential_file: {}}}\n    shell: |\n      case \"$KUBECONFIG\" in \"$TMPDIR\"/*) echo inside;; esac\n      grep -c token \"$KUBECONFIG\"\n",
        cred.display()
    );
    let app = TestApp::start(&[("p.yaml", &rb)], |_| {}).await;
    app.post_alert(notification(
        "p",
        &[(&json!({"alertname": "Plant"}), "firing", T0)],
    ))
    .await;
    let inc = app
        .wait_for_incident("INC-0001", "the run", runs_ended)
        .await;
    assert_eq!(run_states(&inc), ["succeeded"], "{inc:#}");
    assert_eq!(step_stdout(&inc, 0, 1), "inside\n1\n");
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "runbookd wrote through a planted symlink"
    );
}

/// A `credential_file` in a directory its step's user can change: the user
/// swaps it for a symlink to `/etc/shadow`, and runbookd must not copy that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_file_swapped_for_a_symlink_is_refused() {
    if !require_root("steps run as nobody") {
        return;
    }
    let work = open_tempdir();
    let home = work.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let config = home.join("config");
    std::os::unix::fs::symlink("/etc/shadow", &config).unwrap();
    // The same, with a trusted directory but the file itself a symlink.
    let trusted = work.path().join("trusted");
    mkdir_with_mode(&trusted, 0o755);
    std::os::unix::fs::symlink("/etc/shadow", trusted.join("config")).unwrap();
    let rb = format!(
        "name: swap\nmatchers: [alertname = \"Swap\"]\nsteps:\n  - name: a\n    env:\n      KUBECONFIG: {{credential_file: {}}}\n    run: [cat, \"$KUBECONFIG\"]\n  - name: b\n    env:\n      KUBECONFIG: {{credential_file: {}}}\n    run: ['true']\n",
        config.display(),
        trusted.join("config").display()
    );
    let rb = rb
        .replace(
            "    run: ['true']",
            "    continue_on_failure: true\n    run: ['true']",
        )
        .replace(
            "    run: [cat, \"$KUBECONFIG\"]",
            "    continue_on_failure: true\n    run: [cat, \"$KUBECONFIG\"]",
        );
    let app = TestApp::start(&[("s.yaml", &rb)], |_| {}).await;
    app.post_alert(notification(
        "s",
        &[(&json!({"alertname": "Swap"}), "firing", T0)],
    ))
    .await;
    let inc = app
        .wait_for_incident("INC-0001", "the run", runs_ended)
        .await;
    for (i, why) in [
        (0, "can be changed by users other than root"),
        (1, "symlinks are refused"),
    ] {
        let outcome = &inc["runs"][0]["result"]["steps"][i]["outcome"];
        assert_eq!(outcome["status"], "spawn_failed", "{inc:#}");
        assert!(
            outcome["reason"].as_str().unwrap().contains(why),
            "{outcome}"
        );
    }
    assert!(
        !inc.to_string().contains("root:"),
        "/etc/shadow leaked: {inc:#}"
    );
}
