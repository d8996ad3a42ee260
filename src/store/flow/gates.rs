//! Operators' overrides of frozen services' gates, kept as history: a new
//! override replaces the one in force (ended by its author), and ending one
//! early records who did.

use chrono::{DateTime, Utc};

use super::{Driver, Op};
use crate::store::types::{text, GateOverride};

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
    Ok(o)
}

/// Ends the override of `service` in force at `at`: whether there was one.
pub(in crate::store) async fn end_override<D: Driver>(
    d: &D,
    service: &str,
    by: &str,
    at: DateTime<Utc>,
) -> Op<bool, D::Fail> {
    Ok(d.overrides_end(service, &text(by), at).await? > 0)
}

/// The overrides in force at `at`.
pub(in crate::store) async fn open<D: Driver>(
    d: &D,
    at: DateTime<Utc>,
) -> Op<Vec<GateOverride>, D::Fail> {
    d.overrides_open(at).await
}
