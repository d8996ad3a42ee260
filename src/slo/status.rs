//! An SLO's state now, from Prometheus: the SLI over the period, the
//! budget and what is left of it, burn rates per alert window, time to
//! exhaustion, a state word, and for a latency SLO on a histogram the
//! percentile beside its threshold.
//!
//! Correct whether or not the rules of [`super::rules`] are loaded: the
//! period's errors and events are read from the hourly recordings when they
//! cover the whole period, and computed from the SLI queries otherwise (the
//! first days, or a Prometheus without the rules).

use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::Serialize;

use super::promql::{duration, string};
use super::rules::Windows;
use super::{Calendar, Period, Sli, Slo};
use crate::prometheus::Prometheus;

/// The guide's dashboard words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Budget left, no alert window burning.
    Healthy,
    /// Under a quarter of the budget left, or a ticket window burning.
    Warning,
    /// The budget is spent, or a page window is burning.
    Critical,
    /// No events in the period, or Prometheus could not be asked.
    Unknown,
}

impl State {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Warning => "warning",
            State::Critical => "critical",
            State::Unknown => "unknown",
        }
    }
}

/// The severity of a burn-rate tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Page,
    Ticket,
}

/// One alert window's burn rate: how many times faster than the even pace
/// the budget is being spent.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Burn {
    pub window: String,
    pub burn_rate: Option<f64>,
}

/// One pair of windows and the factor both must exceed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct TierBurn {
    pub severity: Severity,
    pub short: Burn,
    pub long: Burn,
    pub factor: f64,
    /// Both windows over the factor: the tier's alert fires.
    pub burning: bool,
}

/// A latency SLO's percentile beside its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Latency {
    /// The objective as a quantile: 0.99.
    pub quantile: f64,
    /// That quantile over the last 5 minutes, in the histogram's unit.
    pub value: Option<f64>,
    /// The bucket bound the SLI counts as good.
    pub threshold: f64,
}

/// Where the period's numbers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The hourly recordings of `runbookd slo rules`.
    Recordings,
    /// The SLI queries themselves.
    Queries,
}

/// One SLO's status.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Status {
    pub service: String,
    pub slo: String,
    pub description: String,
    /// In percent.
    pub objective: f64,
    pub period: String,
    /// When the current period started (calendar periods), or
    /// `now - period` (rolling).
    pub period_start: DateTime<Utc>,
    /// The share of good events over the period (so far).
    pub sli: Option<f64>,
    pub error_ratio: Option<f64>,
    pub events: Option<f64>,
    pub errors: Option<f64>,
    /// The whole period's budget, in minutes of full outage.
    pub budget_minutes: f64,
    /// The share of the budget left (negative once overspent).
    pub remaining: Option<f64>,
    pub remaining_minutes: Option<f64>,
    pub tiers: Vec<TierBurn>,
    /// At the last hour's burn rate, until the budget is spent (`None`:
    /// not burning).
    pub exhaustion_seconds: Option<f64>,
    pub state: State,
    pub latency: Option<Latency>,
    pub source: Option<Source>,
    pub checked_at: DateTime<Utc>,
    /// Why the numbers are missing or old.
    pub error: Option<String>,
    /// The numbers are from an earlier check (`checked_at`): the last one
    /// failed with `error`.
    pub stale: bool,
}

/// Where the period starts at `now`.
#[must_use]
pub fn period_start(period: Period, now: DateTime<Utc>) -> DateTime<Utc> {
    match period {
        Period::Rolling(d) => now - chrono::Duration::from_std(d).unwrap_or_default(),
        Period::Calendar(Calendar::Month) => Utc
            .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single()
            .unwrap_or(now),
        Period::Calendar(Calendar::Week) => {
            let days = i64::from(now.weekday().num_days_from_monday());
            let day = now.date_naive() - chrono::Duration::days(days);
            Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
        }
    }
}

fn seconds(d: chrono::Duration) -> Duration {
    Duration::from_secs(u64::try_from(d.num_seconds()).unwrap_or(0).max(60))
}

/// A status with nothing read yet.
fn blank(slo: &Slo, now: DateTime<Utc>) -> Status {
    Status {
        service: slo.service.clone(),
        slo: slo.name.clone(),
        description: slo.description.clone(),
        objective: slo.objective,
        period: slo.period.to_string(),
        period_start: period_start(slo.period, now),
        sli: None,
        error_ratio: None,
        events: None,
        errors: None,
        budget_minutes: slo.budget_minutes(),
        remaining: None,
        remaining_minutes: None,
        tiers: Vec::new(),
        exhaustion_seconds: None,
        state: State::Unknown,
        latency: None,
        source: None,
        checked_at: now,
        error: None,
        stale: false,
    }
}

/// Reads `slo`'s status from `prom` at `now`, with queries of its own.
pub async fn read(prom: &Prometheus, slo: &Slo, now: DateTime<Utc>) -> Status {
    let mut status = blank(slo, now);
    let start = status.period_start;
    if let Err(e) = fill(prom, slo, now, start, &mut status).await {
        status.error = Some(e);
        status.state = State::Unknown;
    }
    status
}

/// `{sloth_id="…", sloth_service="…", sloth_slo="…"}`.
fn selector(slo: &Slo) -> String {
    format!(
        "{{sloth_id={}, sloth_service={}, sloth_slo={}}}",
        string(&slo.id()),
        string(&slo.service),
        string(&slo.name)
    )
}

/// What the rules' recordings say of every SLO at once, by `sloth_id`: a
/// handful of queries for any number of SLOs (one per distinct period for
/// coverage, errors and events; one per alert window), where reading each
/// SLO alone sends ten.
#[derive(Debug, Default)]
struct Recorded {
    /// Per period range (`30d`): hours recorded, errors, events.
    periods: std::collections::HashMap<String, PeriodSums>,
    /// Per alert window: the recorded error ratio.
    ratios: std::collections::BTreeMap<Duration, std::collections::HashMap<String, f64>>,
}

#[derive(Debug, Default)]
struct PeriodSums {
    hours: std::collections::HashMap<String, f64>,
    errors: std::collections::HashMap<String, f64>,
    events: std::collections::HashMap<String, f64>,
}

fn by_id(samples: Vec<crate::prometheus::Sample>) -> std::collections::HashMap<String, f64> {
    samples
        .into_iter()
        .filter(|s| !s.value.is_nan())
        .filter_map(|s| Some((s.labels.get("sloth_id")?.clone(), s.value)))
        .collect()
}

/// Reads [`Recorded`] for `slos` at `now`.
#[allow(clippy::cast_precision_loss)]
async fn recorded(
    prom: &Prometheus,
    slos: &[&Slo],
    now: DateTime<Utc>,
) -> Result<Recorded, String> {
    let at = Some(now.timestamp_millis() as f64 / 1000.0);
    let mut ranges: Vec<String> = slos
        .iter()
        .map(|slo| duration(seconds(now - period_start(slo.period, now))))
        .collect();
    ranges.sort();
    ranges.dedup();
    let mut windows: Vec<Duration> = slos
        .iter()
        .flat_map(|slo| Windows::for_period(slo.period).all())
        .collect();
    windows.sort();
    windows.dedup();
    let sums = ranges.iter().map(|range| async move {
        let q = |inner: &str| {
            format!("sum_over_time((sum by (sloth_id) ({inner}))[{range}:1h]) * 3600")
        };
        let (qh, qe, qt) = (
            format!(
                "count_over_time((sum by (sloth_id) (slo:sli_total:events_rate1h))[{range}:1h])"
            ),
            q("slo:sli_error:events_rate1h"),
            q("slo:sli_total:events_rate1h"),
        );
        Ok::<_, String>((
            range.clone(),
            PeriodSums {
                hours: by_id(prom.query(&qh, at).await?),
                errors: by_id(prom.query(&qe, at).await?),
                events: by_id(prom.query(&qt, at).await?),
            },
        ))
    });
    let ratios = windows.iter().map(|w| async move {
        let q = format!(
            "max by (sloth_id) (slo:sli_error:ratio_rate{})",
            duration(*w)
        );
        Ok::<_, String>((*w, by_id(prom.query(&q, at).await?)))
    });
    // One query at a time: Prometheus often shares its cores with the
    // services it watches (and, on a small host, with runbookd's webhook),
    // so a refresh takes one core, never all.
    let mut periods = std::collections::HashMap::new();
    for q in sums {
        let (range, sums) = q.await?;
        periods.insert(range, sums);
    }
    let mut by_window = std::collections::BTreeMap::new();
    for q in ratios {
        let (w, r) = q.await?;
        by_window.insert(w, r);
    }
    Ok(Recorded {
        periods,
        ratios: by_window,
    })
}

/// `slo`'s status from the batch, when the recordings cover its period
/// (`None`: they do not; read it alone).
#[allow(clippy::cast_precision_loss)]
fn from_recorded(slo: &Slo, rec: &Recorded, now: DateTime<Utc>) -> Option<Status> {
    if !matches!(slo.sli, Sli::Events { .. }) {
        return None;
    }
    let mut st = blank(slo, now);
    let range = duration(seconds(now - st.period_start));
    let sums = rec.periods.get(&range)?;
    let id = slo.id();
    let hours = (now - st.period_start).num_hours();
    if hours <= 0 || sums.hours.get(&id).copied().unwrap_or(0.0) < hours as f64 {
        return None;
    }
    st.source = Some(Source::Recordings);
    st.events = sums.events.get(&id).copied();
    st.errors = sums.errors.get(&id).copied().or(st.events.map(|_| 0.0));
    if let (Some(bad), Some(all)) = (st.errors, st.events) {
        if all > 0.0 {
            st.error_ratio = Some(bad / all);
        }
    }
    let budget = slo.budget_ratio();
    let burn = Windows::for_period(slo.period)
        .all()
        .into_iter()
        .map(|w| {
            let r = rec.ratios.get(&w).and_then(|m| m.get(&id)).copied();
            (w, r.map(|r| r / budget))
        })
        .collect();
    finish(slo, &mut st, &burn);
    Some(st)
}

/// Every SLO of `slos` at `now`: those whose period the rules' recordings
/// cover from one batch of queries for all, the others (the first days,
/// ratio SLIs, a Prometheus without the rules) with queries of their own,
/// `parallel` at a time. A batch Prometheus refuses is every SLO's error
/// (asking each alone would wait as long, 500 times).
#[allow(clippy::cast_precision_loss)]
pub async fn read_many(
    prom: &Prometheus,
    slos: &[&Slo],
    now: DateTime<Utc>,
    parallel: usize,
) -> Vec<Status> {
    use futures_util::StreamExt as _;
    let rec = match recorded(prom, slos, now).await {
        Ok(r) => r,
        Err(e) => {
            return slos
                .iter()
                .map(|slo| {
                    let mut st = blank(slo, now);
                    st.error = Some(e.clone());
                    st
                })
                .collect();
        }
    };
    let mut out: Vec<Option<Status>> = slos
        .iter()
        .map(|slo| from_recorded(slo, &rec, now))
        .collect();
    // A latency SLO's percentile is its own query; the rest, alone.
    let at = Some(now.timestamp_millis() as f64 / 1000.0);
    let jobs: Vec<_> = slos
        .iter()
        .zip(out.iter_mut())
        .map(|(slo, st)| async move {
            match st {
                Some(st) => {
                    if let Err(e) = latency(prom, slo, at, st).await {
                        st.error = Some(e);
                        st.state = State::Unknown;
                    }
                }
                None => *st = Some(read(prom, slo, now).await),
            }
        })
        .collect();
    futures_util::stream::iter(jobs)
        .buffer_unordered(parallel.max(1))
        .collect::<Vec<()>>()
        .await;
    out.into_iter().flatten().collect()
}

#[allow(clippy::cast_precision_loss)]
async fn fill(
    prom: &Prometheus,
    slo: &Slo,
    now: DateTime<Utc>,
    start: DateTime<Utc>,
    st: &mut Status,
) -> Result<(), String> {
    let at = Some(now.timestamp_millis() as f64 / 1000.0);
    let range = duration(seconds(now - start));
    let budget = slo.budget_ratio();
    let sel = selector(slo);
    let hour = Duration::from_secs(3600);
    // The period: errors and events (events SLIs), or the mean ratio.
    match &slo.sli {
        Sli::Events { errors, total } => {
            let hours = (now - start).num_hours();
            let recorded = prom
                .value(
                    &format!(
                        "count_over_time((sum(slo:sli_total:events_rate1h{sel}))[{range}:1h])"
                    ),
                    at,
                )
                .await?
                .unwrap_or(0.0);
            let (e, t, source) = if hours > 0 && recorded >= hours as f64 {
                (
                    format!("sum(slo:sli_error:events_rate1h{sel})"),
                    format!("sum(slo:sli_total:events_rate1h{sel})"),
                    Source::Recordings,
                )
            } else {
                (
                    format!("sum({})", errors.at(hour)?),
                    format!("sum({})", total.at(hour)?),
                    Source::Queries,
                )
            };
            let (qe, qt) = (
                format!("sum_over_time(({e})[{range}:1h]) * 3600"),
                format!("sum_over_time(({t})[{range}:1h]) * 3600"),
            );
            let (bad, all) = futures_util::join!(prom.value(&qe, at), prom.value(&qt, at));
            let (bad, all) = (bad?, all?);
            st.source = Some(source);
            st.events = all;
            st.errors = bad.or(all.map(|_| 0.0));
            if let (Some(bad), Some(all)) = (st.errors, all) {
                if all > 0.0 {
                    st.error_ratio = Some(bad / all);
                }
            }
        }
        Sli::Ratio { error_ratio } => {
            let five = Duration::from_secs(300);
            st.source = Some(Source::Queries);
            st.error_ratio = prom
                .value(
                    &format!(
                        "avg_over_time((avg({}))[{range}:5m])",
                        error_ratio.at(five)?
                    ),
                    at,
                )
                .await?;
        }
    }
    // Burn rates per alert window: from the rules' window recordings when
    // they are loaded (one recorded series each, as the alerts read them),
    // from the SLI queries otherwise.
    let windows = Windows::for_period(slo.period);
    let recorded = st.source == Some(Source::Recordings);
    let ratio_at = |w: Duration| -> Result<String, String> {
        if recorded {
            return Ok(format!("max(slo:sli_error:ratio_rate{}{sel})", duration(w)));
        }
        error_ratio_query(slo, w)
    };
    let all = windows.all();
    let queries = all
        .iter()
        .map(|w| ratio_at(*w))
        .collect::<Result<Vec<_>, _>>()?;
    let answers = futures_util::future::join_all(queries.iter().map(|q| prom.value(q, at))).await;
    let mut burn = std::collections::BTreeMap::new();
    for (w, a) in all.iter().zip(answers) {
        burn.insert(*w, a?.map(|r| r / budget));
    }
    finish(slo, st, &burn);
    latency(prom, slo, at, st).await
}

/// From the period's error ratio and the windows' burn rates: the tiers,
/// the budget left, the time to exhaustion and the state.
#[allow(clippy::cast_precision_loss)]
fn finish(slo: &Slo, st: &mut Status, burn: &std::collections::BTreeMap<Duration, Option<f64>>) {
    let windows = Windows::for_period(slo.period);
    let tier = |severity, p: &super::rules::Pair| {
        let short = burn.get(&p.short).copied().flatten();
        let long = burn.get(&p.long).copied().flatten();
        TierBurn {
            severity,
            burning: short.is_some_and(|b| b > p.factor) && long.is_some_and(|b| b > p.factor),
            short: Burn {
                window: duration(p.short),
                burn_rate: short,
            },
            long: Burn {
                window: duration(p.long),
                burn_rate: long,
            },
            factor: p.factor,
        }
    };
    st.tiers = windows
        .page
        .iter()
        .map(|p| tier(Severity::Page, p))
        .chain(windows.ticket.iter().map(|p| tier(Severity::Ticket, p)))
        .collect();
    let budget = slo.budget_ratio();
    if let Some(ratio) = st.error_ratio {
        st.sli = Some(1.0 - ratio);
        let remaining = 1.0 - ratio / budget;
        st.remaining = Some(remaining);
        st.remaining_minutes = Some(remaining * st.budget_minutes);
        // At the last hour's pace (the first page pair's long window).
        let pace = burn.get(&windows.page[0].long).copied().flatten();
        st.exhaustion_seconds = match pace {
            _ if remaining <= 0.0 => Some(0.0),
            Some(b) if b > 0.0 => Some(remaining * slo.period.length().as_secs_f64() / b),
            _ => None,
        };
        let paging = st
            .tiers
            .iter()
            .any(|t| t.severity == Severity::Page && t.burning);
        let ticketing = st
            .tiers
            .iter()
            .any(|t| t.severity == Severity::Ticket && t.burning);
        st.state = if remaining <= 0.0 || paging {
            State::Critical
        } else if remaining < 0.25 || ticketing {
            State::Warning
        } else {
            State::Healthy
        };
    }
}

/// A latency SLO on a histogram: its percentile now.
async fn latency(
    prom: &Prometheus,
    slo: &Slo,
    at: Option<f64>,
    st: &mut Status,
) -> Result<(), String> {
    let histogram = match &slo.sli {
        Sli::Events { errors, total } => errors.histogram().or_else(|| total.histogram()),
        Sli::Ratio { error_ratio } => error_ratio.histogram(),
    };
    if let Some((buckets, threshold)) = histogram {
        let quantile = slo.objective_ratio();
        let value = prom
            .value(
                &format!("histogram_quantile({quantile}, sum by (le) (rate({buckets}[5m])))"),
                at,
            )
            .await?
            .filter(|v| v.is_finite());
        st.latency = Some(Latency {
            quantile,
            value,
            threshold,
        });
    }
    Ok(())
}

/// The budget left of the period so far, hour by hour, as `(unix seconds,
/// share left)`: errors since the period began against what all of the
/// period's events so far allow (the last point is the status's
/// `remaining`).
///
/// # Errors
/// What Prometheus answered, or why it could not be asked.
#[allow(clippy::cast_precision_loss)]
pub async fn burn_down(
    prom: &Prometheus,
    slo: &Slo,
    now: DateTime<Utc>,
) -> Result<Vec<(f64, f64)>, String> {
    let start = period_start(slo.period, now).timestamp();
    let first = (start / 3600 + 1) * 3600;
    let last = now.timestamp() / 3600 * 3600;
    if last < first {
        return Ok(Vec::new());
    }
    let hour = Duration::from_secs(3600);
    let budget = slo.budget_ratio();
    let series = |q: String| async move {
        let s = prom.range(&q, first as f64, last as f64, 3600.0).await?;
        Ok::<_, String>(s.into_iter().next().map(|s| s.points).unwrap_or_default())
    };
    match &slo.sli {
        Sli::Events { errors, total } => {
            let (e, t) = futures_util::join!(
                series(format!("sum({}) * 3600", errors.at(hour)?)),
                series(format!("sum({}) * 3600", total.at(hour)?)),
            );
            let (e, t) = (e?, t?);
            let all: f64 = t.iter().map(|p| p.1).filter(|v| v.is_finite()).sum();
            if all <= 0.0 {
                return Ok(Vec::new());
            }
            let mut spent = 0.0;
            Ok(e.into_iter()
                .map(|(ts, v)| {
                    if v.is_finite() {
                        spent += v;
                    }
                    (ts, 1.0 - spent / (budget * all))
                })
                .collect())
        }
        Sli::Ratio { error_ratio } => {
            let r = series(format!("avg({})", error_ratio.at(hour)?)).await?;
            let (mut sum, mut n) = (0.0, 0.0);
            Ok(r.into_iter()
                .filter(|(_, v)| v.is_finite())
                .map(|(ts, v)| {
                    sum += v;
                    n += 1.0;
                    (ts, 1.0 - sum / n / budget)
                })
                .collect())
        }
    }
}

/// The SLI's error ratio over `window`, from its own queries.
///
/// # Errors
/// A query that cannot take the window.
pub fn error_ratio_query(slo: &Slo, window: Duration) -> Result<String, String> {
    Ok(match &slo.sli {
        Sli::Events { errors, total } => {
            format!("sum({}) / sum({})", errors.at(window)?, total.at(window)?)
        }
        Sli::Ratio { error_ratio } => format!("avg({})", error_ratio.at(window)?),
    })
}

/// How many times faster than the even pace the SLO's budget burns over
/// `window`: its error ratio divided by its budget ratio (what a verify
/// step's `burn_rate` measures).
///
/// # Errors
/// As [`error_ratio_query`].
pub fn burn_rate_query(slo: &Slo, window: Duration) -> Result<String, String> {
    Ok(format!(
        "({}) / {}",
        error_ratio_query(slo, window)?,
        slo.budget_ratio()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_periods_start_at_the_month_and_the_monday() {
        let now = Utc.with_ymd_and_hms(2026, 12, 5, 13, 7, 0).unwrap();
        assert_eq!(
            period_start(Period::Calendar(Calendar::Month), now),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
        );
        // 2026-12-05 is a Saturday.
        assert_eq!(
            period_start(Period::Calendar(Calendar::Week), now),
            Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap()
        );
    }
}
