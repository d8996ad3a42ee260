//! The durable store: notifications, incidents, alerts, runs, live step
//! output and timelines, behind one interface with two backends:
//!
//! - `sqlite`: one file (WAL, `synchronous=FULL`, group commit), the
//!   embedded default, one process at a time;
//! - `postgres`: several replicas on one PostgreSQL database.
//!
//! Callers see domain operations only (ingest, claim, heartbeat, append
//! output, finish, reap, updates, reads); no SQL and no database crate
//! leaves this module. Deduplication, claiming, leases and fences live in
//! the database, never in process memory.
//!
//! Each operation is written once: `flow` holds its control flow (what to
//! read, what it means, what to write next) over the `driver::Driver`
//! trait, whose methods are single statements. A backend is a driver plus
//! its connection handling: SQLite runs the flow on its writer thread,
//! inside a savepoint of the next group commit; PostgreSQL runs it in a
//! transaction, again when it conflicted with another replica's, and its
//! statements take the row and advisory locks and send the NOTIFYs. Both
//! pass the same conformance suite (`tests/integration/store.rs`).

mod driver;
mod flow;
#[macro_use]
mod postgres;
mod sqlite;
mod types;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

pub use flow::gates::Freeze;
pub use types::*;

use driver::Driver as _;

use crate::incident::{IncidentDetail, IncidentId, IncidentSummary, RunState, Update};

/// What `/metrics` shows of the store, read together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Runs waiting to start.
    pub queued: i64,
    /// Incidents not resolved (drills not counted).
    pub open: i64,
    /// Runs paused on an approval step.
    pub awaiting: i64,
    /// Notifications still to deliver (pending or being sent).
    pub outbox_backlog: i64,
    /// Notifications given up on.
    pub outbox_dead: i64,
}

/// A store failure; the cause is logged, callers answer 503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store `{path}` is in use by another runbookd{}; one process at a time may use a SQLite store", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { path: PathBuf, holder: Option<u32> },
    /// The backend failed (disk full, I/O error, corruption, connection
    /// lost); the message says how, without tying callers to a database crate.
    #[error("database error: {0}")]
    Backend(String),
    #[error("the store's writer has stopped")]
    Stopped,
    #[error("the run queue is full")]
    QueueFull,
    #[error("`{0}` not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The request does not fit the record's state (retrying a notification
    /// that is not dead).
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Where the store lives: `sqlite:PATH` or `postgres://…` (`--store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    /// A libpq connection URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl std::str::FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("`sqlite:` needs a file path, e.g. sqlite:data/runbookd.db".into());
            }
            return Ok(StoreUrl::Sqlite(path.into()));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            s.parse::<tokio_postgres::Config>()
                .map_err(|e| format!("bad PostgreSQL URL: {e}"))?;
            return Ok(StoreUrl::Postgres(s.to_owned()));
        }
        Err(format!(
            "unknown store `{}`: expected sqlite:PATH or postgres://USER@HOST/DB",
            redact_url(s)
        ))
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            StoreUrl::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// A URL as logs may show it: without its password.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// How a replica uses the store: leases and the leader duty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// One process (SQLite's lock): what is running at start is this
    /// process's own leftover, and no duty needs electing.
    Exclusive,
    /// Several replicas: runs of a dead replica are reaped after their
    /// lease, and periodic duties go to the holder of the leader lease.
    Shared,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// A write queued when it was asked for, answered once committed.
pub type Pending<T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'static>>;

macro_rules! each {
    ($self:ident, $b:ident => $e:expr) => {
        match &$self.backend {
            Backend::Sqlite($b) => $e,
            Backend::Postgres($b) => $e,
        }
    };
}

/// Runs a [`flow`] operation (`$op`, over the driver `$d`) in one write
/// transaction of the backend: a savepoint of SQLite's next group commit,
/// or a PostgreSQL transaction on the `$lane` pool (`pool`; `leases` for
/// heartbeats, ends and takeovers; `claims` for claims), run again when it
/// conflicted with another replica's.
macro_rules! flow {
    ($self:ident, $lane:ident, |$d:ident| $op:expr) => {
        match &$self.backend {
            Backend::Sqlite(s) => Box::pin(s.write(move |c| {
                let $d = &sqlite::Conn(c);
                sqlite::at_once($op)
            })) as Pending<_>,
            Backend::Postgres(p) => transaction!(p, $lane, |tx| {
                let $d = &postgres::Conn(&tx);
                $op.await
            }),
        }
    };
}

impl Store {
    /// Opens (creating and migrating) the store at `url`.
    ///
    /// # Errors
    /// When it cannot be reached, locked, written or migrated.
    pub async fn open(url: &StoreUrl) -> Result<Store> {
        let backend = match url {
            StoreUrl::Sqlite(path) => Backend::Sqlite(sqlite::Sqlite::open(path)?),
            StoreUrl::Postgres(url) => Backend::Postgres(postgres::Postgres::open(url).await?),
        };
        Ok(Store { backend })
    }

    /// Opens the store for reading only (the CLI beside a running server):
    /// no lock, no migration, no writes.
    ///
    /// # Errors
    /// When it does not exist or cannot be reached.
    pub async fn open_read_only(url: &StoreUrl) -> Result<Store> {
        let backend = match url {
            StoreUrl::Sqlite(path) => Backend::Sqlite(sqlite::Sqlite::open_read_only(path)?),
            StoreUrl::Postgres(url) => {
                Backend::Postgres(postgres::Postgres::open_read_only(url).await?)
            }
        };
        Ok(Store { backend })
    }

    #[must_use]
    pub fn sharing(&self) -> Sharing {
        match self.backend {
            Backend::Sqlite(_) => Sharing::Exclusive,
            Backend::Postgres(_) => Sharing::Shared,
        }
    }

    /// Records a notification, opens or updates its incident, and queues
    /// runs, exactly once per run key across replicas.
    ///
    /// # Errors
    /// [`StoreError::QueueFull`] (nothing recorded), or a store error.
    #[must_use]
    pub fn ingest(&self, mut input: Ingest) -> Pending<Ingested> {
        // Text columns hold no NUL on either backend (PostgreSQL cannot):
        // rewritten once, here, for both. The raw body keeps every byte.
        if let std::borrow::Cow::Owned(n) = types::storable(&input.notification) {
            input.notification = n;
        }
        flow!(self, pool, |d| flow::ingest::ingest(d, &input))
    }

    /// Claims the oldest queued runs whose runbooks are under their
    /// concurrency, within this replica's free slots and the cluster's cap;
    /// each claimed run gets `owner`, a lease and a new fence.
    ///
    /// # Errors
    /// A store error.
    #[must_use]
    pub fn claim(&self, req: ClaimRequest) -> Pending<Vec<Claimed>> {
        flow!(self, claims, |d| flow::runs::claim(d, &req))
    }

    /// Notes a claimed run's start on its incident (its timeline entry,
    /// status change and notifications), unless its end or a takeover
    /// noted it already, or `lease` no longer holds the run.
    ///
    /// # Errors
    /// A store error (its end notes the start then).
    #[must_use]
    pub fn note_start(&self, lease: Lease) -> Pending<()> {
        flow!(self, pool, |d| flow::runs::note_start(
            d,
            lease.run_id,
            Some(lease.fence)
        ))
    }

    /// Renews the leases of the runs `owner` executes.
    ///
    /// # Errors
    /// A store error (the caller fences itself if that lasts).
    #[must_use]
    pub fn heartbeat(
        &self,
        owner: String,
        runs: Vec<Lease>,
        lease: Duration,
    ) -> Pending<Heartbeat> {
        flow!(self, leases, |d| flow::runs::heartbeat(
            d, &owner, &runs, lease
        ))
    }

    /// Appends live output of a running step; nothing when fenced.
    ///
    /// # Errors
    /// A store error.
    #[must_use]
    pub fn append_output(
        &self,
        lease: Lease,
        chunks: Vec<(String, &'static str, Vec<u8>)>,
    ) -> Pending<()> {
        flow!(self, pool, |d| flow::runs::append_output(d, lease, &chunks))
    }

    /// Stores a running run's steps so far (JSON of
    /// [`crate::record::Progress`]), if `lease` still holds it: a run
    /// taken over or found after a crash keeps them.
    ///
    /// # Errors
    /// A store error.
    #[must_use]
    pub fn progress(&self, lease: Lease, json: String) -> Pending<()> {
        flow!(self, pool, |d| flow::runs::progress(d, lease, &json))
    }

    /// Removes the live output of runs that ended a while ago (its tail
    /// stays readable for 30 s after the run's end, for a stream still
    /// reading it). The dispatcher calls it about once a second after runs
    /// ended, not at every end.
    ///
    /// # Errors
    /// A store error.
    #[must_use]
    pub fn prune_output(&self) -> Pending<()> {
        flow!(self, pool, |d| d.prune_output())
    }

    /// Records a finished run and moves its incident along, if its fence holds.
    ///
    /// # Errors
    /// A store error.
    #[must_use]
    pub fn finish(&self, f: impl Into<std::sync::Arc<Finished>>) -> Pending<FinishOutcome> {
        let f = f.into();
        flow!(self, leases, |d| flow::runs::finish(d, &f))
    }

    /// Takes running runs back from their owners.
    ///
    /// # Errors
    /// A store error.
    #[must_use]
    pub fn reap(&self, scope: Reap) -> Pending<Reaped> {
        flow!(self, leases, |d| flow::runs::reap(d, &scope))
    }

    /// Takes or renews the leader lease of periodic duties; true while this
    /// replica holds it.
    ///
    /// # Errors
    /// A store error.
    #[must_use]
    pub fn lead(&self, owner: String, lease: Duration) -> Pending<bool> {
        each!(self, b => b.lead(owner, lease))
    }

    /// Whether other replicas may share this store (PostgreSQL): what one
    /// replica reads for all is worth writing down only then. A SQLite
    /// store has one process, whose single writer the webhook needs.
    #[must_use]
    pub fn shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Adds a person's update to the timeline (and status / root cause).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or a store error.
    #[must_use]
    pub fn add_update(&self, id: IncidentId, update: Update) -> Pending<()> {
        flow!(self, pool, |d| flow::incidents::add_update(d, id, &update))
    }

    /// Claims one scheduled occurrence of a runbook's drill: true for the
    /// one process (of all replicas) that gets it.
    ///
    /// # Errors
    /// A store error.
    #[must_use]
    pub fn claim_drill(
        &self,
        runbook: String,
        drill: String,
        at: chrono::DateTime<chrono::Utc>,
        owner: String,
    ) -> Pending<bool> {
        flow!(self, pool, |d| d.claim_drill(&runbook, &drill, at, &owner))
    }

    /// Cancels a run for a person: a queued run ends `cancelled`, a running
    /// one is asked to stop (whichever replica runs it stops it and records
    /// it `cancelled`); answers the state it had.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Conflict`] for a run that
    /// already ended, or a store error.
    #[must_use]
    pub fn cancel_run(&self, id: i64, who: String) -> Pending<RunState> {
        flow!(self, leases, |d| flow::runs::cancel(d, id, &who))
    }

    /// The first decision on a run's pending approval: the run is queued
    /// again to resume (whichever replica claims it).
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Conflict`] when the run is
    /// not waiting for approval (or another decision came first), or a
    /// store error.
    #[must_use]
    pub fn decide(
        &self,
        run: i64,
        approval: i64,
        decision: crate::approval::Decision,
        who: String,
        comment: Option<String>,
    ) -> Pending<crate::approval::Approval> {
        let decided: Pending<Result<crate::approval::Approval>> = flow!(self, pool, |d| {
            flow::approvals::decide(d, run, approval, decision, &who, comment.as_deref())
        });
        Box::pin(async move { decided.await? })
    }

    /// Records a silence a run made, as soon as it is made.
    ///
    /// # Errors
    /// A store error.
    #[must_use]
    pub fn record_silence(&self, s: crate::incident::RunSilence) -> Pending<()> {
        each!(self, b => b.record_silence(s))
    }

    /// Marks a silence ended (expired in Alertmanager).
    ///
    /// # Errors
    /// A store error.
    #[must_use]
    pub fn silence_ended(&self, id: String) -> Pending<()> {
        each!(self, b => b.silence_ended(id))
    }

    /// The silences to expire now: `until: run_end` ones of runs that
    /// ended, however (finished, cancelled, interrupted by a crash or a
    /// takeover), and `until: resolved` ones whose alert or incident
    /// resolved.
    ///
    /// # Errors
    /// A store error.
    pub async fn silences_due(&self) -> Result<Vec<crate::incident::RunSilence>> {
        each!(self, b => b.silences_due().await)
    }

    /// The `until: resolved` silences still in force (their alerts are
    /// asked about: Alertmanager sends no resolution for a silenced alert).
    ///
    /// # Errors
    /// A store error.
    pub async fn silences_held(&self) -> Result<Vec<crate::incident::RunSilence>> {
        each!(self, b => b.silences_held().await)
    }

    /// Decides the approvals whose deadline passed by their `on_timeout`,
    /// each once across replicas; how many.
    ///
    /// # Errors
    /// A store error.
    #[must_use]
    pub fn expire_approvals(&self) -> Pending<usize> {
        flow!(self, pool, |d| flow::approvals::expire(d))
    }

    /// Whether an approval's deadline has passed (a read).
    ///
    /// # Errors
    /// A store error.
    pub async fn approvals_due(&self) -> Result<bool> {
        each!(self, b => b.approvals_due().await)
    }

    /// Records who acknowledged an incident (the first acknowledgement wins:
    /// false when it already had one), cancels the escalations that an
    /// acknowledgement ends and tells people, in one transaction.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or a store error.
    #[must_use]
    pub fn acknowledge(&self, id: IncidentId, who: String) -> Pending<bool> {
        flow!(self, pool, |d| flow::outbox::acknowledge(d, id, &who))
    }

    /// Ticks (or, `done: false`, reopens) a checklist item of the incident:
    /// who and when are recorded, on the timeline too; ticking the last open
    /// item of an incident whose runs all succeeded moves it to
    /// `monitoring`. Ticking a done item changes nothing. Answers the item.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (no such incident or item),
    /// [`StoreError::Conflict`] (several runs have an item of that name and
    /// the tick does not say which), or a store error.
    #[must_use]
    pub fn tick(&self, id: IncidentId, t: Tick) -> Pending<crate::incident::ChecklistItem> {
        flow!(self, pool, |d| flow::people::tick(d, id, &t))
    }

    /// Makes `to` the incident's commander, `by`'s hand-over, on the
    /// timeline; an incident nobody acknowledged is acknowledged by `by`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or a store error.
    #[must_use]
    pub fn hand_over(&self, id: IncidentId, to: String, by: String) -> Pending<HandOver> {
        flow!(self, pool, |d| flow::people::hand_over(d, id, &to, &by))
    }

    /// Queues run `run` again on its incident, for its alert (`who` asked):
    /// the re-run takes its original's place (its failure no longer
    /// counts once the re-run is queued and succeeds; its silences are
    /// found again, not made twice).
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Conflict`] when the run has
    /// not ended, another run for the alert is in progress or the incident
    /// is resolved; or a store error.
    #[must_use]
    pub fn rerun(&self, run: i64, who: String) -> Pending<Rerun> {
        flow!(self, pool, |d| flow::people::rerun(d, run, &who))
    }

    /// Fires the escalation timers that are due, each once across replicas
    /// (or cancels them when what they wait for happened); how many fired.
    ///
    /// # Errors
    /// A store error.
    #[must_use]
    pub fn escalate(&self) -> Pending<usize> {
        flow!(self, pool, |d| flow::outbox::escalate(d))
    }

    /// Takes up to `limit` due notifications to deliver (each attempt counted);
    /// one whose deliverer died is due again after `lease`.
    ///
    /// # Errors
    /// A store error.
    #[must_use]
    pub fn outbox_claim(
        &self,
        owner: String,
        limit: u32,
        lease: Duration,
    ) -> Pending<Vec<crate::incident::notices::OutboxItem>> {
        flow!(self, pool, |d| flow::outbox::claim(d, &owner, limit, lease))
    }

    /// Records how an attempt ended; false when the attempt was no longer
    /// the notification's latest (its lease ran out and another took it).
    ///
    /// # Errors
    /// A store error.
    #[must_use]
    pub fn outbox_settle(
        &self,
        id: i64,
        attempt: u32,
        s: crate::incident::notices::Settle,
    ) -> Pending<bool> {
        flow!(self, pool, |d| flow::outbox::settle(d, id, attempt, &s))
    }

    /// Queues a dead notification again.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Invalid`] when it is not dead,
    /// or a store error.
    #[must_use]
    pub fn outbox_retry(&self, id: i64) -> Pending<()> {
        flow!(self, pool, |d| flow::outbox::retry(d, id))
    }

    /// Whether a notification or an escalation is due now.
    ///
    /// # Errors
    /// A store error.
    pub async fn outbox_due(&self) -> Result<bool> {
        each!(self, b => b.outbox_due().await)
    }

    /// Notifications, newest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn messages(
        &self,
        f: crate::incident::notices::MessageFilter,
    ) -> Result<Vec<crate::incident::notices::MessageRecord>> {
        each!(self, b => b.messages(f).await)
    }

    /// Whether the store answers.
    ///
    /// # Errors
    /// Why it does not.
    pub async fn ping(&self) -> Result<()> {
        each!(self, b => b.ping().await)
    }

    /// Why the last write failed, while no later one has succeeded.
    #[must_use]
    pub fn write_error(&self) -> Option<String> {
        each!(self, b => b.write_error())
    }

    /// Lists incidents, open ones first, newest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn incidents(&self, f: IncidentFilter) -> Result<(Vec<IncidentSummary>, i64)> {
        each!(self, b => b.incidents(f).await)
    }

    /// Everything about one incident.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or a store error.
    pub async fn incident(&self, id: IncidentId) -> Result<IncidentDetail> {
        each!(self, b => b.incident(id).await)
    }

    /// Counts and MTTR over the incidents opened within `window`.
    ///
    /// # Errors
    /// A store error.
    pub async fn stats(&self, window: Duration) -> Result<Stats> {
        each!(self, b => b.stats(window).await)
    }

    /// Replaces the SLO statuses every replica shows (the leader's read):
    /// `(id, JSON)`, read at `at` in `took_ms`.
    #[must_use]
    pub fn put_slo_statuses(
        &self,
        rows: Vec<(String, String)>,
        at: chrono::DateTime<chrono::Utc>,
        took_ms: i64,
    ) -> Pending<()> {
        flow!(self, pool, |d| flow::reads::put_slo_statuses(
            d, &rows, at, took_ms
        ))
    }

    /// Overrides a frozen service's gate (`o.since` to `o.until`), ending
    /// the override in force; the override as stored.
    #[must_use]
    pub fn override_gate(&self, o: GateOverride) -> Pending<GateOverride> {
        flow!(self, pool, |d| flow::gates::override_gate(d, &o))
    }

    /// Ends the override of `service` in force now, as `by`: whether there
    /// was one.
    #[must_use]
    pub fn end_override(&self, service: String, by: String) -> Pending<bool> {
        let at = chrono::Utc::now();
        flow!(self, pool, |d| flow::gates::end_override(
            d, &service, &by, at
        ))
    }

    /// Records a service's freeze as its policies decide it now, once per
    /// change (the leader's job); whether it changed.
    #[must_use]
    pub fn decide_freeze(&self, f: flow::gates::Freeze) -> Pending<bool> {
        let at = chrono::Utc::now();
        flow!(self, pool, |d| flow::gates::decide_freeze(d, &f, at))
    }

    /// The service's timeline (freezes, overrides), newest first.
    #[must_use]
    pub fn service_timeline(&self, service: String, limit: u32) -> Pending<Vec<ServiceEntry>> {
        flow!(self, pool, |d| flow::gates::timeline(d, &service, limit))
    }

    /// The gate overrides in force now.
    #[must_use]
    pub fn gate_overrides(&self) -> Pending<Vec<GateOverride>> {
        let at = chrono::Utc::now();
        flow!(self, pool, |d| flow::gates::open(d, at))
    }

    /// The SLO statuses the leader last read (JSON), when, and in how long.
    ///
    /// # Errors
    /// A store error.
    pub async fn slo_statuses(&self) -> Result<(Vec<String>, Option<String>, i64)> {
        each!(self, b => b.slo_statuses().await)
    }

    /// Incidents resolved since `since` whose SLO budget is not recorded
    /// yet, the earliest resolved first.
    ///
    /// # Errors
    /// A store error.
    pub async fn slo_budget_due(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<IncidentSummary>> {
        each!(self, b => b.slo_budget_due(since, limit).await)
    }

    /// Records what an incident cost its services' SLOs (JSON), whether it
    /// is SLO-affecting (`None`: its services have no SLO), and a timeline
    /// note, once: `false` when it was already recorded.
    #[must_use]
    pub fn record_slo_budget(
        &self,
        id: IncidentId,
        budget: String,
        affecting: Option<bool>,
        note: Option<String>,
        required: Option<PostmortemRequired>,
    ) -> Pending<bool> {
        flow!(self, pool, |d| {
            flow::reads::record_slo_budget(
                d,
                id,
                &budget,
                affecting,
                note.as_deref(),
                required.as_ref(),
            )
        })
    }

    /// Firing alerts no runbook matched, most recently seen first.
    ///
    /// # Errors
    /// A store error.
    pub async fn unmatched(&self, limit: u32) -> Result<Vec<UnmatchedAlert>> {
        each!(self, b => b.unmatched(limit).await)
    }

    /// (queued runs, open incidents, runs awaiting approval), cheaply, for
    /// the metrics gauges.
    ///
    /// # Errors
    /// A store error.
    pub async fn gauges(&self) -> Result<Gauges> {
        each!(self, b => b.gauges().await)
    }

    /// Live output of an incident's running steps after `cursor`, and whether
    /// any of its runs is still queued or running.
    ///
    /// # Errors
    /// A store error.
    pub async fn live(&self, id: IncidentId, cursor: i64) -> Result<(Vec<LiveChunk>, bool)> {
        each!(self, b => b.live(id, cursor).await)
    }

    /// A run's incident, runbook and alert fingerprint.
    ///
    /// # Errors
    /// A store error.
    pub async fn run_origin(&self, id: i64) -> Result<Option<(IncidentId, String, String)>> {
        each!(self, b => b.run_origin(id).await)
    }

    /// The latest runs of a runbook, newest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn recent_runs(
        &self,
        runbook: String,
        limit: u32,
    ) -> Result<Vec<(i64, IncidentId, RunState)>> {
        each!(self, b => b.recent_runs(runbook, limit).await)
    }

    /// Waits until another replica may have queued runs (PostgreSQL's
    /// LISTEN/NOTIFY), or forever on a store only this process writes.
    pub async fn queued_elsewhere(&self) {
        match &self.backend {
            Backend::Sqlite(_) => std::future::pending().await,
            Backend::Postgres(b) => b.queued_elsewhere().await,
        }
    }

    /// Tells every other replica to reload its runbooks (`origin`: this
    /// replica's name); nothing on a store only this process uses.
    #[must_use]
    pub fn announce_reload(&self, origin: String) -> Pending<()> {
        match &self.backend {
            Backend::Sqlite(_) => Box::pin(std::future::ready(Ok(()))),
            Backend::Postgres(b) => b.announce_reload(origin),
        }
    }

    /// Reloads announced by replicas (their names), on a shared store.
    #[must_use]
    pub fn reloads(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(b) => Some(b.reloads()),
        }
    }

    /// Stops the writer after the queued writes.
    pub fn close(&self) {
        each!(self, b => b.close());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_at_the_edge() {
        assert_eq!(
            "sqlite:data/runbookd.db".parse::<StoreUrl>(),
            Ok(StoreUrl::Sqlite("data/runbookd.db".into()))
        );
        assert!(matches!(
            "postgres://runbookd@127.0.0.1:5432/runbookd".parse::<StoreUrl>(),
            Ok(StoreUrl::Postgres(_))
        ));
        let err = "mysql://root:hunter2@db/x".parse::<StoreUrl>().unwrap_err();
        assert!(err.contains("expected sqlite:PATH"), "{err}");
        assert!(
            !err.contains("hunter2"),
            "the password is not echoed: {err}"
        );
        assert!("sqlite:".parse::<StoreUrl>().is_err());
        let shown = StoreUrl::Postgres("postgres://u:secret@h:1/db".into()).to_string();
        assert_eq!(shown, "postgres://u:***@h:1/db");
    }

    /// States stay literals in the statements, where the planners can match
    /// them to the partial indexes (`runs_queued`, `runs_running`,
    /// `outbox_due`, …): bound as parameters they defeat those indexes on
    /// both backends (docs/ha.md, "States in statements"). So that a literal
    /// can never name a state that does not exist, every one compared with
    /// or set on a state column is a name of a state enum.
    #[test]
    fn every_state_literal_in_a_statement_names_a_state() {
        // Every source of the store: both drivers and the SQL they share.
        fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    sources(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        use crate::approval::ApprovalState;
        use crate::incident::notices::{DeliveryState, TimerState};
        use crate::incident::{IncidentStatus, RunState};
        let mut known: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        known.extend(RunState::ALL.iter().map(|s| s.as_str()));
        known.extend(IncidentStatus::ALL.iter().map(|s| s.as_str()));
        known.extend(crate::alert::Status::ALL.iter().map(|s| s.as_str()));
        known.extend(ApprovalState::ALL.iter().map(|s| s.as_str()));
        known.extend(DeliveryState::ALL.iter().map(|s| s.as_str()));
        known.extend(TimerState::ALL.iter().map(|s| s.as_str()));
        known.extend(crate::plan::Phase::ALL.iter().map(|s| s.as_str()));
        let mut files = Vec::new();
        sources(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store"),
            &mut files,
        );
        // `state`, `status` or `phase` compared with, or set to, literals;
        // and `CASE WHEN $2 = 'resolved'`, where a bound state is compared.
        let compared = regex::Regex::new(
            r"(?i)(?:\b(?:state|status|phase)|\$\d+|\?\d*)\s*(?:=|<>|!=|not\s+in|in)\s*\(?\s*('[^']*'(?:\s*,\s*'[^']*')*)",
        )
        .unwrap();
        let literal = regex::Regex::new(r"'([^']*)'").unwrap();
        let (mut seen, mut unknown) = (0, Vec::new());
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // A unit test may write a state that does not exist, on purpose.
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in text.lines().enumerate() {
                for c in compared.captures_iter(line) {
                    for l in literal.captures_iter(&c[1]) {
                        seen += 1;
                        if !known.contains(&l[1]) {
                            unknown.push(format!("{}:{}: '{}'", file.display(), n + 1, &l[1]));
                        }
                    }
                }
            }
        }
        assert!(seen > 100, "the scan finds the statements' states ({seen})");
        assert!(
            unknown.is_empty(),
            "states no enum names:\n{}",
            unknown.join("\n")
        );
    }

    /// Every state column is pinned to its enum in both schemas: adding a
    /// variant without a migration that widens the constraints fails here.
    #[test]
    fn the_schemas_know_every_state() {
        fn list<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> String {
            all.iter()
                .map(|v| format!("'{}'", name(*v)))
                .collect::<Vec<_>>()
                .join(", ")
        }
        use crate::incident::notices::{DeliveryState, TimerState};
        use crate::incident::{IncidentStatus, RunState};
        use crate::runbook::notify::Event;
        let columns = [
            ("runs", "state", list(&RunState::ALL, RunState::as_str)),
            (
                "runs",
                "phase",
                list(&crate::plan::Phase::ALL, crate::plan::Phase::as_str),
            ),
            (
                "incidents",
                "status",
                list(&IncidentStatus::ALL, IncidentStatus::as_str),
            ),
            (
                "timeline",
                "status",
                list(&IncidentStatus::ALL, IncidentStatus::as_str),
            ),
            (
                "alerts",
                "status",
                list(&crate::alert::Status::ALL, crate::alert::Status::as_str),
            ),
            (
                "approvals",
                "state",
                list(
                    crate::approval::ApprovalState::ALL,
                    crate::approval::ApprovalState::as_str,
                ),
            ),
            (
                "approvals",
                "on_timeout",
                list(
                    crate::runbook::OnTimeout::ALL,
                    crate::runbook::OnTimeout::as_str,
                ),
            ),
            (
                "outbox",
                "state",
                list(DeliveryState::ALL, DeliveryState::as_str),
            ),
            ("outbox", "event", list(Event::ALL, Event::as_str)),
            (
                "escalations",
                "state",
                list(TimerState::ALL, TimerState::as_str),
            ),
        ];
        // Each column's latest definition counts: a later migration may
        // widen one (drop and define it again).
        let sqlite = [
            include_str!("sqlite/schema_v14.sql"),
            include_str!("sqlite/schema_v15.sql"),
        ]
        .concat();
        let postgres = [
            include_str!("postgres/schema_v9.sql"),
            include_str!("postgres/schema_v10.sql"),
        ]
        .concat();
        for (table, column, values) in &columns {
            let check = format!("ADD CONSTRAINT {table}_{column}_known CHECK (");
            let at = postgres
                .rfind(&check)
                .unwrap_or_else(|| panic!("PostgreSQL lacks: {check}"));
            let line = postgres[at..].lines().next().unwrap_or_default();
            assert_eq!(
                line,
                format!("{check}{column} IN ({values}));"),
                "PostgreSQL's {table}.{column}"
            );
            for (when, on) in [
                ("insert", "INSERT".to_owned()),
                ("update", format!("UPDATE OF {column}")),
            ] {
                let trigger = format!(
                    "CREATE TRIGGER {table}_{column}_known_{when} BEFORE {on} ON {table}\nWHEN "
                );
                let at = sqlite
                    .rfind(&trigger)
                    .unwrap_or_else(|| panic!("SQLite lacks: {trigger}"));
                let when_line = sqlite[at + trigger.len()..]
                    .lines()
                    .next()
                    .unwrap_or_default();
                assert!(
                    when_line.ends_with(&format!("NEW.{column} NOT IN ({values})")),
                    "SQLite's {table}.{column} {when} trigger: {when_line}"
                );
            }
        }
    }
}
