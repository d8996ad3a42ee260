//! Step templates: Handlebars in strict mode, rendered two ways.
//!
//! - [`Flavor::Raw`] (`run:` argv elements, `env:` values, `when:`, `manual:`):
//!   values are inserted as-is, with no escaping of any kind. Nothing here is
//!   ever seen by a shell, so there is nothing to escape for.
//! - [`Flavor::Shell`] (`shell:` scripts, run by `/bin/sh -c`): alert data
//!   never becomes shell source. Each `{{…}}` value is handed to the script
//!   as an environment variable, and the script text refers to it
//!   (`"${RUNBOOKD_V1}"`), so the text the shell parses is the template's own
//!   for every alert; [`shell`] decides how each reference is quoted and
//!   refuses the places where the shell would evaluate a value again. The
//!   raw form `{{{…}}}` is refused.
//!
//! Unknown variables are load errors: [`Template::compile`] walks the template
//! and checks every path against the context of DESIGN §3 (`labels.*` and the
//! other label maps accept any name; `steps.NAME` must name an earlier step).

pub mod shell;

use std::fmt;
use std::sync::LazyLock;

use handlebars::template::{HelperTemplate, Parameter, TemplateElement};
use handlebars::{Handlebars, Path, RenderContext, RenderErrorReason, Renderable, StringOutput};

/// How values are inserted into the rendered text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// As-is (argv elements, env values, `when`, manual text).
    Raw,
    /// Values passed as variables of `/bin/sh -c` scripts.
    Shell,
}

/// The helpers a template may call (Handlebars built-ins, minus `log`/`raw`).
const HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or",
    "not", "len",
];

pub mod promql;

use shell::{ShellContext, Substituted, CLOSE, OPEN, POISON};

fn registry(escape: fn(&str) -> String) -> Handlebars<'static> {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    h.register_escape_fn(escape);
    h
}

static RAW: LazyLock<Handlebars<'static>> = LazyLock::new(|| registry(handlebars::no_escape));
static SHELL: LazyLock<Handlebars<'static>> = LazyLock::new(|| registry(mark_shell_value));

/// Escape function of the shell registry: the value between sentinels (the
/// shell lexer takes it out of the text), or a poison marker when the value
/// itself holds a sentinel or NUL (which no environment can carry).
fn mark_shell_value(v: &str) -> String {
    if v.contains([OPEN, CLOSE, POISON, '\0']) {
        format!("{OPEN}{POISON}{CLOSE}")
    } else {
        format!("{OPEN}{v}{CLOSE}")
    }
}

/// Where one `{{…}}` of a template stands, for `check`'s warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSite {
    /// The expression as written, e.g. `{{labels.pod}}`.
    pub expr: String,
    /// The context paths it reads, e.g. `labels.pod`.
    pub paths: Vec<String>,
    /// Literal text of the element (argv) or word (shell) before and after it.
    pub prefix: String,
    pub suffix: String,
    /// For shell scripts: the word it stands in.
    pub word: Option<shell::Word>,
}

/// A compiled, checked template.
#[derive(Clone)]
pub struct Template {
    source: String,
    compiled: handlebars::Template,
    flavor: Flavor,
    uses_steps: bool,
    /// The text of a template without expressions (most argv elements), which
    /// then renders without running Handlebars.
    constant: Option<String>,
    sites: Vec<ValueSite>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("source", &self.source)
            .field("flavor", &self.flavor)
            .finish_non_exhaustive()
    }
}

/// The data a template renders against (DESIGN §3), built once per alert.
pub struct Data(handlebars::Context);

impl Data {
    #[must_use]
    pub fn new(value: serde_json::Value) -> Self {
        Data(handlebars::Context::from(value))
    }

    #[must_use]
    pub fn value(&self) -> &serde_json::Value {
        self.0.data()
    }
}

/// Why a template cannot be rendered for this alert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the alert has no value for `{0}`")]
    Missing(String),
    #[error("template value #{} {}", index + 1, context)]
    ShellContext { index: usize, context: ShellContext },
    #[error("a value holds a NUL byte or a reserved character (U+E000..U+E003) and cannot be passed to a shell")]
    Unpassable,
    #[error("{0}")]
    Other(String),
}

impl Template {
    /// Compiles `source` and checks it: syntax, helpers, every variable path,
    /// and for shell scripts where each value would land. `steps_before` are the
    /// step names whose results `steps.NAME` may read.
    ///
    /// # Errors
    /// A message saying what is wrong, without position.
    pub fn compile(source: &str, flavor: Flavor, steps_before: &[&str]) -> Result<Self, String> {
        Self::compile_in(source, flavor, steps_before, Schema::Step)
    }

    /// Compiles a notification message (`communication[].message`): a raw
    /// template over the step context without `steps`, plus `event` and the
    /// incident's `status`, `title` and `url`.
    ///
    /// # Errors
    /// A message saying what is wrong, without position.
    pub fn compile_message(source: &str) -> Result<Self, String> {
        Self::compile_in(source, Flavor::Raw, &[], Schema::Message)
    }

    fn compile_in(
        source: &str,
        flavor: Flavor,
        steps_before: &[&str],
        schema: Schema,
    ) -> Result<Self, String> {
        let hinted = |msg: String| match foreign_syntax_hint(source) {
            Some(hint) => format!("{msg} ({hint})"),
            None => msg,
        };
        let compiled = handlebars::Template::compile(source).map_err(|e| {
            let reason = e.reason().to_string();
            // Drop pest's list of every token it would have accepted.
            let reason = reason.split(": expected").next().unwrap_or_default();
            hinted(match e.pos() {
                Some((l, c)) => {
                    format!("template syntax error at template line {l}, column {c}: {reason}")
                }
                None => format!("template syntax error: {reason}"),
            })
        })?;
        let mut check = Checker {
            steps_before,
            flavor,
            schema,
            uses_steps: false,
        };
        check.elements(&compiled.elements, false).map_err(hinted)?;
        if source.contains([OPEN, CLOSE, POISON, '\u{E003}']) {
            return Err("template contains a reserved character (U+E000..U+E003)".to_owned());
        }
        let mut exprs = Vec::new();
        let probe = probe_text(&compiled.elements, &mut exprs);
        let mut sites: Vec<ValueSite> = exprs
            .into_iter()
            .map(|(expr, paths)| ValueSite {
                expr,
                paths,
                prefix: String::new(),
                suffix: String::new(),
                word: None,
            })
            .collect();
        if flavor == Flavor::Shell {
            match shell::substitute(&probe) {
                Ok(sub) => {
                    for (site, found) in sites.iter_mut().zip(sub.sites) {
                        site.prefix.clone_from(&found.word.prefix);
                        site.suffix.clone_from(&found.word.suffix);
                        site.word = Some(found.word);
                    }
                }
                Err(shell::SubstituteError::Refused(r)) => {
                    return Err(format!(
                        "`{}` {}",
                        sites.get(r.index).map_or("{{…}}", |s| s.expr.as_str()),
                        r.context
                    ));
                }
                Err(shell::SubstituteError::Unpassable) => {
                    return Err("the script cannot be checked".to_owned());
                }
            }
        } else {
            raw_affixes(&probe, &mut sites);
        }
        let uses_steps = check.uses_steps;
        let constant = compiled
            .elements
            .iter()
            .map(|e| match e {
                TemplateElement::RawString(s) => Some(s.as_str()),
                TemplateElement::Comment(_) => Some(""),
                _ => None,
            })
            .collect::<Option<String>>();
        Ok(Template {
            source: source.to_owned(),
            compiled,
            flavor,
            uses_steps,
            constant,
            sites,
        })
    }

    /// Every `{{…}}` of the template (all branches), where it stands.
    #[must_use]
    pub fn sites(&self) -> &[ValueSite] {
        &self.sites
    }

    /// Whether the template has no `{{…}}` at all.
    #[must_use]
    pub fn is_constant(&self) -> bool {
        self.constant.is_some()
    }

    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    #[must_use]
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Whether the template reads `steps.*`, i.e. can only be rendered at run
    /// time after the earlier steps ran.
    #[must_use]
    pub fn uses_steps(&self) -> bool {
        self.uses_steps
    }

    /// Renders a raw template against `data`: values inserted verbatim.
    ///
    /// # Errors
    /// A missing value (strict mode).
    ///
    /// # Panics
    /// Never for raw templates; a shell template must use [`Template::render_shell`].
    pub fn render(&self, data: &Data) -> Result<String, RenderError> {
        assert_eq!(
            self.flavor,
            Flavor::Raw,
            "shell templates render with render_shell"
        );
        if let Some(text) = &self.constant {
            return Ok(text.clone());
        }
        self.handlebars(&RAW, data)
    }

    /// Renders a shell template against `data`: the script text refers to
    /// variables, whose values come back beside it.
    ///
    /// # Errors
    /// A missing value, or a value in a place the shell would evaluate.
    pub fn render_shell(&self, data: &Data) -> Result<Substituted, RenderError> {
        if let Some(text) = &self.constant {
            return Ok(Substituted {
                script: text.clone(),
                ..Substituted::default()
            });
        }
        let marked = self.handlebars(&SHELL, data)?;
        shell::substitute(&marked).map_err(|e| match e {
            shell::SubstituteError::Refused(r) => RenderError::ShellContext {
                index: r.index,
                context: r.context,
            },
            shell::SubstituteError::Unpassable => RenderError::Unpassable,
        })
    }

    fn handlebars(&self, reg: &Handlebars<'static>, data: &Data) -> Result<String, RenderError> {
        let mut rc = RenderContext::new(None);
        let mut out = StringOutput::new();
        self.compiled
            .render(reg, &data.0, &mut rc, &mut out)
            .map_err(|e| match e.reason() {
                RenderErrorReason::MissingVariable(Some(path)) => {
                    RenderError::Missing(path.clone())
                }
                RenderErrorReason::MissingVariable(None) => {
                    RenderError::Missing(self.source.clone())
                }
                other => RenderError::Other(other.to_string()),
            })?;
        out.into_string()
            .map_err(|e| RenderError::Other(e.to_string()))
    }
}

/// For raw templates: the literal text around each marked value.
fn raw_affixes(probe: &str, sites: &mut [ValueSite]) {
    let mut parts = probe.split(OPEN);
    let mut before = parts.next().unwrap_or_default().to_owned();
    for (i, part) in parts.enumerate() {
        let after = part.split_once(CLOSE).map_or("", |(_, a)| a);
        if let Some(site) = sites.get_mut(i) {
            site.prefix.clone_from(&before);
            after.clone_into(&mut site.suffix);
        }
        after.clone_into(&mut before);
    }
}

/// Walks a template's syntax tree and checks helpers and variable paths.
struct Checker<'a> {
    steps_before: &'a [&'a str],
    flavor: Flavor,
    schema: Schema,
    uses_steps: bool,
}

/// Which context a template renders against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    /// A step's (DESIGN §3).
    Step,
    /// A notification message's: the step context without `steps`, plus
    /// `event` and more of the incident.
    Message,
}

impl Checker<'_> {
    /// `rebased`: inside `each`/`with`, where relative paths name the item.
    fn elements(&mut self, elements: &[TemplateElement], rebased: bool) -> Result<(), String> {
        for el in elements {
            match el {
                TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
                TemplateElement::HtmlExpression(ht) => {
                    if self.flavor == Flavor::Shell {
                        return Err(format!(
                            "`{}` is refused in shell scripts: the raw form `{{{{{{…}}}}}}` would make the value part of the script; use `{{{{…}}}}`, which passes it as a variable",
                            describe(ht, true)
                        ));
                    }
                    self.helper(ht, rebased)?;
                }
                TemplateElement::Expression(ht) => self.helper(ht, rebased)?,
                TemplateElement::HelperBlock(ht) => {
                    self.helper(ht, rebased)?;
                    let name = ht.name.as_name().unwrap_or_default();
                    let inner = rebased || name == "each" || name == "with";
                    if let Some(t) = &ht.template {
                        self.elements(&t.elements, inner)?;
                    }
                    if let Some(t) = &ht.inverse {
                        self.elements(&t.elements, rebased)?;
                    }
                }
                _ => {
                    return Err(
                        "partials and decorators are not supported in runbook templates".to_owned(),
                    )
                }
            }
        }
        Ok(())
    }

    fn helper(&mut self, ht: &HelperTemplate, rebased: bool) -> Result<(), String> {
        let is_call = ht.block || !ht.params.is_empty() || !ht.hash.is_empty();
        match &ht.name {
            Parameter::Name(n) if HELPERS.contains(&n.as_str()) => {}
            Parameter::Name(n) if is_call => return Err(format!("unknown helper `{n}`")),
            Parameter::Name(n) => self.path(n, rebased)?,
            Parameter::Path(p) if is_call => {
                return Err(format!("unknown helper `{}`", raw_path(p)))
            }
            Parameter::Path(p) => self.path(raw_path(p), rebased)?,
            Parameter::Subexpression(s) => self.element(s.as_element(), rebased)?,
            Parameter::Literal(_) => {}
            _ => return Err("unsupported template expression".to_owned()),
        }
        for p in ht.params.iter().chain(ht.hash.values()) {
            self.param(p, rebased)?;
        }
        Ok(())
    }

    fn element(&mut self, el: &TemplateElement, rebased: bool) -> Result<(), String> {
        match el {
            TemplateElement::Expression(ht) | TemplateElement::HelperBlock(ht) => {
                self.helper(ht, rebased)
            }
            _ => Ok(()),
        }
    }

    fn param(&mut self, p: &Parameter, rebased: bool) -> Result<(), String> {
        match p {
            Parameter::Path(path) => self.path(raw_path(path), rebased),
            Parameter::Name(n) => self.path(n, rebased),
            Parameter::Subexpression(s) => self.element(s.as_element(), rebased),
            _ => Ok(()),
        }
    }

    fn path(&mut self, raw: &str, rebased: bool) -> Result<(), String> {
        if raw.starts_with('@') && !raw.starts_with("@root") {
            return Ok(()); // @index, @key, @first, @last of a block
        }
        let (root_anchored, rest) = match raw.strip_prefix("@root") {
            Some(rest) => (true, rest.trim_start_matches(['.', '/'])),
            None => (false, raw),
        };
        if rest.starts_with("../") || (rebased && !root_anchored) {
            return Ok(()); // relative to a block's item: not knowable here
        }
        let segs = split_path(rest);
        let segs: Vec<&str> = segs
            .iter()
            .map(String::as_str)
            .skip_while(|s| *s == "this" || *s == ".")
            .collect();
        if segs.first() == Some(&"steps") {
            self.uses_steps = true;
        }
        let checked = match (self.schema, segs.as_slice()) {
            (Schema::Message, ["event"]) => Ok(()),
            (Schema::Message, ["event", field, ..]) => {
                Err(format!("`event` is a value and has no field `{field}`"))
            }
            (Schema::Message, ["incident", rest @ ..]) => match rest.first() {
                Some(f) if !MESSAGE_INCIDENT_FIELDS.contains(f) => Err(format!(
                    "`incident` has no field `{f}` (it has: {})",
                    MESSAGE_INCIDENT_FIELDS.join(", ")
                )),
                Some(f) => map_or_leaf(f, &rest[1..]),
                None => Ok(()),
            },
            (Schema::Message, ["steps", ..]) => Err(
                "a message has no `steps`: it is not rendered within a run (it has: alert, labels, annotations, group, incident, runbook, event)"
                    .to_owned(),
            ),
            _ => check_segments(&segs, self.steps_before),
        };
        checked.map_err(|why| format!("unknown template variable `{raw}`: {why}"))
    }
}

fn raw_path(p: &Path) -> &str {
    match p {
        Path::Relative((_, raw)) | Path::Local((_, _, raw)) => raw,
    }
}

/// Splits `steps.[check-pods].status` / `a/b` into segments, brackets removed.
fn split_path(raw: &str) -> Vec<String> {
    let mut segs = Vec::new();
    let mut cur = String::new();
    let mut in_brackets = false;
    for c in raw.chars() {
        match c {
            '[' if !in_brackets => in_brackets = true,
            ']' if in_brackets => in_brackets = false,
            '.' | '/' if !in_brackets => segs.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    segs.push(cur);
    segs.retain(|s| !s.is_empty());
    segs
}

const ALERT_FIELDS: &[&str] = &[
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
    "fingerprint",
];
const GROUP_FIELDS: &[&str] = &[
    "groupKey",
    "receiver",
    "status",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "truncatedAlerts",
];
const MAPS: &[&str] = &[
    "labels",
    "annotations",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
];
const INCIDENT_FIELDS: &[&str] = &["id", "severity"];
const MESSAGE_INCIDENT_FIELDS: &[&str] = &["id", "severity", "status", "title", "url"];
const RUNBOOK_FIELDS: &[&str] = &["name", "title", "severity"];
const STEP_FIELDS: &[&str] = &["status", "exit_code", "stdout"];
const ROOTS: &[&str] = &[
    "alert",
    "labels",
    "annotations",
    "group",
    "incident",
    "runbook",
    "steps",
];

/// Checks a path against the context schema of DESIGN §3.
fn check_segments(segs: &[&str], steps_before: &[&str]) -> Result<(), String> {
    let fields = |obj: &str, known: &[&str], rest: &[&str]| -> Result<(), String> {
        let Some(field) = rest.first() else {
            return Ok(());
        };
        if !known.contains(field) {
            return Err(format!(
                "`{obj}` has no field `{field}` (it has: {})",
                known.join(", ")
            ));
        }
        map_or_leaf(field, &rest[1..])
    };
    match segs {
        ["labels" | "annotations", rest @ ..] => map_or_leaf(segs[0], rest),
        ["alert", rest @ ..] => fields("alert", ALERT_FIELDS, rest),
        ["group", rest @ ..] => fields("group", GROUP_FIELDS, rest),
        ["incident", rest @ ..] => fields("incident", INCIDENT_FIELDS, rest),
        ["runbook", rest @ ..] => fields("runbook", RUNBOOK_FIELDS, rest),
        [] | ["steps"] => Ok(()),
        ["steps", step, rest @ ..] => {
            if !steps_before.contains(step) {
                return Err(if steps_before.is_empty() {
                    format!("no step runs before this one, so `steps.{step}` has no result")
                } else {
                    format!(
                        "`{step}` is not a step that runs before this one (those are: {})",
                        steps_before.join(", ")
                    )
                });
            }
            fields(&format!("steps.{step}"), STEP_FIELDS, rest)
        }
        [other, ..] => Err(format!(
            "`{other}` is not in the template context (it has: {})",
            ROOTS.join(", ")
        )),
    }
}

/// A label map takes any one name below it; a scalar field takes none.
fn map_or_leaf(field: &str, rest: &[&str]) -> Result<(), String> {
    match rest {
        [] => Ok(()),
        [_] if MAPS.contains(&field) => Ok(()),
        [_, deeper, ..] if MAPS.contains(&field) => Err(format!(
            "label values are strings and have no field `{deeper}`"
        )),
        [deeper, ..] => Err(format!("`{field}` is a value and has no field `{deeper}`")),
    }
}

/// `{{path}}` / `{{helper args}}` for messages.
fn describe(ht: &HelperTemplate, triple: bool) -> String {
    let param = |p: &Parameter| match p {
        Parameter::Name(n) => n.clone(),
        Parameter::Path(p) => raw_path(p).to_owned(),
        Parameter::Literal(j) => j.to_string(),
        _ => "(…)".to_owned(),
    };
    let mut s = param(&ht.name);
    for p in &ht.params {
        s.push(' ');
        s.push_str(&param(p));
    }
    if triple {
        format!("{{{{{{{s}}}}}}}")
    } else {
        format!("{{{{{s}}}}}")
    }
}

/// The template text with each value replaced by a marked placeholder, every
/// branch of a block included, for the load-time checks; `exprs` gets each
/// value's expression and the paths it reads.
fn probe_text(elements: &[TemplateElement], exprs: &mut Vec<(String, Vec<String>)>) -> String {
    let mut out = String::new();
    for el in elements {
        match el {
            TemplateElement::RawString(s) => out.push_str(s),
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                let mut paths = Vec::new();
                collect_paths(ht, &mut paths);
                exprs.push((describe(ht, false), paths));
                out.push(OPEN);
                out.push('v');
                out.push(CLOSE);
            }
            TemplateElement::HelperBlock(ht) => {
                for t in [&ht.template, &ht.inverse].into_iter().flatten() {
                    out.push_str(&probe_text(&t.elements, exprs));
                }
            }
            _ => {}
        }
    }
    out
}

/// The context paths an expression reads (`this`/`@key` inside blocks as written).
fn collect_paths(ht: &HelperTemplate, out: &mut Vec<String>) {
    let param = |p: &Parameter, out: &mut Vec<String>| match p {
        Parameter::Name(n) if !HELPERS.contains(&n.as_str()) => out.push(n.clone()),
        Parameter::Path(p) => out.push(raw_path(p).to_owned()),
        Parameter::Subexpression(s) => {
            if let TemplateElement::Expression(inner) | TemplateElement::HelperBlock(inner) =
                s.as_element()
            {
                collect_paths(inner, out);
            }
        }
        _ => {}
    };
    param(&ht.name, out);
    for p in ht.params.iter().chain(ht.hash.values()) {
        param(p, out);
    }
}

/// A hint when a template looks like another template language (people
/// arrive from Jinja/Ansible and from Alertmanager's Go templates).
fn foreign_syntax_hint(source: &str) -> Option<&'static str> {
    let in_braces = |needle: &str| {
        source
            .split("{{")
            .skip(1)
            .any(|rest| rest.split("}}").next().is_some_and(|e| e.contains(needle)))
    };
    if source.contains("{%") {
        Some("`{% … %}` is Jinja syntax; Handlebars blocks are `{{#if x}}…{{else}}…{{/if}}` and `{{#each x}}…{{/each}}`")
    } else if in_braces("|") && !in_braces("as |") {
        Some("`|` filters are Jinja syntax; Handlebars helpers come first: `{{eq labels.severity \"critical\"}}`, `{{len labels}}`")
    } else if source.contains("{{ .") || source.contains("{{.") || source.contains("{{- ") {
        Some("`{{ .Labels.x }}` is Go template syntax, as in Alertmanager; here write `{{labels.x}}`")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data() -> Data {
        Data::new(json!({
            "labels": {"job": "api", "evil": "x'; touch pwned; echo '", "dollar": "$(id)"},
            "alert": {"status": "firing", "labels": {"job": "api"}},
            "steps": {"check": {"status": "succeeded", "exit_code": 0, "stdout": "ok"}},
        }))
    }

    fn shell(src: &str) -> Result<String, String> {
        Template::compile(src, Flavor::Shell, &["check"])?
            .render_shell(&data())
            .map(|s| s.script)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn shell_values_reach_the_script_as_variables() {
        assert_eq!(
            shell("echo {{labels.job}}").unwrap(),
            r#"echo "${RUNBOOKD_V1}""#
        );
        let t = Template::compile("echo {{labels.evil}} {{labels.dollar}}", Flavor::Shell, &[])
            .unwrap();
        let r = t.render_shell(&data()).unwrap();
        assert_eq!(r.script, r#"echo "${RUNBOOKD_V1}" "${RUNBOOKD_V2}""#);
        assert_eq!(
            r.vars,
            [
                (
                    "RUNBOOKD_V1".to_owned(),
                    "x'; touch pwned; echo '".to_owned()
                ),
                ("RUNBOOKD_V2".to_owned(), "$(id)".to_owned())
            ]
        );
        assert_eq!(
            shell("kubectl rollout restart deployment/{{labels.job}}").unwrap(),
            r#"kubectl rollout restart deployment/"${RUNBOOKD_V1}""#
        );
        assert_eq!(
            shell(r#"echo "job: {{labels.job}}""#).unwrap(),
            r#"echo "job: ${RUNBOOKD_V1}""#
        );
        assert_eq!(
            shell("{{#if labels.job}}echo {{labels.job}}{{/if}}").unwrap(),
            r#"echo "${RUNBOOKD_V1}""#
        );
        // The comparison helpers write the constants `true`/`false` themselves.
        assert_eq!(
            shell(r#"echo {{eq steps.check.status "succeeded"}}"#).unwrap(),
            "echo true"
        );
        // `lookup` goes through the escape function like any value.
        assert_eq!(
            shell(r#"echo {{lookup labels "evil"}}"#).unwrap(),
            r#"echo "${RUNBOOKD_V1}""#
        );
    }

    #[test]
    fn shell_values_in_evaluating_places_are_load_errors() {
        for (src, why) in [
            ("echo 'x{{labels.job}}'", "single quotes"),
            ("echo $'{{labels.job}}'", "$'…' quotes"),
            ("echo `echo {{labels.job}}`", "backquotes"),
            ("echo $(( {{labels.job}} + 1 ))", "arithmetic"),
            ("echo ${x:-{{labels.job}}}", "parameter expansion"),
            ("echo hi # {{labels.job}}", "comment"),
            ("cat <<'EOF'\nx {{labels.job}}\nEOF", "quoted here-document"),
            ("cat <<{{labels.job}}\nx\n", "delimiter"),
            (r"echo \\{{labels.job}}", "backslash"),
            ("echo ${{labels.job}}", "follows a `$`"),
            ("eval {{labels.job}}", "`eval`"),
            (r#"sh -c "echo {{labels.job}}""#, "`sh -c`"),
        ] {
            let err = Template::compile(src, Flavor::Shell, &[]).expect_err(src);
            assert!(err.contains(why), "{src:?}: {err}");
            assert!(
                err.contains("{{labels.job}}"),
                "{src:?} names the value: {err}"
            );
        }
        let err = Template::compile("echo {{{labels.job}}}", Flavor::Shell, &[]).unwrap_err();
        assert!(err.contains("raw form"), "{err}");
        // Double quotes and here-documents expand references: allowed.
        assert_eq!(
            shell("cat <<EOF\nx {{labels.job}}\nEOF").unwrap(),
            "cat <<EOF\nx ${RUNBOOKD_V1}\nEOF"
        );
        assert_eq!(
            shell(r#"{{#if labels.job}}"{{/if}}{{labels.job}}{{#if labels.job}}"{{/if}}"#).unwrap(),
            r#""${RUNBOOKD_V1}""#
        );
    }

    #[test]
    fn a_here_document_operator_at_the_very_end_does_not_panic() {
        // Found by the `template` fuzz target.
        let _ = Template::compile("cat <<\\", Flavor::Shell, &[]);
        let _ = Template::compile("<<", Flavor::Shell, &[]);
        let _ = Template::compile("<<.v\r<<\u{7}\\", Flavor::Shell, &[]);
    }

    #[test]
    fn raw_templates_insert_values_verbatim() {
        let t = Template::compile("app={{labels.evil}}", Flavor::Raw, &[]).unwrap();
        assert_eq!(t.render(&data()).unwrap(), "app=x'; touch pwned; echo '");
        let t = Template::compile("<b>{{labels.dollar}}</b>&", Flavor::Raw, &[]).unwrap();
        assert_eq!(
            t.render(&data()).unwrap(),
            "<b>$(id)</b>&",
            "no HTML escaping"
        );
    }

    #[test]
    fn unknown_variables_are_load_errors() {
        for (src, needle) in [
            ("{{lables.job}}", "`lables` is not in the template context"),
            ("{{alert.statuz}}", "`alert` has no field `statuz`"),
            ("{{incident.name}}", "`incident` has no field `name`"),
            ("{{labels.job.name}}", "no field `name`"),
            (
                "{{steps.restart.status}}",
                "`restart` is not a step that runs before this one",
            ),
            ("{{eq steps.check.exitcode 0}}", "has no field `exitcode`"),
            (
                "{{nosuchhelper labels.job}}",
                "unknown helper `nosuchhelper`",
            ),
            (
                "{{#each labels}}{{/each}}{{nope}}",
                "`nope` is not in the template context",
            ),
            ("{{> partial}}", "partials"),
            ("{{labels.job", "syntax error"),
        ] {
            let err = Template::compile(src, Flavor::Raw, &["check"]).expect_err(src);
            assert!(err.contains(needle), "{src:?}: {err}");
        }
        for ok in [
            "{{labels.anything}}",
            "{{alert.labels.x}}",
            "{{group.commonLabels.job}}",
            "{{#each labels}}{{@key}}={{this}}{{/each}}",
            "{{#with alert}}{{status}}{{/with}}",
            "{{lookup labels \"job\"}}",
            "{{@root.labels.job}}",
            "{{incident.id}} {{runbook.name}} {{runbook.title}}",
        ] {
            Template::compile(ok, Flavor::Raw, &[]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let err = Template::compile("{{steps.check.status}}", Flavor::Raw, &[]).unwrap_err();
        assert!(err.contains("no step runs before this one"), "{err}");
        let t = Template::compile(
            "{{eq steps.[check].status \"succeeded\"}}",
            Flavor::Raw,
            &["check"],
        )
        .unwrap();
        assert!(t.uses_steps());
        assert!(!Template::compile("{{labels.job}}", Flavor::Raw, &[])
            .unwrap()
            .uses_steps());
    }

    #[test]
    fn missing_values_are_render_errors() {
        let t = Template::compile("deployment/{{labels.deployment}}", Flavor::Raw, &[]).unwrap();
        assert_eq!(
            t.render(&data()),
            Err(RenderError::Missing("labels.deployment".to_owned()))
        );
        let t = Template::compile(
            "{{#if labels.deployment}}yes{{else}}no{{/if}}",
            Flavor::Raw,
            &[],
        )
        .unwrap();
        assert_eq!(
            t.render(&data()).unwrap(),
            "no",
            "`if` tests presence without failing"
        );
    }

    #[test]
    fn constant_templates_render_their_text() {
        let t = Template::compile("kubectl", Flavor::Raw, &[]).unwrap();
        assert_eq!(t.render(&data()).unwrap(), "kubectl");
        let t = Template::compile(
            r"literal \{{braces}} {{! a comment }}kept",
            Flavor::Raw,
            &[],
        )
        .unwrap();
        assert_eq!(t.render(&data()).unwrap(), "literal {{braces}} kept");
        let t = Template::compile("echo 'it''s' \"quoted\"", Flavor::Shell, &[]).unwrap();
        assert_eq!(
            t.render_shell(&data()).unwrap().script,
            "echo 'it''s' \"quoted\""
        );
    }

    #[test]
    fn unpassable_values_are_refused_in_shell() {
        let d = Data::new(json!({"labels": {"nul": "a\u{0}b", "mark": "a\u{E001}b"}}));
        for src in ["echo {{labels.nul}}", "echo {{labels.mark}}"] {
            let t = Template::compile(src, Flavor::Shell, &[]).unwrap();
            assert_eq!(t.render_shell(&d), Err(RenderError::Unpassable), "{src}");
        }
    }
}
