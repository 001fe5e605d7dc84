//! The crates' top-level modules import each other without a circle (issue 13): each
//! crate's `use crate::…` graph, test files and inline test modules left out, has no
//! cycle. A new edge that closes one fails here, naming the modules on it. Nothing runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use nightowl_tests::workspace_root;

/// Module → the top-level modules it names through `crate::`.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            modules.insert(name);
        } else if let Some(stem) = name.strip_suffix(".rs")
            && !matches!(stem, "lib" | "main")
        {
            modules.insert(stem.to_owned());
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> =
        modules.iter().map(|module| (module.clone(), BTreeSet::new())).collect();
    let mut files = vec![src.to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy();
        if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let top = top.strip_suffix(".rs").unwrap_or(&top).to_owned();
        if !modules.contains(&top) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code: String = text
            .split("#[cfg(test)]\nmod tests {")
            .next()
            .unwrap()
            .lines()
            .map(|line| line.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        for named in names_after_crate(&code) {
            if named != top && modules.contains(&named) {
                graph.get_mut(&top).unwrap().insert(named);
            }
        }
    }
    graph
}

/// The first path segment after every `crate::`, and every name of a
/// `crate::{a, b::c}` group.
fn names_after_crate(code: &str) -> Vec<String> {
    let ident = |text: &str| -> String {
        text.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
    };
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Items of the group at its own depth: `a::{b, c}, d` names `a` and `d`.
            let (mut depth, mut item_start) = (0usize, true);
            for (index, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        names.push(ident(&group[index..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.push(ident(rest));
        }
    }
    names
}

/// A cycle in `graph`, as the modules on it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|on| on == module) {
            return Some(path[start..].to_vec());
        }
        if !done.insert(module.to_owned()) {
            return None;
        }
        path.push(module.to_owned());
        for next in &graph[module] {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

#[test]
fn neither_crate_has_an_import_circle() {
    for krate in ["agent", "collector"] {
        let graph = import_graph(&workspace_root().join(krate).join("src"));
        assert!(graph.len() > 5, "{krate}: found only {graph:?}");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}/src: the modules {cycle:?} import each other in a circle");
        }
    }
}

#[test]
fn a_circle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("config", &["policy"][..]),
        ("policy", &["probes"][..]),
        ("probes", &["config"][..]),
        ("leaf", &[][..]),
    ]
    .into_iter()
    .map(|(module, uses)| (module.to_owned(), uses.iter().map(|name| (*name).to_owned()).collect()))
    .collect();
    assert_eq!(find_cycle(&graph), Some(vec!["config".into(), "policy".into(), "probes".into()]));
    assert_eq!(
        names_after_crate(
            "use crate::{alert::Status, probes::{Probe, spool}, queue};\nlet x = crate::offline::CHECK;"
        ),
        ["alert", "probes", "queue", "offline"]
    );
}
