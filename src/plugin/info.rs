//! What `agent plugin list` and `agent plugin inspect` show: a summary of
//! each plugin, loaded, failed or disabled, with what it asks and is granted.

use serde::Serialize;

use super::loaded::LoadedPlugin;
use super::manifest::{self, WorkspaceAccess};
use super::policy::Grant;
use super::{Origin, PluginError, PluginHost, builtin};
use crate::tools::ToolSpec;

/// A summary of one plugin for `agent plugin list/inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Version from the manifest (empty when the manifest did not load).
    pub version: String,
    /// Description.
    pub description: String,
    /// `builtin` or the install directory.
    pub origin: Origin,
    /// `ok`, `disabled`, `not_approved` (an installed plugin whose manifest
    /// is not the one the user approved) or `error`.
    pub status: String,
    /// The load error, if any.
    pub error: Option<String>,
    /// The tools.
    pub tools: Vec<ToolSpec>,
    /// What the manifest asks.
    pub requested: Option<manifest::Permissions>,
    /// What is granted.
    pub granted: Option<GrantSummary>,
}

/// A grant in words and numbers, for display and JSON.
#[derive(Debug, Clone, Serialize)]
pub struct GrantSummary {
    /// `none`, `read` or `write`.
    pub workspace: WorkspaceAccess,
    /// Hosts it may reach.
    pub http_hosts: Vec<String>,
    /// Any public host.
    pub any_public_host: bool,
    /// Local endpoints it may reach (`plugins.overrides.NAME.allow_local`:
    /// granted to this plugin alone).
    pub allow_local: Vec<String>,
    /// Memory cap, MiB.
    pub memory_mb: u32,
    /// Time limit, ms.
    pub timeout_ms: u64,
    /// Result cap, KiB.
    pub output_kb: usize,
    /// Environment variable names set for it (values not shown).
    pub env: Vec<String>,
}

impl From<&Grant> for GrantSummary {
    fn from(g: &Grant) -> Self {
        Self {
            workspace: g.workspace,
            http_hosts: g.http.hosts.iter().map(ToString::to_string).collect(),
            any_public_host: g.http.any_public_host,
            allow_local: g.http.allow_local.iter().map(ToString::to_string).collect(),
            memory_mb: g.memory_mb,
            timeout_ms: g.timeout.as_millis() as u64,
            output_kb: g.output_bytes / 1024,
            env: g.env.iter().map(|(k, _)| k.clone()).collect(),
        }
    }
}

impl PluginHost {
    fn info(&self, p: &LoadedPlugin) -> PluginInfo {
        PluginInfo {
            name: p.manifest.name.clone(),
            version: p.manifest.version.clone(),
            description: p.manifest.description.clone(),
            origin: p.origin.clone(),
            status: "ok".into(),
            error: None,
            tools: p.specs.clone(),
            requested: Some(p.manifest.permissions.clone()),
            granted: Some(GrantSummary::from(&p.grant)),
        }
    }

    /// Every plugin: loaded, failed, and disabled.
    pub fn list(&self) -> Vec<PluginInfo> {
        let mut out: Vec<PluginInfo> = self
            .order
            .iter()
            .filter_map(|n| self.plugins.get(n))
            .map(|p| self.info(p))
            .collect();
        for (name, origin, e) in &self.failures {
            out.push(PluginInfo {
                name: name.clone(),
                version: String::new(),
                description: String::new(),
                origin: origin.clone(),
                status: if matches!(e, PluginError::NotApproved { .. }) {
                    "not_approved".into()
                } else {
                    "error".into()
                },
                error: Some(e.to_string()),
                tools: Vec::new(),
                requested: None,
                granted: None,
            });
        }
        for name in &self.policy.disabled {
            out.push(PluginInfo {
                name: name.clone(),
                version: String::new(),
                description: String::new(),
                origin: if builtin::is_builtin(name) {
                    Origin::Builtin
                } else {
                    Origin::Installed(self.dirs.plugins.join(name))
                },
                status: "disabled".into(),
                error: None,
                tools: Vec::new(),
                requested: None,
                granted: None,
            });
        }
        out
    }

    /// One plugin's details; `NotFound` if it is not loaded (the error of a
    /// plugin that failed to load is returned as that error).
    pub fn inspect(&self, name: &str) -> Result<PluginInfo, PluginError> {
        if let Some(p) = self.plugins.get(name) {
            return Ok(self.info(p));
        }
        if let Some((_, _, e)) = self.failures.iter().find(|(n, _, _)| n == name) {
            return Err(PluginError::Wasm {
                name: name.to_string(),
                reason: e.to_string(),
            });
        }
        Err(PluginError::NotFound(name.to_string()))
    }
}
