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

/// The modules `line` names with `crate::`: `crate::x::…` and each name of
/// `crate::{x, y::…}`.
fn named_modules(line: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in line.match_indices("crate::") {
        let rest = &line[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            out.extend(group.split(',').map(ident).filter(|m| !m.is_empty()));
        } else {
            out.push(ident(rest));
        }
    }
    out
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
        // Unit tests may reach anywhere: they are not part of the build.
        let text = text.split("#[cfg(test)]\nmod ").next().unwrap_or("");
        for (n, line) in text.lines().enumerate() {
            let excuse = line.contains("// layer:");
            let code = line.split("//").next().unwrap_or("");
            for to in named_modules(code) {
                if to == from || to == "self" || to == "super" {
                    continue;
                }
                let at = format!("{}:{}", f.strip_prefix(&src).unwrap_or(&f).display(), n + 1);
                let map = if excuse { &mut excused } else { &mut plain };
                map.entry((from.clone(), to)).or_default().push(at);
            }
        }
    }
    (plain, excused)
}

fn layer_of() -> BTreeMap<&'static str, (usize, &'static str)> {
    runbookd::LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (name, mods))| mods.iter().map(move |m| (*m, (i, *name))))
        .collect()
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
fn the_reader_sees_imports_as_written() {
    // The scanner's own rules, on lines the sources hold.
    assert_eq!(
        named_modules("use crate::store::{Lease, Store};"),
        ["store"]
    );
    assert_eq!(
        named_modules("use crate::{alert::Alert, plan::Plan};"),
        ["alert", "plan"]
    );
    assert_eq!(
        named_modules("let x = crate::record::RunResult::default(); crate::exec::go()"),
        ["record", "exec"]
    );
}
