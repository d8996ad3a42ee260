//! Reading SLO files: Sloth `prometheus/v1` and OpenSLO v1 (several
//! documents per file), every problem with `file:line:col`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::promql::Query;
use super::{Alerting, Calendar, Format, Period, Sli, Slo, SloSet, Source, Tier};
use crate::runbook::position::{Pos, Positions};
use crate::slo::forecast::{Capacity, Forecast};
use crate::slo::policy::{Action, OnUnknown, Policy, Scope, When};

/// One problem in one SLO file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SloError {
    pub file: PathBuf,
    pub pos: Option<Pos>,
    /// `service/slo`, when known.
    pub slo: Option<String>,
    pub message: String,
}

impl fmt::Display for SloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(p) = self.pos {
            write!(f, ":{}:{}", p.line, p.col)?;
        }
        f.write_str(": ")?;
        if let Some(s) = &self.slo {
            write!(f, "slo `{s}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found, in file and line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SloErrors(pub Vec<SloError>);

impl fmt::Display for SloErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SloErrors {}

/// Loads every `*.yaml` / `*.yml` file directly in `dir` (none: no SLOs;
/// a missing directory: an error).
///
/// # Errors
/// Every problem, across all files.
pub fn load_dir(dir: &Path) -> Result<SloSet, SloErrors> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        SloErrors(vec![SloError {
            file: dir.to_owned(),
            pos: None,
            slo: None,
            message: format!("cannot read the SLO directory: {e}"),
        }])
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        // A mounted ConfigMap's `..data` and hidden files are not SLO files.
        .filter(|e| !e.file_name().as_encoded_bytes().starts_with(b"."))
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                    x.eq_ignore_ascii_case("yaml") || x.eq_ignore_ascii_case("yml")
                })
        })
        .collect();
    files.sort();
    load_paths(&files)
}

/// Loads files, and the SLO files of directories.
///
/// # Errors
/// Every problem, across all files.
pub fn load_paths(paths: &[PathBuf]) -> Result<SloSet, SloErrors> {
    let mut slos = Vec::new();
    let mut forecasts = Vec::new();
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.is_dir() {
            match load_dir(p) {
                Ok(set) => {
                    slos.extend(set.slos);
                    forecasts.extend(set.forecasts);
                    policies.extend(set.policies);
                }
                Err(e) => errors.extend(e.0),
            }
            continue;
        }
        match std::fs::read_to_string(p) {
            Ok(text) => match parse_text(p, &text) {
                Ok(parsed) => {
                    slos.extend(parsed.slos);
                    forecasts.extend(parsed.forecasts);
                    policies.extend(parsed.policies);
                }
                Err(e) => errors.extend(e),
            },
            Err(e) => errors.push(SloError {
                file: p.clone(),
                pos: None,
                slo: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    // Keyed by the rules' `sloth_id` (`service-name`): two SLOs with the
    // same id (`a-b`/`c` and `a`/`b-c`) would share rule groups.
    let mut seen: BTreeMap<String, &Source> = BTreeMap::new();
    for s in &slos {
        if let Some(first) = seen.insert(s.id(), &s.source) {
            errors.push(SloError {
                file: s.source.file.clone(),
                pos: Some(s.source.pos),
                slo: Some(format!("{}/{}", s.service, s.name)),
                message: format!(
                    "defined twice (its id `{}` is taken): first at {}:{}:{}",
                    s.id(),
                    first.file.display(),
                    first.pos.line,
                    first.pos.col
                ),
            });
        }
    }
    let mut seen: BTreeMap<String, (&PathBuf, Pos)> = BTreeMap::new();
    for f in &forecasts {
        if let Some((file, pos)) = seen.insert(f.id(), (&f.file, f.pos)) {
            errors.push(SloError {
                file: f.file.clone(),
                pos: Some(f.pos),
                slo: None,
                message: format!(
                    "forecast `{}/{}` defined twice (its id `{}` is taken): first at {}:{}:{}",
                    f.service,
                    f.name,
                    f.id(),
                    file.display(),
                    pos.line,
                    pos.col
                ),
            });
        }
    }
    errors.extend(check_policies(&policies, &slos));
    if errors.is_empty() {
        Ok(SloSet::new(slos)
            .with_forecasts(forecasts)
            .with_policies(policies))
    } else {
        errors.sort_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
        Err(SloErrors(errors))
    }
}

/// One YAML document of a file, with the line it starts on.
struct Doc<'a> {
    text: &'a str,
    first_line: usize,
}

/// Splits a file at its `---` lines.
fn documents(text: &str) -> Vec<Doc<'_>> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut first_line = 0;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") {
            docs.push(Doc {
                text: &text[start..offset],
                first_line,
            });
            start = offset + line.len();
            first_line = i + 1;
        }
        offset += line.len();
    }
    docs.push(Doc {
        text: &text[start..],
        first_line,
    });
    docs.into_iter()
        .filter(|d| {
            d.text
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// What one document's problems are reported against.
struct At<'a> {
    file: &'a Path,
    positions: Positions,
    first_line: usize,
}

impl At<'_> {
    fn shift(&self, p: Pos) -> Pos {
        Pos {
            line: p.line + self.first_line,
            col: p.col,
        }
    }

    /// An error at the value of `path` (or at its key, or the nearest
    /// parent that exists).
    fn err(&self, path: &str, slo: Option<&str>, message: impl Into<String>) -> SloError {
        let mut p = path;
        let pos = loop {
            if let Some(pos) = self.positions.value(p).or_else(|| self.positions.key(p)) {
                break Some(pos);
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => break self.positions.value(""),
            }
        };
        SloError {
            file: self.file.to_owned(),
            pos: pos.map(|p| self.shift(p)),
            slo: slo.map(str::to_owned),
            message: message.into(),
        }
    }
}

/// Parses one file's text.
///
/// # Errors
/// Every problem in it.
pub(crate) fn parse_text(file: &Path, text: &str) -> Result<Parsed, Vec<SloError>> {
    let mut slos = Vec::new();
    let mut forecasts = Vec::new();
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for doc in documents(text) {
        let positions = match Positions::of(doc.text) {
            Ok(p) => p,
            Err((pos, message)) => {
                errors.push(SloError {
                    file: file.to_owned(),
                    pos: Some(Pos {
                        line: pos.line + doc.first_line,
                        col: pos.col,
                    }),
                    slo: None,
                    message: format!("not YAML: {message}"),
                });
                continue;
            }
        };
        let at = At {
            file,
            positions,
            first_line: doc.first_line,
        };
        let value: serde_yaml::Value = match serde_yaml::from_str(doc.text) {
            Ok(v) => v,
            Err(e) => {
                errors.push(serde_error(&at, &e));
                continue;
            }
        };
        let version = value.get("version").and_then(serde_yaml::Value::as_str);
        let api = value.get("apiVersion").and_then(serde_yaml::Value::as_str);
        if version.is_none() && api.is_none() && value.get("forecasts").is_some() {
            match forecasts_doc(&at, doc.text) {
                Ok(f) => forecasts.extend(f),
                Err(e) => errors.extend(e),
            }
            continue;
        }
        if version.is_none() && api.is_none() && value.get("policies").is_some() {
            // The valid policies too: the cross-file checks see them.
            let (valid, errs) = policies_doc(&at, doc.text);
            policies.extend(valid);
            errors.extend(errs);
            continue;
        }
        let got = match (version, api) {
            (Some("prometheus/v1"), _) => sloth(&at, doc.text),
            (_, Some("openslo/v1")) => openslo(&at, doc.text, &value),
            (Some(v), _) => Err(vec![at.err(
                "version",
                None,
                format!("unknown Sloth version `{v}`: runbookd reads `prometheus/v1`"),
            )]),
            (_, Some(v)) => Err(vec![at.err(
                "apiVersion",
                None,
                format!("unknown apiVersion `{v}`: runbookd reads OpenSLO `openslo/v1` (and Sloth's `version: prometheus/v1`)"),
            )]),
            (None, None) => Err(vec![at.err(
                "",
                None,
                "not an SLO file: expected Sloth's `version: \"prometheus/v1\"`, OpenSLO's `apiVersion: openslo/v1`, or runbookd's `forecasts:` or `policies:`",
            )]),
        };
        match got {
            Ok(s) => slos.extend(s),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(Parsed {
            slos,
            forecasts,
            policies,
        })
    } else {
        Err(errors)
    }
}

/// What the files of an SLO directory define.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub slos: Vec<Slo>,
    pub forecasts: Vec<Forecast>,
    pub policies: Vec<Policy>,
}

fn serde_error(at: &At<'_>, e: &serde_yaml::Error) -> SloError {
    SloError {
        file: at.file.to_owned(),
        pos: e.location().map(|l| {
            at.shift(Pos {
                line: l.line(),
                col: l.column(),
            })
        }),
        slo: None,
        message: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

// ---- Sloth prometheus/v1 ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlothFile {
    #[allow(dead_code)]
    version: String,
    service: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    slos: Vec<SlothSlo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlothSlo {
    name: String,
    objective: f64,
    #[serde(default)]
    description: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    sli: SlothSli,
    #[serde(default)]
    alerting: SlothAlerting,
    // runbookd's additions.
    #[serde(default)]
    period: Option<String>,
    #[serde(default)]
    calendar: Option<String>,
    #[serde(default)]
    min_events: Option<f64>,
    #[serde(default)]
    counter: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlothSli {
    #[serde(default)]
    events: Option<SlothEvents>,
    #[serde(default)]
    raw: Option<SlothRaw>,
    #[serde(default)]
    plugin: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlothEvents {
    error_query: String,
    total_query: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlothRaw {
    error_ratio_query: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SlothAlerting {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    page_alert: SlothTier,
    #[serde(default)]
    ticket_alert: SlothTier,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SlothTier {
    #[serde(default)]
    disable: bool,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl From<SlothTier> for Tier {
    fn from(t: SlothTier) -> Tier {
        Tier {
            disabled: t.disable,
            labels: t.labels,
            annotations: t.annotations,
        }
    }
}

fn sloth(at: &At<'_>, text: &str) -> Result<Vec<Slo>, Vec<SloError>> {
    let f: SlothFile = serde_yaml::from_str(text).map_err(|e| vec![serde_error(at, &e)])?;
    let mut errors = Vec::new();
    check_name(at, "service", &f.service, None, &mut errors);
    check_labels(at, "labels", &f.labels, None, &mut errors);
    let mut slos = Vec::new();
    for (i, s) in f.slos.into_iter().enumerate() {
        let path = |k: &str| format!("slos.{i}.{k}");
        let id = format!("{}/{}", f.service, s.name);
        let id = Some(id.as_str());
        let before = errors.len();
        check_name(at, &path("name"), &s.name, id, &mut errors);
        check_objective(at, &path("objective"), s.objective, id, &mut errors);
        check_labels(at, &path("labels"), &s.labels, id, &mut errors);
        let query = |field: &str, q: &str, errors: &mut Vec<SloError>| {
            Query::new(q, s.counter)
                .map_err(|e| errors.push(at.err(&path(field), id, format!("`{field}`: {e}"))))
                .ok()
        };
        let sli = match (s.sli.events, s.sli.raw, s.sli.plugin) {
            (Some(ev), None, None) => {
                let errs = query("sli.events.error_query", &ev.error_query, &mut errors);
                let total = query("sli.events.total_query", &ev.total_query, &mut errors);
                errs.zip(total)
                    .map(|(errors, total)| Sli::Events { errors, total })
            }
            (None, Some(raw), None) => query(
                "sli.raw.error_ratio_query",
                &raw.error_ratio_query,
                &mut errors,
            )
            .map(|error_ratio| Sli::Ratio { error_ratio }),
            (None, None, Some(_)) => {
                errors.push(at.err(
                    &path("sli.plugin"),
                    id,
                    "Sloth SLI plugins are Go code runbookd cannot run: write the SLI as `events` or `raw`",
                ));
                None
            }
            _ => {
                errors.push(at.err(
                    &path("sli"),
                    id,
                    "give exactly one of `events` (error_query, total_query) or `raw` (error_ratio_query)",
                ));
                None
            }
        };
        let period = period_of(
            at,
            &path(""),
            s.period.as_deref(),
            s.calendar.as_deref(),
            id,
            &mut errors,
        );
        if let (Some(m), Some(Sli::Ratio { .. })) = (s.min_events, &sli) {
            errors.push(at.err(
                &path("min_events"),
                id,
                format!("`min_events: {m}` needs event counts: write the SLI as `events` (a `raw` ratio has none)"),
            ));
        }
        check_min_events(at, &path("min_events"), s.min_events, id, &mut errors);
        if errors.len() > before {
            continue;
        }
        let (Some(sli), Some(period)) = (sli, period) else {
            continue;
        };
        let mut labels = f.labels.clone();
        labels.extend(s.labels);
        slos.push(Slo {
            service: f.service.clone(),
            name: s.name,
            description: s.description,
            objective: s.objective,
            sli,
            period,
            min_events: s.min_events,
            labels,
            alerting: Alerting {
                name: s.alerting.name,
                labels: s.alerting.labels,
                annotations: s.alerting.annotations,
                page: s.alerting.page_alert.into(),
                ticket: s.alerting.ticket_alert.into(),
            },
            source: Source {
                file: at.file.to_owned(),
                pos: at.shift(at.positions.value(&format!("slos.{i}")).unwrap_or_default()),
                format: Format::Sloth,
            },
        });
    }
    if errors.is_empty() {
        Ok(slos)
    } else {
        Err(errors)
    }
}

// ---- OpenSLO v1 ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OsDoc {
    kind: String,
    metadata: OsMeta,
    #[serde(default)]
    spec: serde_yaml::Value,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OsMeta {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OsSlo {
    #[serde(default)]
    description: String,
    service: String,
    #[serde(default)]
    indicator: Option<OsIndicator>,
    #[serde(default)]
    indicator_ref: Option<String>,
    #[serde(default)]
    time_window: Vec<OsWindow>,
    budgeting_method: String,
    objectives: Vec<OsObjective>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OsIndicator {
    spec: OsIndicatorSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OsIndicatorSpec {
    #[serde(default)]
    ratio_metric: Option<OsRatio>,
    #[serde(default)]
    threshold_metric: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OsRatio {
    #[serde(default)]
    counter: bool,
    #[serde(default)]
    good: Option<OsMetric>,
    #[serde(default)]
    bad: Option<OsMetric>,
    #[serde(default)]
    total: Option<OsMetric>,
    #[serde(default)]
    raw_type: Option<String>,
    #[serde(default)]
    raw: Option<OsMetric>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OsMetric {
    metric_source: OsSource,
}

#[derive(Deserialize)]
struct OsSource {
    /// Optional in OpenSLO; runbookd reads Prometheus only.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    spec: OsSourceSpec,
}

#[derive(Deserialize)]
struct OsSourceSpec {
    query: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OsWindow {
    duration: String,
    #[serde(default)]
    is_rolling: bool,
    #[serde(default)]
    calendar: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OsObjective {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    target: Option<f64>,
    #[serde(default)]
    target_percent: Option<f64>,
}

/// runbookd's additions to an OpenSLO document, as annotations.
const MIN_EVENTS: &str = "runbookd.io/min-events";

fn openslo(at: &At<'_>, text: &str, value: &serde_yaml::Value) -> Result<Vec<Slo>, Vec<SloError>> {
    let doc: OsDoc = serde_yaml::from_str(text).map_err(|e| vec![serde_error(at, &e)])?;
    if doc.kind != "SLO" {
        // Services, SLIs, alert policies and the like: not ours to read.
        return Ok(Vec::new());
    }
    let _ = value;
    let spec: OsSlo = serde_yaml::from_value(doc.spec).map_err(|e| {
        vec![at.err(
            "spec",
            None,
            format!(
                "`spec`: {}",
                e.to_string().split(" at line ").next().unwrap_or_default()
            ),
        )]
    })?;
    let mut errors = Vec::new();
    let id = format!("{}/{}", spec.service, doc.metadata.name);
    let id = Some(id.as_str());
    check_name(at, "spec.service", &spec.service, id, &mut errors);
    check_name(at, "metadata.name", &doc.metadata.name, id, &mut errors);
    if spec.budgeting_method != "Occurrences" {
        errors.push(at.err(
            "spec.budgetingMethod",
            id,
            format!("`budgetingMethod: {}`: runbookd counts events (`Occurrences`); time slices are not supported", spec.budgeting_method),
        ));
    }
    let sli = match (&spec.indicator, &spec.indicator_ref) {
        (_, Some(r)) => {
            errors.push(at.err(
                "spec.indicatorRef",
                id,
                format!("`indicatorRef: {r}`: write the indicator inline (`spec.indicator`)"),
            ));
            None
        }
        (None, None) => {
            errors.push(at.err("spec", id, "no `indicator`"));
            None
        }
        (Some(ind), None) => os_sli(at, ind, id, &mut errors),
    };
    let period = if let [w] = spec.time_window.as_slice() {
        os_period(at, w, id, &mut errors)
    } else {
        errors.push(at.err(
            "spec.timeWindow",
            id,
            "give exactly one `timeWindow` (e.g. `- {duration: 30d, isRolling: true}`)",
        ));
        None
    };
    let min_events = match doc.metadata.annotations.get(MIN_EVENTS) {
        None => None,
        Some(v) => {
            if let Ok(n) = v.parse::<f64>() {
                Some(n)
            } else {
                errors.push(at.err(
                    &format!("metadata.annotations.{MIN_EVENTS}"),
                    id,
                    format!("`{MIN_EVENTS}: {v}` is not a number"),
                ));
                None
            }
        }
    };
    check_min_events(
        at,
        &format!("metadata.annotations.{MIN_EVENTS}"),
        min_events,
        id,
        &mut errors,
    );
    if let (Some(_), Some(Sli::Ratio { .. })) = (min_events, &sli) {
        errors.push(at.err(
            &format!("metadata.annotations.{MIN_EVENTS}"),
            id,
            "a minimum of events needs event counts (`good`/`bad` and `total`, not `raw`)",
        ));
    }
    let labels: BTreeMap<String, String> = doc
        .metadata
        .labels
        .iter()
        .filter_map(|(k, v)| match v {
            serde_yaml::Value::String(s) => Some((k.clone(), s.clone())),
            serde_yaml::Value::Sequence(s) => Some((
                k.clone(),
                s.iter()
                    .filter_map(serde_yaml::Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
            )),
            serde_yaml::Value::Number(n) => Some((k.clone(), n.to_string())),
            serde_yaml::Value::Bool(b) => Some((k.clone(), b.to_string())),
            _ => None,
        })
        .collect();
    check_labels(at, "metadata.labels", &labels, id, &mut errors);
    let mut targets = Vec::new();
    for (i, o) in spec.objectives.iter().enumerate() {
        let path = format!("spec.objectives.{i}");
        let objective = match (o.target, o.target_percent) {
            (Some(t), None) => t * 100.0,
            (None, Some(p)) => p,
            _ => {
                errors.push(at.err(
                    &path,
                    id,
                    "give one of `target` (0.999) or `targetPercent` (99.9)",
                ));
                continue;
            }
        };
        check_objective(at, &path, objective, id, &mut errors);
        targets.push((i, o.display_name.clone(), objective));
    }
    if targets.is_empty() && errors.is_empty() {
        errors.push(at.err("spec.objectives", id, "no objective"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(sli), Some(period)) = (sli, period) else {
        return Err(errors);
    };
    let several = targets.len() > 1;
    Ok(targets
        .into_iter()
        .map(|(i, display, objective)| Slo {
            service: spec.service.clone(),
            // Several objectives: one SLO each, told apart by their index.
            name: if several {
                format!("{}-{i}", doc.metadata.name)
            } else {
                doc.metadata.name.clone()
            },
            description: display
                .filter(|_| spec.description.is_empty())
                .unwrap_or_else(|| spec.description.clone()),
            objective,
            sli: sli.clone(),
            period,
            min_events,
            labels: labels.clone(),
            alerting: Alerting::default(),
            source: Source {
                file: at.file.to_owned(),
                pos: at.shift(at.positions.value("").unwrap_or_default()),
                format: Format::OpenSlo,
            },
        })
        .collect())
}

fn os_sli(
    at: &At<'_>,
    ind: &OsIndicator,
    id: Option<&str>,
    errors: &mut Vec<SloError>,
) -> Option<Sli> {
    let base = "spec.indicator.spec";
    if ind.spec.threshold_metric.is_some() {
        errors.push(at.err(
            &format!("{base}.thresholdMetric"),
            id,
            "`thresholdMetric` SLIs are not supported: write a `ratioMetric`",
        ));
        return None;
    }
    let Some(r) = &ind.spec.ratio_metric else {
        errors.push(at.err(base, id, "no `ratioMetric`"));
        return None;
    };
    let rbase = format!("{base}.ratioMetric");
    let query = |field: &str, m: &OsMetric, errors: &mut Vec<SloError>| -> Option<Query> {
        let path = format!("{rbase}.{field}.metricSource");
        if let Some(kind) = m
            .metric_source
            .kind
            .as_deref()
            .filter(|k| *k != "Prometheus")
        {
            errors.push(at.err(
                &format!("{path}.type"),
                id,
                format!("`metricSource.type: {kind}`: runbookd reads `Prometheus` queries"),
            ));
            return None;
        }
        Query::new(&m.metric_source.spec.query, r.counter)
            .map_err(|e| {
                errors.push(at.err(
                    &format!("{path}.spec.query"),
                    id,
                    format!("`{field}` query: {e}"),
                ));
            })
            .ok()
    };
    match (&r.good, &r.bad, &r.total, &r.raw) {
        (Some(good), None, Some(total), None) => {
            let good = query("good", good, errors)?;
            let total = query("total", total, errors)?;
            Some(Sli::Events {
                errors: good.bad_from_total(&total),
                total,
            })
        }
        (None, Some(bad), Some(total), None) => {
            let bad = query("bad", bad, errors);
            let total = query("total", total, errors);
            Some(Sli::Events {
                errors: bad?,
                total: total?,
            })
        }
        (None, None, None, Some(raw)) => {
            let q = query("raw", raw, errors)?;
            match r.raw_type.as_deref() {
                Some("failure") => Some(Sli::Ratio { error_ratio: q }),
                Some("success") => Some(Sli::Ratio {
                    error_ratio: q.complement(),
                }),
                other => {
                    errors.push(at.err(
                        &format!("{rbase}.rawType"),
                        id,
                        format!("`rawType` must be `success` or `failure`, not {other:?}"),
                    ));
                    None
                }
            }
        }
        _ => {
            errors.push(at.err(
                &rbase,
                id,
                "give `good` and `total`, `bad` and `total`, or `raw` with `rawType`",
            ));
            None
        }
    }
}

fn os_period(
    at: &At<'_>,
    w: &OsWindow,
    id: Option<&str>,
    errors: &mut Vec<SloError>,
) -> Option<Period> {
    let path = "spec.timeWindow.0.duration";
    if w.is_rolling {
        return rolling(at, path, &w.duration, id, errors);
    }
    if w.calendar.is_none() {
        errors.push(at.err(
            "spec.timeWindow.0",
            id,
            "a window that is not rolling needs `calendar` (and `duration: 1M` or `1w`)",
        ));
        return None;
    }
    match w.duration.as_str() {
        "1M" => Some(Period::Calendar(Calendar::Month)),
        "1w" => Some(Period::Calendar(Calendar::Week)),
        d => {
            errors.push(at.err(
                path,
                id,
                format!("calendar windows are `1M` (a month) or `1w` (a week), not `{d}`"),
            ));
            None
        }
    }
}

// ---- runbookd's error-budget policies ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoliciesFile {
    policies: Vec<PolicyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyEntry {
    name: String,
    #[serde(default)]
    slos: Option<Vec<String>>,
    #[serde(default)]
    services: Option<Vec<String>>,
    when: String,
    #[serde(default)]
    actions: Vec<serde_yaml::Value>,
    #[serde(default)]
    recommend: Option<String>,
    #[serde(default)]
    on_unknown: Option<String>,
}

/// The document's valid policies, and the errors of the others.
fn policies_doc(at: &At<'_>, text: &str) -> (Vec<Policy>, Vec<SloError>) {
    let f: PoliciesFile = match serde_yaml::from_str(text) {
        Ok(f) => f,
        Err(e) => return (Vec::new(), vec![serde_error(at, &e)]),
    };
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, e) in f.policies.into_iter().enumerate() {
        let path = |k: &str| format!("policies.{i}.{k}");
        let before = errors.len();
        let mut err = |k: &str, m: String| {
            errors.push(at.err(&path(k), None, format!("policy `{}`: {m}", e.name)));
        };
        if e.name.is_empty()
            || !e
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            err(
                "name",
                format!("`{}` is not a name: letters, digits, `-`, `_`, `.`", e.name),
            );
        }
        let scope = match (e.slos, e.services) {
            (Some(ids), None) if !ids.is_empty() => {
                let mut parsed = Vec::new();
                for id in ids {
                    match id.split_once('/') {
                        Some((s, n)) if !s.is_empty() && !n.is_empty() => {
                            parsed.push((s.to_owned(), n.to_owned()));
                        }
                        _ => err("slos", format!("`{id}`: name an SLO as SERVICE/NAME")),
                    }
                }
                Some(Scope::Slos(parsed))
            }
            (None, Some(services)) if !services.is_empty() => Some(Scope::Services(services)),
            _ => {
                err(
                    "name",
                    "give `slos: [SERVICE/NAME, …]` or `services: [SERVICE, …]` (one of them, not empty)".into(),
                );
                None
            }
        };
        let when = e
            .when
            .parse::<When>()
            .map_err(|m| err("when", format!("`when`: {m}")))
            .ok();
        // Each action with where it is written.
        let mut written: Vec<(usize, Action)> = Vec::new();
        for (j, a) in e.actions.iter().enumerate() {
            let item = format!("actions.{j}");
            match (a.as_str(), a.get("notify")) {
                (Some("freeze"), _) => written.push((j, Action::Freeze)),
                (Some("require_postmortem"), _) => written.push((j, Action::RequirePostmortem)),
                (None, Some(to)) => match serde_yaml::from_value::<Vec<String>>(to.clone()) {
                    Ok(names) if !names.is_empty() && names.iter().all(|n| !n.trim().is_empty()) => {
                        written.push((j, Action::Notify(names)));
                    }
                    _ => err(
                        &item,
                        "`notify` names notifiers of the server config: `{notify: [slack-ops]}`".into(),
                    ),
                },
                _ => err(
                    &item,
                    format!(
                        "unknown action {}: expected `freeze`, `require_postmortem` or `{{notify: [NOTIFIER, …]}}`",
                        serde_yaml::to_string(a).unwrap_or_default().trim()
                    ),
                ),
            }
        }
        let actions: Vec<Action> = written.iter().map(|(_, a)| a.clone()).collect();
        let when = when.filter(|w| {
            let per_incident = w.metric.per_incident();
            let mut fits = true;
            for (j, a) in &written {
                let why = match a {
                    Action::Freeze if per_incident => Some(
                        "`freeze` follows a service's budget (budget_remaining, burn_rate(WINDOW), time_to_exhaustion), not one incident's cost: give `require_postmortem`",
                    ),
                    Action::RequirePostmortem if !per_incident => Some(
                        "`require_postmortem` follows one incident's cost: write `when: incident_budget_consumed > SHARE`",
                    ),
                    Action::Notify(_) if !per_incident && !actions.contains(&Action::Freeze) => Some(
                        "`notify` is told when the policy freezes or unfreezes its service (with `freeze`), or when an incident's cost requires a postmortem (`when: incident_budget_consumed > SHARE`)",
                    ),
                    _ => None,
                };
                if let Some(why) = why {
                    err(&format!("actions.{j}"), why.into());
                    fits = false;
                }
            }
            if per_incident && !actions.contains(&Action::RequirePostmortem) {
                err(
                    "actions",
                    "a policy over an incident's cost says `require_postmortem` (and may `notify`)".into(),
                );
                fits = false;
            }
            fits
        });
        if actions.is_empty() && e.recommend.is_none() {
            err(
                "actions",
                "does nothing: give `actions: [freeze]`, a `recommend:` text, or both".into(),
            );
        }
        let on_unknown = match e.on_unknown.as_deref() {
            None | Some("hold") => OnUnknown::Hold,
            Some("ignore") => OnUnknown::Ignore,
            Some(x) => {
                err(
                    "on_unknown",
                    format!("`on_unknown: {x}`: `hold` (act as if the condition held) or `ignore`"),
                );
                OnUnknown::Hold
            }
        };
        if errors.len() > before {
            continue;
        }
        let (Some(scope), Some(when)) = (scope, when) else {
            continue;
        };
        out.push(Policy {
            name: e.name,
            scope,
            when,
            actions,
            recommend: e.recommend.filter(|r| !r.trim().is_empty()),
            on_unknown,
            file: at.file.to_owned(),
            pos: at.shift(
                at.positions
                    .value(&format!("policies.{i}"))
                    .unwrap_or_default(),
            ),
        });
    }
    (out, errors)
}

/// Across files: names are unique, and every SLO or service a policy names
/// exists (a typo would cover nothing and freeze nothing, silently), as
/// does every `burn_rate(WINDOW)` among its SLOs' alert windows.
fn check_policies(policies: &[Policy], slos: &[Slo]) -> Vec<SloError> {
    let mut errors = Vec::new();
    let mut seen: BTreeMap<&str, &Policy> = BTreeMap::new();
    for p in policies {
        let mut err = |m: String| {
            errors.push(SloError {
                file: p.file.clone(),
                pos: Some(p.pos),
                slo: None,
                message: format!("policy `{}`: {m}", p.name),
            });
        };
        if let Some(first) = seen.insert(&p.name, p) {
            err(format!(
                "defined twice: first at {}:{}:{}",
                first.file.display(),
                first.pos.line,
                first.pos.col
            ));
        }
        match &p.scope {
            Scope::Slos(ids) => {
                for (s, n) in ids {
                    if !slos.iter().any(|x| x.service == *s && x.name == *n) {
                        err(format!("no SLO `{s}/{n}` is defined"));
                    }
                }
            }
            Scope::Services(services) => {
                for s in services {
                    if !slos.iter().any(|x| x.service == *s) {
                        err(format!("no SLO of service `{s}` is defined"));
                    }
                }
            }
        }
        if let crate::slo::policy::Metric::BurnRate(crate::slo::policy::BurnWindow::Window(w)) =
            &p.when.metric
        {
            let want = crate::duration::parse(w).ok();
            for slo in slos.iter().filter(|s| p.covers(s)) {
                let windows = crate::slo::rules::Windows::for_period(slo.period).all();
                if !windows.iter().any(|d| Some(*d) == want) {
                    err(format!(
                        "`burn_rate({w})`: `{}/{}` has the alert windows {} (or use `burn_rate(period)`)",
                        slo.service,
                        slo.name,
                        windows
                            .iter()
                            .map(|d| crate::slo::promql::duration(*d))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
    }
    errors
}

// ---- runbookd's capacity forecasts ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForecastsFile {
    forecasts: Vec<ForecastEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForecastEntry {
    name: String,
    service: String,
    #[serde(default)]
    description: String,
    usage: String,
    capacity: serde_yaml::Value,
    #[serde(default)]
    lookback: Option<String>,
    #[serde(default)]
    horizon: Option<String>,
    #[serde(default)]
    warn_within: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// A PromQL query that gives an instant vector (or a scalar, with
/// `scalar_ok`): its text, and whether it gives a scalar.
fn instant_query(q: &str, scalar_ok: bool) -> Result<(String, bool), String> {
    use promql_parser::parser::value::ValueType;
    let q = q.trim();
    if q.is_empty() {
        return Err("the query is empty".into());
    }
    let expr = promql_parser::parser::parse(q).map_err(|e| format!("not PromQL: {e}"))?;
    match expr.value_type() {
        ValueType::Vector => Ok((q.to_owned(), false)),
        ValueType::Scalar if scalar_ok => Ok((q.to_owned(), true)),
        t => Err(format!(
            "the query gives a {t}; write one that gives an instant vector{}",
            if scalar_ok {
                " or a scalar"
            } else {
                " (no `[range]`)"
            }
        )),
    }
}

fn forecasts_doc(at: &At<'_>, text: &str) -> Result<Vec<Forecast>, Vec<SloError>> {
    let f: ForecastsFile = serde_yaml::from_str(text).map_err(|e| vec![serde_error(at, &e)])?;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, e) in f.forecasts.into_iter().enumerate() {
        let path = |k: &str| format!("forecasts.{i}.{k}");
        let id = format!("{}/{}", e.service, e.name);
        let id = Some(id.as_str());
        let before = errors.len();
        check_name(at, &path("name"), &e.name, id, &mut errors);
        check_name(at, &path("service"), &e.service, id, &mut errors);
        check_labels(at, &path("labels"), &e.labels, id, &mut errors);
        for k in ["severity", "service", "runbookd_forecast"] {
            if e.labels.contains_key(k) {
                errors.push(at.err(
                    &format!("{}.{k}", path("labels")),
                    id,
                    format!("label `{k}`: the generated alert sets it (severity: warning, the service, the forecast's id)"),
                ));
            }
        }
        let usage = instant_query(&e.usage, false)
            .map(|(q, _)| q)
            .map_err(|m| errors.push(at.err(&path("usage"), id, format!("`usage`: {m}"))))
            .ok();
        let capacity = match &e.capacity {
            serde_yaml::Value::Number(n) => match n.as_f64() {
                Some(v) if v.is_finite() && v > 0.0 => Some(Capacity::Value(v)),
                _ => {
                    errors.push(at.err(
                        &path("capacity"),
                        id,
                        format!("`capacity: {n}`: a number above 0, or a query"),
                    ));
                    None
                }
            },
            serde_yaml::Value::String(q) => instant_query(q, true)
                .map(|(q, scalar)| {
                    if scalar {
                        Capacity::Scalar(q)
                    } else {
                        Capacity::Query(q)
                    }
                })
                .map_err(|m| {
                    errors.push(at.err(&path("capacity"), id, format!("`capacity`: {m}")));
                })
                .ok(),
            _ => {
                errors.push(at.err(
                    &path("capacity"),
                    id,
                    "`capacity`: a number (bytes, items, …) or a PromQL query",
                ));
                None
            }
        };
        let span = |key: &str,
                    given: Option<&str>,
                    default: u64,
                    least: u64,
                    errors: &mut Vec<SloError>| {
            let Some(text) = given else {
                return Some(Duration::from_secs(default));
            };
            match crate::duration::parse(text) {
                Ok(d) if d.as_secs() >= least && d.as_secs() % 60 == 0 => Some(d),
                Ok(_) => {
                    errors.push(at.err(
                        &path(key),
                        id,
                        format!(
                            "`{key}: {text}`: at least {}, in whole minutes",
                            crate::slo::promql::duration(Duration::from_secs(least))
                        ),
                    ));
                    None
                }
                Err(err) => {
                    errors.push(at.err(&path(key), id, format!("`{key}`: {err}")));
                    None
                }
            }
        };
        let lookback = span(
            "lookback",
            e.lookback.as_deref(),
            14 * 86_400,
            3_600,
            &mut errors,
        );
        let horizon = span(
            "horizon",
            e.horizon.as_deref(),
            90 * 86_400,
            3_600,
            &mut errors,
        );
        let warn = span(
            "warn_within",
            e.warn_within.as_deref(),
            30 * 86_400,
            60,
            &mut errors,
        );
        if let (Some(h), Some(w)) = (horizon, warn) {
            if w > h {
                errors.push(at.err(
                    &path("warn_within"),
                    id,
                    format!(
                        "`warn_within` ({}) is beyond the `horizon` ({}): nothing past the horizon is forecast",
                        crate::slo::promql::duration(w),
                        crate::slo::promql::duration(h)
                    ),
                ));
            }
        }
        if errors.len() > before {
            // Said as a forecast's, not an SLO's.
            for e in &mut errors[before..] {
                if let Some(who) = e.slo.take() {
                    e.message = format!("forecast `{who}`: {}", e.message);
                }
            }
            continue;
        }
        let (Some(usage), Some(capacity), Some(lookback), Some(horizon), Some(warn_within)) =
            (usage, capacity, lookback, horizon, warn)
        else {
            continue;
        };
        out.push(Forecast {
            name: e.name,
            service: e.service,
            description: e.description,
            usage,
            capacity,
            lookback,
            horizon,
            warn_within,
            labels: e.labels,
            file: at.file.to_owned(),
            pos: at.shift(
                at.positions
                    .value(&format!("forecasts.{i}"))
                    .unwrap_or_default(),
            ),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

// ---- Checks shared by both formats ----

fn rolling(
    at: &At<'_>,
    path: &str,
    text: &str,
    id: Option<&str>,
    errors: &mut Vec<SloError>,
) -> Option<Period> {
    match crate::duration::parse(text) {
        Ok(d) if d >= Duration::from_secs(86_400) && d.as_secs() % 60 == 0 => {
            Some(Period::Rolling(d))
        }
        Ok(_) => {
            errors.push(at.err(
                path,
                id,
                format!("period `{text}`: at least a day (`1d`), in whole minutes"),
            ));
            None
        }
        Err(e) => {
            errors.push(at.err(path, id, format!("period: {e}")));
            None
        }
    }
}

fn period_of(
    at: &At<'_>,
    base: &str,
    period: Option<&str>,
    calendar: Option<&str>,
    id: Option<&str>,
    errors: &mut Vec<SloError>,
) -> Option<Period> {
    let base = base.trim_end_matches('.');
    match (period, calendar) {
        (Some(_), Some(_)) => {
            errors.push(at.err(
                &format!("{base}.calendar"),
                id,
                "give `period` (rolling) or `calendar`, not both",
            ));
            None
        }
        (Some(p), None) => rolling(at, &format!("{base}.period"), p, id, errors),
        (None, Some("month")) => Some(Period::Calendar(Calendar::Month)),
        (None, Some("week")) => Some(Period::Calendar(Calendar::Week)),
        (None, Some(c)) => {
            errors.push(at.err(
                &format!("{base}.calendar"),
                id,
                format!("`calendar: {c}`: write `month` or `week`"),
            ));
            None
        }
        (None, None) => Some(Period::Rolling(Duration::from_secs(30 * 86_400))),
    }
}

fn check_name(at: &At<'_>, path: &str, name: &str, id: Option<&str>, errors: &mut Vec<SloError>) {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        errors.push(at.err(
            path,
            id,
            format!("`{name}`: names are 1 to 128 letters, digits, `-`, `_` or `.` (they become label values and URLs)"),
        ));
    }
}

fn check_objective(
    at: &At<'_>,
    path: &str,
    objective: f64,
    id: Option<&str>,
    errors: &mut Vec<SloError>,
) {
    if !(objective > 0.0 && objective <= 99.9999) {
        errors.push(at.err(
            path,
            id,
            format!("objective {objective}: a percentage above 0 and at most 99.9999 (99.9); a budget must be left"),
        ));
    }
}

fn check_min_events(
    at: &At<'_>,
    path: &str,
    n: Option<f64>,
    id: Option<&str>,
    errors: &mut Vec<SloError>,
) {
    if let Some(n) = n {
        if !(n.is_finite() && n >= 1.0) {
            errors.push(at.err(
                path,
                id,
                format!("`min_events: {n}`: a number of events, at least 1"),
            ));
        }
    }
}

fn check_labels(
    at: &At<'_>,
    path: &str,
    labels: &BTreeMap<String, String>,
    id: Option<&str>,
    errors: &mut Vec<SloError>,
) {
    for k in labels.keys() {
        let mut chars = k.chars();
        let ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with("__");
        if !ok {
            errors.push(at.err(
                &format!("{path}.{k}"),
                id,
                format!("label `{k}`: a Prometheus label name is letters, digits and `_`, not starting with a digit or `__`"),
            ));
        } else if k.starts_with("sloth_") {
            errors.push(at.err(
                &format!("{path}.{k}"),
                id,
                format!("label `{k}`: `sloth_` labels are the rules' own"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse_text(Path::new("s.yaml"), text)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn errors_name_the_field_and_where_it_is() {
        let e = errors(
            "version: prometheus/v1\nservice: web\nslos:\n  - name: avail\n    objective: 120\n    sli:\n      events:\n        error_query: sum(rate(e[5m]))\n        total_query: sum(rate(t[{{.window}}]))\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("s.yaml:5:16: slo `web/avail`: objective 120"),
            "{e:?}"
        );
        assert!(e[1].starts_with("s.yaml:8:22: slo `web/avail`: `sli.events.error_query`: the query has no `{{.window}}`"), "{e:?}");
    }

    #[test]
    fn an_unknown_key_is_pointed_at() {
        let e =
            errors("version: prometheus/v1\nservice: web\nslos:\n  - name: a\n    objectiv: 99\n");
        assert!(e[0].starts_with("s.yaml:5:5: "), "{e:?}");
        assert!(e[0].contains("objectiv"), "{e:?}");
    }

    #[test]
    fn openslo_documents_are_read_and_their_positions_count_from_the_file() {
        let text = "apiVersion: openslo/v1\nkind: Service\nmetadata: {name: web}\nspec: {}\n---\napiVersion: openslo/v1\nkind: SLO\nmetadata:\n  name: web-avail\nspec:\n  service: web\n  budgetingMethod: Occurrences\n  timeWindow:\n    - {duration: 28d, isRolling: true}\n  objectives:\n    - target: 0.995\n  indicator:\n    metadata: {name: ok}\n    spec:\n      ratioMetric:\n        counter: true\n        good:\n          metricSource: {type: Prometheus, spec: {query: 'sum(http_requests_total{code!~\"5..\"})'}}\n        total:\n          metricSource: {type: Prometheus, spec: {query: 'sum(http_requests_total)'}}\n---\napiVersion: openslo/v1\nkind: SLO\nmetadata: {name: bad}\nspec:\n  service: web\n  budgetingMethod: Timeslices\n  timeWindow: [{duration: 1M, calendar: {startTime: '2026-01-01 00:00:00', timeZone: UTC}}]\n  objectives: [{target: 0.99}]\n  indicatorRef: some-sli\n";
        let e = errors(text);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("s.yaml:32:20: slo `web/bad`: `budgetingMethod: Timeslices`"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("s.yaml:35:17: slo `web/bad`: `indicatorRef: some-sli`"),
            "{e:?}"
        );
        let ok = parse_text(Path::new("s.yaml"), &text[..text.rfind("---").unwrap()])
            .unwrap()
            .slos;
        assert_eq!(ok.len(), 1);
        assert_eq!(
            ok[0].period,
            Period::Rolling(Duration::from_secs(28 * 86_400))
        );
        assert!((ok[0].objective - 99.5).abs() < 1e-9);
        let Sli::Events { errors, .. } = &ok[0].sli else {
            panic!("{:?}", ok[0].sli)
        };
        let q = errors.at(Duration::from_secs(3600)).unwrap();
        assert!(q.contains("rate(http_requests_total[1h])"), "{q}");
    }

    #[test]
    fn ids_that_collide_and_objectives_without_budget_are_refused() {
        let slo = |service: &str, name: &str, objective: &str| {
            format!("version: prometheus/v1\nservice: {service}\nslos:\n  - name: {name}\n    objective: {objective}\n    sli: {{raw: {{error_ratio_query: 'avg_over_time(r[{{{{.window}}}}])'}}}}\n")
        };
        let e = errors(&slo("a", "b", "99.99999"));
        assert!(e[0].contains("objective 99.99999"), "{e:?}");
        // Two files in one directory: the rules' id `a-b-c` twice.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.yaml"), slo("a-b", "c", "99")).unwrap();
        std::fs::write(dir.path().join("2.yaml"), slo("a", "b-c", "99")).unwrap();
        let err = load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("its id `a-b-c` is taken"), "{err}");
    }

    #[test]
    fn forecasts_are_read_with_defaults_and_their_errors_pointed_at() {
        let text = "# capacity\nforecasts:\n  - name: disk\n    service: db\n    usage: node_filesystem_size_bytes - node_filesystem_avail_bytes\n    capacity: node_filesystem_size_bytes\n  - name: queue\n    service: db\n    usage: jobs_queued\n    capacity: 1e6\n    lookback: 3d\n    warn_within: 2d\n";
        let parsed = parse_text(Path::new("s.yaml"), text).unwrap();
        let (slos, f) = (parsed.slos, parsed.forecasts);
        assert!(slos.is_empty());
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].lookback, Duration::from_secs(14 * 86_400));
        assert_eq!(f[0].pos.line, 3);
        assert_eq!(f[1].capacity, Capacity::Value(1e6));
        assert_eq!(f[1].warn_within, Duration::from_secs(2 * 86_400));
        let e = errors("forecasts:\n  - name: disk\n    service: db\n    usage: rate(x[5m])[1h:]\n    capacity: -3\n    horizon: 7d\n    warn_within: 8d\n    colour: red\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("s.yaml:8:5: forecasts[0]: unknown field `colour`"),
            "{e:?}"
        );
        let e = errors("forecasts:\n  - name: disk\n    service: db\n    usage: rate(x[5m])[1h:]\n    capacity: -3\n    horizon: 7d\n    warn_within: 8d\n");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("s.yaml:4:12: forecast `db/disk`: `usage`: the query gives a matrix"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("s.yaml:5:15: forecast `db/disk`: `capacity: -3`"),
            "{e:?}"
        );
        assert!(
            e[2].starts_with("s.yaml:7:18: forecast `db/disk`: `warn_within` (8d) is beyond"),
            "{e:?}"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in [
            "",
            "[",
            "- 1\n- 2\n",
            "version: prometheus/v1\n",
            "version: 3\nslos: 7\n",
            "apiVersion: openslo/v1\nkind: SLO\n",
            "\u{0}",
            "forecasts: 3\n",
            "forecasts:\n  - capacity: {a: 1}\n",
        ] {
            let _ = parse_text(Path::new("g.yaml"), text);
        }
    }
}
