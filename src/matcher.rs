//! Alertmanager's classic matcher grammar and semantics (`pkg/labels/parse.go`
//! and `matcher.go` of prometheus/alertmanager), so that a matcher copied from
//! an Alertmanager route means exactly the same here.
//!
//! `NAME OP VALUE` with `OP` one of `=`, `!=`, `=~`, `!~`; white space around
//! the operator and the value is ignored; the value may be double-quoted, where
//! `\"`, `\\` and `\n` are escapes and any other `\x` stays literal. Regexes are
//! fully anchored (`^(?:VALUE)$`), and a label the alert lacks equals `""`.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

use crate::alert::Labels;

/// The four operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One parsed matcher; a regex matcher holds its compiled, anchored regex.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

/// Why a matcher does not parse. Messages follow Alertmanager's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error(
        "bad matcher format `{0}`: expected NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX"
    )]
    Format(String),
    #[error("bad matcher `{0}`: `==` is not an operator; did you mean `=`?")]
    DoubleEquals(String),
    #[error("matcher value contains an unescaped double quote: `{0}`")]
    UnescapedQuote(String),
    #[error("invalid regex in matcher `{matcher}`: {reason}")]
    Regex { matcher: String, reason: String },
}

// Go's `\s` is ASCII-only: [\t\n\f\r ]. `=~` must come before `=`.
static MATCHER_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[\t\n\f\r ]*([a-zA-Z_:][a-zA-Z0-9_:]*)[\t\n\f\r ]*(=~|=|!=|!~)[\t\n\f\r ]*((?s).*?)[\t\n\f\r ]*$",
    )
    .expect("matcher grammar regex compiles")
});

impl Matcher {
    /// Builds a matcher from its parts, compiling and anchoring a regex value.
    ///
    /// # Errors
    /// When `op` is a regex operator and `value` is not a valid regex.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, MatcherError> {
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                    MatcherError::Regex {
                        matcher: format!("{name}{}{value:?}", op.as_str()),
                        reason: e
                            .to_string()
                            .lines()
                            .last()
                            .unwrap_or_default()
                            .trim()
                            .to_owned(),
                    }
                })?)
            }
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    /// Whether the label set satisfies this matcher; a missing label is `""`.
    #[must_use]
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.name).map_or("", String::as_str))
    }

    /// Whether a label value `v` of this matcher's label satisfies it.
    #[must_use]
    pub fn matches_value(&self, v: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(v),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(v),
            (MatchOp::Regex | MatchOp::NotRegex, None) => unreachable!("regex compiled in new"),
        }
    }
}

impl FromStr for Matcher {
    type Err = MatcherError;

    fn from_str(s: &str) -> Result<Self, MatcherError> {
        let caps = MATCHER_RE
            .captures(s)
            .ok_or_else(|| MatcherError::Format(s.to_owned()))?;
        let (name, op, raw) = (&caps[1], &caps[2], &caps[3]);
        // `a=="x"` is an error in Alertmanager too (an unescaped quote);
        // `a==x` stays what Alertmanager makes of it, the value `=x`.
        if op == "="
            && raw
                .strip_prefix('=')
                .is_some_and(|v| v.trim_start().starts_with('"'))
        {
            return Err(MatcherError::DoubleEquals(s.to_owned()));
        }
        let op = match op {
            "=" => MatchOp::Equal,
            "!=" => MatchOp::NotEqual,
            "=~" => MatchOp::Regex,
            _ => MatchOp::NotRegex,
        };
        let (body, mut expect_trailing_quote) = match raw.strip_prefix('"') {
            Some(rest) => (rest, true),
            None => (raw, false),
        };
        let mut value = String::with_capacity(body.len());
        let mut escaped = false;
        let mut chars = body.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            if escaped {
                escaped = false;
                match c {
                    'n' => value.push('\n'),
                    '"' | '\\' => value.push(c),
                    // A spurious escape keeps its backslash.
                    _ => {
                        value.push('\\');
                        value.push(c);
                    }
                }
                continue;
            }
            let last = chars.peek().is_none();
            match c {
                // A backslash as the very last character is literal.
                '\\' if last => value.push('\\'),
                '\\' => escaped = true,
                '"' if expect_trailing_quote && last => expect_trailing_quote = false,
                '"' => return Err(MatcherError::UnescapedQuote(raw.to_owned())),
                _ => value.push(c),
            }
        }
        if expect_trailing_quote {
            return Err(MatcherError::UnescapedQuote(raw.to_owned()));
        }
        Matcher::new(name, op, &value)
    }
}

impl fmt::Display for Matcher {
    /// Alertmanager's canonical form: `name="value"` with `"`, `\` and newline escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}\"", self.name, self.op.as_str())?;
        for c in self.value.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                _ => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_like_alertmanager() {
        use MatchOp::{Equal, NotEqual, NotRegex, Regex};
        let cases: &[(&str, &str, MatchOp, &str)] = &[
            ("foo=bar", "foo", Equal, "bar"),
            ("foo=\"bar\"", "foo", Equal, "bar"),
            ("  foo  =  \"bar\"  ", "foo", Equal, "bar"),
            ("foo = bar baz", "foo", Equal, "bar baz"),
            ("foo=  bar  ", "foo", Equal, "bar"),
            ("foo=\"  bar  \"", "foo", Equal, "  bar  "),
            ("foo=", "foo", Equal, ""),
            ("foo=\"\"", "foo", Equal, ""),
            ("foo!=", "foo", NotEqual, ""),
            ("foo!=bar", "foo", NotEqual, "bar"),
            ("foo=~bar.*", "foo", Regex, "bar.*"),
            ("foo!~\"ba+r\"", "foo", NotRegex, "ba+r"),
            // `=~` is tried before `=`, so a leading `=` of the value survives.
            ("foo==bar", "foo", Equal, "=bar"),
            ("foo=~=bar", "foo", Regex, "=bar"),
            ("foo=!bar", "foo", Equal, "!bar"),
            // Escapes inside quotes.
            (r#"foo="bar\"baz""#, "foo", Equal, "bar\"baz"),
            (r#"foo="bar\\""#, "foo", Equal, "bar\\"),
            (r#"foo="a\nb""#, "foo", Equal, "a\nb"),
            // A spurious escape stays literal, also unquoted.
            (r#"foo="a\xb""#, "foo", Equal, "a\\xb"),
            (r"foo=\x", "foo", Equal, "\\x"),
            (r"foo=\\", "foo", Equal, "\\"),
            (r"foo=bar\", "foo", Equal, "bar\\"),
            // Unquoted escapes of a quote.
            (r#"foo=\"bar\""#, "foo", Equal, "\"bar\""),
            ("foo:bar_1=baz", "foo:bar_1", Equal, "baz"),
            ("_x=y", "_x", Equal, "y"),
            ("foo=\"日本 ✓\"", "foo", Equal, "日本 ✓"),
            ("foo=\"with, comma\"", "foo", Equal, "with, comma"),
            ("foo={bar}", "foo", Equal, "{bar}"),
            ("foo=\"multi\nline\"", "foo", Equal, "multi\nline"),
        ];
        for (input, name, op, value) in cases {
            let m: Matcher = input.parse().unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(
                (m.name.as_str(), m.op, m.value.as_str()),
                (*name, *op, *value),
                "{input:?}"
            );
        }
    }

    #[test]
    fn refuses_what_alertmanager_refuses() {
        for input in [
            "foo",
            "=bar",
            "1foo=bar",
            "foo-bar=baz",
            "foo bar=baz",
            "",
            "foo<bar",
            "foo=\"bar",
            "foo=bar\"",
            "foo=\"bar\"baz\"",
            "foo=\"bar\\\"",
            "foo=\"",
            "foo=~\"[\"",
            "foo!~(",
        ] {
            assert!(
                input.parse::<Matcher>().is_err(),
                "{input:?} should be refused"
            );
        }
        assert!(matches!(
            "foo=\"bar".parse::<Matcher>(),
            Err(MatcherError::UnescapedQuote(_))
        ));
        assert!(matches!(
            "foo".parse::<Matcher>(),
            Err(MatcherError::Format(_))
        ));
        assert!(matches!(
            "foo=~\"(\"".parse::<Matcher>(),
            Err(MatcherError::Regex { .. })
        ));
    }

    #[test]
    fn matches_like_alertmanager() {
        let l = labels(&[
            ("alertname", "HighLatency"),
            ("severity", "page"),
            ("job", "api"),
        ]);
        let cases: &[(&str, bool)] = &[
            ("alertname=HighLatency", true),
            ("alertname=highlatency", false),
            ("alertname!=Other", true),
            ("severity=~\"page|critical\"", true),
            // Fully anchored: no partial matches.
            ("severity=~pag", false),
            ("alertname=~High", false),
            ("alertname=~\"High|Latency\"", false),
            ("alertname=~\"High.*\"", true),
            ("severity!~\"page|critical\"", false),
            // A missing label equals "".
            ("team=\"\"", true),
            ("team!=\"\"", false),
            ("team=~\".*\"", true),
            ("team=~\".+\"", false),
            ("team!~\".+\"", true),
            ("job!=\"\"", true),
            ("team=", true),
            // `.` does not cross newlines, as in Go's RE2.
            ("job=~\"a.*\"", true),
        ];
        for (input, expected) in cases {
            let m: Matcher = input.parse().unwrap();
            assert_eq!(m.matches(&l), *expected, "{input}");
        }
        let multi = labels(&[("msg", "a\nb")]);
        assert!(!"msg=~\"a.b\"".parse::<Matcher>().unwrap().matches(&multi));
        assert!("msg=~\"(?s)a.b\""
            .parse::<Matcher>()
            .unwrap()
            .matches(&multi));
    }

    #[test]
    fn displays_canonically_and_round_trips() {
        for input in [
            "foo=bar",
            r#"foo!="a\"b\\c""#,
            r#"foo=~"a\\.b""#,
            "foo=~\"x\ny\"",
            "foo= spaced value ",
        ] {
            let m: Matcher = input.parse().unwrap();
            let again: Matcher = m.to_string().parse().unwrap();
            assert_eq!(m, again, "{input} -> {m}");
        }
        assert_eq!(
            "severity =~ page|critical"
                .parse::<Matcher>()
                .unwrap()
                .to_string(),
            "severity=~\"page|critical\""
        );
    }
}
