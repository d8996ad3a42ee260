//! `runbookd check`: the examples pass; a broken directory yields every error.

use crate::helpers::{runbook_dir, runbookd, stderr, stdout};

#[test]
fn example_runbooks_pass_check() {
    let out = runbookd(&["check", "runbooks"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "runbooks: 8 runbook(s), 41 step(s): ok\n");
}

#[test]
fn check_reports_every_error_with_file_line_col_and_names() {
    let out = runbookd(&["check", "tests/fixtures/runbooks-broken"]);
    assert_eq!(out.status.code(), Some(1));
    let d = "tests/fixtures/runbooks-broken";
    let expected = [
        format!("{d}/a-typo.yaml:2:1: runbook `typo`: unknown field `matcher`, expected one of `name`, `title`, `severity`, `description`, `matchers`, `timeout`, `concurrency`, `cooldown`, `rate`, `cancel_on_resolved`, `idempotent`, `run_as`, `env`, `steps`, `on_failure`, `on_resolved`, `communication`, `escalation`, `drills`, `inputs`, `requires`, `risk`, `on_frozen`; did you mean `matchers`?"),
        format!("{d}/b-many.yaml:2:11: runbook `many-problems`: unknown severity `sev5`: expected sev1 (worst), sev2, sev3 or sev4"),
        format!("{d}/b-many.yaml:5:5: runbook `many-problems`: invalid regex in matcher `severity=~\"(\"`: error: unclosed group"),
        format!("{d}/b-many.yaml:6:5: runbook `many-problems`: matcher value contains an unescaped double quote: `\"ops`"),
        format!("{d}/b-many.yaml:7:10: runbook `many-problems`: bad `timeout`: not a valid duration `10 parsecs`: unexpected ` `; write an integer and a unit (ms, s, m, h, d, w), largest first, e.g. 30s, 5m, 1h30m, 7d"),
        format!("{d}/b-many.yaml:8:14: runbook `many-problems`: `concurrency` must be at least 1"),
        format!("{d}/b-many.yaml:10:9: runbook `many-problems`: `PATH` is set by runbookd for every step and cannot be overridden"),
        format!("{d}/b-many.yaml:11:13: runbook `many-problems`: bad environment variable name `bad-name`: use letters, digits and `_`"),
        format!("{d}/b-many.yaml:13:5: runbook `many-problems`, step `both`: a step takes exactly one of `run`, `shell`, `manual`, `silence`, `approve` or `verify`; this one has run and shell"),
        format!("{d}/b-many.yaml:16:5: runbook `many-problems`, step `nothing`: a step takes exactly one of `run`, `shell`, `manual`, `silence`, `approve` or `verify`; this one has none of them"),
        format!("{d}/b-many.yaml:19:17: runbook `many-problems`, step `typo-var`: unknown template variable `lables.job`: `lables` is not in the template context (it has: alert, labels, annotations, group, incident, runbook, steps)"),
        format!("{d}/b-many.yaml:21:12: runbook `many-problems`, step `raw-shell`: `{{{{{{labels.job}}}}}}` is refused in shell scripts: the raw form `{{{{{{…}}}}}}` would make the value part of the script; use `{{{{…}}}}`, which passes it as a variable"),
        format!("{d}/b-many.yaml:23:12: runbook `many-problems`, step `quoted-shell`: `{{{{labels.instance}}}}` is inside single quotes, where it would not be expanded (leave it unquoted or use double quotes)"),
        format!("{d}/b-many.yaml:25:17: runbook `many-problems`, step `later-ref`: unknown template variable `steps.[last].status`: `last` is not a step that runs before this one (those are: both, nothing, typo-var, raw-shell, quoted-shell)"),
        format!("{d}/b-many.yaml:26:11: runbook `many-problems`, step `typo-var`: duplicate step name (also in `steps`)"),
        format!("{d}/b-many.yaml:28:14: runbook `many-problems`, step `typo-var`: `retries` does not apply to a manual step, which runs nothing"),
        format!("{d}/b-many.yaml:30:17: runbook `many-problems`, step `last`: unknown template variable `alert.statuz`: `alert` has no field `statuz` (it has: status, labels, annotations, startsAt, endsAt, generatorURL, fingerprint)"),
        format!("{d}/b-many.yaml:31:18: runbook `many-problems`, step `last`: bad `retry_delay`: not a valid duration `soon`: expected a number at `soon`; write an integer and a unit (ms, s, m, h, d, w), largest first, e.g. 30s, 5m, 1h30m, 7d"),
        format!("{d}/b-many.yaml:34:17: runbook `many-problems`, step `bad-syntax`: template syntax error at template line 1, column 25: invalid handlebars syntax"),
        format!("{d}/c-duplicate.yaml:2:7: runbook `many-problems`: duplicate runbook name: also defined in `{d}/b-many.yaml`"),
        format!("{d}/d-syntax.yaml:6:17: runbook `d-syntax`: YAML syntax error: while scanning a quoted scalar, found unexpected end of stream"),
        format!("{d}/e-wrong-type.yaml:6:10: runbook `wrong-type`, step `a`: invalid type: string \"echo hi\", expected a sequence"),
        "22 error(s) in 5 file(s)".to_owned(),
    ];
    let got = stderr(&out);
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got, expected, "\n{}", got.join("\n"));
}

#[test]
fn check_refuses_an_empty_or_missing_directory() {
    let empty = runbook_dir(&[("README.md", "no runbooks here")]);
    let out = runbookd(&["check", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no runbooks found (expected *.yaml files)"),
        "{}",
        stderr(&out)
    );
    let out = runbookd(&["check", "/nonexistent/runbooks"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/runbooks: no such file or directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn shell_values_in_unsafe_places_are_refused_with_the_expression() {
    let dir = runbook_dir(&[(
        "x.yaml",
        "matchers: [alertname=X]\nsteps:\n  - name: s\n    shell: |\n      echo ok\n      echo 'it is {{labels.job}}'\n",
    )]);
    let out = runbookd(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "x.yaml:5:7: runbook `x`, step `s`: `{{labels.job}}` is inside single quotes"
        ),
        "{}",
        stderr(&out)
    );
}

/// #23, item 17: `check` says what it did not check and what it skipped,
/// suggests the key meant, shows warnings beside errors, and refuses a
/// `timeout` on a silence step.
#[test]
fn check_says_what_it_skipped_and_suggests_keys() {
    let dir = runbook_dir(&[
        ("upper.YAML", "name: upper\nmatchers: [alertname = \"U\"]\nsteps:\n  - name: s\n    silence: {duration: 1h}\n    timeout: 5s\n"),
        ("warn.yaml", "name: warn\nmatchers: [alertname = \"W\"]\nsteps:\n  - name: c\n    run: [curl, '{{labels.url}}']\ncommunication:\n  - on: [incident_opened]\n    notify: [slack-ops]\n"),
        ("typo.yaml", "name: typo\ntitel: T\nmatchers: [alertname = \"T\"]\nsteps:\n  - name: a\n    run: ['true']\n"),
    ]);
    std::fs::create_dir(dir.path().join("more")).unwrap();
    // A mounted Kubernetes ConfigMap's own directories are not subdirectories of runbooks.
    std::fs::create_dir(dir.path().join("..2026_12_05_06_00_00.123")).unwrap();
    std::os::unix::fs::symlink("..2026_12_05_06_00_00.123", dir.path().join("..data")).unwrap();
    let d = dir.path().display();
    let out = runbookd(&["check", dir.path().to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{d}/typo.yaml:2:1: runbook `typo`: unknown field `titel`"
        )),
        "{err}"
    );
    assert!(err.contains("did you mean `title`?"), "{err}");
    assert!(
        err.contains(&format!("{d}/upper.YAML:6:14: runbook `upper`, step `s`: `timeout` does not apply to a silence step")),
        "a .YAML file is a runbook too: {err}"
    );
    assert!(
        err.contains(&format!("{d}/warn.yaml:5:17: warning:")),
        "warnings beside errors: {err}"
    );
    assert!(
        err.contains(&format!("{d}/more: warning: a subdirectory: not searched")),
        "{err}"
    );
    assert!(!err.contains(".."), "{err}");
    assert!(err.contains("2 error(s) in 2 file(s)"), "{err}");
    // Without a config, the notifiers runbooks name are not checked: said.
    std::fs::remove_file(dir.path().join("typo.yaml")).unwrap();
    std::fs::remove_file(dir.path().join("upper.YAML")).unwrap();
    let out = runbookd(&["check", dir.path().to_str().unwrap()]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("note: the notifiers runbooks name (slack-ops) were not checked against a server's: pass --config FILE"),
        "{err}"
    );
}

#[test]
fn check_points_at_a_bad_rate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("storm.yaml"),
        "name: storm\nmatchers: ['alertname = \"X\"']\nrate: 10 per 5m\nsteps:\n  - name: a\n    run: ['true']\n",
    )
    .unwrap();
    let out = runbookd(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("storm.yaml:3:7: runbook `storm`: bad rate `10 per 5m`: write N/UNIT or N/DURATION, e.g. 1/s, 30/m, 10/5m"),
        "{err}"
    );
}
