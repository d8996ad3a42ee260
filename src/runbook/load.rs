//! Loading runbook files: strict YAML first (`serde_yaml`, unknown keys
//! refused), then one validation pass that turns the raw document into a
//! [`Runbook`] and collects *every* error with its position, so that
//! `runbookd check` can list them all at once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Deserializer};

use super::position::{Pos, Positions};
use super::{
    Action, EnvValue, OnFrozen, Runbook, RunbookSet, Secret, Severity, Step, StepGate, StepSandbox,
};
use crate::matcher::Matcher;
use crate::template::{Flavor, Template};

/// Defaults documented in docs/runbooks.md.
const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an approval step waits by default, and at most.
const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const MAX_APPROVAL_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
const MAX_RETRIES: u32 = 100;

/// One problem in one runbook file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    /// `None` for a problem with the file as a whole (unreadable, say).
    pub pos: Option<Pos>,
    pub runbook: Option<String>,
    pub step: Option<String>,
    pub message: String,
    /// A warning (`check` prints it; the runbook still loads), not an error.
    pub warning: bool,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(p) = self.pos {
            write!(f, ":{}:{}", p.line, p.col)?;
        }
        f.write_str(": ")?;
        if self.warning {
            f.write_str("warning: ")?;
        }
        match (&self.runbook, &self.step) {
            (Some(r), Some(s)) => write!(f, "runbook `{r}`, step `{s}`: ")?,
            (Some(r), None) => write!(f, "runbook `{r}`: ")?,
            _ => {}
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a set of runbook files, in file and line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// Loads and checks every `*.yaml` / `*.yml` file directly in `dir`.
///
/// # Errors
/// Every problem found, across all files.
pub fn load_dir(dir: &Path) -> Result<RunbookSet, LoadErrors> {
    let (files, skipped) = load_dir_files(dir)?;
    load_files_noting(&files, skipped)
}

/// The runbook files of `dir` (`*.yaml`, `*.yml`, in any case), sorted,
/// and a warning for each subdirectory (runbooks are not searched below).
fn load_dir_files(dir: &Path) -> Result<(Vec<PathBuf>, Vec<LoadError>), LoadErrors> {
    let whole = |message: String| {
        LoadErrors(vec![LoadError {
            file: dir.to_owned(),
            pos: None,
            runbook: None,
            step: None,
            message,
            warning: false,
        }])
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| whole(format!("cannot read runbook directory: {e}")))?;
    // Dot entries are not runbooks: a mounted Kubernetes ConfigMap holds
    // `..data` and a timestamped directory beside its files' links.
    let paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().as_encoded_bytes().starts_with(b"."))
        .map(|e| e.path())
        .collect();
    let mut files: Vec<PathBuf> = paths
        .iter()
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|x| {
                    x.eq_ignore_ascii_case("yaml") || x.eq_ignore_ascii_case("yml")
                })
        })
        .cloned()
        .collect();
    let mut skipped: Vec<LoadError> = paths
        .iter()
        .filter(|p| p.is_dir())
        .map(|p| LoadError {
            file: p.clone(),
            pos: None,
            runbook: None,
            step: None,
            message: "a subdirectory: not searched for runbooks (name it, or move its files up)"
                .to_owned(),
            warning: true,
        })
        .collect();
    if files.is_empty() {
        return Err(whole(
            "no runbooks found (expected *.yaml files)".to_owned(),
        ));
    }
    files.sort();
    skipped.sort_by(|a, b| a.file.cmp(&b.file));
    Ok((files, skipped))
}

/// Loads runbook files and directories of them (as `runbookd check` takes
/// them): a directory contributes its `*.yaml`/`*.yml` files; a file is
/// taken whatever its name.
///
/// # Errors
/// Every problem found, across all files.
pub fn load_paths(paths: &[PathBuf]) -> Result<RunbookSet, LoadErrors> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut skipped = Vec::new();
    for path in paths {
        if path.is_dir() {
            match load_dir_files(path) {
                Ok((mut f, mut s)) => {
                    files.append(&mut f);
                    skipped.append(&mut s);
                }
                Err(mut e) => errors.append(&mut e.0),
            }
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            errors.push(LoadError {
                file: path.clone(),
                pos: None,
                runbook: None,
                step: None,
                message: "no such file or directory".to_owned(),
                warning: false,
            });
        }
    }
    match load_files_noting(&files, skipped) {
        Ok(set) if errors.is_empty() => Ok(set),
        Ok(_) => Err(LoadErrors(errors)),
        Err(mut e) => {
            errors.append(&mut e.0);
            Err(LoadErrors(errors))
        }
    }
}

/// Loads and checks the given files; runbook names must be unique across them.
///
/// # Errors
/// Every problem found, across all files.
pub fn load_files(files: &[PathBuf]) -> Result<RunbookSet, LoadErrors> {
    load_files_noting(files, Vec::new())
}

/// [`load_files`], with warnings found before (files a directory skipped).
fn load_files_noting(
    files: &[PathBuf],
    extra_warnings: Vec<LoadError>,
) -> Result<RunbookSet, LoadErrors> {
    let mut runbooks = Vec::new();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        let text = match std::fs::read(file).map(String::from_utf8) {
            Ok(Ok(text)) => text,
            Ok(Err(_)) => {
                errors.push(LoadError {
                    file: file.clone(),
                    pos: None,
                    runbook: None,
                    step: None,
                    message: "not valid UTF-8".to_owned(),
                    warning: false,
                });
                continue;
            }
            Err(e) => {
                errors.push(LoadError {
                    file: file.clone(),
                    pos: None,
                    runbook: None,
                    step: None,
                    message: format!("cannot read: {e}"),
                    warning: false,
                });
                continue;
            }
        };
        let (name, name_pos, parsed) = parse(file, &text);
        // Names must be unique whether or not the files are otherwise valid.
        if let Some(first) = seen.get(&name) {
            errors.push(LoadError {
                file: file.clone(),
                pos: name_pos,
                runbook: Some(name.clone()),
                step: None,
                message: format!(
                    "duplicate runbook name: also defined in `{}`",
                    first.display()
                ),
                warning: false,
            });
        } else {
            seen.insert(name, file.clone());
        }
        match parsed {
            Ok((rb, mut w)) => {
                warnings.append(&mut w);
                runbooks.push(rb);
            }
            Err(mut errs) => {
                errs.sort_by_key(|e| e.pos);
                errors.append(&mut errs);
            }
        }
    }
    warnings.extend(extra_warnings);
    warnings.sort_by(|a: &LoadError, b: &LoadError| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
    if errors.is_empty() {
        Ok(RunbookSet::new(runbooks).with_warnings(warnings))
    } else {
        // The warnings too: errors do not hide them.
        errors.append(&mut warnings);
        errors.sort_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
        Err(LoadErrors(errors))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunbook {
    name: Option<String>,
    title: Option<String>,
    severity: Option<String>,
    description: Option<String>,
    matchers: Vec<String>,
    timeout: Option<String>,
    concurrency: Option<u32>,
    cooldown: Option<String>,
    rate: Option<String>,
    cancel_on_resolved: Option<bool>,
    idempotent: Option<bool>,
    run_as: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, RawEnv>,
    steps: Vec<RawStep>,
    #[serde(default)]
    on_failure: Vec<RawStep>,
    #[serde(default)]
    on_resolved: Vec<RawStep>,
    #[serde(default)]
    communication: Vec<RawCommunication>,
    #[serde(default)]
    escalation: Vec<RawEscalation>,
    #[serde(default)]
    drills: Vec<RawDrill>,
    #[serde(default)]
    inputs: Vec<RawInput>,
    requires: Option<RawRequires>,
    risk: Option<String>,
    on_frozen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    label: String,
    description: Option<String>,
    /// A regex (fully anchored, as matchers') the value must match.
    matches: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrill {
    schedule: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    mode: Option<String>,
    notify: Option<bool>,
    requires: Option<RawDrillRequires>,
    #[serde(default)]
    safeguards: Vec<RawSafeguard>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSafeguard {
    name: String,
    query: Option<String>,
    holds: Option<String>,
    slo: Option<String>,
    burn_rate: Option<RawBurnRate>,
    interval: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrillRequires {
    service: Option<String>,
    budget_above: Option<f64>,
    no_open_incident: Option<bool>,
    #[serde(default)]
    days: Vec<String>,
    hours: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommunication {
    on: Vec<String>,
    notify: Vec<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    after: String,
    unless: Option<Vec<String>>,
    notify: Vec<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    run: Option<Vec<Scalar>>,
    shell: Option<String>,
    manual: Option<String>,
    silence: Option<RawSilence>,
    approve: Option<RawApprove>,
    verify: Option<RawVerify>,
    timeout: Option<String>,
    retries: Option<u32>,
    retry_delay: Option<String>,
    continue_on_failure: Option<bool>,
    when: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, RawEnv>,
    network: Option<String>,
    resources: Option<RawResources>,
    #[serde(default)]
    writable_paths: Vec<String>,
    requires: Option<RawRequires>,
    risk: Option<String>,
    on_frozen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequires {
    budget: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSilence {
    duration: Option<String>,
    comment: Option<String>,
    matchers: Option<Vec<String>>,
    until: Option<String>,
    covers_others: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApprove {
    prompt: String,
    timeout: Option<String>,
    on_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    query: Option<String>,
    success: Option<String>,
    failure: Option<String>,
    alert_resolved: Option<bool>,
    initial_delay: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    consecutive_success: Option<u32>,
    on_inconclusive: Option<String>,
    slo: Option<String>,
    burn_rate: Option<RawBurnRate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBurnRate {
    window: String,
    below: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    memory: Option<String>,
    pids: Option<u64>,
}

/// A string, number or boolean, kept as the text YAML gave it.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// An `env:` value as written: a scalar (a template), or a one-key map naming
/// where a secret is.
enum RawEnv {
    Text(String),
    SecretFile(String),
    SecretEnv(String),
    CredentialFile(String),
}

impl<'de> Deserialize<'de> for RawEnv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawEnv;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a string, number or boolean, or `{secret_file: PATH}` or `{secret_env: NAME}`",
                )
            }
            fn visit_str<E>(self, v: &str) -> Result<RawEnv, E> {
                Ok(RawEnv::Text(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawEnv, E> {
                Ok(RawEnv::Text(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawEnv, E> {
                Ok(RawEnv::Text(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawEnv, E> {
                Ok(RawEnv::Text(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawEnv, E> {
                Ok(RawEnv::Text(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawEnv, A::Error> {
                use serde::de::Error;
                let Some((key, value)) = map.next_entry::<String, String>()? else {
                    return Err(A::Error::custom(
                        "an empty map: write `{secret_file: PATH}`, `{secret_env: NAME}` or `{credential_file: PATH}`",
                    ));
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(A::Error::custom(
                        "a secret names exactly one of `secret_file`, `secret_env` or `credential_file`",
                    ));
                }
                match key.as_str() {
                    "secret_file" => Ok(RawEnv::SecretFile(value)),
                    "secret_env" => Ok(RawEnv::SecretEnv(value)),
                    "credential_file" => Ok(RawEnv::CredentialFile(value)),
                    other => Err(A::Error::custom(format!(
                        "unknown field `{other}`, expected `secret_file`, `secret_env` or `credential_file`"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

static NAME_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$").expect("valid"));
static STEP_NAME_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$").expect("valid"));
static ENV_NAME_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").expect("valid"));
static SERDE_LOCATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r" at line \d+ column \d+$").expect("valid"));
static SERDE_PATH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][\w.\[\]]*: ").expect("valid"));

/// Variables every step gets from runbookd; `env:` may not set them.
const RESERVED_ENV: &[&str] = &["PATH", "HOME", "TMPDIR", "INCIDENT_ID", "RUNBOOK"];

/// Variables that make programs load code or change how they parse: only a
/// constant (or a secret) may set them, never alert data.
fn code_loading(name: &str) -> bool {
    name.starts_with("LD_")
        || name.starts_with("BASH_FUNC_")
        || matches!(
            name,
            "BASH_ENV"
                | "ENV"
                | "SHELLOPTS"
                | "BASHOPTS"
                | "PS4"
                | "PROMPT_COMMAND"
                | "IFS"
                | "CDPATH"
                | "GLOBIGNORE"
                | "GCONV_PATH"
                | "PYTHONSTARTUP"
                | "PYTHONPATH"
                | "PYTHONHOME"
                | "PERL5LIB"
                | "PERL5OPT"
                | "PERLLIB"
                | "RUBYOPT"
                | "RUBYLIB"
                | "NODE_OPTIONS"
                | "NODE_PATH"
                | "JAVA_TOOL_OPTIONS"
                | "_JAVA_OPTIONS"
                | "GIT_SSH"
                | "GIT_SSH_COMMAND"
                | "GIT_EXEC_PATH"
                | "KUBECONFIG"
                | "SSL_CERT_FILE"
                | "CURL_CA_BUNDLE"
        )
}

/// Collects the errors and warnings of one file.
struct Checker<'a> {
    file: &'a Path,
    positions: &'a Positions,
    runbook: String,
    errors: Vec<LoadError>,
    warnings: Vec<LoadError>,
    /// The runbook's matchers, which may constrain labels used in steps.
    matchers: Vec<Matcher>,
    /// The SLOs its verify steps name, where.
    slo_refs: Vec<(String, Pos)>,
}

impl Checker<'_> {
    fn warn(&mut self, step: Option<&str>, path: &str, message: impl Into<String>) {
        self.err(step, path, message);
        if let Some(mut e) = self.errors.pop() {
            e.warning = true;
            self.warnings.push(e);
        }
    }

    /// Lint findings of a step (warnings, and `sh -c` scripts as errors).
    fn lint(&mut self, step: &str, path: &str, action: &Action) {
        let findings = match action {
            Action::Run(argv) => super::lint::argv(argv, &self.matchers),
            Action::Shell(t) => super::lint::script(t, &self.matchers),
            Action::Manual(_) | Action::Silence(_) | Action::Approve(_) | Action::Verify(_) => {
                Vec::new()
            }
        };
        for f in findings {
            let at = match (action, f.element) {
                (Action::Run(_), Some(i)) => format!("{path}.run.{i}"),
                (Action::Shell(_), _) => format!("{path}.shell"),
                _ => path.to_owned(),
            };
            if f.error {
                self.err(Some(step), &at, f.message);
            } else {
                self.warn(Some(step), &at, f.message);
            }
        }
    }

    fn err(&mut self, step: Option<&str>, path: &str, message: impl Into<String>) {
        // The value if it has a position, else the nearest enclosing node.
        let mut p = path;
        let pos = loop {
            if let Some(pos) = self.positions.value(p).or_else(|| self.positions.key(p)) {
                break pos;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => break self.positions.value("").unwrap_or(Pos { line: 1, col: 1 }),
            }
        };
        self.errors.push(LoadError {
            file: self.file.to_owned(),
            pos: Some(pos),
            runbook: Some(self.runbook.clone()),
            step: step.map(ToOwned::to_owned),
            message: message.into(),
            warning: false,
        });
    }

    fn duration(
        &mut self,
        step: Option<&str>,
        path: &str,
        raw: Option<&str>,
        default: Duration,
        zero_ok: bool,
    ) -> Duration {
        let Some(raw) = raw else { return default };
        match crate::duration::parse(raw) {
            Ok(d) if d.is_zero() && !zero_ok => {
                self.err(
                    step,
                    path,
                    format!("`{}` must be longer than zero", leaf(path)),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.err(step, path, format!("bad `{}`: {e}", leaf(path)));
                default
            }
        }
    }

    fn template(
        &mut self,
        step: Option<&str>,
        path: &str,
        src: &str,
        flavor: Flavor,
        before: &[&str],
    ) -> Option<Template> {
        Template::compile(src, flavor, before)
            .map_err(|e| self.err(step, path, e))
            .ok()
    }

    fn env(
        &mut self,
        step: Option<&str>,
        path: &str,
        raw: BTreeMap<String, RawEnv>,
        before: &[&str],
    ) -> Vec<(String, EnvValue)> {
        let mut env = Vec::new();
        for (name, value) in raw {
            let at = format!("{path}.{name}");
            if !ENV_NAME_RE.is_match(&name) {
                self.err(
                    step,
                    &at,
                    format!("bad environment variable name `{name}`: use letters, digits and `_`"),
                );
                continue;
            }
            if RESERVED_ENV.contains(&name.as_str())
                || name.starts_with("ALERT_")
                || name.starts_with("RUNBOOKD_")
            {
                self.err(
                    step,
                    &at,
                    format!("`{name}` is set by runbookd for every step and cannot be overridden"),
                );
                continue;
            }
            match value {
                RawEnv::Text(text) => {
                    if let Some(t) = self.template(step, &at, &text, Flavor::Raw, before) {
                        if code_loading(&name) && !t.is_constant() {
                            self.err(step, &at, format!("`{name}` makes programs load code or changes how they parse, so it may only be set to a constant, not to `{text}`"));
                        } else {
                            env.push((name, EnvValue::Template(t)));
                        }
                    }
                }
                RawEnv::SecretFile(file) | RawEnv::CredentialFile(file)
                    if !file.starts_with('/') =>
                {
                    self.err(
                        step,
                        &at,
                        format!("the file `{file}` must be an absolute path"),
                    );
                }
                RawEnv::SecretFile(file) => {
                    env.push((name, EnvValue::Secret(Secret::File(file.into()))));
                }
                RawEnv::CredentialFile(file) => {
                    env.push((name, EnvValue::Secret(Secret::CredentialFile(file.into()))));
                }
                RawEnv::SecretEnv(var) => {
                    if ENV_NAME_RE.is_match(&var) {
                        env.push((name, EnvValue::Secret(Secret::Env(var))));
                    } else {
                        self.err(step, &at, format!("bad secret variable name `{var}`"));
                    }
                }
            }
        }
        env
    }

    /// `drills:`: schedules checked, labels named as Prometheus names them.
    /// `inputs:`: the labels a manual run must give.
    fn inputs(&mut self, raw: Vec<RawInput>) -> Vec<super::Input> {
        let mut out: Vec<super::Input> = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let at = format!("inputs.{i}");
            let mut chars = r.label.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.err(
                    None,
                    &format!("{at}.label"),
                    format!("bad input label `{}`: a Prometheus label name", r.label),
                );
                continue;
            }
            if out.iter().any(|x| x.label == r.label) {
                self.err(
                    None,
                    &format!("{at}.label"),
                    format!("input label `{}` is listed twice", r.label),
                );
                continue;
            }
            let pattern = match r.matches {
                None => None,
                Some(p) => {
                    match crate::matcher::Matcher::new(&r.label, crate::matcher::MatchOp::Regex, &p)
                    {
                        Ok(m) => Some(m),
                        Err(e) => {
                            self.err(None, &format!("{at}.matches"), e.to_string());
                            continue;
                        }
                    }
                }
            };
            out.push(super::Input {
                label: r.label,
                description: r.description.unwrap_or_default(),
                pattern,
            });
        }
        out
    }

    fn drills(&mut self, raw: Vec<RawDrill>, runbook: &str) -> Vec<super::Drill> {
        use std::str::FromStr as _;
        let mut out = Vec::new();
        for (i, d) in raw.into_iter().enumerate() {
            let at = format!("drills.{i}");
            let cron = match croner::Cron::from_str(&d.schedule) {
                Ok(c) if c.find_next_occurrence(&chrono::Utc::now(), false).is_err() => {
                    self.err(
                        None,
                        &format!("{at}.schedule"),
                        format!(
                            "drill `schedule` `{}` never comes (no date matches it)",
                            d.schedule
                        ),
                    );
                    None
                }
                Ok(c) => Some(c),
                Err(e) => {
                    self.err(
                        None,
                        &format!("{at}.schedule"),
                        format!("bad drill `schedule` `{}`: {e} (write a cron pattern: minute hour day-of-month month day-of-week, e.g. `0 3 * * 1`; a sixth field first is seconds)", d.schedule),
                    );
                    None
                }
            };
            let mode = match d.mode.as_deref() {
                None | Some("plan") => super::DrillMode::Plan,
                Some("execute") => super::DrillMode::Execute,
                Some(other) => {
                    self.err(
                        None,
                        &format!("{at}.mode"),
                        format!("unknown drill mode `{other}`: expected plan (record what would run) or execute"),
                    );
                    super::DrillMode::Plan
                }
            };
            for (what, map) in [("labels", &d.labels), ("annotations", &d.annotations)] {
                for name in map.keys() {
                    let mut chars = name.chars();
                    let ok = chars
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !ok {
                        self.err(
                            None,
                            &format!("{at}.{what}.{name}"),
                            format!("bad {what} name `{name}`: use letters, digits and `_`, not starting with a digit"),
                        );
                    }
                }
            }
            let mut labels: crate::alert::Labels = d.labels.into_iter().collect();
            labels
                .entry("alertname".into())
                .or_insert_with(|| runbook.to_owned());
            let requires = d
                .requires
                .and_then(|r| self.drill_requires(&format!("{at}.requires"), r, &labels));
            if !d.safeguards.is_empty() && mode != super::DrillMode::Execute {
                self.err(
                    None,
                    &format!("{at}.safeguards"),
                    "`safeguards` watch a drill that runs its steps: say `mode: execute`",
                );
            }
            let safeguards = d
                .safeguards
                .into_iter()
                .enumerate()
                .filter_map(|(j, s)| self.safeguard(&format!("{at}.safeguards.{j}"), s))
                .collect();
            if let Some(cron) = cron {
                out.push(super::Drill {
                    schedule: d.schedule,
                    cron,
                    labels,
                    annotations: d.annotations.into_iter().collect(),
                    mode,
                    notify: d.notify.unwrap_or(false),
                    requires,
                    safeguards,
                });
            }
        }
        out
    }

    /// One of a drill's `safeguards:`.
    fn safeguard(&mut self, at: &str, s: RawSafeguard) -> Option<super::Safeguard> {
        let before = self.errors.len();
        let interval = self.duration(
            None,
            &format!("{at}.interval"),
            s.interval.as_deref(),
            Duration::from_secs(10),
            false,
        );
        let check = match (s.query, s.holds, s.slo, s.burn_rate) {
            (Some(query), Some(holds), None, None) => {
                if query.contains("{{") {
                    self.err(None, &format!("{at}.query"), "a safeguard's query is written out in full: it watches the service, not an alert (no `{{…}}`)");
                }
                match holds.parse::<crate::runbook::verify::Condition>() {
                    Ok(holds) => Some(super::SafeguardCheck::Query { query, holds }),
                    Err(e) => {
                        self.err(None, &format!("{at}.holds"), format!("`holds`: {e}"));
                        None
                    }
                }
            }
            (None, None, Some(slo), Some(b)) => {
                if !slo
                    .split_once('/')
                    .is_some_and(|(a, n)| !a.is_empty() && !n.is_empty() && !n.contains('/'))
                {
                    self.err(
                        None,
                        &format!("{at}.slo"),
                        format!("`slo: {slo}`: name the SLO as SERVICE/NAME"),
                    );
                }
                let window = self.duration(
                    None,
                    &format!("{at}.burn_rate.window"),
                    Some(&b.window),
                    Duration::from_secs(300),
                    false,
                );
                if !(b.below.is_finite() && b.below > 0.0) {
                    self.err(
                        None,
                        &format!("{at}.burn_rate.below"),
                        "`below` is a positive number",
                    );
                }
                let pos = self
                    .positions
                    .value(&format!("{at}.slo"))
                    .unwrap_or(Pos { line: 1, col: 1 });
                self.slo_refs.push((slo.clone(), pos));
                Some(super::SafeguardCheck::BurnRate(
                    crate::runbook::verify::BurnRate {
                        slo,
                        window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
                        below: b.below,
                    },
                ))
            }
            _ => {
                self.err(None, at, "a safeguard is `query:` with `holds:` (what must stay true, e.g. `< 0.05`), or `slo:` with `burn_rate: {window, below}`");
                None
            }
        };
        if self.errors.len() > before {
            return None;
        }
        Some(super::Safeguard {
            name: s.name,
            check: check?,
            interval,
        })
    }

    /// A drill's `requires:`.
    fn drill_requires(
        &mut self,
        at: &str,
        r: RawDrillRequires,
        labels: &crate::alert::Labels,
    ) -> Option<super::DrillRequires> {
        let before = self.errors.len();
        let service = r.service.or_else(|| labels.get("service").cloned());
        if service.as_deref().is_none_or(str::is_empty) {
            self.err(None, at, "`requires:` counts a service's budget and incidents: give `service:` or a `service` label to the drill");
        }
        if let Some(b) = r.budget_above {
            if !(b.is_finite() && (0.0..1.0).contains(&b)) {
                self.err(None, &format!("{at}.budget_above"), "`budget_above` is the share of the budget that must be left, from 0 to below 1 (0.5: half)");
            }
        }
        let mut days = Vec::new();
        for (i, d) in r.days.iter().enumerate() {
            match d.parse::<chrono::Weekday>() {
                Ok(w) if !days.contains(&w) => days.push(w),
                Ok(_) => {}
                Err(_) => self.err(
                    None,
                    &format!("{at}.days.{i}"),
                    format!("`{d}` is not a day: mon, tue, wed, thu, fri, sat or sun"),
                ),
            }
        }
        let hours = r.hours.as_deref().and_then(|h| {
            let minute = |t: &str| -> Option<u32> {
                let (hh, mm) = t.trim().split_once(':')?;
                let (hh, mm): (u32, u32) = (hh.parse().ok()?, mm.parse().ok()?);
                (hh <= 24 && mm < 60 && hh * 60 + mm <= 24 * 60).then_some(hh * 60 + mm)
            };
            match h.split_once('-').and_then(|(a, b)| Some((minute(a)?, minute(b)?))) {
                Some((from, to)) if from < to => Some((from, to)),
                _ => {
                    self.err(None, &format!("{at}.hours"), format!("`hours: {h}`: write `HH:MM-HH:MM` in UTC, the start before the end (e.g. `09:00-17:00`)"));
                    None
                }
            }
        });
        if self.errors.len() > before {
            return None;
        }
        Some(super::DrillRequires {
            service: service.unwrap_or_default(),
            budget_above: r.budget_above,
            no_open_incident: r.no_open_incident.unwrap_or(false),
            days,
            hours,
        })
    }

    /// `communication:` and `escalation:`, with where each notifier is named
    /// (checked against the server's `notifiers:` when it starts).
    fn policy(
        &mut self,
        communication: Vec<RawCommunication>,
        escalation: Vec<RawEscalation>,
    ) -> (crate::runbook::notify::Policy, Vec<(String, Pos)>) {
        use crate::runbook::notify::{Communication, Escalation, Event, Policy, Unless};
        let mut refs = Vec::new();
        let mut notify = |c: &mut Self, path: &str, names: Vec<String>| -> Vec<String> {
            if names.is_empty() {
                c.err(None, path, "`notify` needs at least one notifier name");
            }
            let mut out: Vec<String> = Vec::new();
            for (i, n) in names.into_iter().enumerate() {
                let at = format!("{path}.{i}");
                let pos = c.positions.value(&at).unwrap_or(Pos { line: 1, col: 1 });
                if !NAME_RE.is_match(&n) {
                    c.err(
                        None,
                        &at,
                        format!("bad notifier name `{n}`: use letters, digits, `.`, `-` and `_`"),
                    );
                } else if !out.contains(&n) {
                    refs.push((n.clone(), pos));
                    out.push(n);
                }
            }
            out
        };
        let message = |c: &mut Self, path: &str, src: Option<String>| -> Option<String> {
            let src = src?;
            match crate::template::Template::compile_message(&src) {
                Ok(_) => Some(src),
                Err(e) => {
                    c.err(None, path, e);
                    None
                }
            }
        };
        let mut policy = Policy::default();
        for (i, raw) in communication.into_iter().enumerate() {
            let at = format!("communication.{i}");
            if raw.on.is_empty() {
                self.err(None, &format!("{at}.on"), "`on` needs at least one event");
            }
            let mut on = Vec::new();
            for (j, e) in raw.on.iter().enumerate() {
                match e.parse::<Event>() {
                    Ok(e) if !on.contains(&e) => on.push(e),
                    Ok(_) => {}
                    Err(why) => self.err(None, &format!("{at}.on.{j}"), why),
                }
            }
            let targets = notify(self, &format!("{at}.notify"), raw.notify);
            let message = message(self, &format!("{at}.message"), raw.message);
            policy.communication.push(Communication {
                on,
                notify: targets,
                message,
            });
        }
        for (i, raw) in escalation.into_iter().enumerate() {
            let at = format!("escalation.{i}");
            let after = self.duration(
                None,
                &format!("{at}.after"),
                Some(&raw.after),
                Duration::from_secs(900),
                false,
            );
            let unless = match raw.unless {
                None => vec![Unless::Acknowledged, Unless::Resolved],
                Some(list) => {
                    let mut out = Vec::new();
                    for (j, u) in list.iter().enumerate() {
                        match u.parse::<Unless>() {
                            Ok(u) if !out.contains(&u) => out.push(u),
                            Ok(_) => {}
                            Err(why) => self.err(None, &format!("{at}.unless.{j}"), why),
                        }
                    }
                    out
                }
            };
            let targets = notify(self, &format!("{at}.notify"), raw.notify);
            let message = message(self, &format!("{at}.message"), raw.message);
            policy.escalation.push(Escalation {
                after,
                unless,
                notify: targets,
                message,
            });
        }
        (policy, refs)
    }

    fn steps(
        &mut self,
        list: &str,
        raw: Vec<RawStep>,
        mut before: Vec<String>,
        names: &mut HashMap<String, String>,
    ) -> Vec<Step> {
        let mut steps = Vec::new();
        for (i, rs) in raw.into_iter().enumerate() {
            let path = format!("{list}.{i}");
            let name = rs.name.clone();
            let sn = Some(name.as_str());
            if !STEP_NAME_RE.is_match(&name) {
                self.err(
                    sn,
                    &format!("{path}.name"),
                    "bad step name: use letters, digits, `-` and `_` (at most 64)",
                );
            }
            if let Some(first) = names.insert(name.clone(), list.to_owned()) {
                self.err(
                    sn,
                    &format!("{path}.name"),
                    format!("duplicate step name (also in `{first}`)"),
                );
            }
            let refs: Vec<&str> = before.iter().map(String::as_str).collect();
            if let Some(step) = self.step(&path, rs, &refs) {
                steps.push(step);
            }
            before.push(name);
        }
        steps
    }

    /// A `silence:` step's settings.
    fn silence(
        &mut self,
        step: Option<&str>,
        path: &str,
        raw: RawSilence,
        before: &[&str],
    ) -> Option<Action> {
        let duration = self.duration(
            step,
            &format!("{path}.duration"),
            raw.duration.as_deref(),
            Duration::from_secs(3600),
            false,
        );
        let comment = match raw.comment {
            Some(c) => {
                Some(self.template(step, &format!("{path}.comment"), &c, Flavor::Raw, before)?)
            }
            None => None,
        };
        let matchers = match raw.matchers {
            None => None,
            Some(list) => {
                if list.is_empty() {
                    self.err(step, &format!("{path}.matchers"), "`matchers` needs at least one matcher (leave it out to silence the alert's own labels)");
                }
                let mut out = Vec::new();
                for (i, m) in list.iter().enumerate() {
                    match m.parse::<Matcher>() {
                        Ok(m) => out.push(m),
                        Err(e) => self.err(step, &format!("{path}.matchers.{i}"), e.to_string()),
                    }
                }
                Some(out)
            }
        };
        let until = match raw.until.as_deref() {
            None | Some("run_end") => crate::runbook::Until::RunEnd,
            Some("resolved") => crate::runbook::Until::Resolved,
            Some(other) => {
                self.err(
                    step,
                    &format!("{path}.until"),
                    format!(
                        "unknown `until` `{other}`: expected run_end (the default) or resolved"
                    ),
                );
                crate::runbook::Until::RunEnd
            }
        };
        Some(Action::Silence(super::SilenceSpec {
            duration,
            comment,
            matchers,
            until,
            covers_others: raw.covers_others.unwrap_or(false),
        }))
    }

    /// An `approve:` step's settings.
    fn approve(
        &mut self,
        step: Option<&str>,
        path: &str,
        raw: &RawApprove,
        before: &[&str],
    ) -> Option<Action> {
        if path.starts_with("on_failure.") {
            self.err(step, path, "an approval step cannot be in `on_failure`: a rollback runs when things already went wrong, and does not wait for people (put the approval in `steps`)");
        }
        if raw.prompt.trim().is_empty() {
            self.err(
                step,
                &format!("{path}.prompt"),
                "`prompt` must say what operators approve",
            );
        }
        let timeout = self.duration(
            step,
            &format!("{path}.timeout"),
            raw.timeout.as_deref(),
            DEFAULT_APPROVAL_TIMEOUT,
            false,
        );
        if timeout > MAX_APPROVAL_TIMEOUT {
            self.err(
                step,
                &format!("{path}.timeout"),
                "an approval waits at most 7d",
            );
        }
        let on_timeout = match raw.on_timeout.as_deref() {
            None => crate::runbook::OnTimeout::Deny,
            Some(s) => s.parse().unwrap_or_else(|e: String| {
                self.err(step, &format!("{path}.on_timeout"), e);
                crate::runbook::OnTimeout::Deny
            }),
        };
        let prompt = self.template(
            step,
            &format!("{path}.prompt"),
            &raw.prompt,
            Flavor::Raw,
            before,
        )?;
        Some(Action::Approve(super::ApproveSpec {
            prompt,
            timeout,
            on_timeout,
        }))
    }

    /// A `verify:` step's settings.
    fn verify(
        &mut self,
        step: Option<&str>,
        path: &str,
        raw: RawVerify,
        before: &[&str],
    ) -> Option<Action> {
        let at = |f: &str| format!("{path}.{f}");
        let burn = match (raw.slo, raw.burn_rate) {
            (None, None) => None,
            (Some(slo), Some(b)) => {
                let before = self.errors.len();
                if !slo.split_once('/').is_some_and(|(s, n)| {
                    !s.is_empty() && !n.is_empty() && !n.contains('/') && !slo.contains("{{")
                }) {
                    self.err(step, &at("slo"), format!("`slo: {slo}`: name the SLO as SERVICE/NAME, as its SLO file does (no templates)"));
                }
                let window = self.duration(
                    step,
                    &at("burn_rate.window"),
                    Some(&b.window),
                    Duration::from_secs(300),
                    false,
                );
                if window < Duration::from_secs(60) || window > Duration::from_secs(86_400) {
                    self.err(step, &at("burn_rate.window"), "a burn rate's window is 1m to 1d: a rate needs samples, and the step answers about now");
                }
                if !(b.below.is_finite() && b.below > 0.0) {
                    self.err(step, &at("burn_rate.below"), "`below` is a positive number: 1 is the pace that spends the budget exactly over the period");
                }
                for (f, set) in [
                    ("query", raw.query.is_some()),
                    ("alert_resolved", raw.alert_resolved.is_some()),
                    ("success", raw.success.is_some()),
                    ("failure", raw.failure.is_some()),
                ] {
                    if set {
                        self.err(step, &at(f), format!("`{f}` does not go with `slo:`/`burn_rate:`, whose success is `burn_rate.below`"));
                    }
                }
                if self.errors.len() > before {
                    return None;
                }
                let pos = self
                    .positions
                    .value(&at("slo"))
                    .unwrap_or(Pos { line: 1, col: 1 });
                self.slo_refs.push((slo.clone(), pos));
                Some(crate::runbook::verify::BurnRate {
                    slo,
                    window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
                    below: b.below,
                })
            }
            (Some(_), None) => {
                self.err(
                    step,
                    &at("slo"),
                    "`slo:` needs `burn_rate: {window: 5m, below: 1}`: what must hold of the SLO",
                );
                return None;
            }
            (None, Some(_)) => {
                self.err(
                    step,
                    &at("burn_rate"),
                    "`burn_rate:` needs `slo: SERVICE/NAME`: whose burn rate",
                );
                return None;
            }
        };
        let cond = |me: &mut Self, f: &str, v: Option<&String>| {
            v.and_then(|t| {
                t.parse::<crate::runbook::verify::Condition>()
                    .map_err(|e| me.err(step, &at(f), format!("`{f}`: {e}")))
                    .ok()
            })
        };
        let success = cond(self, "success", raw.success.as_ref());
        let failure = cond(self, "failure", raw.failure.as_ref());
        let check = match (raw.query, raw.alert_resolved.unwrap_or(false)) {
            _ if burn.is_some() => burn.map(super::VerifyCheck::BurnRate),
            (Some(q), false) => {
                if raw.success.is_none() && raw.failure.is_none() {
                    self.err(step, path, "a `query` needs `success` (and may have `failure`): what value means it worked?");
                }
                match crate::template::promql::Query::compile(&q, before) {
                    Ok(query) => Some(super::VerifyCheck::Query {
                        query,
                        success,
                        failure,
                    }),
                    Err(e) => {
                        self.err(step, &at("query"), format!("`query`: {e}"));
                        None
                    }
                }
            }
            (None, true) => {
                for (f, set) in [
                    ("success", raw.success.is_some()),
                    ("failure", raw.failure.is_some()),
                ] {
                    if set {
                        self.err(
                            step,
                            &at(f),
                            format!("`{f}` compares a query's value; `alert_resolved` has none"),
                        );
                    }
                }
                Some(super::VerifyCheck::AlertResolved)
            }
            _ => {
                self.err(step, path, "a verify step takes a `query` (with `success`), `alert_resolved: true`, or `slo:` with `burn_rate:`, one of them");
                None
            }
        };
        let initial_delay = self.duration(
            step,
            &at("initial_delay"),
            raw.initial_delay.as_deref(),
            Duration::ZERO,
            true,
        );
        let interval = self.duration(
            step,
            &at("interval"),
            raw.interval.as_deref(),
            Duration::from_secs(30),
            false,
        );
        let timeout = self.duration(
            step,
            &at("timeout"),
            raw.timeout.as_deref(),
            Duration::from_secs(600),
            false,
        );
        if timeout > Duration::from_secs(86_400) {
            self.err(step, &at("timeout"), "a verify step waits at most 1d");
        }
        let consecutive_success = raw.consecutive_success.unwrap_or(1);
        if consecutive_success == 0 {
            self.err(
                step,
                &at("consecutive_success"),
                "`consecutive_success` is at least 1",
            );
        } else if initial_delay + interval * (consecutive_success - 1) >= timeout {
            self.err(step, &at("timeout"), format!(
                "{consecutive_success} successes {} apart after `initial_delay` {} do not fit in `timeout` {}: the step could never succeed",
                humantime::format_duration(interval),
                humantime::format_duration(initial_delay),
                humantime::format_duration(timeout)
            ));
        }
        let on_inconclusive = match raw.on_inconclusive.as_deref() {
            None => crate::runbook::verify::Inconclusive::Fail,
            Some(s) => s.parse().unwrap_or_else(|e: String| {
                self.err(step, &at("on_inconclusive"), e);
                crate::runbook::verify::Inconclusive::Fail
            }),
        };
        Some(Action::Verify(super::VerifySpec {
            check: check?,
            initial_delay,
            interval,
            timeout,
            consecutive_success,
            on_inconclusive,
        }))
    }

    /// `requires: {budget: SERVICE}` or `risk: high` (the alert's
    /// `service`), with `on_frozen`: the error-budget gate a step (or, with
    /// `step` `None`, a whole runbook) asks.
    fn gate(
        &mut self,
        sn: Option<&str>,
        path: &str,
        requires: Option<&RawRequires>,
        risk: Option<&str>,
        on_frozen: Option<&str>,
        before: &[&str],
    ) -> Option<StepGate> {
        let at = |field: &str| {
            if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            }
        };
        // `requires: {budget: SERVICE}` or `risk: high` (the alert's
        // `service`): the step asks that service's error-budget gate.
        let service = match (requires, risk) {
            (Some(r), None | Some("high")) => Some((r.budget.as_str(), "requires.budget")),
            (None, Some("high")) => Some(("{{labels.service}}", "risk")),
            (_, None | Some("low")) => None,
            (_, Some(other)) => {
                self.err(sn, &at("risk"), format!("unknown risk `{other}`: `high` (the step asks its service's error-budget gate) or `low`"));
                None
            }
        };
        let given_on_frozen = on_frozen.is_some();
        let on_frozen = match on_frozen {
            None | Some("skip") => OnFrozen::Skip,
            Some("fail") => OnFrozen::Fail,
            Some("approve") => OnFrozen::Approve,
            Some(other) => {
                self.err(
                    sn,
                    &at("on_frozen"),
                    format!(
                        "unknown `on_frozen: {other}`: `skip` (the default), `fail` or `approve`"
                    ),
                );
                OnFrozen::Skip
            }
        };
        if given_on_frozen && service.is_none() {
            self.err(
                sn,
                &at("on_frozen"),
                "`on_frozen` needs `requires: {budget: SERVICE}` or `risk: high`",
            );
        }
        service.and_then(|(text, field)| {
            let service = self.template(sn, &at(field), text, Flavor::Raw, before)?;
            if service.uses_steps() {
                self.err(sn, &at(field), "the gated service is known before the run: it may read the alert, not earlier steps");
                return None;
            }
            Some(StepGate { service, on_frozen })
        })
    }

    fn step(&mut self, path: &str, rs: RawStep, before: &[&str]) -> Option<Step> {
        let name = rs.name.as_str();
        let sn = Some(name);
        let at = |field: &str| format!("{path}.{field}");
        let given: Vec<&str> = [
            ("run", rs.run.is_some()),
            ("shell", rs.shell.is_some()),
            ("manual", rs.manual.is_some()),
            ("silence", rs.silence.is_some()),
            ("approve", rs.approve.is_some()),
            ("verify", rs.verify.is_some()),
        ]
        .into_iter()
        .filter(|(_, g)| *g)
        .map(|(k, _)| k)
        .collect();
        let action = match (
            rs.run, rs.shell, rs.manual, rs.silence, rs.approve, rs.verify,
        ) {
            (None, None, None, Some(raw), None, None) => {
                self.silence(sn, &at("silence"), raw, before)
            }
            (None, None, None, None, Some(raw), None) => {
                self.approve(sn, &at("approve"), &raw, before)
            }
            (None, None, None, None, None, Some(raw)) => {
                self.verify(sn, &at("verify"), raw, before)
            }
            (Some(argv), None, None, None, None, None) => {
                if argv.is_empty() {
                    self.err(sn, &at("run"), "`run` needs at least the program to run");
                }
                let rendered: Vec<Option<Template>> = argv
                    .iter()
                    .enumerate()
                    .map(|(j, Scalar(a))| {
                        self.template(sn, &format!("{path}.run.{j}"), a, Flavor::Raw, before)
                    })
                    .collect();
                rendered
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .map(Action::Run)
            }
            (None, Some(script), None, None, None, None) => self
                .template(sn, &at("shell"), &script, Flavor::Shell, before)
                .map(Action::Shell),
            (None, None, Some(text), None, None, None) => self
                .template(sn, &at("manual"), &text, Flavor::Raw, before)
                .map(Action::Manual),
            _ => {
                let what = if given.is_empty() {
                    "none of them".to_owned()
                } else {
                    given.join(" and ")
                };
                self.err(sn, path, format!("a step takes exactly one of `run`, `shell`, `manual`, `silence`, `approve` or `verify`; this one has {what}"));
                None
            }
        };
        if matches!(action, Some(Action::Verify(_))) {
            for (field, set, why) in [
                (
                    "timeout",
                    rs.timeout.is_some(),
                    "use `verify.timeout` for how long it polls",
                ),
                (
                    "env",
                    !rs.env.is_empty(),
                    "runbookd measures itself; nothing runs",
                ),
                (
                    "network",
                    rs.network.is_some(),
                    "runbookd measures itself; nothing runs",
                ),
                (
                    "resources",
                    rs.resources.is_some(),
                    "runbookd measures itself; nothing runs",
                ),
                (
                    "writable_paths",
                    !rs.writable_paths.is_empty(),
                    "runbookd measures itself; nothing runs",
                ),
            ] {
                if set {
                    self.err(
                        sn,
                        &at(field),
                        format!("`{field}` does not apply to a verify step: {why}"),
                    );
                }
            }
        }
        if matches!(action, Some(Action::Silence(_))) {
            for (field, set) in [
                ("timeout", rs.timeout.is_some()),
                ("env", !rs.env.is_empty()),
                ("network", rs.network.is_some()),
                ("resources", rs.resources.is_some()),
                ("writable_paths", !rs.writable_paths.is_empty()),
            ] {
                if set {
                    self.err(
                        sn,
                        &at(field),
                        format!("`{field}` does not apply to a silence step, which runbookd performs itself through Alertmanager's API"),
                    );
                }
            }
        }
        if matches!(action, Some(Action::Approve(_))) {
            for (field, set, why) in [
                (
                    "timeout",
                    rs.timeout.is_some(),
                    "use `approve.timeout` for how long it waits",
                ),
                ("retries", rs.retries.is_some(), "a decision is not retried"),
                (
                    "retry_delay",
                    rs.retry_delay.is_some(),
                    "a decision is not retried",
                ),
                ("env", !rs.env.is_empty(), "it runs nothing"),
                ("network", rs.network.is_some(), "it runs nothing"),
                ("resources", rs.resources.is_some(), "it runs nothing"),
                (
                    "writable_paths",
                    !rs.writable_paths.is_empty(),
                    "it runs nothing",
                ),
            ] {
                if set {
                    self.err(
                        sn,
                        &at(field),
                        format!("`{field}` does not apply to an approval step: {why}"),
                    );
                }
            }
        }
        if matches!(action, Some(Action::Manual(_))) {
            for (field, set) in [
                ("timeout", rs.timeout.is_some()),
                ("retries", rs.retries.is_some()),
                ("retry_delay", rs.retry_delay.is_some()),
                ("continue_on_failure", rs.continue_on_failure.is_some()),
                ("env", !rs.env.is_empty()),
                ("network", rs.network.is_some()),
                ("resources", rs.resources.is_some()),
                ("writable_paths", !rs.writable_paths.is_empty()),
            ] {
                if set {
                    self.err(
                        sn,
                        &at(field),
                        format!("`{field}` does not apply to a manual step, which runs nothing"),
                    );
                }
            }
        }
        let timeout = self.duration(
            sn,
            &at("timeout"),
            rs.timeout.as_deref(),
            DEFAULT_STEP_TIMEOUT,
            false,
        );
        let retry_delay = self.duration(
            sn,
            &at("retry_delay"),
            rs.retry_delay.as_deref(),
            DEFAULT_RETRY_DELAY,
            true,
        );
        let retries = rs.retries.unwrap_or(0);
        if retries > MAX_RETRIES {
            self.err(sn, &at("retries"), format!("at most {MAX_RETRIES} retries"));
        }
        let when = rs
            .when
            .as_deref()
            .and_then(|w| self.template(sn, &at("when"), w, Flavor::Raw, before));
        let env = self.env(sn, &at("env"), rs.env, before);
        let mut sandbox = StepSandbox::default();
        match rs.network.as_deref() {
            None | Some("host") => {}
            Some("none") => sandbox.network_none = true,
            Some(other) => self.err(sn, &at("network"), format!("unknown network mode `{other}`: use `none` (own network namespace, loopback only) or `host`")),
        }
        if let Some(r) = rs.resources {
            if let Some(m) = r.memory {
                match crate::runbook::parse_memory(&m) {
                    Ok(bytes) => sandbox.memory = Some(bytes),
                    Err(e) => self.err(sn, &at("resources.memory"), e),
                }
            }
            match r.pids {
                Some(0) => self.err(
                    sn,
                    &at("resources.pids"),
                    "`resources.pids` must be at least 1",
                ),
                p => sandbox.pids = p,
            }
        }
        for (j, p) in rs.writable_paths.iter().enumerate() {
            if p.starts_with('/') {
                sandbox.writable_paths.push(p.into());
            } else {
                self.err(
                    sn,
                    &format!("{path}.writable_paths.{j}"),
                    format!("writable path `{p}` must be absolute"),
                );
            }
        }
        let gate = self.gate(
            sn,
            path,
            rs.requires.as_ref(),
            rs.risk.as_deref(),
            rs.on_frozen.as_deref(),
            before,
        );
        let action = action?;
        self.lint(name, path, &action);
        Some(Step {
            gate,
            name: rs.name,
            action,
            timeout,
            retries,
            retry_delay,
            continue_on_failure: rs.continue_on_failure.unwrap_or(false),
            when,
            env,
            sandbox,
        })
    }
}

fn leaf(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// A runbook and its warnings, or the file's errors.
type Parsed = Result<(Runbook, Vec<LoadError>), Vec<LoadError>>;

/// Parses one file. Returns the runbook's name and where it is written
/// (known even when the file has errors), and the runbook or its errors.
fn parse(file: &Path, text: &str) -> (String, Option<Pos>, Parsed) {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let positions = Positions::of(text);
    let found = positions.as_ref().ok();
    let name = found
        .and_then(|p| p.scalar("name"))
        .map_or(stem, ToOwned::to_owned);
    let name_pos = found.and_then(|p| p.value("name"));
    (name, name_pos, parse_checked(file, text, positions))
}

fn parse_checked(file: &Path, text: &str, positions: Result<Positions, (Pos, String)>) -> Parsed {
    let first = parse_checked_once(file, text, positions);
    // An unknown field stops serde at the first one; report it, take that
    // entry out (keeping every line where it was) and check the rest, so
    // one typo does not hide the file's other errors.
    let mut unknown = Vec::new();
    let mut text = text.to_owned();
    let mut result = first;
    for _ in 0..64 {
        let Err(errors) = &result else { break };
        let [e] = errors.as_slice() else { break };
        let Some(pos) = e.pos.filter(|_| e.message.contains("unknown field")) else {
            break;
        };
        if unknown
            .last()
            .is_some_and(|u: &LoadError| u.pos == Some(pos))
            || !blank_entry(&mut text, pos)
        {
            break;
        }
        unknown.push(e.clone());
        result = parse_checked_once(file, &text, Positions::of(&text));
    }
    if unknown.is_empty() {
        return result;
    }
    match result {
        Ok(_) => Err(unknown),
        Err(mut rest) => {
            // A field missing only because its name was mistyped (and taken
            // out above) is the same error again.
            rest.retain(|e| {
                !e.message.contains("missing field")
                    && !unknown
                        .iter()
                        .any(|u| u.pos == e.pos && u.message == e.message)
            });
            unknown.append(&mut rest);
            Err(unknown)
        }
    }
}

/// `unknown field `titel`, expected one of …` with `; did you mean `title`?`
/// when one expected name is within two edits of the unknown one.
fn with_suggestion(message: String) -> String {
    let Some(rest) = message.split("unknown field `").nth(1) else {
        return message;
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message;
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|cand| (edit_distance(unknown, cand), cand))
        .filter(|&(d, cand)| d > 0 && d <= 2.min(cand.len().saturating_sub(1)))
        .min_by_key(|&(d, _)| d);
    match best {
        Some((_, cand)) => format!("{message}; did you mean `{cand}`?"),
        None => message,
    }
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Removes the mapping entry whose key starts at `pos` (and the lines
/// indented under it), leaving empty lines so later positions stay true.
/// False when `pos` is not the start of a `key:` on its line.
fn blank_entry(text: &mut String, pos: Pos) -> bool {
    let mut lines: Vec<String> = text.split('\n').map(ToOwned::to_owned).collect();
    let Some(idx) = pos.line.checked_sub(1).filter(|&i| i < lines.len()) else {
        return false;
    };
    let indent = pos.col.saturating_sub(1);
    let line = &lines[idx];
    let Some(entry) = line.get(indent..) else {
        return false;
    };
    let is_key = entry
        .split_once(':')
        .is_some_and(|(k, _)| !k.is_empty() && !k.contains([' ', '{', '[', ',', '#']));
    if !is_key || !line[..indent].chars().all(|c| c == ' ' || c == '-') {
        return false;
    }
    lines[idx].truncate(indent);
    if lines[idx].trim_end().ends_with('-') {
        // The entry was a list item's first key: keep the item a mapping.
        lines[idx].push_str("{}");
    }
    for l in lines.iter_mut().skip(idx + 1) {
        let depth = l.len() - l.trim_start().len();
        if l.trim().is_empty() || depth > indent {
            l.clear();
        } else {
            break;
        }
    }
    *text = lines.join("\n");
    true
}

fn parse_checked_once(
    file: &Path,
    text: &str,
    positions: Result<Positions, (Pos, String)>,
) -> Parsed {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fail =
        |pos: Option<Pos>, runbook: Option<String>, step: Option<String>, message: String| {
            vec![LoadError {
                file: file.to_owned(),
                pos,
                runbook,
                step,
                message,
                warning: false,
            }]
        };
    if text.trim().is_empty() {
        return Err(fail(None, Some(stem), None, "the file is empty".to_owned()));
    }
    let positions = positions.map_err(|(pos, msg)| {
        fail(
            Some(pos),
            Some(stem.clone()),
            None,
            format!("YAML syntax error: {msg}"),
        )
    })?;
    let runbook_name = positions.scalar("name").unwrap_or(&stem).to_owned();
    let raw: RawRunbook = serde_yaml::from_str(text).map_err(|e| {
        let pos = e.location().map(|l| Pos {
            line: l.line(),
            col: l.column(),
        });
        let step_name = pos.and_then(|at| step_at(&positions, at));
        let msg = SERDE_LOCATION.replace(&e.to_string(), "").into_owned();
        let msg = if step_name.is_some() {
            SERDE_PATH.replace(&msg, "").into_owned()
        } else {
            msg
        };
        fail(
            pos,
            Some(runbook_name.clone()),
            step_name,
            with_suggestion(msg),
        )
    })?;

    let name = raw.name.clone().unwrap_or_else(|| stem.clone());
    let mut c = Checker {
        file,
        positions: &positions,
        runbook: name.clone(),
        errors: Vec::new(),
        warnings: Vec::new(),
        matchers: Vec::new(),
        slo_refs: Vec::new(),
    };
    if !NAME_RE.is_match(&name) {
        let hint = if raw.name.is_none() {
            " (taken from the file name; set `name:`)"
        } else {
            ""
        };
        c.err(None, "name", format!("bad runbook name `{name}`: use letters, digits, `.`, `-` and `_` (at most 128){hint}"));
    }
    let severity = match raw.severity.as_deref().map(str::parse::<Severity>) {
        None => Severity::Sev3,
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            c.err(None, "severity", e);
            Severity::Sev3
        }
    };
    if raw.matchers.is_empty() {
        c.err(
            None,
            "matchers",
            "at least one matcher is needed: a runbook without matchers would run for every alert",
        );
    }
    let mut matchers = Vec::new();
    for (i, m) in raw.matchers.iter().enumerate() {
        match m.parse::<Matcher>() {
            Ok(m) => matchers.push(m),
            Err(e) => c.err(None, &format!("matchers.{i}"), e.to_string()),
        }
    }
    c.matchers.clone_from(&matchers);
    let timeout = c.duration(
        None,
        "timeout",
        raw.timeout.as_deref(),
        DEFAULT_RUN_TIMEOUT,
        false,
    );
    let cooldown = c.duration(
        None,
        "cooldown",
        raw.cooldown.as_deref(),
        Duration::ZERO,
        true,
    );
    let rate = raw.rate.as_deref().and_then(|r| match r.parse() {
        Ok(rate) => Some(rate),
        Err(e) => {
            c.err(None, "rate", e);
            None
        }
    });
    let concurrency = raw.concurrency.unwrap_or(1);
    if concurrency == 0 {
        c.err(None, "concurrency", "`concurrency` must be at least 1");
    }
    let env = c.env(None, "env", raw.env, &[]);
    if raw.steps.is_empty() {
        c.err(None, "steps", "a runbook needs at least one step");
    }
    let mut names = HashMap::new();
    let main_names: Vec<String> = raw.steps.iter().map(|s| s.name.clone()).collect();
    let steps = c.steps("steps", raw.steps, Vec::new(), &mut names);
    let on_failure = c.steps("on_failure", raw.on_failure, main_names, &mut names);
    let on_resolved = c.steps("on_resolved", raw.on_resolved, Vec::new(), &mut names);
    let (policy, notifier_refs) = c.policy(raw.communication, raw.escalation);
    let drills = c.drills(raw.drills, &name);
    let gate = c.gate(
        None,
        "",
        raw.requires.as_ref(),
        raw.risk.as_deref(),
        raw.on_frozen.as_deref(),
        &[],
    );
    let inputs = c.inputs(raw.inputs);

    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    let warnings = std::mem::take(&mut c.warnings);
    Ok((
        Runbook {
            title: raw.title.unwrap_or_else(|| name.clone()),
            name,
            severity,
            description: raw.description.unwrap_or_default(),
            matchers,
            timeout,
            concurrency,
            cooldown,
            rate,
            cancel_on_resolved: raw.cancel_on_resolved.unwrap_or(false),
            idempotent: raw.idempotent.unwrap_or(false),
            run_as: raw.run_as,
            env,
            steps,
            on_failure,
            on_resolved,
            policy,
            notifier_refs,
            slo_refs: std::mem::take(&mut c.slo_refs),
            gate,
            drills,
            inputs,
            source: file.to_owned(),
        },
        warnings,
    ))
}

/// The name of the step whose YAML contains `at`, if any.
fn step_at(positions: &Positions, at: Pos) -> Option<String> {
    for list in ["steps", "on_failure", "on_resolved"] {
        for i in 0.. {
            let path = format!("{list}.{i}");
            if positions.value(&path).is_none() {
                break;
            }
            if positions.contains(&path, at) {
                return positions
                    .scalar(&format!("{path}.name"))
                    .map(ToOwned::to_owned);
            }
        }
    }
    None
}
