//! The built-in plugins (`files`, `web`, `code`), compiled from `plugins/` by
//! the build script and embedded in the binary, so a fresh build has them.
//!
//! They are loaded exactly like installed plugins: manifest parsed strictly,
//! `.wasm` checked against its sha256, tools checked against `describe()`.
//! Their names are reserved: an installed plugin cannot take them.

/// One embedded plugin.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Plugin name.
    pub name: &'static str,
    /// Manifest text.
    pub manifest: &'static str,
    /// Component bytes.
    pub wasm: &'static [u8],
}

/// Names reserved for built-in plugins.
pub const NAMES: &[&str] = &["files", "web", "code"];

macro_rules! embedded {
    ($name:literal) => {
        Builtin {
            name: $name,
            manifest: include_str!(concat!(
                env!("OUT_DIR"),
                "/plugins/",
                $name,
                ".manifest.yaml"
            )),
            wasm: include_bytes!(concat!(env!("OUT_DIR"), "/plugins/", $name, ".wasm")),
        }
    };
}

/// The embedded plugins, in the order their tools are registered.
pub static BUILTINS: &[Builtin] = &[embedded!("files"), embedded!("web"), embedded!("code")];

/// True for the names of built-in plugins.
pub fn is_builtin(name: &str) -> bool {
    NAMES.contains(&name)
}
