//! The sandbox report tells the truth: what `GET /api/v1/status` (and
//! `runbookd status`) says is enforced is what a step observes from inside
//! (its uid, seccomp and no_new_privs in /proc/self/status, whether it can
//! read runbookd's credential), and `--strict-sandbox` refuses to start,
//! naming the layer and why, when one the config asks for is missing.

use serde_json::{json, Value};

use crate::app::{notification, TestApp};
use crate::exec::{require, require_root};
use crate::helpers::{runbookd, stderr, stdout};

pub const LOOK: &str = r#"name: look
matchers: ['alertname = "Look"']
steps:
  - name: inside
    shell: |
      echo "uid=$(id -u)"
      grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status
      if cat "$CREDENTIAL" >/dev/null 2>&1; then echo credential=read; else echo credential=denied; fi
      # Left for runbookd to clean: a file in a directory only the step may enter.
      mkdir -p left/behind/deep && echo x > left/behind/deep/f && chmod 000 left/behind
    timeout: 10s
"#;

/// The step's observations, from its output.
pub fn observed(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim_start_matches([':', '=']).trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

/// LOOK answering alerts named `alertname`, told where runbookd's
/// credential is (which it must not be able to read).
pub fn look(alertname: &str, credential: &std::path::Path) -> String {
    LOOK.replace(
        r#"alertname = "Look""#,
        &format!("alertname = \"{alertname}\""),
    )
    .replace(
        "steps:",
        &format!("env:\n  CREDENTIAL: {}\nsteps:", credential.display()),
    )
}

/// Posts `body` to the runbookd at `url` as Alertmanager would (its
/// `webhook` token), waits for INC-0001's runs to end, and returns what the
/// first step printed (it must have succeeded) and `GET /api/v1/status`,
/// read with `operator`.
pub async fn post_and_observe(
    url: &str,
    webhook: &str,
    operator: &reqwest::Client,
    body: Vec<u8>,
    logs: &dyn Fn() -> String,
) -> (String, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{url}/webhook"))
        .bearer_auth(webhook.trim())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", logs());
    let inc = crate::app::wait_for_incident_at(
        operator,
        url,
        "INC-0001",
        "the step to run",
        crate::app::runs_ended,
    )
    .await;
    let attempt = &inc["runs"][0]["result"]["steps"][0]["attempts"][0];
    assert_eq!(
        attempt["outcome"]["status"],
        "succeeded",
        "{attempt:#}\n{}",
        logs()
    );
    let status: Value = operator
        .get(format!("{url}/api/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (attempt["stdout"].as_str().unwrap().to_owned(), status)
}

/// The status's sandbox report (`GET /api/v1/status`) agrees with what a
/// LOOK step observed from inside (its output `out`): its uid, seccomp and
/// no_new_privs, and whether runbookd's credential was readable.
pub fn assert_report_matches(status: &Value, out: &str) {
    let layers = status["sandbox"]["layers"].as_array().unwrap();
    let layer = |name: &str| {
        layers
            .iter()
            .find(|l| l["layer"] == name)
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .clone()
    };
    let uid = layer("uid_drop");
    let step_uid: u32 = observed(out, "uid").parse().unwrap();
    if uid["enforced"] == true {
        assert_ne!(
            u64::from(step_uid),
            status["sandbox"]["uid"].as_u64().unwrap()
        );
        assert!(
            uid["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("uid {step_uid}")),
            "{uid} vs the step's uid {step_uid}"
        );
    } else {
        assert_eq!(
            u64::from(step_uid),
            status["sandbox"]["uid"].as_u64().unwrap()
        );
    }
    // Mode 2: a seccomp filter; no_new_privs comes with it.
    let seccomp = observed(out, "Seccomp") == "2";
    assert_eq!(layer("seccomp")["enforced"] == true, seccomp, "{out}");
    if seccomp {
        assert_eq!(observed(out, "NoNewPrivs"), "1", "{out}");
    }
    // Landlock: runbookd's credential is unreadable, though the step
    // knows where it is (as root, the uid drop alone also keeps it: 0600).
    let denied = observed(out, "credential") == "denied";
    if layer("landlock")["enforced"] == true || uid["enforced"] == true {
        assert!(denied, "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_says_what_a_step_observes() {
    let app_dir = tempfile::tempdir().unwrap();
    let credential = app_dir.path().join("store").join("operator.token");
    let rb = LOOK.replace(
        "steps:",
        &format!("env:\n  CREDENTIAL: {}\nsteps:", credential.display()),
    );
    let store = app_dir.path().join("store");
    let app = TestApp::start(&[("look.yaml", &rb)], move |c| {
        c.data_dir = store;
    })
    .await;
    let (code, status) = app.get("/api/v1/status").await;
    assert_eq!(code, 200, "{status}");
    let layers = status["sandbox"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 10, "{status}");
    assert!(
        layers
            .iter()
            .all(|l| !l["detail"].as_str().unwrap().is_empty()),
        "every layer says what it does or why it is missing: {status}"
    );
    // A step, and what it saw.
    let resp = app
        .post_alert(notification(
            "g-look",
            &[(
                &json!({"alertname": "Look"}),
                "firing",
                "2026-12-05T08:00:00Z",
            )],
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let inc = app
        .wait_for_incident("INC-0001", "the step to run", crate::app::runs_ended)
        .await;
    let out = inc["runs"][0]["result"]["steps"][0]["attempts"][0]["stdout"]
        .as_str()
        .unwrap_or_else(|| panic!("the step never ran: {inc}"))
        .to_owned();
    assert_report_matches(&status, &out);
    // The page says the same.
    let page = app.page("/").await;
    for l in layers {
        let id = format!("id=\"layer-{}\"", l["layer"].as_str().unwrap());
        let row = &page[page
            .find(&id)
            .unwrap_or_else(|| panic!("no {id} on the page"))..];
        let row = &row[..row.find("</tr>").unwrap()];
        assert_eq!(row.contains(">yes<"), l["enforced"] == true, "{row}");
    }
    // And `runbookd status`, asking the server.
    let o = runbookd(&[
        "status",
        "--server",
        &app.url,
        "--data-dir",
        app_dir.path().join("store").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for l in layers {
        let line = text
            .lines()
            .find(|x| x.trim_start().starts_with(l["layer"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("{text}"));
        assert_eq!(line.contains("MISSING"), l["enforced"] == false, "{line}");
    }
}

/// Run as an ordinary user, runbookd cannot give steps another uid:
/// `--strict-sandbox` refuses to start and says so; without it, the server
/// starts and its report says the layer is missing, and why.
#[test]
fn strict_sandbox_refuses_to_start_without_a_layer_and_says_which() {
    if !require_root("switching to an ordinary user") {
        return;
    }
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    if !require(setpriv.exists(), "setpriv (util-linux)") {
        return;
    }
    let dir = crate::helpers::open_tempdir();
    let (runbooks, data) = (dir.path().join("runbooks"), dir.path().join("data"));
    std::fs::create_dir(&runbooks).unwrap();
    std::fs::write(runbooks.join("look.yaml"), LOOK).unwrap();
    let tmp = dir.path().join("tmp");
    for d in [&data, &tmp] {
        std::fs::create_dir(d).unwrap();
        nix::unistd::chown(
            d,
            Some(nix::unistd::Uid::from_raw(65534)),
            Some(nix::unistd::Gid::from_raw(65534)),
        )
        .unwrap();
    }
    let serve = |strict: bool| {
        let mut cmd = std::process::Command::new(setpriv);
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_runbookd"))
            .args(["serve", "--listen", "127.0.0.1:0", "--runbooks"])
            .arg(&runbooks)
            .arg("--data-dir")
            .arg(&data)
            .env("TMPDIR", &tmp);
        if strict {
            cmd.arg("--strict-sandbox");
        }
        cmd
    };
    let o = serve(true).output().unwrap();
    assert!(!o.status.success(), "started: {}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("these layers are not enforced"), "{err}");
    assert!(
        err.contains("uid_drop: runbookd is not root (nobody (uid 65534))"),
        "{err}"
    );
    // Without --strict-sandbox it starts, and says the same in its report.
    let served = crate::helpers::Served::start({
        let mut c = serve(false);
        c.stderr(std::process::Stdio::null());
        c
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status: Value = rt.block_on(async {
        crate::helpers::operator_client(&data)
            .get(format!("{}/api/v1/status", served.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let uid = status["sandbox"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == "uid_drop")
        .unwrap();
    assert_eq!(uid["enforced"], false, "{status}");
    assert!(
        uid["detail"].as_str().unwrap().contains("not root"),
        "{uid}"
    );
    assert_eq!(status["sandbox"]["uid"], 65534);
}

/// `runbookd serve` on a free port with these runbooks and data directory,
/// its runtime directory under `tmp`; with `baseline`, under Kubernetes'
/// Baseline capabilities (SETUID, SETGID, KILL, CHOWN, FOWNER, no new
/// privileges), as a container in that profile runs it.
fn serve_in(
    runbooks: &std::path::Path,
    data: &std::path::Path,
    tmp: &std::path::Path,
    baseline: bool,
) -> crate::helpers::Served {
    let serve = crate::helpers::serve_command(
        std::path::Path::new(env!("CARGO_BIN_EXE_runbookd")),
        runbooks,
        data,
    );
    let mut cmd = if baseline {
        let mut c = std::process::Command::new("/usr/bin/setpriv");
        c.args([
            "--bounding-set=-all,+setuid,+setgid,+kill,+chown,+fowner",
            "--inh-caps=-all",
            "--no-new-privs",
            "--",
        ])
        .arg(serve.get_program());
        c
    } else {
        std::process::Command::new(serve.get_program())
    };
    cmd.args(serve.get_args())
        .env("TMPDIR", tmp)
        .stderr(std::process::Stdio::null());
    crate::helpers::Served::start(cmd)
}

/// Posts a firing alert named `alertname` to `served` and returns what the
/// first step printed and the server's status ([`post_and_observe`]).
fn post_alert_to(
    served: &crate::helpers::Served,
    data: &std::path::Path,
    alertname: &str,
) -> (String, Value) {
    let webhook = std::fs::read_to_string(data.join("webhook.token")).unwrap();
    let body = notification(
        &format!("g-{alertname}"),
        &[(
            &json!({"alertname": alertname}),
            "firing",
            "2026-12-05T08:00:00Z",
        )],
    );
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(post_and_observe(
            &served.url,
            &webhook,
            &crate::helpers::operator_client(data),
            body,
            &String::new,
        ))
}

/// Kubernetes' Baseline profile (root in the container, capabilities
/// dropped to SETUID, SETGID, KILL, CHOWN and FOWNER, no privilege
/// escalation): steps still run, as `nobody`, under Landlock and seccomp,
/// and their scratch is removed after them though root cannot enter it
/// (no CAP_DAC_OVERRIDE). Before, every step failed "applying the sandbox
/// failed: Permission denied" (the child entered the step's 0700 scratch
/// before dropping to its uid) and scratch directories were left behind.
#[test]
fn steps_run_sandboxed_under_the_baseline_capabilities_and_leave_nothing() {
    if !require_root("dropping capabilities") {
        return;
    }
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    if !require(setpriv.exists(), "setpriv (util-linux)") {
        return;
    }
    let dir = crate::helpers::open_tempdir();
    let (runbooks, data, tmp) = (
        dir.path().join("runbooks"),
        dir.path().join("data"),
        dir.path().join("tmp"),
    );
    for d in [&runbooks, &data, &tmp] {
        std::fs::create_dir(d).unwrap();
    }
    // A credential file, which runbookd copies into the step's scratch as
    // root (without CAP_DAC_OVERRIDE: it holds the scratch as its own).
    let secret = dir.path().join("kubeconfig");
    crate::helpers::write_with_mode(&secret, "token: s3cret\n", 0o600);
    let rb = format!(
        "{}  - name: cred\n    env:\n      KUBECONFIG: {{credential_file: {}}}\n    shell: cat \"$KUBECONFIG\"\n",
        look("Look", &data.join("operator.token")),
        secret.display()
    );
    std::fs::write(runbooks.join("look.yaml"), rb).unwrap();
    let mut served = serve_in(&runbooks, &data, &tmp, true);
    let (out, status) = post_alert_to(&served, &data, "Look");
    let out = out.as_str();
    assert_eq!(observed(out, "uid"), "65534", "{out}");
    let inc = tokio::runtime::Runtime::new().unwrap().block_on(async {
        crate::helpers::operator_client(&data)
            .get(format!("{}/api/v1/incidents/INC-0001", served.url))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    let cred = &inc["runs"][0]["result"]["steps"][1]["attempts"][0];
    assert_eq!(cred["outcome"]["status"], "succeeded", "{cred:#}");
    // It read the copy, and runbookd redacted what it printed of it.
    assert_eq!(cred["stdout"], "[redacted]\n");
    assert_report_matches(&status, out);
    let enforced = |name: &str| {
        status["sandbox"]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["layer"] == name && l["enforced"] == true)
    };
    assert!(enforced("uid_drop") && enforced("seccomp"), "{status:#}");
    // Without CAP_SYS_ADMIN: no IPC namespace and no scratch tmpfs, said so.
    assert!(
        !enforced("ipc_isolation") && !enforced("scratch_limit"),
        "{status:#}"
    );
    // Nothing of the step's is left in the runtime directory.
    let left = |root: &std::path::Path| -> Vec<String> {
        walk(root)
            .into_iter()
            .filter(|(_, uid)| *uid != 0)
            .map(|(p, uid)| format!("{} (uid {uid})", p.display()))
            .collect()
    };
    assert_eq!(left(&tmp), Vec::<String>::new());
    // A graceful stop removes the instance's scratch root too.
    nix::sys::signal::kill(served.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let code = served.child.wait().unwrap();
    assert!(code.success(), "{code:?}");
    let dirs: Vec<String> = walk(&tmp)
        .into_iter()
        .filter(|(p, _)| p.is_dir() && p.parent() != Some(tmp.as_path()))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert_eq!(dirs, Vec::<String>::new());
}

/// Every path beneath `root` with its owner (as root: entering any).
fn walk(root: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let meta = e.path().symlink_metadata().unwrap();
        found.push((e.path(), meta.uid()));
        if meta.is_dir() {
            found.extend(walk(&e.path()));
        }
    }
    found
}

const DEEP: &str = r#"name: deep
matchers: ['alertname = "Deep"']
steps:
  - name: nest
    shell: |
      python3 - <<'EOF'
      import os
      os.symlink(os.environ["TARGET"], "link-out")
      os.mkdir("locked"); os.mkdir("locked/in"); os.chmod("locked", 0)
      # 300 chains of 100, then each moved into the tip of the one before:
      # 30,000 deep without 30,000 deep path walks.
      top = os.open(".", os.O_RDONLY)
      tips = []
      for j in range(300):
          os.mkdir(f"c{j}")
          cur = os.open(f"c{j}", os.O_RDONLY)
          for i in range(99):
              os.mkdir("d", dir_fd=cur)
              nxt = os.open("d", os.O_RDONLY, dir_fd=cur)
              os.close(cur)
              cur = nxt
          tips.append(cur)
      os.symlink(os.environ["TARGET"], "deep-link", dir_fd=tips[-1])
      for j in range(1, 300):
          os.rename(f"c{j}", "d", src_dir_fd=top, dst_dir_fd=tips[j - 1])
      print("nested")
      EOF
    timeout: 60s
"#;

/// Removes a tree runbookd may have left with `rm -rf` (iterative), before
/// the TempDir's own recursive removal could overflow the test's stack.
struct RmRf(std::path::PathBuf);
impl Drop for RmRf {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rm")
            .arg("-rf")
            .arg(&self.0)
            .status();
    }
}

/// The attack: a step leaves 30,000 nested directories (std's recursive
/// `remove_dir_all` overflows a 2 MiB worker stack at ~14,000; the walk
/// that took a step's directories over did at ~5,000), one it chmod-ed to
/// 0, and links to runbookd's files. runbookd must stay up, remove all of
/// it, and follow no link: as root, and in the Baseline profile (no
/// CAP_DAC_OVERRIDE). Before, the server aborted on the stack overflow.
#[test]
fn a_step_s_deep_tree_is_removed_without_crashing_runbookd() {
    if !require_root("steps as nobody")
        || !require(
            std::path::Path::new("/usr/bin/setpriv").exists(),
            "setpriv (util-linux)",
        )
    {
        return;
    }
    for baseline in [false, true] {
        let dir = crate::helpers::open_tempdir();
        let _rm = RmRf(dir.path().join("tmp"));
        let (runbooks, data, tmp, target) = (
            dir.path().join("runbooks"),
            dir.path().join("data"),
            dir.path().join("tmp"),
            dir.path().join("target"),
        );
        for d in [&runbooks, &data, &tmp, &target] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(target.join("keep"), "runbookd's").unwrap();
        std::fs::write(
            runbooks.join("deep.yaml"),
            DEEP.replace(
                "steps:",
                &format!("env:\n  TARGET: {}\nsteps:", target.display()),
            ),
        )
        .unwrap();
        let mut served = serve_in(&runbooks, &data, &tmp, baseline);
        let (out, _) = post_alert_to(&served, &data, "Deep");
        assert_eq!(out.trim(), "nested", "baseline={baseline}");
        // Still serving, and the tree is gone (its removal is part of the run's end).
        assert!(
            served.child.try_wait().unwrap().is_none(),
            "runbookd died (baseline={baseline})"
        );
        let left = std::process::Command::new("find")
            .arg(&tmp)
            .args(["-mindepth", "4", "-maxdepth", "5"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&left.stdout),
            "",
            "left behind (baseline={baseline})"
        );
        // No link was followed.
        assert_eq!(
            std::fs::read_to_string(target.join("keep")).unwrap(),
            "runbookd's"
        );
        let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&target).unwrap());
        assert_eq!(owner, 0, "a link was followed");
        nix::sys::signal::kill(served.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
        assert!(served.child.wait().unwrap().success());
    }
}
