//! The command line: its arguments, and [`run`], which hands each command to
//! its module: `check` (files checked before anything runs), `run`
//! (`run [--plan]` at the terminal), `serve`, and `server` (the commands that
//! ask a running server). Each command returns its exit
//! status; `main` only prints the error of a command that could not run.
//!
//! Exit status: 0 success; 1 the thing checked is wrong (invalid runbooks, a
//! plan with steps that cannot be rendered); 2 bad usage or unreadable input.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

/// `println!` for the live transcript and summaries, which must not panic
/// when standard output is a pipe whose reader left (`runbookd run | head`):
/// the run goes on to its end, its steps are not abandoned, and nothing more
/// is printed.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod check;
mod run;
mod serve;
mod server;

use check::{capacity, check, check_slos, config_notifiers, slo};
use run::run_alert;
use serve::{parse_store, serve, store_url};
pub use server::ServerArgs;
use server::{decide, gate, incidents, notifications, postmortem, update};

#[derive(Debug, Parser)]
#[command(
    name = "runbookd",
    version,
    about = "Alertmanager webhook runbook executor"
)]
pub struct Args {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "RUNBOOKD_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive Alertmanager webhooks, run matching runbooks, record incidents.
    Serve {
        /// Settings file (YAML): auth, limits, sandbox, shutdown grace.
        #[arg(long, env = "RUNBOOKD_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:9095].
        #[arg(long, env = "RUNBOOKD_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Directory of runbook files [default: runbooks].
        #[arg(long, env = "RUNBOOKD_RUNBOOKS")]
        runbooks: Option<PathBuf>,
        /// Directory of SLO files, Sloth or OpenSLO (docs/slos.md).
        #[arg(long, env = "RUNBOOKD_SLOS")]
        slos: Option<PathBuf>,
        /// Where the SQLite store lives [default: data].
        #[arg(long, env = "RUNBOOKD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The store: sqlite:PATH [default: sqlite:DATA_DIR/runbookd.db] or
        /// postgres://USER@HOST/DB for several replicas (docs/ha.md). Give a
        /// password by environment or config file, not on the command line.
        #[arg(long, env = "RUNBOOKD_STORE")]
        store: Option<String>,
        /// This replica's name in run records [default: HOSTNAME:PID].
        #[arg(long, env = "RUNBOOKD_REPLICA")]
        replica: Option<String>,
        /// How long a claimed run is held without a heartbeat [default: 15s].
        #[arg(long, value_parser = crate::duration::parse, env = "RUNBOOKD_LEASE")]
        lease: Option<std::time::Duration>,
        /// When runbookd runs as root, steps run as this user [default: nobody].
        #[arg(long, env = "RUNBOOKD_RUN_AS")]
        run_as: Option<String>,
        /// Run steps as root when runbookd runs as root (not recommended).
        #[arg(long, env = "RUNBOOKD_ALLOW_ROOT_STEPS")]
        allow_root_steps: bool,
        /// Refuse to start when a sandbox layer the configuration asks for is not enforced (`runbookd status` lists them)
        #[arg(long, env = "RUNBOOKD_SANDBOX_STRICT")]
        strict_sandbox: bool,
        /// Between SIGTERM and SIGKILL when a step times out or is cancelled [default: 5s].
        #[arg(long, value_parser = crate::duration::parse, env = "RUNBOOKD_KILL_GRACE")]
        kill_grace: Option<std::time::Duration>,
        /// Shadow mode: record incidents and plans, execute nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Draft the postmortem of an incident (Markdown on standard output).
    Postmortem {
        /// e.g. INC-0042
        id: crate::incident::IncidentId,
        /// A Handlebars template instead of the default (see docs/postmortem.md).
        #[arg(long)]
        template: Option<PathBuf>,
        /// Where the SQLite store lives.
        #[arg(long, default_value = "data", env = "RUNBOOKD_DATA_DIR")]
        data_dir: PathBuf,
        /// The store, when not the SQLite file in --data-dir.
        #[arg(long, env = "RUNBOOKD_STORE")]
        store: Option<String>,
    },
    /// Read incidents from the store.
    Incidents {
        /// Where the SQLite store lives.
        #[arg(long, default_value = "data", env = "RUNBOOKD_DATA_DIR", global = true)]
        data_dir: PathBuf,
        /// The store, when not the SQLite file in --data-dir.
        #[arg(long, env = "RUNBOOKD_STORE", global = true)]
        store: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
        output: Output,
        #[command(subcommand)]
        action: IncidentsAction,
    },
    /// Validate runbooks; print every error as `file:line:col` (like `amtool check-config`).
    Check {
        /// Runbook files, or directories of them (*.yaml, *.yml).
        #[arg(default_value = "runbooks", env = "RUNBOOKD_RUNBOOKS", num_args = 1..)]
        paths: Vec<PathBuf>,
        /// The server's settings file: notifiers that runbooks name must be in its `notifiers:`.
        #[arg(long, env = "RUNBOOKD_CONFIG")]
        config: Option<PathBuf>,
        /// Also check the SLO files of this directory (or file).
        #[arg(long, env = "RUNBOOKD_SLOS")]
        slos: Option<PathBuf>,
    },
    /// Service level objectives (docs/slos.md).
    Slo {
        #[command(subcommand)]
        action: SloAction,
    },
    /// When each forecast's usage reaches its capacity, fitted from
    /// Prometheus's history (docs/capacity.md; no server needed). Exits 1
    /// when a forecast could not be read.
    Capacity {
        #[command(flatten)]
        from: FromPrometheus,
    },
    /// May risky changes to SERVICE go ahead now (asks the running server)?
    /// Exit 0: allowed; 1: an error-budget policy freezes it (the reasons
    /// are printed); 2: the server could not say. For CI/CD pipelines.
    /// With --override, an operator lets a frozen SERVICE's gate say yes
    /// for a while, recorded with who and why; --end-override ends it.
    Gate {
        /// The service, as its SLOs name it.
        service: String,
        /// Override a freeze, saying why (needs --for).
        #[arg(
            long,
            value_name = "REASON",
            requires = "for_",
            conflicts_with = "end_override"
        )]
        r#override: Option<String>,
        /// How long the override lasts: `30m`, `2h`, `1d` (at most 7d).
        #[arg(
            long = "for",
            id = "for_",
            value_name = "DURATION",
            requires = "override"
        )]
        for_: Option<String>,
        /// End the override in force early.
        #[arg(long)]
        end_override: bool,
        #[command(flatten)]
        server: ServerArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// What the running server's step sandbox enforces right now, layer by
    /// layer, and why a missing layer is missing (asks the server).
    Status {
        #[command(flatten)]
        server: ServerArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Acknowledge an incident (asks the running server): stops its escalations, tells people.
    Ack {
        /// e.g. INC-0042
        id: crate::incident::IncidentId,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Post an update to an incident (asks the running server): a message, and optionally a new status or the root cause.
    Update {
        /// e.g. INC-0042
        id: crate::incident::IncidentId,
        /// What happened, for the timeline.
        message: String,
        /// A new status (investigating, identified, monitoring, resolved).
        #[arg(long)]
        status: Option<crate::incident::IncidentStatus>,
        /// What caused it (the postmortem shows it).
        #[arg(long)]
        root_cause: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Resolve an incident (asks the running server): an update with status `resolved`.
    Resolve {
        /// e.g. INC-0042
        id: crate::incident::IncidentId,
        /// Why, for the timeline.
        #[arg(default_value = "resolved")]
        message: String,
        /// What caused it (the postmortem shows it).
        #[arg(long)]
        root_cause: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Tick a checklist item of an incident as done (asks the running server); `--undo` reopens it.
    Tick {
        /// e.g. INC-0042
        id: crate::incident::IncidentId,
        /// The item: its manual step's name (`incidents show` lists them).
        step: String,
        /// The run whose item it is, when several runs have one of that name.
        #[arg(long)]
        run: Option<i64>,
        /// Reopen the item instead.
        #[arg(long)]
        undo: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Hand command of an incident over (asks the running server): NAME leads it from now on.
    Handover {
        /// e.g. INC-0042
        id: crate::incident::IncidentId,
        /// The new incident commander (with users on the server: an operator's name).
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run a runbook now, by hand (asks the running server): a manual run with these labels.
    Trigger {
        /// The runbook's name.
        runbook: String,
        /// A label of the run's alert, `NAME=VALUE` (repeatable); `alertname` defaults to the runbook's name.
        #[arg(long = "label", value_name = "NAME=VALUE")]
        labels: Vec<String>,
        /// An annotation, `NAME=VALUE` (repeatable).
        #[arg(long = "annotation", value_name = "NAME=VALUE")]
        annotations: Vec<String>,
        /// Print what would run (JSON), run nothing.
        #[arg(long)]
        plan: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run a run's runbook again for the same alert, on the same incident, in the run's place (asks the running server).
    Rerun {
        /// The run's id (`incidents show`).
        run: i64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Approve the step a run waits on (asks the running server): the run goes on.
    Approve(DecideArgs),
    /// Deny the step a run waits on (asks the running server): the step fails, `on_failure` runs.
    Deny(DecideArgs),
    /// Cancel a queued or running run, or one waiting for approval (asks the running server).
    Cancel {
        /// The run's id (`incidents show`).
        run: i64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// What runbookd told people: list notifications, retry a dead one.
    Notifications {
        /// Where the SQLite store lives.
        #[arg(long, default_value = "data", env = "RUNBOOKD_DATA_DIR", global = true)]
        data_dir: PathBuf,
        /// The store, when not the SQLite file in --data-dir.
        #[arg(long, env = "RUNBOOKD_STORE", global = true)]
        store: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
        output: Output,
        #[command(subcommand)]
        action: NotificationsAction,
    },
    /// Run the runbooks matching an Alertmanager payload, or with --plan show what would run.
    Run {
        /// Alertmanager webhook payload (JSON); `-` reads standard input.
        #[arg(long, value_name = "FILE")]
        alert: PathBuf,
        /// Directory of runbook files (*.yaml).
        #[arg(long, default_value = "runbooks", env = "RUNBOOKD_RUNBOOKS")]
        runbooks: PathBuf,
        /// Show exactly what would run, without running anything.
        #[arg(long)]
        plan: bool,
        /// Output format of the plan.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
}

/// Sandbox settings for executing steps.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// When runbookd runs as root, steps run as this user.
    #[arg(long, default_value = "nobody", env = "RUNBOOKD_RUN_AS")]
    pub run_as: String,
    /// Run steps as root when runbookd runs as root (not recommended).
    #[arg(long, env = "RUNBOOKD_ALLOW_ROOT_STEPS")]
    pub allow_root_steps: bool,
    /// Refuse to run when a sandbox layer the configuration asks for is not enforced (`runbookd status` lists them)
    #[arg(long, env = "RUNBOOKD_SANDBOX_STRICT")]
    pub strict_sandbox: bool,
    /// Between SIGTERM and SIGKILL when a step times out or is cancelled.
    #[arg(long, default_value = "5s", value_parser = crate::duration::parse, env = "RUNBOOKD_KILL_GRACE")]
    pub kill_grace: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum SloAction {
    /// Write Prometheus recording and burn-rate alerting rules for the SLOs
    /// (Sloth's names and labels; event-weighted period ratio).
    Rules {
        /// Directory (or file) of SLO files, Sloth or OpenSLO.
        #[arg(long, default_value = "slos", env = "RUNBOOKD_SLOS")]
        slos: PathBuf,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Each SLO's budget, burn rates and state, straight from Prometheus
    /// (no server needed).
    Status {
        #[command(flatten)]
        from: FromPrometheus,
    },
}

/// Where the SLO commands read: the SLO files, and the Prometheus to ask.
#[derive(Debug, clap::Args)]
pub struct FromPrometheus {
    /// Directory (or file) of SLO files: Sloth, OpenSLO, `forecasts:`.
    #[arg(long, default_value = "slos", env = "RUNBOOKD_SLOS")]
    pub slos: PathBuf,
    /// The server's settings file, for its `prometheus:`.
    #[arg(long, env = "RUNBOOKD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Prometheus's URL, instead of the config's.
    #[arg(long, env = "RUNBOOKD_PROMETHEUS")]
    pub prometheus: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum IncidentsAction {
    /// List incidents, open ones first.
    List {
        /// Only incidents with this status, or `open` (any but resolved).
        #[arg(long)]
        status: Option<crate::incident::StatusFilter>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Everything recorded about one incident.
    Show {
        /// e.g. INC-0042
        id: crate::incident::IncidentId,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotificationsAction {
    /// Notifications, newest first.
    List {
        /// Only this incident's, e.g. INC-0042.
        #[arg(long)]
        incident: Option<crate::incident::IncidentId>,
        /// Only those in this state (pending, sending, delivered, dead, suppressed).
        #[arg(long)]
        state: Option<crate::incident::notices::DeliveryState>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Queue a dead notification again (asks the running server).
    Retry {
        /// The notification's id (`notifications list`).
        id: i64,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `approve` and `deny`: which run, which approval, and why.
#[derive(Debug, Clone, clap::Args)]
pub struct DecideArgs {
    /// The run's id (`incidents show`, the incident page).
    pub run: i64,
    /// Why, for the timeline.
    #[arg(long)]
    pub comment: Option<String>,
    /// The approval you answer (its id, as the incident shows it)
    /// [default: the one the run waits on now, whose prompt is printed].
    #[arg(long)]
    pub approval: Option<i64>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Runs one command.
///
/// # Errors
/// When the command cannot do its work at all (unreadable input, say).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Serve {
            config,
            listen,
            runbooks,
            slos,
            data_dir,
            store,
            replica,
            lease,
            run_as,
            allow_root_steps,
            strict_sandbox,
            kill_grace,
            plan,
        } => {
            let overrides = crate::config::Overrides {
                listen,
                runbooks,
                slos,
                data_dir,
                store: parse_store(store)?,
                replica,
                lease,
                run_as,
                // A flag that is not given leaves the config file's value.
                allow_root_steps: allow_root_steps.then_some(true),
                strict_sandbox: strict_sandbox.then_some(true),
                kill_grace,
                shadow: plan,
            };
            let cfg = crate::config::ServerConfig::load(config.as_deref(), overrides)?;
            serve(cfg, args.log_format)
        }
        Command::Incidents {
            data_dir,
            store,
            output,
            action,
        } => incidents(&store_url(store, &data_dir)?, output, &action),
        Command::Postmortem {
            id,
            template,
            data_dir,
            store,
        } => postmortem(id, template.as_deref(), &store_url(store, &data_dir)?),
        Command::Check {
            paths,
            config,
            slos,
        } => {
            let names = config_notifiers(config.as_deref())?;
            // The SLOs runbooks' verify steps name, when the files load.
            let defined = slos
                .as_deref()
                .and_then(|d| crate::slo::load_paths(&[d.to_owned()]).ok());
            let runbooks = check(&paths, names.as_deref(), defined.as_ref());
            let slos = match slos {
                None => ExitCode::SUCCESS,
                Some(dir) => check_slos(&dir, names.as_deref()),
            };
            Ok(if runbooks == ExitCode::SUCCESS {
                slos
            } else {
                runbooks
            })
        }
        Command::Slo { action } => slo(action),
        Command::Capacity { from } => capacity(
            &from.slos,
            from.config.as_deref(),
            from.prometheus,
            from.output,
        ),
        Command::Gate {
            service,
            r#override,
            for_,
            end_override,
            server,
            output,
        } => {
            let change = match (r#override, for_, end_override) {
                (Some(reason), Some(length), _) => {
                    let mut body = server.author_body();
                    body["reason"] = serde_json::json!(reason);
                    body["for"] = serde_json::json!(length);
                    Some((reqwest::Method::POST, body))
                }
                (_, _, true) => Some((reqwest::Method::DELETE, server.author_body())),
                _ => None,
            };
            gate(&service, change.as_ref(), &server, output)
        }
        Command::Status { server, output } => {
            server.ask(reqwest::Method::GET, "/api/v1/status", None, |v| {
                if output == Output::Json {
                    say!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
                    return;
                }
                say!(
                    "runbookd {} on {}; steps' sandbox{}:",
                    v["version"].as_str().unwrap_or("?"),
                    v["store"].as_str().unwrap_or("?"),
                    if v["sandbox"]["strict"] == true {
                        " (strict)"
                    } else {
                        ""
                    }
                );
                for l in v["sandbox"]["layers"].as_array().into_iter().flatten() {
                    say!(
                        "  {:<18} {:<8} {}",
                        l["layer"].as_str().unwrap_or("?"),
                        if l["enforced"] == true {
                            "yes"
                        } else {
                            "MISSING"
                        },
                        printable(l["detail"].as_str().unwrap_or(""))
                    );
                }
            })
        }
        Command::Ack { id, server } => {
            // Someone else's acknowledgement is theirs: said, exit status 1.
            let mut mine = true;
            let code = server.post_then(
                &format!("/api/v1/incidents/{id}/acknowledge"),
                &server.author_body(),
                |v| {
                    if v["acknowledged"] == serde_json::Value::Bool(true) {
                        say!("{id} acknowledged");
                    } else {
                        mine = false;
                        eprintln!(
                            "{id} was already acknowledged by {} at {}",
                            printable(v["acknowledged_by"].as_str().unwrap_or("someone")),
                            v["acknowledged_at"].as_str().unwrap_or("?")
                        );
                    }
                },
            )?;
            Ok(if mine { code } else { ExitCode::from(1) })
        }
        Command::Trigger {
            runbook,
            labels,
            annotations,
            plan,
            server,
        } => {
            let pairs = |list: &[String],
                         what: &str|
             -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
                list.iter()
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').ok_or_else(|| {
                            anyhow::anyhow!("bad {what} `{kv}`: write NAME=VALUE")
                        })?;
                        Ok((k.to_owned(), serde_json::Value::String(v.to_owned())))
                    })
                    .collect()
            };
            let mut body = server.author_body();
            body["labels"] = serde_json::Value::Object(pairs(&labels, "label")?);
            body["annotations"] = serde_json::Value::Object(pairs(&annotations, "annotation")?);
            body["plan"] = serde_json::Value::Bool(plan);
            if plan {
                body.as_object_mut().map(|o| o.remove("author"));
            }
            server.post_then(&format!("/api/v1/runbooks/{runbook}/runs"), &body, |v| {
                if plan {
                    say!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
                } else if v["runs"][0].is_null() {
                    say!(
                        "{}: no run queued (a run of `{runbook}` for this alert is already in progress)",
                        v["incident"].as_str().unwrap_or("?")
                    );
                } else {
                    say!(
                        "{}: run {} of `{runbook}` queued",
                        v["incident"].as_str().unwrap_or("?"),
                        v["runs"][0]
                    );
                }
            })
        }
        Command::Rerun { run, server } => server.post_then(
            &format!("/api/v1/runs/{run}/rerun"),
            &server.author_body(),
            |v| {
                say!(
                    "{}: run {run} re-run as run {}",
                    v["incident"].as_str().unwrap_or("?"),
                    v["runs"][0]
                );
            },
        ),
        Command::Update {
            id,
            message,
            status,
            root_cause,
            server,
        } => update(id, &message, status, root_cause, &server),
        Command::Resolve {
            id,
            message,
            root_cause,
            server,
        } => update(
            id,
            &message,
            Some(crate::incident::IncidentStatus::Resolved),
            root_cause,
            &server,
        ),
        Command::Tick {
            id,
            step,
            run,
            undo,
            server,
        } => {
            let mut body = server.author_body();
            body["step"] = serde_json::json!(step);
            body["done"] = serde_json::json!(!undo);
            if let Some(r) = run {
                body["run_id"] = serde_json::json!(r);
            }
            server.post_then(&format!("/api/v1/incidents/{id}/checklist"), &body, |v| {
                if let Some(by) = v["done_by"].as_str() {
                    say!(
                        "{id}: `{}` of run #{} done (by {})",
                        printable(&step),
                        v["run_id"],
                        printable(by)
                    );
                } else {
                    say!("{id}: `{}` of run #{} open", printable(&step), v["run_id"]);
                }
            })
        }
        Command::Handover { id, name, server } => {
            let mut body = server.author_body();
            body["name"] = serde_json::json!(name);
            server.post_then(&format!("/api/v1/incidents/{id}/commander"), &body, |v| {
                let now = printable(v["commander"].as_str().unwrap_or("?"));
                match v["previous"].as_str() {
                    _ if v["changed"] == serde_json::json!(false) => {
                        say!("{id}: {now} already leads it");
                    }
                    Some(was) => say!("{id}: {now} leads it now (was {})", printable(was)),
                    None => say!("{id}: {now} leads it now"),
                }
            })
        }
        Command::Approve(a) => decide(a, crate::approval::Decision::Approve),
        Command::Deny(a) => decide(a, crate::approval::Decision::Deny),
        Command::Cancel { run, server } => server.post(
            &format!("/api/v1/runs/{run}/cancel"),
            &server.author_body(),
            &format!("run {run}: cancellation requested"),
        ),
        Command::Notifications {
            data_dir,
            store,
            output,
            action,
        } => notifications(store, &data_dir, output, action),
        Command::Run {
            alert,
            runbooks,
            plan,
            output,
            sandbox,
        } => run_alert(&alert, &runbooks, plan, output, &sandbox),
    }
}

/// Makes untrusted text safe for a terminal: control characters other than
/// newline and tab are shown escaped, never sent raw.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return std::borrow::Cow::Borrowed(s);
    }
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn ms(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

/// The incident id templates see when `runbookd run` executes locally.
pub const LOCAL_INCIDENT_ID: &str = "INC-LOCAL";

/// Longest line printed at once; longer ones continue on the next line.
pub(super) const MAX_LINE: usize = 4096;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Lines of output shown per stream and step by `incidents show`.
pub(super) const SHOW_TAIL_LINES: usize = 10;
