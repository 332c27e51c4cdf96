//! The library's modules form layers: no module imports (`crate::x`) one that imports it back,
//! directly or through others. Checked on the source text, so a new cycle fails a test instead
//! of waiting for a review (`docs/ARCHITECTURE.md`, code map).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules its non-test code names with `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![root.clone()];
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let rel = p
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let Some(rel) = rel.strip_suffix(".rs") else {
            continue;
        };
        let top = rel.split('/').next().unwrap().to_string();
        if ["lib", "tests", "module_graph"].contains(&top.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let deps = g.entry(top.clone()).or_default();
        for part in code.split("crate::").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name != top && !name.is_empty() {
                deps.insert(name);
            }
        }
    }
    g
}

fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        u: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == u) {
            let mut c = path[i..].to_vec();
            c.push(u.to_string());
            return Some(c);
        }
        if !done.insert(u.to_string()) {
            return None;
        }
        path.push(u.to_string());
        for v in g
            .get(u)
            .into_iter()
            .flatten()
            .filter(|v| g.contains_key(*v))
        {
            if let Some(c) = visit(v, g, done, path) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|u| visit(u, g, &mut done, &mut Vec::new()))
}

#[test]
fn modules_import_each_other_in_one_direction() {
    let g = graph();
    assert!(g.contains_key("session") && g.contains_key("txn"), "{g:?}");
    assert_eq!(find_cycle(&g), None, "import cycle among kvshm's modules");
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert!(find_cycle(&g).is_some());
}
