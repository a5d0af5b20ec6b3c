//! The code's shape, checked on every run: no import cycles between modules, no source file
//! over 600 lines, `unsafe` only in `driftgate-sys`.
//!
//! Module edges are read from paths in the code (`crate::a::b`, `super::x`, `self::y`, a child
//! module's name in its parent, with `{...}` groups expanded), comments and `#[cfg(test)]`
//! modules left out. An edge goes to the deepest module a path names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The crates' source roots, checked each on its own.
const CRATES: &[&str] = &[
    "src",
    "crates/driftgate-sys/src",
    "crates/driftgate-core/src",
    "crates/driftgate-image/src",
    "crates/driftgate-bench/src",
    "crates/driftgate-bpf/src",
];
const MAX_LINES: usize = 600;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if !p.ends_with("target") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` and `main.rs` are the crate root ("").
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code without comments and without `#[cfg(test)] mod tests { ... }`.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let code = match line.find("//") {
            // Not inside a string literal (a quote before the slashes): a good enough test here.
            Some(i) if line[..i].matches('"').count() % 2 == 0 => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every `a::b::c` path in `code`, with `{...}` groups expanded (nested too).
fn paths_in(code: &str) -> Vec<Vec<String>> {
    fn walk(prefix: &[String], s: &str, out: &mut Vec<Vec<String>>) {
        // Split the top level of a group on commas.
        let mut depth = 0;
        let mut start = 0;
        let bytes = s.as_bytes();
        let mut items = Vec::new();
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'{' => depth += 1,
                b'}' => depth -= 1,
                b',' if depth == 0 => {
                    items.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&s[start..]);
        for item in items {
            let item = item.trim();
            let (head, group) = match item.find("::{") {
                Some(i) if item.ends_with('}') => (&item[..i], Some(&item[i + 3..item.len() - 1])),
                _ => (item.split(" as ").next().unwrap_or(item), None),
            };
            let mut p: Vec<String> = prefix.to_vec();
            p.extend(head.split("::").map(|x| x.trim().to_owned()).filter(|x| !x.is_empty()));
            match group {
                Some(g) => walk(&p, g, out),
                None => out.push(p),
            }
        }
    }
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        // A path starts at an identifier not preceded by an identifier character or `::`.
        let starts = is_ident(chars[i]) && (i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':'));
        if !starts {
            i += 1;
            continue;
        }
        let begin = i;
        let mut depth = 0usize;
        let mut j = i;
        while j < chars.len() {
            let c = chars[j];
            if is_ident(c) || (c == ':' && chars.get(j + 1) == Some(&':')) {
                j += if c == ':' { 2 } else { 1 };
            } else if c == '{' && j >= 2 && chars[j - 1] == ':' {
                depth += 1;
                j += 1;
            } else if depth > 0 {
                if c == '}' {
                    depth -= 1;
                }
                j += 1;
            } else {
                break;
            }
        }
        let text: String = chars[begin..j].iter().collect();
        if text.contains("::") {
            walk(&[], &text, &mut out);
        }
        i = j.max(i + 1);
    }
    out
}

/// The module graph of one crate: module -> modules it names.
fn graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let modules: BTreeMap<String, PathBuf> = files.iter().map(|f| (module_of(root, f), f.clone())).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, file) in &modules {
        let here: Vec<&str> = if name.is_empty() { Vec::new() } else { name.split("::").collect() };
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for path in paths_in(&code) {
            let mut target: Vec<String> = match path[0].as_str() {
                "crate" => path[1..].to_vec(),
                "super" => {
                    let ups = path.iter().take_while(|s| *s == "super").count();
                    let mut base: Vec<String> = here.iter().map(|s| s.to_string()).collect();
                    base.truncate(base.len().saturating_sub(ups));
                    base.extend(path[ups..].iter().cloned());
                    base
                }
                "self" => here.iter().map(|s| s.to_string()).chain(path[1..].iter().cloned()).collect(),
                first => {
                    // A child module named from its parent.
                    let mut child: Vec<String> = here.iter().map(|s| s.to_string()).collect();
                    child.push(first.to_owned());
                    if !modules.contains_key(&child.join("::")) {
                        continue;
                    }
                    child.extend(path[1..].iter().cloned());
                    child
                }
            };
            while !target.is_empty() && !modules.contains_key(&target.join("::")) {
                target.pop();
            }
            let t = target.join("::");
            if !target.is_empty() && t != *name {
                g.entry(name.clone()).or_default().insert(t);
            }
        }
        g.entry(name.clone()).or_default();
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_import_cycles_between_modules() {
    for c in CRATES {
        let g = graph(&Path::new(ROOT).join(c));
        assert!(g.len() >= 3, "{c}: no modules found");
        let found = cycles(&g);
        let edges: Vec<String> = found
            .iter()
            .flat_map(|comp| {
                let g = &g;
                comp.iter().flat_map(move |a| {
                    g[a].iter().filter(|b| comp.contains(b)).map(move |b| format!("{a} -> {b}"))
                })
            })
            .collect();
        assert!(found.is_empty(), "{c}: modules that import each other: {found:?}; edges: {edges:?}");
    }
}

#[test]
fn the_checker_finds_cycles_and_reads_grouped_imports() {
    let paths = paths_in("use crate::{a::{b, c as d}, e};\nlet x = super::f::g(1);");
    let want: Vec<Vec<String>> =
        [&["crate", "a", "b"][..], &["crate", "a", "c"], &["crate", "e"], &["super", "f", "g"]]
            .iter()
            .map(|p| p.iter().map(|s| s.to_string()).collect())
            .collect();
    assert_eq!(paths, want);
    let g: BTreeMap<String, BTreeSet<String>> =
        [("a", &["b"][..]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
    assert_eq!(cycles(&g), vec![vec!["a".to_owned(), "b".into(), "c".into()]]);
    assert_eq!(code_of("x // crate::y\n#[cfg(test)]\nmod tests {\n crate::z\n}"), "x \n");
}

#[test]
fn no_source_file_over_600_lines() {
    let mut files = Vec::new();
    for dir in ["src", "crates", "tests", "benches", "fuzz/fuzz_targets", "fuzz/src"] {
        rust_files(&Path::new(ROOT).join(dir), &mut files);
    }
    assert!(files.len() > 50);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.strip_prefix(ROOT).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "split these: {long:?}");
}

#[test]
fn unsafe_code_only_in_the_sys_crate() {
    let mut files = Vec::new();
    for dir in ["src", "crates", "tests", "benches"] {
        rust_files(&Path::new(ROOT).join(dir), &mut files);
    }
    // The two crates that talk to the kernel: system calls (driftgate-sys), and the BPF LSM
    // program's loader and maps (driftgate-bpf). Both deny undocumented unsafe blocks.
    let allowed =
        [Path::new(ROOT).join("crates/driftgate-sys"), Path::new(ROOT).join("crates/driftgate-bpf")];
    for krate in &allowed {
        let text = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
        assert!(
            text.contains("undocumented_unsafe_blocks = \"deny\""),
            "{} documents every unsafe block",
            krate.display()
        );
    }
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| {
            !allowed.iter().any(|a| f.starts_with(a)) && !f.ends_with("tests/offline/architecture.rs")
        })
        .filter(|f| {
            let code = code_of(&std::fs::read_to_string(f).unwrap());
            code.split(|c: char| !is_ident(c)).any(|w| w == "unsafe")
        })
        .map(|f| f.strip_prefix(ROOT).unwrap().display().to_string())
        .collect();
    assert!(offenders.is_empty(), "unsafe outside driftgate-sys and driftgate-bpf: {offenders:?}");
    // And the compiler holds every other crate to it.
    for manifest in [
        "Cargo.toml",
        "crates/driftgate-core/Cargo.toml",
        "crates/driftgate-image/Cargo.toml",
        "crates/driftgate-bench/Cargo.toml",
    ] {
        let text = std::fs::read_to_string(Path::new(ROOT).join(manifest)).unwrap();
        assert!(text.contains("[lints]\nworkspace = true"), "{manifest} takes the workspace lints");
    }
    let ws = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    assert!(ws.contains("unsafe_code = \"forbid\""));
}

/// The crates driftgate-core may depend on: data, formats, hashing, logging. None makes a
/// system call of its own, reads archives or draws on a terminal.
const PURE: &[&str] = &[
    "sha2",
    "serde",
    "serde_json",
    "toml",
    "thiserror",
    "tracing",
    "globset",
    "arc-swap",
    "base64",
    "time",
    "hex",
    "humantime",
];

/// Dependencies of `manifest` (a Cargo.toml's text) that are not in `allowed`.
fn impure(manifest: &str, allowed: &[&str]) -> Vec<String> {
    let t: toml::Table = manifest.parse().unwrap();
    let deps = t.get("dependencies").and_then(|d| d.as_table()).cloned().unwrap_or_default();
    deps.keys().filter(|k| !allowed.contains(&k.as_str())).cloned().collect()
}

#[test]
fn the_core_depends_on_nothing_that_touches_the_system() {
    let root = Path::new(ROOT).join("crates/driftgate-core");
    let offenders = impure(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap(), PURE);
    assert!(
        offenders.is_empty(),
        "driftgate-core depends on {offenders:?}: system calls go in driftgate-sys, image and layer I/O in driftgate-image"
    );
    // The checker sees a dependency that does I/O.
    assert_eq!(impure("[dependencies]\nsha2 = \"1\"\nnix = \"1\"\n", PURE), ["nix"]);
    // Nor does its code reach for another driftgate crate or the system's other doors.
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for f in files {
        let code = code_of(&std::fs::read_to_string(&f).unwrap());
        for door in [
            "driftgate_sys",
            "driftgate_image",
            "std::process",
            "std::net::Tcp",
            "std::net::Udp",
            "std::os::unix::net",
            "std::os::fd",
        ] {
            assert!(!code.contains(door), "{} uses {door}", f.display());
        }
    }
}
