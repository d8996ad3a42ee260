//! runbookd: an Alertmanager webhook runbook executor.
//!
//! The tour, in the order an alert travels:
//!
//! 1. [`alert`]: the webhook payload Alertmanager sends (version 4), parsed
//!    strictly where it matters and leniently elsewhere.
//! 2. [`matcher`]: Alertmanager's matcher grammar, so runbooks select alerts
//!    exactly as routes do.
//! 3. [`runbook`]: YAML runbooks, loaded and checked up front (every error at
//!    once, with `file:line:col`), and the indexed set that finds the runbooks
//!    matching one alert.
//! 4. [`template`]: strict Handlebars; argv elements are inserted verbatim and
//!    never see a shell, shell scripts get every value single-quoted and
//!    checked to stand as an unquoted word.
//! 5. [`plan`]: alerts + runbooks → exactly what would run; execution renders
//!    steps with the same code.
//! 6. [`exec`]: the sandbox around every step (Landlock, seccomp, cgroups,
//!    namespaces, the connect guard that keeps steps off runbookd's own
//!    port) and the executor of a run.
//! 7. [`api`]: the HTTP server; [`api::auth`] decides every request before
//!    its handler (loopback is not a credential).
//! 8. [`silence`]: `silence:` steps and the keeper that ends them when due.
//! 9. [`cli`]: `check`, `run [--plan]`, and the commands that ask a server.

pub mod alert;
pub mod api;
pub mod approval;
pub mod capacity;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod drill;
pub mod duration;
pub mod exec;
pub mod incident;
pub mod lifecycle;
pub mod matcher;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod postmortem;
pub mod prometheus;
pub mod runbook;
pub mod server;
pub mod silence;
pub mod slo;
pub mod store;
pub mod template;
pub mod verify;
