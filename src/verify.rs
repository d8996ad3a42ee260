//! `verify:` steps (DESIGN §12): did the remediation work? Poll Prometheus
//! (a query and its `success` / `failure` conditions, Argo Rollouts'
//! analysis fields) or Alertmanager (`alert_resolved: true`) until the
//! condition holds, fails, or the timeout comes. Every measurement (time,
//! value, verdict) is written to the step's output, so the UI, the CLI and
//! the postmortem show it like any step's output.

use std::time::Duration;

pub use crate::plan::VerifyPlan;
pub use crate::runbook::verify::BurnRate;
pub use crate::runbook::verify::{Cmp, Condition, Inconclusive};

/// What one measurement found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Success,
    Failure,
    /// Neither condition holds (or there was no value).
    Inconclusive,
    /// The measurement could not be taken.
    Error(String),
}

/// What a verify step ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    Succeeded,
    Failed(String),
    /// The timeout came first; `on_inconclusive` decides.
    Inconclusive(String),
    /// The run's own timeout came first.
    RunTimedOut,
    Cancelled,
}

/// Where a verify step measures.
pub struct Sources<'a> {
    pub prometheus: Option<std::sync::Arc<dyn crate::integrations::Metrics>>,
    pub alertmanager: Option<std::sync::Arc<dyn crate::integrations::Alerts>>,
    /// The alert's fingerprint (for `alert_resolved`).
    pub fingerprint: &'a str,
    /// The alert came from Alertmanager (not a manual run or a drill,
    /// whose alert Alertmanager never held: it would look resolved).
    pub from_alertmanager: bool,
    /// The run's deadline.
    pub run_deadline: Option<tokio::time::Instant>,
}

/// One measurement: `(value as text, verdict)`.
async fn measure(plan: &VerifyPlan, src: &Sources<'_>) -> (String, Verdict) {
    if plan.alert_resolved {
        if !src.from_alertmanager {
            return (
                "-".into(),
                Verdict::Error("`alert_resolved` asks Alertmanager about the alert of the run, and this run's alert is not one Alertmanager sent (a manual run or a drill)".into()),
            );
        }
        let Some(am) = &src.alertmanager else {
            return (
                "-".into(),
                Verdict::Error(
                    "no Alertmanager to ask: set `alertmanager.url` in the server config".into(),
                ),
            );
        };
        return match am.firing().await {
            Ok(Some(firing)) if firing.contains(src.fingerprint) => {
                ("firing".into(), Verdict::Inconclusive)
            }
            Ok(Some(_)) => ("resolved".into(), Verdict::Success),
            Ok(None) => (
                "unknown (Alertmanager restarted moments ago)".into(),
                Verdict::Inconclusive,
            ),
            Err(e) => ("-".into(), Verdict::Error(e)),
        };
    }
    let (Some(prom), Some(query)) = (&src.prometheus, &plan.query) else {
        return (
            "-".into(),
            Verdict::Error(
                "no Prometheus to ask: set `prometheus.url` in the server config".into(),
            ),
        );
    };
    match prom.values(query).await {
        Err(e) => ("-".into(), Verdict::Error(e)),
        Ok(values) if values.is_empty() => ("no data".into(), Verdict::Inconclusive),
        Ok(values) if values.len() > 1 => (
            format!("{} series", values.len()),
            Verdict::Error(format!(
                "the query gave {} series; write it to give one number (sum, max, …)",
                values.len()
            )),
        ),
        Ok(values) => {
            let v = values[0];
            let text = format!("{v}");
            if v.is_nan() {
                (text, Verdict::Inconclusive)
            } else if plan.failure.is_some_and(|c| c.holds(v)) {
                (text, Verdict::Failure)
            } else if plan.success.is_some_and(|c| c.holds(v)) {
                (text, Verdict::Success)
            } else {
                (text, Verdict::Inconclusive)
            }
        }
    }
}

/// Polls until the verdict, writing each measurement to `log`:
/// `initial_delay`, then every `interval` until `consecutive_success`
/// successes in a row (a failure ends it at once; a measurement that
/// cannot be taken counts as inconclusive, and is said), or the timeout.
pub async fn run(
    plan: &VerifyPlan,
    src: &Sources<'_>,
    cancel: &tokio_util::sync::CancellationToken,
    log: &mut String,
) -> Ended {
    use std::fmt::Write as _;
    let start = tokio::time::Instant::now();
    let own = start + Duration::from_millis(plan.timeout_ms);
    let run_end = src.run_deadline;
    let deadline = run_end.map_or(own, |r| r.min(own));
    let ran_out = || run_end.is_some_and(|r| r <= own && tokio::time::Instant::now() >= r);
    let what = if plan.alert_resolved {
        "whether the alert still fires, asked of Alertmanager".to_owned()
    } else {
        format!(
            "`{}`: success {}, failure {}",
            plan.query.as_deref().unwrap_or_default(),
            plan.success.map_or("-".into(), |c| c.to_string()),
            plan.failure.map_or("-".into(), |c| c.to_string())
        )
    };
    let _ = writeln!(log, "verify {what}");
    let sleep = |until: tokio::time::Instant| async move {
        tokio::select! {
            () = tokio::time::sleep_until(until) => true,
            () = cancel.cancelled() => false,
        }
    };
    if !sleep((start + Duration::from_millis(plan.initial_delay_ms)).min(deadline)).await {
        return Ended::Cancelled;
    }
    if ran_out() {
        return Ended::RunTimedOut;
    }
    let mut streak = 0u32;
    loop {
        // A measurement waits for Prometheus at most until the deadline.
        let (value, verdict) = tokio::select! {
            m = measure(plan, src) => m,
            () = cancel.cancelled() => return Ended::Cancelled,
            () = tokio::time::sleep_until(deadline) => (
                "-".into(),
                Verdict::Error("no answer before the deadline".into()),
            ),
        };
        let word = match &verdict {
            Verdict::Success => "success".to_owned(),
            Verdict::Failure => "failure".to_owned(),
            Verdict::Inconclusive => "inconclusive".to_owned(),
            Verdict::Error(e) => format!("error: {e}"),
        };
        let _ = writeln!(
            log,
            "{} value={value} verdict={word}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        let last = format!("last value {value} ({word})");
        match verdict {
            Verdict::Failure => {
                return Ended::Failed(format!(
                    "verify failed: {value} is {}",
                    plan.failure.map_or(String::new(), |c| c.to_string())
                ));
            }
            Verdict::Success => {
                streak += 1;
                if streak >= plan.consecutive_success.max(1) {
                    return Ended::Succeeded;
                }
            }
            Verdict::Inconclusive | Verdict::Error(_) => streak = 0,
        }
        let next = tokio::time::Instant::now() + Duration::from_millis(plan.interval_ms.max(1));
        if next > deadline && ran_out_at(run_end, own, next) {
            return Ended::RunTimedOut;
        }
        if next > deadline {
            return Ended::Inconclusive(format!(
                "verify inconclusive after {}: {last}",
                humantime::format_duration(Duration::from_millis(plan.timeout_ms))
            ));
        }
        if !sleep(next).await {
            return Ended::Cancelled;
        }
    }
}

/// Whether the run's deadline (not the step's) is what `at` passes.
fn ran_out_at(
    run_end: Option<tokio::time::Instant>,
    own: tokio::time::Instant,
    at: tokio::time::Instant,
) -> bool {
    run_end.is_some_and(|r| r < own && at > r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_read_as_written() {
        let c: Condition = "< 0.5".parse().unwrap();
        assert!(c.holds(0.4) && !c.holds(0.5));
        let c: Condition = ">=50".parse().unwrap();
        assert!(c.holds(50.0) && !c.holds(49.9));
        assert!("about 3".parse::<Condition>().is_err());
        assert!("< NaN".parse::<Condition>().is_err());
        assert!("< x"
            .parse::<Condition>()
            .unwrap_err()
            .contains("not a number"));
    }
}
