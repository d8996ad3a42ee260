//! The commands that ask a running server over its API: incidents,
//! notifications, approvals, gate overrides, updates and postmortems.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::plan::ActionPlan;

use super::serve::{open_store, store_url};
use super::{
    ms, printable, quoted, runtime, IncidentsAction, NotificationsAction, Output, SHOW_TAIL_LINES,
};

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
    pub(super) fn credential(&self) -> anyhow::Result<Option<String>> {
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
    pub(super) fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        done: &str,
    ) -> anyhow::Result<ExitCode> {
        self.post_then(path, body, |_| say!("{done}"))
    }

    /// POSTs `body` to `path`; `ok` prints the answer, or the reason is printed.
    pub(super) fn post_then(
        &self,
        path: &str,
        body: &serde_json::Value,
        ok: impl FnOnce(&serde_json::Value),
    ) -> anyhow::Result<ExitCode> {
        self.ask(reqwest::Method::POST, path, Some(body), ok)
    }

    /// Sends `method` to `path` (with `body` as JSON); `ok` prints the
    /// answer, or the server's reason is printed (exit status 1).
    pub(super) fn ask(
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

    pub(super) fn author_body(&self) -> serde_json::Value {
        match &self.author {
            Some(a) => serde_json::json!({"author": a}),
            None => serde_json::json!({}),
        }
    }
}

/// `runbookd gate SERVICE`: the server's verdict (after the override or
/// its end, when `change` says one), as an exit status.
pub(super) fn gate(
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
pub(super) fn update(
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

pub(super) fn notifications(
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

/// `runbookd approve|deny RUN`.
/// Decides run `run`'s approval: `approval`, or the one it waits on now
/// (asked first, its prompt printed, so that what is decided is what was
/// read: a later prompt is never answered by mistake).
pub(super) fn decide(
    args: super::DecideArgs,
    decision: crate::approval::Decision,
) -> anyhow::Result<ExitCode> {
    let super::DecideArgs {
        run,
        comment,
        approval,
        server,
    } = args;
    let server = &server;
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

pub(super) fn incidents(
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
                                    c.done_at.map_or_else(|| "?".to_owned(), |t| t.to_string())
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

/// A run's steps as `incidents show` prints them: outcome, command, and the
/// last lines of each stream (the JSON output has everything).
pub(super) fn write_run_steps(
    out: &mut impl Write,
    r: &crate::incident::RunRecord,
) -> std::io::Result<()> {
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

pub(super) fn postmortem(
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
