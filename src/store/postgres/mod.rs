//! The PostgreSQL backend: several replicas on one database.
//!
//! Client: `tokio-postgres` (async on the server's own runtime, no
//! compile-time database, binary protocol, LISTEN/NOTIFY) behind a
//! `deadpool-postgres` pool that drops broken connections, so replicas
//! recover by themselves when PostgreSQL restarts.
//!
//! Each write is one transaction (READ COMMITTED):
//! - ingest locks the open incident of its Alertmanager group (`FOR
//!   UPDATE`), so the same notification delivered by every Alertmanager peer
//!   to different replicas is merged in turn; run keys are unique in the
//!   database and a run of the same runbook and alert in progress absorbs a
//!   `startsAt` that drifted;
//! - claims are serialized by a transaction advisory lock (so per-runbook
//!   `concurrency` and the cluster cap hold across replicas) and start a
//!   queued run only while it is still queued; each claimed run gets an owner, a lease
//!   from the database clock and a new fence;
//! - every later write of a run names its fence and writes nothing once the
//!   fence has moved on (the run was taken over).
//!
//! Ingests that queue runs `NOTIFY runbookd_queued`; every replica LISTENs
//! (and polls each second as well, should a notification be missed).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime};
use tokio::sync::Notify;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::incident::{IncidentDetail, IncidentId, IncidentSummary, RunState};
use crate::store::types::{incident_filter, ts};
use crate::store::{IncidentFilter, LiveChunk, Pending, Result, Stats, StoreError, UnmatchedAlert};

const MIGRATIONS: &[&str] = &[
    include_str!("schema_v1.sql"),
    include_str!("schema_v2.sql"),
    include_str!("schema_v3.sql"),
    include_str!("schema_v4.sql"),
    include_str!("schema_v5.sql"),
    include_str!("schema_v6.sql"),
    include_str!("schema_v7.sql"),
    include_str!("schema_v8.sql"),
    include_str!("schema_v9.sql"),
    include_str!("schema_v10.sql"),
    include_str!("schema_v11.sql"),
    include_str!("schema_v12.sql"),
];

/// Advisory lock keys (any constants, distinct from each other).
const MIGRATION_LOCK: i64 = 0x7275_6e62_6f6f_6b01;
const CLAIM_LOCK: i64 = 0x7275_6e62_6f6f_6b02;

/// The channel ingests notify when they queue runs.
const QUEUED_CHANNEL: &str = "runbookd_queued";
/// The channel a replica notifies when it reloaded its runbooks (payload:
/// its name), so that every replica reloads.
const RELOAD_CHANNEL: &str = "runbookd_reload";

/// A failure inside an operation: the database's (maybe worth retrying) or ours.
pub(in crate::store) enum Fail {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl From<deadpool_postgres::PoolError> for Fail {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Fail::Store(StoreError::Backend(format!("cannot reach PostgreSQL: {e}")))
    }
}

impl Fail {
    /// A conflict between replicas' transactions: the operation is run again.
    pub(super) fn retryable(&self) -> bool {
        matches!(self, Fail::Db(e) if e.code().is_some_and(|c| {
            *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::UNIQUE_VIOLATION
        }))
    }

    pub(super) fn into_store(self) -> StoreError {
        match self {
            Fail::Store(e) => e,
            Fail::Db(e) => StoreError::Backend(match e.as_db_error() {
                Some(db) => format!("{}: {}", db.severity(), db.message()),
                None => e.to_string(),
            }),
        }
    }
}

pub(in crate::store) type Op<T> = std::result::Result<T, Fail>;

/// Handle to the PostgreSQL store; cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) pool: Pool,
    /// Connections of their own for heartbeats, ends and takeovers:
    /// a flood of webhooks waiting for the general pool must not delay a
    /// lease renewal into self-fencing.
    pub(super) leases: Pool,
    /// The claim loop's own connection (it claims one claim at a time):
    /// a claim never waits behind run ends for one of the `leases`.
    pub(super) claims: Pool,
    write_error: Mutex<Option<String>>,
    queued: Arc<Notify>,
    reloads: tokio::sync::broadcast::Sender<String>,
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(l) = &self.listener {
            l.abort();
        }
    }
}

fn config(url: &str) -> Result<tokio_postgres::Config> {
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(5));
    }
    cfg.keepalives_idle(Duration::from_secs(30));
    if cfg.get_application_name().is_none() {
        cfg.application_name("runbookd");
    }
    // A replica paused (SIGSTOP, a frozen VM) in the middle of a transaction
    // must not keep its row and advisory locks: the others could neither
    // take the leader lease, claim, nor ingest its incidents' groups. Our
    // transactions never idle between statements for long, so PostgreSQL
    // ends such a session after 2 s, and no statement waits for a lock
    // longer than 5 s (the operation fails and is tried again).
    //
    // Every statement is prepared once per connection and run with its
    // generic plan. PostgreSQL's default (`auto`) may switch a statement to
    // a plan made anew on every call once ANALYZE has changed its
    // estimates: autoanalyze did so at about 10,000 runs, and a run's end
    // then spent 0.44 ms planning (docs/benchmarks.md).
    let guard = format!(
        "-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS} -c lock_timeout={LOCK_TIMEOUT_MS} -c plan_cache_mode=force_generic_plan"
    );
    let options = match cfg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} {guard}"),
        _ => guard,
    };
    cfg.options(&options);
    Ok(cfg)
}

/// See [`config`]: a paused replica's locks are released after this long.
const IDLE_IN_TRANSACTION_MS: u32 = 2000;
const LOCK_TIMEOUT_MS: u32 = 5000;

/// A pool of up to `size` connections, handing out the one returned last
/// (deadpool's default is the one returned first): a replica then keeps
/// its statements on the few backends it used a moment ago, each a
/// process whose caches are warm, and the others stay idle
/// (docs/benchmarks.md).
fn new_pool(cfg: tokio_postgres::Config, size: usize) -> Result<Pool> {
    let manager = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .queue_mode(QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| StoreError::Invalid(format!("cannot set up the PostgreSQL pool: {e}")))
}

impl Postgres {
    /// Connects, migrates (one replica at a time) and starts listening.
    ///
    /// # Errors
    /// When PostgreSQL cannot be reached or migrated.
    pub async fn open(url: &str) -> Result<Postgres> {
        let cfg = config(url)?;
        let pool = new_pool(cfg.clone(), 16)?;
        let leases = new_pool(cfg.clone(), 4)?;
        let claims = new_pool(cfg.clone(), 1)?;
        migrate(&pool).await.map_err(Fail::into_store)?;
        let queued = Arc::new(Notify::new());
        let (reloads, _) = tokio::sync::broadcast::channel(16);
        let listener = tokio::spawn(listen(cfg, queued.clone(), reloads.clone()));
        Ok(Postgres {
            inner: Arc::new(Inner {
                pool,
                leases,
                claims,
                write_error: Mutex::new(None),
                queued,
                reloads,
                listener: Some(listener),
            }),
        })
    }

    /// Connects for reading; the schema must be there.
    ///
    /// # Errors
    /// When PostgreSQL cannot be reached or holds no runbookd store.
    pub async fn open_read_only(url: &str) -> Result<Postgres> {
        let cfg = config(url)?;
        let leases = new_pool(cfg.clone(), 1)?;
        let claims = new_pool(cfg.clone(), 1)?;
        let pool = new_pool(cfg, 4)?;
        let client = pool.get().await.map_err(|e| Fail::from(e).into_store())?;
        let exists: bool = client
            .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
            .await
            .map_err(|e| Fail::from(e).into_store())?
            .get(0);
        if !exists {
            return Err(StoreError::NotFound(
                "runbookd store in this database (start `runbookd serve --store …` first)".into(),
            ));
        }
        Ok(Postgres {
            inner: Arc::new(Inner {
                pool,
                leases,
                claims,
                write_error: Mutex::new(None),
                queued: Arc::new(Notify::new()),
                reloads: tokio::sync::broadcast::channel(1).0,
                listener: None,
            }),
        })
    }

    pub fn write_error(&self) -> Option<String> {
        self.inner
            .write_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn wrote(&self, ok: bool, e: Option<&StoreError>) {
        let mut w = self
            .inner
            .write_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if ok {
            *w = None;
        } else if let Some(e) = e {
            *w = Some(e.to_string());
        }
    }

    #[allow(clippy::unused_self)]
    pub fn close(&self) {}

    pub async fn queued_elsewhere(&self) {
        self.inner.queued.notified().await;
    }

    pub fn reloads(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.reloads.subscribe()
    }

    pub async fn ping(&self) -> Result<()> {
        let client = self
            .inner
            .pool
            .get()
            .await
            .map_err(|e| Fail::from(e).into_store())?;
        client
            .query_one("SELECT 1", &[])
            .await
            .map(|_| ())
            .map_err(|e| Fail::from(e).into_store())
    }
}

/// Runs `$op` (an expression using `$tx`, a fresh transaction) and commits,
/// again when it conflicted with another replica's transaction.
macro_rules! transaction {
    ($self:ident, |$tx:ident| $op:expr) => {
        transaction!($self, pool, |$tx| $op)
    };
    ($self:ident, $pool:ident, |$tx:ident| $op:expr) => {{
        let this = $self.clone();
        Box::pin(async move {
            let mut tries = 0;
            let result = loop {
                tries += 1;
                let attempt: $crate::store::postgres::Op<_> = async {
                    let client = this.inner.$pool.get().await?;
                    let $tx = $crate::store::postgres::Tx::begin(&client, "BEGIN");
                    let value = $op;
                    let value = value?;
                    $tx.commit().await?;
                    Ok(value)
                }
                .await;
                match attempt {
                    Err(e) if e.retryable() && tries < 8 => {
                        tokio::time::sleep(std::time::Duration::from_millis(5 * tries)).await;
                    }
                    other => break other.map_err($crate::store::postgres::Fail::into_store),
                }
            };
            match &result {
                Ok(_) => this.wrote(true, None),
                Err(
                    e
                    @ ($crate::store::StoreError::Backend(_) | $crate::store::StoreError::Stopped),
                ) => this.wrote(false, Some(e)),
                Err(_) => {}
            }
            result
        })
    }};
}

mod approvals;
mod driver;
pub(super) use driver::Conn;
mod outbox;
mod silences;

use crate::store::flow;

impl Postgres {
    #[must_use]
    pub fn lead(&self, owner: String, lease: Duration) -> Pending<bool> {
        transaction!(self, leases, |tx| lead(&tx, &owner, lease).await)
    }

    #[must_use]
    pub fn announce_reload(&self, origin: String) -> Pending<()> {
        transaction!(self, |tx| tx
            .execute("SELECT pg_notify($1, $2)", &[&RELOAD_CHANNEL, &origin])
            .await
            .map(|_| ()))
    }
}

/// A transaction whose statements are prepared once per connection (the
/// pool's statement cache): one round trip per statement, not two.
///
/// Its `BEGIN` is sent with the first statements rather than alone
/// (tokio-postgres sends a request when its future is first polled, and
/// the server answers in order): a write costs its statements' round trips
/// and its `COMMIT`'s. A transaction dropped before [`Tx::commit`] (an
/// error, a retry) sends `ROLLBACK` before its connection is used again,
/// as tokio-postgres' own transactions do.
pub(in crate::store) struct Tx<'a> {
    client: &'a deadpool_postgres::Client,
    /// The answer to `BEGIN`, awaited at the commit.
    begun: Mutex<Option<Sent<'a>>>,
    open: bool,
}

/// A request sent, whose answer is awaited later (or never).
type Sent<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>
            + Send
            + 'a,
    >,
>;

/// Polls `f` once, which sends its request; its answer is left for later
/// (kept, when it came at once: a future is not polled again once done).
fn send(mut f: Sent<'_>) -> Sent<'_> {
    let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(answer) => Box::pin(std::future::ready(answer)),
        std::task::Poll::Pending => f,
    }
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl<'a> Tx<'a> {
    /// Sends `statement` (`BEGIN` and its options) on `client`.
    pub(in crate::store) fn begin(
        client: &'a deadpool_postgres::Client,
        statement: &'static str,
    ) -> Tx<'a> {
        let begun = send(Box::pin(client.batch_execute(statement)));
        Tx {
            client,
            begun: Mutex::new(Some(begun)),
            open: true,
        }
    }

    /// Commits (after checking that `BEGIN` was answered without error).
    ///
    /// `BEGIN` fails only on a broken connection, or on one left inside a
    /// transaction, which [`Drop`] rules out (it queues `ROLLBACK` before
    /// the connection is used again). On a broken one every statement after
    /// it fails too, so none of them runs outside the transaction.
    pub(in crate::store) async fn commit(mut self) -> Op<()> {
        let begun = self
            .begun
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(begun) = begun {
            begun.await?;
        }
        self.client.batch_execute("COMMIT").await?;
        self.open = false;
        Ok(())
    }

    /// The connection, for reads shared with sessions outside a transaction.
    pub(super) fn client(&self) -> &deadpool_postgres::Client {
        self.client
    }

    /// Runs `sql`, a lock that the statements joined after it must follow,
    /// with `$1` bound to `key`, sent when first polled, so that the server
    /// executes them after it.
    ///
    /// A prepared statement is sent at once only when this connection
    /// prepared it already: a first use has to wait for the preparation's
    /// answer, and a statement joined after it (prepared already) would be
    /// sent, and executed, first. So a first use on a connection runs the
    /// same statement as a simple query, `key` written in (an integer, so
    /// nothing else can be), which is sent at once, and prepares `sql`
    /// alongside for the next use. Every later use skips the simple query's
    /// parse and plan (0.14 ms of PostgreSQL's CPU for a run's incident
    /// lock, docs/benchmarks.md).
    async fn at_once(&self, sql: &str, key: i64) -> Op<()> {
        use std::future::Future;
        use std::task::{Context, Poll};
        let mut prepared = std::pin::pin!(self.client.prepare_cached(sql));
        let first = {
            let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
            prepared.as_mut().poll(&mut cx)
        };
        match first {
            Poll::Ready(Ok(st)) => {
                self.client.execute(&st, &[&key]).await?;
            }
            Poll::Ready(Err(e)) => return Err(e.into()),
            Poll::Pending => {
                // The preparation's request went first; it executes nothing.
                let simple = sql.replacen("$1", &key.to_string(), 1);
                let (prepared, done) =
                    futures_util::future::join(prepared, self.client.batch_execute(&simple)).await;
                // A failed preparation aborts the transaction, and the lock
                // then fails for that reason: the preparation's error is the
                // cause (a deadlock to run again, say).
                prepared?;
                done?;
            }
        }
        Ok(())
    }

    async fn query(&self, sql: &str, params: Params<'_>) -> Op<Vec<Row>> {
        let st = self.client.prepare_cached(sql).await?;
        Ok(self.client.query(&st, params).await?)
    }

    async fn query_one(&self, sql: &str, params: Params<'_>) -> Op<Row> {
        let st = self.client.prepare_cached(sql).await?;
        Ok(self.client.query_one(&st, params).await?)
    }

    async fn query_opt(&self, sql: &str, params: Params<'_>) -> Op<Option<Row>> {
        let st = self.client.prepare_cached(sql).await?;
        Ok(self.client.query_opt(&st, params).await?)
    }

    async fn execute(&self, sql: &str, params: Params<'_>) -> Op<u64> {
        let st = self.client.prepare_cached(sql).await?;
        Ok(self.client.execute(&st, params).await?)
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            drop(send(Box::pin(self.client.batch_execute("ROLLBACK"))));
        }
    }
}

async fn migrate(pool: &Pool) -> Op<()> {
    let mut client = pool.get().await?;
    // Replicas starting together: one migrates, the others wait, then find
    // nothing left to do.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result: Op<()> = async {
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .await?;
        let current: i32 = client
            .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
            .await?
            .get(0);
        let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
        if current > known {
            return Err(StoreError::Invalid(format!(
                "the database is at schema version {current}, newer than this runbookd ({known})"
            ))
            .into());
        }
        for (i, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(current).unwrap_or(0))
        {
            let tx = client.transaction().await?;
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&i32::try_from(i + 1).unwrap_or(i32::MAX)],
            )
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }
    .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    result
}

/// Keeps a connection LISTENing for queued runs, reconnecting after failures.
async fn listen(
    cfg: tokio_postgres::Config,
    queued: Arc<Notify>,
    reloads: tokio::sync::broadcast::Sender<String>,
) {
    use futures_util::StreamExt;
    loop {
        match cfg.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let wake = queued.clone();
                let reload = reloads.clone();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(tokio_postgres::AsyncMessage::Notification(n))
                                if n.channel() == RELOAD_CHANNEL =>
                            {
                                let _ = reload.send(n.payload().to_owned());
                            }
                            Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                                wake.notify_waiters();
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "the LISTEN connection failed; reconnecting");
                                break;
                            }
                        }
                    }
                });
                if let Err(e) = client
                    .batch_execute(&format!("LISTEN {QUEUED_CHANNEL}; LISTEN {RELOAD_CHANNEL}"))
                    .await
                {
                    tracing::warn!(error = %e, "cannot LISTEN for queued runs; polling only");
                }
                let _ = driver.await;
                drop(client);
            }
            Err(e) => tracing::debug!(error = %e, "cannot connect to LISTEN for queued runs"),
        }
        // Whatever was queued meanwhile is found by polling.
        queued.notify_waiters();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A `timestamptz` is read as a [`crate::timestamp::Timestamp`].
impl<'a> tokio_postgres::types::FromSql<'a> for crate::timestamp::Timestamp {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        DateTime::<Utc>::from_sql(ty, raw).map(crate::timestamp::Timestamp)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <DateTime<Utc> as tokio_postgres::types::FromSql>::accepts(ty)
    }
}

/// A run's id (`BIGINT`) is read as one.
impl<'a> tokio_postgres::types::FromSql<'a> for crate::incident::RunId {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        i64::from_sql(ty, raw).map(crate::incident::RunId)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <i64 as tokio_postgres::types::FromSql>::accepts(ty)
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// PostgreSQL's text cannot hold NUL: the copy of alert data this store
/// keeps for display shows U+FFFD instead (the raw body, from which steps
/// are rendered, keeps every byte; fingerprints are hexadecimal).
use crate::store::types::text;

async fn lead(tx: &Tx<'_>, owner: &str, lease: Duration) -> Op<bool> {
    Ok(tx
        .query_opt(
            "INSERT INTO leader (name, owner, until) VALUES ('duties', $1, clock_timestamp() + make_interval(secs => $2))
             ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, until = EXCLUDED.until
             WHERE leader.owner = EXCLUDED.owner OR leader.until < clock_timestamp()
             RETURNING owner",
            &[&owner, &secs(lease)],
        )
        .await?
        .is_some())
}

/// The columns of an incident summary (as the SQLite store's).
pub(super) static SUMMARY_COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    crate::store::types::summary_columns(|l| format!("(a.labels::jsonb ->> '{l}')"))
});

pub(super) fn summary(r: &Row) -> Op<IncidentSummary> {
    let created: DateTime<Utc> = r.try_get("created_at")?;
    let resolved: Option<DateTime<Utc>> = r.try_get("resolved_at")?;
    let ended: Option<DateTime<Utc>> = r.try_get("alerts_ended_at")?;
    let severity: crate::runbook::Severity = r
        .try_get::<_, &str>("severity")?
        .parse()
        .map_err(StoreError::Invalid)?;
    Ok(IncidentSummary {
        id: IncidentId(r.try_get("id")?),
        title: r.try_get("title")?,
        severity,
        status: r
            .try_get::<_, String>("status")?
            .parse()
            .map_err(StoreError::Invalid)?,
        escalated: r.try_get("escalated")?,
        run_failed: r.try_get("run_failed")?,
        services: serde_json::from_str(r.try_get("services")?).unwrap_or_default(),
        runbooks: serde_json::from_str(r.try_get("runbooks")?).unwrap_or_default(),
        receiver: r.try_get("receiver")?,
        group_key: r.try_get("group_key")?,
        shadow: r.try_get("shadow")?,
        drill: r.try_get::<_, String>("receiver")? == crate::alert::DRILL_RECEIVER,
        created_at: crate::timestamp::Timestamp(created),
        updated_at: crate::timestamp::Timestamp(r.try_get("updated_at")?),
        resolved_at: resolved.map(crate::timestamp::Timestamp),
        recovered_seconds: ended.map(|t| (t - created).num_seconds().max(0)),
        alerts_ended_at: ended.map(crate::timestamp::Timestamp),
        alert_count: r.try_get("alert_count")?,
        firing_count: r.try_get("firing_count")?,
        subject: r.try_get("subject")?,
        duration_seconds: (resolved.unwrap_or_else(Utc::now) - created).num_seconds(),
        acknowledged_at: r
            .try_get::<_, Option<DateTime<Utc>>>("acknowledged_at")?
            .map(crate::timestamp::Timestamp),
        acknowledged_by: r.try_get("acknowledged_by")?,
        commander: r.try_get("commander")?,
        awaiting_approval: r.try_get("awaiting_approval")?,
        grouped_by: crate::incident::grouped_by(r.try_get("group_key")?),
        slo_affecting: crate::store::types::slo_affecting(r.try_get("slo_affecting")?, severity),
        slo_budget: r.try_get("slo_budget")?,
        postmortem_required: r.try_get("postmortem_required")?,
    })
}

fn parsed<T: std::str::FromStr<Err = String>>(r: &Row, idx: usize) -> Op<T> {
    Ok(r.try_get::<_, &str>(idx)?
        .parse()
        .map_err(StoreError::Invalid)?)
}

impl Postgres {
    async fn client(&self) -> Op<deadpool_postgres::Object> {
        Ok(self.inner.pool.get().await?)
    }

    pub async fn incidents(&self, f: IncidentFilter) -> Result<(Vec<IncidentSummary>, i64)> {
        async {
            let client = self.client().await?;
            let (sql, args) = incident_filter(&f, '$');
            let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
            let total: i64 = client.query_one(&format!("SELECT COUNT(*){sql}"), &params).await?.get(0);
            let (limit, offset) = f.page();
            let rows = client
                .query(
                    &format!("SELECT {}{sql} ORDER BY (status = 'resolved'), id DESC LIMIT {limit} OFFSET {offset}", *SUMMARY_COLUMNS),
                    &params,
                )
                .await?;
            let rows = rows.iter().map(summary).collect::<Op<Vec<_>>>()?;
            Ok((rows, total))
        }
        .await
        .map_err(Fail::into_store)
    }

    pub async fn incident(&self, id: IncidentId) -> Result<IncidentDetail> {
        async {
            let client = self.client().await?;
            // One snapshot, as SQLite's read: a run that ends meanwhile is
            // seen either running or ended in every part of the record.
            let tx = Tx::begin(&client, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
            let detail = flow::reads::incident(&Conn(&tx), id).await?;
            tx.commit().await?;
            Ok(detail)
        }
        .await
        .map_err(Fail::into_store)
    }

    pub async fn stats(&self, window: Duration) -> Result<Stats> {
        async {
            let mut client = self.client().await?;
            // One snapshot: the counts agree with each other.
            let client = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let since = Utc::now() - chrono::Duration::from_std(window).unwrap_or_default();
            let r = client
                .query_one(
                    "SELECT COUNT(*), COUNT(resolved_at),
                        AVG(CASE WHEN resolved_at IS NOT NULL THEN EXTRACT(EPOCH FROM COALESCE(alerts_ended_at, resolved_at) - created_at) END)::float8,
                        AVG(CASE WHEN resolved_at IS NOT NULL THEN EXTRACT(EPOCH FROM resolved_at - created_at) END)::float8
                     FROM incidents WHERE created_at >= $1",
                    &[&since],
                )
                .await?;
            let open: i64 = client.query_one("SELECT COUNT(*) FROM incidents WHERE status <> 'resolved' AND receiver <> 'runbookd-drill'", &[]).await?.get(0);
            let runs = client
                .query("SELECT state, COUNT(*) FROM runs WHERE queued_at >= $1 GROUP BY state", &[&since])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let queued: i64 = client.query_one("SELECT COUNT(*) FROM runs WHERE state = 'queued'", &[]).await?.get(0);
            let notifications: i64 = client
                .query_one("SELECT COUNT(*) FROM notifications WHERE received_at >= $1", &[&since])
                .await?
                .get(0);
            Ok(Stats {
                window_seconds: window.as_secs(),
                incidents_opened: r.get(0),
                incidents_resolved: r.get(1),
                incidents_open: open,
                mttr_seconds: r.get(2),
                mttr_notified_seconds: r.get(3),
                runs_by_state: runs,
                queued_runs: queued,
                notifications,
            })
        }
        .await
        .map_err(Fail::into_store)
    }

    /// The shared SLO statuses (JSON), when they were read and how long
    /// that took.
    pub async fn slo_statuses(&self) -> Result<(Vec<String>, Option<String>, i64)> {
        async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT status, refreshed_at, took_ms FROM slo_status ORDER BY id",
                    &[],
                )
                .await?;
            let at = rows.first().map(|r| ts(r.get(1)));
            let took = rows.first().map_or(0, |r| r.get(2));
            Ok::<_, Fail>((rows.iter().map(|r| r.get(0)).collect(), at, took))
        }
        .await
        .map_err(Fail::into_store)
    }

    /// Incidents resolved since `since` whose SLO budget is not recorded
    /// yet, the earliest resolved first.
    pub async fn slo_budget_due(
        &self,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<IncidentSummary>> {
        async {
            let client = self.client().await?;
            client
                .query(
                    &format!("SELECT {} FROM incidents i WHERE status = 'resolved' AND slo_budget IS NULL AND resolved_at >= $1 ORDER BY resolved_at, id LIMIT $2", *SUMMARY_COLUMNS),
                    &[&since, &i64::from(limit)],
                )
                .await?
                .iter()
                .map(summary)
                .collect::<Op<Vec<_>>>()
        }
        .await
        .map_err(Fail::into_store)
    }

    pub async fn unmatched(&self, limit: u32) -> Result<Vec<UnmatchedAlert>> {
        async {
            let client = self.client().await?;
            Ok(client
                .query("SELECT fingerprint, alertname, labels, receiver, first_seen, last_seen, seen FROM unmatched_alerts ORDER BY last_seen DESC LIMIT $1", &[&i64::from(limit)])
                .await?
                .iter()
                .map(|r| UnmatchedAlert {
                    fingerprint: r.get(0),
                    alertname: r.get(1),
                    labels: serde_json::from_str(r.get(2)).unwrap_or_default(),
                    receiver: r.get(3),
                    first_seen: ts(r.get(4)),
                    last_seen: ts(r.get(5)),
                    seen: r.get(6),
                })
                .collect())
        }
        .await
        .map_err(Fail::into_store)
    }

    pub async fn gauges(&self) -> Result<crate::store::Gauges> {
        async {
            let client = self.client().await?;
            let r = client
                .query_one(
                    "SELECT (SELECT COUNT(*) FROM runs WHERE state = 'queued'), (SELECT COUNT(*) FROM incidents WHERE status <> 'resolved' AND receiver <> 'runbookd-drill'),
                         (SELECT COUNT(*) FROM approvals WHERE state = 'pending'),
                         (SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sending')),
                         (SELECT COUNT(*) FROM outbox WHERE state = 'dead')",
                    &[],
                )
                .await?;
            Ok(crate::store::Gauges {
                queued: r.get(0),
                open: r.get(1),
                awaiting: r.get(2),
                outbox_backlog: r.get(3),
                outbox_dead: r.get(4),
            })
        }
        .await
        .map_err(Fail::into_store)
    }

    pub async fn live(&self, id: IncidentId, cursor: i64) -> Result<(Vec<LiveChunk>, bool)> {
        async {
            let client = self.client().await?;
            let chunks = client
                .query(
                    "SELECT o.id, o.run_id, o.step, o.stream, o.chunk FROM step_output o JOIN runs r ON r.id = o.run_id
                     WHERE r.incident_id = $1 AND o.id > $2 ORDER BY o.id LIMIT 500",
                    &[&id.0, &cursor],
                )
                .await?
                .iter()
                .map(|r| LiveChunk {
                    cursor: r.get(0),
                    run: r.get(1),
                    step: r.get(2),
                    stream: r.get(3),
                    text: String::from_utf8_lossy(r.get(4)).into_owned(),
                })
                .collect();
            let active: bool = client
                .query_one("SELECT EXISTS (SELECT 1 FROM runs WHERE incident_id = $1 AND state IN ('queued', 'running', 'awaiting_approval'))", &[&id.0])
                .await?
                .get(0);
            Ok((chunks, active))
        }
        .await
        .map_err(Fail::into_store)
    }

    pub async fn run_origin(&self, id: i64) -> Result<Option<(IncidentId, String, String)>> {
        async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT incident_id, runbook, fingerprint FROM runs WHERE id = $1",
                    &[&id],
                )
                .await?;
            Ok::<_, Fail>(row.map(|r| (IncidentId(r.get(0)), r.get(1), r.get(2))))
        }
        .await
        .map_err(Fail::into_store)
    }

    pub async fn recent_runs(
        &self,
        runbook: String,
        limit: u32,
    ) -> Result<Vec<(i64, IncidentId, RunState)>> {
        async {
            let client = self.client().await?;
            client
                .query("SELECT id, incident_id, state FROM runs WHERE runbook = $1 ORDER BY id DESC LIMIT $2", &[&runbook, &i64::from(limit)])
                .await?
                .iter()
                .map(|r| Ok((r.get(0), IncidentId(r.get(1)), parsed(r, 2)?)))
                .collect::<Op<Vec<_>>>()
        }
        .await
        .map_err(Fail::into_store)
    }
}

#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../tests/integration/pg.rs"]
mod pg;

#[cfg(test)]
mod tests {
    use super::driver::Conn;
    use super::{pg, Fail, Postgres, Tx};
    use crate::store::driver::Driver;

    /// A throwaway PostgreSQL and a store on a database of its own; none
    /// when PostgreSQL is missing (outside CI).
    async fn on_postgres() -> Option<(pg::Pg, Postgres)> {
        if !pg::available() {
            return None;
        }
        let pg = pg::Pg::start();
        let store = Postgres::open(&pg.database()).await.unwrap();
        Some((pg, store))
    }

    /// The pool hands out the connection returned last, so that a replica
    /// keeps sending to the few PostgreSQL backends it used a moment ago
    /// (each a process with its own caches) instead of turning through
    /// all sixteen of its pool's connections in order.
    #[tokio::test]
    async fn the_pool_hands_out_the_connection_returned_last() {
        let Some((_pg, store)) = on_postgres().await else {
            return;
        };
        let pool = &store.inner.pool;
        let pid = |c: deadpool_postgres::Object| async move {
            let row = c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap();
            (row.get::<_, i32>(0), c)
        };
        let (first, second, third) = (
            pool.get().await.unwrap(),
            pool.get().await.unwrap(),
            pool.get().await.unwrap(),
        );
        let (last, third) = pid(third).await;
        drop((first, second));
        drop(third);
        for use_ in 1..=3 {
            let (used, _) = pid(pool.get().await.unwrap()).await;
            assert_eq!(used, last, "use {use_} after the three went back");
        }
    }

    /// Every statement runs its generic plan from its first call on
    /// (`plan_cache_mode`). With PostgreSQL's default its first five calls
    /// are planned for their values, and every later one too once ANALYZE
    /// makes that look cheaper (docs/benchmarks.md).
    #[tokio::test]
    async fn statements_run_their_generic_plan_from_the_first_call() {
        let Some((_pg, store)) = on_postgres().await else {
            return;
        };
        let client = store.inner.leases.get().await.unwrap();
        let sql = "SELECT COUNT(*) FROM runs WHERE incident_id = $1";
        let statement = client.prepare_cached(sql).await.unwrap();
        client.batch_execute("ANALYZE runs").await.unwrap();
        for incident in 0..8_i64 {
            client.query_one(&statement, &[&incident]).await.unwrap();
        }
        let row = client
            .query_one(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
                &[&sql],
            )
            .await
            .unwrap();
        let plans: (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(plans, (8, 0), "(generic, custom) plans of eight calls");
    }

    /// A lock held by the statements joined after it: on a connection's
    /// first use (the simple query, while the statement is prepared) and
    /// on later ones (the prepared statement, sent at once as well).
    #[tokio::test]
    async fn a_lock_is_held_by_the_statements_joined_after_it() {
        let Some((_pg, store)) = on_postgres().await else {
            return;
        };
        let client = store.inner.claims.get().await.unwrap();
        let held = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()";
        // Prepared already, so it is sent when first polled: were the lock
        // sent only after a preparation, this would run before it.
        client.prepare_cached(held).await.unwrap();
        for use_ in ["first", "second", "third"] {
            let tx = Tx::begin(&client, "BEGIN");
            let ((), row) =
                futures_util::future::try_join(Conn(&tx).claim_lock(), tx.query_one(held, &[]))
                    .await
                    .map_err(Fail::into_store)
                    .unwrap();
            assert_eq!(row.get::<_, i64>(0), 1, "the {use_} use's lock");
            tx.commit().await.map_err(Fail::into_store).unwrap();
        }
        let prepared: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM pg_prepared_statements WHERE statement = 'SELECT pg_advisory_xact_lock($1)'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(prepared, 1, "the lock is prepared once, at its first use");
    }
}
