//! Writing and building plugin crates: the logic behind `agent plugin new NAME`
//! and `agent plugin build [DIR]`.
//!
//! `new` writes a complete Rust guest crate for `wasm32-wasip2`: `Cargo.toml`,
//! `src/lib.rs` with one example tool, the WIT interface (embedded in this
//! binary, so the plugin is built against exactly the interface this agent
//! links), `manifest.yaml` and `.gitignore`. `build` runs cargo there, fills the
//! manifest's `sha256`, and copies `<name>.wasm` beside `manifest.yaml`, which
//! is the layout `agent plugin install DIR` reads.
//!
//! Decisions:
//! - The crate is named after the plugin, so the plugin's name is the one the
//!   author typed everywhere; names cargo refuses (keywords, `std`, `test`) are
//!   refused here first with a clear message.
//! - `build` finds the `.wasm` from cargo's JSON messages instead of guessing a
//!   path, so a renamed crate or a custom target dir still works.
//! - The build ignores the caller's `RUSTFLAGS` (an empty
//!   `CARGO_ENCODED_RUSTFLAGS` wins over every other source): flags meant for
//!   the host, such as `-C target-cpu=native`, make no sense for WebAssembly.
//! - The manifest's `sha256:` line is replaced in place, keeping the author's
//!   comments and order; the result is then checked with the same strict
//!   parser the host uses at install, so mistakes show up at build time.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::manifest::{Manifest, sha256_hex, valid_plugin_name};

/// The plugin interface, copied into every new plugin crate.
pub const WIT: &str = include_str!("../../plugins/wit/agent-plugin.wit");
/// The target plugins are compiled for.
pub const WASM_TARGET: &str = "wasm32-wasip2";
/// The wit-bindgen version new plugins use (the one the built-in plugins use).
pub const WIT_BINDGEN_VERSION: &str = "0.63";

/// Names a crate cannot have: Rust keywords and the standard crates.
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "proc-macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// What went wrong scaffolding or building a plugin, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The plugin name is not usable.
    #[error("`{name}` cannot be a plugin name: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why, and what is accepted.
        reason: String,
    },
    /// `new` would overwrite something.
    #[error("{} already exists and is not empty; choose another name or remove it", path.display())]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// `build` was pointed at a directory that is not a plugin crate.
    #[error(
        "{} is not a plugin crate (no {missing}); run `agent plugin build` in a directory made by `agent plugin new`",
        path.display()
    )]
    NotAPlugin {
        /// The directory.
        path: PathBuf,
        /// The file that is missing.
        missing: &'static str,
    },
    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// cargo (or rustc) could not be started.
    #[error("cannot run {program}: {source}; install Rust with rustup (https://rustup.rs)")]
    Toolchain {
        /// `cargo` or `rustc`.
        program: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The standard library for the WebAssembly target is not installed.
    #[error(
        "the Rust target {WASM_TARGET} is not installed; run `rustup target add {WASM_TARGET}`"
    )]
    TargetMissing,
    /// cargo reported an error.
    #[error("cargo build failed in {}:\n{output}", dir.display())]
    BuildFailed {
        /// The plugin directory.
        dir: PathBuf,
        /// cargo's messages (progress lines left out).
        output: String,
    },
    /// cargo succeeded but produced no component.
    #[error(
        "cargo built {} but produced no .wasm; the crate needs `crate-type = [\"cdylib\"]` under [lib]",
        dir.display()
    )]
    NoWasm {
        /// The plugin directory.
        dir: PathBuf,
    },
    /// The manifest cannot be completed or is refused.
    #[error("{}: {reason}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

/// Checks a name for `agent plugin new`: a valid plugin name that cargo also accepts.
pub fn validate_name(name: &str) -> Result<(), ScaffoldError> {
    let invalid = |reason: &str| ScaffoldError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if !valid_plugin_name(name) {
        return Err(invalid(
            "use 1-64 of a-z, 0-9, `_` and `-`, starting with a letter (e.g. `word-count`)",
        ));
    }
    if RESERVED.contains(&name) || RESERVED.contains(&name.replace('-', "_").as_str()) {
        return Err(invalid(
            "it is a Rust keyword or a standard crate name, which cargo refuses",
        ));
    }
    if super::builtin::is_builtin(name) {
        return Err(invalid(
            "it is the name of a built-in plugin; an installed plugin cannot take it",
        ));
    }
    Ok(())
}

/// Writes a new plugin crate in `parent/name/`; returns its directory.
///
/// An existing empty directory is used; anything else that exists is refused.
pub fn new_plugin(parent: &Path, name: &str) -> Result<PathBuf, ScaffoldError> {
    validate_name(name)?;
    let dir = parent.join(name);
    match std::fs::read_dir(&dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ScaffoldError::NotEmpty { path: dir });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(ScaffoldError::NotEmpty { path: dir });
        }
        Err(source) => {
            return Err(ScaffoldError::Io {
                action: "read",
                path: dir,
                source,
            });
        }
    }
    let files = [
        ("Cargo.toml", cargo_toml(name)),
        ("src/lib.rs", LIB_RS.to_string()),
        ("wit/agent-plugin.wit", WIT.to_string()),
        ("manifest.yaml", manifest_yaml(name)),
        (".gitignore", "/target\n/*.wasm\n".to_string()),
    ];
    for (relative, content) in files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ScaffoldError::Io {
                action: "create",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&path, content).map_err(|source| ScaffoldError::Io {
            action: "write",
            path: path.clone(),
            source,
        })?;
    }
    Ok(dir)
}

/// How to run `agent plugin build`.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// cargo's target dir; `None` for `DIR/target`.
    pub target_dir: Option<PathBuf>,
    /// Pass `--offline` to cargo (use only crates already downloaded).
    pub offline: bool,
}

/// A plugin built and ready for `agent plugin install`.
#[derive(Debug, Clone)]
pub struct BuiltPlugin {
    /// The plugin's name, from its manifest.
    pub name: String,
    /// The plugin directory (holding `manifest.yaml` and the `.wasm`).
    pub dir: PathBuf,
    /// The component, copied beside the manifest as `<name>.wasm`.
    pub wasm: PathBuf,
    /// Its lowercase hex sha256, now in the manifest.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Builds the plugin crate in `dir`, fills its manifest's `sha256`, and puts
/// `<name>.wasm` beside `manifest.yaml`.
pub fn build_plugin(dir: &Path, options: &BuildOptions) -> Result<BuiltPlugin, ScaffoldError> {
    // Absolute, because cargo runs inside the directory and gets paths into it.
    let dir = &std::path::absolute(dir).map_err(|source| ScaffoldError::Io {
        action: "find",
        path: dir.to_path_buf(),
        source,
    })?;
    let cargo_toml = dir.join("Cargo.toml");
    let manifest_path = dir.join("manifest.yaml");
    if !cargo_toml.is_file() {
        return Err(ScaffoldError::NotAPlugin {
            path: dir.to_path_buf(),
            missing: "Cargo.toml",
        });
    }
    if !manifest_path.is_file() {
        return Err(ScaffoldError::NotAPlugin {
            path: dir.to_path_buf(),
            missing: "manifest.yaml",
        });
    }
    // Read and check the name first: a broken manifest should not cost a build.
    let text = read_to_string(&manifest_path)?;
    let name = manifest_name(&text).map_err(|reason| ScaffoldError::Manifest {
        path: manifest_path.clone(),
        reason,
    })?;
    check_target_installed()?;

    let target_dir = options
        .target_dir
        .clone()
        .unwrap_or_else(|| dir.join("target"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .args(["build", "--release", "--target", WASM_TARGET])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&cargo_toml)
        .arg("--target-dir")
        .arg(&target_dir);
    if options.offline {
        cmd.arg("--offline");
    }
    let output = cmd.output().map_err(|source| ScaffoldError::Toolchain {
        program: cargo.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(ScaffoldError::BuildFailed {
            dir: dir.to_path_buf(),
            output: cargo_messages(&String::from_utf8_lossy(&output.stderr)),
        });
    }
    let built = wasm_artifact(&String::from_utf8_lossy(&output.stdout)).ok_or_else(|| {
        ScaffoldError::NoWasm {
            dir: dir.to_path_buf(),
        }
    })?;
    let bytes = std::fs::read(&built).map_err(|source| ScaffoldError::Io {
        action: "read",
        path: built.clone(),
        source,
    })?;
    let sha256 = sha256_hex(&bytes);
    let filled = fill_sha256(&text, &sha256).map_err(|reason| ScaffoldError::Manifest {
        path: manifest_path.clone(),
        reason,
    })?;
    // The same strict check the host makes at install time, now rather than later.
    Manifest::from_yaml(&filled, &manifest_path.display().to_string()).map_err(|e| {
        ScaffoldError::Manifest {
            path: manifest_path.clone(),
            reason: e.to_string(),
        }
    })?;
    let wasm = dir.join(format!("{name}.wasm"));
    std::fs::write(&wasm, &bytes).map_err(|source| ScaffoldError::Io {
        action: "write",
        path: wasm.clone(),
        source,
    })?;
    if filled != text {
        std::fs::write(&manifest_path, &filled).map_err(|source| ScaffoldError::Io {
            action: "write",
            path: manifest_path.clone(),
            source,
        })?;
    }
    Ok(BuiltPlugin {
        name,
        dir: dir.to_path_buf(),
        wasm,
        sha256,
        size: bytes.len() as u64,
    })
}

/// Replaces the value of the top-level `sha256:` line, keeping everything else.
pub fn fill_sha256(manifest: &str, sha256: &str) -> Result<String, String> {
    let mut out = String::with_capacity(manifest.len() + 80);
    let mut found = false;
    for line in manifest.split_inclusive('\n') {
        if line.starts_with("sha256:") {
            if found {
                return Err("has two `sha256:` lines; keep one".to_string());
            }
            found = true;
            out.push_str(&format!("sha256: \"{sha256}\"\n"));
        } else {
            out.push_str(line);
        }
    }
    if found {
        Ok(out)
    } else {
        Err("has no top-level `sha256:` line; add `sha256: \"\"` and build again".to_string())
    }
}

/// The `name:` of a manifest, checked, without requiring the rest to be complete.
fn manifest_name(text: &str) -> Result<String, String> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| format!("is not valid YAML: {e}"))?;
    let name = value
        .get("name")
        .and_then(serde_yaml::Value::as_str)
        .ok_or("has no `name:`")?;
    if !valid_plugin_name(name) {
        return Err(format!(
            "`name: {name}` is not a valid plugin name: use 1-64 of a-z, 0-9, `_` and `-`, starting with a letter"
        ));
    }
    Ok(name.to_string())
}

/// Fails with the fix when the standard library for wasm32-wasip2 is missing.
fn check_target_installed() -> Result<(), ScaffoldError> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|source| ScaffoldError::Toolchain {
            program: rustc.clone(),
            source,
        })?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if output.status.success() && !sysroot.join("lib/rustlib").join(WASM_TARGET).exists() {
        return Err(ScaffoldError::TargetMissing);
    }
    Ok(())
}

/// The `.wasm` of the last cdylib cargo reported building.
fn wasm_artifact(json_lines: &str) -> Option<PathBuf> {
    json_lines
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m.get("reason").and_then(|r| r.as_str()) == Some("compiler-artifact"))
        .find_map(|m| {
            m.get("filenames")?
                .as_array()?
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
                .map(PathBuf::from)
        })
}

/// cargo's stderr without its progress lines, at most the last 200 lines.
fn cargo_messages(stderr: &str) -> String {
    const PROGRESS: &[&str] = &[
        "Compiling",
        "Downloaded",
        "Downloading",
        "Updating",
        "Locking",
        "Adding",
        "Blocking",
        "Checking",
    ];
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !PROGRESS.iter().any(|p| t.starts_with(p))
        })
        .collect();
    let start = lines.len().saturating_sub(200);
    lines[start..].join("\n")
}

fn read_to_string(path: &Path) -> Result<String, ScaffoldError> {
    std::fs::read_to_string(path).map_err(|source| ScaffoldError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

fn cargo_toml(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A plugin is a project of its own, even inside another cargo workspace.
[workspace]

[lib]
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = {{ version = "{WIT_BINDGEN_VERSION}", default-features = false, features = ["macros", "realloc", "std"] }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# Small components compile (and start) faster in the agent.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
"#
    )
}

fn manifest_yaml(name: &str) -> String {
    format!(
        r#"# What the plugin is and what it may touch. `agent plugin install` shows the
# permissions to the user, and the host grants no more than they allow.
name: {name}
version: 0.1.0
interface: agent:plugin@0.1.0
description: Counts the words, lines and characters of a text.
# Filled in by `agent plugin build`.
sha256: ""
# Must list exactly the tools describe() returns.
tools: [word_count]
permissions:
  workspace: none         # none | read | write: the workspace, mounted at /workspace
  http:
    hosts: []             # exact host names, or "*.example.com"; never "*"
  memory_mb: 64           # linear memory cap
  timeout_ms: 5000        # wall-clock limit per call
  output_kb: 64           # result size cap
"#
    )
}

/// The example plugin: one tool, `word_count`, with the patterns a real tool needs.
const LIB_RS: &str = r##"//! An agent plugin: a WebAssembly component implementing `plugins/wit`
//! (`agent:plugin@0.1.0`). Build it with `agent plugin build`, install it with
//! `agent plugin install .`, try it with
//! `agent plugin call <name> word_count '{"text": "hello world"}'`.

use serde::Deserialize;

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
});

use agent::plugin::host::{LogLevel, log};
use exports::agent::plugin::tools::{Guest, ToolInfo};

struct Plugin;

impl Guest for Plugin {
    /// The tools this plugin offers: the model reads the descriptions and
    /// fills in arguments that match the JSON Schemas.
    fn describe() -> Vec<ToolInfo> {
        vec![ToolInfo {
            name: "word_count".to_string(),
            description: "Count the words, lines and characters of a text.".to_string(),
            args_schema: r#"{"type":"object","properties":{"text":{"type":"string","description":"The text to count"}},"required":["text"],"additionalProperties":false}"#.to_string(),
        }]
    }

    /// Runs one tool. `Ok` is what the model sees; `Err` is an error it can act on.
    fn invoke(tool: String, args_json: String) -> Result<String, String> {
        match tool.as_str() {
            "word_count" => word_count(&args_json),
            other => Err(format!("unknown tool `{other}`; this plugin offers word_count")),
        }
    }
}

export!(Plugin);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WordCountArgs {
    text: String,
}

fn word_count(args_json: &str) -> Result<String, String> {
    let args: WordCountArgs = serde_json::from_str(args_json)
        .map_err(|e| format!("invalid arguments for word_count: {e}"))?;
    log(LogLevel::Debug, &format!("counting {} bytes", args.text.len()));
    let words = args.text.split_whitespace().count();
    let lines = args.text.lines().count();
    let chars = args.text.chars().count();
    Ok(format!("{words} words, {lines} lines, {chars} characters"))
}
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_plugin_writes_a_complete_crate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = new_plugin(tmp.path(), "word-count").unwrap();
        assert_eq!(dir, tmp.path().join("word-count"));
        for file in [
            "Cargo.toml",
            "src/lib.rs",
            "wit/agent-plugin.wit",
            "manifest.yaml",
            ".gitignore",
        ] {
            assert!(dir.join(file).is_file(), "{file} missing");
        }
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"word-count\""));
        assert!(cargo.contains("crate-type = [\"cdylib\"]"));
        assert!(
            cargo.contains("[workspace]"),
            "must not join an enclosing workspace"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("wit/agent-plugin.wit")).unwrap(),
            WIT
        );
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("path: \"wit\""));
        assert!(lib.contains("\"word_count\""));
    }

    #[test]
    fn new_manifest_passes_the_hosts_checks_once_hashed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = new_plugin(tmp.path(), "counter").unwrap();
        let text = std::fs::read_to_string(dir.join("manifest.yaml")).unwrap();
        let filled = fill_sha256(&text, &sha256_hex(b"component")).unwrap();
        let manifest = Manifest::from_yaml(&filled, "scaffold").unwrap();
        assert_eq!(manifest.name, "counter");
        assert_eq!(manifest.tools, vec!["word_count".to_string()]);
        manifest.verify_wasm(b"component").unwrap();
        assert!(
            filled.contains("# Must list exactly the tools"),
            "comments are kept"
        );
    }

    #[test]
    fn bad_names_are_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        for name in [
            "", "My-Tool", "1tool", "../evil", "a/b", "fn", "std", "test", "files", "web", "code",
        ] {
            let err = new_plugin(tmp.path(), name).unwrap_err();
            assert!(
                matches!(err, ScaffoldError::InvalidName { .. }),
                "{name}: {err}"
            );
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        assert!(validate_name("my_tool-2").is_ok());
    }

    #[test]
    fn an_existing_non_empty_directory_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("taken")).unwrap();
        std::fs::write(tmp.path().join("taken/keep.txt"), "mine").unwrap();
        let err = new_plugin(tmp.path(), "taken").unwrap_err();
        assert!(matches!(err, ScaffoldError::NotEmpty { .. }), "{err}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("taken/keep.txt")).unwrap(),
            "mine"
        );
        std::fs::write(tmp.path().join("file"), "x").unwrap();
        assert!(new_plugin(tmp.path(), "file").is_err());
        // An empty directory is fine.
        std::fs::create_dir(tmp.path().join("empty")).unwrap();
        new_plugin(tmp.path(), "empty").unwrap();
    }

    #[test]
    fn fill_sha256_replaces_only_the_top_level_line() {
        let text = "name: x\nsha256: \"\"\nnested:\n  sha256: keep\n";
        let filled = fill_sha256(text, "ab12").unwrap();
        assert_eq!(
            filled,
            "name: x\nsha256: \"ab12\"\nnested:\n  sha256: keep\n"
        );
        assert!(fill_sha256("name: x\n", "ab").is_err());
        assert!(fill_sha256("sha256: a\nsha256: b\n", "ab").is_err());
    }

    #[test]
    fn build_refuses_a_directory_that_is_not_a_plugin() {
        let tmp = tempfile::tempdir().unwrap();
        let err = build_plugin(tmp.path(), &BuildOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                ScaffoldError::NotAPlugin {
                    missing: "Cargo.toml",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_wasm_artifact_is_read_from_cargo_messages() {
        let json = concat!(
            r#"{"reason":"compiler-artifact","filenames":["/t/deps/libserde.rlib"]}"#,
            "\n",
            r#"{"reason":"compiler-artifact","filenames":["/t/wasm32-wasip2/release/my_tool.wasm"]}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            wasm_artifact(json),
            Some(PathBuf::from("/t/wasm32-wasip2/release/my_tool.wasm"))
        );
        assert_eq!(
            wasm_artifact(r#"{"reason":"build-finished","success":true}"#),
            None
        );
    }

    /// Builds a scaffolded plugin for real (the wasm32-wasip2 target must be
    /// installed, as it is wherever this crate builds, since build.rs needs it).
    /// It shares the built-in plugins' target dir, so the dependencies are
    /// already compiled and downloaded: seconds, and no network.
    #[test]
    fn scaffold_builds_into_an_installable_plugin() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = new_plugin(tmp.path(), "counter").unwrap();
        let shared = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
            .join("wasm-guests");
        let options = BuildOptions {
            target_dir: Some(shared),
            offline: true,
        };
        let built = build_plugin(&dir, &options).unwrap();
        assert_eq!(built.name, "counter");
        assert_eq!(built.wasm, dir.join("counter.wasm"));
        let bytes = std::fs::read(&built.wasm).unwrap();
        assert_eq!(&bytes[..4], b"\0asm");
        let text = std::fs::read_to_string(dir.join("manifest.yaml")).unwrap();
        let manifest = Manifest::from_yaml(&text, "built").unwrap();
        manifest.verify_wasm(&bytes).unwrap();
        assert_eq!(built.sha256, manifest.sha256);
        // The layout `agent plugin install DIR` reads.
        let (m, w) = super::super::locate_install_source(&dir).unwrap();
        assert_eq!(
            (m, w),
            (dir.join("manifest.yaml"), dir.join("counter.wasm"))
        );
    }
}
