//! The import graph of `src/`: every `crate::` path, module by module,
//! against the layers `runbookd::LAYERS` names (the lib.rs tour).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src/") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a path under `src/` belongs to (`None`: lib.rs, main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(m) => Some(m.to_owned()),
        None => Some(first.to_owned()),
    }
}

/// The top-level names of a `{…}` group that starts `text` (after its
/// `{`): `a::B, c::{D, E}, f` → `a`, `c`, `f`; nested groups and line
/// breaks included.
fn group_names(text: &str) -> Vec<String> {
    let (mut depth, mut item, mut out) = (0, String::new(), Vec::new());
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => out.push(std::mem::take(&mut item)),
            _ if depth == 0 => item.push(c),
            _ => {}
        }
    }
    out.push(item);
    out.iter()
        .map(|i| ident(i))
        .filter(|m| !m.is_empty())
        .collect()
}

fn ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The modules `code` names through `root` (`crate::`, or `super::` in a
/// top-level module): `root x::…`, and each name of `root {x, y::{…}}`,
/// with the line each is on.
fn named_modules(code: &str, root: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(root) {
        // `…crate::` inside a longer path (`runbookd::crate::` never is).
        if code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let line = code[..i].matches('\n').count() + 1;
        let rest = &code[i + root.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            out.extend(group_names(group).into_iter().map(|m| (line, m)));
        } else {
            out.push((line, ident(rest)));
        }
    }
    out
}

/// `text` without its comments, the contents of its strings (plain and
/// raw) and its `#[cfg(test)] mod … { … }` blocks, line breaks kept.
fn code_of(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut code = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '\'' && next == Some('"') && chars.get(i + 2) == Some(&'\'') {
            // The char literal '"'.
            code.push_str("' '");
            i += 3;
        } else if c == 'r'
            && matches!(next, Some('"' | '#'))
            && !chars[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"…", r#"…"#.
            let hashes = chars[i + 1..].iter().take_while(|h| **h == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                code.push(c);
                i += 1;
                continue;
            }
            code.push_str("r\"");
            i += 2 + hashes;
            while i < chars.len() {
                if chars[i] == '"'
                    && chars[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|h| **h == '#')
                        .count()
                        == hashes
                {
                    i += 1 + hashes;
                    break;
                }
                code.push(blank(chars[i]));
                i += 1;
            }
            code.push('"');
        } else if c == '"' {
            code.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    code.push(' ');
                    i += 1;
                }
                if let Some(&x) = chars.get(i) {
                    code.push(blank(x));
                }
                i += 1;
            }
            code.push('"');
            i += 1;
        } else {
            code.push(c);
            i += 1;
        }
    }
    // Unit tests may reach anywhere: they are not part of the build.
    while let Some(at) = code.find("#[cfg(test)]\nmod ") {
        let open = code[at..].find('{').map(|o| at + o);
        let Some(open) = open else { break };
        let (mut depth, mut end) = (0, code.len());
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        let lines = code[at..end].matches('\n').count();
        code.replace_range(at..end, &"\n".repeat(lines));
    }
    code
}

/// (from, to) → the places (`file:line`) of each import between modules;
/// the places that say `// layer:` are kept apart.
type Edges = BTreeMap<(String, String), Vec<String>>;

fn edges() -> (Edges, Edges) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let (mut plain, mut excused) = (Edges::new(), Edges::new());
    for f in files {
        let Some(from) = module_of(&src, &f) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).expect("read source");
        let says_why: Vec<bool> = text.lines().map(|l| l.contains("// layer:")).collect();
        let code = code_of(&text);
        let rel = f.strip_prefix(&src).unwrap_or(&f);
        // `super::` in `src/x.rs` or `src/x/mod.rs` is the crate.
        let top = rel.components().count() == 1
            || rel.file_name().is_some_and(|n| n == "mod.rs") && rel.components().count() == 2;
        let mut named = named_modules(&code, "crate::");
        if top {
            named.extend(named_modules(&code, "super::"));
        }
        for (line, to) in named {
            if to == from || to == "self" || to == "super" {
                continue;
            }
            let at = format!("{}:{line}", rel.display());
            let excuse = says_why.get(line - 1).copied().unwrap_or(false);
            let map = if excuse { &mut excused } else { &mut plain };
            map.entry((from.clone(), to)).or_default().push(at);
        }
    }
    (plain, excused)
}

fn layer_of() -> BTreeMap<&'static str, (usize, &'static str)> {
    let mut out = BTreeMap::new();
    for (i, (name, mods)) in runbookd::LAYERS.iter().enumerate() {
        for m in *mods {
            assert!(
                out.insert(*m, (i, *name)).is_none(),
                "`{m}` is in two layers"
            );
        }
    }
    out
}

#[test]
fn every_module_has_a_layer() {
    let layers = layer_of();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let missing: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(&src, f))
        .filter(|m| !layers.contains_key(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a layer in runbookd::LAYERS: {missing:?}"
    );
}

#[test]
fn no_import_points_up_a_layer_without_saying_why() {
    let layers = layer_of();
    let (plain, _) = edges();
    let up: Vec<String> = plain
        .iter()
        .filter_map(|((from, to), at)| {
            let (lf, nf) = layers.get(from.as_str())?;
            let (lt, nt) = layers.get(to.as_str())?;
            (lt > lf).then(|| format!("{from} ({nf}) → {to} ({nt}) at {}", at.join(", ")))
        })
        .collect();
    assert!(up.is_empty(), "imports up a layer:\n{}", up.join("\n"));
}

#[test]
fn no_two_modules_depend_on_each_other() {
    let (plain, excused) = edges();
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in plain.keys().chain(excused.keys()) {
        graph.entry(from).or_default().insert(to);
    }
    // A cycle through `a` exists when `a` is reachable from one of its own
    // imports.
    let reaches = |start: &str, goal: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(m) = todo.pop() {
            if m == goal {
                return true;
            }
            if seen.insert(m) {
                todo.extend(graph.get(m).into_iter().flatten().copied());
            }
        }
        false
    };
    let cycles: Vec<String> = plain
        .iter()
        .chain(&excused)
        .filter(|((from, to), _)| reaches(to, from))
        .map(|((from, to), at)| format!("{from} → {to} at {} (and back)", at.join(", ")))
        .collect();
    assert!(
        cycles.is_empty(),
        "modules in a cycle:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn runs_reach_alertmanager_and_prometheus_only_through_the_integrations_traits() {
    // #24: the executor and `verify:` steps know no client, so a new
    // integration (or a second kind of one) changes neither.
    let (plain, excused) = edges();
    let clients = ["alertmanager", "prometheus", "silence"];
    let reached: Vec<String> = plain
        .iter()
        .chain(&excused)
        .filter(|((from, to), _)| {
            ["exec", "verify"].contains(&from.as_str()) && clients.contains(&to.as_str())
        })
        .map(|((from, to), at)| format!("{from} → {to} at {}", at.join(", ")))
        .collect();
    assert!(
        reached.is_empty(),
        "a client reached without `integrations`:\n{}",
        reached.join("\n")
    );
    assert!(
        plain.contains_key(&("exec".to_owned(), "integrations".to_owned())),
        "the executor reaches its integrations"
    );
}

#[test]
fn the_reader_sees_imports_as_written() {
    // The scanner's own rules, on lines such as the sources hold.
    let names = |code: &str| -> Vec<String> {
        named_modules(&code_of(code), "crate::")
            .into_iter()
            .map(|(_, m)| m)
            .collect()
    };
    assert_eq!(names("use crate::store::{Lease, Store};"), ["store"]);
    assert_eq!(
        names("use crate::{alert::Alert, plan::{Plan, StepPlan}, record};"),
        ["alert", "plan", "record"]
    );
    // A group rustfmt broke over lines.
    assert_eq!(
        names("use crate::{\n    alert::Alert,\n    plan::Plan,\n};"),
        ["alert", "plan"]
    );
    assert_eq!(
        names("let x = crate::record::RunResult::default(); crate::exec::go()"),
        ["record", "exec"]
    );
    // Comments and URLs in strings are not imports; code after a test
    // module is.
    assert_eq!(
        names("// crate::api\nlet u = \"http://x//crate::y\"; crate::store::go()"),
        ["store"]
    );
    assert_eq!(
        names("#[cfg(test)]\nmod tests {\n use crate::api;\n}\nuse crate::store;"),
        ["store"]
    );
}
