//! The SQLite backend: one file (WAL, `synchronous=FULL`, migrations
//! embedded), one process at a time (an exclusive lock beside the file).
//!
//! All writes go through one writer thread that commits in groups: every
//! operation waiting when a transaction starts runs inside its own savepoint
//! of that transaction (so a failing one rolls back alone), one commit makes
//! them all durable, and only then is each caller answered. Acknowledging a
//! webhook therefore costs a share of one fsync, not a whole one. Reads use
//! their own connections (WAL readers never block the writer).

mod approvals;
mod driver;
pub(super) use driver::{at_once, Conn};
mod ops;
mod outbox;
mod silences;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{Result, StoreError};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// Statements parsed once per connection and kept (rusqlite's statement
/// cache): the same few statements run for every notification and run.
trait Cached {
    fn run<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn one<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn run<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn one<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// A stored name of an enum (a run's state, phase); a name this runbookd
/// does not know is an error (a newer runbookd wrote it), never a guess.
fn parsed<T: std::str::FromStr<Err = String>>(
    r: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<T> {
    let raw: String = r.get(idx)?;
    raw.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
    })
}

/// Statements the writer keeps parsed: every write statement there is
/// (readers keep rusqlite's default of 16, their few hot queries).
const WRITER_STATEMENTS: usize = 96;

type WriteFn = Box<dyn FnOnce(&Connection) -> Result<Box<dyn std::any::Any + Send>> + Send>;

struct WriteJob {
    op: WriteFn,
    reply: tokio::sync::oneshot::Sender<Result<Box<dyn std::any::Any + Send>>>,
}

/// Handle to the SQLite store; cheap to clone.
#[derive(Clone)]
pub struct Sqlite {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The last commit's error, cleared by the next successful commit:
    /// `/-/ready` answers 503 while it is set.
    write_error: Arc<Mutex<Option<String>>>,
    writer: Mutex<Option<mpsc::Sender<WriteJob>>>,
    readers: Mutex<Vec<Connection>>,
    /// The writer thread, which holds the store's lock (no other runbookd
    /// may write it) until its last commit: closing the store waits for it,
    /// so that a restart in the same process finds the lock free.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Takes the exclusive lock of the store at `path` (`PATH.lock` beside it),
/// before anything reads or writes the database.
fn lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(|e| {
            StoreError::Invalid(format!(
                "cannot open the store lock `{}`: {e}",
                std::path::Path::new(&lock_path).display()
            ))
        })?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut held) => {
            let _ = held.set_len(0);
            let _ = held.rewind();
            let _ = writeln!(held, "{}", std::process::id());
            Ok(held)
        }
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(StoreError::Locked {
                path: path.to_owned(),
                holder: pid.trim().parse().ok(),
            })
        }
    }
}

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
    include_str!("schema_v13.sql"),
    include_str!("schema_v14.sql"),
    include_str!("schema_v15.sql"),
    include_str!("schema_v16.sql"),
];

/// Most operations committed together in one transaction.
const MAX_BATCH: usize = 512;

fn connect(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if !read_only {
        conn.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    Ok(conn)
}

impl Sqlite {
    /// Opens (creating and migrating) the database at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<Sqlite> {
        let lock = lock(path)?;
        // Made 0600 before SQLite sees it: SQLite gives the WAL and shared
        // memory files the database file's mode.
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| {
                    StoreError::Invalid(format!("cannot open `{}`: {e}", path.display()))
                })?;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        let mut conn = connect(path, false)?;
        migrate(&mut conn)?;
        probe_write(&conn).map_err(|e| {
            StoreError::Invalid(format!(
                "the store `{}` cannot be written: {e} (runbookd needs write permission on the file and its directory)",
                path.display()
            ))
        })?;
        let (tx, rx) = mpsc::channel::<WriteJob>();
        let write_error = Arc::new(Mutex::new(None));
        let health = write_error.clone();
        let thread = std::thread::Builder::new()
            .name("runbookd-store".into())
            .spawn(move || {
                let _lock = lock;
                writer(conn, &rx, &health);
            })
            .map_err(|e| StoreError::Invalid(format!("cannot start the store writer: {e}")))?;
        Ok(Sqlite {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                write_error,
                writer: Mutex::new(Some(tx)),
                readers: Mutex::new(Vec::new()),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Opens the store at `path` for reading only (the CLI beside a running
    /// server): no lock, no migration, no writes.
    ///
    /// # Errors
    /// When the file does not exist or cannot be opened.
    pub fn open_read_only(path: &Path) -> Result<Sqlite> {
        if !path.exists() {
            return Err(StoreError::NotFound(format!(
                "store `{}` (start `runbookd serve` first, or pass --data-dir)",
                path.display()
            )));
        }
        connect(path, true)?;
        Ok(Sqlite {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                write_error: Arc::new(Mutex::new(None)),
                writer: Mutex::new(None),
                readers: Mutex::new(Vec::new()),
                thread: Mutex::new(None),
            }),
        })
    }

    /// Runs `op` in its own savepoint of the next group transaction; the
    /// returned future resolves once that transaction is committed. The
    /// operation is queued when this is called, not when the future is first
    /// polled, so writes issued together share one commit.
    ///
    /// # Errors
    /// The operation's own error (its savepoint rolled back), or a failed commit.
    pub(super) fn write<T, F>(
        &self,
        op: F,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = WriteJob {
            op: Box::new(move |tx| op(tx).map(|v| Box::new(v) as Box<dyn std::any::Any + Send>)),
            reply,
        };
        let sent = {
            let writer = self
                .inner
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            writer
                .as_ref()
                .ok_or(StoreError::Stopped)
                .and_then(|w| w.send(job).map_err(|_| StoreError::Stopped))
        };
        async move {
            sent?;
            let value = rx.await.map_err(|_| StoreError::Stopped)??;
            Ok(*value
                .downcast::<T>()
                .map_err(|_| StoreError::Invalid("store reply of the wrong type".into()))?)
        }
    }

    /// Runs `op` on a read connection (on the blocking pool).
    ///
    /// # Errors
    /// The query's error.
    async fn read<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let conn = match conn {
                Some(c) => c,
                None => connect(&inner.path, true)?,
            };
            // One snapshot for all of a read's queries: counts read together
            // (stats, an incident's runs and timeline) agree with each other.
            let result = conn
                .execute_batch("BEGIN")
                .map_err(StoreError::from)
                .and_then(|()| {
                    let r = op(&conn);
                    let _ = conn.execute_batch("ROLLBACK");
                    r
                });
            inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("read task failed: {e}")))?
    }

    /// Stops the writer after the queued writes.
    /// Why the last commit failed, while no later one has succeeded.
    #[must_use]
    pub fn write_error(&self) -> Option<String> {
        self.inner
            .write_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops taking writes; returns once the writes queued so far are
    /// committed and the store's lock is released.
    pub fn close(&self) {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if current > known {
        return Err(StoreError::Invalid(format!(
            "the database is at schema version {current}, newer than this runbookd ({known})"
        )));
    }
    // SQLite's procedure for schema changes it cannot ALTER (a table is
    // rebuilt): foreign keys off outside the transaction, checked inside it
    // before the commit, on again after.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let migrated = (|| {
        for (i, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(current).unwrap_or(0))
        {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            let broken: Option<String> = tx
                .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                .optional()?;
            if let Some(table) = broken {
                return Err(StoreError::Invalid(format!(
                    "migrating to schema version {} broke a reference in table `{table}`",
                    i + 1
                )));
            }
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [i64::try_from(i + 1).unwrap_or(i64::MAX)],
            )?;
            tx.commit()?;
        }
        Ok(())
    })();
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrated
}

/// The writer thread: group commit of everything queued.
/// A real write, rolled back: SQLite opens a file it cannot write without
/// complaint and fails only at the first write.
fn probe_write(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let written = conn.execute("UPDATE schema_version SET version = version", []);
    conn.execute_batch("ROLLBACK")?;
    written.map(|_| ())
}

fn writer(mut conn: Connection, rx: &mpsc::Receiver<WriteJob>, health: &Mutex<Option<String>>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut done = Vec::with_capacity(jobs.len());
        let changes = conn.total_changes();
        let committed = commit_batch(&mut conn, jobs, &mut done);
        // A failed commit makes the store unready; only a commit that
        // really wrote makes it ready again (reads commit on a full disk).
        let wrote = conn.total_changes() > changes;
        match &committed {
            Err(e) => *health.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string()),
            Ok(()) if wrote => *health.lock().unwrap_or_else(PoisonError::into_inner) = None,
            Ok(()) => {}
        }
        match committed {
            Ok(()) => {
                for (reply, result) in done {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed; the batch is not acknowledged");
                for (reply, _) in done {
                    let _ = reply.send(Err(StoreError::Invalid(format!("commit failed: {e}"))));
                }
            }
        }
    }
}

type Done = Vec<(
    tokio::sync::oneshot::Sender<Result<Box<dyn std::any::Any + Send>>>,
    Result<Box<dyn std::any::Any + Send>>,
)>;

/// Runs each job in its own savepoint of one transaction, then commits once.
fn commit_batch(conn: &mut Connection, jobs: Vec<WriteJob>, done: &mut Done) -> Result<()> {
    let mut tx = conn.transaction()?;
    let mut failed: Option<StoreError> = None;
    for job in jobs {
        if let Some(e) = &failed {
            done.push((job.reply, Err(StoreError::Invalid(e.to_string()))));
            continue;
        }
        let result = match tx.savepoint() {
            Ok(sp) => {
                let result = (job.op)(&sp);
                if result.is_ok() {
                    if let Err(e) = sp.commit() {
                        failed = Some(e.into());
                    }
                }
                // A savepoint dropped without commit rolls back this operation only.
                result
            }
            Err(e) => {
                let msg = e.to_string();
                failed = Some(e.into());
                Err(StoreError::Invalid(msg))
            }
        };
        done.push((job.reply, result));
    }
    if let Some(e) = failed {
        return Err(e);
    }
    tx.set_drop_behavior(rusqlite::DropBehavior::Rollback);
    tx.commit()?;
    Ok(())
}

/// A stored instant is read as one: a text that is not one is an error
/// naming it.
impl rusqlite::types::FromSql for crate::timestamp::Timestamp {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        v.as_str()?
            .parse()
            .map_err(|e: String| rusqlite::types::FromSqlError::Other(e.into()))
    }
}

/// A run's id is read as one.
impl rusqlite::types::FromSql for crate::incident::RunId {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        v.as_i64().map(crate::incident::RunId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store made by the previous runbookd (schema 10) keeps its runs, and
    /// what refers to them, through the runs table's rebuild.
    #[test]
    fn the_runs_table_rebuild_keeps_runs_and_their_references() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            .unwrap();
        for (i, sql) in MIGRATIONS[..10].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_version (version) VALUES (?1)", [i + 1])
                .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO notifications (id, received_at, receiver, group_key, status, body) VALUES (1, 't', 'r', 'g', 'firing', x'7b7d');
             INSERT INTO incidents (id, receiver, group_key, title, severity, status, created_at, updated_at, acknowledged_by)
               VALUES (1, 'r', 'g', 'T', 'sev2', 'identified', 't', 't', 'alice');
             INSERT INTO runs (id, incident_id, notification_id, runbook, fingerprint, starts_at, phase, state, queued_at, attempt)
               VALUES (7, 1, 1, 'fix', 'f1', 't0', 'remediation', 'queued', 't', 0),
                      (8, 1, 1, 'fix', 'f2', 't0', 'remediation', 'succeeded', 't', 1);
             INSERT INTO step_output (run_id, step, seq, stream, chunk) VALUES (8, 's', 1, 'stdout', x'6869');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let runs: Vec<(i64, String, i64)> = conn
            .prepare("SELECT id, state, rerun FROM runs ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            runs,
            [(7, "queued".to_owned(), 0), (8, "succeeded".to_owned(), 0)]
        );
        let depth: i64 = conn
            .query_row("SELECT n FROM queue_depth", [], |r| r.get(0))
            .unwrap();
        assert_eq!(depth, 1, "the queue depth counts the queued run");
        // The triggers were made again on the new table.
        conn.execute("UPDATE runs SET state = 'running' WHERE id = 7", [])
            .unwrap();
        let depth: i64 = conn
            .query_row("SELECT n FROM queue_depth", [], |r| r.get(0))
            .unwrap();
        assert_eq!(depth, 0);
        let commander: String = conn
            .query_row("SELECT commander FROM incidents WHERE id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(commander, "alice", "who acknowledged leads");
        // References hold, and are enforced again.
        let broken: Option<String> = conn
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()
            .unwrap();
        assert_eq!(broken, None);
        assert!(conn
            .execute(
                "INSERT INTO step_output (run_id, step, seq, stream, chunk) VALUES (99, 's', 1, 'stdout', x'00')",
                []
            )
            .is_err());
        // States are checked.
        assert!(conn
            .execute("UPDATE runs SET state = 'weird' WHERE id = 8", [])
            .is_err());
    }
}
