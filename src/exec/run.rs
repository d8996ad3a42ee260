//! A run: one runbook for one alert, its steps in order (DESIGN §4).
//!
//! A step succeeds on exit 0. A failed step is retried `retries` times, each
//! attempt a fresh sandboxed process. If it still fails: with
//! `continue_on_failure` the run goes on (and ends `succeeded_with_failures`),
//! otherwise the run stops, `on_failure` runs, and the run ends `failed`.
//! `when` rendered to empty, `false` or `0` skips a step; `manual` steps
//! become open checklist items and never block. Every step is bounded by its
//! own `timeout` and by what is left of the runbook's `timeout`; past the run
//! budget the run ends `timed_out` (and `on_failure` still runs, each of its
//! steps bounded by its own timeout, since a rollback matters most then).
//! Steps are rendered with [`plan::render_step`], the code `--plan` uses,
//! with the results of the steps so far as `steps.NAME`.

use std::sync::Arc;

use chrono::Utc;
use serde_json::{json, Map, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::capture::Stream;
use super::cgroup::Limits;
use super::instance::Scratch;
use super::process::{self, ExecSettings, OutputSink, ProcessSpec};
use super::sandbox::{RunAs, Sandbox, StepOptions};
use crate::alert::{Alert, Notification};
use crate::plan::millis;
use crate::plan::{self, ActionPlan, IncidentRef, Phase, StepPlan, WhenDecision};
use crate::record::{Attempt, RunOutcome, RunResult, StepOutcome, StepPhase, StepRecord};
use crate::runbook::{Runbook, Secret, Step};

/// Bytes of a step's stdout that later templates see as `steps.NAME.stdout`.
pub const STDOUT_TAIL_FOR_TEMPLATES: usize = 4096;

/// Runs runbooks: the sandbox (which also makes the runs' scratch dirs) and
/// the timing settings.
pub struct Executor {
    pub sandbox: Sandbox,
    pub settings: ExecSettings,
    /// Where `silence:` steps make their silences and `verify:` steps ask
    /// (`alertmanager:` and `prometheus:` in the config; a reload may
    /// change the Alertmanager).
    pub integrations: crate::integrations::Integrations,
    /// Where gated steps (`requires: {budget: …}`, `risk: high`) ask
    /// whether their service is frozen; `None` (`runbookd run`): nowhere,
    /// and a gated step counts as frozen.
    pub gates: Option<GateSource>,
    /// The SLO definitions `verify: {slo: …}` steps read their SLI from
    /// (`slos:`; a reload replaces them); `None` (`runbookd run`): such a
    /// step fails, saying so.
    pub slos: Option<SloSource>,
}

/// The loaded SLO definitions, as a reload leaves them.
pub type SloSource = std::sync::Arc<std::sync::RwLock<std::sync::Arc<crate::slo::SloSet>>>;

/// A service's error-budget gate now (`None`: no SLO names the service).
pub type GateSource =
    std::sync::Arc<dyn Fn(&str) -> Option<crate::slo::policy::Gate> + Send + Sync>;

impl Drop for Executor {
    fn drop(&mut self) {
        self.sandbox.release();
    }
}

/// A drill's safeguards and where they are measured.
type Watch = (
    Vec<super::safeguard::Guard>,
    Arc<dyn crate::integrations::Metrics>,
);

/// How long a frozen step waits for an operator (`on_frozen: approve`)
/// before it fails.
const FROZEN_APPROVAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Sees a run as it happens (live transcript, the incident store).
pub trait RunObserver: Send + Sync {
    /// Asked before each attempt is spawned; `false` stops the run (a lease
    /// that lapsed, say: no step may start then).
    fn may_start(&self) -> bool {
        true
    }
    fn step_started(&self, _step: &StepPlan, _attempt: u32, _attempts: u32) {}
    fn output(&self, _step: &str, _stream: Stream, _bytes: &[u8]) {}
    fn step_finished(&self, _record: &StepRecord) {}
    /// A `silence:` step made (or found) a silence: the server records it
    /// before the run goes on, so that it is expired whoever finds the run
    /// ended (a crash, a takeover).
    fn silenced(
        &self,
        _silence: crate::incident::RunSilence,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

/// Observes nothing.
pub struct Quiet;

impl RunObserver for Quiet {}

struct StepSink {
    observer: Arc<dyn RunObserver>,
    step: String,
    /// Secret values, kept out of what is stored and shown.
    secrets: Vec<String>,
}

impl OutputSink for StepSink {
    fn output(&self, stream: Stream, bytes: &[u8]) {
        if self.secrets.is_empty() {
            self.observer.output(&self.step, stream, bytes);
        } else {
            let text = redact(&String::from_utf8_lossy(bytes), &self.secrets);
            self.observer.output(&self.step, stream, text.as_bytes());
        }
    }
}

/// `text` with every secret value replaced by `[redacted]`. (Live output
/// arrives in chunks, so a secret split across two of them shows there; the
/// recorded output is redacted whole.)
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), crate::runbook::REDACTED);
        }
    }
    out
}

/// The largest credential file runbookd copies for a step.
const MAX_CREDENTIAL_BYTES: u64 = 1 << 20;

/// Reads a `credential_file` as root would hand it out: a regular file
/// (not through a symlink), owned by root or runbookd's user, writable by
/// nobody else, in directories nobody else can change (or sticky ones, like
/// `/tmp`), at most 1 MiB. Otherwise a user who can write there could point
/// it at `/etc/shadow` and have runbookd copy that to a step.
fn read_credential(source: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refuse = |why: String| format!("credential file `{}`: {why}", source.display());
    let me = nix::unistd::geteuid().as_raw();
    let trusted = |m: &std::fs::Metadata| {
        (m.uid() == 0 || m.uid() == me) && (m.mode() & 0o022 == 0 || m.mode() & 0o1000 != 0)
    };
    for dir in source.ancestors().skip(1) {
        let m = std::fs::metadata(dir)
            .map_err(|e| refuse(format!("cannot inspect `{}`: {e}", dir.display())))?;
        if !trusted(&m) {
            return Err(refuse(format!(
                "its directory `{}` can be changed by users other than root and runbookd's",
                dir.display()
            )));
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(source)
        .map_err(|e| refuse(format!("cannot open it (symlinks are refused): {e}")))?;
    let m = file.metadata().map_err(|e| refuse(e.to_string()))?;
    if !m.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    if !(m.uid() == 0 || m.uid() == me) || m.mode() & 0o022 != 0 {
        return Err(refuse(
            "it must be owned by root or runbookd's user and writable by no one else".into(),
        ));
    }
    if m.len() > MAX_CREDENTIAL_BYTES {
        return Err(refuse("larger than 1 MiB".into()));
    }
    let mut content = Vec::new();
    (&mut file)
        .take(MAX_CREDENTIAL_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(|e| refuse(e.to_string()))?;
    Ok(content)
}

/// A run's scratch directory and whom its steps run as.
pub struct RunDir {
    scratch: Scratch,
    run_as: RunAs,
}

/// One runbook for one alert of a notification.
pub struct RunRequest<'a> {
    pub notification: &'a Notification,
    pub alert: &'a Alert,
    pub runbook: &'a Runbook,
    pub incident: IncidentRef,
    /// The claimed run (server runs): steps get `RUNBOOKD_RUN_ID` and
    /// `RUNBOOKD_FENCE`, for downstream systems that refuse a stale owner.
    pub lease: Option<crate::record::Lease>,
    /// A run paused on an approval step and decided: resumed after that step.
    pub resume: Option<&'a crate::record::Resume>,
    /// A re-run: the first run of what it re-runs (its `until: resolved`
    /// silences are that run's, found again rather than made twice).
    pub rerun_of: Option<i64>,
}

/// The run's state that step templates read as `steps.*`.
struct Results(Map<String, Value>);

impl Results {
    fn new<'a>(steps: impl Iterator<Item = &'a Step>) -> Self {
        Results(
            steps
                .map(|s| {
                    (
                        s.name.clone(),
                        json!({"status": "not_run", "exit_code": null, "stdout": ""}),
                    )
                })
                .collect(),
        )
    }

    fn record(&mut self, rec: &StepRecord) {
        let (status, exit_code) = match &rec.outcome {
            Some(o) => (o.status(), o.exit_code()),
            None => ("open", None),
        };
        // A record read back from the store (a resumed run) has no tail:
        // it is the end of the stored output.
        let stdout = rec
            .attempts
            .last()
            .map(|a| {
                if a.stdout_tail.is_empty() {
                    tail(&a.stdout, STDOUT_TAIL_FOR_TEMPLATES).to_owned()
                } else {
                    a.stdout_tail.clone()
                }
            })
            .unwrap_or_default();
        self.0.insert(
            rec.name.clone(),
            json!({"status": status, "exit_code": exit_code, "stdout": stdout}),
        );
    }
}

/// The last `max` bytes of `s` (at a character boundary).
fn tail(s: &str, max: usize) -> &str {
    let mut at = s.len().saturating_sub(max);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

/// The paused approval step's record, decided: approved, denied, or failed
/// because the runbook no longer has that step there (a reload while the
/// run waited).
fn decided(mut rec: StepRecord, approval: &crate::approval::Approval, fits: bool) -> StepRecord {
    rec.outcome = Some(if !fits {
        StepOutcome::SpawnFailed {
            reason: format!(
                "the runbook changed while the run waited for approval: step {} is no longer the approval step `{}`",
                approval.index + 1,
                approval.step
            ),
        }
    } else if approval.granted() {
        StepOutcome::Succeeded
    } else {
        StepOutcome::Denied {
            reason: approval.sentence(),
        }
    });
    rec.approval = Some(approval.clone());
    rec.ended = Utc::now();
    rec.duration_ms = millis((rec.ended - rec.started).to_std().unwrap_or_default());
    rec
}

impl Executor {
    /// Executes one run to the end (or until `cancel`), or until it pauses
    /// on an approval step (`RunOutcome::AwaitingApproval`); a decided
    /// `req.resume` goes on after that step.
    pub async fn run(
        &self,
        req: &RunRequest<'_>,
        observer: Arc<dyn RunObserver>,
        cancel: &CancellationToken,
    ) -> RunResult {
        let t0 = Instant::now();
        let rb = req.runbook;
        let resume = req.resume;
        let started = resume.map_or_else(Utc::now, |r| r.prior.started);
        // Time executed before the pause counts against the run's timeout;
        // the wait for a decision does not.
        let spent = std::time::Duration::from_millis(resume.map_or(0, |r| r.prior.duration_ms));
        let phase = if req.alert.status == crate::alert::Status::Firing {
            Phase::Remediation
        } else {
            Phase::Resolution
        };
        let (main, main_phase) = match phase {
            // Remediation never runs for a resolved alert.
            Phase::Remediation => (&rb.steps, StepPhase::Steps),
            Phase::Resolution => (&rb.on_resolved, StepPhase::OnResolved),
        };
        let mut results = Results::new(main.iter().chain(if phase == Phase::Remediation {
            &rb.on_failure[..]
        } else {
            &[]
        }));
        let mut records = Vec::new();
        let mut checklist = Vec::new();
        let deadline = t0 + rb.timeout.saturating_sub(spent);
        let base_data = plan::context(req.notification, req.alert, rb, &req.incident, None);
        let base_env = plan::base_env(req.alert, rb, &req.incident, &base_data);
        // Whom the steps run as (the runbook's `run_as`), and their scratch
        // directory, owned by that user; a failure fails each step with it.
        let scratch: Result<RunDir, String> = self
            .sandbox
            .resolve_run_as(rb.run_as.as_deref())
            .and_then(|run_as| {
                self.sandbox
                    .scratch_for(run_as)
                    .map(|scratch| RunDir { scratch, run_as })
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot create the run's scratch directory");
                        format!("the run's scratch directory could not be created: {e}")
                    })
            });

        let mut outcome = RunOutcome::Succeeded;
        let mut needs_on_failure = false;
        let mut awaiting = None;
        let mut aborted: Option<String> = None;
        // A drill's safeguards, watched while its steps run: tripped, they
        // stop the current step (not the rollback after it).
        let step_cancel = cancel.child_token();
        let tripped: super::safeguard::Tripped = Arc::default();
        let steps_over = CancellationToken::new();
        let watcher = match (phase, self.safeguards(req)) {
            (Phase::Remediation, Some(Ok((guards, prom)))) => {
                Some(tokio::spawn(super::safeguard::watch(
                    guards,
                    prom,
                    step_cancel.clone(),
                    tripped.clone(),
                    steps_over.clone(),
                )))
            }
            (Phase::Remediation, Some(Err(why))) => {
                *tripped
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
                step_cancel.cancel();
                None
            }
            _ => None,
        };
        let tripped_now = || {
            tripped
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        };
        // A resumed run: the steps before the approval as recorded, then
        // the approval step decided, then on.
        let mut next = 0;
        let mut decision = None;
        // The approval of a frozen step, granted: the step runs.
        let mut overridden: Option<crate::approval::Approval> = None;
        if let Some(r) = resume {
            let mut prior = r.prior.steps.clone();
            let paused = prior.pop();
            for rec in &prior {
                results.record(rec);
            }
            // A step before the pause that failed and went on makes the
            // run's end `succeeded_with_failures`, as it would have without
            // the pause.
            if prior
                .iter()
                .any(|rec| rec.outcome.as_ref().is_some_and(StepOutcome::is_failure))
            {
                outcome = RunOutcome::SucceededWithFailures;
            }
            checklist.clone_from(&r.prior.checklist);
            next = prior.len();
            records = prior;
            let at = main
                .get(next)
                .filter(|s| r.approval.index as usize == next && s.name == r.approval.step);
            let fits = at.is_some_and(|s| matches!(s.action, crate::runbook::Action::Approve(_)));
            let approve =
                |g: &crate::runbook::StepGate| g.on_frozen == crate::runbook::OnFrozen::Approve;
            // The step's own gate, or the runbook's for its first step.
            let frozen = at.is_some_and(|s| {
                s.gate
                    .as_ref()
                    .map_or(next == 0 && rb.gate.as_ref().is_some_and(approve), approve)
            });
            // What the pause asked: a frozen gate's question, or (an approval
            // step) the step's own. Granting the gate's question lets the
            // step run, and an approval step then asks its own question.
            let gate_asked = paused
                .as_ref()
                .is_some_and(|rec| rec.plan.frozen_approval.is_some());
            match paused {
                Some(_) if gate_asked && r.approval.granted() => {
                    overridden = Some(r.approval.clone());
                }
                Some(rec) if gate_asked => decision = Some(decided(rec, &r.approval, true)),
                Some(rec) if fits => decision = Some(decided(rec, &r.approval, true)),
                // Records from before the gate's question was marked.
                Some(_) if frozen && r.approval.granted() => {
                    overridden = Some(r.approval.clone());
                }
                Some(rec) if frozen => decision = Some(decided(rec, &r.approval, true)),
                paused => {
                    if let Some(rec) = paused {
                        let rec = decided(rec, &r.approval, false);
                        observer.step_finished(&rec);
                        records.push(rec);
                    }
                    outcome = RunOutcome::Failed;
                    needs_on_failure = true;
                    next = main.len();
                }
            }
        }
        // The runbook's own gate, asked before its first step (a resumed
        // run asked it already).
        let mut held = None;
        let mut first_gate = None;
        if let (None, Some(g)) = (resume, plan::run_gate(rb, phase, &base_data)) {
            if let Some((reason, on_frozen)) = self.frozen(Some(&g)) {
                use crate::runbook::OnFrozen;
                match on_frozen {
                    OnFrozen::Skip => {
                        held = Some(reason);
                        outcome = RunOutcome::Skipped;
                        next = main.len();
                    }
                    OnFrozen::Fail => {
                        held = Some(reason);
                        outcome = RunOutcome::Failed;
                        next = main.len();
                    }
                    // The first step asks an operator, as a gated step does.
                    OnFrozen::Approve => first_gate = Some(g),
                }
            }
        }
        for (index, step) in main.iter().enumerate().skip(next) {
            if let Some(why) = tripped_now() {
                // Tripped between steps, or before the first: then nothing
                // ran, and there is nothing to roll back.
                aborted = Some(why);
                outcome = RunOutcome::Failed;
                needs_on_failure = index > 0;
                break;
            }
            let rec = if let Some(rec) = decision.take() {
                rec
            } else {
                // A frozen step an operator let through runs now, the
                // approval on its record.
                let approved = overridden.take();
                let mut rec = self
                    .step(
                        req,
                        step,
                        main_phase,
                        &results,
                        &base_env,
                        scratch.as_ref().map_err(String::as_str),
                        Some(deadline),
                        &observer,
                        &step_cancel,
                        (approved.is_some(), first_gate.take().as_ref()),
                    )
                    .await;
                if approved.is_some() {
                    rec.approval = approved;
                }
                rec
            };
            results.record(&rec);
            if rec.outcome.is_none() {
                checklist.push(rec.plan.text.clone().unwrap_or_default());
            }
            let o = rec.outcome.clone();
            let asks = rec.plan.asks().cloned();
            observer.step_finished(&rec);
            records.push(rec);
            match o {
                None | Some(StepOutcome::Succeeded | StepOutcome::Skipped { .. }) => {}
                Some(StepOutcome::AwaitingApproval) => {
                    awaiting = asks.map(|plan| crate::approval::Request {
                        step: step.name.clone(),
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        plan,
                    });
                    outcome = RunOutcome::AwaitingApproval;
                    break;
                }
                Some(StepOutcome::Cancelled) => {
                    match tripped_now().filter(|_| !cancel.is_cancelled()) {
                        // Stopped by a safeguard: the drill aborts, and
                        // rolls back.
                        Some(why) => {
                            aborted = Some(why);
                            outcome = RunOutcome::Failed;
                            needs_on_failure = true;
                        }
                        None => outcome = RunOutcome::Cancelled,
                    }
                    break;
                }
                Some(StepOutcome::TimedOut { ref cause, .. }) if cause == "run timeout" => {
                    outcome = RunOutcome::TimedOut;
                    needs_on_failure = true;
                    break;
                }
                Some(_) if step.continue_on_failure => outcome = RunOutcome::SucceededWithFailures,
                Some(_) => {
                    outcome = RunOutcome::Failed;
                    needs_on_failure = true;
                    break;
                }
            }
        }
        // The steps are over: so is the watch (the rollback runs whatever
        // the safeguards say).
        steps_over.cancel();
        if let Some(w) = watcher {
            let _ = w.await;
        }
        // Tripped as the last step ended: the service hurts all the same.
        if let (None, Some(why)) = (&aborted, tripped_now()) {
            if matches!(
                outcome,
                RunOutcome::Succeeded | RunOutcome::SucceededWithFailures
            ) {
                aborted = Some(why);
                outcome = RunOutcome::Failed;
                needs_on_failure = true;
            }
        }
        if needs_on_failure && phase == Phase::Remediation {
            for step in &rb.on_failure {
                let rec = self
                    .step(
                        req,
                        step,
                        StepPhase::OnFailure,
                        &results,
                        &base_env,
                        scratch.as_ref().map_err(String::as_str),
                        None,
                        &observer,
                        cancel,
                        (false, None),
                    )
                    .await;
                results.record(&rec);
                if rec.outcome.is_none() {
                    checklist.push(rec.plan.text.clone().unwrap_or_default());
                }
                observer.step_finished(&rec);
                let cancelled = rec.outcome == Some(StepOutcome::Cancelled);
                records.push(rec);
                if cancelled {
                    break;
                }
            }
        }
        drop(scratch);
        // The run's `until: run_end` silences end with it, however it
        // ended (by the server's silence keeper, which finds them in the
        // store; a paused run keeps them while it waits). Without a store
        // (`runbookd run`), here.
        if req.lease.is_none() && outcome != RunOutcome::AwaitingApproval {
            if let Some(am) = self.integrations.alertmanager() {
                for rec in &records {
                    let (Some(id), crate::plan::ActionPlan::Silence(Some(plan))) =
                        (&rec.silence_id, &rec.plan.action)
                    else {
                        continue;
                    };
                    if plan.until == crate::runbook::Until::RunEnd {
                        if let Err(e) = am.expire(id).await {
                            tracing::warn!(silence = %id, error = %e, "cannot expire a run's silence; it ends at its duration");
                        }
                    }
                }
            }
        }
        RunResult {
            runbook: rb.name.clone(),
            fingerprint: req.alert.fingerprint.clone(),
            phase,
            outcome,
            steps: records,
            checklist,
            started,
            ended: Utc::now(),
            duration_ms: millis(spent + t0.elapsed()),
            awaiting,
            aborted,
            held,
        }
    }

    /// The safeguards of the drill `req` runs, ready to measure (`None`:
    /// not a drill with safeguards). What cannot be watched is an error:
    /// the drill does not start.
    fn safeguards(&self, req: &RunRequest<'_>) -> Option<Result<Watch, String>> {
        let key = req.alert.labels.get(crate::alert::DRILL_LABEL)?;
        if req.notification.receiver != crate::alert::DRILL_RECEIVER {
            return None;
        }
        let Some(drill) = req
            .runbook
            .drills
            .iter()
            .find(|d| d.identity(&req.runbook.name) == *key)
        else {
            return Some(Err("the drill changed (a reload) since this occurrence started: its safeguards are not known, so it does not run".into()));
        };
        let Some(prom) = self.integrations.prometheus() else {
            return Some(Err(
                "no Prometheus to watch the drill's safeguards: set `prometheus.url`".into(),
            ));
        };
        let mut guards = Vec::new();
        for s in &drill.safeguards {
            let (query, holds) = match &s.check {
                crate::runbook::SafeguardCheck::Query { query, holds } => (query.clone(), *holds),
                crate::runbook::SafeguardCheck::BurnRate(b) => match self.burn_rate_query(b) {
                    Ok(q) => (
                        q,
                        crate::runbook::verify::Condition {
                            op: crate::runbook::verify::Cmp::Lt,
                            value: b.below,
                        },
                    ),
                    Err(e) => return Some(Err(format!("safeguard `{}`: {e}", s.name))),
                },
            };
            guards.push(super::safeguard::Guard {
                name: s.name.clone(),
                query,
                holds,
                interval: s.interval,
            });
        }
        Some(Ok((guards, prom)))
    }

    /// Copies a `credential_file` into the run's scratch directory (a fresh
    /// `.credentials-<random>/` directory, the copy 0600, both owned by the
    /// step's user) and returns the copy's path. runbookd reads the source
    /// with its own rights: that is the point, the step's user usually
    /// cannot. Everything is created relative to descriptors opened without
    /// following symlinks, so an earlier step of the run, which owns the
    /// scratch directory, cannot redirect runbookd's write elsewhere.
    fn copy_credential(
        &self,
        source: &std::path::Path,
        var: &str,
        dir: &RunDir,
    ) -> Result<(String, Vec<u8>), String> {
        use nix::fcntl::{openat, OFlag};
        use nix::sys::stat::{fstat, mkdirat, Mode};
        if self.sandbox.probe.landlock_abi == 0 {
            return Err(format!(
                "credential file `{}` needs Landlock, which keeps other steps of the same user out of the copy; it is unavailable on this host",
                source.display()
            ));
        }
        let content = read_credential(source)?;
        let fail = |e: &dyn std::fmt::Display| {
            format!(
                "cannot copy credential file `{}` for the step: {e}",
                source.display()
            )
        };
        let nofollow = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let identity = self.sandbox.identity(dir.run_as);
        // Root without CAP_DAC_OVERRIDE (Kubernetes' Baseline profile)
        // cannot enter the step user's 0700 scratch: it is root's while the
        // copy is made (its parent is runbookd's: the name cannot be
        // swapped), and the step user's again after, whatever happens.
        let _held = match (
            nix::fcntl::open(dir.scratch.path(), nofollow, Mode::empty()),
            identity,
        ) {
            (Err(nix::errno::Errno::EACCES), Some((uid, gid))) => {
                Some(HeldAsRoot::take(dir.scratch.path(), (uid, gid)).map_err(|e| fail(&e))?)
            }
            _ => None,
        };
        let scratch =
            nix::fcntl::open(dir.scratch.path(), nofollow, Mode::empty()).map_err(|e| fail(&e))?;
        let folder = format!(
            ".credentials-{}",
            super::instance::random_hex(8).map_err(|e| fail(&e))?
        );
        mkdirat(&scratch, folder.as_str(), Mode::from_bits_truncate(0o700))
            .map_err(|e| fail(&e))?;
        let sub =
            openat(&scratch, folder.as_str(), nofollow, Mode::empty()).map_err(|e| fail(&e))?;
        if fstat(&sub).map_err(|e| fail(&e))?.st_uid != nix::unistd::geteuid().as_raw() {
            return Err(fail(&"the directory was replaced"));
        }
        let name = source.file_name().map_or_else(
            || var.to_ascii_lowercase(),
            |n| n.to_string_lossy().into_owned(),
        );
        let file = openat(
            &sub,
            name.as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| fail(&e))?;
        let mut file = std::fs::File::from(file);
        std::io::Write::write_all(&mut file, &content).map_err(|e| fail(&e))?;
        if let Some((uid, gid)) = identity {
            let (uid, gid) = (
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            );
            nix::unistd::fchown(&file, uid, gid).map_err(|e| fail(&e))?;
            nix::unistd::fchown(&sub, uid, gid).map_err(|e| fail(&e))?;
        }
        let path = dir.scratch.path().join(folder).join(name);
        Ok((path.to_string_lossy().into_owned(), content))
    }

    /// Why a gated step may not run now, and what it does then: its
    /// service's gate says no, or nothing can say (fails closed).
    fn frozen(
        &self,
        gate: Option<&crate::plan::GatePlan>,
    ) -> Option<(String, crate::runbook::OnFrozen)> {
        let g = gate.filter(|g| !g.service.is_empty())?;
        let Some(source) = &self.gates else {
            return Some((
                format!(
                    "cannot tell whether `{}` is frozen: this runbookd has no SLO statuses (a server with `slos:` and `prometheus:` has)",
                    g.service
                ),
                g.on_frozen,
            ));
        };
        // No SLO names the service: no policy can freeze it.
        let verdict = source(&g.service)?;
        (!verdict.allowed).then(|| {
            (
                format!(
                    "`{}` is frozen by its error-budget policies: {}",
                    g.service,
                    verdict.reasons.join("; ")
                ),
                g.on_frozen,
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        req: &RunRequest<'_>,
        step: &Step,
        phase: StepPhase,
        results: &Results,
        base_env: &Result<plan::BaseEnv, String>,
        run_dir: Result<&RunDir, &str>,
        deadline: Option<Instant>,
        observer: &Arc<dyn RunObserver>,
        cancel: &CancellationToken,
        (overridden, inherited): (bool, Option<&crate::plan::GatePlan>),
    ) -> StepRecord {
        let started = Utc::now();
        let t0 = Instant::now();
        let data = plan::context(
            req.notification,
            req.alert,
            req.runbook,
            &req.incident,
            Some(results.0.clone()),
        );
        let mut plan = plan::render_step(step, &data, base_env);
        if let Some(lease) = req.lease {
            plan.env
                .insert("RUNBOOKD_RUN_ID".into(), lease.run_id.to_string());
            plan.env
                .insert("RUNBOOKD_FENCE".into(), lease.fence.to_string());
        }
        let mut attempts = Vec::new();
        let mut silence_id = None;
        // An SLO burn-rate check: its query, from the SLO as loaded now.
        if let crate::plan::ActionPlan::Verify(v) = &mut plan.action {
            if let Some(b) = &v.burn_rate {
                match self.burn_rate_query(b) {
                    Ok(q) => v.query = Some(q),
                    Err(e) => {
                        plan.error = Some(e);
                    }
                }
            }
        }
        // The runbook's own gate, frozen under `on_frozen: approve`: the run
        // asks before its first step, whatever that step is (its `when`,
        // its own gate); approved, the run goes on.
        let run_frozen = inherited
            .filter(|_| !overridden)
            .and_then(|g| self.frozen(Some(g)));
        let outcome = if let Some((reason, _)) = run_frozen {
            plan.frozen_approval = Some(crate::plan::ApprovalPlan {
                prompt: format!("{reason}. Run runbook `{}` anyway?", req.runbook.name),
                timeout_ms: millis(FROZEN_APPROVAL_TIMEOUT),
                on_timeout: crate::runbook::OnTimeout::Deny,
            });
            Some(StepOutcome::AwaitingApproval)
        } else if let Some(err) = &plan.error {
            Some(StepOutcome::SpawnFailed {
                reason: format!("cannot render the step: {err}"),
            })
        } else if let Some(w) = plan
            .when
            .as_ref()
            .filter(|w| w.decision == WhenDecision::Skip)
        {
            Some(StepOutcome::Skipped {
                reason: format!(
                    "`when` rendered `{}`",
                    w.rendered.as_deref().unwrap_or_default()
                ),
            })
        } else if let Some((reason, on_frozen)) =
            self.frozen(plan.gate.as_ref().filter(|_| !overridden))
        {
            use crate::runbook::OnFrozen;
            Some(match on_frozen {
                // Only the main steps can pause a run; a rollback or
                // clean-up step is skipped instead.
                OnFrozen::Skip | OnFrozen::Approve if phase != StepPhase::Steps => {
                    StepOutcome::Skipped { reason }
                }
                OnFrozen::Skip => StepOutcome::Skipped { reason },
                OnFrozen::Fail => StepOutcome::Denied { reason },
                OnFrozen::Approve => {
                    plan.frozen_approval = Some(crate::plan::ApprovalPlan {
                        prompt: format!("{reason}. Run step `{}` anyway?", plan.name),
                        timeout_ms: millis(FROZEN_APPROVAL_TIMEOUT),
                        on_timeout: crate::runbook::OnTimeout::Deny,
                    });
                    StepOutcome::AwaitingApproval
                }
            })
        } else if cancel.is_cancelled() && plan.kind() != crate::runbook::StepKind::Manual {
            Some(StepOutcome::Cancelled)
        } else {
            // Every kind of step, once: a new kind is a compile error here
            // until it is handled.
            match &plan.action {
                ActionPlan::Manual => None,
                // The run pauses: a server's operators decide, or the
                // person at the terminal of `runbookd run`.
                ActionPlan::Approve(_) => Some(StepOutcome::AwaitingApproval),
                ActionPlan::Verify(v) => Some(
                    self.verify(req, step, v, deadline, cancel, &mut attempts)
                        .await,
                ),
                ActionPlan::Silence(None) => Some(StepOutcome::SpawnFailed {
                    reason: "the silence could not be rendered".to_owned(),
                }),
                ActionPlan::Silence(Some(silence)) => {
                    let (outcome, id) = self.silence(req, step, silence, &mut attempts).await;
                    if let (Some(made), Some(lease), Ok(incident)) = (
                        &id,
                        req.lease,
                        req.incident.id.parse::<crate::incident::IncidentId>(),
                    ) {
                        observer
                            .silenced(crate::incident::RunSilence {
                                id: made.id.clone(),
                                watched: made.watched,
                                run_id: lease.run_id,
                                incident,
                                receiver: req.notification.receiver.clone(),
                                group_key: req.notification.group_key.clone(),
                                alert: req.alert.clone(),
                                until: silence.until,
                                alertmanager: made.alertmanager.clone(),
                            })
                            .await;
                    }
                    silence_id = id.map(|made| made.id);
                    Some(outcome)
                }
                ActionPlan::Run { .. } | ActionPlan::Shell { .. } => match (plan.argv(), run_dir) {
                    (Some(argv), Ok(dir)) => Some(
                        self.attempts(
                            step,
                            &plan,
                            &argv,
                            dir,
                            deadline,
                            observer,
                            cancel,
                            &mut attempts,
                        )
                        .await,
                    ),
                    (_, Err(e)) => Some(StepOutcome::SpawnFailed {
                        reason: e.to_owned(),
                    }),
                    (None, Ok(_)) => Some(StepOutcome::SpawnFailed {
                        reason: "the step has no command".to_owned(),
                    }),
                },
            }
        };
        StepRecord {
            name: step.name.clone(),
            phase,
            plan,
            outcome,
            silence_id,
            approval: None,
            attempts,
            started,
            ended: Utc::now(),
            duration_ms: millis(t0.elapsed()),
        }
    }

    /// The query of an SLO burn-rate check: the SLO's error ratio over the
    /// window divided by its budget ratio.
    fn burn_rate_query(&self, b: &crate::runbook::verify::BurnRate) -> Result<String, String> {
        let Some(slos) = &self.slos else {
            return Err(format!(
                "cannot verify {b}: this runbookd has no SLO definitions (a server with `slos:` has)"
            ));
        };
        let set = slos
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let (service, name) = b.slo.split_once('/').unwrap_or((&b.slo, ""));
        let slo = set
            .get(service, name)
            .ok_or_else(|| format!("cannot verify {b}: no SLO `{}` is defined", b.slo))?;
        crate::slo::status::burn_rate_query(slo, std::time::Duration::from_millis(b.window_ms))
            .map_err(|e| format!("cannot verify {b}: {e}"))
    }

    /// A verify step: polls until its verdict; the measurements are the
    /// attempt's output.
    async fn verify(
        &self,
        req: &RunRequest<'_>,
        step: &Step,
        v: &crate::plan::VerifyPlan,
        deadline: Option<Instant>,
        cancel: &CancellationToken,
        attempts: &mut Vec<Attempt>,
    ) -> StepOutcome {
        let own: crate::alert::Labels = req
            .alert
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "runbookd_origin")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let fingerprint = crate::alert::fingerprint(&own);
        let src = crate::verify::Sources {
            prometheus: self.integrations.prometheus(),
            alertmanager: self.integrations.alertmanager(),
            fingerprint: &fingerprint,
            from_alertmanager: !req.alert.labels.contains_key("runbookd_origin"),
            run_deadline: deadline,
        };
        let total = step.retries + 1;
        let mut outcome = StepOutcome::Cancelled;
        for n in 1..=total {
            let started = Utc::now();
            let t0 = Instant::now();
            let mut log = String::new();
            let ended = crate::verify::run(v, &src, cancel, &mut log).await;
            let stderr;
            (outcome, stderr) = match ended {
                crate::verify::Ended::Succeeded => (StepOutcome::Succeeded, String::new()),
                crate::verify::Ended::Cancelled => (StepOutcome::Cancelled, String::new()),
                crate::verify::Ended::RunTimedOut => (
                    StepOutcome::TimedOut {
                        after_ms: millis(t0.elapsed()),
                        cause: "the run's timeout".into(),
                    },
                    "the run's timeout came before a verdict\n".into(),
                ),
                crate::verify::Ended::Failed(why) => (
                    StepOutcome::Unverified {
                        reason: why.clone(),
                    },
                    format!("{why}\n"),
                ),
                crate::verify::Ended::Inconclusive(why) => match v.on_inconclusive {
                    crate::runbook::verify::Inconclusive::Fail => (
                        StepOutcome::TimedOut {
                            after_ms: v.timeout_ms,
                            cause: why.clone(),
                        },
                        format!("{why}\n"),
                    ),
                    crate::runbook::verify::Inconclusive::Continue => {
                        log.push_str(&why);
                        log.push_str("; on_inconclusive: continue\n");
                        (StepOutcome::Succeeded, String::new())
                    }
                },
            };
            attempts.push(Attempt::without_process(
                n,
                outcome.clone(),
                (started, millis(t0.elapsed())),
                log,
                stderr,
            ));
            let out_of_time = deadline.is_some_and(|d| Instant::now() + step.retry_delay >= d);
            if matches!(outcome, StepOutcome::Succeeded | StepOutcome::Cancelled)
                || n == total
                || out_of_time
            {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(step.retry_delay) => {}
                () = cancel.cancelled() => return StepOutcome::Cancelled,
            }
        }
        outcome
    }

    /// A silence step: makes the silence (or finds the one an earlier
    /// attempt made), retrying as the step says.
    async fn silence(
        &self,
        req: &RunRequest<'_>,
        step: &Step,
        silence: &crate::plan::SilencePlan,
        attempts: &mut Vec<Attempt>,
    ) -> (StepOutcome, Option<crate::integrations::Silenced>) {
        let Some(am) = self.integrations.alertmanager() else {
            return (
                StepOutcome::SpawnFailed {
                    reason: "no Alertmanager to silence through: set `alertmanager.url` in the server config".into(),
                },
                None,
            );
        };
        // A silence kept until the alert resolves belongs to the run and
        // its re-runs; one that ends with the run, to this run alone.
        let run = match (req.lease, req.rerun_of, silence.until) {
            (Some(_), Some(first), crate::runbook::Until::Resolved) => first.to_string(),
            (Some(l), ..) => l.run_id.to_string(),
            (None, ..) => "local".to_owned(),
        };
        let tag = format!(
            "[runbookd {} run {run} step {}]",
            req.incident.id, step.name
        );
        let comment = if silence.comment.is_empty() {
            format!(
                "runbookd: `{}` remediating {}",
                req.runbook.name, req.incident.id
            )
        } else {
            silence.comment.clone()
        };
        let total = step.retries + 1;
        for n in 1..=total {
            let started = Utc::now();
            let t0 = Instant::now();
            let made = am.ensure(silence, &comment, &tag).await;
            let (outcome, stdout, stderr, id) = match made {
                Ok(made) => (
                    StepOutcome::Succeeded,
                    format!("silence {}: {}\n", made.id, am.link(&made.id)),
                    String::new(),
                    Some(made),
                ),
                Err(e) => (
                    StepOutcome::SpawnFailed { reason: e.clone() },
                    String::new(),
                    format!("{e}\n"),
                    None,
                ),
            };
            attempts.push(Attempt::without_process(
                n,
                outcome.clone(),
                (started, millis(t0.elapsed())),
                stdout,
                stderr,
            ));
            if id.is_some() || n == total {
                return (outcome, id);
            }
            tokio::time::sleep(step.retry_delay).await;
        }
        (
            StepOutcome::SpawnFailed {
                reason: "no attempt was made".into(),
            },
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempts(
        &self,
        step: &Step,
        plan: &StepPlan,
        argv: &[String],
        dir: &RunDir,
        deadline: Option<Instant>,
        observer: &Arc<dyn RunObserver>,
        cancel: &CancellationToken,
        attempts: &mut Vec<Attempt>,
    ) -> StepOutcome {
        let total = step.retries + 1;
        // The process gets the rendered env, the script's variables and the
        // secrets, read now; the record keeps them redacted.
        let mut env = plan.env.clone();
        if let crate::plan::ActionPlan::Shell { vars, .. } = &plan.action {
            env.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let scratch = &dir.scratch;
        let mut secrets = Vec::new();
        for (k, secret) in &plan.secrets {
            let read = match secret {
                Secret::CredentialFile(source) => {
                    self.copy_credential(source, k, dir).map(|(path, content)| {
                        // What the file holds is as secret as a secret_file:
                        // output quoting it is redacted.
                        secrets.extend(
                            String::from_utf8_lossy(&content)
                                .lines()
                                .map(str::trim)
                                .filter(|l| l.len() >= 8)
                                .map(str::to_owned),
                        );
                        path
                    })
                }
                other => other.read(),
            };
            match read {
                Ok(v) => {
                    if secret.is_value() {
                        secrets.push(v.clone());
                    }
                    env.insert(k.clone(), v);
                }
                Err(reason) => return StepOutcome::SpawnFailed { reason },
            }
        }
        let sink: Arc<dyn OutputSink> = Arc::new(StepSink {
            observer: observer.clone(),
            step: step.name.clone(),
            secrets: secrets.clone(),
        });
        for n in 1..=total {
            let remaining = deadline.map_or(step.timeout, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if remaining.is_zero() {
                return StepOutcome::TimedOut {
                    after_ms: 0,
                    cause: "run timeout".to_owned(),
                };
            }
            let (timeout, by_run) = if step.timeout <= remaining {
                (step.timeout, false)
            } else {
                (remaining, true)
            };
            let opts = StepOptions {
                run_as: dir.run_as,
                network_none: step.sandbox.network_none,
                limits: Limits {
                    memory: step.sandbox.memory,
                    pids: step.sandbox.pids,
                },
                writable_paths: step.sandbox.writable_paths.clone(),
                timeout,
            };
            if !observer.may_start() || cancel.is_cancelled() {
                return StepOutcome::Cancelled;
            }
            observer.step_started(plan, n, total);
            let spec = ProcessSpec {
                argv,
                env: &env,
                scratch,
                opts: &opts,
            };
            let r = process::run(&self.sandbox, &self.settings, &spec, sink.clone(), cancel).await;
            let mut outcome = r.outcome.clone();
            if let (StepOutcome::TimedOut { cause, .. }, true) = (&mut outcome, by_run) {
                "run timeout".clone_into(cause);
            }
            attempts.push(Attempt {
                attempt: n,
                outcome: outcome.clone(),
                started: r.started,
                ended: r.ended,
                duration_ms: millis(r.duration),
                stdout: redact(&r.stdout.text(), &secrets),
                stderr: redact(&r.stderr.text(), &secrets),
                stdout_tail: redact(&r.stdout.last(STDOUT_TAIL_FOR_TEMPLATES), &secrets),
                stdout_bytes: r.stdout.total(),
                stderr_bytes: r.stderr.total(),
                sandbox: r.sandbox,
                stragglers_killed: r.stragglers_killed,
                output_abandoned: r.output_abandoned,
            });
            let retryable = !matches!(
                outcome,
                StepOutcome::Succeeded | StepOutcome::Cancelled | StepOutcome::SpawnFailed { .. }
            ) && !by_run;
            if !retryable || n == total {
                return outcome;
            }
            let pause = deadline.map_or(step.retry_delay, |d| {
                step.retry_delay
                    .min(d.saturating_duration_since(Instant::now()))
            });
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = cancel.cancelled() => return StepOutcome::Cancelled,
            }
        }
        unreachable!("the loop returns on its last attempt")
    }
}

/// A step's scratch directory held as root's, given back to its user when
/// dropped (see `copy_credential`).
struct HeldAsRoot<'a> {
    path: &'a std::path::Path,
    owner: (u32, u32),
}

impl<'a> HeldAsRoot<'a> {
    fn take(path: &'a std::path::Path, owner: (u32, u32)) -> std::io::Result<Self> {
        std::os::unix::fs::lchown(path, Some(0), Some(0))?;
        Ok(HeldAsRoot { path, owner })
    }
}

impl Drop for HeldAsRoot<'_> {
    fn drop(&mut self) {
        if let Err(e) = std::os::unix::fs::lchown(self.path, Some(self.owner.0), Some(self.owner.1))
        {
            tracing::error!(error = %e, dir = %self.path.display(), "cannot give a step's scratch directory back to its user");
        }
    }
}
