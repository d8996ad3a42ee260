//! `runbookd run --plan`: the exact plan for every captured payload, stable
//! JSON, and hostile label values that stay inert data.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::{
    fixture, fixtures, plan_json, root, runbook_dir, runbookd, stderr, stdout, write_alert,
};

fn runbook_names(plan: &Value) -> Vec<Vec<String>> {
    plan["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["runbook"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn every_fixture_plans_against_the_example_runbooks() {
    let expected: BTreeMap<&str, &[&str]> = [
        // Its `service` label (`checkout "v2" ✓`) is no Kubernetes name, which
        // `high-api-latency` requires before passing it to kubectl.
        ("firing-group-by-multiple-labels.json", &[][..]),
        ("firing-group-of-3.json", &["disk-full"]),
        ("firing-single.json", &["high-load"]),
        ("resolved-before-firing.json", &["service-down"]),
        ("resolved.json", &["service-down"]),
    ]
    .into_iter()
    .collect();
    for path in fixtures() {
        let name = path.file_name().unwrap().to_str().unwrap();
        let (out, plan) = plan_json(&path, &root().join("runbooks"));
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(plan["format"], "runbookd.plan/v1");
        let source: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            plan["alerts"].as_array().unwrap().len(),
            source["alerts"].as_array().unwrap().len(),
            "{name}: one entry per alert"
        );
        let want: Vec<String> = expected
            .get(name)
            .copied()
            .unwrap_or_default()
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        for runs in runbook_names(&plan) {
            assert_eq!(runs, want, "{name}");
        }
        if want.is_empty() {
            assert!(
                plan["incident"].is_null(),
                "{name}: no incident without a match"
            );
        }
        // Text output works for every payload too.
        let text = runbookd(&["run", "--plan", "--alert", path.to_str().unwrap()]);
        assert!(text.status.success(), "{name}: {}", stderr(&text));
    }
}

#[test]
fn plan_json_shows_rendered_steps_env_and_limits() {
    let (_, plan) = plan_json(&fixture("firing-group-of-3.json"), &root().join("runbooks"));
    assert_eq!(
        plan["incident"],
        json!({"id": "INC-PLAN", "severity": "sev3"})
    );
    assert_eq!(plan["receiver"], "default");
    assert_eq!(plan["group_key"], "{}:{alertname=\"DiskFull\"}");
    let alert = &plan["alerts"][1];
    assert_eq!(alert["labels"]["instance"], "host-2");
    let run = &alert["runs"][0];
    assert_eq!(run["phase"], "remediation");
    assert_eq!(
        run["key"],
        json!({"runbook": "disk-full", "fingerprint": alert["fingerprint"], "starts_at": alert["starts_at"]})
    );
    assert_eq!(
        (
            run["timeout_ms"].as_u64(),
            run["concurrency"].as_u64(),
            run["cooldown_ms"].as_u64()
        ),
        (Some(300_000), Some(2), Some(900_000))
    );
    let steps = run["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["space", "inodes", "biggest-directories", "clean-up"]
    );
    assert_eq!(
        steps[0]["argv"],
        json!(["df", "--human-readable", "--", "/var"])
    );
    assert_eq!(
        (
            steps[0]["kind"].as_str(),
            steps[0]["timeout_ms"].as_u64(),
            steps[0]["continue_on_failure"].as_bool()
        ),
        (Some("run"), Some(10_000), Some(true))
    );
    let script = "du -x -h -d 1 -- \"$MOUNTPOINT\" 2>\"$TMPDIR/du.err\" | sort -r -h | head -n 15\nunread=$(grep -c 'Permission denied' \"$TMPDIR/du.err\")\nif [ \"$unread\" -gt 0 ]; then\n  echo \"note: $unread directories could not be read as $(id -un): these sizes are lower bounds\"\n  grep 'Permission denied' \"$TMPDIR/du.err\" | head -n 5\nfi\n";
    assert_eq!(steps[2]["script"], script);
    assert_eq!(steps[2]["argv"], json!(["/bin/sh", "-c", script]));
    let env = &steps[2]["env"];
    assert_eq!(env["MOUNTPOINT"], "/var");
    assert_eq!(env["ALERT_LABEL_ALERTNAME"], "DiskFull");
    assert_eq!(env["ALERT_LABEL_INSTANCE"], "host-2");
    assert_eq!(env["ALERT_STATUS"], "firing");
    assert_eq!(env["ALERT_FINGERPRINT"], alert["fingerprint"]);
    assert_eq!(env["INCIDENT_ID"], "INC-PLAN");
    assert_eq!(env["RUNBOOK"], "disk-full");
    assert!(
        env.get("PATH").is_none(),
        "PATH comes from the executor, not the plan"
    );
    assert_eq!(steps[3]["kind"], "manual");
    assert_eq!(steps[3]["text"], "Free space on host-2 under /var (rotate logs, prune images); grow the volume if usage keeps climbing.");
    assert!(steps[3]["argv"].is_null());
}

#[test]
fn steps_reading_earlier_results_are_deferred_to_run_time() {
    let (_, plan) = plan_json(
        &fixture("resolved-before-firing.json"),
        &root().join("runbooks"),
    );
    let steps = plan["alerts"][0]["runs"][0]["steps"].as_array().unwrap();
    let restart = steps.iter().find(|s| s["name"] == "restart").unwrap();
    assert_eq!(restart["when"]["decision"], "at_run_time");
    assert_eq!(
        restart["when"]["template"],
        "{{ne steps.[probe-health].status \"succeeded\"}}"
    );
    assert_eq!(
        restart["argv"],
        json!(["kubectl", "rollout", "restart", "deployment/api"]),
        "the command itself is known"
    );
    let on_failure = plan["alerts"][0]["runs"][0]["on_failure"]
        .as_array()
        .unwrap();
    assert_eq!(on_failure[0]["name"], "escalate");
}

#[test]
fn a_resolved_alert_plans_only_on_resolved_steps() {
    let (_, plan) = plan_json(&fixture("resolved.json"), &root().join("runbooks"));
    let run = &plan["alerts"][0]["runs"][0];
    assert_eq!(run["phase"], "resolution");
    assert_eq!(run["steps"].as_array().unwrap().len(), 1);
    assert_eq!(
        run["steps"][0]["argv"],
        json!([
            "echo",
            "recovered: api; alert ended at 2026-11-24T08:28:28.488Z"
        ])
    );
    assert_eq!(run["on_failure"], json!([]));
}

#[test]
fn when_conditions_known_at_plan_time_are_decided() {
    let dir = runbook_dir(&[(
        "w.yaml",
        "matchers: [alertname=W]\nsteps:\n  - name: yes\n    run: [echo, a]\n    when: '{{eq labels.env \"prod\"}}'\n  - name: no\n    run: [echo, b]\n    when: '{{#if labels.missing}}1{{else}}0{{/if}}'\n",
    )]);
    let alert = write_alert(dir.path(), &json!({"alertname": "W", "env": "prod"}));
    let (_, plan) = plan_json(&alert, dir.path());
    let steps = &plan["alerts"][0]["runs"][0]["steps"];
    assert_eq!(
        (
            steps[0]["when"]["decision"].as_str(),
            steps[0]["when"]["rendered"].as_str()
        ),
        (Some("run"), Some("true"))
    );
    assert_eq!(
        (
            steps[1]["when"]["decision"].as_str(),
            steps[1]["when"]["rendered"].as_str()
        ),
        (Some("skip"), Some("0"))
    );
}

#[test]
fn a_label_the_template_needs_but_the_alert_lacks_is_a_step_error() {
    let dir = runbook_dir(&[("m.yaml", "matchers: [alertname=M]\nsteps:\n  - name: restart\n    run: [kubectl, rollout, restart, \"deployment/{{labels.deployment}}\"]\n")]);
    let alert = write_alert(dir.path(), &json!({"alertname": "M"}));
    let (out, plan) = plan_json(&alert, dir.path());
    assert_eq!(
        out.status.code(),
        Some(1),
        "a plan with a step that cannot run exits 1"
    );
    let step = &plan["alerts"][0]["runs"][0]["steps"][0];
    assert_eq!(
        step["error"],
        "run[3]: the alert has no value for `labels.deployment`"
    );
    assert!(
        step["argv"].is_null(),
        "nothing half-rendered is shown as runnable"
    );
    let text = runbookd(&[
        "run",
        "--plan",
        "--alert",
        alert.to_str().unwrap(),
        "--runbooks",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        stdout(&text).contains("ERROR: run[3]: the alert has no value for `labels.deployment`"),
        "{}",
        stdout(&text)
    );
}

#[test]
fn bad_payload_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"version":"4","status":"firing","receiver":"r","groupKey":"g","alerts":[{"status":"firing","labels":{}}]}"#).unwrap();
    let out = runbookd(&["run", "--plan", "--alert", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("alerts[0]: missing field `startsAt`"),
        "{}",
        stderr(&out)
    );
    // `-` reads the payload from standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(["run", "--plan", "--output", "json", "--alert", "-"])
        .current_dir(root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        &std::fs::read(fixture("firing-single.json")).unwrap(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["alerts"][0]["runs"][0]["runbook"], "high-load");
}

const HOSTILE: &[&str] = &[
    "x'; touch pwned; echo '",
    "$(touch pwned)",
    "`touch pwned`",
    "a\nb; touch pwned",
    "\"; touch pwned; \"",
    "'",
    "''",
    "\\",
    "\\'",
    "--flag=1",
    "-n",
    "*",
    "~",
    "$HOME",
    "${IFS}touch${IFS}pwned",
    "; touch pwned #",
    "| touch pwned",
    "& touch pwned &",
    "> pwned",
    " leading and trailing ",
    "",
    "%s %n %%",
    "日本 ✓ \u{1b}[31m red",
    "<script>alert(1)</script>",
];

fn shells() -> Vec<&'static str> {
    ["/bin/sh", "/bin/dash", "/bin/bash"]
        .into_iter()
        .filter(|s| Path::new(s).exists())
        .collect()
}

#[test]
fn hostile_label_values_stay_inert_data() {
    let dir = runbook_dir(&[(
        "hostile.yaml",
        r#"matchers: [alertname = "Hostile"]
steps:
  - name: argv
    run: [printf, "%s", "{{labels.payload}}"]
  - name: alone
    shell: printf %s {{labels.payload}}
  - name: joined
    shell: printf %s prefix-{{labels.payload}}-suffix
  - name: nested
    shell: x=$(printf %s {{labels.payload}}); printf %s "$x"
"#,
    )]);
    assert!(shells().len() >= 2, "need /bin/sh and bash or dash");
    for value in HOSTILE {
        let alert = write_alert(
            dir.path(),
            &json!({"alertname": "Hostile", "payload": value}),
        );
        let (out, plan) = plan_json(&alert, dir.path());
        assert!(out.status.success(), "{value:?}: {}", stderr(&out));
        let steps = plan["alerts"][0]["runs"][0]["steps"].as_array().unwrap();
        // argv: exactly one element, byte-for-byte the label value.
        assert_eq!(
            steps[0]["argv"],
            json!(["printf", "%s", value]),
            "{value:?}"
        );
        assert_eq!(steps[0]["env"]["ALERT_LABEL_PAYLOAD"], *value);
        // shell: the script re-parses to the original value, and creates nothing.
        for (step, expected) in [
            (1, (*value).to_owned()),
            (2, format!("prefix-{value}-suffix")),
            (3, value.trim_end_matches('\n').to_owned()),
        ] {
            let script = steps[step]["script"].as_str().unwrap();
            if value.len() > 3 {
                assert!(
                    !script.contains(value),
                    "alert data in the script text: {script:?}"
                );
            }
            let vars: BTreeMap<String, String> =
                serde_json::from_value(steps[step]["vars"].clone()).unwrap();
            for sh in shells() {
                let work = tempfile::tempdir().unwrap();
                let out = Command::new(sh)
                    .arg("-c")
                    .arg(script)
                    .current_dir(work.path())
                    .env_clear()
                    .env("PATH", "/usr/bin:/bin")
                    .envs(&vars)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{sh} {script:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(
                    String::from_utf8(out.stdout).unwrap(),
                    expected,
                    "{sh}: {script:?}"
                );
                assert_eq!(
                    std::fs::read_dir(work.path()).unwrap().count(),
                    0,
                    "{sh}: {script:?} created a file"
                );
            }
        }
    }
}

#[test]
fn a_label_value_with_a_nul_byte_cannot_reach_a_program() {
    let dir = runbook_dir(&[("n.yaml", "matchers: [alertname=N]\nsteps:\n  - name: a\n    run: [echo, \"{{labels.v}}\"]\n  - name: b\n    shell: echo {{labels.v}}\n")]);
    let alert = write_alert(dir.path(), &json!({"alertname": "N", "v": "a\u{0}b"}));
    let (out, plan) = plan_json(&alert, dir.path());
    assert_eq!(out.status.code(), Some(1));
    let steps = &plan["alerts"][0]["runs"][0]["steps"];
    assert!(
        steps[0]["error"].as_str().unwrap().contains("NUL byte"),
        "{}",
        steps[0]
    );
    assert!(
        steps[1]["error"].as_str().unwrap().contains("NUL byte"),
        "{}",
        steps[1]
    );
}

#[test]
fn text_output_escapes_terminal_control_characters() {
    let dir = runbook_dir(&[(
        "t.yaml",
        "matchers: [alertname=T]\nsteps:\n  - name: a\n    shell: echo {{labels.v}}\n",
    )]);
    let alert = write_alert(
        dir.path(),
        &json!({"alertname": "T", "v": "\u{1b}]0;owned\u{7}"}),
    );
    let out = runbookd(&[
        "run",
        "--plan",
        "--alert",
        alert.to_str().unwrap(),
        "--runbooks",
        dir.path().to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "raw control characters reached the terminal: {text:?}"
    );
    assert!(text.contains("echo \"${RUNBOOKD_V1}\""), "{text}");
    assert!(
        text.contains(r#"where RUNBOOKD_V1="\u001b]0;owned\u0007""#),
        "{text}"
    );
}

#[test]
fn logs_can_be_json_lines() {
    let out = runbookd(&[
        "--log-format",
        "json",
        "run",
        "--alert",
        fixture("firing-single.json").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let logs = stderr(&out);
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "sandbox probed" && l["level"] == "INFO"),
        "{logs}"
    );
}

/// #23, item 13: an approval step's plan shows what it waits and what
/// happens then, also when its prompt reads earlier steps' results; a local
/// run asks the person at the terminal, and without one denies.
#[test]
fn approval_steps_plan_their_wait_and_a_local_run_asks_at_the_terminal() {
    let rb = "name: ask\nmatchers: [alertname = \"Ask\"]\nsteps:\n  - name: look\n    run: [echo, db-7]\n  - name: go\n    approve: {prompt: \"Restart {{steps.look.stdout}}?\", timeout: 10m, on_timeout: approve}\n  - name: after\n    run: [echo, restarted]\n";
    let dir = crate::helpers::runbook_dir(&[("a.yaml", rb)]);
    let alert = crate::helpers::write_alert(dir.path(), &json!({"alertname": "Ask"}));
    let args = |extra: &[&str]| {
        let mut v = vec![
            "run",
            "--alert",
            alert.to_str().unwrap(),
            "--runbooks",
            dir.path().to_str().unwrap(),
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let out = crate::helpers::runbookd(
        &args(&["--plan", "--output", "json"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let go = &plan["alerts"][0]["runs"][0]["steps"][1];
    assert_eq!(go["timeout_ms"], 600_000, "{go:#}");
    assert_eq!(go["approval"]["timeout_ms"], 600_000, "{go:#}");
    assert_eq!(go["approval"]["on_timeout"], "approve", "{go:#}");
    let text = crate::helpers::runbookd(
        &args(&["--plan"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let text = crate::helpers::stdout(&text);
    assert!(
        text.contains("2. go (approve; waits 10m, then approve)"),
        "{text}"
    );
    // No terminal (stdin is not one): denied, saying why; the run fails.
    let out = crate::helpers::runbookd(&args(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    let said = crate::helpers::stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("asks: Restart db-7\n? — no terminal to ask: denied")
            || said.contains("no terminal to ask: denied"),
        "{said}"
    );
    assert!(!said.contains("| restarted"), "{said}");
    // At a terminal, `y` approves and the run goes on.
    let harness = r#"
import os, pty, sys, time
pid, master = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
answered = False
while True:
    try:
        chunk = os.read(master, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
    if not answered and b"[y/N]" in out:
        os.write(master, b"y\n")
        answered = True
os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
"#;
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", harness, env!("CARGO_BIN_EXE_runbookd")]);
    cmd.args(args(&[]));
    let out = cmd.output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("[y/N]"), "{said}");
    assert!(
        said.contains("| restarted"),
        "approved at the terminal: {said}"
    );
}
