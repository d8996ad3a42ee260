//! The container image keeps the sandbox where it will run: built offline
//! with Debian's podman from the project's Dockerfile (its runtime stage as
//! written; its build stage replaced by a stand-in holding this build's
//! binary, and its `debian:bookworm-slim` base made with debootstrap, since
//! no image can be pulled here), then run in Kubernetes' Baseline profile
//! (capabilities dropped to SETUID, SETGID, KILL, CHOWN, FOWNER, no
//! privilege escalation, a read-only root filesystem) and under a user
//! namespace of 1,024 ids (`podman --userns=auto`'s size; Kubernetes'
//! `hostUsers: false`). A real Alertmanager payload is posted to each, a
//! step reports what it observes, and the sandbox report must say the same.
//!
//! podman runs with a config file of the test's own, never a changed
//! machine config: runc (crun refuses this host's hybrid cgroups) and
//! explicit ulimits (root here lacks CAP_SYS_RESOURCE to raise podman's
//! defaults).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::exec::{require, require_root};
use crate::helpers::{stderr, stdout};
use crate::sandbox_report::{assert_report_matches, observed};

/// The test image's name.
pub const IMAGE: &str = "localhost/runbookd:test";
/// The Dockerfile's base, made here with debootstrap when missing.
const BASE: &str = "docker.io/library/debian:bookworm-slim";

/// A containers.conf of this run's own (`CONTAINERS_CONF`), so that every
/// podman call uses runc and ulimits this host allows (`podman play kube`
/// has no `--ulimit`).
fn containers_conf() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let (nofile, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .unwrap_or((1024, 1024));
        let path = std::env::temp_dir().join(format!(
            "runbookd-test-containers-{}.conf",
            std::process::id()
        ));
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc=4096:4096\"]\n\n[engine]\nruntime = \"runc\"\n"
        );
        std::fs::write(&path, conf).unwrap();
        path
    })
}

/// `podman ARGS…`, configured by [`containers_conf`].
pub fn podman(args: &[&str]) -> Command {
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", containers_conf()).args(args);
    cmd
}

/// Runs `cmd`, panicking with its output when it fails.
pub fn ok(mut cmd: Command, what: &str) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        stdout(&o),
        stderr(&o)
    );
    o
}

/// Whether podman, runc and debootstrap are here (under `CI=true` they must be).
pub fn podman_available(what: &str) -> bool {
    let have = |c: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    require_root(what)
        && require(
            have("podman") && have("runc") && have("debootstrap") && have("strip"),
            &format!("podman, runc, debootstrap and strip ({what})"),
        )
}

/// Builds the image once per test run (`IMAGE`), returning its name.
pub fn image() -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(build_image)
        .as_ref()
        .unwrap_or_else(|e| panic!("building the image: {e}"));
    IMAGE
}

fn build_image() -> Result<(), String> {
    let exists = podman(&["image", "exists", BASE])
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        make_base()?;
    }
    let ctx = tempfile::tempdir().map_err(|e| e.to_string())?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The runtime stage copies `runbooks/`; the stand-in, the binary.
    copy_dir(&repo.join("runbooks"), &ctx.path().join("runbooks"));
    let o = Command::new("strip")
        .arg("-o")
        .arg(ctx.path().join("runbookd"))
        .arg(env!("CARGO_BIN_EXE_runbookd"))
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("strip: {}", stderr(&o)));
    }
    let dockerfile = std::fs::read_to_string(repo.join("Dockerfile")).unwrap();
    let runtime = dockerfile
        .find("\nFROM debian:bookworm-slim")
        .ok_or("the Dockerfile has no `FROM debian:bookworm-slim` runtime stage")?;
    assert!(
        dockerfile[..runtime].contains(" AS build")
            && dockerfile[runtime..].contains("--from=build /src/target/release/runbookd "),
        "the Dockerfile's stages changed: update the stand-in\n{dockerfile}"
    );
    let containerfile = format!(
        "# A stand-in for the build stage: this build's binary where cargo puts it.\n\
         FROM {BASE} AS build\nCOPY runbookd /src/target/release/runbookd\n{}",
        &dockerfile[runtime..]
    );
    std::fs::write(ctx.path().join("Containerfile"), containerfile).unwrap();
    let mut build = podman(&["build", "--pull=never", "--format=docker", "--quiet"]);
    build
        .args(["-t", IMAGE, "-f"])
        .arg(ctx.path().join("Containerfile"))
        .arg(ctx.path());
    let o = build.output().map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("podman build: {}\n{}", stdout(&o), stderr(&o)));
    }
    // The previous test image, untagged now.
    let _ = podman(&["image", "prune", "-f"]).output();
    Ok(())
}

/// A bookworm minbase from the Debian archive apt uses, imported as the
/// Dockerfile's base (~35 s, once per machine).
fn make_base() -> Result<(), String> {
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rootfs = root.path().join("rootfs");
    let o = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&rootfs)
        .arg("http://deb.debian.org/debian")
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("debootstrap: {}", stdout(&o)));
    }
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "rm -rf {r}/var/lib/apt/lists/* {r}/var/cache/apt/*.bin && tar -C {r} -c . | podman import - {BASE}",
            r = rootfs.display()
        ))
        .env("CONTAINERS_CONF", containers_conf())
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("podman import: {}", stderr(&o)));
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A container of the image, removed when dropped.
pub struct Container {
    pub name: String,
    pub url: String,
    /// Its data volume (the store and the credentials runbookd made).
    pub data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Container {
    /// Runs the image with `flags` on the host network at a free loopback
    /// port, with `runbooks` over the shipped ones and a data volume, and
    /// waits until it is ready.
    pub fn run(profile: &str, flags: &[&str], runbooks: &[(&str, &str)]) -> Container {
        let dir = crate::helpers::open_tempdir();
        let (rb, data) = (dir.path().join("runbooks"), dir.path().join("data"));
        std::fs::create_dir(&rb).unwrap();
        std::fs::create_dir(&data).unwrap();
        for (name, text) in runbooks {
            std::fs::write(rb.join(name), text).unwrap();
        }
        let name = format!("runbookd-test-{}-{profile}", std::process::id());
        let _ = podman(&["rm", "-f", &name]).output();
        let port = crate::alertmanager::free_port();
        let mut cmd = podman(&["run", "-d", "--name", &name, "--network=host"]);
        cmd.args(flags)
            .arg(format!("--volume={}:/var/lib/runbookd:U", data.display()))
            .arg(format!(
                "--volume={}:/etc/runbookd/runbooks:ro",
                rb.display()
            ))
            .arg(format!("--env=RUNBOOKD_LISTEN=127.0.0.1:{port}"))
            .arg(image());
        ok(cmd, &format!("podman run ({profile})"));
        let c = Container {
            name,
            url: format!("http://127.0.0.1:{port}"),
            data,
            _dir: dir,
        };
        wait_ready(&c.url, &|| c.logs());
        c
    }

    pub fn logs(&self) -> String {
        let o = podman(&["logs", &self.name]).output().unwrap();
        format!("{}{}", stdout(&o), stderr(&o))
    }

    /// `podman exec` in the container.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut cmd = podman(&["exec", &self.name]);
        cmd.args(args);
        stdout(&ok(cmd, "podman exec"))
    }
}

/// Waits until runbookd at `url` is ready (30 s), showing `logs` if never.
pub fn wait_ready(url: &str, logs: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new("curl")
            .args(["-fsS", "--max-time", "2", &format!("{url}/-/ready")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "runbookd never became ready: {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "2", &self.name]).output();
    }
}

/// Kubernetes' Baseline profile: the README's `docker run` flags (so the
/// line users copy is the one tested), checked to be that profile.
fn baseline() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("docker run -d")
        .expect("the README gives a `docker run` line");
    let line: String = readme[start..]
        .lines()
        .take_while(|l| !l.starts_with("docker exec"))
        .collect::<Vec<_>>()
        .join(" ");
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut joined = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if *w == "--tmpfs" {
            joined.push(format!("--tmpfs={}", words[i + 1]));
        } else if ["--cap-", "--security-opt", "--read-only"]
            .iter()
            .any(|p| w.starts_with(p))
        {
            joined.push((*w).to_owned());
        }
    }
    for needed in [
        "--cap-drop=ALL",
        "--cap-add=SETUID",
        "--cap-add=SETGID",
        "--cap-add=KILL",
        "--cap-add=CHOWN",
        "--cap-add=FOWNER",
        "--security-opt=no-new-privileges",
        "--read-only",
    ] {
        assert!(joined.iter().any(|f| f == needed), "{needed} in {line}");
    }
    assert_eq!(
        joined.iter().filter(|f| f.starts_with("--cap-add")).count(),
        5,
        "{line}"
    );
    joined
}

/// The captured Alertmanager payload (three DiskFull alerts, one group).
pub fn captured_payload() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/alertmanager/raw/firing-group-of-3.body"),
    )
    .unwrap()
}

/// Posts the captured payload to the container and returns what the LOOK
/// step printed and the server's status.
fn post_and_observe(c: &Container) -> (String, Value) {
    let webhook = std::fs::read_to_string(c.data.join("webhook.token")).unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(crate::sandbox_report::post_and_observe(
            &c.url,
            &webhook,
            &crate::helpers::operator_client(&c.data),
            captured_payload(),
            &|| c.logs(),
        ))
}

/// The LOOK runbook for the payload's DiskFull alerts.
pub fn look() -> String {
    crate::sandbox_report::look("DiskFull", Path::new("/var/lib/runbookd/operator.token"))
}

/// Nothing a step made is left in the container's runtime directory.
fn nothing_left(c: &Container) {
    let left = c.exec(&["find", "/tmp", "!", "-user", "root"]);
    assert_eq!(left.trim(), "", "left behind: {left}");
}

fn layer<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["sandbox"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == name)
        .unwrap_or_else(|| panic!("no {name}: {status}"))
}

#[test]
fn the_image_keeps_the_sandbox_in_the_baseline_profile() {
    if !podman_available("the container tests") {
        return;
    }
    let flags = baseline();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let c = Container::run("baseline", &flags, &[("look.yaml", &look())]);
    let (out, status) = post_and_observe(&c);
    assert_eq!(observed(&out, "uid"), "65534", "{out}");
    assert_eq!(observed(&out, "Seccomp"), "2", "{out}");
    assert_eq!(observed(&out, "credential"), "denied", "{out}");
    assert_report_matches(&status, &out);
    assert_eq!(layer(&status, "landlock")["enforced"], true, "{status:#}");
    // What the profile cannot give is reported missing, with why.
    for missing in ["cgroups", "ipc_isolation", "scratch_limit", "connect_guard"] {
        assert_eq!(layer(&status, missing)["enforced"], false, "{status:#}");
    }
    assert!(
        layer(&status, "scratch_limit")["detail"]
            .as_str()
            .unwrap()
            .contains("CAP_SYS_ADMIN"),
        "{status:#}"
    );
    nothing_left(&c);
    // `runbookd status` inside, as the README says.
    let text = c.exec(&["runbookd", "status", "--server", &c.url]);
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("uid_drop") && !l.contains("MISSING")),
        "{text}"
    );
}

#[test]
fn the_image_keeps_the_sandbox_under_a_user_namespace() {
    if !podman_available("the container tests") {
        return;
    }
    // 1,024 ids from a host range no one uses: nobody's 65534 is not in it.
    let profile = baseline();
    let mut flags = vec!["--uidmap=0:300000:1024", "--gidmap=0:300000:1024"];
    flags.extend(profile.iter().map(String::as_str));
    let c = Container::run("userns", &flags, &[("look.yaml", &look())]);
    let (out, status) = post_and_observe(&c);
    assert_eq!(observed(&out, "uid"), "1023", "{out}");
    assert_eq!(observed(&out, "credential"), "denied", "{out}");
    assert_report_matches(&status, &out);
    let uid = layer(&status, "uid_drop");
    assert_eq!(uid["enforced"], true);
    assert!(
        uid["detail"].as_str().unwrap().contains("not mapped"),
        "{uid}"
    );
    nothing_left(&c);
}
