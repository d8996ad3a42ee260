//! Queries with alert values in them (`verify:` steps), where alert data
//! never becomes PromQL source: a `{{…}}` may stand only inside the
//! double-quoted value of a label matcher, and its value is escaped there
//! as Prometheus's lexer reads a string (and, in a `=~`/`!~` matcher, as a
//! regular expression matching the value itself). Anything else is refused
//! when the runbook is loaded; the rendered query is parsed again and its
//! matchers checked to hold the values, before it is sent.

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr};

use super::{Data, Flavor, Template};

/// A checked query template.
#[derive(Debug, Clone)]
pub struct Query {
    /// The source with each `{{…}}` replaced by a placeholder.
    text: String,
    /// Each `{{…}}`, in order, and whether it stands in a regex matcher.
    values: Vec<(Template, bool)>,
    source: String,
}

/// `RBKDV<n>X`: letters and digits, which no escaping touches and no
/// PromQL query holds by chance.
fn placeholder(i: usize) -> String {
    format!("RBKDV{i}X")
}

/// Where each placeholder stands: inside a `"…"` string (checked with the
/// lexer's rules: `#` comments, `'` and `` ` `` strings, `\` escapes).
fn in_double_quotes(text: &str, count: usize) -> Result<(), String> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    let mut found = vec![false; count];
    while i < b.len() {
        let c = b[i];
        match quote {
            None => match c {
                b'#' => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                    continue;
                }
                b'"' | b'\'' | b'`' => quote = Some(c),
                _ => {}
            },
            Some(q) => {
                if c == b'\\' && q != b'`' {
                    i += 2;
                    continue;
                }
                if c == q {
                    quote = None;
                } else if q == b'"' && b[i..].starts_with(b"RBKDV") {
                    let digits: Vec<u8> = b[i + 5..]
                        .iter()
                        .copied()
                        .take_while(u8::is_ascii_digit)
                        .collect();
                    if b.get(i + 5 + digits.len()) == Some(&b'X') {
                        if let Some(k) = std::str::from_utf8(&digits)
                            .ok()
                            .and_then(|d| d.parse::<usize>().ok())
                        {
                            if k < count {
                                found[k] = true;
                            }
                        }
                    }
                }
            }
        }
        i += 1;
    }
    match found.iter().position(|f| !f) {
        None => Ok(()),
        Some(_) => Err(
            "a `{{…}}` in a query may stand only inside a label matcher's double-quoted value (`job=\"{{labels.job}}\"`): alert data never becomes PromQL source"
                .into(),
        ),
    }
}

/// Every matcher of the expression: `(value, is_regex)`; a matcher on the
/// metric name counts as `(value, None)`-like: its value is returned with
/// a `__name__:` prefix so that no placeholder is ever found in it.
fn matchers(e: &Expr, out: &mut Vec<(String, bool)>) {
    let mut vs = |v: &promql_parser::parser::VectorSelector| {
        if let Some(name) = &v.name {
            out.push((format!("__name__:{name}"), false));
        }
        for m in v
            .matchers
            .matchers
            .iter()
            .chain(v.matchers.or_matchers.iter().flatten())
        {
            let regex = matches!(m.op, MatchOp::Re(_) | MatchOp::NotRe(_));
            if m.name == "__name__" {
                out.push((format!("__name__:{}", m.value), regex));
            } else {
                out.push((m.value.clone(), regex));
            }
        }
    };
    match e {
        Expr::VectorSelector(v) => vs(v),
        Expr::MatrixSelector(m) => vs(&m.vs),
        Expr::Aggregate(a) => {
            matchers(&a.expr, out);
            if let Some(p) = &a.param {
                matchers(p, out);
            }
        }
        Expr::Unary(u) => matchers(&u.expr, out),
        Expr::Binary(b) => {
            matchers(&b.lhs, out);
            matchers(&b.rhs, out);
        }
        Expr::Paren(p) => matchers(&p.expr, out),
        Expr::Subquery(s) => matchers(&s.expr, out),
        Expr::Call(c) => {
            for a in &c.args.args {
                matchers(a, out);
            }
        }
        Expr::Extension(_) | Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
    }
}

/// Every string literal outside matchers (function arguments).
fn strings(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::StringLiteral(s) => out.push(s.val.clone()),
        Expr::Aggregate(a) => {
            strings(&a.expr, out);
            if let Some(p) = &a.param {
                strings(p, out);
            }
        }
        Expr::Unary(u) => strings(&u.expr, out),
        Expr::Binary(b) => {
            strings(&b.lhs, out);
            strings(&b.rhs, out);
        }
        Expr::Paren(p) => strings(&p.expr, out),
        Expr::Subquery(s) => strings(&s.expr, out),
        Expr::Call(c) => {
            for a in &c.args.args {
                strings(a, out);
            }
        }
        _ => {}
    }
}

/// Checks `text` (placeholders 0..n in it): it parses, and each
/// placeholder is inside the value of a matcher, exactly once. Returns
/// for each whether its matcher is a regex.
fn sites(text: &str, n: usize) -> Result<Vec<bool>, String> {
    in_double_quotes(text, n)?;
    let expr = parser::parse(text).map_err(|e| format!("not PromQL: {e}"))?;
    let mut ms = Vec::new();
    matchers(&expr, &mut ms);
    let mut lits = Vec::new();
    strings(&expr, &mut lits);
    let mut regex = Vec::with_capacity(n);
    for i in 0..n {
        let p = placeholder(i);
        if lits.iter().any(|s| s.contains(&p)) {
            return Err("a `{{…}}` in a query may stand only inside a label matcher's value, not in a function's string argument".into());
        }
        if ms
            .iter()
            .any(|(v, _)| v.starts_with("__name__:") && v.contains(&p))
        {
            return Err("a `{{…}}` may not choose the metric (`__name__`): alert data never picks what is measured".into());
        }
        let holding: Vec<bool> = ms
            .iter()
            .filter(|(v, _)| v.contains(&p))
            .map(|(_, r)| *r)
            .collect();
        match holding.as_slice() {
            [r] => regex.push(*r),
            [] => return Err(
                "a `{{…}}` in a query may stand only inside a label matcher's double-quoted value (`job=\"{{labels.job}}\"`): alert data never becomes PromQL source"
                    .into(),
            ),
            _ => return Err("a `{{…}}` may stand in one matcher only".into()),
        }
    }
    Ok(regex)
}

impl Query {
    /// Checks a query template: only plain `{{path}}` values (no blocks,
    /// no `{{{…}}}`), each inside a matcher's double-quoted value, and the
    /// query PromQL.
    ///
    /// # Errors
    /// What is wrong, for the field's error.
    pub fn compile(source: &str, steps_before: &[&str]) -> Result<Query, String> {
        if source.contains("RBKDV") {
            return Err("`RBKDV` is reserved in queries (runbookd marks values with it)".into());
        }
        // Escapes that spell characters (`\x52`, `\u0041`, octal) could
        // spell a value's mark; a backslash right before a value would
        // escape its first character (`\d`).
        let b = source.as_bytes();
        for (i, w) in b.windows(2).enumerate() {
            if w[0] == b'\\'
                && (matches!(w[1], b'x' | b'u' | b'U' | b'0'..=b'7')
                    || source[i + 1..].starts_with("{{"))
            {
                let backslashes = b[..=i].iter().rev().take_while(|c| **c == b'\\').count();
                if backslashes % 2 == 1 {
                    return Err("a query template may not use `\\x`, `\\u`, `\\U` or octal escapes, nor a backslash right before a `{{…}}`".into());
                }
            }
        }
        let mut text = String::new();
        let mut values = Vec::new();
        let mut rest = source;
        while let Some(at) = rest.find("{{") {
            text.push_str(&rest[..at]);
            let after = &rest[at..];
            let Some(end) = after.find("}}") else {
                return Err("a `{{` without its `}}`".into());
            };
            let expr = &after[..end + 2];
            if expr.starts_with("{{{")
                || expr.starts_with("{{#")
                || expr.starts_with("{{/")
                || expr.starts_with("{{^")
                || expr.starts_with("{{!")
                || expr.starts_with("{{>")
            {
                return Err(format!(
                    "`{expr}`: a query takes plain values (`{{{{labels.job}}}}`), not blocks, comments or raw output"
                ));
            }
            let t = Template::compile(expr, Flavor::Raw, steps_before)?;
            text.push_str(&placeholder(values.len()));
            values.push((t, false));
            rest = &after[end + 2..];
        }
        text.push_str(rest);
        let regex = sites(&text, values.len())?;
        for (v, r) in values.iter_mut().zip(regex) {
            v.1 = r;
        }
        Ok(Query {
            text,
            values,
            source: source.to_owned(),
        })
    }

    /// The query as written.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it reads earlier steps' results (rendered at run time).
    #[must_use]
    pub fn uses_steps(&self) -> bool {
        self.values.iter().any(|(t, _)| t.uses_steps())
    }

    /// The query for this alert: each value escaped where it stands.
    ///
    /// # Errors
    /// A value the alert does not have; a rendered query that does not
    /// parse or whose matchers do not hold the values as given (cannot
    /// happen: checked, and kept as a second lock).
    pub fn render(&self, data: &Data) -> Result<String, String> {
        // One pass over the template's text: a value that holds a
        // placeholder's text is never substituted into again.
        let mut out = String::with_capacity(self.text.len());
        let mut want = Vec::new();
        let mut rest = self.text.as_str();
        for (i, (t, regex)) in self.values.iter().enumerate() {
            let v = t.render(data).map_err(|e| e.to_string())?;
            if v.is_empty() {
                return Err(format!(
                    "`{}` is empty for this alert: an empty matcher value selects the series without that label",
                    t.source()
                ));
            }
            let p = placeholder(i);
            let at = rest
                .find(&p)
                .ok_or("the query template lost a value's place")?;
            out.push_str(&rest[..at]);
            let inner = if *regex { regex_literal(&v) } else { v.clone() };
            out.push_str(&escape(&inner));
            rest = &rest[at + p.len()..];
            want.push((v, *regex));
        }
        out.push_str(rest);
        // The second lock: parse what will be sent; every value must be a
        // matcher's (regex: one that matches the value itself).
        let expr =
            parser::parse(&out).map_err(|e| format!("the rendered query is not PromQL: {e}"))?;
        let mut ms = Vec::new();
        matchers(&expr, &mut ms);
        ms.retain(|(m, _)| !m.starts_with("__name__:"));
        for (v, regex) in &want {
            let ok = ms.iter().any(|(m, r)| {
                *r == *regex
                    && if *regex {
                        m.contains(&regex_literal(v))
                    } else {
                        m.contains(v.as_str())
                    }
            });
            if !ok {
                return Err(
                    "the rendered query does not hold an alert value where the template put it"
                        .into(),
                );
            }
        }
        Ok(out)
    }
}

/// `v` as the inside of a PromQL double-quoted string (Go's unquoting
/// rules, which Prometheus's lexer applies).
#[must_use]
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || u32::from(c) == 0xFEFF => {
                use std::fmt::Write as _;
                let n = u32::from(c);
                if n <= 0xFFFF {
                    let _ = write!(out, "\\u{n:04x}");
                } else {
                    let _ = write!(out, "\\U{n:08x}");
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// `v` as a regular expression (RE2) that matches exactly `v`: every
/// metacharacter escaped, as Go's `regexp.QuoteMeta` does.
#[must_use]
pub fn regex_literal(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if "\\.+*?()|[]{}^$-".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(label: &str) -> Data {
        Data::new(serde_json::json!({"labels": {"job": label, "instance": "db-1:9100"}}))
    }

    #[test]
    fn values_only_in_matcher_values() {
        for bad in [
            "sum(rate(x[{{labels.job}}]))",
            "{{labels.job}}",
            "x > {{labels.job}}",
            "label_replace(x, \"a\", \"{{labels.job}}\", \"b\", \"c\")",
            "x{job='{{labels.job}}'}",
            "x{job=`{{labels.job}}`}",
            "x{job=\"a\"} # {{labels.job}}",
            "x{ {{labels.job}}=\"a\"}",
            "x{job=\"{{#if labels.job}}a{{/if}}\"}",
            "x{job=\"RBKDV0X\"} + rate(x[{{labels.job}}])",
            "sum by (\"{{labels.job}}\") (x{a=\"\\x52BKDV0X\", j=\"{{labels.job}}\"})",
            "{\"{{labels.job}}\"}",
            "{__name__=\"{{labels.job}}\"}",
            "x{a=~\"\\\\{{labels.job}}\"}",
            "x{job=\"{{{labels.job}}}\"}",
        ] {
            assert!(Query::compile(bad, &[]).is_err(), "{bad}");
        }
        let q = Query::compile(
            "sum(rate(x{job=\"{{labels.job}}\",instance=~\"{{labels.instance}}|other\"}[5m]))",
            &[],
        )
        .unwrap();
        assert_eq!(
            q.render(&data("api")).unwrap(),
            "sum(rate(x{job=\"api\",instance=~\"db\\\\-1:9100|other\"}[5m]))"
        );
    }

    #[test]
    fn hostile_values_stay_inside_their_string() {
        let q = Query::compile(
            "sum(x{job=\"{{labels.job}}\"}) + sum(y{job=~\"{{labels.job}}\"})",
            &[],
        )
        .unwrap();
        for hostile in [
            "\"} or vector(1) or x{a=\"",
            "\\\"} or vector(1) #",
            "a\nb",
            ".*",
            "a|b",
            "\\",
            "`",
            "\u{0}\u{7}\u{2028}",
            "RBKDV1X",
        ] {
            let out = q.render(&data(hostile)).unwrap();
            let expr = parser::parse(&out).unwrap();
            let mut ms = Vec::new();
            matchers(&expr, &mut ms);
            ms.retain(|(v, _)| !v.starts_with("__name__:"));
            assert_eq!(ms[0], (hostile.to_owned(), false), "{out}");
            assert!(
                !out.contains("vector(1) or") || out.contains("\\\""),
                "{out}"
            );
            // The regex matches the value itself and nothing else.
            let re = regex::Regex::new(&format!("^(?:{})$", ms[1].0)).unwrap();
            assert!(re.is_match(hostile), "{out}");
            assert!(!re.is_match("other") || hostile == "other");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        /// Any value, in an `=` and a `=~` matcher: the rendered query
        /// parses, the first matcher holds the value verbatim and the
        /// regex matches exactly it.
        #[test]
        fn any_value_stays_a_literal(v in "\\PC*|[\"\\\\`'{}()|.*+?\n\r\t\u{0}-\u{1f}]*") {
            proptest::prop_assume!(!v.is_empty());
            let q = Query::compile("x{a=\"{{labels.job}}\"} or y{b=~\"p-{{labels.job}}\"}", &[]).unwrap();
            let out = q.render(&data(&v)).unwrap();
            let expr = parser::parse(&out).unwrap();
            let mut ms = Vec::new();
            matchers(&expr, &mut ms);
            ms.retain(|(v, _)| !v.starts_with("__name__:"));
            proptest::prop_assert_eq!(ms.len(), 2);
            proptest::prop_assert_eq!(&ms[0], &(v.clone(), false));
            let re = regex::Regex::new(&format!("^(?:{})$", ms[1].0)).unwrap();
            let want = format!("p-{v}");
            proptest::prop_assert!(re.is_match(&want));
        }
    }
}
