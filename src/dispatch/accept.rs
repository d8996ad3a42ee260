//! The use cases that give the dispatcher work, each one store
//! transaction and then the dispatcher told (its claimers woken, its
//! withdrawn runs stopped): a notification accepted from Alertmanager, a
//! run asked for by a person or a drill, a re-run, a cancellation, an
//! approval decided. The API, the UI and the drill scheduler call these;
//! none of them has to remember to wake the claimers.

use super::Dispatcher;

use crate::alert::Notification;
use crate::runbook::RunbookSet;
use crate::store::{Ingest, Ingested, RunbookMatch, Store, StoreError};

impl Dispatcher {
    /// Accepts an Alertmanager notification: its alerts matched against
    /// the runbooks in force, recorded with their incident and queued runs in one
    /// transaction; the runs it withdrew (alerts resolved under
    /// `cancel_on_resolved`) are stopped, and the claimers woken.
    ///
    /// # Errors
    /// [`StoreError::QueueFull`] when the queue is full (nothing recorded),
    /// or a store error.
    pub async fn accept(
        &self,
        notification: Notification,
        body: Vec<u8>,
        max_queued: u64,
        run_rate: Option<crate::duration::Rate>,
    ) -> Result<Ingested, StoreError> {
        let runbooks = self
            .runbooks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let ingested = ingest(
            &self.store,
            &runbooks,
            notification,
            body,
            max_queued,
            self.shadow,
            run_rate,
        )
        .await?;
        // Silences of withdrawn runs and of resolved alerts are expired by
        // the silence keeper, which finds them due in the store.
        self.cancel(&ingested.cancel);
        if !ingested.queued.is_empty() {
            self.wake();
        }
        Ok(ingested)
    }

    /// A run of `rb` that a person or a drill asked for: a synthetic
    /// notification whose alerts all run this one runbook, whatever its
    /// matchers, without its cooldown or the rate cap (`notify: false`
    /// leaves its notification rules out: a drill pages nobody unless it
    /// says so). Recorded with `note` on its incident's timeline in the
    /// same transaction; the claimers are woken.
    ///
    /// # Errors
    /// As [`Dispatcher::accept`].
    pub async fn run_manually(
        &self,
        rb: &crate::runbook::Runbook,
        (notification, body): (Notification, Vec<u8>),
        max_queued: u64,
        (plan_only, notify): (bool, bool),
        note: crate::incident::Update,
    ) -> Result<Ingested, StoreError> {
        let ingested = ingest_manual(
            &self.store,
            rb,
            (notification, body),
            max_queued,
            (plan_only, notify),
            Some(note),
        )
        .await?;
        if !ingested.queued.is_empty() {
            self.wake();
        }
        Ok(ingested)
    }

    /// Re-runs run `id` for `who` (one transaction), and wakes the claimers.
    ///
    /// # Errors
    /// As [`Store::rerun`].
    pub async fn rerun(&self, id: i64, who: String) -> Result<crate::store::Rerun, StoreError> {
        let r = self.store.rerun(id, who).await?;
        self.wake();
        Ok(r)
    }

    /// Cancels run `id` for `who` (one transaction); a running run of this
    /// replica is stopped at once (another replica's stops when it next
    /// renews its lease). Answers the state the run had.
    ///
    /// # Errors
    /// As [`Store::cancel_run`].
    pub async fn cancel_run(
        &self,
        id: i64,
        who: String,
    ) -> Result<crate::incident::RunState, StoreError> {
        let before = self.store.cancel_run(id, who).await?;
        if before == crate::incident::RunState::Running {
            self.cancel(&[id]);
        }
        Ok(before)
    }

    /// The first decision on run `run`'s approval (one transaction); the
    /// run, queued again to resume, wakes the claimers.
    ///
    /// # Errors
    /// As [`Store::decide`].
    pub async fn decide(
        &self,
        (run, approval): (i64, i64),
        decision: crate::approval::Decision,
        who: String,
        comment: Option<String>,
    ) -> Result<crate::approval::Approval, StoreError> {
        let a = self
            .store
            .decide(run, approval, decision, who, comment)
            .await?;
        self.wake();
        Ok(a)
    }
}

/// Whether a claimed run's notification is a drill's.
pub(super) fn is_drill(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v["receiver"] == crate::alert::DRILL_RECEIVER)
}

/// Matches the notification's alerts and records everything in one transaction.
///
/// # Errors
/// [`StoreError::QueueFull`] when the queue is full (nothing recorded), or a store error.
async fn ingest(
    store: &Store,
    runbooks: &RunbookSet,
    notification: Notification,
    body: Vec<u8>,
    max_queued: u64,
    shadow: bool,
    run_rate: Option<crate::duration::Rate>,
) -> Result<Ingested, StoreError> {
    let matches = notification
        .alerts
        .iter()
        .map(|a| {
            runbooks
                .matching(&a.labels)
                .into_iter()
                .map(|rb| runbook_match(rb))
                .collect()
        })
        .collect();
    let input = Ingest {
        body,
        notification,
        matches,
        max_queued,
        shadow,
        run_rate,
        note: None,
    };
    store.ingest(input).await
}

/// What ingesting needs of a runbook.
#[must_use]
fn runbook_match(rb: &crate::runbook::Runbook) -> RunbookMatch {
    RunbookMatch {
        name: rb.name.clone(),
        title: rb.title.clone(),
        severity: rb.severity,
        cooldown: rb.cooldown,
        rate: rb.rate,
        has_on_resolved: !rb.on_resolved.is_empty(),
        cancel_on_resolved: rb.cancel_on_resolved,
        idempotent: rb.idempotent,
        policy: rb.policy.clone(),
    }
}

/// The notification of a manual run or a drill of `runbook`: one firing
/// alert with these labels (`alertname` defaults to the runbook's name), in
/// a group of its own, from `receiver`. runbookd writes it and ingests it as
/// it would an Alertmanager's, so its labels are exactly as inert.
///
/// # Errors
/// When no random group id can be made or the result does not parse.
pub fn manual_notification(
    receiver: &str,
    runbook: &str,
    mut labels: crate::alert::Labels,
    annotations: &crate::alert::Labels,
    external_url: &str,
) -> Result<(Notification, Vec<u8>), String> {
    labels
        .entry("alertname".into())
        .or_insert_with(|| runbook.to_owned());
    let nonce =
        crate::exec::instance::random_hex(8).map_err(|e| format!("cannot make a group id: {e}"))?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let body = serde_json::to_vec(&serde_json::json!({
        "version": "4",
        "receiver": receiver,
        "status": "firing",
        "groupKey": format!("{receiver}:{runbook}:{nonce}"),
        "truncatedAlerts": 0,
        "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": annotations,
            "startsAt": now,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": crate::alert::fingerprint(&labels),
        }],
    }))
    .map_err(|e| format!("cannot encode the run: {e}"))?;
    let n = Notification::from_json(&body).map_err(|e| format!("invalid manual run: {e}"))?;
    Ok((n, body))
}

/// Records a manual run of `rb` (a synthetic notification whose alerts all
/// run this one runbook, whatever its matchers, without its cooldown), in
/// one transaction with `note` on its incident's timeline; `notify: false` leaves its notification rules out (a
/// drill pages nobody unless it says so).
///
/// # Errors
/// As [`ingest`].
async fn ingest_manual(
    store: &Store,
    rb: &crate::runbook::Runbook,
    (notification, body): (Notification, Vec<u8>),
    max_queued: u64,
    (shadow, notify): (bool, bool),
    note: Option<crate::incident::Update>,
) -> Result<Ingested, StoreError> {
    let mut m = runbook_match(rb);
    // People asked for this run: no cooldown, no rate cap.
    m.cooldown = std::time::Duration::ZERO;
    m.rate = None;
    if !notify {
        m.policy = crate::runbook::notify::Policy::default();
    }
    let matches = notification
        .alerts
        .iter()
        .map(|_| vec![m.clone()])
        .collect();
    store
        .ingest(Ingest {
            body,
            notification,
            matches,
            max_queued,
            shadow,
            run_rate: None,
            note,
        })
        .await
}
