//! Postmortem drafts: the incident record rendered with Handlebars into
//! Markdown, following the usual structure (summary, impact, root cause,
//! detection, timeline, what went well / wrong, action items, links).
//! The default template is `src/postmortem.md.hbs`; `--template FILE`
//! replaces it, with every field of [`context`] available (docs/postmortem.md).

use crate::timestamp::Timestamp;
use chrono::{DateTime, Utc};
use handlebars::Handlebars;
use serde_json::{json, Value};

use crate::incident::IncidentDetail;
use crate::record::StepOutcome;

/// The default template.
pub const DEFAULT_TEMPLATE: &str = include_str!("postmortem.md.hbs");

/// Why a postmortem cannot be rendered.
#[derive(Debug, thiserror::Error)]
#[error("postmortem template: {0}")]
pub struct PostmortemError(String);

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// An instant as the draft shows it.
fn shown(t: Timestamp) -> String {
    t.instant().format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A time Alertmanager wrote, as the draft shows it (as written, when it
/// is not RFC 3339).
fn utc(t: &str) -> String {
    parse(t).map_or_else(|| t.to_owned(), |t| shown(t.into()))
}

fn human(secs: i64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(
        u64::try_from(secs).unwrap_or(0),
    ))
    .to_string()
}

/// Makes untrusted text (alert data, step output) inert inside one Markdown
/// table cell or list line: HTML is escaped as entities (no tags, no
/// `<…>` autolinks), `[` and `]` are backslash-escaped (no links or images
/// can be formed), so are `|` (table cells) and `\\`; line breaks and other
/// control characters become spaces.
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '[' | ']' | '|' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A URL for a Markdown link: only http(s), with the characters that could
/// end the link percent-encoded.
fn link_url(url: &str) -> Option<String> {
    let url = http_link(url)?;
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        match c {
            '(' | ')' | '<' | '>' | '"' | '\\' | '`' | '[' | ']' => {
                use std::fmt::Write as _;
                let _ = write!(out, "%{:02X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// The data the template sees.
#[must_use]
pub fn context(d: &IncidentDetail) -> Value {
    let s = &d.summary;
    let alerts: Vec<Value> = d
        .alerts
        .iter()
        .map(|a| {
            json!({
                "name": cell(a.labels.get("alertname").map_or("(no alertname)", String::as_str)),
                "status": a.status, "fingerprint": a.fingerprint, "starts_at": utc(&a.starts_at), "ends_at": a.ends_at,
                "labels": a.labels.iter().map(|(k, v)| (cell(k), Value::String(cell(v)))).collect::<serde_json::Map<_, _>>(),
                "annotations": a.annotations.iter().map(|(k, v)| (cell(k), Value::String(cell(v)))).collect::<serde_json::Map<_, _>>(),
                "generator_url": link_url(&a.generator_url),
            })
        })
        .collect();
    // Every event: the incident's timeline plus each step of each run.
    let mut events: Vec<(Timestamp, String, String)> = d
        .timeline
        .iter()
        .map(|t| (t.at, t.author.clone(), t.message.clone()))
        .collect();
    let (mut well, mut wrong, mut actions) = (Vec::new(), Vec::new(), Vec::new());
    let mut first_step: Option<Timestamp> = None;
    for run in &d.runs {
        let steps = match &run.result {
            Some(crate::incident::RunDetail::Executed(r)) => r.steps.as_slice(),
            _ => &[],
        };
        for step in steps {
            let at = Timestamp(step.started);
            let label = format!("`{}` step `{}`", run.runbook, step.name);
            let Some(outcome) = &step.outcome else {
                let text = cell(step.plan.text.as_deref().unwrap_or_default());
                let done = d
                    .checklist
                    .iter()
                    .find(|c| c.run_id == run.id && c.step == step.name)
                    .and_then(|c| c.done_by.as_deref());
                match done {
                    Some(by) => well.push(format!(
                        "{text} (checklist item of `{}`) done by {}",
                        run.runbook,
                        cell(by)
                    )),
                    None => actions.push(format!("{text} (checklist item of `{}`)", run.runbook)),
                }
                events.push((
                    at,
                    "runbookd".into(),
                    format!("{label}: checklist item for people"),
                ));
                continue;
            };
            // A verify step's measurements: how many, and the last.
            let label = match (&step.plan.action, step.attempts.last()) {
                (crate::plan::ActionPlan::Verify(_), Some(a)) => {
                    let measured: Vec<&str> =
                        a.stdout.lines().filter(|l| l.contains(" value=")).collect();
                    match measured.last() {
                        Some(last) => format!(
                            "{label} (verify: {} measurement(s), the last {})",
                            measured.len(),
                            cell(last)
                        ),
                        None => format!("{label} (verify: no measurement)"),
                    }
                }
                _ => label,
            };
            match outcome {
                StepOutcome::Succeeded => {
                    well.push(format!("{label} succeeded in {} ms", step.duration_ms));
                }
                // A failed step asks for a fix; one skipped, cancelled or
                // waiting did not fail (StepOutcome::is_failure).
                _ if outcome.is_failure() => {
                    let detail = cell(&outcome.sentence());
                    wrong.push(format!("{label} {detail}"));
                    actions.push(format!("Fix or replace {label}: it {detail}"));
                }
                _ => {
                    wrong.push(format!("{label} {}", cell(&outcome.sentence())));
                }
            }
            if first_step.is_none_or(|f| at < f) {
                first_step = Some(at);
            }
            events.push((
                at,
                "runbookd".into(),
                format!("{label}: {}", outcome.status().replace('_', " ")),
            ));
        }
    }
    events.sort_by_key(|a| a.0);
    let timeline: Vec<Value> = events
        .iter()
        .map(|(at, who, msg)| json!({"at": shown(*at), "author": cell(who), "message": cell(msg)}))
        .collect();
    let first_alert = d
        .alerts
        .iter()
        .map(|a| a.starts_at.as_str())
        .min()
        .unwrap_or_default();
    // Only http(s) URLs become links (a `javascript:` URL is shown nowhere).
    let links: Vec<Value> = d
        .alerts
        .iter()
        .filter_map(|a| {
            let url = link_url(&a.generator_url)?;
            let name = format!(
                "{} ({})",
                cell(a.labels.get("alertname").map_or("alert", String::as_str)),
                a.fingerprint
            );
            Some(json!({"name": name, "url": url}))
        })
        .collect();
    let runbooks = d
        .runs
        .iter()
        .map(|r| format!("`{}` {}", r.runbook, r.state.words()))
        .collect::<Vec<_>>();
    let summary = format!(
        "{} alert(s) ({}) from receiver `{}` opened this {} incident at {}. {}{}",
        d.alerts.len(),
        d.alerts
            .iter()
            .filter_map(|a| a.labels.get("alertname"))
            .map(|n| cell(n))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", "),
        cell(&s.receiver),
        s.severity,
        shown(s.created_at),
        if runbooks.is_empty() {
            "No runbook ran. ".to_owned()
        } else {
            format!("Runbooks: {}. ", runbooks.join(", "))
        },
        match (&s.resolved_at, &s.alerts_ended_at, s.recovered_seconds) {
            (Some(r), Some(ended), Some(rec)) => format!(
                "The alerts ended at {} ({} after the incident opened); Alertmanager reported them resolved at {}.",
                shown(*ended),
                human(rec),
                shown(*r)
            ),
            (Some(r), _, _) => format!(
                "Resolved at {} after {}.",
                shown(*r),
                human(s.duration_seconds)
            ),
            (None, _, _) => format!("Still {} after {}.", s.status, human(s.duration_seconds)),
        }
    );
    if let Some(why) = &s.postmortem_required {
        // The policy's rule: at least one P0 action item, first.
        actions.insert(
            0,
            format!(
                "**P0**: _to be filled in: what stops this from happening again_ (a postmortem is required: {})",
                cell(why)
            ),
        );
    }
    json!({
        "incident": {
            "id": s.id.to_string(), "title": cell(&s.title), "severity": s.severity, "status": s.status, "escalated": s.escalated, "run_failed": s.run_failed,
            "services": s.services.iter().map(|x| cell(x)).collect::<Vec<_>>(), "runbooks": s.runbooks, "receiver": s.receiver, "group_key": s.group_key,
            "created_at": s.created_at, "resolved_at": s.resolved_at, "alerts_ended_at": s.alerts_ended_at, "recovered": s.recovered_seconds.map(human), "date": s.created_at.instant().format("%Y-%m-%d").to_string(),
            "start": shown(s.created_at), "end": s.resolved_at.map(shown), "duration": human(s.duration_seconds),
            "duration_seconds": s.duration_seconds, "root_cause": d.root_cause.as_deref().map(cell), "shadow": s.shadow,
            "commander": s.commander.as_deref().map(cell), "acknowledged_by": s.acknowledged_by.as_deref().map(cell),
            "postmortem_required": s.postmortem_required.as_deref().map(cell),
        },
        "summary": summary,
        "alerts": alerts,
        "detection": {"first_alert": utc(first_alert), "opened": shown(s.created_at), "first_step": first_step.map(shown)},
        "timeline": timeline,
        "went_well": well,
        "went_wrong": wrong,
        "action_items": actions,
        "links": links,
        "runs": d.runs,
        "record": d,
    })
}

/// Renders the postmortem draft of an incident, with `template` or the default.
///
/// # Errors
/// A template that does not parse or names a field the context lacks.
pub fn render(d: &IncidentDetail, template: Option<&str>) -> Result<String, PostmortemError> {
    render_with_budget(d, template, &[])
}

/// As [`render`], with the error budget the incident spent (`slo_budget`
/// in the template: Impact and Monitoring queries).
///
/// # Errors
/// As [`render`].
pub fn render_with_budget(
    d: &IncidentDetail,
    template: Option<&str>,
    budget: &[crate::slo::impact::Consumed],
) -> Result<String, PostmortemError> {
    let mut ctx = context(d);
    ctx["slo_budget"] = budget
        .iter()
        .map(|c| {
            json!({
                "slo": format!("{}/{}", cell(&c.service), cell(&c.slo)),
                "minutes": c.minutes.map(|m| format!("{m:.1}")),
                "percent": c.share.map(|s| format!("{:.1}", s * 100.0)),
                "errors": c.errors.map(|e| format!("{e:.0}")),
                "error": c.error.as_deref().map(cell),
                "queries": c.queries.iter().map(|q| cell(q)).collect::<Vec<_>>(),
                "at": c.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            })
        })
        .collect::<Vec<_>>()
        .into();
    render_context(&ctx, template)
}

fn render_context(ctx: &Value, template: Option<&str>) -> Result<String, PostmortemError> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_template_string("postmortem", template.unwrap_or(DEFAULT_TEMPLATE))
        .map_err(|e| PostmortemError(e.to_string()))?;
    hb.render("postmortem", ctx)
        .map_err(|e| PostmortemError(e.to_string()))
}

/// `url` when it is an http(s) URL, the only kind that becomes a link.
#[must_use]
pub fn http_link(url: &str) -> Option<&str> {
    let lower = url.trim_start().to_ascii_lowercase();
    let ok = (lower.starts_with("http://") || lower.starts_with("https://"))
        && !url.chars().any(|c| c.is_control() || c.is_whitespace());
    ok.then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{IncidentId, IncidentStatus, IncidentSummary};

    fn detail() -> IncidentDetail {
        IncidentDetail {
            summary: IncidentSummary {
                id: IncidentId(7),
                title: "Disk | full".into(),
                severity: crate::runbook::Severity::Sev2,
                status: IncidentStatus::Investigating,
                escalated: true,
                run_failed: true,
                acknowledged_at: None,
                acknowledged_by: None,
                commander: None,
                awaiting_approval: 0,
                grouped_by: None,
                slo_affecting: false,
                slo_budget: None,
                postmortem_required: None,
                services: vec![],
                runbooks: vec![],
                receiver: "r".into(),
                group_key: "g".into(),
                shadow: false,
                drill: false,
                created_at: "2026-11-24T08:00:00Z".parse().unwrap(),
                updated_at: "2026-11-24T08:00:00Z".parse().unwrap(),
                resolved_at: None,
                alerts_ended_at: None,
                recovered_seconds: None,
                alert_count: 0,
                firing_count: 0,
                subject: None,
                duration_seconds: 90,
            },
            root_cause: None,
            alerts: vec![],
            runs: vec![],
            timeline: vec![],
            checklist: vec![],
            notifications: vec![],
            escalations: vec![],
            approvals: vec![],
        }
    }

    #[test]
    fn the_default_template_renders_a_bare_incident() {
        let text = render(&detail(), None).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            text.starts_with("# Postmortem: Disk \\| full (INC-0007)\n"),
            "{text}"
        );
        assert!(
            text.contains("| Status | investigating (a run failed; escalated) |"),
            "{text}"
        );
        assert!(
            text.contains("- Duration: 1m 30s, from 2026-11-24 08:00:00 UTC to now, still open."),
            "{text}"
        );
    }

    #[test]
    fn a_required_postmortem_says_so_and_opens_with_a_p0_action_item() {
        let mut d = detail();
        assert!(!render(&d, None).unwrap().contains("P0"));
        d.summary.postmortem_required =
            Some("policy `twenty` (incident_budget_consumed > 0.2): web/latency: 23.0% of its budget <b>".into());
        let text = render(&d, None).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            text.contains("| Postmortem | **required**: policy `twenty` (incident_budget_consumed &gt; 0.2): web/latency: 23.0% of its budget &lt;b&gt; |"),
            "{text}"
        );
        let items = &text[text.find("## Action items").unwrap()..];
        assert!(
            items.starts_with("## Action items\n\n- [ ] **P0**: _to be filled in"),
            "{items}"
        );
    }
}
