//! Capacity forecasts (DESIGN §13): when will it be full. A forecast names
//! a usage query and a capacity (a query or a number); runbookd fits the
//! usage over the lookback by least squares, series by series, and projects
//! when the line reaches the capacity, with the fit's error band and R².
//!
//! A straight line is wrong for a fill-and-clean pattern (a log volume
//! rotated nightly, a queue drained in batches): usage that drops sharply
//! more than once is flagged [`Verdict::Irregular`] instead of forecast. A
//! single jump (a migration, a restore) is a step: the fit starts after it.

pub mod fit;
pub mod read;

pub use crate::slo::forecast::{Capacity, Forecast};
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a series' forecast says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// At or over its capacity now.
    Full,
    /// Full within `warn_within`.
    FillingSoon,
    /// Full within the horizon, after `warn_within`.
    Filling,
    /// Not full within the horizon (or not growing).
    NotFilling,
    /// Drops sharply again and again (fill and clean): a line would lie.
    Irregular,
    /// Too little history, or Prometheus could not be asked.
    Unknown,
}

impl Verdict {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Full => "full",
            Verdict::FillingSoon => "filling_soon",
            Verdict::Filling => "filling",
            Verdict::NotFilling => "not_filling",
            Verdict::Irregular => "irregular",
            Verdict::Unknown => "unknown",
        }
    }
}

/// How far the line can be trusted, from its R².
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// R² ≥ 0.9.
    High,
    /// R² ≥ 0.6.
    Medium,
    Low,
}

impl Confidence {
    #[must_use]
    pub fn of(r2: f64) -> Confidence {
        if r2 >= 0.9 {
            Confidence::High
        } else if r2 >= 0.6 {
            Confidence::Medium
        } else {
            Confidence::Low
        }
    }
}

/// One series' forecast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    pub service: String,
    pub forecast: String,
    /// The usage series' labels (`__name__` dropped).
    pub labels: BTreeMap<String, String>,
    pub verdict: Verdict,
    /// The last usage sample.
    pub usage: Option<f64>,
    pub capacity: Option<f64>,
    /// `usage ÷ capacity`.
    pub used: Option<f64>,
    /// The fitted growth, in the usage's unit per day.
    pub growth_per_day: Option<f64>,
    /// When the fitted line reaches the capacity (within the horizon).
    pub full_at: Option<DateTime<Utc>>,
    pub days_left: Option<f64>,
    /// The band: the line ± twice the residuals' standard deviation
    /// reaches the capacity between these.
    pub earliest: Option<DateTime<Utc>>,
    pub latest: Option<DateTime<Utc>>,
    pub r2: Option<f64>,
    pub confidence: Option<Confidence>,
    /// Why the verdict (a step the fit starts after, the drops that make
    /// it irregular, too little history).
    pub note: Option<String>,
    /// The fit: from `fit_from`, `fit_start` at that time, growing by
    /// `growth_per_day` (for drawing the line).
    pub fit_from: Option<f64>,
    pub fit_start: Option<f64>,
    /// The history read, thinned to at most 200 points for drawing.
    pub history: Vec<(f64, f64)>,
    pub checked_at: DateTime<Utc>,
    /// Why there is no forecast.
    pub error: Option<String>,
}

impl Projection {
    /// A forecast with nothing but an error.
    #[must_use]
    pub fn failed(f: &Forecast, error: String, now: DateTime<Utc>) -> Projection {
        Projection {
            service: f.service.clone(),
            forecast: f.name.clone(),
            labels: BTreeMap::new(),
            verdict: Verdict::Unknown,
            usage: None,
            capacity: None,
            used: None,
            growth_per_day: None,
            full_at: None,
            days_left: None,
            earliest: None,
            latest: None,
            r2: None,
            confidence: None,
            note: None,
            fit_from: None,
            fit_start: None,
            history: Vec::new(),
            checked_at: now,
            error: Some(error),
        }
    }

    /// `{instance="a", mountpoint="/data"}`, or empty.
    #[must_use]
    pub fn series(&self) -> String {
        if self.labels.is_empty() {
            return String::new();
        }
        let inner: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{{{}}}", inner.join(", "))
    }

    /// Soonest full first; then the ones without a date.
    #[must_use]
    pub fn order_key(&self) -> (u8, f64) {
        let rank = match self.verdict {
            Verdict::Full | Verdict::FillingSoon | Verdict::Filling => 0,
            Verdict::Irregular | Verdict::Unknown => 1,
            Verdict::NotFilling => 2,
        };
        (rank, self.days_left.unwrap_or(f64::INFINITY))
    }
}

/// Sorts projections by days left, soonest first.
pub fn sort(p: &mut [Projection]) {
    p.sort_by(|a, b| {
        let (ra, da) = a.order_key();
        let (rb, db) = b.order_key();
        ra.cmp(&rb)
            .then(da.total_cmp(&db))
            .then_with(|| (&a.service, &a.forecast).cmp(&(&b.service, &b.forecast)))
            .then_with(|| a.labels.cmp(&b.labels))
    });
}

/// A number as Prometheus's `humanize` writes it: `3.1G`, `250k`, `12`,
/// `0.5` (the unit is the usage's own).
#[must_use]
pub fn human(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    let (scaled, suffix) = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .iter()
        .find(|(f, _)| a >= *f)
        .map_or((v, ""), |(f, s)| (v / f, *s));
    let digits = if scaled.abs() >= 100.0 || scaled.fract().abs() < 1e-9 {
        0
    } else if scaled.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{scaled:.digits$}{suffix}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_read_as_prometheus_humanizes_them() {
        assert_eq!(super::human(3_140_000_000.0), "3.14G");
        assert_eq!(super::human(250_000.0), "250k");
        assert_eq!(super::human(12.0), "12");
        assert_eq!(super::human(-0.5), "-0.50");
    }
}
