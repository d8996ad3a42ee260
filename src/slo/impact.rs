//! What an incident cost: the error budget its services' SLOs spent from
//! the incident's opening to its resolution (or now), read from Prometheus.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

use super::promql::duration;
use super::{Sli, Slo, SloSet};
use crate::prometheus::Prometheus;

/// One SLO's budget spent during an incident.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Consumed {
    pub service: String,
    pub slo: String,
    /// Bad events during the incident (events SLIs).
    pub errors: Option<f64>,
    /// The share of the period's budget spent.
    pub share: Option<f64>,
    /// The same, in minutes of full outage.
    pub minutes: Option<f64>,
    /// The queries that gave the numbers, evaluated at `at`.
    pub queries: Vec<String>,
    pub at: DateTime<Utc>,
    /// Why the numbers are missing.
    pub error: Option<String>,
}

/// The SLOs of `services`.
pub fn of_services<'a>(set: &'a SloSet, services: &'a [String]) -> impl Iterator<Item = &'a Slo> {
    set.iter()
        .filter(|s| services.iter().any(|x| x == &s.service))
}

/// The budget each SLO of `services` spent in `[from, to]`.
pub async fn consumed(
    prom: &Prometheus,
    set: &SloSet,
    services: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Consumed> {
    let mut out = Vec::new();
    for slo in of_services(set, services) {
        out.push(one(prom, slo, from, to).await);
    }
    out
}

#[allow(clippy::cast_precision_loss)]
async fn one(prom: &Prometheus, slo: &Slo, from: DateTime<Utc>, to: DateTime<Utc>) -> Consumed {
    // At least 5 minutes: a rate needs two samples of the series.
    let secs = u64::try_from((to - from).num_seconds())
        .unwrap_or(0)
        .max(300);
    let during = Duration::from_secs(secs);
    let period = slo.period.length();
    let at = Some(to.timestamp_millis() as f64 / 1000.0);
    let budget = slo.budget_ratio();
    let mut c = Consumed {
        service: slo.service.clone(),
        slo: slo.name.clone(),
        errors: None,
        share: None,
        minutes: None,
        queries: Vec::new(),
        at: to,
        error: None,
    };
    let result: Result<(), String> = async {
        match &slo.sli {
            Sli::Events { errors, total } => {
                let bad = format!("sum({}) * {secs}", errors.at(during)?);
                let all = format!(
                    "sum_over_time((sum({}))[{}:1h]) * 3600",
                    total.at(Duration::from_secs(3600))?,
                    duration(period)
                );
                c.queries = vec![bad.clone(), all.clone()];
                let (bad, all) = futures_util::join!(prom.value(&bad, at), prom.value(&all, at));
                let (bad, all) = (bad?.unwrap_or(0.0), all?);
                c.errors = Some(bad);
                if let Some(all) = all.filter(|a| *a > 0.0) {
                    c.share = Some(bad / (budget * all));
                }
            }
            Sli::Ratio { error_ratio } => {
                let q = format!("avg({})", error_ratio.at(during)?);
                c.queries = vec![q.clone()];
                if let Some(r) = prom.value(&q, at).await? {
                    c.share = Some(r * during.as_secs_f64() / (budget * period.as_secs_f64()));
                }
            }
        }
        c.minutes = c.share.map(|s| s * slo.budget_minutes());
        Ok(())
    }
    .await;
    if let Err(e) = result {
        c.error = Some(e);
    }
    c
}
