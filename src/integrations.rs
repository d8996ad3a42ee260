//! What a run reaches beyond its steps' processes: an Alertmanager
//! (`silence:` steps' silences, and whether an alert still fires for
//! `verify: {alert_resolved: true}`) and a Prometheus (a query's value now,
//! for `verify:` steps and drills' safeguards).
//!
//! The executor and [`crate::verify`] see them only as the traits here; the
//! clients ([`crate::alertmanager`], [`crate::prometheus`]) implement them,
//! and `serve` and `run` wire them in as one [`Integrations`]. A new
//! integration is one more trait and one more field here: the compiler
//! then finds every place that builds one.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::plan::SilencePlan;

/// An integration's answer, or what failed and where, in words for a
/// step's output.
pub type Answer<'a, T> = BoxFuture<'a, Result<T, String>>;

/// A silence a `silence:` step made (or found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silenced {
    pub id: String,
    /// Alertmanager held the run's alert when the silence was made: its
    /// resolution can be learnt from Alertmanager (an alert posted straight
    /// to the webhook never was Alertmanager's, and its absence says
    /// nothing).
    pub watched: bool,
    /// The Alertmanager it was made in (its URL).
    pub alertmanager: String,
}

/// An Alertmanager, as a run uses it.
pub trait Alerts: Send + Sync {
    /// Makes the silence `plan` asks for, or finds the one `tag` already
    /// made (a retried step, or a run taken over after its first owner
    /// made it). A new silence that would cover another alert than the
    /// run's own is refused unless the step says `covers_others`.
    fn ensure<'a>(
        &'a self,
        plan: &'a SilencePlan,
        comment: &'a str,
        tag: &'a str,
    ) -> Answer<'a, Silenced>;

    /// Expires a silence (one already expired or gone is fine).
    fn expire<'a>(&'a self, id: &'a str) -> Answer<'a, ()>;

    /// The link people follow to a silence.
    fn link(&self, id: &str) -> String;

    /// The fingerprints of the alerts firing now (`None`: the
    /// Alertmanager restarted too recently to know them all).
    fn firing(&self) -> Answer<'_, Option<HashSet<String>>>;
}

/// A Prometheus, as a run uses it.
pub trait Metrics: Send + Sync {
    /// The values of `query`'s instant vector now, one per series.
    fn values<'a>(&'a self, query: &'a str) -> Answer<'a, Vec<f64>>;
}

/// The Alertmanager in force, asked for at each use (a reload may change
/// it).
pub type AlertsInForce = Arc<dyn Fn() -> Option<Arc<dyn Alerts>> + Send + Sync>;

/// Every integration a run may reach; each is `None` while the config
/// names none, and a step that needs it fails, saying what to set.
#[derive(Clone)]
pub struct Integrations {
    alertmanager: AlertsInForce,
    prometheus: Option<Arc<dyn Metrics>>,
}

impl Integrations {
    #[must_use]
    pub fn new(alertmanager: AlertsInForce, prometheus: Option<Arc<dyn Metrics>>) -> Self {
        Integrations {
            alertmanager,
            prometheus,
        }
    }

    /// No integration at all: `silence:` and `verify:` steps fail, saying
    /// which setting they need.
    #[must_use]
    pub fn none() -> Self {
        Integrations::new(Arc::new(|| None), None)
    }

    /// The Alertmanager in force.
    #[must_use]
    pub fn alertmanager(&self) -> Option<Arc<dyn Alerts>> {
        (self.alertmanager)()
    }

    /// The Prometheus `prometheus:` names.
    #[must_use]
    pub fn prometheus(&self) -> Option<Arc<dyn Metrics>> {
        self.prometheus.clone()
    }
}

impl std::fmt::Debug for Integrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integrations")
            .field("alertmanager", &self.alertmanager().is_some())
            .field("prometheus", &self.prometheus.is_some())
            .finish()
    }
}
