//! Warnings of `runbookd check`: places where an alert-controlled value can
//! change *what* a step does, although it cannot inject code.
//!
//! - the program to run (`argv[0]`, or a shell command's name);
//! - an option position: a whole argument, before any `--`, which a value
//!   starting with `-` turns into an option (`--server=https://evil`);
//! - the host of a URL, which a value can point anywhere (SSRF to a cloud
//!   metadata endpoint, say).
//!
//! A warning is silenced by fixing the step (`--` before positional
//! arguments, a fixed host) or by a matcher that constrains the label so
//! that no hostile value can match: the matcher is tried against hostile
//! probes for that place.
//!
//! And one error: a value in the script of `sh -c` (and the like) in a
//! `run:` argv, which the shell would run as code.

use crate::matcher::{MatchOp, Matcher};
use crate::template::shell::Word;
use crate::template::{Template, ValueSite};

/// Values that must not reach an option position.
const OPTION_PROBES: &[&str] = &["-x", "--x", "-", "-1", "--server=https://evil.example"];
/// Values that must not make up a URL's whole host.
const HOST_PROBES: &[&str] = &[
    "169.254.169.254",
    "evil.example",
    "evil.example:80",
    "localhost",
    "127.0.0.1",
    "[::1]",
    "metadata.google.internal",
];
/// Values that must not appear in a URL's host even with a fixed domain after
/// them: they end the host early.
const HOST_DELIMITER_PROBES: &[&str] = &["a/b", "a@b", "a#b", "a?b", "a b", "a\\b", "a:1@b"];
/// Values that must not name the program to run.
const PROGRAM_PROBES: &[&str] = &["sh", "/bin/sh", "bash", "rm", "curl", "python3"];

/// Programs whose `-c` argument is a shell script.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "su", "fish", "csh", "tcsh",
];

/// Context paths whose values runbookd or the runbook author control.
fn trusted(path: &str) -> bool {
    let p = path.strip_prefix("@root.").unwrap_or(path);
    let p = p.strip_prefix("this.").unwrap_or(p);
    p.starts_with("incident.")
        || p.starts_with("runbook.")
        || matches!(
            p,
            "alert.status"
                | "alert.startsAt"
                | "alert.endsAt"
                | "alert.fingerprint"
                | "group.status"
                | "@index"
                | "@first"
                | "@last"
        )
        || (p.starts_with("steps.") && (p.ends_with(".status") || p.ends_with(".exit_code")))
}

/// The label a path reads, when it is a plain label (`labels.X`, `alert.labels.X`).
fn label_of(path: &str) -> Option<&str> {
    let p = path.strip_prefix("@root.").unwrap_or(path);
    p.strip_prefix("labels.")
        .or_else(|| p.strip_prefix("alert.labels."))
        .map(|l| l.trim_start_matches('[').trim_end_matches(']'))
}

/// Whether every untrusted value of `site` is constrained by a matcher
/// that refuses all of `probes`.
fn constrained(site: &ValueSite, matchers: &[Matcher], probes: &[&str]) -> bool {
    site.paths.iter().filter(|p| !trusted(p)).all(|p| {
        let Some(label) = label_of(p) else {
            return false;
        };
        matchers.iter().any(|m| {
            m.name == label
                && matches!(m.op, MatchOp::Equal | MatchOp::Regex)
                && probes.iter().all(|v| !m.matches_value(v))
        })
    })
}

fn hostile(site: &ValueSite) -> bool {
    site.paths.is_empty() || site.paths.iter().any(|p| !trusted(p))
}

/// Whether literal text before a value ends inside a URL's host
/// (`scheme://` and no `/`, `?` or `#` since).
fn in_url_host(prefix: &str) -> bool {
    let Some(at) = prefix.rfind("://") else {
        return false;
    };
    let scheme = &prefix[..at];
    let scheme = scheme
        .rsplit(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')))
        .next()
        .unwrap_or("");
    !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && !prefix[at + 3..].contains(['/', '?', '#'])
}

/// More host after the value (`.svc.cluster.local`, or `.` and another
/// value): the value is then one label of a longer name, and only
/// delimiters can move the request elsewhere.
fn fixed_domain_after(suffix: &str) -> bool {
    suffix.starts_with('.')
}

/// One warning (or error) about a step: the template element it concerns
/// (`None`: the step's script) and the message.
pub struct Finding {
    /// Index into a `run:` argv, when it concerns one element.
    pub element: Option<usize>,
    pub message: String,
    pub error: bool,
}

fn place_warnings(
    site: &ValueSite,
    matchers: &[Matcher],
    is_command: bool,
    option_position: bool,
    out: &mut Vec<String>,
) {
    if !hostile(site) {
        return;
    }
    let e = &site.expr;
    if is_command && !constrained(site, matchers, PROGRAM_PROBES) {
        out.push(format!(
            "`{e}` names the program to run: an alert can choose what runs (use a fixed program, or a matcher that allows only the intended values)"
        ));
    }
    if option_position && !constrained(site, matchers, OPTION_PROBES) {
        out.push(format!(
            "`{e}` is a whole argument before any `--`: a value starting with `-` would be read as an option (put `--` before positional arguments, write `--opt={e}`, or constrain the label with a matcher)"
        ));
    }
    if in_url_host(&site.prefix) {
        let probes: Vec<&str> = if fixed_domain_after(&site.suffix) {
            HOST_DELIMITER_PROBES.to_vec()
        } else {
            HOST_PROBES
                .iter()
                .chain(HOST_DELIMITER_PROBES)
                .copied()
                .collect()
        };
        if !constrained(site, matchers, &probes) {
            out.push(format!(
                "`{e}` is in the host of a URL: an alert can send this request anywhere, e.g. to 169.254.169.254 (fix the host, or constrain the label with a matcher such as `{} =~ \"[a-z0-9-]+\"` and a fixed domain after it)",
                site.paths
                    .iter()
                    .find_map(|p| label_of(p))
                    .unwrap_or("label")
            ));
        }
    }
}

/// Findings for a `run:` argv.
#[must_use]
pub fn argv(argv: &[Template], matchers: &[Matcher]) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut double_dash = false;
    let literal = |t: &Template| t.is_constant().then(|| t.source().to_owned());
    for (i, t) in argv.iter().enumerate() {
        // The script of `sh -c`: the element after a `-c` cluster, after a shell.
        let shell_before = argv[..i.saturating_sub(1)]
            .iter()
            .filter_map(literal)
            .any(|w| SHELLS.contains(&w.rsplit('/').next().unwrap_or(&w)));
        let after_c = i > 0
            && literal(&argv[i - 1])
                .is_some_and(|w| w.starts_with('-') && !w.starts_with("--") && w.contains('c'));
        for site in t.sites() {
            if shell_before && after_c && hostile(site) {
                out.push(Finding {
                    element: Some(i),
                    message: format!(
                        "`{}` is in the script of a shell's `-c`, which would run it as code: use a `shell:` step (values reach it as variables), or pass it as an argument after the script",
                        site.expr
                    ),
                    error: true,
                });
                continue;
            }
            let mut msgs = Vec::new();
            place_warnings(
                site,
                matchers,
                i == 0,
                i > 0 && !double_dash && site.prefix.is_empty(),
                &mut msgs,
            );
            out.extend(msgs.into_iter().map(|message| Finding {
                element: Some(i),
                message,
                error: false,
            }));
        }
        if t.is_constant() && t.source() == "--" {
            double_dash = true;
        }
    }
    out
}

/// Findings for a `shell:` script.
#[must_use]
pub fn script(t: &Template, matchers: &[Matcher]) -> Vec<Finding> {
    let mut out = Vec::new();
    for site in t.sites() {
        let Some(Word {
            starts_word,
            is_command,
            after_double_dash,
            not_argument,
            ..
        }) = site.word.clone()
        else {
            continue;
        };
        let mut msgs = Vec::new();
        place_warnings(
            site,
            matchers,
            is_command,
            starts_word && !is_command && !after_double_dash && !not_argument,
            &mut msgs,
        );
        out.extend(msgs.into_iter().map(|message| Finding {
            element: None,
            message,
            error: false,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Flavor;

    fn argv_of(items: &[&str]) -> Vec<Template> {
        items
            .iter()
            .map(|s| Template::compile(s, Flavor::Raw, &[]).unwrap())
            .collect()
    }

    fn messages(f: &[Finding]) -> String {
        f.iter()
            .map(|f| f.message.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn argv_places() {
        let m: Vec<Matcher> = vec!["alertname=X".parse().unwrap()];
        let f = argv(&argv_of(&["{{labels.cmd}}", "x"]), &m);
        assert!(
            messages(&f).contains("names the program"),
            "{}",
            messages(&f)
        );
        let f = argv(&argv_of(&["kubectl", "logs", "{{labels.pod}}"]), &m);
        assert!(messages(&f).contains("before any `--`"), "{}", messages(&f));
        let f = argv(&argv_of(&["kubectl", "logs", "--", "{{labels.pod}}"]), &m);
        assert!(f.is_empty(), "{}", messages(&f));
        let f = argv(
            &argv_of(&["kubectl", "get", "pods", "-l", "app={{labels.app}}"]),
            &m,
        );
        assert!(
            f.is_empty(),
            "not at the start of the argument: {}",
            messages(&f)
        );
        let f = argv(&argv_of(&["curl", "http://{{labels.host}}/-/ready"]), &m);
        assert!(messages(&f).contains("host of a URL"), "{}", messages(&f));
        let f = argv(
            &argv_of(&["curl", "--", "http://{{labels.host}}:9100/metrics"]),
            &m,
        );
        assert!(messages(&f).contains("host of a URL"), "{}", messages(&f));
        let f = argv(&argv_of(&["curl", "http://x/{{labels.path}}"]), &m);
        assert!(f.is_empty(), "a path is not the host: {}", messages(&f));
        let f = argv(&argv_of(&["sh", "-c", "echo {{labels.x}}"]), &m);
        assert!(f.iter().any(|f| f.error), "{}", messages(&f));
        let f = argv(
            &argv_of(&["echo", "{{incident.id}}", "{{runbook.name}}"]),
            &m,
        );
        assert!(f.is_empty(), "trusted values: {}", messages(&f));
    }

    #[test]
    fn matchers_that_constrain_a_label_silence_the_warning() {
        let m: Vec<Matcher> = vec![
            r#"pod =~ "[a-z0-9][a-z0-9.-]*""#.parse().unwrap(),
            r#"service =~ "[a-z0-9-]+""#.parse().unwrap(),
        ];
        assert!(argv(&argv_of(&["kubectl", "logs", "{{labels.pod}}"]), &m).is_empty());
        let f = argv(
            &argv_of(&[
                "curl",
                "http://{{labels.service}}.default.svc.cluster.local/x",
            ]),
            &m,
        );
        assert!(f.is_empty(), "{}", messages(&f));
        let f = argv(&argv_of(&["curl", "http://{{labels.service}}/x"]), &m);
        assert!(!f.is_empty(), "the whole host can still be `localhost`");
        let loose: Vec<Matcher> = vec![r#"pod =~ ".+""#.parse().unwrap()];
        assert!(!argv(&argv_of(&["kubectl", "logs", "{{labels.pod}}"]), &loose).is_empty());
    }

    #[test]
    fn shell_places() {
        let m: Vec<Matcher> = vec![];
        let t = |s: &str| Template::compile(s, Flavor::Shell, &[]).unwrap();
        assert!(messages(&script(&t("{{labels.cmd}} --version"), &m)).contains("program"));
        assert!(
            messages(&script(&t("kubectl logs {{labels.pod}}"), &m)).contains("before any `--`")
        );
        assert!(script(&t("kubectl logs -- {{labels.pod}}"), &m).is_empty());
        assert!(script(&t("X={{labels.pod}} kubectl logs -- x"), &m).is_empty());
        assert!(messages(&script(&t("curl \"https://{{labels.h}}/x\""), &m)).contains("host"));
    }
}
