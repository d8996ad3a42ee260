//! SLI queries over a window. A query is either written for a window
//! (Sloth's `{{.window}}` in its ranges) or names counters (`counter:
//! true`): then runbookd parses it and puts `rate(…[window])` around each
//! selector in the syntax tree, never by editing the text.

use std::fmt::Write as _;
use std::time::Duration;

use promql_parser::parser::{self, Expr};

/// An SLI query as the file gives it, checked to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    text: String,
    counter: bool,
}

/// Sloth's window placeholder, with and without spaces.
const WINDOW: [&str; 2] = ["{{.window}}", "{{ .window }}"];

impl Query {
    /// Checks `text`: a windowed query must name `{{.window}}`; a counter
    /// query must be a PromQL expression of instant selectors.
    ///
    /// # Errors
    /// What is wrong, for the field's error.
    pub fn new(text: &str, counter: bool) -> Result<Query, String> {
        let text = text.trim().to_owned();
        if text.is_empty() {
            return Err("the query is empty".into());
        }
        let q = Query { text, counter };
        if !counter && !WINDOW.iter().any(|w| q.text.contains(w)) {
            return Err(
                "the query has no `{{.window}}`: write its ranges as `[{{.window}}]` (Sloth's way), or name counters with `counter: true` and runbookd adds the rate"
                    .into(),
            );
        }
        if counter {
            if WINDOW.iter().any(|w| q.text.contains(w)) {
                return Err(
                    "a `counter: true` query names counters without ranges; runbookd adds `rate(…[window])` (drop `{{.window}}`)"
                        .into(),
                );
            }
            let expr = parser::parse(&q.text).map_err(|e| format!("not PromQL: {e}"))?;
            check_counters(&expr)?;
        }
        parser::parse(&q.at(Duration::from_secs(300))?).map_err(|e| format!("not PromQL: {e}"))?;
        Ok(q)
    }

    /// The query over `window`, as PromQL text.
    ///
    /// # Errors
    /// When the result does not parse (a bad query).
    pub fn at(&self, window: Duration) -> Result<String, String> {
        let w = duration(window);
        if self.counter {
            let mut expr = parser::parse(&self.text).map_err(|e| format!("not PromQL: {e}"))?;
            rate_over(&mut expr, window)?;
            Ok(expr.to_string())
        } else {
            // Checked to parse when loaded: a window is a duration token
            // wherever the placeholder stands, so this is PromQL too.
            Ok(WINDOW
                .iter()
                .fold(self.text.clone(), |t, p| t.replace(p, &w)))
        }
    }

    /// Bad events from good ones (`self`) and all (`total`): `total - good`.
    #[must_use]
    pub fn bad_from_total(&self, total: &Query) -> Query {
        Query {
            text: format!("({}) - ({})", total.text, self.text),
            counter: self.counter,
        }
    }

    /// A failure ratio from a success ratio: `1 - ratio`.
    #[must_use]
    pub fn complement(&self) -> Query {
        Query {
            text: format!("1 - ({})", self.text),
            counter: self.counter,
        }
    }

    /// For a latency SLI on a histogram: the bucket selector (without its
    /// `le`) and the bucket's bound, found in the syntax tree.
    #[must_use]
    pub fn histogram(&self) -> Option<(String, f64)> {
        let expr = parser::parse(&self.at(Duration::from_secs(300)).ok()?).ok()?;
        bucket(&expr)
    }

    /// The query as written.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// A counter query names instant selectors only (ranges and subqueries
/// are runbookd's to add).
fn check_counters(e: &Expr) -> Result<(), String> {
    match e {
        Expr::MatrixSelector(m) => Err(format!(
            "a `counter: true` query names counters without ranges; runbookd adds `rate(…[window])` (found `{m}`)"
        )),
        Expr::Subquery(s) => Err(format!(
            "a `counter: true` query cannot hold a subquery (found `{s}`)"
        )),
        Expr::Aggregate(a) => {
            check_counters(&a.expr)?;
            a.param.as_deref().map_or(Ok(()), check_counters)
        }
        Expr::Unary(u) => check_counters(&u.expr),
        Expr::Binary(b) => {
            check_counters(&b.lhs)?;
            check_counters(&b.rhs)
        }
        Expr::Paren(p) => check_counters(&p.expr),
        Expr::Call(c) => c.args.args.iter().try_for_each(|a| check_counters(a)),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::Extension(_) => Ok(()),
    }
}

fn bucket(e: &Expr) -> Option<(String, f64)> {
    let of_selector = |vs: &parser::VectorSelector| -> Option<(String, f64)> {
        if !vs.name.as_deref()?.ends_with("_bucket") {
            return None;
        }
        let le = vs
            .matchers
            .matchers
            .iter()
            .find(|m| m.name == "le" && matches!(m.op, promql_parser::label::MatchOp::Equal))?;
        let bound: f64 = le.value.parse().ok().filter(|b: &f64| b.is_finite())?;
        let mut without = vs.clone();
        without.matchers.matchers.retain(|m| m.name != "le");
        without.offset = None;
        without.at = None;
        Some((without.to_string(), bound))
    };
    match e {
        Expr::VectorSelector(vs) => of_selector(vs),
        Expr::MatrixSelector(m) => of_selector(&m.vs),
        Expr::Aggregate(a) => bucket(&a.expr),
        Expr::Unary(u) => bucket(&u.expr),
        Expr::Binary(b) => bucket(&b.lhs).or_else(|| bucket(&b.rhs)),
        Expr::Paren(p) => bucket(&p.expr),
        Expr::Subquery(s) => bucket(&s.expr),
        Expr::Call(c) => c.args.args.iter().find_map(|a| bucket(a)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => None,
    }
}

/// Replaces every instant selector of `e` with `rate(selector[window])`.
fn rate_over(e: &mut Expr, window: Duration) -> Result<(), String> {
    match e {
        Expr::VectorSelector(vs) => {
            // Built by the parser from the selector it printed: the tree,
            // not the file's text, decides what the selector is.
            *e = parser::parse(&format!("rate({vs}[{}])", duration(window)))
                .map_err(|err| format!("cannot put a rate around `{vs}`: {err}"))?;
            Ok(())
        }
        Expr::Aggregate(a) => {
            rate_over(&mut a.expr, window)?;
            a.param
                .as_deref_mut()
                .map_or(Ok(()), |p| rate_over(p, window))
        }
        Expr::Unary(u) => rate_over(&mut u.expr, window),
        Expr::Binary(b) => {
            rate_over(&mut b.lhs, window)?;
            rate_over(&mut b.rhs, window)
        }
        Expr::Paren(p) => rate_over(&mut p.expr, window),
        Expr::Call(c) => c
            .args
            .args
            .iter_mut()
            .try_for_each(|a| rate_over(a, window)),
        Expr::MatrixSelector(_)
        | Expr::Subquery(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => Ok(()),
    }
}

/// A duration as Prometheus writes it, largest units first: `5m`, `1h`,
/// `3d`, `2h48m`.
#[must_use]
pub fn duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= n {
            let _ = write!(out, "{}{unit}", secs / n);
            secs %= n;
        }
    }
    out
}

/// `value` as a PromQL string literal (escaped).
#[must_use]
pub fn string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windowed_queries_take_the_window() {
        let q = Query::new(
            "sum(rate(http_requests_total{code=~\"5..\"}[{{.window}}]))",
            false,
        )
        .unwrap();
        assert_eq!(
            q.at(Duration::from_secs(3600)).unwrap(),
            "sum(rate(http_requests_total{code=~\"5..\"}[1h]))"
        );
    }

    #[test]
    fn counters_get_a_rate_from_the_syntax_tree() {
        let q = Query::new(
            "sum by (job) (http_requests_total{code=~\"5..\", path=\"/a]\"}) + 0 * up",
            true,
        )
        .unwrap();
        let at = q.at(Duration::from_secs(300)).unwrap();
        assert!(at.contains("rate(http_requests_total{"), "{at}");
        assert!(at.contains("}[5m])"), "{at}");
        assert!(at.contains("rate(up[5m])"), "{at}");
        // The label value that looks like a range is a value, untouched.
        assert!(at.contains("path=\"/a]\""), "{at}");
        parser::parse(&at).unwrap();
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        let e = Query::new("sum(rate(x[5m]))", false).unwrap_err();
        assert!(e.contains("{{.window}}"), "{e}");
        let e = Query::new("sum(rate(x[5m]))", true).unwrap_err();
        assert!(e.contains("without ranges"), "{e}");
        let e = Query::new("sum(x", true).unwrap_err();
        assert!(e.starts_with("not PromQL"), "{e}");
        let e = Query::new("sum(rate(x[{{.window}}]) by", false).unwrap_err();
        assert!(e.starts_with("not PromQL"), "{e}");
    }

    #[test]
    fn a_latency_sli_s_histogram_is_found() {
        let q = Query::new(
            "sum(rate(http_request_duration_seconds_count{job=\"api\"}[{{.window}}])) - sum(rate(http_request_duration_seconds_bucket{job=\"api\",le=\"0.5\"}[{{.window}}]))",
            false,
        )
        .unwrap();
        let (sel, bound) = q.histogram().unwrap();
        assert_eq!(sel, "http_request_duration_seconds_bucket{job=\"api\"}");
        assert!((bound - 0.5).abs() < f64::EPSILON);
        assert_eq!(
            Query::new("sum(rate(x[{{.window}}]))", false)
                .unwrap()
                .histogram(),
            None
        );
        // The +Inf bucket is no threshold.
        let q = Query::new("sum(rate(h_bucket{le=\"+Inf\"}[{{.window}}]))", false).unwrap();
        assert_eq!(q.histogram(), None);
    }

    #[test]
    fn durations_read_as_prometheus_writes_them() {
        assert_eq!(duration(Duration::from_secs(300)), "5m");
        assert_eq!(duration(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(duration(Duration::from_secs(10_080)), "2h48m");
        assert_eq!(string("a\"b\\"), "\"a\\\"b\\\\\"");
    }
}
