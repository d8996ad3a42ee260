//! The command line: `check`, `run [--plan]`. Each command returns its exit
//! status; `main` only prints the error of a command that could not run.
//!
//! Exit status: 0 success; 1 the thing checked is wrong (invalid runbooks, a
//! plan with steps that cannot be rendered); 2 bad usage or unreadable input.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::alert::Notification;
use crate::exec::run::{Executor, RunObserver, RunRequest};
use crate::exec::{ExecSettings, Sandbox, SandboxConfig, Stream};
use crate::plan::{ActionPlan, Phase, Plan, StepPlan, WhenDecision, PLAN_INCIDENT_ID};
use crate::record::{RunOutcome, StepOutcome, StepRecord};
use crate::runbook::{self, RunbookSet};

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
    Approve {
        /// The run's id (`incidents show`, the incident page).
        run: i64,
        /// Why, for the timeline.
        #[arg(long)]
        comment: Option<String>,
        /// The approval you answer (its id, as the incident shows it)
        /// [default: the one the run waits on now, whose prompt is printed].
        #[arg(long)]
        approval: Option<i64>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Deny the step a run waits on (asks the running server): the step fails, `on_failure` runs.
    Deny {
        /// The run's id (`incidents show`, the incident page).
        run: i64,
        /// Why, for the timeline.
        #[arg(long)]
        comment: Option<String>,
        /// The approval you answer (its id, as the incident shows it)
        /// [default: the one the run waits on now, whose prompt is printed].
        #[arg(long)]
        approval: Option<i64>,
        #[command(flatten)]
        server: ServerArgs,
    },
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

/// How a command reaches the running server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The running server.
    #[arg(long, default_value = "http://127.0.0.1:9095", env = "RUNBOOKD_SERVER")]
    pub server: String,
    /// A file holding your token (`auth.users[].token_file` on the server)
    /// [default: the operator credential in --data-dir, when the server has
    /// no users].
    #[arg(long, env = "RUNBOOKD_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The server's data directory, where it keeps its operator credential
    /// (`operator.token`) when it has no users.
    #[arg(long, default_value = "data", env = "RUNBOOKD_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Who you are, when the server has no users (the timeline records it).
    #[arg(long = "as", env = "USER")]
    pub author: Option<String>,
}

impl ServerArgs {
    /// The credential to send: `--token-file`'s, or the server's operator
    /// credential in `--data-dir` when it is there (a server without users
    /// makes it at its first start), or none.
    ///
    /// # Errors
    /// A token file that cannot be read (an unreadable operator credential
    /// says whose it is).
    fn credential(&self) -> anyhow::Result<Option<String>> {
        use crate::api::auth::LOCAL_TOKEN_FILE;
        if let Some(p) = &self.token_file {
            return crate::secret::read_secret(p, "token").map(Some);
        }
        // The operator credential is this host's: it goes by itself only to
        // a server on loopback (another one gets it with --token-file).
        let loopback = reqwest::Url::parse(&self.server)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .is_some_and(|h| {
                h.eq_ignore_ascii_case("localhost")
                    || h.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
        if !loopback {
            return Ok(None);
        }
        let local = self.data_dir.join(LOCAL_TOKEN_FILE);
        match std::fs::File::open(&local) {
            Ok(_) => crate::secret::read_secret(&local, "operator credential").map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(anyhow::anyhow!(
                "cannot read the server's operator credential `{}`: only runbookd's user may (run this as that user, e.g. with sudo), or pass --token-file",
                local.display()
            )),
            Err(_) => Ok(None),
        }
    }

    /// POSTs `body` to `path` of the server; prints `done` or the server's reason.
    fn post(&self, path: &str, body: &serde_json::Value, done: &str) -> anyhow::Result<ExitCode> {
        self.post_then(path, body, |_| say!("{done}"))
    }

    /// POSTs `body` to `path`; `ok` prints the answer, or the reason is printed.
    fn post_then(
        &self,
        path: &str,
        body: &serde_json::Value,
        ok: impl FnOnce(&serde_json::Value),
    ) -> anyhow::Result<ExitCode> {
        self.ask(reqwest::Method::POST, path, Some(body), ok)
    }

    /// Sends `method` to `path` (with `body` as JSON); `ok` prints the
    /// answer, or the server's reason is printed (exit status 1).
    fn ask(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        ok: impl FnOnce(&serde_json::Value),
    ) -> anyhow::Result<ExitCode> {
        let token = self.credential()?;
        let server = self.server.trim_end_matches('/').to_owned();
        runtime()?.block_on(async {
            let mut req = reqwest::Client::new().request(method, format!("{server}{path}"));
            if let Some(body) = body {
                req = req.json(body);
            }
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("cannot reach runbookd at {server}: {e}"))?;
            let status = resp.status();
            let answer: serde_json::Value = resp.json().await.unwrap_or_default();
            if status.is_success() {
                ok(&answer);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "runbookd refused: {} (HTTP {})",
                    answer["error"].as_str().unwrap_or("no reason given"),
                    status.as_u16()
                );
                Ok(ExitCode::from(1))
            }
        })
    }

    fn author_body(&self) -> serde_json::Value {
        match &self.author {
            Some(a) => serde_json::json!({"author": a}),
            None => serde_json::json!({}),
        }
    }
}

/// `runbookd gate SERVICE`: the server's verdict (after the override or
/// its end, when `change` says one), as an exit status.
fn gate(
    service: &str,
    change: Option<&(reqwest::Method, serde_json::Value)>,
    server: &ServerArgs,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let token = server.credential()?;
    let mut url = reqwest::Url::parse(server.server.trim_end_matches('/'))
        .map_err(|e| anyhow::anyhow!("--server {}: {e}", server.server))?;
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| anyhow::anyhow!("--server {}: not an http URL", server.server))?;
        path.pop_if_empty().extend(["api", "v1", "gates", service]);
        if change.is_some() {
            path.push("override");
        }
    }
    let (status, answer) = runtime()?.block_on(async {
        let mut req = match change {
            None => reqwest::Client::new().get(url),
            Some((method, body)) => reqwest::Client::new()
                .request(method.clone(), url)
                .json(body),
        };
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach runbookd at {}: {e}", server.server))?;
        let status = resp.status();
        let answer: serde_json::Value = resp.json().await.unwrap_or_default();
        Ok::<_, anyhow::Error>((status, answer))
    })?;
    if !matches!(status.as_u16(), 200 | 423) {
        eprintln!(
            "runbookd {}: {} (HTTP {})",
            if change.is_some() {
                "refused"
            } else {
                "could not say"
            },
            answer["error"].as_str().unwrap_or("no reason given"),
            status.as_u16()
        );
        return Ok(ExitCode::from(2));
    }
    if output == Output::Json {
        say!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    } else if let Some(o) = answer["overridden"].as_object() {
        say!(
            "{service}: allowed, overridden by {} until {}: {}",
            printable(o.get("by").and_then(|v| v.as_str()).unwrap_or("")),
            o.get("until").and_then(|v| v.as_str()).unwrap_or(""),
            printable(o.get("reason").and_then(|v| v.as_str()).unwrap_or(""))
        );
        for r in answer["reasons"].as_array().into_iter().flatten() {
            say!("  overridden: {}", printable(r.as_str().unwrap_or("")));
        }
    } else if answer["allowed"] == true {
        say!("{service}: allowed");
    } else {
        say!("{service}: FROZEN");
        for r in answer["reasons"].as_array().into_iter().flatten() {
            say!("  {}", printable(r.as_str().unwrap_or("")));
        }
    }
    if output == Output::Text {
        for r in answer["recommendations"].as_array().into_iter().flatten() {
            say!("  recommended: {}", printable(r.as_str().unwrap_or("")));
        }
    }
    Ok(if answer["allowed"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `runbookd update` and `resolve`: an update posted to the server.
fn update(
    id: crate::incident::IncidentId,
    message: &str,
    status: Option<crate::incident::IncidentStatus>,
    root_cause: Option<String>,
    server: &ServerArgs,
) -> anyhow::Result<ExitCode> {
    let mut body = server.author_body();
    body["message"] = serde_json::json!(message);
    if let Some(st) = status {
        body["status"] = serde_json::json!(st.as_str());
    }
    if let Some(rc) = root_cause {
        body["root_cause"] = serde_json::json!(rc);
    }
    server.post_then(&format!("/api/v1/incidents/{id}/updates"), &body, |v| {
        say!(
            "{id}: update recorded; status {}",
            v["status"].as_str().unwrap_or("?")
        );
    })
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
        Command::Approve {
            approval,
            run,
            comment,
            server,
        } => decide(
            run,
            approval,
            crate::approval::Decision::Approve,
            comment,
            &server,
        ),
        Command::Deny {
            approval,
            run,
            comment,
            server,
        } => decide(
            run,
            approval,
            crate::approval::Decision::Deny,
            comment,
            &server,
        ),
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

fn load(dir: &Path) -> Result<RunbookSet, ExitCode> {
    report(runbook::load_dir(dir))
}

fn report(loaded: Result<RunbookSet, runbook::LoadErrors>) -> Result<RunbookSet, ExitCode> {
    loaded.map_err(|errors| {
        eprintln!("{errors}");
        let real: Vec<_> = errors.0.iter().filter(|e| !e.warning).collect();
        let files: std::collections::BTreeSet<_> = real.iter().map(|e| &e.file).collect();
        eprintln!("{} error(s) in {} file(s)", real.len(), files.len());
        ExitCode::from(1)
    })
}

/// The Prometheus a CLI command asks: `--prometheus URL`, or the config
/// file's `prometheus:`.
fn prometheus_of(
    config: Option<&Path>,
    url: Option<String>,
) -> anyhow::Result<crate::prometheus::Prometheus> {
    let settings = match (url, config) {
        (Some(url), _) => crate::config::PrometheusFile {
            url,
            headers: std::collections::BTreeMap::new(),
            bearer_token_file: None,
            timeout: None,
            refresh: None,
        },
        (None, Some(p)) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read config `{}`: {e}", p.display()))?;
            let f: crate::config::FileConfig = serde_yaml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("config `{}`: {e}", p.display()))?;
            f.prometheus.ok_or_else(|| {
                anyhow::anyhow!("config `{}` has no `prometheus:`", p.display())
            })?
        }
        (None, None) => anyhow::bail!(
            "where is Prometheus? pass --prometheus URL or --config FILE (with `prometheus: {{url: …}}`)"
        ),
    };
    let prom = settings.client()?;
    Ok(prom)
}

/// The SLO files at `path`, or `None` with every error printed.
fn load_slos(path: &Path) -> Option<crate::slo::SloSet> {
    crate::slo::load_paths(&[path.to_owned()])
        .map_err(|errors| eprintln!("{errors}"))
        .ok()
}

/// `runbookd capacity`: every forecast, soonest full first.
fn capacity(
    slos: &Path,
    config: Option<&Path>,
    url: Option<String>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let Some(set) = load_slos(slos) else {
        return Ok(ExitCode::from(1));
    };
    if set.forecasts().next().is_none() {
        eprintln!(
            "{}: no forecasts (write them under `forecasts:`, docs/capacity.md)",
            slos.display()
        );
        return Ok(ExitCode::from(1));
    }
    let prom = prometheus_of(config, url)?;
    let all = runtime()?.block_on(crate::capacity::read::read_all(
        &prom,
        &set,
        chrono::Utc::now(),
    ));
    let failed = all.iter().any(|p| p.error.is_some());
    match output {
        Output::Json => say!("{}", serde_json::to_string_pretty(&all)?),
        Output::Text => {
            say!(
                "{:<40} {:<12} {:>7} {:>18} {:>10} {:>14} {:>6}  NOTE",
                "SERVICE/FORECAST SERIES",
                "VERDICT",
                "USED",
                "FULL ON",
                "DAYS LEFT",
                "GROWTH/DAY",
                "R²"
            );
            for p in &all {
                say!(
                    "{:<40} {:<12} {:>7} {:>18} {:>10} {:>14} {:>6}  {}",
                    printable(&format!("{}/{} {}", p.service, p.forecast, p.series())),
                    p.verdict.as_str(),
                    p.used.map_or("-".into(), |u| format!("{:.1}%", u * 100.0)),
                    p.full_at
                        .map_or("-".into(), |d| d.format("%Y-%m-%d %H:%M").to_string()),
                    p.days_left.map_or("-".into(), |d| format!("{d:.1}")),
                    p.growth_per_day.map_or("-".into(), crate::capacity::human),
                    p.r2.map_or("-".into(), |r| format!("{r:.2}")),
                    printable(p.note.as_deref().unwrap_or(""))
                );
                if let Some(e) = &p.error {
                    eprintln!("{}/{}: {}", p.service, p.forecast, printable(e));
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn slo_status(
    slos: &Path,
    config: Option<&Path>,
    url: Option<String>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let Some(set) = load_slos(slos) else {
        return Ok(ExitCode::from(1));
    };
    let prom = prometheus_of(config, url)?;
    let now = chrono::Utc::now();
    let statuses = runtime()?.block_on(crate::slo::refresh::read_all(&prom, &set, now));
    let failed = statuses.iter().any(|s| s.error.is_some());
    match output {
        Output::Json => say!("{}", serde_json::to_string_pretty(&statuses)?),
        Output::Text => {
            say!(
                "{:<32} {:<8} {:>9} {:>9} {:>10} {:>12} {:>9}  EXHAUSTED IN",
                "SERVICE/SLO",
                "STATE",
                "OBJECTIVE",
                "SLI",
                "REMAINING",
                "BUDGET LEFT",
                "BURN PAGE"
            );
            for s in &statuses {
                let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.3}%", v * 100.0));
                let burn1h = s
                    .tiers
                    .first()
                    .and_then(|t| t.long.burn_rate)
                    .map_or("-".into(), |b| format!("{b:.2}x"));
                say!(
                    "{:<32} {:<8} {:>9} {:>9} {:>10} {:>12} {:>9}  {}",
                    printable(&format!("{}/{}", s.service, s.slo)),
                    s.state.as_str(),
                    format!("{}%", s.objective),
                    pct(s.sli),
                    pct(s.remaining),
                    s.remaining_minutes
                        .map_or("-".into(), |m| format!("{m:.1} min")),
                    burn1h,
                    s.exhaustion_seconds
                        .map_or("never at this pace".into(), crate::slo::refresh::human)
                );
                if let Some(e) = &s.error {
                    eprintln!("{}/{}: {e}", s.service, s.slo);
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `check --slos`: every problem as `file:line:col`.
fn check_slos(path: &Path, notifiers: Option<&[String]>) -> ExitCode {
    let loaded = crate::slo::load_paths(&[path.to_owned()]).and_then(|set| {
        if let Some(names) = notifiers {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            set.check_notifiers(&names)?;
        }
        Ok(set)
    });
    match loaded {
        Ok(set) => {
            say!(
                "{}: {} SLO(s), {} forecast(s), {} policy(ies): ok",
                path.display(),
                set.len(),
                set.forecasts().count(),
                set.policies().len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            let files: std::collections::BTreeSet<_> = errors.0.iter().map(|e| &e.file).collect();
            eprintln!("{} error(s) in {} SLO file(s)", errors.0.len(), files.len());
            ExitCode::from(1)
        }
    }
}

fn slo(action: SloAction) -> anyhow::Result<ExitCode> {
    match action {
        SloAction::Status { from } => slo_status(
            &from.slos,
            from.config.as_deref(),
            from.prometheus,
            from.output,
        ),
        SloAction::Rules { slos, out } => {
            let set = match crate::slo::load_paths(std::slice::from_ref(&slos)) {
                Ok(set) => set,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("{} error(s): no rules written", errors.0.len());
                    return Ok(ExitCode::from(1));
                }
            };
            if set.is_empty() && set.forecasts().next().is_none() {
                eprintln!("{}: no SLOs and no forecasts", slos.display());
                return Ok(ExitCode::from(1));
            }
            let yaml = crate::slo::rules::yaml(&set).map_err(|e| anyhow::anyhow!(e))?;
            match out {
                None => {
                    use std::io::Write as _;
                    std::io::stdout().lock().write_all(yaml.as_bytes())?;
                }
                Some(path) => {
                    std::fs::write(&path, yaml)
                        .with_context(|| format!("cannot write `{}`", path.display()))?;
                    eprintln!(
                        "{}: rules for {} SLO(s) and {} forecast(s)",
                        path.display(),
                        set.len(),
                        set.forecasts().count()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The names of the `notifiers:` of `config`, to check references against.
fn config_notifiers(config: Option<&Path>) -> anyhow::Result<Option<Vec<String>>> {
    let Some(p) = config else { return Ok(None) };
    let text = std::fs::read_to_string(p)
        .map_err(|e| anyhow::anyhow!("cannot read config `{}`: {e}", p.display()))?;
    let f: crate::config::FileConfig = serde_yaml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config `{}`: {e}", p.display()))?;
    Ok(Some(f.notifiers.into_keys().collect()))
}

fn check(
    paths: &[PathBuf],
    names: Option<&[String]>,
    slos: Option<&crate::slo::SloSet>,
) -> ExitCode {
    let loaded = runbook::load_paths(paths).and_then(|set| {
        if let Some(slos) = slos {
            slos.check_runbook_refs(&set)?;
        } else if set.iter().any(|rb| !rb.slo_refs.is_empty()) {
            eprintln!("note: the SLOs verify steps name were not checked: pass --slos DIR");
        }
        if let Some(names) = names {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            crate::notify::config::check_names(&set, &names)?;
        } else {
            let referenced: std::collections::BTreeSet<&str> = set
                .iter()
                .flat_map(|rb| rb.notifier_refs.iter().map(|(n, _)| n.as_str()))
                .collect();
            if !referenced.is_empty() {
                eprintln!(
                    "note: the notifiers runbooks name ({}) were not checked against a server's: pass --config FILE (or set RUNBOOKD_CONFIG)",
                    referenced.into_iter().collect::<Vec<_>>().join(", ")
                );
            }
        }
        Ok(set)
    });
    match report(loaded) {
        Ok(set) => {
            for w in set.warnings() {
                eprintln!("{w}");
            }
            let steps: usize = set
                .iter()
                .map(|r| r.steps.len() + r.on_failure.len() + r.on_resolved.len())
                .sum();
            let warned = match set.warnings().len() {
                0 => String::new(),
                n => format!(" ({n} warning(s))"),
            };
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            say!(
                "{}: {} runbook(s), {steps} step(s): ok{warned}",
                names.join(", "),
                set.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn notifications(
    store: Option<String>,
    data_dir: &Path,
    output: Output,
    action: NotificationsAction,
) -> anyhow::Result<ExitCode> {
    match action {
        NotificationsAction::List {
            incident,
            state,
            limit,
        } => {
            let url = store_url(store, data_dir)?;
            runtime()?.block_on(async {
                let store = open_store(&url).await?;
                let list = store
                    .messages(crate::incident::notices::MessageFilter {
                        incident,
                        state,
                        limit: Some(limit),
                    })
                    .await?;
                let mut out = std::io::stdout().lock();
                if output == Output::Json {
                    serde_json::to_writer_pretty(
                        &mut out,
                        &serde_json::json!({"notifications": list}),
                    )?;
                    writeln!(out)?;
                } else {
                    writeln!(
                        out,
                        "{:>6} {:<10} {:<16} {:<21} {:<10} {:>8}  LAST ERROR",
                        "ID", "INCIDENT", "NOTIFIER", "EVENT", "STATE", "ATTEMPTS"
                    )?;
                    for m in &list {
                        writeln!(
                            out,
                            "{:>6} {:<10} {:<16} {:<21} {:<10} {:>8}  {}",
                            m.id,
                            m.incident.to_string(),
                            m.notifier,
                            m.event.as_str(),
                            m.state.as_str(),
                            m.attempts,
                            m.last_error.as_deref().unwrap_or("")
                        )?;
                    }
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        NotificationsAction::Retry { id, server } => server.post(
            &format!("/api/v1/notifications/{id}/retry"),
            &serde_json::json!({}),
            &format!("notification {id} queued again"),
        ),
    }
}

fn read_payload(path: &Path) -> anyhow::Result<Notification> {
    let mut body = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut body)
            .context("cannot read the payload from standard input")?;
    } else {
        body = std::fs::read(path)
            .with_context(|| format!("cannot read payload `{}`", path.display()))?;
    }
    Notification::from_json(&body)
        .with_context(|| format!("bad Alertmanager payload `{}`", path.display()))
}

fn run_alert(
    alert: &Path,
    runbooks: &Path,
    plan: bool,
    output: Output,
    sandbox: &SandboxArgs,
) -> anyhow::Result<ExitCode> {
    let notification = read_payload(alert)?;
    let set = match load(runbooks) {
        Ok(set) => set,
        Err(code) => return Ok(code),
    };
    if !plan {
        return execute(&notification, &set, sandbox);
    }
    let plan = Plan::build(&notification, &set, PLAN_INCIDENT_ID);
    let mut out = std::io::stdout().lock();
    let written = match output {
        Output::Json => serde_json::to_writer_pretty(&mut out, &plan)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        Output::Text => write_text(&mut out, &plan),
    };
    match written {
        // A reader such as `head` that stops early is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        other => other.context("cannot write the plan")?,
    }
    Ok(if plan.steps().any(|s| s.error.is_some()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
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

fn write_text(out: &mut impl Write, plan: &Plan) -> std::io::Result<()> {
    writeln!(
        out,
        "notification from receiver {} (group {}), {}",
        quoted(&plan.receiver),
        quoted(&plan.group_key),
        plan.status
    )?;
    match &plan.incident {
        Some(i) => writeln!(out, "incident {} ({})", i.id, i.severity)?,
        None => writeln!(out, "no runbook matches any alert: nothing would run")?,
    }
    for a in &plan.alerts {
        let name = a
            .labels
            .get("alertname")
            .map_or("(no alertname)", String::as_str);
        writeln!(
            out,
            "\nalert {} [{}] fingerprint {}, started {}",
            printable(name),
            a.status,
            a.fingerprint,
            a.starts_at
        )?;
        let labels: Vec<String> = a
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", printable(k), quoted(v)))
            .collect();
        writeln!(out, "  labels: {}", labels.join(", "))?;
        if a.runs.is_empty() {
            writeln!(out, "  no runbook matches")?;
        }
        for r in &a.runs {
            writeln!(
                out,
                "  runbook {}: {} ({}, {})",
                r.runbook,
                printable(&r.title),
                r.severity,
                r.source
            )?;
            writeln!(
                out,
                "    {}; timeout {}, concurrency {}, cooldown {}{}",
                match r.phase {
                    Phase::Remediation => "remediation (alert firing)",
                    Phase::Resolution => "on_resolved (alert resolved; remediation never runs)",
                },
                ms(r.timeout_ms),
                r.concurrency,
                ms(r.cooldown_ms),
                if r.cancel_on_resolved {
                    ", cancelled when resolved"
                } else {
                    ""
                }
            )?;
            if r.steps.is_empty() {
                writeln!(out, "    nothing runs for this phase")?;
            }
            for (i, s) in r.steps.iter().enumerate() {
                write_step(out, i + 1, s)?;
            }
            if !r.on_failure.is_empty() {
                writeln!(out, "    on failure:")?;
                for (i, s) in r.on_failure.iter().enumerate() {
                    write_step(out, i + 1, s)?;
                }
            }
            for n in &r.notifications {
                writeln!(out, "    notifies {} (not sent by a plan)", n.describe())?;
            }
        }
    }
    let runs: usize = plan.alerts.iter().map(|a| a.runs.len()).sum();
    let steps = plan.steps().count();
    let broken = plan.steps().filter(|s| s.error.is_some()).count();
    writeln!(
        out,
        "\n{} alert(s), {runs} run(s), {steps} step(s){}",
        plan.alerts.len(),
        if broken > 0 {
            format!(", {broken} step(s) cannot be rendered")
        } else {
            String::new()
        }
    )
}

fn write_step(out: &mut impl Write, n: usize, s: &StepPlan) -> std::io::Result<()> {
    let mut attrs = vec![s.kind().as_str().to_owned()];
    if let Some(a) = s.asks() {
        attrs.push(format!("waits {}, then {}", ms(a.timeout_ms), a.on_timeout));
    } else if s.kind() != crate::runbook::StepKind::Manual {
        attrs.push(format!("timeout {}", ms(s.timeout_ms)));
        if s.retries > 0 {
            attrs.push(format!(
                "{} retries, {} apart",
                s.retries,
                ms(s.retry_delay_ms)
            ));
        }
        if s.continue_on_failure {
            attrs.push("continue on failure".to_owned());
        }
    }
    writeln!(out, "    {n}. {} ({})", s.name, attrs.join("; "))?;
    if let Some(w) = &s.when {
        let what = match w.decision {
            WhenDecision::Run => "runs".to_owned(),
            WhenDecision::Skip => format!(
                "skipped (rendered {})",
                quoted(w.rendered.as_deref().unwrap_or_default())
            ),
            WhenDecision::AtRunTime => "decided at run time".to_owned(),
        };
        writeln!(out, "       when {}: {what}", printable(&w.template))?;
    }
    if let Some(g) = s.gate.as_ref().filter(|g| !g.service.is_empty()) {
        writeln!(
            out,
            "       asks the error-budget gate of {}: while frozen, {}",
            quoted(&g.service),
            match g.on_frozen {
                crate::runbook::OnFrozen::Skip => "skipped",
                crate::runbook::OnFrozen::Fail => "fails",
                crate::runbook::OnFrozen::Approve => "waits for an operator's approval",
            }
        )?;
    }
    if let Some(e) = &s.error {
        writeln!(out, "       ERROR: {}", printable(e))?;
    }
    if let Some(t) = &s.templates {
        writeln!(
            out,
            "       rendered at run time from: {}",
            printable(&t.iter().map(|x| quoted(x)).collect::<Vec<_>>().join(" "))
        )?;
    } else {
        match &s.action {
            ActionPlan::Shell {
                script: Some(script),
                vars,
            } => {
                writeln!(out, "       sh -c:")?;
                for line in script.lines() {
                    writeln!(out, "         | {}", printable(line))?;
                }
                for (k, v) in vars {
                    writeln!(out, "       where {k}={}", quoted(v))?;
                }
            }
            ActionPlan::Run { argv: Some(argv) } => writeln!(
                out,
                "       argv: [{}]",
                argv.iter()
                    .map(|a| quoted(a))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?,
            ActionPlan::Manual => {
                if let Some(text) = &s.text {
                    writeln!(out, "       checklist: {}", printable(text))?;
                }
            }
            ActionPlan::Silence(_) | ActionPlan::Approve(_) | ActionPlan::Verify(_) => {
                if let Some(text) = &s.text {
                    writeln!(out, "       {}", printable(text))?;
                }
            }
            // Not rendered: the error above says why.
            ActionPlan::Shell { script: None, .. } | ActionPlan::Run { argv: None } => {}
        }
    }
    let own: Vec<String> = s
        .env
        .iter()
        .filter(|(k, _)| !k.starts_with("ALERT_") && *k != "INCIDENT_ID" && *k != "RUNBOOK")
        .map(|(k, v)| format!("{k}={}", quoted(v)))
        .collect();
    if !own.is_empty() {
        writeln!(out, "       env: {}", own.join(" "))?;
    }
    for w in &s.warnings {
        writeln!(out, "       warning: {}", printable(w))?;
    }
    Ok(())
}

/// A local run's approval, decided at the terminal: `y` approves, anything
/// else denies; no answer within the step's timeout decides as its
/// `on_timeout` says; without a terminal to ask, it is denied.
async fn ask_at_terminal(
    runbook: &str,
    asked: &crate::approval::Request,
) -> crate::approval::Approval {
    use crate::approval::ApprovalState;
    use std::io::IsTerminal as _;
    let plan = &asked.plan;
    let now = chrono::Utc::now();
    let deadline =
        now + chrono::Duration::milliseconds(i64::try_from(plan.timeout_ms).unwrap_or(i64::MAX));
    let who = std::env::var("USER").unwrap_or_else(|_| "the terminal".into());
    let (state, by, comment) = if std::io::stdin().is_terminal() {
        say!(
            "  ? step `{}` asks: {} [y/N] (waits {}, then {})",
            asked.step,
            printable(&plan.prompt),
            ms(plan.timeout_ms),
            plan.on_timeout
        );
        let line = tokio::time::timeout(
            plan.timeout(),
            tokio::task::spawn_blocking(|| {
                let mut s = String::new();
                std::io::stdin().read_line(&mut s).map(|_| s)
            }),
        )
        .await;
        match line {
            Ok(Ok(Ok(answer))) if answer.trim().eq_ignore_ascii_case("y") => {
                (ApprovalState::Approved, who, None)
            }
            Ok(_) => (ApprovalState::Denied, who, None),
            Err(_) => (ApprovalState::TimedOut, "runbookd".to_owned(), None),
        }
    } else {
        say!(
            "  ? step `{}` asks: {} — no terminal to ask: denied",
            asked.step,
            printable(&plan.prompt)
        );
        (
            ApprovalState::Denied,
            "runbookd".to_owned(),
            Some("no terminal to ask (runbookd run)".to_owned()),
        )
    };
    crate::approval::Approval {
        id: 0,
        run_id: 0,
        runbook: runbook.to_owned(),
        step: asked.step.clone(),
        index: asked.index,
        prompt: plan.prompt.clone(),
        requested_at: now.to_rfc3339(),
        deadline: deadline.to_rfc3339(),
        on_timeout: plan.on_timeout,
        state,
        decided_by: Some(by),
        decided_at: Some(chrono::Utc::now().to_rfc3339()),
        comment,
    }
}

/// The incident id templates see when `runbookd run` executes locally.
pub const LOCAL_INCIDENT_ID: &str = "INC-LOCAL";

/// Executes every matched runbook of the notification, one after the other,
/// printing a live transcript. Exit status 1 when a run failed or timed out,
/// 130 when interrupted.
fn execute(n: &Notification, set: &RunbookSet, args: &SandboxArgs) -> anyhow::Result<ExitCode> {
    let config = SandboxConfig {
        run_as: args.run_as.clone(),
        allow_root_steps: args.allow_root_steps,
        strict: args.strict_sandbox,
        secret_files: set.secret_files(),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::new(config).context("cannot set up the step sandbox")?;
    let executor = Executor {
        // `run --alert` has no Alertmanager: a silence step fails, saying so.
        alertmanager: crate::silence::Alertmanagers::default(),
        // Nor a Prometheus: a verify step fails, saying so.
        prometheus: None,
        // Nor SLO statuses: a gated step counts as frozen, saying so.
        gates: None,
        slos: None,
        sandbox,
        settings: ExecSettings {
            kill_grace: args.kill_grace,
            ..ExecSettings::default()
        },
    };
    let plan = Plan::build(n, set, LOCAL_INCIDENT_ID);
    let Some(incident) = plan.incident else {
        say!("no runbook matches any alert: nothing to run");
        return Ok(ExitCode::SUCCESS);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let on_interrupt = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: stopping the running step");
                on_interrupt.cancel();
            }
        });
        let transcript = std::sync::Arc::new(Transcript::default());
        let mut worst = ExitCode::SUCCESS;
        for alert in &n.alerts {
            for rb in set.matching(&alert.labels) {
                say!(
                    "\n=== runbook {} for alert {} [{}] fingerprint {}",
                    rb.name,
                    printable(alert.name()),
                    alert.status,
                    alert.fingerprint
                );
                let req = RunRequest { notification: n, alert, runbook: rb, incident: incident.clone(), lease: None, resume: None, rerun_of: None };
                let mut result = executor.run(&req, transcript.clone(), &cancel).await;
                // A local run pauses on an approval step as a server's
                // does: the person at the terminal decides.
                while let Some(asked) = result.awaiting.clone() {
                    let approval = ask_at_terminal(&rb.name, &asked).await;
                    let resume = crate::record::Resume { prior: Box::new(result), approval };
                    let req = RunRequest { notification: n, alert, runbook: rb, incident: incident.clone(), lease: None, resume: Some(&resume), rerun_of: None };
                    result = executor.run(&req, transcript.clone(), &cancel).await;
                }
                let not_ok = result
                    .steps
                    .iter()
                    .filter(|s| s.outcome.as_ref().is_some_and(|o| !o.succeeded() && !matches!(o, StepOutcome::Skipped { .. })))
                    .count();
                say!(
                    "=== run {}: {} in {} ({} step(s), {not_ok} not succeeded, {} open checklist item(s))",
                    rb.name,
                    serde_json::to_value(result.outcome).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                    ms(result.duration_ms),
                    result.steps.len(),
                    result.checklist.len()
                );
                if let Some(why) = &result.held {
                    say!("    not run: {}", printable(why));
                }
                match result.outcome {
                    RunOutcome::Failed
                    | RunOutcome::TimedOut
                    | RunOutcome::AwaitingApproval
                    | RunOutcome::Skipped => {
                        worst = ExitCode::from(1);
                    }
                    RunOutcome::Cancelled | RunOutcome::Interrupted => return ExitCode::from(130),
                    RunOutcome::Succeeded | RunOutcome::SucceededWithFailures => {}
                }
            }
        }
        worst
    }))
}

/// `runbookd approve|deny RUN`.
/// Decides run `run`'s approval: `approval`, or the one it waits on now
/// (asked first, its prompt printed, so that what is decided is what was
/// read: a later prompt is never answered by mistake).
fn decide(
    run: i64,
    approval: Option<i64>,
    decision: crate::approval::Decision,
    comment: Option<String>,
    server: &ServerArgs,
) -> anyhow::Result<ExitCode> {
    let approval = if let Some(a) = approval {
        a
    } else {
        let mut pending = None;
        let code = server.ask(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{run}/approval"),
            None,
            |v| pending = Some(v.clone()),
        )?;
        let Some(a) = pending else { return Ok(code) };
        say!(
            "run {run} asks: {} (step `{}`, approval {})",
            printable(a["prompt"].as_str().unwrap_or("?")),
            printable(a["step"].as_str().unwrap_or("?")),
            a["id"]
        );
        a["id"].as_i64().unwrap_or_default()
    };
    let mut body = server.author_body();
    body["approval"] = serde_json::json!(approval);
    body["decision"] = serde_json::Value::String(decision.as_str().to_owned());
    if let Some(c) = comment {
        body["comment"] = serde_json::Value::String(c);
    }
    server.post_then(&format!("/api/v1/runs/{run}/approval"), &body, |v| {
        let a = &v["approval"];
        say!(
            "run {run}: step `{}` {} by {}",
            a["step"].as_str().unwrap_or("?"),
            a["state"].as_str().unwrap_or("?"),
            a["decided_by"].as_str().unwrap_or("?")
        );
    })
}

/// Longest line printed at once; longer ones continue on the next line.
const MAX_LINE: usize = 4096;

/// Prints a run as it happens: each step's command, its output lines as they
/// come (`|` stdout, `!` stderr), its outcome and duration.
#[derive(Default)]
struct Transcript {
    partial: std::sync::Mutex<std::collections::HashMap<(String, Stream), Vec<u8>>>,
}

fn print_output_line(stream: Stream, bytes: &[u8]) {
    let mark = if stream == Stream::Stdout { '|' } else { '!' };
    say!(
        "      {mark} {}",
        printable(&String::from_utf8_lossy(bytes))
    );
}

impl RunObserver for Transcript {
    fn step_started(&self, step: &StepPlan, attempt: u32, attempts: u32) {
        let retry = if attempts > 1 {
            format!(" (attempt {attempt} of {attempts})")
        } else {
            String::new()
        };
        say!("  > {} [{}]{retry}", step.name, step.kind().as_str());
        if let ActionPlan::Shell {
            script: Some(script),
            ..
        } = &step.action
        {
            for line in script.lines() {
                say!("      $ {}", printable(line));
            }
        } else if let Some(argv) = &step.argv() {
            say!(
                "      $ [{}]",
                argv.iter()
                    .map(|a| quoted(a))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }

    fn output(&self, step: &str, stream: Stream, bytes: &[u8]) {
        let mut partial = self
            .partial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let buf = partial.entry((step.to_owned(), stream)).or_default();
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            if let Some(line) = chunk.strip_suffix(b"\n") {
                buf.extend_from_slice(line);
                print_output_line(stream, buf);
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
                while buf.len() >= MAX_LINE {
                    let rest = buf.split_off(MAX_LINE);
                    print_output_line(stream, buf);
                    *buf = rest;
                }
            }
        }
    }

    fn step_finished(&self, rec: &StepRecord) {
        let mut partial = self
            .partial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for stream in [Stream::Stdout, Stream::Stderr] {
            if let Some(buf) = partial
                .remove(&(rec.name.clone(), stream))
                .filter(|b| !b.is_empty())
            {
                print_output_line(stream, &buf);
            }
        }
        let took = ms(rec.duration_ms);
        let what = match &rec.outcome {
            None => format!(
                "open checklist item: {}",
                printable(rec.plan.text.as_deref().unwrap_or_default())
            ),
            Some(StepOutcome::Succeeded) => format!("succeeded in {took}"),
            Some(StepOutcome::Failed { exit_code }) => {
                format!("FAILED with exit status {exit_code} in {took}")
            }
            Some(StepOutcome::Signalled { signal, cause }) => format!(
                "KILLED by signal {signal}{} in {took}",
                cause
                    .as_ref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            ),
            Some(StepOutcome::TimedOut { cause, .. }) => {
                format!("TIMED OUT ({cause}) after {took}")
            }
            Some(StepOutcome::SpawnFailed { reason }) => {
                format!("COULD NOT START: {}", printable(reason))
            }
            Some(StepOutcome::Skipped { reason }) => format!("skipped: {}", printable(reason)),
            Some(StepOutcome::Cancelled) => format!("cancelled after {took}"),
            Some(StepOutcome::AwaitingApproval) => "waiting for approval".to_owned(),
            Some(StepOutcome::Denied { reason }) => format!("DENIED: {}", printable(reason)),
            Some(StepOutcome::Unverified { reason }) => {
                format!("NOT VERIFIED: {}", printable(reason))
            }
            Some(StepOutcome::Interrupted { reason }) => {
                format!("INTERRUPTED: {}", printable(reason))
            }
        };
        let tail = if rec.phase == crate::record::StepPhase::OnFailure {
            " (on_failure)"
        } else {
            ""
        };
        say!("  = {}{tail}: {what}", rec.name);
    }
}

/// `--store`, parsed here rather than by clap, which would echo a bad value
/// whole (a password included).
fn parse_store(raw: Option<String>) -> anyhow::Result<Option<crate::store::StoreUrl>> {
    raw.map(|s| s.parse().map_err(|e| anyhow::anyhow!("bad --store: {e}")))
        .transpose()
}

fn store_url(store: Option<String>, data_dir: &Path) -> anyhow::Result<crate::store::StoreUrl> {
    Ok(parse_store(store)?
        .unwrap_or_else(|| crate::store::StoreUrl::Sqlite(data_dir.join("runbookd.db"))))
}

/// Opens an existing store for reading (never creates one).
async fn open_store(url: &crate::store::StoreUrl) -> anyhow::Result<crate::store::Store> {
    if let crate::store::StoreUrl::Sqlite(db) = url {
        anyhow::ensure!(
            db.exists(),
            "no store at `{}` (set --data-dir or --store)",
            db.display()
        );
    }
    crate::store::Store::open_read_only(url)
        .await
        .with_context(|| format!("cannot open `{url}`"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn serve(cfg: crate::config::ServerConfig, format: LogFormat) -> anyhow::Result<ExitCode> {
    // What the server creates (store, WAL, locks, scratch) is its own alone.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let announce = match format {
        LogFormat::Text => crate::server::Announce::Text,
        LogFormat::Json => crate::server::Announce::Json,
    };
    match runtime()?.block_on(crate::server::run(cfg, announce)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(crate::server::StartError::Runbooks(errors)) => {
            eprintln!("{errors}");
            eprintln!(
                "refusing to start: {} error(s) in the runbooks",
                errors.0.len()
            );
            Ok(ExitCode::from(1))
        }
        Err(crate::server::StartError::Slos(errors)) => {
            eprintln!("{errors}");
            eprintln!(
                "refusing to start: {} error(s) in the SLO files",
                errors.0.len()
            );
            Ok(ExitCode::from(1))
        }
        Err(crate::server::StartError::Other(e)) => Err(e),
    }
}

fn incidents(
    url: &crate::store::StoreUrl,
    output: Output,
    action: &IncidentsAction,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = open_store(url).await?;
        let mut out = std::io::stdout().lock();
        match action {
            IncidentsAction::List { status, limit } => {
                let (list, total) = store
                    .incidents(crate::store::IncidentFilter {
                        status: *status,
                        limit: Some(*limit),
                        ..Default::default()
                    })
                    .await?;
                if output == Output::Json {
                    serde_json::to_writer_pretty(
                        &mut out,
                        &serde_json::json!({"incidents": list, "total": total}),
                    )?;
                    writeln!(out)?;
                } else {
                    writeln!(
                        out,
                        "{:<10} {:<5} {:<14} {:<11} {:>9}  TITLE",
                        "ID", "SEV", "STATUS", "ATTENTION", "DURATION"
                    )?;
                    for i in &list {
                        let d = humantime::format_duration(std::time::Duration::from_secs(
                            u64::try_from(i.duration_seconds).unwrap_or(0),
                        ));
                        writeln!(
                            out,
                            "{:<10} {:<5} {:<14} {:<11} {:>9}  {}",
                            i.id.to_string(),
                            i.severity,
                            i.status.as_str(),
                            match (i.run_failed, i.escalated) {
                                (true, true) => "failed,esc",
                                (true, false) => "run failed",
                                (false, true) => "escalated",
                                (false, false) => "",
                            },
                            d.to_string(),
                            printable(&i.title)
                        )?;
                    }
                    writeln!(out, "{} of {total} incident(s)", list.len())?;
                }
            }
            IncidentsAction::Show { id } => {
                let detail = match store.incident(*id).await {
                    Ok(d) => d,
                    Err(crate::store::StoreError::NotFound(_)) => {
                        eprintln!("error: no incident {id}");
                        return Ok(ExitCode::from(1));
                    }
                    Err(e) => return Err(e.into()),
                };
                if output == Output::Json {
                    serde_json::to_writer_pretty(&mut out, &detail)?;
                    writeln!(out)?;
                } else {
                    let s = &detail.summary;
                    writeln!(
                        out,
                        "{} {} [{}] {}{}",
                        s.id,
                        printable(&s.title),
                        s.severity,
                        s.status,
                        if s.escalated { ", escalated" } else { "" }
                    )?;
                    writeln!(
                        out,
                        "opened {}{}{}; services: {}",
                        s.created_at,
                        s.alerts_ended_at
                            .as_ref()
                            .map(|r| format!(", alerts ended {r}"))
                            .unwrap_or_default(),
                        s.resolved_at
                            .as_ref()
                            .map(|r| format!(", resolved notification {r}"))
                            .unwrap_or_default(),
                        s.services.join(", ")
                    )?;
                    let lead = match (&s.commander, &s.acknowledged_by) {
                        (Some(c), _) => format!("led by {} (incident commander)", printable(c)),
                        (None, Some(a)) => format!("acknowledged by {}", printable(a)),
                        (None, None) => "not acknowledged".to_owned(),
                    };
                    writeln!(out, "{lead}")?;
                    writeln!(out, "\nalerts:")?;
                    for a in &detail.alerts {
                        let labels: Vec<String> = a
                            .labels
                            .iter()
                            .map(|(k, v)| format!("{k}={}", quoted(v)))
                            .collect();
                        writeln!(
                            out,
                            "  {} {} {}",
                            a.fingerprint,
                            a.status,
                            labels.join(", ")
                        )?;
                    }
                    writeln!(out, "\nruns:")?;
                    for r in &detail.runs {
                        writeln!(
                            out,
                            "  #{} {} ({}) {}{}",
                            r.id,
                            r.runbook,
                            r.phase,
                            r.state,
                            r.reason
                                .as_ref()
                                .map(|x| format!(": {}", printable(x)))
                                .unwrap_or_default()
                        )?;
                        write_run_steps(&mut out, r)?;
                    }
                    if !detail.checklist.is_empty() {
                        writeln!(out, "\nchecklist (`runbookd tick {id} STEP` when done):")?;
                        for c in &detail.checklist {
                            let done = c.done_by.as_ref().map(|by| {
                                format!(
                                    "; done by {} at {}",
                                    printable(by),
                                    c.done_at.as_deref().unwrap_or("?")
                                )
                            });
                            writeln!(
                                out,
                                "  [{}] {} (run #{} {}, step {}{})",
                                if done.is_some() { "x" } else { " " },
                                printable(&c.text),
                                c.run_id,
                                c.runbook,
                                c.step,
                                done.unwrap_or_default()
                            )?;
                        }
                    }
                    if let Some(rc) = &detail.root_cause {
                        writeln!(out, "\nroot cause: {}", printable(rc))?;
                    }
                    writeln!(out, "\ntimeline:")?;
                    for t in &detail.timeline {
                        writeln!(out, "  {} {:<12} {}", t.at, t.author, printable(&t.message))?;
                    }
                }
            }
        }
        store.close();
        Ok(ExitCode::SUCCESS)
    })
}

/// Lines of output shown per stream and step by `incidents show`.
const SHOW_TAIL_LINES: usize = 10;

/// A run's steps as `incidents show` prints them: outcome, command, and the
/// last lines of each stream (the JSON output has everything).
fn write_run_steps(out: &mut impl Write, r: &crate::incident::RunRecord) -> std::io::Result<()> {
    let tail = |out: &mut dyn Write, mark: char, text: &str| -> std::io::Result<()> {
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() > SHOW_TAIL_LINES {
            writeln!(
                out,
                "        {mark} … {} earlier line(s)",
                lines.len() - SHOW_TAIL_LINES
            )?;
        }
        for l in lines
            .iter()
            .skip(lines.len().saturating_sub(SHOW_TAIL_LINES))
        {
            writeln!(out, "        {mark} {}", printable(l))?;
        }
        Ok(())
    };
    for (plan, record) in r.result.iter().flat_map(crate::incident::RunDetail::steps) {
        let outcome = record.and_then(|s| s.outcome.as_ref());
        let status = match (record, outcome) {
            (None, _) => "planned",
            (Some(_), None) => "open",
            (Some(_), Some(o)) => o.status(),
        };
        let detail = outcome
            .and_then(crate::record::StepOutcome::detail)
            .map(|d| format!(" ({})", printable(&d)))
            .unwrap_or_default();
        let took = record
            .map(|s| format!(" in {}", ms(s.duration_ms)))
            .unwrap_or_default();
        writeln!(out, "    - {} {status}{detail}{took}", plan.name)?;
        if let ActionPlan::Shell {
            script: Some(script),
            ..
        } = &plan.action
        {
            for l in script.lines() {
                writeln!(out, "        $ {}", printable(l))?;
            }
        } else if let Some(command) = plan.command_line() {
            writeln!(out, "        $ {}", printable(&command))?;
        } else if let Some(text) = &plan.text {
            writeln!(out, "        [ ] {}", printable(text))?;
        }
        if let Some(a) = record.and_then(|s| s.attempts.last()) {
            tail(out, '|', &a.stdout)?;
            tail(out, '!', &a.stderr)?;
        }
    }
    if !r.live_output.is_empty() {
        writeln!(out, "    live output:")?;
        let text: String = r.live_output.iter().map(|c| c.text.as_str()).collect();
        tail(out, '|', &text)?;
    }
    Ok(())
}

fn postmortem(
    id: crate::incident::IncidentId,
    template: Option<&Path>,
    url: &crate::store::StoreUrl,
) -> anyhow::Result<ExitCode> {
    let template = template
        .map(|p| {
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read template `{}`", p.display()))
        })
        .transpose()?;
    runtime()?.block_on(async {
        let store = open_store(url).await?;
        let detail = match store.incident(id).await {
            Ok(d) => d,
            Err(crate::store::StoreError::NotFound(_)) => {
                eprintln!("error: no incident {id}");
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e.into()),
        };
        store.close();
        match crate::postmortem::render(&detail, template.as_deref()) {
            Ok(text) => {
                std::io::stdout().lock().write_all(text.as_bytes())?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(1))
            }
        }
    })
}
