//! runbookd: an Alertmanager webhook runbook executor.
//!
//! The tour, in the order an alert travels:
//!
//! 1. [`alert`]: the webhook payload Alertmanager sends (version 4), parsed
//!    strictly where it matters and leniently elsewhere; [`duration`] the
//!    durations Prometheus and Alertmanager write.
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
//! 6. [`store`]: the durable record (notifications, incidents, runs, the
//!    outbox), its operations written once in `store::flow` over a driver
//!    of single statements per backend (SQLite or PostgreSQL);
//!    [`incident`] the records it returns and [`lifecycle`] the incident's
//!    status as pure transitions.
//! 7. [`dispatch`]: notification → incident → queued runs → claims, leases
//!    and the executor; [`exec`] the sandbox around every step (Landlock,
//!    seccomp, cgroups, namespaces, the connect guard that keeps steps off
//!    runbookd's own port) and the executor of a run.
//! 8. The steps that are not commands: [`approval`] (a run waits for a
//!    person), [`silence`] (`silence:` steps and the keeper that ends them
//!    when due), [`verify`] (did the remediation work, asked of Prometheus
//!    or Alertmanager).
//! 9. Telling people: [`notify`] (communication, escalation, the outbox
//!    worker) and [`postmortem`] (the draft, from the incident record).
//! 10. Knowing the service: [`slo`] (SLO files, error budgets, policies and
//!     gates), [`prometheus`] (the query API they are read from) and
//!     [`capacity`] (when will it be full); [`drill`] runs runbooks on a
//!     schedule as game days.
//! 11. [`api`]: the HTTP server; [`api::auth`] decides every request before
//!     its handler (loopback is not a credential); [`metrics`] runbookd's
//!     own golden signals.
//! 12. [`config`] and [`server`]: the settings, checked before anything
//!     starts, and `runbookd serve` wired together; [`cli`]: `check`,
//!     `run [--plan]`, and the commands that ask a server.

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
pub mod named;
pub mod notify;
pub mod plan;
pub mod postmortem;
pub mod prometheus;
pub mod record;
pub mod runbook;
pub mod server;
pub mod silence;
pub mod slo;
pub mod store;
pub mod template;
pub mod verify;
