//! Runbooks: the model (what a runbook *is* once loaded), loading with
//! validation ([`load_dir`]), and the set that finds the runbooks matching an
//! alert ([`RunbookSet`]).
//!
//! Past [`load_dir`] every value is checked: matchers are compiled, durations
//! parsed, templates compiled against the context they will see, names unique.

pub mod lint;
mod load;
pub mod notify;
pub mod position;
pub mod verify;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use load::{load_dir, load_files, load_paths, LoadError, LoadErrors};
pub use position::Pos;

use serde::{Deserialize, Serialize};

use crate::alert::Labels;
use crate::matcher::{MatchOp, Matcher};
use crate::named::named;
use crate::template::Template;

/// Incident severity, `sev1` (worst) to `sev4`. Orders worst first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Sev1,
    Sev2,
    Sev3,
    Sev4,
}

impl Severity {
    /// Whether an incident of this severity counts as SLO-affecting while
    /// what it spent is not known (or its services have no SLO): sev1 and
    /// sev2, as the guide's `is_slo_affecting`.
    #[must_use]
    pub fn affects_slos(self) -> bool {
        matches!(self, Severity::Sev1 | Severity::Sev2)
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sev1" => Ok(Severity::Sev1),
            "sev2" => Ok(Severity::Sev2),
            "sev3" => Ok(Severity::Sev3),
            "sev4" => Ok(Severity::Sev4),
            _ => Err(format!(
                "unknown severity `{s}`: expected sev1 (worst), sev2, sev3 or sev4"
            )),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`: widths and alignment apply (`{:<5}` in tables).
        f.pad(match self {
            Severity::Sev1 => "sev1",
            Severity::Sev2 => "sev2",
            Severity::Sev3 => "sev3",
            Severity::Sev4 => "sev4",
        })
    }
}

/// A loaded, valid runbook.
#[derive(Debug)]
pub struct Runbook {
    pub name: String,
    pub title: String,
    pub severity: Severity,
    pub description: String,
    pub matchers: Vec<Matcher>,
    /// Budget for a whole run.
    pub timeout: Duration,
    /// Runs of this runbook at once; more are queued.
    pub concurrency: u32,
    /// No new run for the same alert within this long of the last one.
    pub cooldown: Duration,
    /// `rate: 10/5m`: at most this many runs of it (for any alert) per
    /// window; more are recorded `skipped` (an alert storm).
    pub rate: Option<crate::duration::Rate>,
    pub cancel_on_resolved: bool,
    /// Its steps may run again: a run taken over from a dead replica (or
    /// found running after a crash) is queued again instead of ending
    /// `interrupted`.
    pub idempotent: bool,
    /// `run_as`: the user this runbook's steps run as, instead of the
    /// server's `run_as` (runbookd must run as root).
    pub run_as: Option<String>,
    /// For every step; values are templates or secrets.
    pub env: Vec<(String, EnvValue)>,
    pub steps: Vec<Step>,
    pub on_failure: Vec<Step>,
    pub on_resolved: Vec<Step>,
    /// `communication:` and `escalation:`.
    pub policy: crate::runbook::notify::Policy,
    /// Each notifier the policy names, where (checked against the server's
    /// `notifiers:` at start and reload).
    pub notifier_refs: Vec<(String, Pos)>,
    /// Each SLO its `verify: {slo: …}` steps name (`service/name`), where
    /// (checked against the server's SLO files at start and reload, and by
    /// `check --slos`).
    pub slo_refs: Vec<(String, Pos)>,
    /// `requires: {budget: …}` / `risk: high` on the runbook: the run asks
    /// its service's error-budget gate before its first step; frozen, it
    /// is skipped, fails, or asks an operator first (`on_frozen`).
    pub gate: Option<StepGate>,
    /// `drills:`: scheduled runs with a synthetic alert.
    pub drills: Vec<Drill>,
    /// `inputs:`: the labels a manual run must give.
    pub inputs: Vec<Input>,
    /// The file it was loaded from.
    pub source: PathBuf,
}

/// A label a manual run must give (`inputs:`).
#[derive(Debug, Clone)]
pub struct Input {
    pub label: String,
    /// What to enter, shown in the *Run now* form and in refusals.
    pub description: String,
    /// `matches`: a fully anchored regex the value must match.
    pub pattern: Option<Matcher>,
}

impl Runbook {
    /// Why `labels` cannot start a manual run of this runbook: a declared
    /// input missing, empty or not matching its pattern (one sentence per
    /// problem).
    #[must_use]
    pub fn missing_inputs(&self, labels: &Labels) -> Vec<String> {
        self.inputs
            .iter()
            .filter_map(|i| {
                let what = if i.description.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", i.description)
                };
                match labels.get(&i.label).map(String::as_str) {
                    None | Some("") => Some(format!("label `{}`{what} is needed", i.label)),
                    Some(v) if i.pattern.as_ref().is_some_and(|p| !p.matches_value(v)) => {
                        Some(format!(
                            "label `{}`{what} must match `{}`, not `{}`",
                            i.label,
                            i.pattern.as_ref().map_or("", |p| p.value.as_str()),
                            v.escape_debug()
                        ))
                    }
                    Some(_) => None,
                }
            })
            .collect()
    }

    /// Whether every matcher holds for this one alert's labels.
    #[must_use]
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// A drill (game day): the runbook run on a schedule with a synthetic
/// alert, recorded as a drill.
#[derive(Debug, Clone)]
pub struct Drill {
    /// The cron pattern as written (5 fields, or 6 with seconds first).
    pub schedule: String,
    pub cron: croner::Cron,
    pub labels: Labels,
    pub annotations: Labels,
    pub mode: DrillMode,
    /// Whether the runbook's `communication:` and `escalation:` apply (by
    /// default a drill pages nobody).
    pub notify: bool,
    /// `requires:`: when the drill may run as a chaos experiment; checked
    /// before each occurrence (a refused one records its plan, nothing
    /// runs).
    pub requires: Option<DrillRequires>,
    /// `safeguards:`: conditions watched while an executed drill runs its
    /// steps; one that stops holding aborts the drill (the current step is
    /// stopped, `on_failure` runs as the rollback).
    pub safeguards: Vec<Safeguard>,
}

/// One of a drill's `safeguards:`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Safeguard {
    pub name: String,
    pub check: SafeguardCheck,
    /// How often it is measured.
    #[serde(serialize_with = "crate::duration::serialize_millis")]
    pub interval: Duration,
}

/// What a safeguard measures.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SafeguardCheck {
    /// A PromQL query (no templates) whose one value must satisfy `holds`.
    Query {
        query: String,
        holds: crate::runbook::verify::Condition,
    },
    /// An SLO's burn rate must stay below a bound.
    BurnRate(crate::runbook::verify::BurnRate),
}
/// A drill's `requires:` (DESIGN §12): all of them must hold.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DrillRequires {
    /// The service whose budget and incidents count (default: the drill's
    /// `service` label). Its error-budget gate must also say yes.
    pub service: String,
    /// Every SLO of the service has more than this share of its budget left.
    pub budget_above: Option<f64>,
    /// No open incident of the service (drills aside).
    pub no_open_incident: bool,
    /// The UTC weekdays it may run on (`mon`…`sun`); empty: any.
    pub days: Vec<chrono::Weekday>,
    /// The UTC hours it may start in, `[from, to)` in minutes of the day.
    pub hours: Option<(u32, u32)>,
}

/// What a drill does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillMode {
    /// Record the plan: nothing executes.
    Plan,
    /// Run the steps, for real.
    Execute,
}

impl DrillMode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DrillMode::Plan => "plan",
            DrillMode::Execute => "execute",
        }
    }
}

/// One step of a runbook.
#[derive(Debug)]
pub struct Step {
    pub name: String,
    pub action: Action,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_delay: Duration,
    pub continue_on_failure: bool,
    /// Rendered before the step; empty, `false` or `0` skips it.
    pub when: Option<Template>,
    pub env: Vec<(String, EnvValue)>,
    /// Opt-in isolation beyond the default sandbox.
    pub sandbox: StepSandbox,
    /// `requires: {budget: …}` / `risk: high`: the step runs only while its
    /// service's error-budget gate allows it.
    pub gate: Option<StepGate>,
}

/// A step that asks a service's error-budget gate before it runs.
#[derive(Debug)]
pub struct StepGate {
    /// The service, rendered for the alert (`risk: high`: its `service` label).
    pub service: Template,
    pub on_frozen: OnFrozen,
}

/// What a gated step does while its service is frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFrozen {
    /// It is skipped, with the reasons.
    Skip,
    /// It fails (`on_failure` runs), with the reasons.
    Fail,
    /// The run waits for an operator, asked with the reasons: approved, the
    /// step runs anyway (the approval records who and why); denied or
    /// timed out, it fails.
    Approve,
}

/// An `env:` value: a template, or a secret read only when a step starts.
#[derive(Debug)]
pub enum EnvValue {
    Template(Template),
    Secret(Secret),
}

/// Where a secret's value comes from. The value itself is never in a plan,
/// an incident record or a log: they show `[redacted]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Secret {
    /// `{secret_file: PATH}`: the file's content, trailing newline removed.
    File(PathBuf),
    /// `{secret_env: NAME}`: a variable of runbookd's own environment.
    Env(String),
    /// `{credential_file: PATH}`: runbookd copies the file (which the step's
    /// user may not be able to read, such as root's kubeconfig) into the
    /// run's scratch directory, readable by the step only, and the variable
    /// holds the copy's path.
    CredentialFile(PathBuf),
}

impl Secret {
    /// Whether the variable's value must be kept out of records and output
    /// (a credential file's variable holds only a path).
    #[must_use]
    pub fn is_value(&self) -> bool {
        !matches!(self, Secret::CredentialFile(_))
    }

    /// What plans and records show for the variable.
    #[must_use]
    pub fn shown(&self) -> String {
        match self {
            Secret::CredentialFile(p) => format!("[private copy of {}]", p.display()),
            _ => REDACTED.to_owned(),
        }
    }

    /// The secret's value, now.
    ///
    /// # Errors
    /// When the file cannot be read or the variable is not set.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::CredentialFile(p) => Err(format!(
                "credential file `{}` is copied, not read into a variable",
                p.display()
            )),
            Secret::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("cannot read secret file `{}`: {e}", p.display())),
            Secret::Env(name) => std::env::var(name).map_err(|_| {
                format!("secret variable `{name}` is not set in runbookd's environment")
            }),
        }
    }
}

/// Per-step sandbox options (`network`, `resources`, `writable_paths`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepSandbox {
    /// `network: none`: an own network namespace with only loopback.
    pub network_none: bool,
    /// `resources.memory`, bytes.
    pub memory: Option<u64>,
    /// `resources.pids`: processes and threads at once.
    pub pids: Option<u64>,
    /// Absolute paths the step may write besides its scratch directory.
    pub writable_paths: Vec<std::path::PathBuf>,
}

/// What plans and records show instead of a secret's value.
pub const REDACTED: &str = "[redacted]";

/// What a step does: run a program, run a shell script, or ask a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Run,
    Shell,
    Manual,
    Silence,
    Approve,
    Verify,
}

impl StepKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Run => "run",
            StepKind::Shell => "shell",
            StepKind::Manual => "manual",
            StepKind::Silence => "silence",
            StepKind::Approve => "approve",
            StepKind::Verify => "verify",
        }
    }
}

/// What a step does: exactly one of these.
#[derive(Debug)]
pub enum Action {
    /// argv, no shell; each element a template rendered without escaping.
    Run(Vec<Template>),
    /// A `/bin/sh -c` script; every value passed as a variable.
    Shell(Template),
    /// A checklist item for people; never blocks the run.
    Manual(Template),
    /// An Alertmanager silence for the alert while the run goes on.
    Silence(SilenceSpec),
    /// The run waits for an operator's approval (or the timeout).
    Approve(ApproveSpec),
    /// Polls Prometheus or Alertmanager until a condition holds.
    Verify(VerifySpec),
}

/// A `verify:` step (DESIGN §12).
#[derive(Debug)]
pub struct VerifySpec {
    pub check: VerifyCheck,
    pub initial_delay: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    pub consecutive_success: u32,
    pub on_inconclusive: crate::runbook::verify::Inconclusive,
}

/// What a verify step measures.
#[derive(Debug)]
pub enum VerifyCheck {
    /// A PromQL query, alert values only inside matcher values.
    Query {
        query: crate::template::promql::Query,
        success: Option<crate::runbook::verify::Condition>,
        failure: Option<crate::runbook::verify::Condition>,
    },
    /// Whether this alert still fires, asked of Alertmanager.
    AlertResolved,
    /// An SLO's burn rate over a window, below a bound (the query is built
    /// from the SLO's own SLI at run time).
    BurnRate(crate::runbook::verify::BurnRate),
}

/// An `approve:` step.
#[derive(Debug)]
pub struct ApproveSpec {
    /// A template: what operators are asked.
    pub prompt: Template,
    /// How long the run waits for a decision (`timeout`, default 30m).
    pub timeout: Duration,
    pub on_timeout: crate::runbook::OnTimeout,
}

/// A `silence:` step.
#[derive(Debug)]
pub struct SilenceSpec {
    /// How long the silence lasts at most (`duration`, default 1h).
    pub duration: Duration,
    /// A template; the silence's comment also links the incident.
    pub comment: Option<Template>,
    /// `matchers`; none: one `name="value"` per label of the alert.
    pub matchers: Option<Vec<Matcher>>,
    pub until: crate::runbook::Until,
    /// `covers_others: true`: the silence may cover alerts other than the
    /// run's own (checked against Alertmanager's alerts otherwise).
    pub covers_others: bool,
}

impl Action {
    /// The step's command as written in the runbook: a shell-quoted argv, the
    /// script, or the checklist text.
    #[must_use]
    pub fn source(&self) -> String {
        match self {
            Action::Run(argv) => {
                let words: Vec<String> = argv.iter().map(|t| shell_word(t.source())).collect();
                words.join(" ")
            }
            Action::Shell(t) | Action::Manual(t) => t.source().to_owned(),
            Action::Approve(a) => format!("approve: {}", a.prompt.source()),
            Action::Verify(v) => match &v.check {
                VerifyCheck::Query {
                    query,
                    success,
                    failure,
                } => format!(
                    "verify `{}`{}{}",
                    query.source(),
                    success.map_or(String::new(), |c| format!(" success {c}")),
                    failure.map_or(String::new(), |c| format!(" failure {c}"))
                ),
                VerifyCheck::AlertResolved => "verify the alert resolved".into(),
                VerifyCheck::BurnRate(b) => format!("verify {b}"),
            },
            Action::Silence(s) => format!(
                "silence {} for {}",
                s.matchers.as_ref().map_or_else(
                    || "the alert's labels".to_owned(),
                    |m| m
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                humantime::format_duration(s.duration)
            ),
        }
    }

    #[must_use]
    pub fn kind(&self) -> StepKind {
        match self {
            Action::Run(_) => StepKind::Run,
            Action::Shell(_) => StepKind::Shell,
            Action::Manual(_) => StepKind::Manual,
            Action::Silence(_) => StepKind::Silence,
            Action::Approve(_) => StepKind::Approve,
            Action::Verify(_) => StepKind::Verify,
        }
    }
}

/// `word` as a person would type it in a shell: bare when it is plain,
/// single-quoted otherwise (for display; runbookd never runs this text).
#[must_use]
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,{}[]".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// All loaded runbooks, sorted by name, indexed for matching: runbooks with an
/// `alertname="X"` matcher are looked up by the alert's name, so matching an
/// alert costs the runbooks of its name plus the few without such a matcher.
#[derive(Debug, Default)]
pub struct RunbookSet {
    runbooks: Vec<Arc<Runbook>>,
    by_alertname: HashMap<String, Vec<usize>>,
    unindexed: Vec<usize>,
    warnings: Vec<LoadError>,
}

impl RunbookSet {
    #[must_use]
    pub fn new(mut runbooks: Vec<Runbook>) -> Self {
        runbooks.sort_by(|a, b| a.name.cmp(&b.name));
        let mut set = RunbookSet::default();
        for (i, rb) in runbooks.into_iter().enumerate() {
            let key = rb
                .matchers
                .iter()
                .find(|m| m.name == "alertname" && m.op == MatchOp::Equal)
                .map(|m| m.value.clone());
            match key {
                Some(name) => set.by_alertname.entry(name).or_default().push(i),
                None => set.unindexed.push(i),
            }
            set.runbooks.push(Arc::new(rb));
        }
        set
    }

    /// Adds the warnings found while loading.
    #[must_use]
    pub fn with_warnings(mut self, warnings: Vec<LoadError>) -> Self {
        self.warnings = warnings;
        self
    }

    /// The files the runbooks read secrets from (`{secret_file: …}`,
    /// `{credential_file: …}`): steps may not read them, whatever their
    /// modes. One group- or world-readable is warned about.
    #[must_use]
    pub fn secret_files(&self) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for rb in &self.runbooks {
            let steps = rb.steps.iter().chain(&rb.on_failure).chain(&rb.on_resolved);
            let envs = rb.env.iter().chain(steps.flat_map(|s| s.env.iter()));
            for (_, v) in envs {
                if let EnvValue::Secret(Secret::File(p) | Secret::CredentialFile(p)) = v {
                    crate::secret::warn_if_shared(p, "secret");
                    out.push(p.clone());
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// What `check` warns about (the set is valid nonetheless).
    #[must_use]
    pub fn warnings(&self) -> &[LoadError] {
        &self.warnings
    }

    /// The runbooks whose matchers all hold for these labels, by name.
    #[must_use]
    pub fn matching(&self, labels: &Labels) -> Vec<&Arc<Runbook>> {
        let name = labels.get("alertname").map_or("", String::as_str);
        let indexed = self.by_alertname.get(name).map_or(&[][..], Vec::as_slice);
        let (mut a, mut b) = (indexed.iter().peekable(), self.unindexed.iter().peekable());
        let mut out = Vec::new();
        // Both lists are ascending indexes into the name-sorted runbooks: merge.
        loop {
            let i = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x <= y => {
                    a.next();
                    x
                }
                (_, Some(&&y)) => {
                    b.next();
                    y
                }
                (Some(&&x), None) => {
                    a.next();
                    x
                }
                (None, None) => break,
            };
            let rb = &self.runbooks[i];
            if rb.matches(labels) {
                out.push(rb);
            }
        }
        out
    }

    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Arc<Runbook>> {
        self.runbooks
            .binary_search_by(|r| r.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.runbooks[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Runbook>> {
        self.runbooks.iter()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.runbooks.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.runbooks.is_empty()
    }
}

named!(
    /// What an expired approval decides (`on_timeout`).
    OnTimeout, "on_timeout" {
        Deny = "deny",
        Approve = "approve",
    }
);

/// Until when a silence step's silence lasts (besides its `duration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Until {
    /// Expired when the run ends, however it ends.
    RunEnd,
    /// Expired when the alert resolves.
    Resolved,
}

impl Until {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Until::RunEnd => "run_end",
            Until::Resolved => "resolved",
        }
    }
}

impl std::str::FromStr for Until {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "run_end" => Ok(Until::RunEnd),
            "resolved" => Ok(Until::Resolved),
            other => Err(format!("unknown silence `until` `{other}`")),
        }
    }
}

/// Parses a memory quantity: bytes, or with `Ki`/`Mi`/`Gi`/`Ti` (powers of
/// 1024) or `k`/`K`/`M`/`G`/`T` (powers of 1000), as Kubernetes writes them.
///
/// # Errors
/// When `s` is not such a quantity or is zero.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let units: HashMap<&str, u64> = [
        ("", 1),
        ("k", 1000),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
    ]
    .into_iter()
    .collect();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad memory size `{s}`: write e.g. 256Mi or 1Gi"))?;
    let mult = units.get(unit).ok_or_else(|| {
        format!("bad memory size `{s}`: unknown unit `{unit}` (use Ki, Mi, Gi, Ti, k, M, G, T)")
    })?;
    match n.checked_mul(*mult) {
        Some(0) => Err(format!("memory size `{s}` must be larger than zero")),
        Some(v) => Ok(v),
        None => Err(format!("memory size `{s}` is too large")),
    }
}

impl Drill {
    /// What a drill is, for the store's once-per-occurrence claim: its runbook
    /// and every setting, so that two different drills never share a claim.
    #[must_use]
    pub(crate) fn identity(&self, runbook: &str) -> String {
        let d = self;
        let mut what = serde_json::json!({
            "runbook": runbook,
            "schedule": d.schedule,
            "labels": d.labels,
            "annotations": d.annotations,
            "mode": d.mode.as_str(),
            "notify": d.notify,
        });
        // Only when given: the drills written before `requires:` keep their key.
        if let Some(r) = &d.requires {
            what["requires"] = serde_json::to_value(r).unwrap_or_default();
        }
        if !d.safeguards.is_empty() {
            what["safeguards"] = serde_json::to_value(&d.safeguards).unwrap_or_default();
        }
        let text = what.to_string();
        // FNV-1a, 64 bits: stable across processes and versions (unlike the
        // std hasher), short enough for a key.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{runbook}/{h:016x}")
    }
}
