//! The commands that check files before anything runs: runbooks, the
//! server config, SLO files, and the SLO and capacity reports read from
//! Prometheus.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::runbook::{self, RunbookSet};

use super::{printable, runtime, Output, SloAction};

pub(super) fn load(dir: &Path) -> Result<RunbookSet, ExitCode> {
    report(runbook::load_dir(dir))
}

pub(super) fn report(
    loaded: Result<RunbookSet, runbook::LoadErrors>,
) -> Result<RunbookSet, ExitCode> {
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
pub(super) fn prometheus_of(
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
pub(super) fn load_slos(path: &Path) -> Option<crate::slo::SloSet> {
    crate::slo::load_paths(&[path.to_owned()])
        .map_err(|errors| eprintln!("{errors}"))
        .ok()
}

/// `runbookd capacity`: every forecast, soonest full first.
pub(super) fn capacity(
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

pub(super) fn slo_status(
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
pub(super) fn check_slos(path: &Path, notifiers: Option<&[String]>) -> ExitCode {
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

pub(super) fn slo(action: SloAction) -> anyhow::Result<ExitCode> {
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
pub(super) fn config_notifiers(config: Option<&Path>) -> anyhow::Result<Option<Vec<String>>> {
    let Some(p) = config else { return Ok(None) };
    let text = std::fs::read_to_string(p)
        .map_err(|e| anyhow::anyhow!("cannot read config `{}`: {e}", p.display()))?;
    let f: crate::config::FileConfig = serde_yaml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config `{}`: {e}", p.display()))?;
    Ok(Some(f.notifiers.into_keys().collect()))
}

pub(super) fn check(
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
