//! Build script: compiles the built-in plugins so that a fresh `cargo build`
//! ships them inside the binary, with no extra step.
//!
//! Writes `$OUT_DIR/plugins/<name>.wasm` and `$OUT_DIR/plugins/<name>.manifest.yaml`
//! (the plugin's manifest with `sha256` filled in) for `files`, `web` and `code`;
//! the host embeds them with `include_bytes!`.
//!
//! Decisions:
//! - The Rust guests (`plugins/files`, `plugins/web`) are built by a nested
//!   `cargo build --release --target wasm32-wasip2`, as blockchain runtimes are,
//!   in a target dir of their own beside ours (`<target>/wasm-guests`): it
//!   survives rebuilds, and it is not the outer build's locked directory. The
//!   outer `RUSTFLAGS` (e.g. `-C target-cpu=native` from `.cargo/config.toml`)
//!   must not reach WebAssembly, so the nested build gets an empty
//!   `CARGO_ENCODED_RUSTFLAGS`, which overrides every other source of flags.
//! - The `code` plugin is CPython compiled to a component by componentize-py
//!   (pinned below). That takes tens of seconds, so its output is cached by a
//!   hash of its inputs (app.py, the WIT, the pinned version). componentize-py
//!   comes from the Python on PATH if it has the pinned version, otherwise from
//!   a virtualenv we create once under `<target>/wasm-guests`.
//! - `rerun-if-changed` names only the guests' sources and the WIT, so editing
//!   the host never reruns this script.
//! - Silent on success; on failure one message saying what is missing and the
//!   command that fixes it.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// The WebAssembly target every guest is built for.
const WASM_TARGET: &str = "wasm32-wasip2";
/// componentize-py release that builds the `code` plugin (PyPI).
const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// Runs componentize-py's command line from its module (the package has no `__main__`).
const PY_ENTRY: &str = "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())";
/// Bump to invalidate cached Python components when the way we build them changes.
const PY_RECIPE: &str = "code-plugin-recipe-1";
/// Rust guests: (plugin name, directory under plugins/, the cdylib's file stem).
const RUST_GUESTS: &[(&str, &str, &str)] = &[
    ("files", "files", "agent_plugin_files"),
    ("web", "web", "agent_plugin_web"),
];

fn main() {
    if let Err(message) = run() {
        eprintln!("\nerror: building the built-in plugins failed\n\n{message}\n");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let root = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let plugins = root.join("plugins");
    let dest = out_dir.join("plugins");
    fs::create_dir_all(&dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;

    println!("cargo:rerun-if-changed=plugins/wit");
    for (_, dir, _) in RUST_GUESTS {
        for item in ["src", "Cargo.toml", "Cargo.lock", "manifest.yaml"] {
            println!("cargo:rerun-if-changed=plugins/{dir}/{item}");
        }
    }
    println!("cargo:rerun-if-changed=plugins/code/app.py");
    println!("cargo:rerun-if-changed=plugins/code/manifest.yaml");

    let guests_dir = guest_target_dir(&root, &out_dir);
    check_wasm_target()?;
    for (name, dir, stem) in RUST_GUESTS {
        let wasm = build_rust_guest(&plugins.join(dir), &guests_dir, stem)?;
        ship(name, &wasm, &plugins.join(dir).join("manifest.yaml"), &dest)?;
    }
    let code = build_python_guest(&plugins, &guests_dir)?;
    ship("code", &code, &plugins.join("code/manifest.yaml"), &dest)?;
    Ok(())
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("cargo did not set {name}; run this build through cargo"))
}

/// `<target>/wasm-guests`: beside the outer build's profile dirs, shared by all
/// profiles, outside the directory cargo locks for the outer build.
fn guest_target_dir(root: &Path, out_dir: &Path) -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return root.join(dir).join("wasm-guests");
    }
    // OUT_DIR is <target>[/<triple>]/<profile>/build/<package>-<hash>/out.
    if let Some(build) = out_dir.ancestors().nth(2).filter(|b| b.ends_with("build"))
        && let Some(mut target) = build.parent().and_then(Path::parent)
    {
        if env::var("TARGET").is_ok_and(|t| target.ends_with(&t)) {
            target = target.parent().unwrap_or(target);
        }
        return target.join("wasm-guests");
    }
    out_dir.join("wasm-guests")
}

/// Makes sure the standard library for wasm32-wasip2 is installed: when it
/// is missing and the toolchain is managed by rustup, adds it (what
/// `rust-toolchain.toml` asks for; rustup adds a toolchain file's targets
/// only when it installs the toolchain itself, not to one already there).
/// Fails early, with the fix, when that is not possible.
fn check_wasm_target() -> Result<(), String> {
    if wasm_target_installed()? {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["target", "add", WASM_TARGET]);
    if let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") {
        add.args(["--toolchain", &toolchain]);
    }
    let added = add.status().is_ok_and(|s| s.success());
    if added && wasm_target_installed()? {
        println!(
            "cargo:warning=installed the Rust target {WASM_TARGET} with rustup (the built-in plugins need it)"
        );
        return Ok(());
    }
    Err(format!(
        "the Rust target {WASM_TARGET} is not installed (the plugins are WebAssembly components), \
         and `rustup target add {WASM_TARGET}` did not work here.\n\
         Install it with:\n\n    rustup target add {WASM_TARGET}\n\nthen build again."
    ))
}

/// Whether the sysroot of the compiler in use has the wasm32-wasip2 library.
fn wasm_target_installed() -> Result<bool, String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run {rustc} to find the Rust sysroot: {e}"))?;
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let lib = Path::new(&sysroot).join("lib/rustlib").join(WASM_TARGET);
    // Without a sysroot to look in, let the guest build say what is wrong.
    Ok(!output.status.success() || lib.exists())
}

/// A `cargo` command for a guest, isolated from the outer build's settings.
fn guest_cargo(guests_dir: &Path) -> Command {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        // `cargo clippy` sets this for the outer build; guests are not linted here.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(WASM_TARGET)
        .arg("--target-dir")
        .arg(guests_dir);
    cmd
}

/// Builds one Rust guest crate; returns the path of its `.wasm`.
fn build_rust_guest(dir: &Path, guests_dir: &Path, stem: &str) -> Result<PathBuf, String> {
    let mut cmd = guest_cargo(guests_dir);
    cmd.arg("--manifest-path").arg(dir.join("Cargo.toml"));
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run cargo for the plugin in {}: {e}", dir.display()))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build of the plugin in {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let wasm = guests_dir
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{stem}.wasm"));
    if !wasm.is_file() {
        return Err(format!(
            "cargo built the plugin in {} but {} is missing",
            dir.display(),
            wasm.display()
        ));
    }
    Ok(wasm)
}

/// Builds (or takes from the cache) the `code` plugin; returns the path of its `.wasm`.
fn build_python_guest(plugins: &Path, guests_dir: &Path) -> Result<PathBuf, String> {
    let app = plugins.join("code/app.py");
    let wit = plugins.join("wit");
    let mut hasher = Sha256::new();
    hasher.update(PY_RECIPE);
    hasher.update(COMPONENTIZE_PY_VERSION);
    hasher.update(read(&app)?);
    let mut wit_files: Vec<PathBuf> = fs::read_dir(&wit)
        .map_err(|e| format!("cannot read {}: {e}", wit.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wit"))
        .collect();
    wit_files.sort();
    for file in &wit_files {
        hasher.update(
            file.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        hasher.update(read(file)?);
    }
    let key = hex(&hasher.finalize())[..16].to_string();

    let cache = guests_dir.join("code-plugin");
    let cached = cache.join(format!("code-{key}.wasm"));
    if cached.is_file() {
        return Ok(cached);
    }
    fs::create_dir_all(&cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;

    let python = componentize_py(guests_dir)?;
    // componentize-py imports the app with CPython 3.14 and leaves a
    // `__pycache__` beside it: work on a copy so the source tree stays clean.
    let staging = cache.join("src");
    fs::create_dir_all(&staging)
        .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    fs::write(staging.join("app.py"), read(&app)?)
        .map_err(|e| format!("cannot write {}: {e}", staging.display()))?;
    let partial = cache.join(format!("code-{key}.wasm.partial"));
    let output = Command::new(&python)
        .current_dir(&staging)
        .env_remove("VIRTUAL_ENV")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-c", PY_ENTRY, "-q", "-d"])
        .arg(&wit)
        .args(["-w", "plugin", "componentize", "app", "-p", ".", "-o"])
        .arg(&partial)
        .output()
        .map_err(|e| format!("cannot run componentize-py ({}): {e}", python.display()))?;
    if !output.status.success() {
        return Err(format!(
            "componentize-py failed to build the `code` plugin from {}:\n{}",
            app.display(),
            combined(&output)
        ));
    }
    // Drop components built from older inputs: each is about 20 MB.
    if let Ok(entries) = fs::read_dir(&cache) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path != partial && path.extension().is_some_and(|x| x == "wasm") {
                let _ = fs::remove_file(path);
            }
        }
    }
    fs::rename(&partial, &cached).map_err(|e| format!("cannot write {}: {e}", cached.display()))?;
    Ok(cached)
}

/// A Python interpreter that has componentize-py at the pinned version:
/// the one on PATH if it has it, else a virtualenv we make (once) under `guests_dir`.
fn componentize_py(guests_dir: &Path) -> Result<PathBuf, String> {
    let system = PathBuf::from("python3");
    if has_componentize_py(&system) {
        return Ok(system);
    }
    let venv = guests_dir.join(format!("componentize-py-{COMPONENTIZE_PY_VERSION}/venv"));
    let venv_python = venv.join("bin/python");
    if has_componentize_py(&venv_python) {
        return Ok(venv_python);
    }
    let probe = Command::new(&system).arg("--version").output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        return Err(format!(
            "Python 3 is needed to build the `code` plugin (CPython compiled to WebAssembly by componentize-py), \
             but `python3` was not found on PATH.\nInstall Python 3 with venv and pip \
             (Debian/Ubuntu: `apt-get install python3 python3-venv python3-pip`), \
             or install the tool yourself: `python3 -m pip install componentize-py=={COMPONENTIZE_PY_VERSION}`."
        ));
    }
    let made = Command::new(&system)
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .output()
        .map_err(|e| format!("cannot run python3 -m venv: {e}"))?;
    if !made.status.success() {
        return Err(format!(
            "could not create a virtualenv at {} for componentize-py:\n{}\n\
             Install Python's venv module (Debian/Ubuntu: `apt-get install python3-venv`), \
             or install the tool yourself: `python3 -m pip install componentize-py=={COMPONENTIZE_PY_VERSION}`.",
            venv.display(),
            combined(&made)
        ));
    }
    let installed = Command::new(&venv_python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(format!("componentize-py=={COMPONENTIZE_PY_VERSION}"))
        .output()
        .map_err(|e| format!("cannot run pip in {}: {e}", venv.display()))?;
    if !installed.status.success() {
        return Err(format!(
            "pip could not install componentize-py=={COMPONENTIZE_PY_VERSION} (from PyPI) into {}:\n{}\n\
             Check that PyPI is reachable and pip works (Debian/Ubuntu: `apt-get install python3-pip`), \
             or install it yourself: `python3 -m pip install componentize-py=={COMPONENTIZE_PY_VERSION}`.",
            venv.display(),
            combined(&installed)
        ));
    }
    if !has_componentize_py(&venv_python) {
        return Err(format!(
            "componentize-py=={COMPONENTIZE_PY_VERSION} was installed into {} but does not run",
            venv.display()
        ));
    }
    Ok(venv_python)
}

/// True when `python` runs componentize-py and it reports the pinned version.
fn has_componentize_py(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", PY_ENTRY, "--version"])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .any(|w| w == COMPONENTIZE_PY_VERSION)
        })
}

/// Copies a plugin's `.wasm` into `dest` and writes its manifest with `sha256` filled in.
fn ship(name: &str, wasm: &Path, manifest: &Path, dest: &Path) -> Result<(), String> {
    let bytes = read(wasm)?;
    let digest = hex(&Sha256::digest(&bytes));
    let text = String::from_utf8(read(manifest)?)
        .map_err(|_| format!("{} is not UTF-8", manifest.display()))?;
    let mut filled = String::with_capacity(text.len());
    let mut found = false;
    for line in text.lines() {
        if line.starts_with("sha256:") {
            found = true;
            let _ = writeln!(filled, "sha256: \"{digest}\"");
        } else {
            filled.push_str(line);
            filled.push('\n');
        }
    }
    if !found {
        return Err(format!(
            "{} has no top-level `sha256:` line to fill in",
            manifest.display()
        ));
    }
    write_if_changed(&dest.join(format!("{name}.wasm")), &bytes)?;
    write_if_changed(
        &dest.join(format!("{name}.manifest.yaml")),
        filled.as_bytes(),
    )
}

/// Writes only when the content differs, so unchanged plugins do not make the host recompile.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn combined(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
