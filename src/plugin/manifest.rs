//! The plugin manifest: the YAML file beside a plugin's `.wasm` that says what
//! the plugin is and what it asks to touch.
//!
//! ```yaml
//! name: files
//! version: 0.1.0
//! interface: agent:plugin@0.1.0
//! description: Read and write files in the workspace.
//! sha256: <hex of the .wasm>
//! tools: [list_files, read_file, write_file, append_file, search_files, delete_file]
//! permissions:
//!   workspace: write        # none | read | write
//!   http:
//!     hosts: []             # exact host names, or "*.example.com"; never "*"
//!   memory_mb: 64
//!   timeout_ms: 10000
//!   output_kb: 256
//! ```
//!
//! Decisions:
//! - Parsing is strict (`deny_unknown_fields` everywhere): a field we do not
//!   understand could be a permission we would silently fail to enforce, so it
//!   is refused with its name. There is no path field: the only directory a
//!   plugin can ever see is the workspace, so `paths: [/etc]` is an unknown
//!   field and refused like any other.
//! - Every check names the field it refused and what would be accepted, so a
//!   plugin author can fix the manifest without reading this code.
//! - Host patterns are normalised with the `url` crate (IDNA, lowercase, odd IP
//!   spellings) so that the allowlist compares exactly what the HTTP capability
//!   later compares.
//! - The manifest is checked against the `.wasm` (sha256) and against what the
//!   plugin's `describe()` returns; both checks live here so that an installed
//!   plugin and a built-in one go through the same gate.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Interface versions this host links. A plugin built against one of these loads.
pub const SUPPORTED_INTERFACES: &[&str] = &["agent:plugin@0.1.0"];

/// Largest memory cap a manifest may ask for, in MiB.
pub const MAX_MEMORY_MB: u32 = 4096;
/// Longest time limit a manifest may ask for, in ms (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// Largest output cap a manifest may ask for, in KiB (64 MiB).
pub const MAX_OUTPUT_KB: u32 = 65_536;

/// How much of the workspace a plugin may touch. Ordered: `None < Read < Write`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceAccess {
    /// No workspace at all: no preopened directory.
    #[default]
    None,
    /// Read-only: files and directories opened without write rights.
    Read,
    /// Read and write.
    Write,
}

impl fmt::Display for WorkspaceAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Read => "read",
            Self::Write => "write",
        })
    }
}

/// A parsed, validated plugin manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Plugin name: `[a-z][a-z0-9_-]*`, at most 64 characters; also its directory name.
    pub name: String,
    /// The plugin's own version (free-form, e.g. semver).
    pub version: String,
    /// The WIT interface it implements, e.g. `agent:plugin@0.1.0`.
    pub interface: String,
    /// One line on what the plugin is for.
    #[serde(default)]
    pub description: String,
    /// Lowercase hex sha256 of the `.wasm` file.
    pub sha256: String,
    /// Names of the tools the plugin offers; must equal what `describe()` returns.
    pub tools: Vec<String>,
    /// Tools that only read: they get a read-only workspace whatever the
    /// plugin's grant, and approvals treat them as reads (a plugin's other
    /// tools get its full grant).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_only_tools: Vec<String>,
    /// What the plugin asks to touch.
    #[serde(default)]
    pub permissions: Permissions,
}

/// The permissions a manifest asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// Workspace access.
    #[serde(default)]
    pub workspace: WorkspaceAccess,
    /// Outgoing HTTP through the host's `http-fetch`.
    #[serde(default)]
    pub http: HttpPermissions,
    /// Linear memory cap in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// Wall-clock limit per call in ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Result size cap in KiB.
    #[serde(default = "default_output_kb")]
    pub output_kb: u32,
}

impl Default for Permissions {
    fn default() -> Self {
        Self {
            workspace: WorkspaceAccess::None,
            http: HttpPermissions::default(),
            memory_mb: default_memory_mb(),
            timeout_ms: default_timeout_ms(),
            output_kb: default_output_kb(),
        }
    }
}

fn default_memory_mb() -> u32 {
    64
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_output_kb() -> u32 {
    256
}

/// HTTP permissions: the hosts a plugin may reach.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPermissions {
    /// Exact host names (or IP literals), or `*.example.com` for its subdomains.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// A host in an allowlist, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this host (a lowercase, IDNA-normalised name or an IP literal).
    Exact(String),
    /// Any subdomain of this domain (from `*.example.com`), not the domain itself.
    Subdomains(String),
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(h) => f.write_str(h),
            Self::Subdomains(d) => write!(f, "*.{d}"),
        }
    }
}

impl HostPattern {
    /// Parse one allowlist entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("is empty; write a host name such as `example.com`".into());
        }
        if entry == "*" || entry == "*." {
            return Err(
                "`*` would allow every host; list the hosts, or `*.example.com` for subdomains"
                    .into(),
            );
        }
        if entry.contains("://") {
            return Err(format!(
                "`{entry}` has a scheme; write only the host name, e.g. `example.com`"
            ));
        }
        if entry.contains(['/', '?', '#', '@', '\\']) {
            return Err(format!(
                "`{entry}` has a path or user part; write only the host name, e.g. `example.com`"
            ));
        }
        if entry.contains(char::is_whitespace) {
            return Err(format!("`{entry}` contains whitespace"));
        }
        let (wild, rest) = match entry.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        if rest.contains('*') {
            return Err(format!(
                "`{entry}`: `*` is allowed only as a leading `*.` label"
            ));
        }
        // A port would be silently ignored by the comparison; refuse it instead.
        let is_bracketed_v6 = rest.starts_with('[') && rest.ends_with(']');
        if !is_bracketed_v6 && rest.contains(':') {
            return Err(format!(
                "`{entry}` has a port or is an unbracketed IPv6 address; write only the host name"
            ));
        }
        let host =
            normalize_host(rest).map_err(|e| format!("`{entry}` is not a valid host name: {e}"))?;
        if wild {
            if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
                return Err(format!(
                    "`{entry}`: `*.` works only with domain names, not IP addresses"
                ));
            }
            if !host.contains('.') {
                return Err(format!(
                    "`{entry}` would allow a whole top-level domain; use `*.example.{host}` or list the hosts"
                ));
            }
            Ok(Self::Subdomains(host))
        } else {
            Ok(Self::Exact(host))
        }
    }

    /// True when `host` (already normalised with [`normalize_host`]) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h == host,
            Self::Subdomains(d) => {
                host.len() > d.len() + 1
                    && host.ends_with(d.as_str())
                    && host.as_bytes()[host.len() - d.len() - 1] == b'.'
            }
        }
    }
}

/// Normalise a host as the URL parser does (IDNA, lowercase, IPv4 spellings
/// such as `0x7f.1`), without a trailing dot. IPv6 comes back in brackets.
pub fn normalize_host(host: &str) -> Result<String, String> {
    let parsed = url::Host::parse(host).map_err(|e| e.to_string())?;
    let s = parsed.to_string();
    Ok(s.strip_suffix('.').map(str::to_owned).unwrap_or(s))
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML, wrong types or unknown fields (the message names the field and line).
    #[error("plugin manifest {origin}: {message}")]
    Parse {
        /// Which manifest (a path or `built-in NAME`).
        origin: String,
        /// serde_yaml's message: field, line and column.
        message: String,
    },
    /// A field has a value the host refuses.
    #[error("plugin manifest {origin}: `{field}` {reason}")]
    Invalid {
        /// Which manifest.
        origin: String,
        /// Dotted path of the field, e.g. `permissions.http.hosts[0]`.
        field: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// The `.wasm` does not hash to the manifest's `sha256`.
    #[error(
        "plugin `{name}`: the .wasm does not match the manifest (sha256 {actual}, manifest says {expected}); \
         the file was changed or truncated: rebuild with `agent plugin build` or reinstall it"
    )]
    HashMismatch {
        /// Plugin name.
        name: String,
        /// From the manifest.
        expected: String,
        /// Of the file.
        actual: String,
    },
    /// `describe()` and `tools:` disagree.
    #[error(
        "plugin `{name}`: the manifest's `tools` does not match what the plugin offers \
         (listed but not offered: [{missing}]; offered but not listed: [{unlisted}]); fix `tools:` in the manifest"
    )]
    ToolsMismatch {
        /// Plugin name.
        name: String,
        /// In the manifest, not in `describe()`.
        missing: String,
        /// In `describe()`, not in the manifest.
        unlisted: String,
    },
}

impl Manifest {
    /// Parse and validate manifest text. `origin` names it in errors (a path
    /// or `built-in files`).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest = serde_yaml::from_str(text).map_err(|e| ManifestError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        manifest.validate(origin)?;
        Ok(manifest)
    }

    /// The manifest as YAML text.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(self)
    }

    /// Check every field; the error names the first one refused.
    pub fn validate(&self, origin: &str) -> Result<(), ManifestError> {
        let bad = |field: &str, reason: String| ManifestError::Invalid {
            origin: origin.to_owned(),
            field: field.to_owned(),
            reason,
        };
        if !valid_plugin_name(&self.name) {
            return Err(bad(
                "name",
                format!(
                    "`{}` is not a valid plugin name: use 1-64 of a-z, 0-9, `_`, `-`, starting with a letter",
                    self.name
                ),
            ));
        }
        if self.version.is_empty()
            || self.version.len() > 64
            || !self
                .version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
        {
            return Err(bad(
                "version",
                format!("`{}` is not a version; write e.g. `0.1.0`", self.version),
            ));
        }
        if !SUPPORTED_INTERFACES.contains(&self.interface.as_str()) {
            return Err(bad(
                "interface",
                format!(
                    "`{}` is not an interface this agent supports (supported: {}); rebuild the plugin against a supported WIT",
                    self.interface,
                    SUPPORTED_INTERFACES.join(", ")
                ),
            ));
        }
        if self.description.len() > 1000 {
            return Err(bad(
                "description",
                "is longer than 1000 bytes; one sentence is enough".into(),
            ));
        }
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(
                "sha256",
                "must be the 64 hex digits of the .wasm's sha256 (`sha256sum plugin.wasm`)".into(),
            ));
        }
        if self.tools.is_empty() {
            return Err(bad(
                "tools",
                "is empty; list the tools the plugin offers".into(),
            ));
        }
        if let Some((i, t)) = self
            .read_only_tools
            .iter()
            .enumerate()
            .find(|(_, t)| !self.tools.contains(t))
        {
            return Err(bad(
                &format!("read_only_tools[{i}]"),
                format!("`{t}` is not one of the plugin's `tools`"),
            ));
        }
        for (i, tool) in self.tools.iter().enumerate() {
            // A `.` is kept for MCP servers' `SERVER.TOOL`: the transcript
            // tells those by it.
            if !crate::tools::valid_tool_name(tool) || tool.contains('.') {
                return Err(bad(
                    &format!("tools[{i}]"),
                    format!(
                        "`{tool}` is not a valid tool name: 1-64 of a-z, 0-9, `_`, starting with a letter"
                    ),
                ));
            }
            if self.tools[..i].contains(tool) {
                return Err(bad(
                    &format!("tools[{i}]"),
                    format!("`{tool}` is listed twice"),
                ));
            }
        }
        let p = &self.permissions;
        if p.memory_mb == 0 || p.memory_mb > MAX_MEMORY_MB {
            return Err(bad(
                "permissions.memory_mb",
                format!(
                    "{} is not a usable limit; use 1..={MAX_MEMORY_MB}",
                    p.memory_mb
                ),
            ));
        }
        if p.timeout_ms == 0 || p.timeout_ms > MAX_TIMEOUT_MS {
            return Err(bad(
                "permissions.timeout_ms",
                format!(
                    "{} is not a usable limit; use 1..={MAX_TIMEOUT_MS} (10 minutes)",
                    p.timeout_ms
                ),
            ));
        }
        if p.output_kb == 0 || p.output_kb > MAX_OUTPUT_KB {
            return Err(bad(
                "permissions.output_kb",
                format!(
                    "{} is not a usable limit; use 1..={MAX_OUTPUT_KB} (64 MiB)",
                    p.output_kb
                ),
            ));
        }
        for (i, host) in p.http.hosts.iter().enumerate() {
            HostPattern::parse(host)
                .map_err(|reason| bad(&format!("permissions.http.hosts[{i}]"), reason))?;
        }
        Ok(())
    }

    /// The normalised HTTP allowlist (valid after [`Manifest::validate`]).
    pub fn host_patterns(&self) -> Vec<HostPattern> {
        self.permissions
            .http
            .hosts
            .iter()
            .filter_map(|h| HostPattern::parse(h).ok())
            .collect()
    }

    /// Refuse a `.wasm` whose sha256 is not the manifest's.
    pub fn verify_wasm(&self, wasm: &[u8]) -> Result<(), ManifestError> {
        let actual = sha256_hex(wasm);
        if actual.eq_ignore_ascii_case(&self.sha256) {
            Ok(())
        } else {
            Err(ManifestError::HashMismatch {
                name: self.name.clone(),
                expected: self.sha256.to_ascii_lowercase(),
                actual,
            })
        }
    }

    /// Refuse when `described` (from the plugin's `describe()`) and `tools:` differ.
    pub fn check_tools<'a>(
        &self,
        described: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ManifestError> {
        let described: Vec<&str> = described.into_iter().collect();
        let missing: Vec<&str> = self
            .tools
            .iter()
            .map(String::as_str)
            .filter(|t| !described.contains(t))
            .collect();
        let unlisted: Vec<&str> = described
            .iter()
            .copied()
            .filter(|t| !self.tools.iter().any(|m| m == t))
            .collect();
        if missing.is_empty() && unlisted.is_empty() {
            Ok(())
        } else {
            Err(ManifestError::ToolsMismatch {
                name: self.name.clone(),
                missing: missing.join(", "),
                unlisted: unlisted.join(", "),
            })
        }
    }
}

/// True for names usable as a plugin name and directory name.
pub fn valid_plugin_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: files
version: 0.1.0
interface: agent:plugin@0.1.0
description: Read and write files in the workspace.
sha256: 0000000000000000000000000000000000000000000000000000000000000000
tools: [list_files, read_file]
permissions:
  workspace: write
  http:
    hosts: [example.com, \"*.example.org\"]
  memory_mb: 64
  timeout_ms: 10000
  output_kb: 256
";

    fn with(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "fixture lacks {from}");
        GOOD.replace(from, to)
    }

    fn refused(text: &str) -> String {
        Manifest::from_yaml(text, "test.yaml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn good_manifest_parses_with_normalised_hosts() {
        let m = Manifest::from_yaml(GOOD, "test.yaml").unwrap();
        assert_eq!(m.permissions.workspace, WorkspaceAccess::Write);
        assert_eq!(
            m.host_patterns(),
            vec![
                HostPattern::Exact("example.com".into()),
                HostPattern::Subdomains("example.org".into())
            ]
        );
    }

    #[test]
    fn defaults_fill_missing_limits() {
        let text = "name: x\nversion: '1'\ninterface: agent:plugin@0.1.0\nsha256: \
                    0000000000000000000000000000000000000000000000000000000000000000\ntools: [t]\n";
        let m = Manifest::from_yaml(text, "t").unwrap();
        assert_eq!(m.permissions.workspace, WorkspaceAccess::None);
        assert!(m.permissions.http.hosts.is_empty());
        assert_eq!(
            (m.permissions.memory_mb, m.permissions.timeout_ms),
            (64, 10_000)
        );
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let e = refused(&with("  memory_mb: 64", "  memory_mb: 64\n  paths: [/etc]"));
        assert!(e.contains("unknown field `paths`"), "{e}");
        let e = refused(&format!("{GOOD}extra: 1\n"));
        assert!(e.contains("unknown field `extra`"), "{e}");
        let e = refused(&with("    hosts:", "    allow_all: true\n    hosts:"));
        assert!(e.contains("unknown field `allow_all`"), "{e}");
    }

    #[test]
    fn wildcard_and_malformed_hosts_are_refused() {
        for (host, expect) in [
            ("\"*\"", "every host"),
            ("\"*.com\"", "top-level domain"),
            ("https://example.com", "scheme"),
            ("example.com/path", "path"),
            ("example.com:8080", "port"),
            ("\"a.*.example.com\"", "leading"),
            ("\"\"", "empty"),
        ] {
            let e = refused(&with(
                "[example.com, \"*.example.org\"]",
                &format!("[{host}]"),
            ));
            assert!(
                e.contains("permissions.http.hosts[0]") && e.contains(expect),
                "{host}: {e}"
            );
        }
    }

    #[test]
    fn absurd_limits_are_refused_naming_the_field() {
        for (from, to, field) in [
            ("memory_mb: 64", "memory_mb: 0", "permissions.memory_mb"),
            ("memory_mb: 64", "memory_mb: 4097", "permissions.memory_mb"),
            (
                "timeout_ms: 10000",
                "timeout_ms: 0",
                "permissions.timeout_ms",
            ),
            (
                "timeout_ms: 10000",
                "timeout_ms: 600001",
                "permissions.timeout_ms",
            ),
            ("output_kb: 256", "output_kb: 0", "permissions.output_kb"),
            (
                "output_kb: 256",
                "output_kb: 65537",
                "permissions.output_kb",
            ),
        ] {
            let e = refused(&with(from, to));
            assert!(e.contains(field), "{to}: {e}");
        }
        let e = refused(&with("memory_mb: 64", "memory_mb: -1"));
        assert!(e.contains("memory_mb"), "{e}");
    }

    #[test]
    fn other_fields_are_checked() {
        assert!(refused(&with("agent:plugin@0.1.0", "agent:plugin@9.0.0")).contains("`interface`"));
        assert!(refused(&with("name: files", "name: ../evil")).contains("`name`"));
        assert!(refused(&with("name: files", "name: Files")).contains("`name`"));
        assert!(refused(&with("tools: [list_files, read_file]", "tools: []")).contains("`tools`"));
        assert!(
            refused(&with("tools: [list_files, read_file]", "tools: [a, a]")).contains("tools[1]")
        );
        assert!(
            refused(&with("tools: [list_files, read_file]", "tools: [Bad-Name]"))
                .contains("tools[0]")
        );
        assert!(
            refused(&with(
                "0000000000000000000000000000000000000000000000000000000000000000",
                "abc"
            ))
            .contains("`sha256`")
        );
        assert!(refused(&with("workspace: write", "workspace: root")).contains("workspace"));
    }

    #[test]
    fn wasm_hash_and_tool_list_are_checked() {
        let mut m = Manifest::from_yaml(GOOD, "t").unwrap();
        m.sha256 = sha256_hex(b"wasm");
        m.verify_wasm(b"wasm").unwrap();
        let e = m.verify_wasm(b"wasm!").unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
        m.check_tools(["read_file", "list_files"]).unwrap();
        let e = m
            .check_tools(["read_file", "rm_rf"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("listed but not offered: [list_files]")
                && e.contains("offered but not listed: [rm_rf]"),
            "{e}"
        );
    }

    #[test]
    fn host_patterns_match_exact_and_subdomains_only() {
        let p = HostPattern::parse("*.example.com").unwrap();
        assert!(p.matches("a.example.com") && p.matches("a.b.example.com"));
        assert!(
            !p.matches("example.com")
                && !p.matches("evilexample.com")
                && !p.matches("example.com.evil.net")
        );
        let p = HostPattern::parse("Example.COM.").unwrap();
        assert!(p.matches("example.com") && !p.matches("a.example.com"));
        // Odd IPv4 spellings are normalised, so an allowlist cannot be dodged by spelling.
        assert_eq!(
            HostPattern::parse("0x7f.1").unwrap(),
            HostPattern::Exact("127.0.0.1".into())
        );
        assert_eq!(
            HostPattern::parse("[::1]").unwrap(),
            HostPattern::Exact("[::1]".into())
        );
    }
}
