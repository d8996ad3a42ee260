//! A service's error-budget gate, as the store keeps it: the freeze its
//! policies decided (each change written once, on the service's timeline
//! and as a notification), and operators' overrides, kept as history (a
//! new override replaces the one in force, ending one early records who).

use chrono::{DateTime, Utc};

use super::{Driver, Op};
use crate::incident::notices::{About, DeliveryState, Queue};
use crate::runbook::notify::Event;
use crate::store::types::{text, GateOverride, ServiceEntry};

/// A service's freeze as its policies decide it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    pub service: String,
    pub frozen: bool,
    /// Why (the gate's reasons), when frozen.
    pub reasons: String,
    /// Whom the freeze policies' `notify` actions name.
    pub notify: Vec<String>,
}

/// Records `f` if it changes the service's freeze: the state, a timeline
/// entry and a `budget_frozen`/`budget_unfrozen` notification to each of
/// `f.notify` (unfrozen: also to those told when it froze, in case a
/// reload changed its policies). The first decision about a service is
/// told only when it freezes. Whether it changed (`false` also when
/// another replica changed it first).
pub(in crate::store) async fn decide_freeze<D: Driver>(
    d: &D,
    f: &Freeze,
    at: DateTime<Utc>,
) -> Op<bool, D::Fail> {
    let service = text(&f.service);
    let was = d.budget_state(&service).await?;
    if was.as_ref().map(|w| w.0) == Some(f.frozen) {
        return Ok(false);
    }
    let mut notify = f.notify.clone();
    if !f.frozen {
        let before: Vec<String> = was
            .as_ref()
            .and_then(|w| serde_json::from_str(&w.1).ok())
            .unwrap_or_default();
        for n in before {
            if !notify.contains(&n) {
                notify.push(n);
            }
        }
    }
    let reasons = text(&f.reasons);
    let stored = crate::store::types::json(&f.notify);
    if !d
        .budget_state_put(
            &service,
            (f.frozen, &reasons, &stored),
            at,
            was.as_ref().map(|w| w.0),
        )
        .await?
    {
        return Ok(false);
    }
    if was.is_none() && !f.frozen {
        return Ok(false);
    }
    let (event, kind, message) = if f.frozen {
        (
            Event::BudgetFrozen,
            "frozen",
            format!("`{service}` frozen by its error-budget policies: {reasons}"),
        )
    } else {
        (
            Event::BudgetUnfrozen,
            "unfrozen",
            format!("`{service}` no longer frozen: none of its error-budget policies freezes it"),
        )
    };
    d.service_timeline_insert(&service, "runbookd", kind, &message, at)
        .await?;
    for n in &notify {
        let q = Queue {
            notifier: n.clone(),
            event,
            runbook: None,
            run_id: None,
            step: None,
            detail: message.clone(),
            template: None,
        };
        d.outbox_insert(
            &About::Budget(service.clone()),
            &q,
            DeliveryState::Pending,
            None,
        )
        .await?;
    }
    Ok(true)
}

/// The service's timeline, newest first.
pub(in crate::store) async fn timeline<D: Driver>(
    d: &D,
    service: &str,
    limit: u32,
) -> Op<Vec<ServiceEntry>, D::Fail> {
    d.service_timeline_of(service, limit).await
}

/// Overrides the gate of `o.service` as `o` says, replacing the override
/// in force (if any).
pub(in crate::store) async fn override_gate<D: Driver>(
    d: &D,
    o: &GateOverride,
) -> Op<GateOverride, D::Fail> {
    let o = GateOverride {
        service: text(&o.service),
        by: text(&o.by),
        reason: text(&o.reason),
        ..o.clone()
    };
    d.overrides_end(&o.service, &o.by, o.since).await?;
    d.override_insert(&o).await?;
    let message = format!(
        "gate overridden by {} until {}: {}",
        o.by,
        o.until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        o.reason
    );
    d.service_timeline_insert(&o.service, &o.by, "overridden", &message, o.since)
        .await?;
    Ok(o)
}

/// Ends the override of `service` in force at `at`: whether there was one.
pub(in crate::store) async fn end_override<D: Driver>(
    d: &D,
    service: &str,
    by: &str,
    at: DateTime<Utc>,
) -> Op<bool, D::Fail> {
    let by = text(by);
    if d.overrides_end(service, &by, at).await? == 0 {
        return Ok(false);
    }
    d.service_timeline_insert(
        service,
        &by,
        "override_ended",
        &format!("gate override ended early by {by}"),
        at,
    )
    .await?;
    Ok(true)
}

/// The overrides in force at `at`.
pub(in crate::store) async fn open<D: Driver>(
    d: &D,
    at: DateTime<Utc>,
) -> Op<Vec<GateOverride>, D::Fail> {
    d.overrides_open(at).await
}
