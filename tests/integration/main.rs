//! The one integration test binary: runs the real `runbookd` binary and the
//! library against the captured Alertmanager payloads and example runbooks.

mod check;
mod exec;
mod helpers;
mod payload;
mod plan;
