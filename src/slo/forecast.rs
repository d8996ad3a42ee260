//! The `forecasts:` of an SLO file (DESIGN §13), as loaded with the SLOs:
//! what fills, what "full" is, and how far ahead to look. [`crate::capacity`]
//! reads and fits them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::runbook::position::Pos;

/// One forecast of one service, as its `forecasts:` entry says.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub name: String,
    pub service: String,
    pub description: String,
    /// A PromQL instant-vector query: one series per thing that fills.
    pub usage: String,
    pub capacity: Capacity,
    /// How much history the fit reads.
    pub lookback: Duration,
    /// How far ahead a date is given.
    pub horizon: Duration,
    /// Full sooner than this: a warning (and the generated alert fires).
    pub warn_within: Duration,
    /// Extra labels of the generated alert.
    pub labels: BTreeMap<String, String>,
    pub file: PathBuf,
    pub pos: Pos,
}

/// What "full" is.
#[derive(Debug, Clone, PartialEq)]
pub enum Capacity {
    /// The same for every series.
    Value(f64),
    /// A query giving a vector, answered now: each usage series is matched
    /// to the capacity series with its labels (`__name__` aside), as
    /// Prometheus's `>=` matches them in the generated alert.
    Query(String),
    /// A query giving a scalar (`scalar(…)`), answered now: one number for
    /// every series.
    Scalar(String),
}

impl Capacity {
    /// As the API and the rules write it.
    #[must_use]
    pub fn text(&self) -> String {
        match self {
            Capacity::Value(v) => format!("{v}"),
            Capacity::Query(q) | Capacity::Scalar(q) => q.clone(),
        }
    }
}

impl Forecast {
    /// `service-name`, the generated alert's `runbookd_forecast` label.
    #[must_use]
    pub fn id(&self) -> String {
        format!("{}-{}", self.service, self.name)
    }

    /// The range query's step: about 1000 points over the lookback, whole
    /// minutes, at least one.
    #[must_use]
    pub fn step(&self) -> Duration {
        let minutes = (self.lookback.as_secs() / 1000).div_ceil(60).max(1);
        Duration::from_secs(minutes * 60)
    }
}
