//! Step templates: Handlebars in strict mode, rendered two ways.
//!
//! - [`Flavor::Raw`] (`run:` argv elements, `env:` values, `when:`, `manual:`):
//!   values are inserted as-is, with no escaping of any kind. Nothing here is
//!   ever seen by a shell, so there is nothing to escape for.
//! - [`Flavor::Shell`] (`shell:` scripts, run by `/bin/sh -c`): every `{{…}}`
//!   value is POSIX single-quoted, and the raw form `{{{…}}}` is refused.
//!
//! Single quotes only protect a value in an unquoted word position: inside
//! `"…"`, `'…'`, a comment, a here-document or backquotes a quoted value can
//! break out. So each value is wrapped in sentinel characters while rendering,
//! and a small POSIX lexer ([`check_shell`]) checks where each one landed before
//! the sentinels are stripped; a value anywhere but an unquoted word is an
//! error, never a script. The same lexer runs over the template source at load
//! time, so `runbookd check` reports such mistakes with their position.
//!
//! Unknown variables are load errors: [`Template::compile`] walks the template
//! and checks every path against the context of DESIGN §3 (`labels.*` and the
//! other label maps accept any name; `steps.NAME` must name an earlier step).

use std::fmt;
use std::sync::LazyLock;

use handlebars::template::{HelperTemplate, Parameter, TemplateElement};
use handlebars::{Handlebars, Path, RenderContext, RenderErrorReason, Renderable, StringOutput};

/// How values are inserted into the rendered text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// As-is (argv elements, env values, `when`, manual text).
    Raw,
    /// POSIX single-quoted, for `/bin/sh -c` scripts.
    Shell,
}

/// The helpers a template may call (Handlebars built-ins, minus `log`/`raw`).
const HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or",
    "not", "len",
];

const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';
const POISON: char = '\u{E002}';

fn registry(escape: fn(&str) -> String) -> Handlebars<'static> {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    h.register_escape_fn(escape);
    h
}

static RAW: LazyLock<Handlebars<'static>> = LazyLock::new(|| registry(handlebars::no_escape));
static SHELL: LazyLock<Handlebars<'static>> = LazyLock::new(|| registry(mark_shell_value));

/// POSIX single-quoting: the result is one shell word whose value is `s`.
#[must_use]
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Escape function of the shell registry: the quoted value between sentinels,
/// or a poison marker when the value itself holds a sentinel or NUL (which no
/// argv can carry).
fn mark_shell_value(v: &str) -> String {
    if v.contains([OPEN, CLOSE, POISON, '\0']) {
        format!("{OPEN}{POISON}{CLOSE}")
    } else {
        format!("{OPEN}{}{CLOSE}", shell_quote(v))
    }
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
    #[error("a value holds a NUL byte or a reserved character (U+E000..U+E002) and cannot be passed to a shell")]
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
        let compiled = handlebars::Template::compile(source).map_err(|e| {
            let reason = e.reason().to_string();
            // Drop pest's list of every token it would have accepted.
            let reason = reason.split(": expected").next().unwrap_or_default();
            match e.pos() {
                Some((l, c)) => {
                    format!("template syntax error at template line {l}, column {c}: {reason}")
                }
                None => format!("template syntax error: {reason}"),
            }
        })?;
        let mut check = Checker {
            steps_before,
            flavor,
            uses_steps: false,
        };
        check.elements(&compiled.elements, false)?;
        if flavor == Flavor::Shell {
            if source.contains([OPEN, CLOSE, POISON]) {
                return Err(
                    "shell script contains a reserved character (U+E000..U+E002)".to_owned(),
                );
            }
            let mut exprs = Vec::new();
            let probe = shell_probe(&compiled.elements, &mut exprs);
            if let Err(e) = check_shell(&probe) {
                return Err(match e {
                    RenderError::ShellContext { index, context } => format!(
                        "`{}` {context}: a template value is already single-quoted and is only safe as an unquoted word",
                        exprs.get(index).map_or("{{…}}", String::as_str)
                    ),
                    other => other.to_string(),
                });
            }
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
        })
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

    /// Renders against `data`; shell scripts come back with every value quoted
    /// and checked to stand as an unquoted word.
    ///
    /// # Errors
    /// A missing value (strict mode), or a shell value in an unsafe position.
    pub fn render(&self, data: &Data) -> Result<String, RenderError> {
        if let Some(text) = &self.constant {
            return Ok(text.clone());
        }
        let reg = match self.flavor {
            Flavor::Raw => &*RAW,
            Flavor::Shell => &*SHELL,
        };
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
        let text = out
            .into_string()
            .map_err(|e| RenderError::Other(e.to_string()))?;
        match self.flavor {
            Flavor::Raw => Ok(text),
            Flavor::Shell => check_shell(&text),
        }
    }
}

/// Walks a template's syntax tree and checks helpers and variable paths.
struct Checker<'a> {
    steps_before: &'a [&'a str],
    flavor: Flavor,
    uses_steps: bool,
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
                            "`{}` is refused in shell scripts: the raw form `{{{{{{…}}}}}}` would not quote the value; use `{{{{…}}}}`",
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
        check_segments(&segs, self.steps_before)
            .map_err(|why| format!("unknown template variable `{raw}`: {why}"))
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
/// branch of a block included, for the load-time context check.
fn shell_probe(elements: &[TemplateElement], exprs: &mut Vec<String>) -> String {
    let mut out = String::new();
    for el in elements {
        match el {
            TemplateElement::RawString(s) => out.push_str(s),
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                exprs.push(describe(ht, false));
                out.push(OPEN);
                out.push_str("'v'");
                out.push(CLOSE);
            }
            TemplateElement::HelperBlock(ht) => {
                for t in [&ht.template, &ht.inverse].into_iter().flatten() {
                    out.push_str(&shell_probe(&t.elements, exprs));
                }
            }
            _ => {}
        }
    }
    out
}

/// Where in a shell script a value landed, when that place is unsafe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShellContext {
    SingleQuotes,
    DoubleQuotes,
    DollarQuotes,
    Backquotes,
    Arithmetic,
    ParameterExpansion,
    Comment,
    HereDocument,
    HereDocumentDelimiter,
    AfterBackslash,
    AfterDollar,
}

impl fmt::Display for ShellContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShellContext::SingleQuotes => "is inside single quotes",
            ShellContext::DoubleQuotes => "is inside double quotes",
            ShellContext::DollarQuotes => "is inside $'…' quotes",
            ShellContext::Backquotes => "is inside backquotes (use $(…) instead)",
            ShellContext::Arithmetic => "is inside an arithmetic expansion $((…))",
            ShellContext::ParameterExpansion => "is inside a parameter expansion ${…}",
            ShellContext::Comment => "is inside a comment",
            ShellContext::HereDocument => "is inside a here-document",
            ShellContext::HereDocumentDelimiter => "is used as a here-document delimiter",
            ShellContext::AfterBackslash => "follows a backslash",
            ShellContext::AfterDollar => "follows a `$`",
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Top level, or inside `$(…)` (`cmdsub`), with `(` nesting depth.
    Code {
        cmdsub: bool,
        depth: u32,
    },
    Single,
    Dollar,
    Double,
    Backquote,
    Arith {
        depth: u32,
    },
    Param {
        depth: u32,
    },
    Comment,
}

/// Checks that every marked value of a rendered script stands as an unquoted
/// word, and returns the script with the markers removed.
///
/// The lexer follows POSIX `sh` quoting, and is deliberately conservative where
/// `dash` and `bash` differ (`$'…'` counts as quoting): it may refuse a safe
/// script, never accept an unsafe one.
///
/// # Errors
/// The index of the first value in an unsafe place, and that place.
///
/// # Panics
/// Never: the lexer's base frame is never popped.
pub fn check_shell(script: &str) -> Result<String, RenderError> {
    let chars: Vec<char> = script.chars().collect();
    let mut out = String::with_capacity(script.len());
    let mut stack = vec![Frame::Code {
        cmdsub: false,
        depth: 0,
    }];
    let mut word_start = true;
    let mut heredocs: Vec<(String, bool)> = Vec::new();
    let mut index = 0usize;
    let mut i = 0usize;
    let fail =
        |index: usize, context: ShellContext| Err(RenderError::ShellContext { index, context });
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let top = *stack.last().expect("the base frame is never popped");
        if c == OPEN {
            let Some(len) = chars[i + 1..].iter().position(|&x| x == CLOSE) else {
                return Err(RenderError::Unpassable);
            };
            let inner = &chars[i + 1..i + 1 + len];
            if inner.contains(&POISON) || inner.contains(&OPEN) {
                return Err(RenderError::Unpassable);
            }
            let context = match top {
                Frame::Code { .. } => None,
                Frame::Single => Some(ShellContext::SingleQuotes),
                Frame::Dollar => Some(ShellContext::DollarQuotes),
                Frame::Double => Some(ShellContext::DoubleQuotes),
                Frame::Backquote => Some(ShellContext::Backquotes),
                Frame::Arith { .. } => Some(ShellContext::Arithmetic),
                Frame::Param { .. } => Some(ShellContext::ParameterExpansion),
                Frame::Comment => Some(ShellContext::Comment),
            };
            if let Some(context) = context {
                return fail(index, context);
            }
            if out.ends_with('$') && !out.ends_with("\\$") {
                return fail(index, ShellContext::AfterDollar);
            }
            out.extend(inner);
            index += 1;
            word_start = false;
            i += len + 2;
            continue;
        }
        // A backslash quotes the next character in code, "…", `…` and $'…'.
        if c == '\\' && !matches!(top, Frame::Single | Frame::Comment) {
            if next == Some(OPEN) {
                return fail(index, ShellContext::AfterBackslash);
            }
            out.push(c);
            if let Some(n) = next {
                out.push(n);
            }
            word_start = false;
            i += 2;
            continue;
        }
        out.push(c);
        i += 1;
        let opens_dollar = c == '$'
            && matches!(
                top,
                Frame::Code { .. } | Frame::Double | Frame::Param { .. }
            );
        if opens_dollar && next == Some('(') {
            out.push('(');
            i += 1;
            if chars.get(i) == Some(&'(') {
                out.push('(');
                i += 1;
                stack.push(Frame::Arith { depth: 0 });
            } else {
                stack.push(Frame::Code {
                    cmdsub: true,
                    depth: 0,
                });
                word_start = true;
            }
            continue;
        }
        if opens_dollar && next == Some('{') {
            out.push('{');
            i += 1;
            stack.push(Frame::Param { depth: 0 });
            continue;
        }
        match top {
            Frame::Code { cmdsub, depth } => {
                let frame = stack.last_mut().expect("non-empty");
                match c {
                    '\'' if out.ends_with("$'") => stack.push(Frame::Dollar),
                    '\'' => stack.push(Frame::Single),
                    '"' => stack.push(Frame::Double),
                    '`' => stack.push(Frame::Backquote),
                    '#' if word_start => stack.push(Frame::Comment),
                    '(' => {
                        *frame = Frame::Code {
                            cmdsub,
                            depth: depth + 1,
                        }
                    }
                    ')' if depth > 0 => {
                        *frame = Frame::Code {
                            cmdsub,
                            depth: depth - 1,
                        }
                    }
                    ')' if cmdsub => {
                        stack.pop();
                    }
                    '<' if next == Some('<') => {
                        let (delim, strip_tabs, used) = heredoc_operator(&chars[i..]);
                        if delim.contains(OPEN) {
                            return fail(index, ShellContext::HereDocumentDelimiter);
                        }
                        out.extend(&chars[i..i + used]);
                        i += used;
                        heredocs.push((delim, strip_tabs));
                    }
                    '\n' if !heredocs.is_empty() => {
                        for (delim, strip_tabs) in std::mem::take(&mut heredocs) {
                            loop {
                                let end = chars[i..]
                                    .iter()
                                    .position(|&x| x == '\n')
                                    .map_or(chars.len(), |p| i + p);
                                let line = &chars[i..end];
                                if line.contains(&OPEN) {
                                    return fail(index, ShellContext::HereDocument);
                                }
                                out.extend(line);
                                i = end;
                                if i < chars.len() {
                                    out.push('\n');
                                    i += 1;
                                }
                                let text: String = line.iter().collect();
                                let text = if strip_tabs {
                                    text.trim_start_matches('\t')
                                } else {
                                    &text
                                };
                                if text == delim || i >= chars.len() {
                                    break;
                                }
                            }
                        }
                    }
                    _ => {}
                }
                word_start = matches!(
                    c,
                    ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')'
                );
            }
            Frame::Single | Frame::Dollar if c == '\'' => {
                stack.pop();
            }
            Frame::Double if c == '"' => {
                stack.pop();
            }
            Frame::Double if c == '`' => stack.push(Frame::Backquote),
            Frame::Backquote if c == '`' => {
                stack.pop();
            }
            Frame::Arith { depth } => {
                let frame = stack.last_mut().expect("non-empty");
                match c {
                    '(' => *frame = Frame::Arith { depth: depth + 1 },
                    ')' if depth > 0 => *frame = Frame::Arith { depth: depth - 1 },
                    ')' if chars.get(i) == Some(&')') => {
                        out.push(')');
                        i += 1;
                        stack.pop();
                    }
                    _ => {}
                }
            }
            Frame::Param { depth } => {
                let frame = stack.last_mut().expect("non-empty");
                match c {
                    '{' => *frame = Frame::Param { depth: depth + 1 },
                    '}' if depth > 0 => *frame = Frame::Param { depth: depth - 1 },
                    '}' => {
                        stack.pop();
                    }
                    '\'' => stack.push(Frame::Single),
                    '"' => stack.push(Frame::Double),
                    _ => {}
                }
            }
            Frame::Comment if c == '\n' => {
                stack.pop();
                word_start = true;
                // A here-document announced before the comment starts after this newline.
                if !heredocs.is_empty() {
                    i -= 1;
                    out.pop();
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// From the second `<` of `<<`: returns the delimiter (quotes removed), whether
/// it is `<<-`, and how many characters the operator and word take.
fn heredoc_operator(rest: &[char]) -> (String, bool, usize) {
    let mut i = 1; // the second `<`
    let strip_tabs = rest.get(i) == Some(&'-');
    if strip_tabs {
        i += 1;
    }
    while matches!(rest.get(i), Some(' ' | '\t')) {
        i += 1;
    }
    let mut delim = String::new();
    let mut quote: Option<char> = None;
    while let Some(&c) = rest.get(i) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '\\') => {
                i += 1;
                if let Some(&n) = rest.get(i) {
                    delim.push(n);
                }
            }
            (None, ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')') => break,
            (_, c) => delim.push(c),
        }
        i += 1;
    }
    // A trailing backslash steps past the end: never claim more than there is.
    (delim, strip_tabs, i.min(rest.len()))
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
            .render(&data())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn shell_values_are_single_quoted() {
        assert_eq!(shell("echo {{labels.job}}").unwrap(), "echo 'api'");
        assert_eq!(
            shell("echo {{labels.evil}}").unwrap(),
            r"echo 'x'\''; touch pwned; echo '\'''"
        );
        assert_eq!(
            shell("kubectl rollout restart deployment/{{labels.job}}").unwrap(),
            "kubectl rollout restart deployment/'api'"
        );
        assert_eq!(
            shell("x=$(echo {{labels.dollar}})").unwrap(),
            "x=$(echo '$(id)')"
        );
        assert_eq!(
            shell("echo \"$(echo {{labels.job}})\"").unwrap(),
            "echo \"$(echo 'api')\""
        );
        assert_eq!(
            shell("{{#if labels.job}}echo {{labels.job}}{{/if}}").unwrap(),
            "echo 'api'"
        );
        // The comparison helpers write the constants `true`/`false` unescaped.
        assert_eq!(
            shell("echo {{eq steps.check.status \"succeeded\"}}").unwrap(),
            "echo true"
        );
        assert_eq!(shell("echo a#{{labels.job}}").unwrap(), "echo a#'api'");
    }

    #[test]
    fn shell_values_in_unsafe_places_are_load_errors() {
        for (src, why) in [
            ("echo \"{{labels.job}}\"", "double quotes"),
            ("echo 'x{{labels.job}}'", "single quotes"),
            ("echo $'{{labels.job}}'", "$'…' quotes"),
            ("echo `echo {{labels.job}}`", "backquotes"),
            ("echo $(( {{labels.job}} + 1 ))", "arithmetic"),
            ("echo ${x:-{{labels.job}}}", "parameter expansion"),
            ("echo hi # {{labels.job}}", "comment"),
            ("cat <<EOF\n{{labels.job}}\nEOF", "here-document"),
            ("cat <<'EOF'\nx {{labels.job}}\nEOF", "here-document"),
            ("cat <<{{labels.job}}\nx\n", "delimiter"),
            ("echo \\\\{{labels.job}}", "backslash"),
            ("echo ${{labels.job}}", "follows a `$`"),
            ("echo {{{labels.job}}}", "raw form"),
            ("{{#if labels.job}}\"{{/if}}{{labels.job}}", "double quotes"),
        ] {
            let err = Template::compile(src, Flavor::Shell, &[]).expect_err(src);
            assert!(err.contains(why), "{src:?}: {err}");
        }
        // After a here-document ends, values are fine again.
        assert_eq!(
            shell("cat <<EOF\nx\nEOF\necho {{labels.job}}").unwrap(),
            "cat <<EOF\nx\nEOF\necho 'api'"
        );
        assert_eq!(
            shell("cat <<-\"END\"\n\tx\n\tEND\necho {{labels.job}}").unwrap(),
            "cat <<-\"END\"\n\tx\n\tEND\necho 'api'"
        );
        // Quotes that close before the value are fine.
        assert_eq!(
            shell("echo \"a\" 'b' {{labels.job}}").unwrap(),
            "echo \"a\" 'b' 'api'"
        );
        assert_eq!(
            shell("echo \"it's\" {{labels.job}}").unwrap(),
            "echo \"it's\" 'api'"
        );
        assert_eq!(
            shell("# note: it's fine\necho {{labels.job}}").unwrap(),
            "# note: it's fine\necho 'api'"
        );
    }

    #[test]
    fn a_here_document_operator_at_the_very_end_does_not_panic() {
        // Found by the `template` fuzz target.
        assert!(check_shell("cat <<\\").is_ok());
        assert!(check_shell("<<").is_ok());
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
        assert_eq!(t.render(&data()).unwrap(), "echo 'it''s' \"quoted\"");
    }

    #[test]
    fn unpassable_values_are_refused_in_shell() {
        let d = Data::new(json!({"labels": {"nul": "a\u{0}b", "mark": "a\u{E001}b"}}));
        for src in ["echo {{labels.nul}}", "echo {{labels.mark}}"] {
            let t = Template::compile(src, Flavor::Shell, &[]).unwrap();
            assert_eq!(t.render(&d), Err(RenderError::Unpassable), "{src}");
        }
    }
}
