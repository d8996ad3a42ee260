//! The web UI, server-rendered with Handlebars — HTML escaping on here, since
//! alert data is untrusted — with no external CDN or fetch. Pages: overview,
//! incidents (filters, paging), an incident (alerts, timeline, runs with every
//! step's command, outcome, duration and collapsible output, checklist,
//! postmortem link, update form, live output over server-sent events),
//! runbooks with their recent runs, and a plan form.

use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use handlebars::Handlebars;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::alert::Notification;
use crate::incident::{IncidentId, IncidentStatus, Update};
use crate::plan::{Plan, PLAN_INCIDENT_ID};
use crate::store::IncidentFilter;

const PAGE: u32 = 50;
const STATUSES: &[&str] = &["investigating", "identified", "monitoring", "resolved"];
const SEVERITIES: &[&str] = &["sev1", "sev2", "sev3", "sev4"];

static UI: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    let mut h = Handlebars::new();
    for (name, text) in [
        ("layout", include_str!("ui/layout.hbs")),
        ("overview", include_str!("ui/overview.hbs")),
        ("incident_table", include_str!("ui/incident_table.hbs")),
        ("incidents", include_str!("ui/incidents.hbs")),
        ("incident", include_str!("ui/incident.hbs")),
        ("runbooks", include_str!("ui/runbooks.hbs")),
        ("plan", include_str!("ui/plan.hbs")),
        ("unmatched", include_str!("ui/unmatched.hbs")),
        ("not_found", include_str!("ui/not_found.hbs")),
        ("login", include_str!("ui/login.hbs")),
        ("slos", include_str!("ui/slos.hbs")),
        ("slo", include_str!("ui/slo.hbs")),
        ("capacity", include_str!("ui/capacity.hbs")),
    ] {
        h.register_template_string(name, text)
            .unwrap_or_else(|e| panic!("UI template {name}: {e}"));
    }
    h.register_helper("when", Box::new(when_helper));
    h
});

/// `{{when ts}}`: an RFC 3339 time as `2026-11-24 18:12:13 UTC` (whole
/// seconds); `time.js` turns it into the reader's local time.
fn when_helper(
    h: &handlebars::Helper<'_>,
    _: &Handlebars<'_>,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext<'_, '_>,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let raw = h
        .param(0)
        .and_then(|p| p.value().as_str())
        .unwrap_or_default();
    out.write(&handlebars::html_escape(&short_time(raw)))?;
    Ok(())
}

/// `2026-11-24 18:12:13 UTC` for an RFC 3339 time; other text unchanged.
fn short_time(raw: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(raw).map_or_else(
        |_| raw.to_owned(),
        |t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        },
    )
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(overview))
        .route("/incidents", get(incidents))
        .route("/incidents/{id}", get(incident))
        .route("/incidents/{id}/updates", axum::routing::post(add_update))
        .route(
            "/incidents/{id}/acknowledge",
            axum::routing::post(acknowledge),
        )
        .route("/incidents/{id}/events", get(events))
        .route("/incidents/{id}/checklist", axum::routing::post(tick))
        .route("/incidents/{id}/commander", axum::routing::post(hand_over))
        .route("/runbooks", get(runbooks))
        .route("/runbooks/{name}/runs", axum::routing::post(run_now))
        .route("/runs/{id}/cancel", axum::routing::post(cancel_run))
        .route("/runs/{id}/approval", axum::routing::post(decide_run))
        .route("/runs/{id}/rerun", axum::routing::post(rerun_run))
        .route("/plan", get(plan_form).post(plan))
        .route(
            "/assets/ui.css",
            get(|| async { asset("text/css", include_str!("ui/ui.css")) }),
        )
        .route(
            "/assets/incident.js",
            get(|| async { asset("text/javascript", include_str!("ui/incident.js")) }),
        )
        .route(
            "/assets/time.js",
            get(|| async { asset("text/javascript", include_str!("ui/time.js")) }),
        )
        .route("/unmatched", get(unmatched))
        .route("/slos", get(slos))
        .route("/slos/{service}/{slo}", get(slo))
        .route("/capacity", get(capacity))
}

/// A static file of the UI (no inline style or script: the CSP forbids them).
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Renders a page: the body template inside the layout.
fn page(s: &AppState, title: &str, template: &str, data: &Value) -> Result<Response, ApiError> {
    let render = |name: &str, data: &Value| {
        UI.render(name, data).map_err(|e| {
            tracing::error!(template = name, error = %e, "UI template failed");
            ApiError::Unavailable
        })
    };
    let mut data = data.clone();
    data["csrf"] = json!(&*s.csrf);
    // Write forms only for someone who may act (a viewer sees none).
    data["can_act"] = json!(super::auth::current_may_act());
    let body = render(template, &data)?;
    let html = render(
        "layout",
        &json!({"title": title, "shadow": s.shadow, "body": body, "refresh": data["refresh"]}),
    )?;
    Ok(Html(html).into_response())
}

fn human_secs(secs: i64) -> String {
    humantime::format_duration(Duration::from_secs(u64::try_from(secs).unwrap_or(0))).to_string()
}

fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        humantime::format_duration(Duration::from_millis(ms - ms % 100)).to_string()
    }
}

fn mttr(v: Option<f64>) -> String {
    // Whole seconds; `from_secs_f64` saturates, so no float cast is needed.
    v.map_or_else(
        || "—".to_owned(),
        |s| {
            humantime::format_duration(Duration::from_secs(
                Duration::from_secs_f64(s.max(0.0)).as_secs(),
            ))
            .to_string()
        },
    )
}

fn table_rows(list: &[crate::incident::IncidentSummary]) -> Vec<Value> {
    list.iter()
        .map(|i| {
            let mut v = serde_json::to_value(i).unwrap_or_default();
            v["age"] = json!(human_secs(i.duration_seconds));
            v
        })
        .collect()
}

async fn overview(State(s): State<AppState>) -> Result<Response, ApiError> {
    let (open, _) = s
        .store
        .incidents(IncidentFilter {
            limit: Some(PAGE),
            ..IncidentFilter::default()
        })
        .await?;
    let open: Vec<_> = open
        .into_iter()
        .filter(|i| i.status != IncidentStatus::Resolved && !i.drill)
        .collect();
    // What needs me, first: a decision, then nobody's yet, then the rest.
    let decide: Vec<_> = open
        .iter()
        .filter(|i| i.awaiting_approval > 0)
        .cloned()
        .collect();
    let unacked: Vec<_> = open
        .iter()
        .filter(|i| i.awaiting_approval == 0 && i.acknowledged_by.is_none())
        .cloned()
        .collect();
    let acked: Vec<_> = open
        .iter()
        .filter(|i| i.awaiting_approval == 0 && i.acknowledged_by.is_some())
        .cloned()
        .collect();
    let s7 = s.store.stats(Duration::from_secs(7 * 86400)).await?;
    let s30 = s.store.stats(Duration::from_secs(30 * 86400)).await?;
    page(
        &s,
        "Overview",
        "overview",
        &json!({"refresh": 30, "decide": table_rows(&decide), "unacked": table_rows(&unacked), "acked": table_rows(&acked), "mttr7": mttr(s7.mttr_seconds), "mttr30": mttr(s30.mttr_seconds), "mttr7_notified": mttr(s7.mttr_notified_seconds), "mttr30_notified": mttr(s30.mttr_notified_seconds), "stats30": s30, "runs30": s30.runs_by_state, "sandbox": s.dispatcher.executor.sandbox.report()}),
    )
}

#[derive(Default, serde::Deserialize)]
struct ListQuery {
    status: Option<String>,
    severity: Option<String>,
    /// `true`: SLO-affecting incidents only; `false`: the others.
    slo_affecting: Option<String>,
    page: Option<u32>,
}

async fn incidents(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q: ListQuery = serde_urlencoded::from_str(q.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("bad query string: {e}")))?;
    let status = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(str::parse::<crate::incident::StatusFilter>)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let severity = q
        .severity
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(str::parse::<crate::runbook::Severity>)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let slo_affecting = match q.slo_affecting.as_deref() {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "bad slo_affecting `{other}`: true or false"
            )))
        }
    };
    let pageno = q.page.unwrap_or(0);
    let (list, total) = s
        .store
        .incidents(IncidentFilter {
            status,
            severity,
            runbook: None,
            limit: Some(PAGE),
            offset: Some(pageno * PAGE),
            slo_affecting,
        })
        .await?;
    let link = |p: u32| {
        let mut qs = vec![format!("page={p}")];
        if let Some(st) = status {
            qs.push(format!("status={st}"));
        }
        if let Some(sv) = &severity {
            qs.push(format!(
                "severity={}",
                serde_urlencoded::to_string([("", sv)])
                    .unwrap_or_default()
                    .trim_start_matches('=')
            ));
        }
        if let Some(v) = slo_affecting {
            qs.push(format!("slo_affecting={v}"));
        }
        format!("/incidents?{}", qs.join("&"))
    };
    let more = i64::from((pageno + 1) * PAGE) < total;
    page(
        &s,
        "Incidents",
        "incidents",
        &json!({
            "refresh": 30, "incidents": table_rows(&list), "total": total, "statuses": STATUSES, "severities": SEVERITIES,
            "filter_status": status.map(crate::incident::StatusFilter::as_str), "filter_severity": severity,
            "filter_slo": slo_affecting.map(|v| v.to_string()),
            "prev": (pageno > 0).then(|| link(pageno - 1)), "next": more.then(|| link(pageno + 1)),
        }),
    )
}

fn parse_id(raw: &str) -> Result<IncidentId, ApiError> {
    raw.parse().map_err(ApiError::BadRequest)
}

/// The page's view of one step record of a run.
/// One step as the incident page shows it: planned (shadow mode), open
/// (a manual step reached), or what happened, attempt by attempt.
fn step_view(plan: &crate::plan::StepPlan, record: Option<&crate::record::StepRecord>) -> Value {
    let outcome = record.and_then(|r| r.outcome.as_ref());
    let status = match (record, outcome) {
        (None, _) => "planned",
        (Some(_), None) => "open",
        (Some(_), Some(o)) => o.status(),
    };
    let attempts: Vec<Value> = record
        .map(|r| r.attempts.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let omitted = |t: &str| t.contains("bytes of output omitted");
            json!({
                "attempt": a.attempt, "status": a.outcome.status(), "duration": human_ms(a.duration_ms),
                "stdout": a.stdout, "stderr": a.stderr, "stdout_bytes": a.stdout_bytes, "stderr_bytes": a.stderr_bytes,
                "truncated": omitted(&a.stdout) || omitted(&a.stderr),
                "sandbox": a.sandbox.applied.join(", "),
            })
        })
        .collect();
    json!({
        "name": plan.name, "kind": plan.kind().as_str(),
        "on_failure": record.is_some_and(|r| r.phase == crate::record::StepPhase::OnFailure),
        "status": status, "failure": outcome.is_some_and(crate::record::StepOutcome::is_failure),
        "duration": record.map(|r| human_ms(r.duration_ms)).unwrap_or_default(),
        "detail": record.and_then(|r| r.approval.as_ref()).filter(|a| a.granted()).map(crate::approval::Approval::sentence)
            .or_else(|| outcome.and_then(crate::record::StepOutcome::detail)).unwrap_or_default(),
        "command": plan.command_line(), "text": plan.text, "attempts": attempts,
    })
}

async fn incident(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let d = s.store.incident(parse_id(&id)?).await?;
    let s30 = s.store.stats(Duration::from_secs(30 * 86400)).await?;
    let watching = d.runs.iter().any(|r| r.state.is_active());
    let last_run = d.runs.last().map(|r| r.id);
    let runs: Vec<Value> = d
        .runs
        .iter()
        .map(|r| {
            let steps: Vec<Value> = r
                .result
                .iter()
                .flat_map(crate::incident::RunDetail::steps)
                .map(|(plan, record)| step_view(plan, record))
                .collect();
            let live = live_text(&r.live_output);
            // Open what needs attention and the latest run; earlier
            // successful runs stay folded.
            let open = Some(r.id) == last_run
                || !r.state.is_quiet();
            json!({"id": r.id, "runbook": r.runbook, "state": r.state, "phase": r.phase, "fingerprint": r.fingerprint, "reason": r.reason, "steps": steps, "active": r.state.is_active(),
                   "rerun_of": r.rerun_of, "may_rerun": d.summary.status != crate::incident::IncidentStatus::Resolved,
                   "live": live.0, "live_step": live.1, "open": open, "step_count": steps.len(),
                   "aborted": match &r.result { Some(crate::incident::RunDetail::Executed(x)) => x.aborted.clone(), _ => None }})
        })
        .collect();
    // The first screen: what is happening, what ran, what failed, what now.
    let firing: Vec<Value> = d
        .alerts
        .iter()
        .filter(|a| a.status == crate::alert::Status::Firing)
        .map(|a| {
            let subject = crate::incident::SUBJECT_LABELS
                .iter()
                .find_map(|k| a.labels.get(*k).map(|v| format!("{k}={v}")));
            json!({"name": a.labels.get("alertname"), "subject": subject, "summary": a.annotations.get("summary")})
        })
        .collect();
    let failed: Vec<Value> = runs
        .iter()
        .flat_map(|r| {
            r["steps"]
                .as_array()
                .into_iter()
                .flatten()
                // The one rule of what a failed step is.
                .filter(|st| st["failure"] == true)
                .map(|st| json!({"run": r["id"], "runbook": r["runbook"], "step": st["name"], "status": st["status"], "detail": st["detail"]}))
                .collect::<Vec<_>>()
        })
        .collect();
    // The live stream continues after what this page already shows.
    let live_after = d
        .runs
        .iter()
        .flat_map(|r| r.live_output.iter().map(|c| c.cursor))
        .max()
        .unwrap_or(0);
    let (budget, spent) = super::slos::incident_budget(&s, &d).await;
    let slo_affecting = d.summary.slo_affecting || spent;
    let slo_budget: Vec<Value> = budget
        .iter()
        .map(|c| {
            let mut v = serde_json::to_value(c).unwrap_or_default();
            v["minutes_text"] = json!(c.minutes.map(|m| format!("{m:.1} min")));
            v["percent_text"] = json!(pct(c.share));
            v
        })
        .collect();
    let title = format!("{} {}", d.summary.id, d.summary.title);
    let mut i = serde_json::to_value(&d).unwrap_or_default();
    for a in i["alerts"].as_array_mut().into_iter().flatten() {
        let link = a["generator_url"]
            .as_str()
            .and_then(crate::postmortem::http_link)
            .map(str::to_owned);
        a["generator_link"] = json!(link);
    }
    page(
        &s,
        &title,
        "incident",
        &json!({
            "i": i, "runs": runs, "checklist": d.checklist, "statuses": STATUSES, "watching": watching, "live_after": live_after,
            "firing": firing, "failed": failed, "many_alerts": d.alerts.len() > 3,
            "slo_budget": slo_budget, "slo_affecting": slo_affecting,
            "duration": human_secs(d.summary.duration_seconds), "mttr30": mttr(s30.mttr_seconds),
            "recovered": d.summary.recovered_seconds.map(human_secs),
            "users": !s.auth().users.is_empty(),
            "operators": s.auth().users.iter().filter(|u| u.role == crate::config::Role::Operator).map(|u| u.name.clone()).collect::<Vec<_>>(),
            "open_items": d.checklist.iter().filter(|c| c.is_open()).count(),
            "pending": d.approvals.iter().filter(|a| a.state == crate::approval::ApprovalState::Pending).collect::<Vec<_>>(),
        }),
    )
}

/// The forms of the UI: each carries the page's `csrf` token.
macro_rules! form_token {
    ($($form:ident),+) => {
        $(impl super::FormToken for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        })+
    };
}

form_token!(
    RunForm,
    DecisionForm,
    AckForm,
    UpdateForm,
    PlanForm,
    TickForm,
    CommanderForm
);

#[derive(serde::Deserialize)]
struct RunForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    author: String,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    annotations: String,
    #[serde(default)]
    mode: String,
}

/// `NAME=VALUE` lines (blank lines skipped).
fn pairs(text: &str, what: &str) -> Result<crate::alert::Labels, ApiError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("bad {what} line `{l}`: write NAME=VALUE"))
                })
        })
        .collect()
}

/// The runbook page's *Run now* form: the plan, or a manual run.
async fn run_now(
    State(s): State<AppState>,
    ident: Option<axum::Extension<super::Identity>>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let f: RunForm = super::form(&s, body, s.body_limit).await?;
    let labels = pairs(&f.labels, "label")?;
    let annotations = pairs(&f.annotations, "annotation")?;
    super::runs::check_labels(&labels, "label")?;
    super::runs::check_labels(&annotations, "annotation")?;
    if f.mode == "plan" {
        let set = s.runbook_set();
        let rb = set
            .get(&name)
            .ok_or_else(|| ApiError::NotFound(format!("runbook `{name}`")))?;
        super::runs::check_inputs(rb, &labels)?;
        let (n, body) =
            super::runs::manual_notification(&name, labels, &annotations, &s.external_url)?;
        let data = json!({
            "payload": String::from_utf8_lossy(&body),
            "plan": Plan::manual(&n, rb, PLAN_INCIDENT_ID),
        });
        return page(&s, "Plan", "plan", &data);
    }
    let actor = super::operator(ident.as_ref())?;
    let author = super::notifications::who(&actor, &f.author)?;
    let started = super::runs::start(
        &s,
        &name,
        labels,
        annotations,
        &author,
        format!("started a manual run of `{name}`"),
    )
    .await?;
    let incident = started["incident"].as_str().unwrap_or_default().to_owned();
    Ok(Redirect::to(&format!("/incidents/{incident}")).into_response())
}

/// A run's *Cancel this run* button.
async fn cancel_run(
    State(s): State<AppState>,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let (id, author) = run_form(&s, &actor, &id, body).await?;
    let incident = s.store.run_origin(id).await?.map(|o| o.0);
    super::cancel_run(&s, id, author).await?;
    Ok(back_to(incident, id))
}

#[derive(serde::Deserialize)]
struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    author: String,
    decision: crate::approval::Decision,
    /// The approval whose prompt the page showed.
    approval: i64,
    #[serde(default)]
    comment: String,
}

/// A pending approval's *Approve* and *Deny* buttons.
async fn decide_run(
    State(s): State<AppState>,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let id = super::run_id(&id)?;
    let f: DecisionForm = super::form(&s, body, 16 << 10).await?;
    let author = super::notifications::who(&actor, &f.author)?;
    let incident = s.store.run_origin(id).await?.map(|o| o.0);
    super::approvals::decide(&s, id, f.approval, f.decision, author, Some(f.comment)).await?;
    Ok(back_to(incident, id))
}

/// An ended run's *Run again* button.
async fn rerun_run(
    State(s): State<AppState>,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let (id, author) = run_form(&s, &actor, &id, body).await?;
    let started = super::runs::rerun_as(&s, id, author).await?;
    let incident = started["incident"].as_str().unwrap_or_default().to_owned();
    Ok(Redirect::to(&format!("/incidents/{incident}")).into_response())
}

/// The run id and author of a run button's form (its token checked).
async fn run_form(
    s: &AppState,
    actor: &super::Actor,
    id: &str,
    body: Body,
) -> Result<(i64, String), ApiError> {
    let id = super::run_id(id)?;
    let f: AckForm = super::form(s, body, 16 << 10).await?;
    let author = super::notifications::who(actor, &f.author)?;
    Ok((id, author))
}

fn back_to(incident: Option<IncidentId>, run: i64) -> Response {
    match incident {
        Some(i) => Redirect::to(&format!("/incidents/{i}#run-{run}")).into_response(),
        None => Redirect::to("/incidents").into_response(),
    }
}

#[derive(serde::Deserialize)]
struct AckForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    author: String,
}

#[derive(serde::Deserialize)]
struct TickForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    author: String,
    run_id: i64,
    step: String,
    /// `true` ticks, `false` reopens.
    done: bool,
}

/// A checklist item's Done / Reopen button.
async fn tick(
    State(s): State<AppState>,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let id = parse_id(&id)?;
    let f: TickForm = super::form(&s, body, 16 << 10).await?;
    let author = super::notifications::who(&actor, &f.author)?;
    let t = super::people::TickRequest {
        run_id: Some(f.run_id),
        step: f.step,
        done: f.done,
        author: String::new(),
    };
    super::people::tick_as(&s, id, t, author).await?;
    Ok(Redirect::to(&format!("/incidents/{id}#now")).into_response())
}

#[derive(serde::Deserialize)]
struct CommanderForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    author: String,
    name: String,
}

/// The incident page's hand-over form.
async fn hand_over(
    State(s): State<AppState>,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let id = parse_id(&id)?;
    let f: CommanderForm = super::form(&s, body, 16 << 10).await?;
    let author = super::notifications::who(&actor, &f.author)?;
    super::people::hand_over_as(&s, id, &f.name, author).await?;
    Ok(Redirect::to(&format!("/incidents/{id}")).into_response())
}

/// The incident page's Acknowledge button.
async fn acknowledge(
    State(s): State<AppState>,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let id = parse_id(&id)?;
    let f: AckForm = super::form(&s, body, 16 << 10).await?;
    let author = super::notifications::who(&actor, &f.author)?;
    s.store.acknowledge(id, author).await?;
    Ok(Redirect::to(&format!("/incidents/{id}")).into_response())
}

#[derive(serde::Deserialize)]
struct UpdateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    author: String,
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    root_cause: String,
}

async fn add_update(
    State(s): State<AppState>,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let id = parse_id(&id)?;
    let f: UpdateForm = super::form(&s, body, 256 << 10).await?;
    let update = Update {
        author: actor.author(&f.author),
        message: f.message,
        status: (!f.status.is_empty())
            .then(|| f.status.parse())
            .transpose()
            .map_err(ApiError::BadRequest)?,
        root_cause: (!f.root_cause.trim().is_empty()).then_some(f.root_cause),
    };
    update.check().map_err(ApiError::BadRequest)?;
    s.store.add_update(id, update).await?;
    Ok(Redirect::to(&format!("/incidents/{id}")).into_response())
}

/// A run's live output as the page shows it: a `── step ──` line wherever
/// the step changes (the same as `incident.js` adds), and the last step.
fn live_text(chunks: &[crate::incident::OutputChunk]) -> (String, String) {
    let mut text = String::new();
    let mut step = String::new();
    for c in chunks {
        if c.step != step {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("── ");
            text.push_str(&c.step);
            text.push_str(" ──\n");
            step.clone_from(&c.step);
        }
        text.push_str(&c.text);
    }
    (text, step)
}

/// Where a live stream starts: after `?after=N` (what the page shows) or the
/// browser's `Last-Event-ID` (what it received before reconnecting).
#[derive(serde::Deserialize, Default)]
struct LiveQuery {
    #[serde(default)]
    after: i64,
}

/// Live output of the incident's running steps, as server-sent events:
/// `output` events `{run, step, stream, text}`, then `done` when nothing is
/// queued or running any more.
async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q: LiveQuery = super::incidents::query(q)?;
    let id = parse_id(&id)?;
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let start = resumed.max(q.after).max(0);
    let store = s.store.clone();
    let stream = futures_util::stream::unfold(
        (store, start, false),
        move |(store, cursor, finished)| async move {
            if finished {
                return None;
            }
            loop {
                let (chunks, active) = store.live(id, cursor).await.ok()?;
                if let Some(last) = chunks.last() {
                    let next = last.cursor;
                    let events: Vec<Result<Event, Infallible>> =
                    chunks.iter().map(|c| Ok(Event::default().event("output").id(c.cursor.to_string()).data(json!({"run": c.run, "step": c.step, "stream": c.stream, "text": c.text}).to_string()))).collect();
                    return Some((futures_util::stream::iter(events), (store, next, false)));
                }
                if !active {
                    return Some((
                        futures_util::stream::iter(vec![Ok(Event::default()
                            .event("done")
                            .data("{}"))]),
                        (store, cursor, true),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    );
    Ok(Sse::new(futures_util::StreamExt::flatten(stream))
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn unmatched(State(s): State<AppState>) -> Result<Response, ApiError> {
    let alerts = s.store.unmatched(200).await?;
    page(
        &s,
        "Unmatched alerts",
        "unmatched",
        &json!({"refresh": 60, "alerts": alerts}),
    )
}

/// A UI page for a UI error (a person's browser gets HTML, not JSON).
/// The sign-in page: a user's name and password (or token) with
/// `auth.users`, the operator credential without; `error` after a refusal.
pub(super) fn login_page(
    s: &AppState,
    status: StatusCode,
    error: Option<&str>,
    next: &str,
) -> Response {
    let mut resp = page(
        s,
        "Sign in",
        "login",
        &json!({"error": error, "next": next, "users": !s.auth().users.is_empty()}),
    )
    .unwrap_or_else(IntoResponse::into_response);
    *resp.status_mut() = status;
    resp
}

pub(super) fn html_error(s: &AppState, status: StatusCode, message: &str) -> Response {
    let mut resp = page(
        s,
        status.canonical_reason().unwrap_or("Error"),
        "not_found",
        &json!({"status": status.as_u16(), "message": message}),
    )
    .unwrap_or_else(IntoResponse::into_response);
    *resp.status_mut() = status;
    resp
}

async fn runbooks(State(s): State<AppState>) -> Result<Response, ApiError> {
    let set = s.runbook_set();
    let mut list = Vec::new();
    for rb in set.iter() {
        let recent = s.store.recent_runs(rb.name.clone(), 10).await?;
        let mut v = super::incidents::runbook_json(rb);
        v["timeout"] = json!(humantime::format_duration(rb.timeout).to_string());
        v["cooldown"] = json!(humantime::format_duration(rb.cooldown).to_string());
        v["recent"] = recent
            .iter()
            .map(|(id, inc, state)| json!({"id": id, "incident": inc.to_string(), "state": state}))
            .collect();
        list.push(v);
    }
    page(
        &s,
        "Runbooks",
        "runbooks",
        &json!({"runbooks": list, "users": !s.auth().users.is_empty()}),
    )
}

async fn plan_form(State(s): State<AppState>) -> Result<Response, ApiError> {
    page(&s, "Plan", "plan", &json!({}))
}

#[derive(serde::Deserialize)]
struct PlanForm {
    #[serde(default)]
    csrf: String,
    payload: String,
}

async fn plan(State(s): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let f: PlanForm = super::form(&s, body, s.body_limit * 3).await?;
    let set = s.runbook_set();
    let data = match Notification::from_json(f.payload.as_bytes()) {
        Ok(n) => json!({"payload": f.payload, "plan": Plan::build(&n, &set, PLAN_INCIDENT_ID)}),
        Err(e) => {
            json!({"payload": f.payload, "error": format!("invalid Alertmanager payload: {e}")})
        }
    };
    let mut resp = page(&s, "Plan", "plan", &data)?;
    if data.get("error").is_some() {
        *resp.status_mut() = StatusCode::BAD_REQUEST;
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

fn pct(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or_else(|| "–".into(), |v| format!("{:.3}%", v * 100.0))
}

/// A status's numbers as people read them.
fn slo_row(st: &crate::slo::status::Status) -> Value {
    let mut v = serde_json::to_value(st).unwrap_or_default();
    v["sli_pct"] = json!(pct(st.sli));
    v["remaining_pct"] = json!(pct(st.remaining));
    v["remaining_min"] = json!(st
        .remaining_minutes
        .map_or(String::new(), |m| format!("{m:.1} min")));
    v["burn_1h"] = json!(st
        .tiers
        .first()
        .and_then(|t| t.long.burn_rate)
        .map_or("–".into(), |b| format!("{b:.2}×")));
    v["exhausted_in"] = json!(st
        .exhaustion_seconds
        .map_or(String::new(), crate::slo::refresh::human));
    v
}

async fn slos(State(s): State<AppState>) -> Result<Response, ApiError> {
    let snap = s
        .slo_status
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let rows: Vec<Value> = super::slos::statuses(&s).iter().map(slo_row).collect();
    page(
        &s,
        "SLOs",
        "slos",
        &json!({
            "slos": rows,
            "prometheus": s.prometheus.as_ref().map(|p| p.url.to_string()),
            "refreshed_at": snap.at,
            "took_ms": snap.took_ms,
        }),
    )
}

/// The budget burn-down as an SVG polyline in a 640×180 box.
#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
fn chart(points: &[(f64, f64)]) -> Option<Value> {
    let (t0, t1) = (points.first()?.0, points.last()?.0);
    let top = points.iter().map(|p| p.1).fold(1.0_f64, f64::max);
    let bottom = points.iter().map(|p| p.1).fold(0.0_f64, f64::min);
    let span = (top - bottom).max(1e-9);
    let y = |v: f64| 10.0 + (top - v) / span * 150.0;
    let x = |t: f64| {
        40.0 + if t1 > t0 {
            (t - t0) / (t1 - t0) * 590.0
        } else {
            0.0
        }
    };
    let day = |t: f64| {
        chrono::DateTime::from_timestamp(t as i64, 0)
            .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    Some(json!({
        "points": points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect::<Vec<_>>().join(" "),
        "zero": format!("{:.1}", y(0.0)),
        "top": format!("{:.0}%", top * 100.0),
        "bottom": format!("{:.0}%", bottom * 100.0),
        "from": day(t0),
        "to": day(t1),
    }))
}

/// A forecast's usage history, its fitted line projected to the capacity
/// (or the horizon), the capacity and now, in a 640×180 box.
#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
fn capacity_chart(
    p: &crate::capacity::Projection,
    f: &crate::slo::forecast::Forecast,
) -> Option<Value> {
    let t0 = p.history.first()?.0;
    let now = p.checked_at.timestamp() as f64;
    let horizon = now + f.horizon.as_secs_f64();
    // Without a line there is nothing to draw ahead of now.
    let end = if p.fit_from.is_none() {
        now
    } else {
        p.full_at
            .map_or(horizon, |d| (d.timestamp() as f64).max(now))
            .min(horizon)
            .max(now + (now - t0) / 4.0)
    };
    let line = |t: f64| -> Option<f64> {
        Some(p.fit_start? + p.growth_per_day? / 86_400.0 * (t - p.fit_from?))
    };
    let capacity = p.capacity.filter(|c| c.is_finite());
    let mut values: Vec<f64> = p.history.iter().map(|x| x.1).collect();
    values.extend(capacity);
    values.extend(line(end));
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    let top = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let bottom = values
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .min(0.0);
    let span = (top - bottom).max(1e-9);
    let y = |v: f64| 10.0 + (top - v.clamp(bottom, top)) / span * 150.0;
    let x = |t: f64| 40.0 + (t - t0) / (end - t0).max(1.0) * 590.0;
    let day = |t: f64| {
        chrono::DateTime::from_timestamp(t as i64, 0)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    };
    let fit = p.fit_from.and_then(|from| {
        Some(format!(
            "{:.1},{:.1} {:.1},{:.1}",
            x(from),
            y(line(from)?),
            x(end),
            y(line(end)?)
        ))
    });
    Some(json!({
        "points": p.history.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect::<Vec<_>>().join(" "),
        "fit": fit,
        "cap_y": capacity.map(|c| format!("{:.1}", y(c))),
        "cap": capacity.map(crate::capacity::human),
        "bottom": crate::capacity::human(bottom),
        "now_x": format!("{:.1}", x(now)),
        "from": day(t0),
        "to": day(end),
    }))
}

/// `/capacity`: every forecast's series, soonest full first, each drawn.
async fn capacity(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Q {
        service: Option<String>,
    }
    let only: Q = super::incidents::query(raw)?;
    let (at, took_ms) = {
        let snap = s
            .forecasts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (snap.at, snap.took_ms)
    };
    let set = s
        .slos
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let rows: Vec<Value> = super::forecasts::all(&s, only.service.as_deref())
        .iter()
        .map(|p| {
            let def = set.forecast(&p.service, &p.forecast);
            let mut v = serde_json::to_value(p).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("history");
            }
            let date = |d: Option<chrono::DateTime<chrono::Utc>>| {
                d.map(|d| d.format("%Y-%m-%d").to_string())
            };
            v["series"] = json!(p.series());
            v["verdict_text"] = json!(p.verdict.as_str().replace('_', " "));
            v["full_on"] = json!(date(p.full_at).unwrap_or_else(|| "–".into()));
            v["band"] = json!(match (date(p.earliest), date(p.latest)) {
                (Some(a), Some(b)) if a != b => format!("between {a} and {b}"),
                (Some(a), None) => format!("from {a}"),
                _ => String::new(),
            });
            v["days_left_text"] = json!(p.days_left.map_or("–".into(), |d| format!("{d:.1}")));
            v["used_text"] = json!(p.used.map_or(String::new(), |u| format!(
                "{:.1}% used of {}",
                u * 100.0,
                p.capacity.map(crate::capacity::human).unwrap_or_default()
            )));
            v["growth"] = json!(p.growth_per_day.map_or("–".into(), |g| format!(
                "{}{}",
                if g > 0.0 { "+" } else { "" },
                crate::capacity::human(g)
            )));
            v["r2_text"] = json!(p.r2.map_or("–".into(), |r| format!("R² {r:.2}")));
            v["confidence"] = json!(p.confidence.map_or(String::new(), |c| format!(
                "{} confidence",
                match c {
                    crate::capacity::Confidence::High => "high",
                    crate::capacity::Confidence::Medium => "medium",
                    crate::capacity::Confidence::Low => "low",
                }
            )));
            if let Some(def) = def {
                v["chart"] = json!(capacity_chart(p, def));
                v["def"] = super::forecasts::definition(def);
            }
            v
        })
        .collect();
    page(
        &s,
        "Capacity",
        "capacity",
        &json!({
            "rows": rows,
            "service": only.service,
            "prometheus": s.prometheus.as_ref().map(|p| p.url.to_string()),
            "refreshed_at": at,
            "took_ms": took_ms,
        }),
    )
}

async fn slo(
    State(s): State<AppState>,
    Path((service, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let one = super::slos::one(&s, &service, &name).await?;
    let set = s
        .slos
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let (chart_data, chart_error) = match (set.get(&service, &name), &s.prometheus) {
        (Some(slo), Some(prom)) => {
            // The one figure an SLO page asks Prometheus for itself: 3 s at most.
            let drawn = tokio::time::timeout(
                Duration::from_secs(3),
                crate::slo::status::burn_down(prom, slo, chrono::Utc::now()),
            )
            .await
            .unwrap_or_else(|_| Err("Prometheus did not answer within 3s".into()));
            match drawn {
                Ok(points) if points.is_empty() => {
                    (None, "No events in the period yet.".to_owned())
                }
                Ok(points) => (chart(&points), String::new()),
                Err(e) => (None, format!("cannot draw the budget: {e}")),
            }
        }
        _ => (None, "No `prometheus:` in the config.".to_owned()),
    };
    let st = &one.status;
    let row = slo_row(st);
    let mut tiers = Vec::new();
    for t in &st.tiers {
        let mut tv = serde_json::to_value(t).unwrap_or_default();
        let b = |x: Option<f64>| x.map_or("–".into(), |b| format!("{b:.2}×"));
        tv["short_burn"] = json!(b(t.short.burn_rate));
        tv["long_burn"] = json!(b(t.long.burn_rate));
        tiers.push(tv);
    }
    let mut st_json = serde_json::to_value(st).unwrap_or_default();
    st_json["tiers"] = json!(tiers);
    // The service's gate and its timeline (freezes, overrides, required
    // postmortems); the page shows without the timeline if the store
    // cannot say.
    let gate = super::gates::gate_of(&s, &service).ok();
    let timeline = s
        .store
        .service_timeline(service.clone(), 10)
        .await
        .unwrap_or_default();
    page(
        &s,
        &format!("SLO {service}/{name}"),
        "slo",
        &json!({
            "d": one.definition,
            "st": st_json,
            "sli_pct": row["sli_pct"],
            "remaining_pct": row["remaining_pct"],
            "remaining_min": row["remaining_min"],
            "exhausted_in": row["exhausted_in"],
            "budget_min": format!("{:.1} min", st.budget_minutes),
            "events": st.events.map_or(String::new(), |e| format!("{e:.0} events")),
            "latency_q": st.latency.as_ref().map(|l| format!("{}", l.quantile * 100.0)),
            "latency_value": st.latency.as_ref().and_then(|l| l.value).map_or("–".into(), |v| format!("{v:.3}")),
            "chart": chart_data,
            "chart_error": chart_error,
            "incidents": table_rows(&one.incidents),
            "gate": gate,
            "timeline": timeline,
            "forecasts": super::forecasts::all(&s, Some(&service)).iter().map(|p| json!({
                "name": p.forecast,
                "series": p.series(),
                "verdict": p.verdict.as_str(),
                "verdict_text": p.verdict.as_str().replace('_', " "),
                "days_left": p.days_left.map(|d| format!("{d:.1}")),
            })).collect::<Vec<_>>(),
        }),
    )
}
