//! SLO files and the rules made from them, checked by the real `promtool`:
//! the shipped examples, Sloth's own example files, and unit tests of the
//! generated rules (a fast burn pages, a slow one opens a ticket, a
//! low-traffic guard holds, the period ratio is weighted by traffic).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::exec::require;
use crate::helpers::{root, runbookd, stderr, stdout};

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/slo").join(name)
}

fn promtool() -> Option<PathBuf> {
    let found = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    require(found.is_some(), "promtool (apt-get install prometheus)").then_some(found?)
}

/// `runbookd slo rules --slos SLOS --out DIR/rules.yml`.
fn rules_into(slos: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("rules.yml");
    let o = runbookd(&[
        "slo",
        "rules",
        "--slos",
        slos.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

fn promtool_ok(promtool: &Path, args: &[&str]) {
    let o = Command::new(promtool).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_shipped_slos_check_and_their_rules_pass_promtool() {
    let o = runbookd(&["check", "--slos", "slos", "runbooks"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("slos: 3 SLO(s): ok"), "{}", stdout(&o));
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_into(&root().join("slos"), dir.path());
    promtool_ok(&promtool, &["check", "rules", rules.to_str().unwrap()]);
    let text = std::fs::read_to_string(&rules).unwrap();
    // Sloth's names and labels, so that dashboards made for Sloth work.
    for needle in [
        "record: slo:sli_error:ratio_rate5m",
        "record: slo:period_error_budget_remaining:ratio",
        "sloth_id: api-availability",
        "alert: ErrorBudgetBurn",
        "sloth_severity: page",
    ] {
        assert!(text.contains(needle), "no `{needle}` in the rules");
    }
}

#[test]
fn sloth_s_own_examples_load_unchanged_and_make_rules_promtool_accepts() {
    let Some(promtool) = promtool() else { return };
    // One file at a time, as Sloth reads them (its examples reuse names).
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture("sloth"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 6);
    let mut slos = 0;
    for file in files {
        let o = runbookd(&["check", "--slos", file.to_str().unwrap(), "runbooks"]);
        assert!(o.status.success(), "{}: {}", file.display(), stderr(&o));
        let said = stdout(&o);
        slos += said
            .lines()
            .find_map(|l| {
                l.strip_suffix(" SLO(s): ok")?
                    .rsplit(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{said}"));
        let dir = tempfile::tempdir().unwrap();
        let rules = rules_into(&file, dir.path());
        promtool_ok(&promtool, &["check", "rules", rules.to_str().unwrap()]);
    }
    assert_eq!(slos, 9);
}

#[test]
fn the_generated_rules_page_on_a_fast_burn_ticket_a_slow_one_and_weigh_by_traffic() {
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    rules_into(&fixture("web.yaml"), dir.path());
    let test = dir.path().join("web.test.yaml");
    std::fs::copy(fixture("web.test.yaml"), &test).unwrap();
    promtool_ok(&promtool, &["test", "rules", test.to_str().unwrap()]);
}

#[test]
fn bad_slo_files_get_file_line_col_errors_and_no_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "version: prometheus/v1\nservice: web\nslos:\n  - name: avail\n    objective: 99.9\n    sli:\n      events:\n        error_query: sum(rate(e[{{.window}}])\n        total_query: sum(rate(t[{{.window}}]))\n    period: 30days\n",
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let o = runbookd(&["check", "--slos", d, "runbooks"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("bad.yaml:8:22: slo `web/avail`: `sli.events.error_query`: not PromQL"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:10:13: slo `web/avail`: period: not a valid duration `30days`"),
        "{err}"
    );
    let o = runbookd(&["slo", "rules", "--slos", d]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty(), "no rules on stdout: {}", stdout(&o));
    // OpenSLO's own example: a threshold SLI on no Prometheus source.
    let o = runbookd(&[
        "check",
        "--slos",
        fixture("openslo").to_str().unwrap(),
        "runbooks",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("occurences-slo.yaml:16:9: slo `web-shop/search-slo`: `thresholdMetric` SLIs are not supported"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn serve_refuses_to_start_on_invalid_slo_files() {
    let dir = tempfile::tempdir().unwrap();
    let slos = dir.path().join("slos");
    std::fs::create_dir(&slos).unwrap();
    std::fs::write(slos.join("x.yaml"), "apiVersion: openslo/v2\nkind: SLO\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .current_dir(root())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--runbooks",
            "runbooks",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--slos")
        .arg(&slos)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("x.yaml:1:13: unknown apiVersion `openslo/v2`"),
        "{}",
        stderr(&o)
    );
}
