//! `verify:` steps (DESIGN §12): did the remediation work? Poll Prometheus
//! (a query and its `success` / `failure` conditions, Argo Rollouts'
//! analysis fields) or Alertmanager (`alert_resolved: true`) until the
//! condition holds, fails, or the timeout comes. Every measurement (time,
//! value, verdict) is written to the step's output, so the UI, the CLI and
//! the postmortem show it like any step's output.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a measurement is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmp {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

/// `< 0.5`: a comparison with a number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub op: Cmp,
    pub value: f64,
}

impl Condition {
    #[must_use]
    pub fn holds(&self, x: f64) -> bool {
        match self.op {
            Cmp::Lt => x < self.value,
            Cmp::Le => x <= self.value,
            Cmp::Gt => x > self.value,
            Cmp::Ge => x >= self.value,
            Cmp::Eq => (x - self.value).abs() <= f64::EPSILON * self.value.abs().max(1.0),
            Cmp::Ne => (x - self.value).abs() > f64::EPSILON * self.value.abs().max(1.0),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        };
        write!(f, "{op} {}", self.value)
    }
}

impl std::str::FromStr for Condition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (op, rest) = [
            ("<=", Cmp::Le),
            (">=", Cmp::Ge),
            ("==", Cmp::Eq),
            ("!=", Cmp::Ne),
            ("<", Cmp::Lt),
            (">", Cmp::Gt),
        ]
        .iter()
        .find_map(|(p, op)| s.strip_prefix(p).map(|r| (*op, r)))
        .ok_or_else(|| {
            format!("`{s}`: write a comparison and a number, e.g. `< 0.5`, `>= 50`, `== 0`")
        })?;
        let value: f64 = rest
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: `{}` is not a number", rest.trim()))?;
        if !value.is_finite() {
            return Err(format!("`{s}`: the number must be finite"));
        }
        Ok(Condition { op, value })
    }
}

/// When the timeout comes before success or failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Inconclusive {
    /// The step fails (the default).
    #[default]
    Fail,
    /// The step succeeds, saying it was inconclusive.
    Continue,
}

impl std::str::FromStr for Inconclusive {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fail" => Ok(Inconclusive::Fail),
            "continue" => Ok(Inconclusive::Continue),
            _ => Err(format!(
                "unknown `on_inconclusive` `{s}`: expected fail (the default) or continue"
            )),
        }
    }
}

/// A verify step as rendered for this alert (what `--plan` shows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyPlan {
    /// The query to send, alert values escaped in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Condition>,
    /// Asks Alertmanager whether this alert still fires.
    #[serde(default)]
    pub alert_resolved: bool,
    /// An SLO's burn rate: `query` is built from the SLO when the step
    /// runs (`None` in a plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn_rate: Option<BurnRate>,
    pub initial_delay_ms: u64,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub consecutive_success: u32,
    pub on_inconclusive: Inconclusive,
}

/// `verify: {slo: SERVICE/NAME, burn_rate: {window, below}}`: the SLO's
/// burn rate over `window` (its error ratio ÷ its budget ratio) must fall
/// below `below`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurnRate {
    /// `service/name`.
    pub slo: String,
    pub window_ms: u64,
    pub below: f64,
}

impl std::fmt::Display for BurnRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the burn rate of {} over {} < {}",
            self.slo,
            humantime::format_duration(Duration::from_millis(self.window_ms)),
            self.below
        )
    }
}

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
    pub prometheus: Option<&'a crate::prometheus::Prometheus>,
    pub alertmanager: Option<crate::silence::Alertmanager>,
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
    let (Some(prom), Some(query)) = (src.prometheus, &plan.query) else {
        return (
            "-".into(),
            Verdict::Error(
                "no Prometheus to ask: set `prometheus.url` in the server config".into(),
            ),
        );
    };
    match prom.query(query, None).await {
        Err(e) => ("-".into(), Verdict::Error(e)),
        Ok(samples) if samples.is_empty() => ("no data".into(), Verdict::Inconclusive),
        Ok(samples) if samples.len() > 1 => (
            format!("{} series", samples.len()),
            Verdict::Error(format!(
                "the query gave {} series; write it to give one number (sum, max, …)",
                samples.len()
            )),
        ),
        Ok(samples) => {
            let v = samples[0].value;
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
