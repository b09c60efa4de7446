//! Tidy: the workspace's architecture rules (crate layering, who may use burn and hyper,
//! `//!` headers), checked from `cargo metadata` so breaking one fails `cargo test`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Each workspace crate's layer: a crate may depend only on crates in strictly lower layers.
const LAYERS: &[(&str, u32)] = &[
    ("kiln-hub", 0),
    ("kiln-gguf", 0),
    ("kiln-api-types", 1),
    ("kiln-media", 1),
    ("kiln-tokenizer", 2),
    ("kiln-runtime", 3),
    ("kiln-scheduler", 4),
    ("kiln-gateway", 5),
    ("kiln-server", 6),
    ("kiln-benches", 6),
    ("kiln-fuzz", 6),
    ("xtask", 7),
];

/// The crate any workspace crate may take as a dev-dependency, whatever the layers say.
const DEV_ANYWHERE: &str = "kiln-hub";

/// burn (and cubecl under it) is the runtime's business; everything else stays backend-free.
const BURN_ALLOWED: &[&str] = &["kiln-runtime", "kiln-server"];
/// HTTP plumbing belongs to the gateway; the rest of the stack must not grow an HTTP dependency.
/// xtask is tooling, not the served stack: bench-serve's load generator is an HTTP client.
const HYPER_ALLOWED: &[&str] = &["kiln-gateway", "kiln-server", "xtask"];

fn is_burn(package: &str) -> bool {
    package == "burn" || package.starts_with("burn-") || package.starts_with("cubecl")
}

fn is_hyper(package: &str) -> bool {
    package == "hyper" || package.starts_with("hyper-") || package == "http-body-util"
}

/// A workspace crate as far as these rules care: its name and its direct dependencies.
#[derive(Debug)]
struct Crate {
    name: String,
    deps: Vec<Dep>,
}

#[derive(Debug)]
struct Dep {
    /// The package name (not the `package = ` rename), which is what the rules are about.
    name: String,
    kind: &'static str,
}

/// The workspace members of `cargo metadata` output, with their declared dependencies.
fn workspace_crates(metadata: &Value) -> Result<Vec<Crate>, String> {
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .ok_or("cargo metadata has no `workspace_members` array")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let packages = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata has no `packages` array")?;
    let mut crates = Vec::new();
    for package in packages {
        let id = package["id"].as_str().ok_or("a package without an `id`")?;
        if !members.contains(&id) {
            continue;
        }
        let name = package["name"]
            .as_str()
            .ok_or("a package without a `name`")?
            .to_owned();
        let deps = package["dependencies"]
            .as_array()
            .ok_or_else(|| format!("package `{name}` has no `dependencies` array"))?
            .iter()
            .map(|dep| {
                let dep_name = dep["name"]
                    .as_str()
                    .ok_or_else(|| format!("a dependency of `{name}` has no name"))?;
                let kind = match dep["kind"].as_str() {
                    None => "normal",
                    Some("dev") => "dev",
                    Some("build") => "build",
                    Some(other) => {
                        return Err(format!("unknown dependency kind `{other}` in `{name}`"));
                    }
                };
                Ok(Dep {
                    name: dep_name.to_owned(),
                    kind,
                })
            })
            .collect::<Result<_, String>>()?;
        crates.push(Crate { name, deps });
    }
    if crates.is_empty() {
        return Err("cargo metadata lists no workspace members".to_owned());
    }
    Ok(crates)
}

fn layer_of(name: &str) -> Option<u32> {
    LAYERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, layer)| *layer)
}

/// Every dependency between workspace crates must point to a strictly lower layer.
fn check_layering(crates: &[Crate]) -> Vec<String> {
    let mut violations = Vec::new();
    for krate in crates {
        let Some(layer) = layer_of(&krate.name) else {
            violations.push(format!(
                "workspace crate `{}` has no layer; add it to the layer table in tidy.rs",
                krate.name
            ));
            continue;
        };
        for dep in &krate.deps {
            // Only dependencies on workspace crates are layered; crates.io ones are not.
            if !crates.iter().any(|c| c.name == dep.name) {
                continue;
            }
            // Tests everywhere locate the model through kiln-hub, including kiln-gguf's,
            // which shares its layer.
            if dep.kind == "dev" && dep.name == DEV_ANYWHERE {
                continue;
            }
            // An unknown dependency target is reported once, as a crate, above.
            let Some(dep_layer) = layer_of(&dep.name) else {
                continue;
            };
            if dep_layer >= layer {
                violations.push(format!(
                    "`{}` (layer {layer}) has a {} dependency on `{}` (layer {dep_layer}); \
                     a crate may only depend on crates in strictly lower layers",
                    krate.name, dep.kind, dep.name
                ));
            }
        }
    }
    violations
}

/// Only the `allowed` crates may depend directly on packages that `matches`.
fn check_confined(
    crates: &[Crate],
    what: &str,
    matches: fn(&str) -> bool,
    allowed: &[&str],
) -> Vec<String> {
    let mut violations = Vec::new();
    for krate in crates
        .iter()
        .filter(|c| !allowed.contains(&c.name.as_str()))
    {
        for dep in krate.deps.iter().filter(|d| matches(&d.name)) {
            violations.push(format!(
                "`{}` has a {} dependency on `{}`; only {} may depend on {what}",
                krate.name,
                dep.kind,
                dep.name,
                allowed
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
        }
    }
    violations
}

fn check_burn(crates: &[Crate]) -> Vec<String> {
    check_confined(crates, "burn/cubecl", is_burn, BURN_ALLOWED)
}

fn check_hyper(crates: &[Crate]) -> Vec<String> {
    check_confined(crates, "hyper", is_hyper, HYPER_ALLOWED)
}

/// Why a source file's header is wrong, if it is: its first non-empty line must be a `//!` doc.
fn check_header(contents: &str) -> Option<&'static str> {
    match contents.lines().find(|line| !line.trim().is_empty()) {
        None => Some("is empty; it must start with a `//!` line saying what it is for"),
        Some(line) if line.trim_start().starts_with("//!") => None,
        Some(_) => Some("does not start with a `//!` line saying what it is for"),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if path.is_dir() {
            // Build output and hidden dirs (editor state, .git) are not project sources.
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn workspace_root() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .parent()
    .expect("xtask is inside the workspace")
    .to_path_buf()
}

fn cargo_metadata() -> Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    // --no-deps: the rules are about what workspace crates declare, and this way the test
    // neither resolves nor downloads anything, and works while sibling crates do not compile.
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace_root())
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata printed JSON")
}

fn report(rule: &str, violations: &[String]) {
    assert!(
        violations.is_empty(),
        "{rule} violated:\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn workspace_crates_respect_layers() {
    let crates = workspace_crates(&cargo_metadata()).unwrap();
    report("layering", &check_layering(&crates));
}

#[test]
fn burn_and_hyper_stay_where_they_belong() {
    let crates = workspace_crates(&cargo_metadata()).unwrap();
    let mut violations = check_burn(&crates);
    violations.extend(check_hyper(&crates));
    report("dependency confinement", &violations);
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("xtask"), &mut files);
    assert!(
        !files.is_empty(),
        "found no .rs files under {}",
        root.display()
    );
    let violations: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let contents = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let why = check_header(&contents)?;
            Some(format!(
                "{} {why}",
                path.strip_prefix(&root).unwrap_or(path).display()
            ))
        })
        .collect();
    report("module docs", &violations);
}

// The rules themselves, on hand-made metadata, so a rule that silently accepts everything
// is caught too.

/// A hand-made crate: `(name, [(dependency, kind)])`, kind as cargo writes it (`None` = normal).
type FakeCrate<'a> = (&'a str, &'a [(&'a str, Option<&'a str>)]);

/// Metadata in `cargo metadata` shape.
fn fake_metadata(crates: &[FakeCrate<'_>]) -> Value {
    let packages: Vec<Value> = crates
        .iter()
        .map(|(name, deps)| {
            serde_json::json!({
                "name": name,
                "id": format!("path+file:///ws/{name}#0.1.0"),
                "dependencies": deps
                    .iter()
                    .map(|(dep, kind)| serde_json::json!({ "name": dep, "kind": kind }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let members: Vec<String> = crates
        .iter()
        .map(|(name, _)| format!("path+file:///ws/{name}#0.1.0"))
        .collect();
    serde_json::json!({ "packages": packages, "workspace_members": members })
}

fn fake(crates: &[FakeCrate<'_>]) -> Vec<Crate> {
    workspace_crates(&fake_metadata(crates)).expect("hand-made metadata parses")
}

#[test]
fn layering_accepts_downward_dependencies() {
    let crates = fake(&[
        ("kiln-hub", &[("sha2", None)]),
        ("kiln-gguf", &[("kiln-hub", Some("dev"))]),
        (
            "kiln-tokenizer",
            &[("kiln-api-types", None), ("kiln-hub", Some("dev"))],
        ),
        ("kiln-api-types", &[]),
        (
            "kiln-server",
            &[("kiln-gateway", None), ("kiln-runtime", Some("build"))],
        ),
        ("kiln-gateway", &[]),
        ("kiln-runtime", &[]),
    ]);
    assert_eq!(check_layering(&crates), Vec::<String>::new());
}

#[test]
fn layering_rejects_upward_dependency() {
    let crates = fake(&[
        ("kiln-tokenizer", &[("kiln-runtime", None)]),
        ("kiln-runtime", &[]),
    ]);
    assert_eq!(
        check_layering(&crates),
        [
            "`kiln-tokenizer` (layer 2) has a normal dependency on `kiln-runtime` (layer 3); \
          a crate may only depend on crates in strictly lower layers"
        ]
    );
}

#[test]
fn layering_rejects_same_layer_and_dev_dependencies() {
    let crates = fake(&[
        ("kiln-gguf", &[("kiln-hub", None)]),
        ("kiln-hub", &[]),
        ("kiln-api-types", &[("kiln-scheduler", Some("dev"))]),
        ("kiln-scheduler", &[]),
    ]);
    let violations = check_layering(&crates);
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(
        violations[0].starts_with("`kiln-gguf` (layer 0) has a normal dependency on `kiln-hub`")
    );
    assert!(
        violations[1]
            .starts_with("`kiln-api-types` (layer 1) has a dev dependency on `kiln-scheduler`")
    );
}

#[test]
fn only_dev_dependencies_on_hub_skip_the_layers() {
    let crates = fake(&[
        ("kiln-gguf", &[("kiln-hub", Some("dev"))]),
        ("kiln-hub", &[("kiln-gguf", Some("dev"))]),
    ]);
    assert_eq!(
        check_layering(&crates),
        [
            "`kiln-hub` (layer 0) has a dev dependency on `kiln-gguf` (layer 0); \
          a crate may only depend on crates in strictly lower layers"
        ]
    );
}

#[test]
fn layering_rejects_unknown_workspace_crate() {
    let crates = fake(&[("kiln-mystery", &[("kiln-hub", None)]), ("kiln-hub", &[])]);
    assert_eq!(
        check_layering(&crates),
        ["workspace crate `kiln-mystery` has no layer; add it to the layer table in tidy.rs"]
    );
}

#[test]
fn non_members_are_ignored() {
    let mut metadata = fake_metadata(&[("kiln-hub", &[])]);
    metadata["packages"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "name": "serde", "id": "registry+serde", "dependencies": [] }));
    let crates = workspace_crates(&metadata).unwrap();
    assert_eq!(
        crates.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["kiln-hub"]
    );
}

#[test]
fn burn_is_confined_to_runtime_and_server() {
    let crates = fake(&[
        ("kiln-runtime", &[("burn", None), ("cubecl-wgpu", None)]),
        ("kiln-server", &[("burn-wgpu", None)]),
        ("kiln-scheduler", &[("burn-tensor", None)]),
        (
            "kiln-tokenizer",
            &[("cubecl", Some("dev")), ("burnish", None)],
        ),
    ]);
    assert_eq!(
        check_burn(&crates),
        [
            "`kiln-scheduler` has a normal dependency on `burn-tensor`; only `kiln-runtime` and `kiln-server` may depend on burn/cubecl",
            "`kiln-tokenizer` has a dev dependency on `cubecl`; only `kiln-runtime` and `kiln-server` may depend on burn/cubecl",
        ]
    );
}

#[test]
fn hyper_is_confined_to_gateway_server_and_xtask() {
    let crates = fake(&[
        (
            "kiln-gateway",
            &[
                ("hyper", None),
                ("hyper-util", None),
                ("http-body-util", None),
            ],
        ),
        ("kiln-server", &[("hyper", None)]),
        ("kiln-scheduler", &[("hyper-util", None), ("http", None)]),
        ("kiln-runtime", &[("http-body-util", Some("build"))]),
    ]);
    assert_eq!(
        check_hyper(&crates),
        [
            "`kiln-scheduler` has a normal dependency on `hyper-util`; only `kiln-gateway` and `kiln-server` and `xtask` may depend on hyper",
            "`kiln-runtime` has a build dependency on `http-body-util`; only `kiln-gateway` and `kiln-server` and `xtask` may depend on hyper",
        ]
    );
}

#[test]
fn header_check() {
    assert_eq!(check_header("//! Does things.\nfn main() {}\n"), None);
    assert_eq!(check_header("\n\n//! After blank lines.\n"), None);
    assert!(check_header("// A plain comment.\n//! Too late.\n").is_some());
    assert!(check_header("/// An item doc.\nfn f() {}\n").is_some());
    assert!(check_header("use std::io;\n").is_some());
    assert!(check_header("\n \n").is_some());
}
