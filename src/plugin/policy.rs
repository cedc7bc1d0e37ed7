//! The user's side of plugin permissions: the `plugins:` section of
//! `config.yaml`, and the grant computed from it and a plugin's manifest.
//!
//! ```yaml
//! plugins:
//!   max_workspace: write        # the most any plugin gets: none | read | write
//!   max_memory_mb: 1024         # caps every plugin's memory_mb
//!   max_timeout_ms: 120000      # caps every plugin's timeout_ms
//!   max_output_kb: 1024         # caps every plugin's output_kb
//!   network: true               # false: no plugin reaches the network at all
//!   http_max_response_kb: 4096  # body cap per HTTP response
//!   http_timeout_ms: 20000      # time cap per http-fetch (all redirect hops)
//!   http_max_requests: 20       # http-fetch calls per tool call (no crawling without bound)
//!   disabled: [code]            # plugins not loaded at all
//!   overrides:
//!     web:
//!       workspace: none         # lowers (never raises) what the manifest asks
//!       network: true
//!       allow_hosts: [searx.example.org]  # hosts added for this plugin (your choice)
//!       any_public_host: false  # true: any public address (never private ones)
//!       allow_local: ["127.0.0.1:8888"]  # local endpoints (host:port) this plugin may reach
//!       memory_mb: 128          # replaces the manifest's limit, still under max_*
//!       timeout_ms: 30000
//!       output_kb: 256
//!       env: {AGENT_WEB_ENGINE: searxng, AGENT_WEB_SEARCH_URL: "http://127.0.0.1:8888"}
//! ```
//!
//! Decisions:
//! - The grant is the intersection of what the manifest asks and what the user
//!   allows: workspace access is the least of the manifest's, `max_workspace`
//!   and the override's; limits are the manifest's (or the override's) capped by
//!   `max_*`. What the user adds on purpose is granted too: `allow_hosts`,
//!   `any_public_host` and `allow_local` are the user's explicit choice, each
//!   for the one plugin it is written under.
//! - `any_public_host` never reaches private, loopback or link-local addresses;
//!   only `allow_local` does, and only for the exact `host:port` listed, and only
//!   for the plugin it is listed under (`overrides.NAME.allow_local`). A local
//!   service (a search engine, a database's HTTP port) is often unauthenticated:
//!   granting it to every plugin with some network, as the old global
//!   `plugins.allow_local` did, let a plugin installed for one site reach it.
//!   Like `allow_hosts`, a plugin's own `allow_local` is network for it even if
//!   its manifest lists no host; `network: false` (global or the plugin's)
//!   still turns it off.
//! - The old global `plugins.allow_local` is refused with an error that says
//!   how to rewrite it, rather than read with a new meaning or ignored: either
//!   would silently change what a config grants.
//! - `Default` is safe: workspace write is allowed only to plugins that ask for
//!   it, no extra hosts, no local endpoints, nothing public beyond the manifests'
//!   own lists.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::manifest::{
    HostPattern, MAX_MEMORY_MB, MAX_OUTPUT_KB, MAX_TIMEOUT_MS, Manifest, WorkspaceAccess,
    normalize_host,
};

/// The `plugins:` section of the user's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginPolicy {
    /// The most workspace access any plugin gets.
    pub max_workspace: WorkspaceAccess,
    /// Upper bound on any plugin's memory cap, MiB.
    pub max_memory_mb: u32,
    /// Upper bound on any plugin's time limit, ms.
    pub max_timeout_ms: u64,
    /// Upper bound on any plugin's result cap, KiB.
    pub max_output_kb: u32,
    /// `false` turns all plugin network access off.
    pub network: bool,
    /// No longer accepted (local endpoints are granted per plugin, under
    /// `overrides.NAME.allow_local`); read only to refuse it with a message
    /// that says how to rewrite it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_local: Vec<String>,
    /// Body cap per HTTP response, KiB.
    pub http_max_response_kb: u32,
    /// Time cap per `http-fetch` call, all hops together, ms.
    pub http_timeout_ms: u64,
    /// Most `http-fetch` calls one tool call may make.
    pub http_max_requests: u32,
    /// Plugins not loaded.
    pub disabled: Vec<String>,
    /// Per-plugin settings, by plugin name.
    pub overrides: BTreeMap<String, PluginOverride>,
}

impl Default for PluginPolicy {
    fn default() -> Self {
        Self {
            max_workspace: WorkspaceAccess::Write,
            max_memory_mb: 1024,
            max_timeout_ms: 120_000,
            max_output_kb: 1024,
            network: true,
            allow_local: Vec::new(),
            http_max_response_kb: 4096,
            http_timeout_ms: 20_000,
            http_max_requests: 20,
            disabled: Vec::new(),
            overrides: BTreeMap::new(),
        }
    }
}

/// The user's settings for one plugin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginOverride {
    /// Lowers the plugin's workspace access.
    pub workspace: Option<WorkspaceAccess>,
    /// `false` turns this plugin's network off.
    pub network: Option<bool>,
    /// Hosts this plugin may reach besides its manifest's.
    pub allow_hosts: Vec<String>,
    /// Let this plugin reach any public address.
    pub any_public_host: bool,
    /// Local endpoints (`host:port`) this plugin may reach despite their
    /// private or loopback address.
    pub allow_local: Vec<String>,
    /// Replaces the manifest's memory cap (still under `max_memory_mb`).
    pub memory_mb: Option<u32>,
    /// Replaces the manifest's time limit (still under `max_timeout_ms`).
    pub timeout_ms: Option<u64>,
    /// Replaces the manifest's result cap (still under `max_output_kb`).
    pub output_kb: Option<u32>,
    /// Environment variables the plugin sees.
    pub env: BTreeMap<String, String>,
}

/// A local endpoint the user allowed, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// Normalised host (as [`normalize_host`] writes it).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for LocalEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl LocalEndpoint {
    /// Parse `host:port` (`[::1]:8080` for IPv6).
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        if entry.contains("://") || entry.contains('/') {
            return Err(format!(
                "`{entry}`: write `host:port`, e.g. `127.0.0.1:8888`, without scheme or path"
            ));
        }
        let (host, port) = entry.rsplit_once(':').ok_or_else(|| {
            format!("`{entry}` has no port; write `host:port`, e.g. `127.0.0.1:8888`")
        })?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{entry}`: `{port}` is not a port number"))?;
        if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
            return Err(format!(
                "`{entry}`: write `host:port`, with IPv6 addresses in brackets (`[::1]:8080`)"
            ));
        }
        let host = normalize_host(host).map_err(|e| format!("`{entry}`: {e}"))?;
        Ok(Self { host, port })
    }
}

/// Limits and rules for the HTTP capability, part of a [`Grant`].
#[derive(Debug, Clone, PartialEq)]
pub struct HttpGrant {
    /// Hosts the plugin may name in a URL.
    pub hosts: Vec<HostPattern>,
    /// Any host name, as long as it resolves to public addresses.
    pub any_public_host: bool,
    /// Local endpoints reachable despite being private.
    pub allow_local: Vec<LocalEndpoint>,
    /// Body cap per response.
    pub max_response_bytes: usize,
    /// Time cap per `http-fetch`.
    pub timeout: Duration,
    /// Calls per tool call.
    pub max_requests: u32,
}

impl HttpGrant {
    /// True when the plugin can reach anything at all.
    pub fn enabled(&self) -> bool {
        self.any_public_host || !self.hosts.is_empty() || !self.allow_local.is_empty()
    }
}

/// What one plugin is allowed, after manifest and policy are combined.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// Workspace access.
    pub workspace: WorkspaceAccess,
    /// Network.
    pub http: HttpGrant,
    /// Memory cap, MiB.
    pub memory_mb: u32,
    /// Time limit per call.
    pub timeout: Duration,
    /// Result cap, bytes.
    pub output_bytes: usize,
    /// Environment for the guest.
    pub env: Vec<(String, String)>,
}

/// A `plugins:` setting the host refuses.
#[derive(Debug, thiserror::Error)]
#[error("config `plugins.{key}`: {reason}")]
pub struct PolicyError {
    /// Dotted key under `plugins:`.
    pub key: String,
    /// What is wrong and what is accepted.
    pub reason: String,
}

impl PluginPolicy {
    /// Check every value; the error names the key.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |key: String, reason: String| PolicyError { key, reason };
        if self.max_memory_mb == 0 || self.max_memory_mb > MAX_MEMORY_MB {
            return Err(bad(
                "max_memory_mb".into(),
                format!("use 1..={MAX_MEMORY_MB}"),
            ));
        }
        if self.max_timeout_ms == 0 || self.max_timeout_ms > MAX_TIMEOUT_MS {
            return Err(bad(
                "max_timeout_ms".into(),
                format!("use 1..={MAX_TIMEOUT_MS}"),
            ));
        }
        if self.max_output_kb == 0 || self.max_output_kb > MAX_OUTPUT_KB {
            return Err(bad(
                "max_output_kb".into(),
                format!("use 1..={MAX_OUTPUT_KB}"),
            ));
        }
        if self.http_max_response_kb == 0 || self.http_max_response_kb > 256 * 1024 {
            return Err(bad("http_max_response_kb".into(), "use 1..=262144".into()));
        }
        if self.http_timeout_ms == 0 || self.http_timeout_ms > MAX_TIMEOUT_MS {
            return Err(bad(
                "http_timeout_ms".into(),
                format!("use 1..={MAX_TIMEOUT_MS}"),
            ));
        }
        if self.http_max_requests == 0 || self.http_max_requests > 10_000 {
            return Err(bad("http_max_requests".into(), "use 1..=10000".into()));
        }
        if !self.allow_local.is_empty() {
            let list = self
                .allow_local
                .iter()
                .map(|e| format!("{e:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(bad(
                "allow_local".into(),
                format!(
                    "this global list is no longer read: local endpoints are granted to one plugin each. \
                     Move the entries under the plugin that needs them, e.g. for the web plugin \
                     `plugins: {{overrides: {{web: {{allow_local: [{list}]}}}}}}`, and delete `plugins.allow_local`"
                ),
            ));
        }
        for (name, o) in &self.overrides {
            for (i, h) in o.allow_hosts.iter().enumerate() {
                HostPattern::parse(h)
                    .map_err(|r| bad(format!("overrides.{name}.allow_hosts[{i}]"), r))?;
            }
            for (i, e) in o.allow_local.iter().enumerate() {
                LocalEndpoint::parse(e)
                    .map_err(|r| bad(format!("overrides.{name}.allow_local[{i}]"), r))?;
            }
            let limits = [
                (
                    "memory_mb",
                    o.memory_mb.map(u64::from),
                    u64::from(MAX_MEMORY_MB),
                ),
                ("timeout_ms", o.timeout_ms, MAX_TIMEOUT_MS),
                (
                    "output_kb",
                    o.output_kb.map(u64::from),
                    u64::from(MAX_OUTPUT_KB),
                ),
            ];
            for (key, value, max) in limits {
                if let Some(v) = value
                    && (v == 0 || v > max)
                {
                    return Err(bad(
                        format!("overrides.{name}.{key}"),
                        format!("use 1..={max}"),
                    ));
                }
            }
            for key in o.env.keys() {
                if key.is_empty() || key.contains('=') || key.contains('\0') {
                    return Err(bad(
                        format!("overrides.{name}.env"),
                        format!("`{key}` is not a variable name"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// True when the user disabled `name`.
    pub fn is_disabled(&self, name: &str) -> bool {
        self.disabled.iter().any(|d| d == name)
    }

    /// Combine a (validated) manifest with this (validated) policy.
    pub fn grant(&self, manifest: &Manifest) -> Grant {
        let o = self
            .overrides
            .get(&manifest.name)
            .cloned()
            .unwrap_or_default();
        let asked = &manifest.permissions;
        let workspace = asked
            .workspace
            .min(self.max_workspace)
            .min(o.workspace.unwrap_or(WorkspaceAccess::Write));
        let network = self.network && o.network.unwrap_or(true);
        let mut hosts = Vec::new();
        if network {
            hosts = manifest.host_patterns();
            for h in o
                .allow_hosts
                .iter()
                .filter_map(|h| HostPattern::parse(h).ok())
            {
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
        }
        let any_public_host = network && o.any_public_host;
        let mut allow_local: Vec<LocalEndpoint> = Vec::new();
        if network {
            for e in o
                .allow_local
                .iter()
                .filter_map(|e| LocalEndpoint::parse(e).ok())
            {
                if !allow_local.contains(&e) {
                    allow_local.push(e);
                }
            }
        }
        let memory_mb = o
            .memory_mb
            .unwrap_or(asked.memory_mb)
            .min(self.max_memory_mb);
        let timeout_ms = o
            .timeout_ms
            .unwrap_or(asked.timeout_ms)
            .min(self.max_timeout_ms);
        let output_kb = o
            .output_kb
            .unwrap_or(asked.output_kb)
            .min(self.max_output_kb);
        Grant {
            workspace,
            http: HttpGrant {
                hosts,
                any_public_host,
                allow_local,
                max_response_bytes: self.http_max_response_kb as usize * 1024,
                timeout: Duration::from_millis(self.http_timeout_ms),
                max_requests: self.http_max_requests,
            },
            memory_mb,
            timeout: Duration::from_millis(timeout_ms),
            output_bytes: output_kb as usize * 1024,
            env: o.env.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(workspace: &str, hosts: &str) -> Manifest {
        let text = format!(
            "name: web\nversion: 0.1.0\ninterface: agent:plugin@0.1.0\nsha256: \
             0000000000000000000000000000000000000000000000000000000000000000\ntools: [t]\n\
             permissions:\n  workspace: {workspace}\n  http:\n    hosts: {hosts}\n  memory_mb: 128\n  timeout_ms: 30000\n"
        );
        Manifest::from_yaml(&text, "t").unwrap()
    }

    fn policy(yaml: &str) -> PluginPolicy {
        let p: PluginPolicy = serde_yaml::from_str(yaml).unwrap();
        p.validate().unwrap();
        p
    }

    #[test]
    fn default_policy_grants_only_what_manifests_ask() {
        let p = PluginPolicy::default();
        p.validate().unwrap();
        let g = p.grant(&manifest("write", "[duckduckgo.com]"));
        assert_eq!(g.workspace, WorkspaceAccess::Write);
        assert_eq!(
            g.http.hosts,
            vec![HostPattern::Exact("duckduckgo.com".into())]
        );
        assert!(!g.http.any_public_host && g.http.allow_local.is_empty());
        assert_eq!(
            (g.memory_mb, g.timeout),
            (128, Duration::from_millis(30_000))
        );
        let g = p.grant(&manifest("none", "[]"));
        assert_eq!(g.workspace, WorkspaceAccess::None);
        assert!(!g.http.enabled());
    }

    #[test]
    fn user_lowers_workspace_and_limits_but_never_raises_workspace() {
        let p =
            policy("max_workspace: read\nmax_memory_mb: 64\noverrides: {web: {timeout_ms: 500}}");
        let g = p.grant(&manifest("write", "[]"));
        assert_eq!(g.workspace, WorkspaceAccess::Read);
        assert_eq!((g.memory_mb, g.timeout), (64, Duration::from_millis(500)));
        let p = policy("overrides: {web: {workspace: write}}");
        assert_eq!(
            p.grant(&manifest("read", "[]")).workspace,
            WorkspaceAccess::Read
        );
        let p = policy("overrides: {web: {workspace: none}}");
        assert_eq!(
            p.grant(&manifest("write", "[]")).workspace,
            WorkspaceAccess::None
        );
    }

    #[test]
    fn case07_local_endpoints_are_granted_to_the_plugin_they_are_listed_under_only() {
        let p = policy(
            "overrides: {web: {allow_hosts: [searx.example.org], allow_local: ['127.0.0.1:8888'], env: {A: b}}}",
        );
        let g = p.grant(&manifest("none", "[duckduckgo.com]"));
        assert_eq!(g.http.hosts.len(), 2);
        assert_eq!(
            g.http.allow_local,
            vec![LocalEndpoint {
                host: "127.0.0.1".into(),
                port: 8888
            }]
        );
        assert_eq!(g.env, vec![("A".to_string(), "b".to_string())]);
        // Another plugin, networked or not, gets none of web's endpoints.
        for hosts in ["[duckduckgo.com]", "[]"] {
            let mut m = manifest("write", hosts);
            m.name = "other".into();
            let g = p.grant(&m);
            assert!(g.http.allow_local.is_empty(), "{hosts}");
        }
        // A plugin's own local endpoint is network for it, even with no hosts.
        let p = policy("overrides: {code: {allow_local: ['localhost:5432']}}");
        let mut m = manifest("write", "[]");
        m.name = "code".into();
        let g = p.grant(&m);
        assert!(g.http.enabled() && g.http.hosts.is_empty());
        assert_eq!(g.http.allow_local[0].to_string(), "localhost:5432");
    }

    #[test]
    fn case07_the_old_global_allow_local_is_refused_with_how_to_rewrite_it() {
        let p: PluginPolicy = serde_yaml::from_str("allow_local: ['127.0.0.1:8888']").unwrap();
        let e = p.validate().unwrap_err().to_string();
        assert!(
            e.contains("plugins.allow_local")
                && e.contains("overrides: {web: {allow_local: [\"127.0.0.1:8888\"]}}"),
            "{e}"
        );
        // Nothing written by default, so `config show` never prints it.
        let yaml = serde_yaml::to_string(&PluginPolicy::default()).unwrap();
        assert!(!yaml.contains("\nallow_local"), "{yaml}");
    }

    #[test]
    fn network_switches_turn_everything_off() {
        let p = policy(
            "network: false\noverrides: {web: {any_public_host: true, allow_local: ['127.0.0.1:1']}}",
        );
        let g = p.grant(&manifest("none", "[duckduckgo.com]"));
        assert!(!g.http.enabled() && g.http.allow_local.is_empty());
        let p = policy("overrides: {web: {network: false}}");
        assert!(
            !p.grant(&manifest("none", "[duckduckgo.com]"))
                .http
                .enabled()
        );
        let p = policy("overrides: {web: {network: false, allow_local: ['127.0.0.1:1']}}");
        assert!(!p.grant(&manifest("none", "[]")).http.enabled());
    }

    #[test]
    fn bad_settings_are_refused_naming_the_key() {
        let cases = [
            (
                "overrides: {web: {allow_local: ['127.0.0.1']}}",
                "overrides.web.allow_local[0]",
            ),
            (
                "overrides: {web: {allow_local: ['http://127.0.0.1:80/']}}",
                "overrides.web.allow_local[0]",
            ),
            (
                "overrides: {web: {allow_hosts: ['*']}}",
                "overrides.web.allow_hosts[0]",
            ),
            (
                "overrides: {web: {memory_mb: 0}}",
                "overrides.web.memory_mb",
            ),
            ("max_timeout_ms: 0", "max_timeout_ms"),
        ];
        for (yaml, key) in cases {
            let p: PluginPolicy = serde_yaml::from_str(yaml).unwrap();
            let e = p.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
        let e = serde_yaml::from_str::<PluginPolicy>("allow_everything: true")
            .unwrap_err()
            .to_string();
        assert!(e.contains("allow_everything"), "{e}");
    }

    #[test]
    fn local_endpoints_parse_and_normalise() {
        assert_eq!(
            LocalEndpoint::parse("LocalHost:80").unwrap().to_string(),
            "localhost:80"
        );
        assert_eq!(
            LocalEndpoint::parse("[::1]:8080").unwrap().to_string(),
            "[::1]:8080"
        );
        assert!(LocalEndpoint::parse("::1:8080").is_err());
        assert!(LocalEndpoint::parse("host:0").is_err());
    }
}
