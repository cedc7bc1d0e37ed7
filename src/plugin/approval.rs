//! Approval of installed plugins: what the user agreed to at `agent plugin
//! install` (or `agent plugin approve`), and the check at every load that the
//! plugin still asks for exactly that.
//!
//! A plugin's manifest says what it asks (workspace, hosts, limits) and what
//! it is (its `.wasm`'s sha256, its tools, the description the model reads).
//! The install prompt shows it; the approval pins it:
//!
//! - At install, the sha256 of the exact `manifest.yaml` bytes written, the
//!   `.wasm`'s sha256 and the permissions asked are recorded in
//!   `Dirs::data/plugin-approvals/NAME.json`: outside the plugin's own
//!   directory, so copying or editing a plugin directory cannot bring its own
//!   approval along, and (like all of `Dirs::data`) never inside a workspace.
//! - At load, an installed plugin whose `manifest.yaml` bytes no longer hash
//!   to the approved sha256, or that has no approval at all (put there by
//!   hand, or installed before approvals were recorded), is not loaded: it is
//!   reported as not approved ([`PluginError::NotApproved`], status
//!   `not_approved` in `agent plugin list`), with the command that re-approves
//!   it. It is never loaded with the wider grants its edited manifest asks.
//! - `agent plugin approve NAME` shows what the manifest asks now, what was
//!   approved before and what the config would grant, asks (or takes
//!   `--yes`), and records the bytes it showed: a manifest changed again
//!   while the question was open does not match and stays unloaded.
//! - Any byte counts, not only permissions: a new description or tool list is
//!   also what the user approved (or not). The user's own `config.yaml`
//!   needs no approval; it is the user's choice already.
//! - Built-in plugins are part of the binary and are not affected.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::{self, Manifest, Permissions};
use super::policy::Grant;
use super::specs::build_specs;
use super::{MANIFEST_FILE, PluginError, PluginHost, WASM_FILE, builtin, cache, io_err};
use crate::tools::ToolSpec;

/// What the user approved for one installed plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Plugin name (and directory name).
    pub name: String,
    /// sha256 of the approved `manifest.yaml` bytes.
    pub manifest_sha256: String,
    /// sha256 of the `.wasm` that manifest names.
    pub wasm_sha256: String,
    /// What the approved manifest asked for.
    pub permissions: Permissions,
    /// When it was approved (RFC 3339).
    pub approved_at: String,
}

impl Approval {
    /// The approval of `manifest`, whose file holds exactly `bytes`.
    pub fn of(manifest: &Manifest, bytes: &[u8]) -> Self {
        Self {
            name: manifest.name.clone(),
            manifest_sha256: manifest::sha256_hex(bytes),
            wasm_sha256: manifest.sha256.to_ascii_lowercase(),
            permissions: manifest.permissions.clone(),
            approved_at: crate::memory::journal::now_rfc3339(),
        }
    }
}

/// Where approvals live.
pub(super) fn approvals_dir(data: &Path) -> PathBuf {
    data.join("plugin-approvals")
}

fn record_path(data: &Path, name: &str) -> PathBuf {
    approvals_dir(data).join(format!("{name}.json"))
}

/// The approval recorded for `name`; `Ok(None)` when there is none. A record
/// that cannot be read or parsed is an error naming its file.
pub(super) fn load(data: &Path, name: &str) -> Result<Option<Approval>, PluginError> {
    if !manifest::valid_plugin_name(name) {
        return Ok(None);
    }
    let path = record_path(data, name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let approval: Approval = serde_json::from_str(&text).map_err(|e| PluginError::NotApproved {
        name: name.to_string(),
        reason: format!("its approval record {} is unreadable ({e})", path.display()),
    })?;
    Ok((approval.name == name).then_some(approval))
}

/// Record `approval` (atomically).
pub(super) fn store(data: &Path, approval: &Approval) -> Result<(), PluginError> {
    let dir = approvals_dir(data);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = record_path(data, &approval.name);
    let json = serde_json::to_string_pretty(approval).map_err(|e| PluginError::Source {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    cache::write_atomic(&path, json.as_bytes(), false).map_err(io_err(&path))
}

/// Forget the approval of `name` (a missing record is fine).
pub(super) fn forget(data: &Path, name: &str) -> Result<(), PluginError> {
    if !manifest::valid_plugin_name(name) {
        return Ok(());
    }
    let path = record_path(data, name);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&path)(e)),
        _ => Ok(()),
    }
}

/// `Ok` when `bytes` are the manifest approved for `name`; otherwise the
/// error that says why not and how to approve it.
pub(super) fn check(data: &Path, name: &str, bytes: &[u8]) -> Result<(), PluginError> {
    let not = |reason: String| PluginError::NotApproved {
        name: name.to_string(),
        reason,
    };
    match load(data, name)? {
        None => Err(not(format!(
            "there is no record of its {MANIFEST_FILE} being approved (it was not installed with \
             `agent plugin install`, or before approvals were recorded)"
        ))),
        Some(a) if a.manifest_sha256 != manifest::sha256_hex(bytes) => Err(not(format!(
            "its {MANIFEST_FILE} changed after it was approved on {}",
            a.approved_at
        ))),
        Some(_) => Ok(()),
    }
}

/// An installed plugin checked and ready to be approved; show it, then commit it.
#[derive(Debug)]
pub struct ApprovalPlan {
    /// Its manifest as it is now.
    pub manifest: Manifest,
    /// What it would be granted under the current policy.
    pub grant: Grant,
    /// Its tools.
    pub tools: Vec<ToolSpec>,
    /// What was approved before, if anything.
    pub previous: Option<Approval>,
    /// True when the manifest is exactly the one approved before.
    pub unchanged: bool,
    approval: Approval,
}

impl PluginHost {
    /// Check an installed plugin for approval: read its manifest as it is
    /// now, verify its `.wasm`, compile it and ask it for its tools. Nothing
    /// is recorded yet.
    pub async fn prepare_approve(&self, name: &str) -> Result<ApprovalPlan, PluginError> {
        if builtin::is_builtin(name) {
            return Err(PluginError::Builtin(name.to_string()));
        }
        if !manifest::valid_plugin_name(name) {
            return Err(PluginError::NotFound(name.to_string()));
        }
        let dir = self.dirs.plugins.join(name);
        let manifest_path = dir.join(MANIFEST_FILE);
        let bytes = match std::fs::read(&manifest_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PluginError::NotFound(name.to_string()));
            }
            Err(e) => return Err(io_err(&manifest_path)(e)),
        };
        let text = String::from_utf8(bytes.clone()).map_err(|_| PluginError::Source {
            path: manifest_path.clone(),
            reason: "is not UTF-8 text".into(),
        })?;
        let manifest = Manifest::from_yaml(&text, &manifest_path.display().to_string())?;
        if manifest.name != name {
            return Err(PluginError::Source {
                path: dir,
                reason: format!(
                    "holds plugin `{}`; the directory must be named after it",
                    manifest.name
                ),
            });
        }
        let wasm_path = dir.join(WASM_FILE);
        let wasm = std::fs::read(&wasm_path).map_err(io_err(&wasm_path))?;
        manifest.verify_wasm(&wasm)?;
        let grant = self.policy.grant(&manifest);
        let (pre, _) = super::loaded::compile(&self.shared, &manifest, wasm).await?;
        let described = self.describe(&manifest, &grant, &pre).await?;
        let tools = build_specs(&manifest, &grant, false, &described)?;
        let previous = load(&self.dirs.data, name).ok().flatten();
        let approval = Approval::of(&manifest, &bytes);
        let unchanged = previous
            .as_ref()
            .is_some_and(|p| p.manifest_sha256 == approval.manifest_sha256);
        Ok(ApprovalPlan {
            manifest,
            grant,
            tools,
            previous,
            unchanged,
            approval,
        })
    }

    /// Record a prepared approval: the manifest bytes it showed load from now on.
    pub fn commit_approve(&self, plan: ApprovalPlan) -> Result<(), PluginError> {
        store(&self.dirs.data, &plan.approval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(hosts: &str) -> (Manifest, String) {
        let text = format!(
            "name: demo\nversion: 0.1.0\ninterface: agent:plugin@0.1.0\nsha256: \
             00000000000000000000000000000000000000000000000000000000000000ab\ntools: [t]\n\
             permissions:\n  workspace: read\n  http:\n    hosts: {hosts}\n"
        );
        (Manifest::from_yaml(&text, "t").unwrap(), text)
    }

    #[test]
    fn only_the_approved_bytes_pass_and_a_missing_record_is_not_approval() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path();
        let (m, text) = manifest("[]");
        let e = check(data, "demo", text.as_bytes()).unwrap_err();
        assert!(
            matches!(e, PluginError::NotApproved { .. })
                && e.to_string().contains("agent plugin approve demo"),
            "{e}"
        );
        store(data, &Approval::of(&m, text.as_bytes())).unwrap();
        check(data, "demo", text.as_bytes()).unwrap();
        let (_, wider) = manifest("[evil.example]");
        let e = check(data, "demo", wider.as_bytes()).unwrap_err();
        assert!(
            e.to_string().contains("changed after it was approved"),
            "{e}"
        );
        // A record for another name does not approve this one.
        let mut other = Approval::of(&m, text.as_bytes());
        other.name = "other".into();
        std::fs::write(
            record_path(data, "demo"),
            serde_json::to_string(&other).unwrap(),
        )
        .unwrap();
        assert!(check(data, "demo", text.as_bytes()).is_err());
        // Garbage is an error, never approval.
        std::fs::write(record_path(data, "demo"), "{").unwrap();
        assert!(check(data, "demo", text.as_bytes()).is_err());
        forget(data, "demo").unwrap();
        forget(data, "demo").unwrap();
        assert!(load(data, "demo").unwrap().is_none());
    }
}
