//! docs/architecture.md matches the code: each room's `crate::…` imports are exactly the rooms
//! its table row allows, and nothing it must never import appears in its files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The library's rooms (the binary, `cli`, reaches the library only as `jwks_operator::…`).
const ROOMS: [&str; 6] = [
    "api",
    "jose",
    "lifecycle",
    "publication",
    "server",
    "controller",
];

struct Row {
    may: BTreeSet<String>,
    never: Vec<String>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rooms table of docs/architecture.md: `| `room` | what | may import | must never import |`.
fn table() -> BTreeMap<String, Row> {
    let text = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // ["", room, what, may, never, ""]
            let room = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            ROOMS.contains(&room).then(|| {
                (
                    room.to_owned(),
                    Row {
                        may: ticked(cells[3]).into_iter().collect(),
                        never: ticked(cells[4]),
                    },
                )
            })
        })
        .collect()
}

/// Every Rust file of a room: `src/<room>.rs` or everything under `src/<room>/`.
fn files(room: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    let dir = root().join("src").join(room);
    if dir.is_dir() {
        walk(&dir, &mut out);
    }
    let file = root().join("src").join(format!("{room}.rs"));
    if file.is_file() {
        out.push(file);
    }
    out
}

/// The code of a file without its `#[cfg(test)]` module (tests may use whatever they need)
/// and without comments.
fn production_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text,
    };
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path in `code`: `use` trees expanded (`use a::{b, c::d}` gives `a::b` and `a::c::d`),
/// and the paths written inline (`kube::Api::namespaced`).
fn paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut statement: Option<String> = None;
    for line in code.lines() {
        let line = line.trim();
        let start = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|head| line.strip_prefix(head));
        let text = match (&mut statement, start) {
            (Some(open), _) => {
                open.push_str(line);
                open.clone()
            }
            (None, Some(rest)) => rest.to_owned(),
            (None, None) => continue,
        };
        match text.split_once(';') {
            Some((tree, _)) => {
                paths.extend(expand(tree));
                statement = None;
            }
            None => statement = Some(text),
        }
    }
    let is_path_char = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    paths.extend(
        code.split(|c: char| !is_path_char(c))
            .filter(|token| token.contains("::"))
            .map(str::to_owned),
    );
    paths
}

/// A `use` tree as the paths it names.
fn expand(tree: &str) -> Vec<String> {
    let tree = without_renames(tree);
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.is_empty())
        .flat_map(|item| expand(&format!("{prefix}{item}")))
        .map(|path| path.trim_end_matches("::self").to_owned())
        .collect()
}

/// A `use` tree without whitespace and without its renames (`a::{B as C, D}` gives `a::{B,D}`).
fn without_renames(tree: &str) -> String {
    let mut out = String::new();
    let mut words = tree.split_whitespace();
    while let Some(word) = words.next() {
        if word == "as" {
            // Keep what follows the new name: `C,` or `C}` leaves `,` or `}`.
            let renamed = words.next().unwrap_or_default();
            out.extend(
                renamed
                    .chars()
                    .filter(|c| !(c.is_alphanumeric() || *c == '_')),
            );
        } else {
            out.push_str(word);
        }
    }
    out
}

/// Whether `path` is `forbidden` or inside it (`kube::Api::all` is in `kube::Api`, `kube::ApiResource` is not).
fn within(path: &str, forbidden: &str) -> bool {
    path == forbidden || path.starts_with(&format!("{forbidden}::"))
}

/// The rooms that `crate::<room>` paths in `code` name, other than `own`.
fn imported_rooms(code: &str, own: &str) -> BTreeSet<String> {
    paths(code)
        .iter()
        .filter_map(|path| path.strip_prefix("crate::"))
        .filter_map(|rest| rest.split("::").next())
        .filter(|room| ROOMS.contains(room) && *room != own)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_room_has_a_row() {
    let table = table();
    for room in ROOMS {
        assert!(
            table.contains_key(room),
            "docs/architecture.md has no row for `{room}`"
        );
        assert!(!files(room).is_empty(), "no source files for room `{room}`");
    }
}

#[test]
fn each_room_imports_exactly_the_rooms_its_row_allows() {
    for (room, row) in table() {
        let mut imported = BTreeSet::new();
        for file in files(&room) {
            let found = imported_rooms(&production_code(&file), &room);
            for other in &found {
                assert!(
                    row.may.contains(other),
                    "{} imports crate::{other}, which docs/architecture.md does not allow `{room}`",
                    file.display()
                );
            }
            imported.extend(found);
        }
        assert_eq!(
            imported, row.may,
            "docs/architecture.md says `{room}` may import {:?}, the code imports {:?}: keep the table exact",
            row.may, imported
        );
    }
}

#[test]
fn no_room_uses_what_it_must_never_import() {
    for (room, row) in table() {
        for file in files(&room) {
            let code = production_code(&file);
            for forbidden in &row.never {
                let hit = if ROOMS.contains(&forbidden.as_str()) {
                    imported_rooms(&code, &room).contains(forbidden)
                } else {
                    paths(&code).iter().any(|path| within(path, forbidden))
                };
                assert!(
                    !hit,
                    "{} uses `{forbidden}`, which `{room}` must never import (docs/architecture.md)",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn the_scanner_reads_grouped_nested_and_inline_paths() {
    let code = "use crate::api::{A, B};\nuse crate::{jose, lifecycle::{plan, ring}};\nlet x = crate::server::X;";
    let rooms: Vec<String> = imported_rooms(code, "controller").into_iter().collect();
    assert_eq!(rooms, ["api", "jose", "lifecycle", "server"]);
    assert!(imported_rooms("use crate::controller::x;", "controller").is_empty());
    let code = "use kube::{Api, Client as C};\nfn f() { kube::runtime::watcher(); }";
    let found = paths(code);
    assert!(found.iter().any(|p| within(p, "kube::Api")), "{found:?}");
    assert!(found.iter().any(|p| within(p, "kube::Client")), "{found:?}");
    assert!(
        found.iter().any(|p| within(p, "kube::runtime")),
        "{found:?}"
    );
    assert!(
        !paths("use kube::ApiResource;")
            .iter()
            .any(|p| within(p, "kube::Api"))
    );
    assert!(
        paths("// we use tokio; here")
            .iter()
            .all(|p| !within(p, "tokio"))
    );
    let multi = "pub use kube::{\n    Api,\n    runtime::watcher,\n};";
    assert!(
        paths(multi).iter().any(|p| p == "kube::runtime::watcher"),
        "{:?}",
        paths(multi)
    );
}
