//! The crate's floor plan, read from its own `use` lines: rooms (the top-level modules of `src/`)
//! import only rooms on a lower floor, and no file imports one that imports it back. A change that
//! adds an upward or circular import fails here, so the plan cannot drift.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The floors, lowest first. The core (floors 0 to 4) imports no tower, no axum extractor and no
/// WebSocket code; the surfaces (5 and up) reach it through `handoff`.
const FLOORS: &[&[&str]] = &[
    &["error", "credential", "head", "rejection"],
    &["source", "origin", "lease", "listener", "limit"],
    &["sockets"],
    &["verify"],
    &["guard"],
    &["authz"],
    &["handoff", "redact", "client"],
    &["layer", "ws"],
    &["extract"],
    &["future", "fuzzing", "lib"],
];

/// Crates a core room must not import.
const SURFACE_CRATES: &[&str] = &["tower", "tower_layer", "tower_service", "tokio_tungstenite"];

fn floor(room: &str) -> usize {
    FLOORS
        .iter()
        .position(|rooms| rooms.contains(&room))
        .unwrap_or_else(|| panic!("room `{room}` is on no floor: add it to FLOORS"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file below `src/` (`["guard", "builder"]`; `lib.rs` is `["lib"]`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("below src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The `use` statements of a file, joined over their lines, without comments and without
/// re-exports (`pub use`, `pub(crate) use`: a room's face, not what it needs).
fn use_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current: Option<String> = None;
    // Unit tests at the bottom of a file are not part of the plan.
    let code = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    for line in code.lines() {
        let line = line.trim();
        if line.starts_with("//") {
            continue;
        }
        if let Some(statement) = &mut current {
            statement.push_str(line);
        } else if line.starts_with("use ") {
            current = Some(line.to_owned());
        }
        if current.as_ref().is_some_and(|s| s.ends_with(';')) {
            statements.extend(current.take());
        }
    }
    statements
}

/// The modules a `use` statement names, resolved from the importing module: `crate::a::b`, and
/// `super::x` relative to `module`.
fn imported_modules(statement: &str, module: &[String]) -> Vec<Vec<String>> {
    let body = statement.trim_start_matches("use ").trim_end_matches(';');
    let mut found = Vec::new();
    let resolve = |path: &str| -> Option<Vec<String>> {
        let mut parts = path.split("::").filter(|p| !p.is_empty());
        let mut resolved: Vec<String> = match parts.next()? {
            "crate" => Vec::new(),
            "super" => {
                // From a file's module, `super` is its parent (a `mod.rs` is its folder's module).
                let mut parent = module.to_vec();
                parent.pop()?;
                parent
            }
            _ => return None,
        };
        for part in parts {
            if part == "super" {
                resolved.pop()?;
                continue;
            }
            let name: String = part
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() || name.starts_with(|c: char| c.is_uppercase()) {
                break;
            }
            resolved.push(name);
            if !part.chars().all(|c| c.is_alphanumeric() || c == '_') {
                break;
            }
        }
        Some(resolved)
    };
    // `use crate::{a::X, b::{Y, Z}}` and `use super::{x, y}`: expand one level of braces.
    if let Some((prefix, rest)) = body.split_once('{') {
        for item in rest.trim_end_matches('}').split(',') {
            let item = item.trim().trim_end_matches('}');
            let head = item.split(['{', ' ']).next().unwrap_or_default();
            if let Some(path) = resolve(&format!("{prefix}{head}")) {
                found.push(path);
            }
        }
    } else if let Some(path) = resolve(body) {
        found.push(path);
    }
    found
}

#[test]
fn rooms_import_only_rooms_below_them_and_no_file_imports_in_a_circle() {
    // The crate's `src/`, beside this package (`integration/`).
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate's directory")
        .join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_path(&src, f), f.clone()))
        .collect();
    let mut upward = Vec::new();
    let mut surface_in_core = Vec::new();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("read");
        let room = module[0].as_str();
        for statement in use_statements(&text) {
            let crate_name = statement
                .trim_start_matches("use ")
                .split("::")
                .next()
                .unwrap_or_default();
            if floor(room) <= floor("guard") && SURFACE_CRATES.contains(&crate_name) {
                surface_in_core.push(format!("{}: {statement}", file.display()));
            }
            if floor(room) <= floor("guard") && statement.contains("axum::extract") {
                let websocket_types = statement.contains("extract::ws");
                if websocket_types || statement.contains("FromRequest") {
                    surface_in_core.push(format!("{}: {statement}", file.display()));
                }
            }
            for target in imported_modules(&statement, module) {
                let Some(target_room) = target.first() else {
                    continue;
                };
                let known_room = modules.keys().any(|m| m.first() == Some(target_room));
                if !known_room {
                    continue;
                }
                if target_room != room && floor(target_room) >= floor(room) {
                    upward.push(format!("{}: {statement}", file.display()));
                }
                // The file that defines the imported module (its longest known prefix).
                let defining = (1..=target.len())
                    .rev()
                    .map(|n| target[..n].to_vec())
                    .find(|prefix| modules.contains_key(prefix));
                if let Some(defining) = defining.filter(|d| d != module) {
                    edges.entry(module.clone()).or_default().insert(defining);
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a lower room to a higher one (or across one floor):\n{}",
        upward.join("\n")
    );
    assert!(
        surface_in_core.is_empty(),
        "the core imports surface code:\n{}",
        surface_in_core.join("\n")
    );
    // No circle among files: a depth-first search over the import edges.
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, bool>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        match state.get(node) {
            Some(true) => return None,
            Some(false) => {
                let start = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut circle = stack[start..].to_vec();
                circle.push(node.clone());
                return Some(circle);
            }
            None => {}
        }
        state.insert(node.clone(), false);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, state, stack) {
                return Some(circle);
            }
        }
        stack.pop();
        state.insert(node.clone(), true);
        None
    }
    let mut state = BTreeMap::new();
    for module in modules.keys() {
        let circle = visit(module, &edges, &mut state, &mut Vec::new());
        assert!(
            circle.is_none(),
            "files import each other in a circle: {:?}",
            circle.map(|c| c.iter().map(|m| m.join("::")).collect::<Vec<_>>())
        );
    }
    // The check reads what it should: the layer imports the hand-off, the guard imports sources.
    let has_edge = |from: &[&str], to: &[&str]| {
        let from: Vec<String> = from.iter().map(|s| (*s).to_owned()).collect();
        let to: Vec<String> = to.iter().map(|s| (*s).to_owned()).collect();
        edges.get(&from).is_some_and(|e| e.contains(&to))
    };
    assert!(has_edge(&["layer"], &["handoff"]));
    assert!(has_edge(&["guard"], &["source"]));
    assert!(has_edge(&["guard", "builder"], &["guard"]));
}
