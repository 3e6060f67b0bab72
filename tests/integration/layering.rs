//! The modules of `src/` depend one way: no module reaches, through `crate::` or `super::`
//! paths, a module that reaches it back. A cycle is what let the middle of the broker grow into
//! one knot before (a shard holding the coordinator that called a handler that called the
//! shard); this test keeps it from coming back. It reads the sources, not the compiled crate:
//! the paths in `use` lines and in code, outside `#[cfg(test)]` sections and comments.
//! A module and its own parent (`mod.rs`) are not counted as an edge, as a parent declares its
//! children.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module of `src/` (vendored crates excluded) by its path (`group::effects`), with its
/// file.
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "vendor") {
                    walk(&path, root, out);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .expect("under src")
                .with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                continue;
            }
            let name = parts.join("::");
            // Test-only files (`*_tests.rs`) may reach anything.
            if !name.ends_with("_tests") && !name.ends_with("::tests") {
                out.insert(name, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&src_dir(), &src_dir(), &mut out);
    out
}

/// The source of a module without its `#[cfg(test)]` items (a `mod x;` line, or a braced
/// block such as `mod tests { … }`) and without `//` comments.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read module");
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    strip_test_items(&code)
}

fn strip_test_items(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let item = &rest[at + MARK.len()..];
        let semi = item.find(';');
        let brace = item.find('{');
        rest = match (semi, brace) {
            // `mod x;`, `use …;`: up to the semicolon.
            (Some(s), b) if b.is_none_or(|b| s < b) => &item[s + 1..],
            // A braced item: up to its closing brace (or the end if unbalanced).
            (_, Some(b)) => {
                let mut depth = 0usize;
                let mut end = item.len();
                for (i, c) in item[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                &item[end..]
            }
            _ => "",
        };
    }
    out.push_str(rest);
    out
}

/// The longest prefix of `path` that names a module.
fn resolve<'a>(path: &[&str], mods: &'a BTreeMap<String, PathBuf>) -> Option<&'a str> {
    (1..=path.len()).rev().find_map(|n| {
        mods.get_key_value(&path[..n].join("::"))
            .map(|(k, _)| k.as_str())
    })
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The module paths after each `prefix` in `code`: `prefix a::b` gives `a::b`, and
/// `prefix a::{b, c::d}` gives `a`, `a::b`, `a::c::d`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        if code[..at].chars().next_back().is_some_and(ident_char) {
            continue; // part of a longer path, e.g. `super::super::`
        }
        let rest = &code[at + prefix.len()..];
        let head: String = rest.chars().take_while(|&c| ident_char(c)).collect();
        let base: Vec<String> = head
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let after = &rest[head.len()..];
        if let Some(group) = after.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or_default();
            for item in group.split(',') {
                let item: String = item.trim().chars().take_while(|&c| ident_char(c)).collect();
                if item.is_empty() || item == "self" {
                    continue;
                }
                let mut p = base.clone();
                p.extend(
                    item.split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
                out.push(p);
            }
        }
        if !base.is_empty() {
            out.push(base);
        }
    }
    out
}

/// Module → the modules it names.
fn dependencies(mods: &BTreeMap<String, PathBuf>) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut deps = BTreeMap::new();
    for (name, path) in mods {
        let code = code_of(path);
        let me: Vec<&str> = name.split("::").collect();
        let parent = &me[..me.len() - 1];
        let mut targets = BTreeSet::new();
        let mut add = |full: Vec<&str>| {
            if let Some(t) = resolve(&full, mods) {
                let is_parent = name.starts_with(&format!("{t}::"));
                if t != name && !is_parent {
                    targets.insert(t);
                }
            }
        };
        for p in paths_after(&code, "crate::") {
            add(p.iter().map(String::as_str).collect());
        }
        for p in paths_after(&code, "super::") {
            // `super::super::x`: one level up per `super`.
            let ups = p.iter().take_while(|s| *s == "super").count();
            let Some(base) = parent.len().checked_sub(ups) else {
                continue;
            };
            let mut full: Vec<&str> = parent[..base].to_vec();
            full.extend(p[ups..].iter().map(String::as_str));
            add(full);
        }
        deps.insert(name.as_str(), targets);
    }
    deps
}

/// The strongly connected components with more than one module (Tarjan's algorithm).
fn cycles<'a>(deps: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    struct Walk<'a, 'd> {
        deps: &'d BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<&'a str>>,
    }
    impl<'a> Walk<'a, '_> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for &w in self.deps.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.stack.contains(&w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort_unstable();
                    self.found.push(comp);
                }
            }
        }
    }
    let mut walk = Walk {
        deps,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for &v in deps.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn no_module_of_src_imports_a_module_that_imports_it_back() {
    let mods = modules();
    assert!(mods.len() > 50, "src/ read: {} modules", mods.len());
    let deps = dependencies(&mods);
    let found = cycles(&deps);
    let report: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .map(|m| {
                    let inside: Vec<&str> =
                        deps[m].iter().copied().filter(|t| c.contains(t)).collect();
                    format!("  {m} -> {}", inside.join(", "))
                })
                .collect();
            format!("cycle:\n{}", edges.join("\n"))
        })
        .collect();
    assert!(found.is_empty(), "{}", report.join("\n"));
}

#[test]
fn test_only_items_are_left_out_but_the_code_after_them_is_read() {
    let code = "#[cfg(test)]\nmod a_tests;\nuse crate::b::X;\n#[cfg(test)]\nmod tests {\n    use crate::c::Y;\n    fn f() { if true { } }\n}\nuse crate::d::Z;";
    let kept = strip_test_items(code);
    let paths = paths_after(&kept, "crate::");
    assert_eq!(
        paths,
        vec![
            vec!["b".to_string(), "X".into()],
            vec!["d".to_string(), "Z".into()]
        ]
    );
}

#[test]
fn the_cycle_check_reads_use_groups_and_finds_a_three_module_cycle() {
    let mut mods = BTreeMap::new();
    for m in ["a", "b", "c::d"] {
        mods.insert(m.to_string(), PathBuf::new());
    }
    let code = "use crate::{b::X, c::d};\nfn f() { super::a::g(); }";
    assert_eq!(
        paths_after(code, "super::"),
        vec![vec!["a".to_string(), "g".into()]]
    );
    let paths = paths_after(code, "crate::");
    assert_eq!(
        paths,
        vec![
            vec!["b".to_string(), "X".into()],
            vec!["c".to_string(), "d".into()]
        ]
    );
    assert_eq!(resolve(&["c", "d", "Y"], &mods), Some("c::d"));
    let mut deps: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    deps.insert("a", ["b"].into());
    deps.insert("b", ["c::d"].into());
    deps.insert("c::d", ["a"].into());
    assert_eq!(cycles(&deps), vec![vec!["a", "b", "c::d"]]);
    deps.insert("c::d", BTreeSet::new());
    assert!(cycles(&deps).is_empty());
}
