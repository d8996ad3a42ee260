//! Differential tests of `shell:` steps: generated scripts, hostile values,
//! real dash and real bash. Whatever the script around it and whatever the
//! value, a template value is never run as code: every script `check`
//! accepts is executed by both shells with values that would create a
//! canary file (or print a marker) if any shell ever parsed them, and the
//! canary never appears. Values also arrive intact where a script prints them.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use runbookd::template::{Data, Flavor, Template};
use serde_json::json;

/// Values that run `touch CANARY` (or print `PWNED`) if parsed as code by
/// either shell, in every quoting context.
fn hostile(canary: &str) -> Vec<String> {
    [
        "$(touch C)",
        "`touch C`",
        "touch C",
        "'; touch C; '",
        "\"; touch C; \"",
        "\ntouch C\n",
        "x[$(touch C)]",
        "a[$(touch C)]+1",
        "$((x[$(touch C)]))",
        "EOF\ntouch C\nEOF",
        "\\\"; touch C #",
        "${x:-$(touch C)}",
        "$'\\x27'; touch C",
        ");touch C;(",
        "*",
        "-e",
        "--help",
        "$IFS",
        ";;",
        "esac; touch C; case x in x",
        "}; touch C; {",
        "\"$(touch C)\"",
        "'$(touch C)'",
        "$(echo PWNED)",
        "`echo PWNED`",
    ]
    .iter()
    .map(|v| v.replace('C', canary))
    .collect()
}

/// Fragments of scripts; `@` is where a template value goes.
const FRAGMENTS: &[&str] = &[
    "echo @",
    "echo \"x @\"",
    "echo \"@\"",
    "x=@; echo \"$x\"",
    "x=$(echo @); echo \"$x\"",
    "x=\"$(echo @)\"; echo \"$x\"",
    "echo \"$(echo \"@\")\"",
    "case @ in a) echo a;; *) echo @;; esac",
    "x=$(case a in a) echo @;; esac); echo \"$x\"",
    "x=\"$(case a in a) echo @;; esac)\"",
    "cat <<EOF\n@\nEOF",
    "cat <<-EOF\n\t@\n\tEOF",
    "cat <<'EOF'\nliteral\nEOF\necho @",
    "if [ -n @ ]; then echo @; fi",
    "for v in @ b; do echo \"$v\"; done",
    "f() { echo \"$1\"; }; f @",
    "{ echo @; }",
    "( echo @ )",
    "echo @ | cat",
    "printf '%s\\n' @",
    "test @ = x || echo @",
    "echo @ > out; cat out",
    "echo a#@",
    "echo $((1 + 2)) @",
    "x=1; echo ${x:-d} @",
    "sh -c 'echo \"$1\"' sh @",
    "echo 'q' @",
    "echo \"it's\" @",
    "# comment it's\necho @",
    "while false; do :; done; echo @",
    "export X=@; echo \"$X\"",
    "local_fn() { local y=@; echo \"$y\"; }; local_fn",
    "echo $'x' @",
    "echo \\\\ @",
    "[ @ ] && echo set",
];

/// Pieces that shift lexer state around the fragments.
const NOISE: &[&str] = &[
    "'", "\"", "`", "$(", ")", "(", "{", "}", "\\", "#", "$'", "<<E\n", "\nE\n", ";;", "case ",
    " in ", "esac", "((", "))", "$[", "]", "[[", "]]", "|", "&&", ";", "\n", " ", "x", "=", "${",
    "eval ", "let ", ": ",
];

fn script_strategy() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        3 => proptest::sample::select(FRAGMENTS).prop_map(str::to_owned),
        1 => proptest::sample::select(NOISE).prop_map(str::to_owned),
        1 => Just("@".to_owned()),
    ];
    proptest::collection::vec(part, 1..8).prop_map(|parts| {
        let mut s = String::new();
        for p in parts {
            if !s.is_empty() && !s.ends_with('\n') {
                s.push_str(if s.len() % 3 == 0 { "\n" } else { "; " });
            }
            s.push_str(&p);
        }
        s
    })
}

static EXECUTED: AtomicUsize = AtomicUsize::new(0);

/// Runs `script` under `shell` with `env`, in `dir`, bounded to 3 s.
fn run(shell: &str, script: &str, env: &BTreeMap<String, String>, dir: &Path) -> (bool, String) {
    let child = Command::new("timeout")
        .args(["-s", "KILL", "3", shell, "-c", script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the shell starts");
    let out = child.wait_with_output().unwrap();
    EXECUTED.fetch_add(1, Ordering::Relaxed);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Renders `template` (with `@` as `{{labels.vN}}`) for `value` in every hole:
/// `None` when `check` refuses it.
fn render(template: &str, value: &str) -> Option<(String, BTreeMap<String, String>)> {
    let mut src = String::new();
    let mut n = 0;
    for (i, part) in template.split('@').enumerate() {
        if i > 0 {
            n += 1;
            src.push_str("{{labels.v");
            src.push_str(&n.to_string());
            src.push_str("}}");
        }
        // Handlebars syntax in the noise is not what is tested here.
        src.push_str(&part.replace("{{", "{ {").replace("}}", "} }"));
    }
    let t = Template::compile(&src, Flavor::Shell, &[]).ok()?;
    let labels: serde_json::Map<String, serde_json::Value> =
        (1..=n).map(|i| (format!("v{i}"), json!(value))).collect();
    let r = t
        .render_shell(&Data::new(json!({ "labels": labels })))
        .ok()?;
    Some((r.script, r.vars.into_iter().collect()))
}

fn check_inert(template: &str) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let canary = dir.path().join("CANARY");
    let canary_s = canary.to_str().unwrap().to_owned();
    for value in hostile(&canary_s) {
        let Some((script, env)) = render(template, &value) else {
            // Refused at check time: nothing runs.
            return Ok(());
        };
        prop_assert!(
            !script.contains(&canary_s) && !script.contains("PWNED"),
            "alert data in the script text: {script:?}"
        );
        let work = tempfile::tempdir().unwrap();
        for shell in ["/usr/bin/dash", "/usr/bin/bash"] {
            let (_, out) = run(shell, &script, &env, work.path());
            prop_assert!(
                !canary.exists(),
                "{shell} ran a value: template {template:?}, value {value:?}, script {script:?}"
            );
            let printed_pwned = out.lines().any(|l| l.trim() == "PWNED");
            prop_assert!(
                !printed_pwned,
                "{shell} ran a value: template {template:?}, value {value:?}, script {script:?}: {out}"
            );
        }
    }
    Ok(())
}

/// Cases per property: 160 in the test command, more with `SHELL_CASES=N`
/// for a longer campaign.
fn cases() -> u32 {
    std::env::var("SHELL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_value_arrives_intact_whatever_it_holds(v in "(?s)[^\u{0}\u{E000}-\u{E003}]{0,48}") {
        let (script, env) = render("printf %s @; printf '|%s' @-tail; printf '|%s' \"in @\"", &v).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for shell in ["/usr/bin/dash", "/usr/bin/bash"] {
            let out = Command::new(shell).arg("-c").arg(&script).current_dir(dir.path()).env_clear().env("PATH", "/usr/bin:/bin").envs(&env).output().unwrap();
            EXECUTED.fetch_add(1, Ordering::Relaxed);
            prop_assert!(out.status.success(), "{} {:?}: {}", shell, script, String::from_utf8_lossy(&out.stderr));
            prop_assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{v}|{v}-tail|in {v}"));
            prop_assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }
}

/// Every fragment alone, with every hostile value, in both shells; and the
/// value printed where the fragment prints it.
#[test]
fn every_fragment_is_inert_with_every_hostile_value() {
    let mut accepted = 0;
    for f in FRAGMENTS {
        check_inert(f).unwrap();
        if render(f, "x").is_some() {
            accepted += 1;
        }
    }
    assert!(
        accepted >= FRAGMENTS.len() - 2,
        "fragments that are safe were refused: only {accepted} of {} accepted",
        FRAGMENTS.len()
    );
}

/// The finding of the issue: a `case` inside `$(…)` inside double quotes. The
/// old lexer took the pattern's `)` for the end of the substitution and let a
/// value inside double quotes run.
#[test]
fn a_case_pattern_inside_a_command_substitution_does_not_let_a_value_run() {
    let dir = tempfile::tempdir().unwrap();
    let canary = dir.path().join("pwned");
    let value = format!("$(touch {})", canary.display());
    let (script, env) = render("x=\"$(case a in a) echo @;; esac)\"; echo \"$x\"", &value)
        .expect("check accepts the script");
    for shell in ["/usr/bin/dash", "/usr/bin/bash"] {
        let (ok, out) = run(shell, &script, &env, dir.path());
        assert!(ok, "{shell}: {out}");
        assert_eq!(out.trim_end(), value, "{shell} prints the value as data");
        assert!(!canary.exists(), "{shell} ran the value");
    }
}

/// Generated scripts: fragments, values in random places and noise that
/// shifts quoting around them. Prints its figures (for docs/reliability.md).
#[test]
fn generated_scripts_never_run_a_value() {
    let n = cases();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let started = std::time::Instant::now();
    let accepted = AtomicUsize::new(0);
    let result = runner.run(&script_strategy(), |t| {
        if render(&t, "x").is_some() {
            accepted.fetch_add(1, Ordering::Relaxed);
        }
        check_inert(&t)
    });
    eprintln!(
        "shell differential: {n} generated scripts, {} accepted by check and run with every hostile value, {} shell executions (this process), {:.1} s",
        accepted.load(Ordering::Relaxed),
        EXECUTED.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
