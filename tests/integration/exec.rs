//! The executor: run semantics, process control and isolation, against real
//! processes on this machine. Tier-0 behaviour is never skipped; a layer the
//! host lacks skips with a visible reason, except under `CI=true`, where it fails.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runbookd::alert::Notification;
use runbookd::exec::run::{Executor, Quiet, RunRequest};
use runbookd::exec::{ExecSettings, Probe, Sandbox, SandboxConfig, SpawnerConfig};
use runbookd::plan::IncidentRef;
use runbookd::record::{RunOutcome, RunResult, StepOutcome, StepRecord};
use runbookd::runbook::{load_dir, Severity};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::helpers::{runbook_dir, write_alert};

/// Whether a host layer is there; under CI it must be.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} is required under CI=true but unavailable"
    );
    eprintln!("SKIP: {what} is unavailable on this host");
    false
}

/// Whether this test runs as root (steps switch users, tmpfs mounts);
/// under CI it must.
pub fn require_root(why: &str) -> bool {
    require(nix::unistd::geteuid().is_root(), &format!("root ({why})"))
}

/// The spawn helper is runbookd itself (this test binary is not).
pub fn helper() -> SpawnerConfig {
    SpawnerConfig::Helper {
        program: env!("CARGO_BIN_EXE_runbookd").into(),
    }
}

pub fn executor(grace: Duration) -> Executor {
    executor_with(grace, helper())
}

pub fn executor_with(grace: Duration, spawner: SpawnerConfig) -> Executor {
    Executor {
        gates: None,
        slos: None,
        integrations: runbookd::integrations::Integrations::none(),
        sandbox: Sandbox::new(SandboxConfig {
            spawner,
            ..SandboxConfig::default()
        })
        .expect("sandbox"),
        settings: ExecSettings {
            kill_grace: grace,
            drain: Duration::from_millis(250),
            ..ExecSettings::default()
        },
    }
}

/// Runs the one runbook in `yaml` for an alert with `labels`.
pub async fn run_yaml(
    yaml: &str,
    labels: &serde_json::Value,
    cancel: &CancellationToken,
) -> RunResult {
    run_yaml_on(&executor(Duration::from_millis(300)), yaml, labels, cancel).await
}

/// [`run_yaml`] on a given executor.
pub async fn run_yaml_on(
    executor: &Executor,
    yaml: &str,
    labels: &serde_json::Value,
    cancel: &CancellationToken,
) -> RunResult {
    let dir = runbook_dir(&[("rb.yaml", yaml)]);
    let set = load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let n =
        Notification::from_json(&std::fs::read(write_alert(dir.path(), labels)).unwrap()).unwrap();
    let rb = set.iter().next().unwrap();
    let req = RunRequest {
        notification: &n,
        alert: &n.alerts[0],
        runbook: rb,
        incident: IncidentRef {
            id: "INC-0001".into(),
            severity: Severity::Sev3,
        },
        lease: None,
        resume: None,
        rerun_of: None,
    };
    executor.run(&req, Arc::new(Quiet), cancel).await
}

fn step<'a>(r: &'a RunResult, name: &str) -> &'a StepRecord {
    r.steps.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no step {name} in {:?}",
            r.steps.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

fn stdout(r: &RunResult, name: &str) -> String {
    step(r, name)
        .attempts
        .last()
        .map(|a| a.stdout.clone())
        .unwrap_or_default()
}

/// Live (not zombie) processes whose command line contains `token`.
pub fn survivors(token: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let p = entry.path();
        let Ok(cmdline) = std::fs::read(p.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let state = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        let zombie = state
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'));
        if cmdline.contains(token) && !zombie && !cmdline.contains("cargo") {
            found.push(format!("{}: {cmdline}", p.display()));
        }
    }
    found
}

fn token() -> String {
    format!(
        "{}.{}",
        9000 + std::process::id() % 1000,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 100_000
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_step_leaves_no_process_alive() {
    let t = token();
    let contained = require(
        Probe::run().cgroups.v2.is_some(),
        "a writable cgroup v2 hierarchy (setsid escapees)",
    );
    let escapee = if contained {
        format!("setsid sh -c 'sleep {t} & exit 0' &")
    } else {
        String::new()
    };
    let yaml = format!(
        r#"matchers: [alertname=X]
steps:
  - name: stubborn
    timeout: 1s
    shell: |
      sleep {t} &
      nohup sleep {t} >/dev/null 2>&1 &
      {escapee}
      sh -c 'trap "" TERM; sleep {t}' &
      trap '' TERM
      echo started
      sleep {t}
"#
    );
    let started = std::time::Instant::now();
    let r = run_yaml(&yaml, &json!({"alertname": "X"}), &CancellationToken::new()).await;
    let s = step(&r, "stubborn");
    assert!(
        matches!(&s.outcome, Some(StepOutcome::TimedOut { cause, .. }) if cause == "step timeout"),
        "{:?}",
        s.outcome
    );
    assert_eq!(r.outcome, RunOutcome::Failed);
    assert_eq!(
        stdout(&r, "stubborn"),
        "started\n",
        "output before the kill is kept"
    );
    assert!(s.attempts[0].stragglers_killed);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        survivors(&format!("sleep {t}")),
        Vec::<String>::new(),
        "processes outlived the step"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_grandchild_holding_stdout_does_not_hold_the_step() {
    let t = token();
    let yaml = format!("matchers: [alertname=X]\nsteps:\n  - name: bg\n    timeout: 60s\n    shell: echo done; sleep {t} &\n");
    let started = std::time::Instant::now();
    let r = run_yaml(&yaml, &json!({"alertname": "X"}), &CancellationToken::new()).await;
    assert_eq!(step(&r, "bg").outcome, Some(StepOutcome::Succeeded));
    assert_eq!(stdout(&r, "bg"), "done\n");
    assert!(step(&r, "bg").attempts[0].stragglers_killed);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the step waited for its grandchild: {:?}",
        started.elapsed()
    );
    assert_eq!(survivors(&format!("sleep {t}")), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_oversized_output_is_captured_bounded() {
    let yaml = r"matchers: [alertname=X]
steps:
  - name: binary
    shell: printf 'ok\377\376\000end'
  - name: long-line
    shell: head -c 200000000 /dev/zero | tr '\0' 'x'; echo; echo last
";
    let r = run_yaml(yaml, &json!({"alertname": "X"}), &CancellationToken::new()).await;
    assert_eq!(stdout(&r, "binary"), "ok\u{fffd}\u{fffd}\0end");
    let a = &step(&r, "long-line").attempts[0];
    assert_eq!(a.outcome, StepOutcome::Succeeded);
    assert_eq!(a.stdout_bytes, 200_000_006);
    assert!(
        a.stdout.len() < 200_000,
        "capture is capped: {} bytes kept",
        a.stdout.len()
    );
    assert!(
        a.stdout.contains("bytes of output omitted"),
        "truncation is marked"
    );
    assert!(a.stdout.ends_with("x\nlast\n"));
}

/// Both spawners (the helper, and runbookd forking steps itself) give a
/// step the same sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_sees_only_its_sandbox() {
    for spawner in [helper(), SpawnerConfig::Inline] {
        eprintln!("spawner: {spawner:?}");
        sandbox_view(&executor_with(Duration::from_millis(300), spawner)).await;
    }
}

async fn sandbox_view(executor: &Executor) {
    // An inherited descriptor without CLOEXEC must not reach the step.
    let leaked = nix::unistd::dup(std::io::stdin()).unwrap();
    let leaked_fd = std::os::fd::AsRawFd::as_raw_fd(&leaked);
    let t = token();
    let yaml = format!(
        r#"matchers: [alertname=X]
env:
  FROM_RUNBOOK: "{{{{labels.job}}}}"
steps:
  - name: env
    run: [env]
  - name: fds
    shell: n=0; while [ $n -lt 1024 ]; do [ -e /proc/$$/fd/$n ] && echo $n; n=$((n+1)); done
  - name: stdin
    shell: cat; echo "eof:$?"
  - name: umask
    shell: umask; touch f; stat -c %a f
  - name: cwd
    shell: pwd; echo "$HOME $TMPDIR"
  - name: uid
    run: [id, -u]
  - name: write-outside
    shell: touch /tmp/runbookd-landlock-{t} && echo wrote || echo denied
  - name: write-own-output
    shell: echo via-dev-stderr > /dev/stderr
  - name: status
    run: [grep, -E, '^(NoNewPrivs|Seccomp|CapEff):', /proc/self/status]
  - name: unshare
    run: [unshare, --net, 'true']
    continue_on_failure: true
"#
    );
    let r = run_yaml_on(
        executor,
        &yaml,
        &json!({"alertname": "X", "job": "api"}),
        &CancellationToken::new(),
    )
    .await;
    drop(leaked);
    let env = stdout(&r, "env");
    let mut names: Vec<&str> = env.lines().map(|l| l.split('=').next().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "ALERT_FINGERPRINT",
            "ALERT_LABEL_ALERTNAME",
            "ALERT_LABEL_JOB",
            "ALERT_STATUS",
            "ALERT_ANNOTATION_SUMMARY",
            "FROM_RUNBOOK",
            "HOME",
            "INCIDENT_ID",
            "LANG",
            "PATH",
            "RUNBOOK",
            "TMPDIR"
        ]
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>(),
        "{env}"
    );
    assert!(env.contains("FROM_RUNBOOK=api\n") && env.contains("LANG=C.UTF-8\n"));
    // `[ -e ]` only stats, so the shell opens nothing while looking.
    assert_eq!(
        stdout(&r, "fds"),
        "0\n1\n2\n",
        "fd {leaked_fd} or another leaked"
    );
    assert_eq!(stdout(&r, "stdin"), "eof:0\n");
    assert_eq!(stdout(&r, "umask"), "0077\n600\n");
    let cwd = stdout(&r, "cwd");
    let scratch = cwd.lines().next().unwrap().to_owned();
    assert!(
        Path::new(&scratch).starts_with(runbookd::exec::instance::default_runtime_dir()),
        "{cwd}"
    );
    assert_eq!(cwd, format!("{scratch}\n{scratch} {scratch}\n"));
    assert!(
        std::fs::read_dir(&scratch).map_or(true, |mut d| d.next().is_none()),
        "scratch is emptied (or removed) after the run"
    );
    let probe = Probe::run();
    // SAFETY: geteuid has no preconditions.
    let euid = nix::unistd::geteuid().as_raw();
    let expected_uid = if probe.euid_root { 65534 } else { euid };
    assert_eq!(stdout(&r, "uid"), format!("{expected_uid}\n"));
    if require(probe.landlock_abi > 0, "Landlock") {
        assert_eq!(stdout(&r, "write-outside"), "denied\n");
        assert!(!Path::new(&format!("/tmp/runbookd-landlock-{t}")).exists());
        assert!(step(&r, "uid").attempts[0]
            .sandbox
            .applied
            .iter()
            .any(|l| l.starts_with("landlock")));
    }
    assert_eq!(
        step(&r, "write-own-output").attempts[0].stderr,
        "via-dev-stderr\n"
    );
}

const HOSTILE: &[&str] = &[
    "$(touch pwned)",
    "`touch pwned`",
    "x'; touch pwned; echo '",
    "a\nb; touch pwned",
    "--flag=1",
    "-n",
    "\"; touch pwned #",
    "*",
    "日本 ✓",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_label_values_arrive_byte_for_byte_and_create_nothing() {
    let yaml = r#"matchers: [alertname=X]
steps:
  - name: argv
    run: [printf, "%s", "{{labels.v}}"]
  - name: shell
    shell: printf %s {{labels.v}}
  - name: env
    shell: printf %s "$ALERT_LABEL_V"
  - name: flag
    run: [echo, "{{labels.v}}"]
  - name: scratch
    shell: ls -A
"#;
    for v in HOSTILE {
        let r = run_yaml(
            yaml,
            &json!({"alertname": "X", "v": v}),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(stdout(&r, "argv"), *v, "argv");
        assert_eq!(stdout(&r, "shell"), *v, "shell");
        assert_eq!(stdout(&r, "env"), *v, "env");
        if *v != "-n" {
            assert_eq!(
                stdout(&r, "flag"),
                format!("{v}\n"),
                "an option-looking value is one argument"
            );
        }
        assert_eq!(stdout(&r, "scratch"), "", "{v:?} created a file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_rerun_a_failed_step() {
    let yaml = r#"matchers: [alertname=X]
steps:
  - name: flaky
    retries: 3
    retry_delay: 50ms
    shell: n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo "try $n"; [ $n -ge 3 ]
"#;
    let r = run_yaml(yaml, &json!({"alertname": "X"}), &CancellationToken::new()).await;
    let s = step(&r, "flaky");
    let outcomes: Vec<&StepOutcome> = s.attempts.iter().map(|a| &a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            &StepOutcome::Failed { exit_code: 1 },
            &StepOutcome::Failed { exit_code: 1 },
            &StepOutcome::Succeeded
        ]
    );
    assert_eq!(s.outcome, Some(StepOutcome::Succeeded));
    assert_eq!(s.attempts[2].stdout, "try 3\n");
    assert_eq!(r.outcome, RunOutcome::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_on_failure_goes_on_and_marks_the_run() {
    let yaml = "matchers: [alertname=X]\nsteps:\n  - name: a\n    run: ['false']\n    continue_on_failure: true\n  - name: b\n    run: [echo, b]\n";
    let r = run_yaml(yaml, &json!({"alertname": "X"}), &CancellationToken::new()).await;
    assert_eq!(
        step(&r, "a").outcome,
        Some(StepOutcome::Failed { exit_code: 1 })
    );
    assert_eq!(step(&r, "b").outcome, Some(StepOutcome::Succeeded));
    assert_eq!(r.outcome, RunOutcome::SucceededWithFailures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_stops_the_run_and_runs_on_failure() {
    let yaml = r#"matchers: [alertname=X]
steps:
  - name: check
    run: [echo, checked]
  - name: fix
    shell: echo fixing; exit 3
  - name: never
    run: [echo, never]
on_failure:
  - name: rollback
    run: [echo, "rollback after {{steps.fix.status}} {{steps.fix.exit_code}}, never={{steps.never.status}}"]
  - name: page
    manual: Page the owner of {{labels.alertname}}
"#;
    let r = run_yaml(yaml, &json!({"alertname": "X"}), &CancellationToken::new()).await;
    assert_eq!(r.outcome, RunOutcome::Failed);
    let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["check", "fix", "rollback", "page"]);
    assert_eq!(
        step(&r, "fix").outcome,
        Some(StepOutcome::Failed { exit_code: 3 })
    );
    assert_eq!(
        stdout(&r, "rollback"),
        "rollback after failed 3, never=not_run\n"
    );
    assert_eq!(r.checklist, ["Page the owner of X"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_reads_earlier_results_and_skips() {
    let yaml = r#"matchers: [alertname=X]
steps:
  - name: probe
    run: [echo, healthy]
  - name: restart
    run: [echo, restarting]
    when: '{{ne steps.probe.status "succeeded"}}'
  - name: report
    run: [echo, "probe said {{steps.probe.stdout}}"]
    when: '{{eq steps.probe.exit_code 0}}'
  - name: watch
    manual: watch it
"#;
    let r = run_yaml(yaml, &json!({"alertname": "X"}), &CancellationToken::new()).await;
    assert_eq!(
        step(&r, "restart").outcome,
        Some(StepOutcome::Skipped {
            reason: "`when` rendered `false`".into()
        })
    );
    assert!(
        step(&r, "restart").attempts.is_empty(),
        "a skipped step runs nothing"
    );
    assert_eq!(stdout(&r, "report"), "probe said healthy\n\n");
    assert_eq!(
        step(&r, "watch").outcome,
        None,
        "manual steps are open checklist items"
    );
    assert_eq!(r.checklist, ["watch it"]);
    assert_eq!(
        r.outcome,
        RunOutcome::Succeeded,
        "skips and checklist items do not fail a run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_timeout_stops_a_step_within_its_own_timeout() {
    let yaml = "matchers: [alertname=X]\ntimeout: 1s\nsteps:\n  - name: slow\n    timeout: 60s\n    run: [sleep, '30']\n  - name: after\n    run: [echo, after]\non_failure:\n  - name: cleanup\n    run: [echo, cleaned]\n";
    let started = std::time::Instant::now();
    let r = run_yaml(yaml, &json!({"alertname": "X"}), &CancellationToken::new()).await;
    assert!(
        matches!(&step(&r, "slow").outcome, Some(StepOutcome::TimedOut { cause, .. }) if cause == "run timeout"),
        "{:?}",
        step(&r, "slow").outcome
    );
    assert_eq!(r.outcome, RunOutcome::TimedOut);
    assert!(r.steps.iter().all(|s| s.name != "after"));
    assert_eq!(
        stdout(&r, "cleanup"),
        "cleaned\n",
        "on_failure runs after a run timeout"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_kills_the_running_step() {
    let t = token();
    let yaml = format!("matchers: [alertname=X]\nsteps:\n  - name: long\n    shell: sleep {t} & sleep {t}\n  - name: next\n    run: [echo, next]\n");
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.cancel();
    });
    let r = run_yaml(&yaml, &json!({"alertname": "X"}), &cancel).await;
    assert_eq!(step(&r, "long").outcome, Some(StepOutcome::Cancelled));
    assert_eq!(r.outcome, RunOutcome::Cancelled);
    assert!(r.steps.iter().all(|s| s.name != "next"));
    assert_eq!(survivors(&format!("sleep {t}")), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_running_step_kills_its_group() {
    let t = token();
    let yaml = format!(
        "matchers: [alertname=X]\nsteps:\n  - name: long\n    shell: sleep {t} & sleep {t}\n"
    );
    let dropped = tokio::time::timeout(
        Duration::from_millis(400),
        run_yaml(&yaml, &json!({"alertname": "X"}), &CancellationToken::new()),
    )
    .await;
    assert!(dropped.is_err(), "the run was still going");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(survivors(&format!("sleep {t}")), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_failures_and_render_errors_say_why() {
    let yaml = r#"matchers: [alertname=X]
steps:
  - name: missing
    run: [no-such-program-runbookd]
    continue_on_failure: true
  - name: unrendered
    run: [echo, "{{labels.deployment}}"]
    continue_on_failure: true
"#;
    let r = run_yaml(yaml, &json!({"alertname": "X"}), &CancellationToken::new()).await;
    assert!(
        matches!(&step(&r, "missing").outcome, Some(StepOutcome::SpawnFailed { reason }) if reason.contains("`no-such-program-runbookd`: not found")),
        "{:?}",
        step(&r, "missing").outcome
    );
    assert!(
        matches!(&step(&r, "unrendered").outcome, Some(StepOutcome::SpawnFailed { reason }) if reason.contains("the alert has no value for `labels.deployment`")),
        "{:?}",
        step(&r, "unrendered").outcome
    );
    assert_eq!(r.outcome, RunOutcome::SucceededWithFailures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_none_blocks_a_loopback_connect() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");
    let yaml = format!("matchers: [alertname=X]\nsteps:\n  - name: host\n    run: [bash, -c, '{connect}']\n    continue_on_failure: true\n  - name: isolated\n    network: none\n    run: [bash, -c, '{connect}']\n    continue_on_failure: true\n");
    let r = run_yaml(&yaml, &json!({"alertname": "X"}), &CancellationToken::new()).await;
    assert_eq!(
        stdout(&r, "host"),
        "connected\n",
        "the listener is reachable without isolation"
    );
    if !require(Probe::run().netns, "network namespaces (runbookd as root)") {
        assert!(
            matches!(&step(&r, "isolated").outcome, Some(StepOutcome::SpawnFailed { reason }) if reason.contains("network: none"))
        );
        return;
    }
    let s = step(&r, "isolated");
    assert_eq!(s.outcome, Some(StepOutcome::Failed { exit_code: 1 }));
    assert!(
        s.attempts[0].stderr.contains("Connection refused"),
        "loopback is up but empty: {}",
        s.attempts[0].stderr
    );
    assert!(s.attempts[0]
        .sandbox
        .applied
        .contains(&"network:none".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_kills_a_step_that_allocates_past_it() {
    let yaml = r"matchers: [alertname=X]
steps:
  - name: hog
    resources: {memory: 64Mi, pids: 32}
    shell: x=$(head -c 300000000 /dev/zero | tr '\0' x); echo survived
";
    let r = run_yaml(yaml, &json!({"alertname": "X"}), &CancellationToken::new()).await;
    let h = Probe::run().cgroups;
    if !require(
        h.v1_memory.is_some() || h.v2_memory,
        "a memory cgroup controller",
    ) {
        return;
    }
    let s = step(&r, "hog");
    assert!(
        matches!(&s.outcome, Some(StepOutcome::Signalled { signal: 9, cause: Some(c) }) if c.contains("memory limit")),
        "{:?} {}",
        s.outcome,
        s.attempts[0].stderr
    );
    assert!(!s.attempts[0].stdout.contains("survived"));
}

#[test]
fn run_executes_and_prints_a_live_transcript() {
    let out = crate::helpers::runbookd(&[
        "run",
        "--alert",
        crate::helpers::fixture("firing-single.json")
            .to_str()
            .unwrap(),
    ]);
    let text = crate::helpers::stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        crate::helpers::stderr(&out)
    );
    for expected in [
        "=== runbook high-load for alert HighCPU [firing] fingerprint 58a4d9157c1ffbd9",
        "  > load-average [run]\n      $ [\"uptime\"]\n      |  ",
        "  = load-average: succeeded in ",
        "      $ ps -eo pid,user,pcpu,pmem,etime,comm --sort=-pcpu | head -n 11\n      |   PID USER",
        "  = investigate: open checklist item: Find what drives the load on web-1:9100 (CPU usage above 90% on web-1)",
        "=== run high-load: succeeded in ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // A failing run exits 1 and marks stderr lines.
    let dir = runbook_dir(&[(
        "f.yaml",
        "matchers: [alertname=F]\nsteps:\n  - name: boom\n    shell: echo oops >&2; exit 4\n",
    )]);
    let alert = write_alert(dir.path(), &json!({"alertname": "F"}));
    let out = crate::helpers::runbookd(&[
        "run",
        "--alert",
        alert.to_str().unwrap(),
        "--runbooks",
        dir.path().to_str().unwrap(),
    ]);
    let text = crate::helpers::stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("      ! oops\n  = boom: FAILED with exit status 4 in "),
        "{text}"
    );
    assert!(text.contains("=== run f: failed in "), "{text}");
}

#[test]
fn a_gibibyte_of_output_keeps_runbookd_memory_bounded() {
    let dir = runbook_dir(&[(
        "big.yaml",
        "matchers: [alertname=B]\nsteps:\n  - name: gib\n    timeout: 300s\n    shell: head -c 1073741824 /dev/zero | tr '\\0' x\n",
    )]);
    let alert = write_alert(dir.path(), &json!({"alertname": "B"}));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args([
            "run",
            "--alert",
            alert.to_str().unwrap(),
            "--runbooks",
            dir.path().to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // runbookd's own high-water mark (VmHWM belongs to its address space
    // since exec; wait4's ru_maxrss would also count the memory of this test
    // process at spawn time, which has nothing to do with runbookd).
    let status_file = format!("/proc/{}/status", child.id());
    let mut high_water_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                high_water_kib = high_water_kib.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "runbookd failed: {status}");
    assert!(high_water_kib > 0, "never read runbookd's memory");
    let peak_mib = high_water_kib / 1024;
    eprintln!("runbookd peak RSS for 1 GiB of step output: {peak_mib} MiB");
    assert!(
        peak_mib < 64,
        "peak RSS {peak_mib} MiB grew with the output"
    );
}

/// A step's process group is signalled only while its leader is unreaped:
/// once reaped, the group id can be reused by an unrelated process group,
/// which a late `kill(-pgid)` would hit. Checked on the real binary under
/// strace: every `kill(-PGID, …)` comes before the wait that reaps PGID.
#[test]
fn a_process_group_is_never_signalled_after_its_leader_is_reaped() {
    let strace = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok();
    if !require(strace, "strace (Debian package strace)") {
        return;
    }
    let dir = runbook_dir(&[(
        "t.yaml",
        "matchers: [alertname=T]\nsteps:\n  - name: quick\n    run: ['true']\n  - name: slower\n    run: [sleep, '0.2']\n  - name: failing\n    run: ['false']\n    continue_on_failure: true\n",
    )]);
    let alert = write_alert(dir.path(), &json!({"alertname": "T"}));
    let trace = dir.path().join("trace");
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=kill,wait4,waitid", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_runbookd"))
        .args(["run", "--alert"])
        .arg(&alert)
        .arg("--runbooks")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    let kill = regex::Regex::new(r"\bkill\(-(\d+), SIG\w+\)").unwrap();
    let reaped = regex::Regex::new(r"\b(?:wait4|waitid)\b.*= (\d+)$|resumed>.*= (\d+)$").unwrap();
    let mut reaped_at: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    let mut kills: Vec<(u32, usize)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(c) = kill.captures(line) {
            kills.push((c[1].parse().unwrap(), n));
        }
        if let Some(c) = reaped.captures(line) {
            let pid: u32 = c.get(1).or(c.get(2)).unwrap().as_str().parse().unwrap();
            reaped_at.entry(pid).or_insert(n);
        }
    }
    let checked: Vec<u32> = kills
        .iter()
        .filter(|(pgid, _)| reaped_at.contains_key(pgid))
        .map(|(pgid, _)| *pgid)
        .collect();
    assert!(
        checked.len() >= 3,
        "the three steps' groups are signalled and reaped: {kills:?} {reaped_at:?}\n{text}"
    );
    for (pgid, at) in &kills {
        if let Some(reap) = reaped_at.get(pgid) {
            assert!(
                at < reap,
                "kill(-{pgid}) at trace line {at} after its leader was reaped at line {reap}:\n{text}"
            );
        }
    }
}

/// The pid of the spawn helper that started `pid` (its nearest ancestor
/// running `__spawn-helper`).
fn helper_of(mut pid: i32) -> Option<i32> {
    for _ in 0..8 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        pid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        if String::from_utf8_lossy(&cmdline).contains("__spawn-helper") {
            return Some(pid);
        }
    }
    None
}

/// The spawn helper killed while a step runs: the step fails at once with
/// the reason, its processes (a background one included) are gone, and the
/// next step starts in a new helper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_helper_killed_mid_step_fails_the_step_and_is_replaced() {
    let exec = Arc::new(executor(Duration::from_millis(300)));
    let t = token();
    let yaml = format!(
        "matchers: [alertname=X]\nsteps:\n  - name: long\n    timeout: 60s\n    shell: sleep {t} & sleep {t}\n"
    );
    let (e, y) = (exec.clone(), yaml.clone());
    let run = tokio::spawn(async move {
        run_yaml_on(
            &e,
            &y,
            &json!({"alertname": "X"}),
            &CancellationToken::new(),
        )
        .await
    });
    let token = format!("sleep {t}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let sleeper = loop {
        let found = survivors(&token);
        if found.len() >= 2 {
            break found[0].clone();
        }
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pid: i32 = sleeper
        .strip_prefix("/proc/")
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    let helper = helper_of(pid).expect("the step's spawn helper");
    let killed_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run ends soon after the helper died")
        .unwrap();
    assert!(
        killed_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed_at.elapsed()
    );
    assert!(
        matches!(&step(&r, "long").outcome, Some(StepOutcome::SpawnFailed { reason }) if reason.contains("the spawn helper died while the step ran")),
        "{:?}",
        step(&r, "long").outcome
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while !survivors(&token).is_empty() {
        assert!(
            Instant::now() < deadline,
            "step processes outlived the helper: {:?}",
            survivors(&token)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = run_yaml_on(
        &exec,
        "matchers: [alertname=X]\nsteps:\n  - name: next\n    run: [echo, fine]\n",
        &json!({"alertname": "X"}),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(step(&again, "next").outcome, Some(StepOutcome::Succeeded));
    assert_eq!(stdout(&again, "next"), "fine\n");
}

/// A spawn helper that cannot start stops runbookd from starting, saying which.
#[test]
fn a_spawn_helper_that_does_not_start_is_an_error_at_startup() {
    let err = Sandbox::new(SandboxConfig {
        spawner: SpawnerConfig::Helper {
            program: "/bin/false".into(),
        },
        ..SandboxConfig::default()
    })
    .err()
    .expect("no sandbox without its helper");
    let msg = err.to_string();
    assert!(
        msg.contains("the spawn helper `/bin/false` did not start"),
        "{msg}"
    );
}

/// Alert values too large for an exec fail their step with the reason
/// (the plan refuses them; the spawn helper would too, at 2 MiB), and only
/// that step: the helper is unharmed and runs the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_step_environment_fails_that_step_alone() {
    let exec = executor(Duration::from_millis(300));
    // Each variable under the kernel's per-string limit, 2.4 MB together.
    let big = "x".repeat(120 << 10);
    let mut vars = String::new();
    for i in 0..20 {
        std::fmt::Write::write_fmt(
            &mut vars,
            format_args!("  BIG{i}: \"{{{{labels.big}}}}\"\n"),
        )
        .unwrap();
    }
    let r = run_yaml_on(
        &exec,
        &format!(
            "matchers: [alertname=X]\nenv:\n{vars}steps:\n  - name: huge\n    run: ['true']\n"
        ),
        &json!({"alertname": "X", "big": big}),
        &CancellationToken::new(),
    )
    .await;
    assert!(
        matches!(&step(&r, "huge").outcome, Some(StepOutcome::SpawnFailed { reason }) if reason.contains("arguments and environment take") && reason.contains("over the limit")),
        "{:?}",
        step(&r, "huge").outcome
    );
    let again = run_yaml_on(
        &exec,
        "matchers: [alertname=X]\nsteps:\n  - name: next\n    run: [echo, fine]\n",
        &json!({"alertname": "X"}),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(stdout(&again, "next"), "fine\n");
}

/// Step cgroups are reused only by steps with the same limits: the third
/// step gets the first one's cgroup back, the second (its own pids limit)
/// another, and each records the limit it ran under.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cgroup_is_reused_only_with_the_same_limits() {
    if !require(Probe::run().cgroups.v2.is_some(), "a cgroup v2 hierarchy") {
        return;
    }
    let exec = executor(Duration::from_millis(300));
    let r = run_yaml_on(
        &exec,
        "matchers: [alertname=X]\nsteps:\n  - name: a\n    run: [cat, /proc/self/cgroup]\n  - name: b\n    run: [cat, /proc/self/cgroup]\n    resources: {pids: 20}\n  - name: c\n    run: [cat, /proc/self/cgroup]\n",
        &json!({"alertname": "X"}),
        &CancellationToken::new(),
    )
    .await;
    let v2 = |name: &str| {
        stdout(&r, name)
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
            .unwrap_or_else(|| panic!("no v2 cgroup for {name}"))
    };
    assert_eq!(v2("a"), v2("c"), "the same limits reuse the cgroup");
    assert_ne!(v2("a"), v2("b"), "other limits get another cgroup");
    let applied = |name: &str| step(&r, name).attempts[0].sandbox.applied.join(" ");
    assert!(applied("b").contains("pids:20"), "{}", applied("b"));
    assert!(applied("c").contains("pids:512"), "{}", applied("c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_run_gets_a_new_directory_in_a_reused_slot() {
    if !require(Probe::run().cgroups.v2.is_some(), "a cgroup v2 hierarchy")
        || !require_root("steps run as another user, in slots")
    {
        return;
    }
    let exec = executor(Duration::from_millis(300));
    let x = json!({"alertname": "X"});
    let cancel = CancellationToken::new();
    // A run leaves all it can in its directory: files, a directory it made
    // unreadable, a link, a fifo, and the directory opened to everyone.
    let first = run_yaml_on(
        &exec,
        "matchers: [alertname=X]\nsteps:\n  - name: plant\n    shell: pwd; echo secret > f; mkdir -p d/e; echo s > d/e/g; chmod 000 d; ln -s / root; mkfifo p; chmod 777 .\n",
        &x,
        &cancel,
    )
    .await;
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:?}");
    let dir = stdout(&first, "plant").trim().to_owned();
    assert!(!Path::new(&dir).exists(), "the run's directory is removed");
    let t = token();
    let look = format!(
        "matchers: [alertname=X]\nsteps:\n  - name: look\n    shell: pwd; ls -A; stat -c %a .; touch mine && echo wrote; ls .. 2>/dev/null || echo 'slot not listable'; touch ../planted 2>/dev/null && echo 'slot writable'; touch /tmp/runbookd-reused-{t} 2>/dev/null && echo escaped; true\n"
    );
    let second = run_yaml_on(&exec, &look, &x, &cancel).await;
    let seen = stdout(&second, "look");
    let (at, rest) = seen.split_once('\n').unwrap();
    assert_ne!(at, dir, "a new directory");
    assert_eq!(
        Path::new(at).parent(),
        Path::new(&dir).parent(),
        "in the same slot"
    );
    assert_eq!(rest, "700\nwrote\nslot not listable\n", "{seen}");
    assert!(!Path::new(&format!("/tmp/runbookd-reused-{t}")).exists());

    // Two runs at once never share a slot.
    let (a, b) = tokio::join!(
        run_yaml_on(
            &exec,
            "matchers: [alertname=X]\nsteps:\n  - name: at\n    shell: pwd; sleep 0.3\n",
            &x,
            &cancel
        ),
        run_yaml_on(
            &exec,
            "matchers: [alertname=X]\nsteps:\n  - name: at\n    shell: pwd; sleep 0.3\n",
            &x,
            &cancel
        ),
    );
    let parent = |r: &RunResult| {
        Path::new(stdout(r, "at").trim())
            .parent()
            .unwrap()
            .to_owned()
    };
    assert_ne!(parent(&a), parent(&b));
}

/// The attack on reused scratch directories: a run that learns another
/// run's directory (here from that run, as colluding steps would) watches
/// it with inotify, which Landlock does not mediate, then waits for a later
/// run to be given the same directory and reads the names of its files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cannot_watch_a_later_runs_directory() {
    if !require(Probe::run().cgroups.v2.is_some(), "a cgroup v2 hierarchy")
        || !require_root("steps run as another user, in slots")
    {
        return;
    }
    let exec = Arc::new(executor(Duration::from_millis(300)));
    let x = json!({"alertname": "X"});
    let from = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let to = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (port, watcher_port) = (
        from.local_addr().unwrap().port(),
        to.local_addr().unwrap().port(),
    );
    // Passes the leaker's line on to the watcher (each given 20 s to call).
    let accept = |l: &std::net::TcpListener| {
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match l.accept() {
                Ok((c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    return Some(c);
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return None,
            }
        }
    };
    let relay = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let mut line = String::new();
        std::io::BufReader::new(accept(&from)?)
            .read_line(&mut line)
            .ok()?;
        accept(&to)?.write_all(line.as_bytes()).ok()?;
        Some(line)
    });
    let leaker = format!(
        "matchers: [alertname=X]\nsteps:\n  - name: leak\n    run: [python3, -c, 'import os, socket, time; s = socket.create_connection((\"127.0.0.1\", {port})); s.sendall((os.getcwd() + \"\\n\").encode()); s.close(); time.sleep(1)']\n"
    );
    let watcher = format!(
        r#"matchers: [alertname=X]
steps:
  - name: watch
    run:
      - python3
      - -c
      - |
        import ctypes, os, select, socket, struct, time
        libc = ctypes.CDLL(None, use_errno=True)
        s = socket.create_connection(("127.0.0.1", {watcher_port}))
        path = s.makefile().readline().strip()
        fd = libc.inotify_init1(0)
        for p in (path, os.path.dirname(path)):
            print("watch", p == path and "run" or "slot", libc.inotify_add_watch(fd, p.encode(), 0x100 | 0x80 | 0x2) >= 0, flush=True)
        end = time.time() + 4
        while time.time() < end:
            if select.select([fd], [], [], 0.1)[0]:
                buf = os.read(fd, 65536)
                i = 0
                while i < len(buf):
                    wd, mask, cookie, n = struct.unpack_from("iIII", buf, i)
                    print("event", buf[i + 16:i + 16 + n].rstrip(b"\0").decode(errors="replace"), flush=True)
                    i += 16 + n
"#
    );
    let (e1, e2) = (exec.clone(), exec.clone());
    let (x1, x2) = (x.clone(), x.clone());
    let watching =
        tokio::spawn(
            async move { run_yaml_on(&e2, &watcher, &x2, &CancellationToken::new()).await },
        );
    let leak_run = run_yaml_on(&e1, &leaker, &x1, &CancellationToken::new()).await;
    assert_eq!(leak_run.outcome, RunOutcome::Succeeded, "{leak_run:?}");
    let line = tokio::task::spawn_blocking(move || relay.join().unwrap())
        .await
        .unwrap();
    assert!(line.is_some(), "the leaker and the watcher called");
    // The next run takes the slot the leaker gave back.
    let later = run_yaml_on(
        &exec,
        "matchers: [alertname=X]\nsteps:\n  - name: work\n    shell: pwd; echo key > later-secret-name; sleep 0.5\n",
        &x,
        &CancellationToken::new(),
    )
    .await;
    let watch_run = watching.await.unwrap();
    let seen = stdout(&watch_run, "watch");
    let at = stdout(&later, "work");
    assert!(
        seen.contains("watch run True"),
        "the watcher got its watch on the leaked directory: {seen}"
    );
    assert!(
        seen.contains("watch slot False"),
        "a slot cannot be watched: {seen}"
    );
    assert!(
        !seen.contains("later-secret-name"),
        "the watcher saw the later run's files ({at}): {seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cgroup_with_a_child_cgroup_or_frozen_is_not_reused() {
    use runbookd::exec::cgroup::{Limits, StepCgroup};
    let probe = Probe::run();
    let Some(v2) = probe.cgroups.v2.clone() else {
        require(false, "a cgroup v2 hierarchy");
        return;
    };
    let instance = format!("test{}", token().replace('.', ""));
    let cg = StepCgroup::create(&probe.cgroups, &instance, Limits::default()).expect("cgroup");
    let parent = v2.join(format!("runbookd-{instance}"));
    let dir = std::fs::read_dir(&parent)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("the step cgroup");
    assert!(cg.reusable(), "an empty step cgroup is reused");
    std::fs::create_dir(dir.join("left-behind")).unwrap();
    assert!(!cg.reusable(), "a child cgroup left by a step");
    std::fs::remove_dir(dir.join("left-behind")).unwrap();
    std::fs::write(dir.join("cgroup.freeze"), "1").unwrap();
    assert!(!cg.reusable(), "a frozen cgroup");
    std::fs::write(dir.join("cgroup.freeze"), "0").unwrap();
    assert!(cg.reusable());
    cg.remove().await;
    let _ = std::fs::remove_dir(&parent);
}

/// `writable_paths: [/tmp]` while the runtime dir is `/tmp/runbookd-<uid>`
/// granted writing every run's scratch directory, and a parent of the store
/// granted writing the store: both now fail the step, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writable_path_over_the_runtime_dir_or_a_hidden_path_fails_the_step() {
    if !require(Probe::run().landlock_abi > 0, "Landlock") {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let store = base.path().join("store");
    std::fs::create_dir(&store).unwrap();
    // Root steps: file modes alone would not stop the writes.
    let exec = Executor {
        gates: None,
        slos: None,
        integrations: runbookd::integrations::Integrations::none(),
        sandbox: Sandbox::new(SandboxConfig {
            spawner: helper(),
            allow_root_steps: true,
            hidden: vec![store.clone()],
            ..SandboxConfig::default()
        })
        .expect("sandbox"),
        settings: ExecSettings::default(),
    };
    let runtime = runbookd::exec::instance::default_runtime_dir();
    let t = token();
    let yaml = format!(
        "matchers: [alertname=X]\nsteps:\n  - name: runtime\n    writable_paths: [{}]\n    shell: touch {}/planted-{t}\n    continue_on_failure: true\n  - name: store\n    writable_paths: [{}]\n    shell: touch {}/planted\n    continue_on_failure: true\n",
        runtime.parent().unwrap().display(),
        runtime.display(),
        base.path().display(),
        store.display(),
    );
    let r = run_yaml_on(
        &exec,
        &yaml,
        &json!({"alertname": "X"}),
        &CancellationToken::new(),
    )
    .await;
    // The runtime dir's parent may hold the store too.
    let parent = runtime.parent().unwrap().to_string_lossy().into_owned();
    for (name, named) in [("runtime", &*parent), ("store", &*store.to_string_lossy())] {
        match &step(&r, name).attempts[0].outcome {
            StepOutcome::SpawnFailed { reason } => assert!(
                reason.contains("would let the step write") && reason.contains(named),
                "{name}: {reason}"
            ),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(!runtime.join(format!("planted-{t}")).exists());
    assert!(!store.join("planted").exists());
}

/// A run dropped mid-step (its processes killed as it drops) never hands
/// its slot on: nothing proved them gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_of_a_run_dropped_mid_step_is_not_handed_on() {
    if !require(Probe::run().cgroups.v2.is_some(), "a cgroup v2 hierarchy")
        || !require_root("steps run as another user, in slots")
    {
        return;
    }
    let runtime = tempfile::tempdir().unwrap();
    let exec = Executor {
        gates: None,
        slos: None,
        integrations: runbookd::integrations::Integrations::none(),
        sandbox: Sandbox::new(SandboxConfig {
            spawner: helper(),
            runtime_dir: runtime.path().join("rt"),
            ..SandboxConfig::default()
        })
        .expect("sandbox"),
        settings: ExecSettings::default(),
    };
    let x = json!({"alertname": "X"});
    let at = "matchers: [alertname=X]\nsteps:\n  - name: at\n    run: [pwd]\n";
    let slot = |r: &RunResult| {
        Path::new(stdout(r, "at").trim())
            .parent()
            .unwrap()
            .to_owned()
    };
    let first = slot(&run_yaml_on(&exec, at, &x, &CancellationToken::new()).await);
    let again = slot(&run_yaml_on(&exec, at, &x, &CancellationToken::new()).await);
    assert_eq!(first, again, "a finished run's slot is handed on");
    let t = token();
    let long =
        format!("matchers: [alertname=X]\nsteps:\n  - name: long\n    run: [sleep, '{t}']\n");
    let dropped = tokio::time::timeout(
        Duration::from_millis(400),
        run_yaml_on(&exec, &long, &x, &CancellationToken::new()),
    )
    .await;
    assert!(dropped.is_err(), "the run was still going");
    assert!(!first.exists(), "the dropped run's slot is removed");
    let after = slot(&run_yaml_on(&exec, at, &x, &CancellationToken::new()).await);
    assert_ne!(after, first);
}
