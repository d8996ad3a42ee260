//! Where each value of a YAML document starts, by path (`steps.1.run.0`), so
//! that a check done after deserializing can still say `file:line:col`.
//! `serde_yaml` reports positions only for its own errors, not for values.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Start and end of every node, and start of every mapping key, by path.
#[derive(Debug, Default)]
pub struct Positions {
    nodes: HashMap<String, (Pos, Pos)>,
    keys: HashMap<String, Pos>,
    scalars: HashMap<String, String>,
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        start: Pos,
    },
    Seq {
        path: String,
        index: usize,
        start: Pos,
    },
}

fn pos(m: saphyr_parser::Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

impl Positions {
    /// Indexes `text`.
    ///
    /// # Errors
    /// The position and message of a YAML syntax error.
    pub fn of(text: &str) -> Result<Self, (Pos, String)> {
        let mut idx = Positions::default();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let (event, span): (Event<'_>, Span) =
                item.map_err(|e| (pos(*e.marker()), e.info().to_owned()))?;
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map {
                        path,
                        key: key @ None,
                        ..
                    }) = stack.last_mut()
                    {
                        idx.keys.insert(join(path, &value), pos(span.start));
                        *key = Some(value.into_owned());
                        continue;
                    }
                    let path = child_path(&stack);
                    idx.nodes
                        .insert(path.clone(), (pos(span.start), pos(span.end)));
                    idx.scalars.insert(path, value.into_owned());
                    advance(&mut stack);
                }
                Event::Alias(_) => {
                    let path = child_path(&stack);
                    idx.nodes.insert(path, (pos(span.start), pos(span.end)));
                    advance(&mut stack);
                }
                Event::MappingStart(..) => {
                    let path = child_path(&stack);
                    stack.push(Frame::Map {
                        path,
                        key: None,
                        start: pos(span.start),
                    });
                }
                Event::SequenceStart(..) => {
                    let path = child_path(&stack);
                    stack.push(Frame::Seq {
                        path,
                        index: 0,
                        start: pos(span.start),
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(Frame::Map { path, start, .. } | Frame::Seq { path, start, .. }) =
                        stack.pop()
                    {
                        idx.nodes.insert(path, (start, pos(span.end)));
                    }
                    advance(&mut stack);
                }
                _ => {}
            }
        }
        Ok(idx)
    }

    /// Where the value at `path` starts.
    #[must_use]
    pub fn value(&self, path: &str) -> Option<Pos> {
        self.nodes.get(path).map(|(s, _)| *s)
    }

    /// Where the key naming `path` starts.
    #[must_use]
    pub fn key(&self, path: &str) -> Option<Pos> {
        self.keys.get(path).copied()
    }

    /// The text of the scalar at `path`.
    #[must_use]
    pub fn scalar(&self, path: &str) -> Option<&str> {
        self.scalars.get(path).map(String::as_str)
    }

    /// Whether `at` lies within the node at `path`.
    #[must_use]
    pub fn contains(&self, path: &str, at: Pos) -> bool {
        self.nodes
            .get(path)
            .is_some_and(|(s, e)| *s <= at && at <= *e)
    }
}

fn child_path(stack: &[Frame]) -> String {
    match stack.last() {
        None => String::new(),
        Some(Frame::Map { path, key, .. }) => join(path, key.as_deref().unwrap_or_default()),
        Some(Frame::Seq { path, index, .. }) => join(path, &index.to_string()),
    }
}

fn advance(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Map { key, .. }) => *key = None,
        Some(Frame::Seq { index, .. }) => *index += 1,
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_and_keys_by_path() {
        let text = "name: x\nsteps:\n  - name: a\n    run: [echo, \"hi\"]\n  - name: b\n    shell: |\n      echo\n";
        let p = Positions::of(text).unwrap();
        assert_eq!(p.value("name"), Some(Pos { line: 1, col: 7 }));
        assert_eq!(p.key("steps"), Some(Pos { line: 2, col: 1 }));
        assert_eq!(p.value("steps.0.name"), Some(Pos { line: 3, col: 11 }));
        assert_eq!(p.value("steps.0.run.1"), Some(Pos { line: 4, col: 17 }));
        assert_eq!(p.key("steps.1.shell"), Some(Pos { line: 6, col: 5 }));
        assert!(p.contains("steps.1", Pos { line: 7, col: 7 }));
        assert!(!p.contains("steps.0", Pos { line: 6, col: 5 }));
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let (at, _) = Positions::of("a: [1, 2\nb: c\n").unwrap_err();
        assert!(at.line >= 1);
    }
}
