//! Generates a `headscale.v1` gRPC client from the wire contract itself,
//! `testdata/docs/headscale-v1-api.md` (a copy of the shared contract, kept in step by
//! `scripts/check-testdata`), not from this repository's `proto/`, so that the API tests prove
//! wire compatibility with what Headscale v0.29 clients speak.
//!
//! The contract's ```proto block lists the files one after another, each introduced by a
//! `=== proto/headscale/v1/<name>.proto` line, without the `syntax`, `package` and `import`
//! lines. This script writes each file out with those lines added (imports computed from the
//! names each file uses), adds Google's `google/api/{annotations,http}.proto` for the
//! `google.api.http` options, compiles them with protox and generates the client with
//! tonic-prost-build. It also writes the compiled descriptor set
//! (`contract_descriptor.bin` in `OUT_DIR`), so tests can compare messages and REST routes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where the contract lives, relative to this crate.
const CONTRACT: &str = "../testdata/docs/headscale-v1-api.md";
/// Google's HTTP annotation protos (not part of the contract, which omits imports).
const GOOGLE_API: &[&str] = &["google/api/annotations.proto", "google/api/http.proto"];

type Error = Box<dyn std::error::Error>;

/// The contract's files: path (from `proto/`) to body.
fn split_contract(markdown: &str) -> Result<BTreeMap<String, String>, Error> {
    let start = markdown.find("```proto").ok_or("the contract has no ```proto block")?;
    let block = &markdown[start + "```proto".len()..];
    let block = &block[..block.find("```").ok_or("the ```proto block is not closed")?];
    let mut files = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in block.lines() {
        if let Some(path) = line.strip_prefix("=== ") {
            if let Some((p, body)) = current.take() {
                files.insert(p, body);
            }
            let path = path.trim().strip_prefix("proto/").ok_or_else(|| format!("unexpected file marker {line:?}"))?;
            current = Some((path.to_string(), String::new()));
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    if let Some((p, body)) = current {
        files.insert(p, body);
    }
    if files.is_empty() {
        return Err("the ```proto block has no `=== path` markers".into());
    }
    Ok(files)
}

/// The top-level message and enum names a file defines.
fn defined_names(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.strip_prefix("message ").or_else(|| l.strip_prefix("enum ")))
        .filter_map(|rest| rest.split(|c: char| !c.is_alphanumeric() && c != '_').next())
        .map(str::to_string)
        .collect()
}

/// Every identifier-like word in a file.
fn words(body: &str) -> BTreeSet<&str> {
    body.split(|c: char| !c.is_alphanumeric() && c != '_' && c != '.').filter(|w| !w.is_empty()).collect()
}

/// A contract file made compilable: syntax, package and the imports it needs.
fn complete(path: &str, body: &str, defined: &BTreeMap<String, BTreeSet<String>>) -> String {
    let used = words(body);
    let mut imports = BTreeSet::new();
    if used.contains("google.protobuf.Timestamp") {
        imports.insert("google/protobuf/timestamp.proto".to_string());
    }
    if used.contains("google.api.http") {
        imports.insert("google/api/annotations.proto".to_string());
    }
    for (other, names) in defined {
        if other != path && names.iter().any(|n| used.contains(n.as_str())) {
            imports.insert(other.clone());
        }
    }
    let mut text = String::from("syntax = \"proto3\";\npackage headscale.v1;\n");
    for import in imports {
        text.push_str(&format!("import \"{import}\";\n"));
    }
    text.push_str(body);
    text
}

fn main() -> Result<(), Error> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let contract = manifest.join(CONTRACT);
    println!("cargo:rerun-if-changed={}", contract.display());
    let markdown = std::fs::read_to_string(&contract)
        .map_err(|e| format!("cannot read the API contract {}: {e}", contract.display()))?;
    let files = split_contract(&markdown)?;
    let defined: BTreeMap<String, BTreeSet<String>> =
        files.iter().map(|(p, b)| (p.clone(), defined_names(b))).collect();

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let root = out.join("contract");
    for (path, body) in &files {
        write(&root.join(path), &complete(path, body, &defined))?;
    }
    let google = manifest.join("../proto");
    for file in GOOGLE_API {
        println!("cargo:rerun-if-changed={}", google.join(file).display());
        write(&root.join(file), &std::fs::read_to_string(google.join(file))?)?;
    }

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true);
    compiler.open_files(files.keys())?;
    std::fs::write(out.join("contract_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    Ok(std::fs::write(path, text)?)
}
