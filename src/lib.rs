//! runbookd: an Alertmanager webhook runbook executor.
//!
//! The tour, in the order an alert travels:
//!
//! 1. [`alert`]: the webhook payload Alertmanager sends (version 4), parsed
//!    strictly where it matters and leniently elsewhere; [`duration`] the
//!    durations Prometheus and Alertmanager write; [`timestamp`] the
//!    instants runbookd records, as every reader sees them; [`clock`] what
//!    time it is for drills (a test sets it); [`ids`] a run's id.
//! 2. [`matcher`]: Alertmanager's matcher grammar, so runbooks select alerts
//!    exactly as routes do.
//! 3. [`runbook`]: YAML runbooks, loaded and checked up front (every error at
//!    once, with `file:line:col`), and the indexed set that finds the runbooks
//!    matching one alert. The runbook model holds what a runbook says of
//!    each step kind and of telling people ([`runbook::notify`],
//!    [`runbook::verify`]).
//! 4. [`template`]: strict Handlebars; argv elements are inserted verbatim and
//!    never see a shell, shell scripts get every value single-quoted and
//!    checked to stand as an unquoted word.
//! 5. [`plan`]: alerts + runbooks → exactly what would run; execution renders
//!    steps with the same code.
//! 6. The records: [`record`] what a run did, step by step (one
//!    `is_failure()` for every reader); [`approval`] a run's approvals;
//!    [`incident`] what the store returns of incidents, runs and (in
//!    [`incident::notices`]) notifications; [`lifecycle`] the incident's
//!    status and the events a run's end causes, as pure functions.
//! 7. [`store`]: the durable record (notifications, incidents, runs, the
//!    outbox), its operations written once in `store::flow` over a driver
//!    of single statements per backend (SQLite or PostgreSQL).
//! 8. The integrations and the steps that are not commands:
//!    [`integrations`] (what a run may ask of the world beyond its
//!    processes, as traits), [`alertmanager`] and [`prometheus`] (the
//!    clients that implement them, which SLOs and the silence keeper also
//!    use), [`verify`] (did the remediation work), [`silence`] (the keeper
//!    that ends `silence:` steps' silences when due; the executor makes
//!    them through [`integrations::Alerts`]).
//! 9. Telling people: [`notify`] (notifiers, the outbox worker) and
//!    [`postmortem`] (the draft, from the incident record).
//! 10. Knowing the service: [`slo`] (SLO files, error budgets, policies and
//!     gates) and [`capacity`] (when will it be full).
//! 11. [`exec`]: the sandbox around every step (Landlock, seccomp, cgroups,
//!     namespaces, the connect guard that keeps steps off runbookd's own
//!     port) and the executor of a run; [`dispatch`]: notification →
//!     incident → queued runs → claims, leases and the executor; [`drill`]
//!     runs runbooks on a schedule as game days.
//! 12. [`config`] (the settings, checked before anything starts; [`secret`]
//!     and [`shared`] what it hands the rest), [`api`] (the HTTP server;
//!     [`api::auth`] decides every request before its handler, loopback is
//!     not a credential; [`metrics`] runbookd's own golden signals),
//!     [`server`] (`runbookd serve` wired together) and [`cli`] (`check`,
//!     `run [--plan]`, and the commands that ask a server).
//!
//! The modules stand in the layers of [`LAYERS`], lowest first: each
//! imports only from its own layer and those below, and no two import each
//! other. [`named`] names the variants of the enums that are stored and
//! sent by name.

/// The layers, lowest first. A module imports only from its own layer and
/// those below; an import that points up says why in a `// layer:` comment
/// on its line; no two modules import each other, even within a layer.
/// `tests/integration/layers.rs` reads `src/` and holds the code to this.
#[doc(hidden)]
pub const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "duration",
            "timestamp",
            "clock",
            "ids",
            "named",
            "secret",
            "shared",
            "alert",
            "matcher",
            "template",
            "metrics",
        ],
    ),
    (
        "model",
        &[
            "runbook",
            "plan",
            "approval",
            "record",
            "incident",
            "lifecycle",
        ],
    ),
    ("store", &["store"]),
    (
        "integrations and steps",
        &[
            "integrations",
            "prometheus",
            "alertmanager",
            "verify",
            "silence",
            "notify",
            "slo",
            "capacity",
            "postmortem",
            "exec",
        ],
    ),
    ("running", &["dispatch", "drill"]),
    ("edge", &["config", "api", "server", "cli"]),
];

pub mod alert;
pub mod alertmanager;
pub mod api;
pub mod approval;
pub mod capacity;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod drill;
pub mod duration;
pub mod exec;
pub mod ids;
pub mod incident;
pub mod integrations;
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
pub mod secret;
pub mod server;
pub mod shared;
pub mod silence;
pub mod slo;
pub mod store;
pub mod template;
pub mod timestamp;
pub mod verify;
