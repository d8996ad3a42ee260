//! The store's operations, written once over a [`Driver`]: what to read,
//! what it means and what to write, for both backends.
//!
//! Each function runs inside the transaction its caller opened (SQLite's
//! savepoint in a group commit, PostgreSQL's retried transaction) and
//! returns the driver's failure, so that PostgreSQL can tell a conflict
//! between replicas (run again) from an answer.
//!
//! Statements that do not depend on each other are awaited together
//! (`try_join`): SQLite runs them one after the other as written, and
//! PostgreSQL sends them in one round trip (tokio-postgres pipelines the
//! queries of one connection). PostgreSQL executes them in the order they
//! are sent, which is the written order except when a later statement is
//! already prepared on the connection and an earlier one is not yet. So a
//! join relies on its order only for statements always used together
//! (alert status before its upsert), and for a lock joined first with the
//! statements that must run under it (`claim_lock`, `lock_run_incident`):
//! the driver sends those when first polled, prepared or not (PostgreSQL's
//! `Tx::at_once`).
//!
//! Rules that are not about
//! storage (the incident lifecycle, who may re-run what, what a
//! notification policy queues) stay in their own modules and are called
//! from here.

pub(super) mod approvals;
pub(super) mod gates;
pub(super) mod incidents;
pub(super) mod ingest;
pub(super) mod outbox;
pub(super) mod people;
pub(super) mod reads;
pub(super) mod runs;

pub(super) use super::driver::{Driver, Op};
