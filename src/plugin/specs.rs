//! A plugin's tools as the agent sees them: `describe()`'s answer checked
//! against the manifest and turned into [`ToolSpec`]s, each with its class.
//!
//! Decisions:
//! - Tool classes, which approvals key off: `Network` when any HTTP host is
//!   granted; otherwise `Execute` for the built-in `code` plugin (it runs
//!   arbitrary code given by the model); otherwise `Write` for workspace write,
//!   and `Read` for the rest.

use super::PluginError;
use super::manifest::{Manifest, WorkspaceAccess};
use super::policy::Grant;
use crate::sanitize;
use crate::tools::{ToolClass, ToolSpec};

/// The class approvals key off (see the module doc).
fn tool_class(manifest: &Manifest, grant: &Grant, is_builtin: bool, tool: &str) -> ToolClass {
    if grant.http.enabled() {
        ToolClass::Network
    } else if is_builtin && manifest.name == "code" {
        ToolClass::Execute
    } else if grant.workspace == WorkspaceAccess::Write
        && !manifest.read_only_tools.iter().any(|t| t == tool)
    {
        ToolClass::Write
    } else {
        ToolClass::Read
    }
}

/// Check `describe()`'s answer against the manifest and turn it into specs.
pub(super) fn build_specs(
    manifest: &Manifest,
    grant: &Grant,
    is_builtin: bool,
    described: &[(String, String, String)],
) -> Result<Vec<ToolSpec>, PluginError> {
    let bad = |reason: String| PluginError::Describe {
        name: manifest.name.clone(),
        reason,
    };
    manifest.check_tools(described.iter().map(|(n, _, _)| n.as_str()))?;
    let mut specs = Vec::new();
    for (name, description, schema) in described {
        if specs.iter().any(|s: &ToolSpec| &s.name == name) {
            return Err(bad(format!("returned tool `{name}` twice")));
        }
        if description.len() > 4096 {
            return Err(bad(format!(
                "returned a description of `{name}` longer than 4096 bytes"
            )));
        }
        if schema.len() > 64 * 1024 {
            return Err(bad(format!(
                "returned an arguments schema for `{name}` larger than 64 KiB"
            )));
        }
        let args_schema: serde_json::Value = serde_json::from_str(schema).map_err(|e| {
            bad(format!(
                "returned an arguments schema for `{name}` that is not JSON: {e}"
            ))
        })?;
        if args_schema.get("type").and_then(|t| t.as_str()) != Some("object") {
            return Err(bad(format!(
                "returned an arguments schema for `{name}` whose top level is not `{{\"type\": \"object\"}}`"
            )));
        }
        specs.push(ToolSpec {
            name: name.clone(),
            description: sanitize::neutralize_controls(description),
            args_schema,
            class: tool_class(manifest, grant, is_builtin, name),
            source: manifest.name.clone(),
        });
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::policy::PluginPolicy;

    fn manifest(name: &str, ws: &str, hosts: &str) -> Manifest {
        let text = format!(
            "name: {name}\nversion: 0.1.0\ninterface: agent:plugin@0.1.0\nsha256: \
             0000000000000000000000000000000000000000000000000000000000000000\ntools: [a, b]\n\
             permissions:\n  workspace: {ws}\n  http:\n    hosts: {hosts}\n"
        );
        Manifest::from_yaml(&text, "t").unwrap()
    }

    fn described(names: &[&str]) -> Vec<(String, String, String)> {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    format!("does {n}"),
                    r#"{"type":"object"}"#.to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn classes_follow_the_grant() {
        let p = PluginPolicy::default();
        let m = manifest("web", "none", "[example.com]");
        assert_eq!(tool_class(&m, &p.grant(&m), true, "t"), ToolClass::Network);
        let m = manifest("code", "write", "[]");
        assert_eq!(tool_class(&m, &p.grant(&m), true, "t"), ToolClass::Execute);
        assert_eq!(
            tool_class(&m, &p.grant(&m), false, "t"),
            ToolClass::Write,
            "only the built-in `code` is Execute"
        );
        let m = manifest("files", "write", "[]");
        assert_eq!(tool_class(&m, &p.grant(&m), true, "t"), ToolClass::Write);
        let p = PluginPolicy {
            max_workspace: WorkspaceAccess::Read,
            ..Default::default()
        };
        assert_eq!(tool_class(&m, &p.grant(&m), true, "t"), ToolClass::Read);
        // A tool the manifest declares read-only is a read even with write access.
        let mut m = manifest("files", "write", "[]");
        m.read_only_tools = vec!["t".into()];
        let p = PluginPolicy::default();
        assert_eq!(tool_class(&m, &p.grant(&m), true, "t"), ToolClass::Read);
        assert_eq!(
            tool_class(&m, &p.grant(&m), true, "other"),
            ToolClass::Write
        );
    }

    #[test]
    fn describe_answers_are_checked() {
        let m = manifest("x", "none", "[]");
        let g = PluginPolicy::default().grant(&m);
        let specs = build_specs(&m, &g, false, &described(&["a", "b"])).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].source, "x");
        assert!(
            build_specs(&m, &g, false, &described(&["a"]))
                .unwrap_err()
                .to_string()
                .contains("listed but not offered: [b]")
        );
        assert!(build_specs(&m, &g, false, &described(&["a", "b", "c"])).is_err());
        let mut d = described(&["a", "b"]);
        d[1].2 = r#"{"type":"string"}"#.into();
        assert!(
            build_specs(&m, &g, false, &d)
                .unwrap_err()
                .to_string()
                .contains("top level")
        );
        d[1].2 = "not json".into();
        assert!(
            build_specs(&m, &g, false, &d)
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
    }
}
