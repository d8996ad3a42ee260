//! Helpers named after what a user does: run `runbookd`, write runbooks and
//! payloads, read a plan.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use serde_json::{json, Value};

/// The repository root; commands run from here, as a user would.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/alertmanager").join(name)
}

/// Every captured Alertmanager payload (`*.json`).
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/alertmanager"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    assert!(v.len() >= 15, "fixtures missing: {v:?}");
    v
}

/// Runs `runbookd ARGS` from the repository root.
pub fn runbookd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("runbookd starts")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `run --plan --output json` of a payload file against a runbook directory.
pub fn plan_json(payload: &Path, runbooks: &Path) -> (Output, Value) {
    let out = runbookd(&[
        "run",
        "--plan",
        "--output",
        "json",
        "--alert",
        payload.to_str().unwrap(),
        "--runbooks",
        runbooks.to_str().unwrap(),
    ]);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("plan is JSON ({e}): {}{}", stdout(&out), stderr(&out)));
    (out, v)
}

/// A directory of runbooks written from `(file name, YAML)` pairs.
pub fn runbook_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// A firing notification of one alert with these labels, written to `dir`.
pub fn write_alert(dir: &Path, labels: &Value) -> PathBuf {
    let payload = json!({
        "receiver": "runbookd",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": {"summary": "test alert"},
            "startsAt": "2026-11-24T08:28:24.076141237Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example/graph",
            "fingerprint": "0123456789abcdef"
        }],
        "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "version": "4",
        "groupKey": "{}:{alertname=\"x\"}",
        "truncatedAlerts": 0
    });
    let path = dir.join("alert.json");
    std::fs::write(&path, serde_json::to_vec(&payload).unwrap()).unwrap();
    path
}

/// `runbookd serve` as a separate process, on the port it announced; killed
/// when dropped.
pub struct Served {
    pub child: Child,
    pub url: String,
    /// The announcement: `runbookd listening on URL`, or its JSON form.
    pub first_line: String,
    /// Kept open: runbookd's standard output stays a live pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Served {
    /// Spawns `cmd` (a `runbookd … serve --listen 127.0.0.1:0 …` command)
    /// and reads the URL it announces, in text or JSON.
    pub fn start(mut cmd: Command) -> Served {
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first_line = String::new();
        stdout.read_line(&mut first_line).unwrap();
        let url = if first_line.starts_with('{') {
            serde_json::from_str::<Value>(&first_line).unwrap()["fields"]["url"]
                .as_str()
                .unwrap()
                .to_owned()
        } else {
            first_line
                .trim()
                .strip_prefix("runbookd listening on ")
                .unwrap_or_else(|| panic!("unexpected first line {first_line:?}"))
                .to_owned()
        };
        Served {
            child,
            url,
            first_line,
            _stdout: stdout,
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it as an init system would (SIGTERM), and waits for its exit
    /// (at most 60 s; then it is killed, and that is a failure).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                self.kill9();
                panic!("runbookd did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A client that sends the local operator credential runbookd made in
/// `data` (what the CLI does by itself): without `auth.users`, reads and
/// writes need it.
pub fn operator_client(data: &Path) -> reqwest::Client {
    let token = std::fs::read_to_string(data.join("operator.token"))
        .unwrap_or_else(|e| panic!("no operator credential in {}: {e}", data.display()));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", token.trim()).parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// `runbookd serve` on `127.0.0.1:0` with these runbooks and data directory
/// (stderr discarded), for [`Served::start`].
pub fn serve_command(binary: &Path, runbooks: &Path, data: &Path) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--runbooks"])
        .arg(runbooks)
        .arg("--data-dir")
        .arg(data)
        .stderr(Stdio::null());
    cmd
}

/// A temporary directory anyone may enter (steps run as `nobody`).
pub fn open_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Writes `path` with `mode`.
pub fn write_with_mode(path: &Path, content: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Makes directory `path` with `mode`.
pub fn mkdir_with_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
