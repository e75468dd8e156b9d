//! The crate's floors hold: every `crate::` path in `src/` points to a module on the file's own
//! floor or below (as `src/lib.rs` declares them, under its `// Floor N` lines), and no two
//! top-level modules use each other, directly or round a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Each top-level module's floor, read from `lib.rs`.
fn floors() -> BTreeMap<String, u32> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let mut floor = None;
    let mut floors = BTreeMap::new();
    for line in lib.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("// Floor ") {
            floor = rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok());
        } else if let Some(name) = line.strip_prefix("pub mod ").and_then(|l| l.strip_suffix(';')) {
            let floor = floor.unwrap_or_else(|| panic!("`pub mod {name}` in lib.rs is under no `// Floor N` line"));
            floors.insert(name.to_owned(), floor);
        }
    }
    floors
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (doc links name modules without using them).
fn code(text: &str) -> String {
    text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The top-level modules a file's code names as `crate::<module>`.
fn used(text: &str) -> BTreeSet<String> {
    let code = code(text);
    code.match_indices("crate::")
        .filter(|(at, _)| !code[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$'))
        .map(|(at, _)| {
            code[at + "crate::".len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// The top-level module a file belongs to (`src/call/session.rs` -> `call`).
fn owner(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src()).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

#[test]
fn every_import_points_down_the_floors() {
    let floors = floors();
    assert!(floors.len() > 10, "lib.rs declares the modules floor by floor: {floors:?}");
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let Some(owner) = owner(file) else { continue };
        let mine = *floors.get(&owner).unwrap_or_else(|| panic!("{} is in no floor of lib.rs", file.display()));
        for module in used(&std::fs::read_to_string(file).expect("read")) {
            let theirs = *floors.get(&module).unwrap_or_else(|| panic!("{}: crate::{module} unknown", file.display()));
            if theirs > mine {
                wrong.push(format!(
                    "{} (floor {mine}) uses crate::{module} (floor {theirs})",
                    file.strip_prefix(src()).expect("in src").display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "imports that point up:\n{}", wrong.join("\n"));
}

#[test]
fn no_two_modules_use_each_other() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(owner) = owner(file) else { continue };
        let uses = used(&std::fs::read_to_string(file).expect("read"));
        edges.entry(owner.clone()).or_default().extend(uses.into_iter().filter(|m| *m != owner));
    }
    // A circle exists when some module reaches itself.
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Vec<String>> = vec![vec![start.clone()]];
        while let Some(path) = stack.pop() {
            let last = path.last().expect("non-empty");
            for next in edges.get(last).into_iter().flatten() {
                if next == start {
                    panic!("import circle: {} -> {start}", path.join(" -> "));
                }
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push(longer);
                }
            }
        }
    }
}

#[test]
fn the_checker_sees_imports_and_ignores_comments() {
    let text = "use crate::store::Store;\n/// see [`crate::app`]\nlet x = crate::events::now(); // crate::web\n";
    assert_eq!(used(text), ["events", "store"].map(String::from).into());
}
