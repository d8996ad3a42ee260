//! `runbookd run`: the plan of an alert (`--plan`, text or JSON), or its
//! runbooks executed at the terminal with a live transcript.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::alert::Notification;
use crate::exec::run::{Executor, RunObserver, RunRequest};
use crate::exec::{ExecSettings, Sandbox, SandboxConfig, Stream};
use crate::plan::{ActionPlan, Phase, Plan, StepPlan, WhenDecision, PLAN_INCIDENT_ID};
use crate::record::{RunOutcome, StepOutcome, StepRecord};
use crate::runbook::RunbookSet;

use super::check::load;
use super::{ms, printable, quoted, Output, SandboxArgs, LOCAL_INCIDENT_ID, MAX_LINE};

pub(super) fn read_payload(path: &Path) -> anyhow::Result<Notification> {
    let mut body = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut body)
            .context("cannot read the payload from standard input")?;
    } else {
        body = std::fs::read(path)
            .with_context(|| format!("cannot read payload `{}`", path.display()))?;
    }
    Notification::from_json(&body)
        .with_context(|| format!("bad Alertmanager payload `{}`", path.display()))
}

pub(super) fn run_alert(
    alert: &Path,
    runbooks: &Path,
    plan: bool,
    output: Output,
    sandbox: &SandboxArgs,
) -> anyhow::Result<ExitCode> {
    let notification = read_payload(alert)?;
    let set = match load(runbooks) {
        Ok(set) => set,
        Err(code) => return Ok(code),
    };
    if !plan {
        return execute(&notification, &set, sandbox);
    }
    let plan = Plan::build(&notification, &set, PLAN_INCIDENT_ID);
    let mut out = std::io::stdout().lock();
    let written = match output {
        Output::Json => serde_json::to_writer_pretty(&mut out, &plan)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        Output::Text => write_text(&mut out, &plan),
    };
    match written {
        // A reader such as `head` that stops early is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        other => other.context("cannot write the plan")?,
    }
    Ok(if plan.steps().any(|s| s.error.is_some()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(super) fn write_text(out: &mut impl Write, plan: &Plan) -> std::io::Result<()> {
    writeln!(
        out,
        "notification from receiver {} (group {}), {}",
        quoted(&plan.receiver),
        quoted(&plan.group_key),
        plan.status
    )?;
    match &plan.incident {
        Some(i) => writeln!(out, "incident {} ({})", i.id, i.severity)?,
        None => writeln!(out, "no runbook matches any alert: nothing would run")?,
    }
    for a in &plan.alerts {
        let name = a
            .labels
            .get("alertname")
            .map_or("(no alertname)", String::as_str);
        writeln!(
            out,
            "\nalert {} [{}] fingerprint {}, started {}",
            printable(name),
            a.status,
            a.fingerprint,
            a.starts_at
        )?;
        let labels: Vec<String> = a
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", printable(k), quoted(v)))
            .collect();
        writeln!(out, "  labels: {}", labels.join(", "))?;
        if a.runs.is_empty() {
            writeln!(out, "  no runbook matches")?;
        }
        for r in &a.runs {
            writeln!(
                out,
                "  runbook {}: {} ({}, {})",
                r.runbook,
                printable(&r.title),
                r.severity,
                r.source
            )?;
            writeln!(
                out,
                "    {}; timeout {}, concurrency {}, cooldown {}{}",
                match r.phase {
                    Phase::Remediation => "remediation (alert firing)",
                    Phase::Resolution => "on_resolved (alert resolved; remediation never runs)",
                },
                ms(r.timeout_ms),
                r.concurrency,
                ms(r.cooldown_ms),
                if r.cancel_on_resolved {
                    ", cancelled when resolved"
                } else {
                    ""
                }
            )?;
            if r.steps.is_empty() {
                writeln!(out, "    nothing runs for this phase")?;
            }
            for (i, s) in r.steps.iter().enumerate() {
                write_step(out, i + 1, s)?;
            }
            if !r.on_failure.is_empty() {
                writeln!(out, "    on failure:")?;
                for (i, s) in r.on_failure.iter().enumerate() {
                    write_step(out, i + 1, s)?;
                }
            }
            for n in &r.notifications {
                writeln!(out, "    notifies {} (not sent by a plan)", n.describe())?;
            }
        }
    }
    let runs: usize = plan.alerts.iter().map(|a| a.runs.len()).sum();
    let steps = plan.steps().count();
    let broken = plan.steps().filter(|s| s.error.is_some()).count();
    writeln!(
        out,
        "\n{} alert(s), {runs} run(s), {steps} step(s){}",
        plan.alerts.len(),
        if broken > 0 {
            format!(", {broken} step(s) cannot be rendered")
        } else {
            String::new()
        }
    )
}

pub(super) fn write_step(out: &mut impl Write, n: usize, s: &StepPlan) -> std::io::Result<()> {
    let mut attrs = vec![s.kind().as_str().to_owned()];
    if let Some(a) = s.asks() {
        attrs.push(format!("waits {}, then {}", ms(a.timeout_ms), a.on_timeout));
    } else if s.kind() != crate::runbook::StepKind::Manual {
        attrs.push(format!("timeout {}", ms(s.timeout_ms)));
        if s.retries > 0 {
            attrs.push(format!(
                "{} retries, {} apart",
                s.retries,
                ms(s.retry_delay_ms)
            ));
        }
        if s.continue_on_failure {
            attrs.push("continue on failure".to_owned());
        }
    }
    writeln!(out, "    {n}. {} ({})", s.name, attrs.join("; "))?;
    if let Some(w) = &s.when {
        let what = match w.decision {
            WhenDecision::Run => "runs".to_owned(),
            WhenDecision::Skip => format!(
                "skipped (rendered {})",
                quoted(w.rendered.as_deref().unwrap_or_default())
            ),
            WhenDecision::AtRunTime => "decided at run time".to_owned(),
        };
        writeln!(out, "       when {}: {what}", printable(&w.template))?;
    }
    if let Some(g) = s.gate.as_ref().filter(|g| !g.service.is_empty()) {
        writeln!(
            out,
            "       asks the error-budget gate of {}: while frozen, {}",
            quoted(&g.service),
            match g.on_frozen {
                crate::runbook::OnFrozen::Skip => "skipped",
                crate::runbook::OnFrozen::Fail => "fails",
                crate::runbook::OnFrozen::Approve => "waits for an operator's approval",
            }
        )?;
    }
    if let Some(e) = &s.error {
        writeln!(out, "       ERROR: {}", printable(e))?;
    }
    if let Some(t) = &s.templates {
        writeln!(
            out,
            "       rendered at run time from: {}",
            printable(&t.iter().map(|x| quoted(x)).collect::<Vec<_>>().join(" "))
        )?;
    } else {
        match &s.action {
            ActionPlan::Shell {
                script: Some(script),
                vars,
            } => {
                writeln!(out, "       sh -c:")?;
                for line in script.lines() {
                    writeln!(out, "         | {}", printable(line))?;
                }
                for (k, v) in vars {
                    writeln!(out, "       where {k}={}", quoted(v))?;
                }
            }
            ActionPlan::Run { argv: Some(argv) } => writeln!(
                out,
                "       argv: [{}]",
                argv.iter()
                    .map(|a| quoted(a))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?,
            ActionPlan::Manual => {
                if let Some(text) = &s.text {
                    writeln!(out, "       checklist: {}", printable(text))?;
                }
            }
            ActionPlan::Silence(_) | ActionPlan::Approve(_) | ActionPlan::Verify(_) => {
                if let Some(text) = &s.text {
                    writeln!(out, "       {}", printable(text))?;
                }
            }
            // Not rendered: the error above says why.
            ActionPlan::Shell { script: None, .. } | ActionPlan::Run { argv: None } => {}
        }
    }
    let own: Vec<String> = s
        .env
        .iter()
        .filter(|(k, _)| !k.starts_with("ALERT_") && *k != "INCIDENT_ID" && *k != "RUNBOOK")
        .map(|(k, v)| format!("{k}={}", quoted(v)))
        .collect();
    if !own.is_empty() {
        writeln!(out, "       env: {}", own.join(" "))?;
    }
    for w in &s.warnings {
        writeln!(out, "       warning: {}", printable(w))?;
    }
    Ok(())
}

/// A local run's approval, decided at the terminal: `y` approves, anything
/// else denies; no answer within the step's timeout decides as its
/// `on_timeout` says; without a terminal to ask, it is denied.
pub(super) async fn ask_at_terminal(
    runbook: &str,
    asked: &crate::approval::Request,
) -> crate::approval::Approval {
    use crate::approval::ApprovalState;
    use std::io::IsTerminal as _;
    let plan = &asked.plan;
    let now = chrono::Utc::now();
    let deadline =
        now + chrono::Duration::milliseconds(i64::try_from(plan.timeout_ms).unwrap_or(i64::MAX));
    let who = std::env::var("USER").unwrap_or_else(|_| "the terminal".into());
    let (state, by, comment) = if std::io::stdin().is_terminal() {
        say!(
            "  ? step `{}` asks: {} [y/N] (waits {}, then {})",
            asked.step,
            printable(&plan.prompt),
            ms(plan.timeout_ms),
            plan.on_timeout
        );
        let line = tokio::time::timeout(
            plan.timeout(),
            tokio::task::spawn_blocking(|| {
                let mut s = String::new();
                std::io::stdin().read_line(&mut s).map(|_| s)
            }),
        )
        .await;
        match line {
            Ok(Ok(Ok(answer))) if answer.trim().eq_ignore_ascii_case("y") => {
                (ApprovalState::Approved, who, None)
            }
            Ok(_) => (ApprovalState::Denied, who, None),
            Err(_) => (ApprovalState::TimedOut, "runbookd".to_owned(), None),
        }
    } else {
        say!(
            "  ? step `{}` asks: {} — no terminal to ask: denied",
            asked.step,
            printable(&plan.prompt)
        );
        (
            ApprovalState::Denied,
            "runbookd".to_owned(),
            Some("no terminal to ask (runbookd run)".to_owned()),
        )
    };
    crate::approval::Approval {
        id: 0,
        run_id: crate::incident::RunId(0),
        runbook: runbook.to_owned(),
        step: asked.step.clone(),
        index: asked.index,
        prompt: plan.prompt.clone(),
        requested_at: now.into(),
        deadline: deadline.into(),
        on_timeout: plan.on_timeout,
        state,
        decided_by: Some(by),
        decided_at: Some(crate::timestamp::Timestamp::now()),
        comment,
    }
}

/// Executes every matched runbook of the notification, one after the other,
/// printing a live transcript. Exit status 1 when a run failed or timed out,
/// 130 when interrupted.
pub(super) fn execute(
    n: &Notification,
    set: &RunbookSet,
    args: &SandboxArgs,
) -> anyhow::Result<ExitCode> {
    let config = SandboxConfig {
        run_as: args.run_as.clone(),
        allow_root_steps: args.allow_root_steps,
        strict: args.strict_sandbox,
        secret_files: set.secret_files(),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::new(config).context("cannot set up the step sandbox")?;
    let executor = Executor {
        // `run --alert` has no Alertmanager (a silence step fails, saying
        // so), nor a Prometheus (so does a verify step).
        integrations: crate::integrations::Integrations::none(),
        // Nor SLO statuses: a gated step counts as frozen, saying so.
        gates: None,
        slos: None,
        sandbox,
        settings: ExecSettings {
            kill_grace: args.kill_grace,
            ..ExecSettings::default()
        },
    };
    let plan = Plan::build(n, set, LOCAL_INCIDENT_ID);
    let Some(incident) = plan.incident else {
        say!("no runbook matches any alert: nothing to run");
        return Ok(ExitCode::SUCCESS);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let on_interrupt = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: stopping the running step");
                on_interrupt.cancel();
            }
        });
        let transcript = std::sync::Arc::new(Transcript::default());
        let mut worst = ExitCode::SUCCESS;
        for alert in &n.alerts {
            for rb in set.matching(&alert.labels) {
                say!(
                    "\n=== runbook {} for alert {} [{}] fingerprint {}",
                    rb.name,
                    printable(alert.name()),
                    alert.status,
                    alert.fingerprint
                );
                let req = RunRequest { notification: n, alert, runbook: rb, incident: incident.clone(), lease: None, resume: None, rerun_of: None };
                let mut result = executor.run(&req, transcript.clone(), &cancel).await;
                // A local run pauses on an approval step as a server's
                // does: the person at the terminal decides.
                while let Some(asked) = result.awaiting.clone() {
                    let approval = ask_at_terminal(&rb.name, &asked).await;
                    let resume = crate::record::Resume { prior: Box::new(result), approval };
                    let req = RunRequest { notification: n, alert, runbook: rb, incident: incident.clone(), lease: None, resume: Some(&resume), rerun_of: None };
                    result = executor.run(&req, transcript.clone(), &cancel).await;
                }
                let not_ok = result
                    .steps
                    .iter()
                    .filter(|s| s.outcome.as_ref().is_some_and(|o| !o.succeeded() && !matches!(o, StepOutcome::Skipped { .. })))
                    .count();
                say!(
                    "=== run {}: {} in {} ({} step(s), {not_ok} not succeeded, {} open checklist item(s))",
                    rb.name,
                    serde_json::to_value(result.outcome).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                    ms(result.duration_ms),
                    result.steps.len(),
                    result.checklist.len()
                );
                if let Some(why) = &result.held {
                    say!("    not run: {}", printable(why));
                }
                match result.outcome {
                    RunOutcome::Failed
                    | RunOutcome::TimedOut
                    | RunOutcome::AwaitingApproval
                    | RunOutcome::Skipped => {
                        worst = ExitCode::from(1);
                    }
                    RunOutcome::Cancelled | RunOutcome::Interrupted => return ExitCode::from(130),
                    RunOutcome::Succeeded | RunOutcome::SucceededWithFailures => {}
                }
            }
        }
        worst
    }))
}

/// Prints a run as it happens: each step's command, its output lines as they
/// come (`|` stdout, `!` stderr), its outcome and duration.
#[derive(Default)]
pub(super) struct Transcript {
    partial: std::sync::Mutex<std::collections::HashMap<(String, Stream), Vec<u8>>>,
}

pub(super) fn print_output_line(stream: Stream, bytes: &[u8]) {
    let mark = if stream == Stream::Stdout { '|' } else { '!' };
    say!(
        "      {mark} {}",
        printable(&String::from_utf8_lossy(bytes))
    );
}

impl RunObserver for Transcript {
    fn step_started(&self, step: &StepPlan, attempt: u32, attempts: u32) {
        let retry = if attempts > 1 {
            format!(" (attempt {attempt} of {attempts})")
        } else {
            String::new()
        };
        say!("  > {} [{}]{retry}", step.name, step.kind().as_str());
        if let ActionPlan::Shell {
            script: Some(script),
            ..
        } = &step.action
        {
            for line in script.lines() {
                say!("      $ {}", printable(line));
            }
        } else if let Some(argv) = &step.argv() {
            say!(
                "      $ [{}]",
                argv.iter()
                    .map(|a| quoted(a))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }

    fn output(&self, step: &str, stream: Stream, bytes: &[u8]) {
        let mut partial = self
            .partial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let buf = partial.entry((step.to_owned(), stream)).or_default();
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            if let Some(line) = chunk.strip_suffix(b"\n") {
                buf.extend_from_slice(line);
                print_output_line(stream, buf);
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
                while buf.len() >= MAX_LINE {
                    let rest = buf.split_off(MAX_LINE);
                    print_output_line(stream, buf);
                    *buf = rest;
                }
            }
        }
    }

    fn step_finished(&self, rec: &StepRecord) {
        let mut partial = self
            .partial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for stream in [Stream::Stdout, Stream::Stderr] {
            if let Some(buf) = partial
                .remove(&(rec.name.clone(), stream))
                .filter(|b| !b.is_empty())
            {
                print_output_line(stream, &buf);
            }
        }
        let took = ms(rec.duration_ms);
        let what = match &rec.outcome {
            None => format!(
                "open checklist item: {}",
                printable(rec.plan.text.as_deref().unwrap_or_default())
            ),
            Some(StepOutcome::Succeeded) => format!("succeeded in {took}"),
            Some(StepOutcome::Failed { exit_code }) => {
                format!("FAILED with exit status {exit_code} in {took}")
            }
            Some(StepOutcome::Signalled { signal, cause }) => format!(
                "KILLED by signal {signal}{} in {took}",
                cause
                    .as_ref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            ),
            Some(StepOutcome::TimedOut { cause, .. }) => {
                format!("TIMED OUT ({cause}) after {took}")
            }
            Some(StepOutcome::SpawnFailed { reason }) => {
                format!("COULD NOT START: {}", printable(reason))
            }
            Some(StepOutcome::Skipped { reason }) => format!("skipped: {}", printable(reason)),
            Some(StepOutcome::Cancelled) => format!("cancelled after {took}"),
            Some(StepOutcome::AwaitingApproval) => "waiting for approval".to_owned(),
            Some(StepOutcome::Denied { reason }) => format!("DENIED: {}", printable(reason)),
            Some(StepOutcome::Unverified { reason }) => {
                format!("NOT VERIFIED: {}", printable(reason))
            }
            Some(StepOutcome::Interrupted { reason }) => {
                format!("INTERRUPTED: {}", printable(reason))
            }
        };
        let tail = if rec.phase == crate::record::StepPhase::OnFailure {
            " (on_failure)"
        } else {
            ""
        };
        say!("  = {}{tail}: {what}", rec.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(kind: &str, extra: &serde_json::Value) -> StepPlan {
        let mut v = serde_json::json!({
            "name": "s", "kind": kind, "argv": null, "script": null, "text": null,
            "templates": null, "timeout_ms": 1000, "when": null, "error": null,
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn shown(s: &StepPlan) -> String {
        let mut out = Vec::new();
        write_step(&mut out, 1, s).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn only_a_manual_step_is_shown_as_a_checklist_item() {
        let manual = shown(&step(
            "manual",
            &serde_json::json!({"text": "Look at the disk"}),
        ));
        assert!(manual.contains("checklist: Look at the disk"), "{manual}");
        let verify = shown(&step(
            "verify",
            &serde_json::json!({"text": "verify `up` until < 1", "verify": {"query": "up", "initial_delay_ms": 0, "interval_ms": 1000, "timeout_ms": 5000, "consecutive_success": 1, "on_inconclusive": "fail"}}),
        ));
        assert!(verify.contains("       verify `up` until < 1"), "{verify}");
        assert!(!verify.contains("checklist"), "{verify}");
        let approve = shown(&step(
            "approve",
            &serde_json::json!({"text": "ask for approval: go?", "approval": {"prompt": "go?", "timeout_ms": 60000, "on_timeout": "deny"}}),
        ));
        assert!(
            approve.contains("(approve; waits 1m, then deny)"),
            "{approve}"
        );
        assert!(!approve.contains("checklist"), "{approve}");
        let run = shown(&step("run", &serde_json::json!({"argv": ["df", "-h"]})));
        assert!(run.contains(r#"argv: ["df", "-h"]"#), "{run}");
    }
}
