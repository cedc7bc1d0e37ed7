//! Installing and removing plugins: finding a plugin's manifest and
//! `.wasm`, checking both (and its tools) before anything is written, then
//! writing it under `Dirs::plugins/<name>/` in one rename; removing it the
//! same way, so a half-written or half-removed plugin never loads.
//!
//! Installing records the approval of the manifest bytes it writes (see
//! `approval`) before the plugin's directory appears; removing forgets it.

use std::path::{Path, PathBuf};

use super::approval::{self, Approval};
use super::loaded::compile;
use super::manifest::Manifest;
use super::policy::Grant;
use super::specs::build_specs;
use super::{MANIFEST_FILE, PluginError, PluginHost, WASM_FILE, builtin, cache, io_err, manifest};
use crate::tools::ToolSpec;

/// A plugin checked and ready to be installed; show it, then commit it.
#[derive(Debug)]
pub struct InstallPlan {
    /// Its manifest.
    pub manifest: Manifest,
    /// What it would be granted under the current policy.
    pub grant: Grant,
    /// Its tools.
    pub tools: Vec<ToolSpec>,
    wasm: Vec<u8>,
}

impl PluginHost {
    /// Check a plugin for installation: find its manifest and `.wasm`, verify
    /// both, compile it and ask it for its tools. Nothing is written to the
    /// plugins directory yet.
    pub async fn prepare_install(&self, path: &Path) -> Result<InstallPlan, PluginError> {
        let (manifest_path, wasm_path) = locate_install_source(path)?;
        let text = std::fs::read_to_string(&manifest_path).map_err(io_err(&manifest_path))?;
        let manifest = Manifest::from_yaml(&text, &manifest_path.display().to_string())?;
        if builtin::is_builtin(&manifest.name) {
            return Err(PluginError::Builtin(manifest.name));
        }
        if self.dirs.plugins.join(&manifest.name).exists() {
            return Err(PluginError::AlreadyInstalled(manifest.name));
        }
        let wasm = std::fs::read(&wasm_path).map_err(io_err(&wasm_path))?;
        manifest.verify_wasm(&wasm)?;
        let grant = self.policy.grant(&manifest);
        let (pre, _) = compile(&self.shared, &manifest, wasm.clone()).await?;
        let described = self.describe(&manifest, &grant, &pre).await?;
        let tools = build_specs(&manifest, &grant, false, &described)?;
        for spec in &tools {
            for other in self.plugins.values() {
                if other.specs.iter().any(|s| s.name == spec.name) {
                    return Err(PluginError::DuplicateTool {
                        plugin: manifest.name.clone(),
                        tool: spec.name.clone(),
                        other: other.manifest.name.clone(),
                    });
                }
            }
        }
        Ok(InstallPlan {
            manifest,
            grant,
            tools,
            wasm,
        })
    }

    /// Install a prepared plugin under `Dirs::plugins/<name>/` (atomically).
    pub fn commit_install(&self, plan: InstallPlan) -> Result<PathBuf, PluginError> {
        let root = &self.dirs.plugins;
        std::fs::create_dir_all(root).map_err(io_err(root))?;
        let dest = root.join(&plan.manifest.name);
        if dest.exists() {
            return Err(PluginError::AlreadyInstalled(plan.manifest.name));
        }
        let tmp = root.join(format!(
            ".install-{}-{}",
            plan.manifest.name,
            rand::random::<u32>()
        ));
        let write = || -> Result<(), PluginError> {
            std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
            let yaml = plan.manifest.to_yaml().map_err(|e| PluginError::Source {
                path: tmp.clone(),
                reason: e.to_string(),
            })?;
            cache::write_atomic(&tmp.join(MANIFEST_FILE), yaml.as_bytes(), false)
                .map_err(io_err(&tmp))?;
            cache::write_atomic(&tmp.join(WASM_FILE), &plan.wasm, false).map_err(io_err(&tmp))?;
            // What the user was shown and agreed to: these manifest bytes.
            approval::store(
                &self.dirs.data,
                &Approval::of(&plan.manifest, yaml.as_bytes()),
            )?;
            std::fs::rename(&tmp, &dest).map_err(io_err(&dest))
        };
        let result = write();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
            let _ = approval::forget(&self.dirs.data, &plan.manifest.name);
        }
        result.map(|()| dest)
    }

    /// Remove an installed plugin; returns the directory removed.
    pub fn remove(&self, name: &str) -> Result<PathBuf, PluginError> {
        if builtin::is_builtin(name) {
            return Err(PluginError::Builtin(name.to_string()));
        }
        if !manifest::valid_plugin_name(name) {
            return Err(PluginError::NotFound(name.to_string()));
        }
        let dir = self.dirs.plugins.join(name);
        if !dir.join(MANIFEST_FILE).exists() && !dir.join(WASM_FILE).exists() {
            return Err(PluginError::NotFound(name.to_string()));
        }
        // Move aside first so a half-removed plugin never loads.
        let trash = self
            .dirs
            .plugins
            .join(format!(".remove-{name}-{}", rand::random::<u32>()));
        std::fs::rename(&dir, &trash).map_err(io_err(&dir))?;
        approval::forget(&self.dirs.data, name)?;
        std::fs::remove_dir_all(&trash).map_err(io_err(&trash))?;
        Ok(dir)
    }
}

/// Find the manifest and `.wasm` of an install source: a directory (holding
/// `manifest.yaml` or one `*.manifest.yaml`, and `<name>.wasm`, `plugin.wasm`
/// or a single `.wasm`), a manifest file, or a `.wasm` file with its manifest
/// beside it (`<stem>.manifest.yaml` or `manifest.yaml`).
pub fn locate_install_source(path: &Path) -> Result<(PathBuf, PathBuf), PluginError> {
    let src_err = |reason: String| PluginError::Source {
        path: path.to_path_buf(),
        reason,
    };
    let list = |dir: &Path, suffix: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let name_of = |manifest: &Path| -> Option<String> {
        let text = std::fs::read_to_string(manifest).ok()?;
        let v: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
        v.get("name")?.as_str().map(str::to_owned)
    };
    let wasm_in = |dir: &Path, name: Option<&str>| -> Result<PathBuf, PluginError> {
        let mut candidates = Vec::new();
        if let Some(n) = name {
            candidates.push(dir.join(format!("{n}.wasm")));
            candidates.push(dir.join(format!("{}.wasm", n.replace('-', "_"))));
        }
        candidates.push(dir.join(WASM_FILE));
        if let Some(found) = candidates.into_iter().find(|c| c.is_file()) {
            return Ok(found);
        }
        let all = list(dir, ".wasm");
        match all.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(src_err(format!(
                "no .wasm found in {}; build the plugin first (`agent plugin build`)",
                dir.display()
            ))),
            _ => Err(src_err(format!(
                "several .wasm files in {}; name it {}.wasm",
                dir.display(),
                name.unwrap_or("plugin")
            ))),
        }
    };
    if path.is_dir() {
        let manifest = if path.join(MANIFEST_FILE).is_file() {
            path.join(MANIFEST_FILE)
        } else {
            match list(path, ".manifest.yaml").as_slice() {
                [one] => one.clone(),
                [] => return Err(src_err(
                    "no manifest.yaml here; a plugin directory holds manifest.yaml and its .wasm"
                        .into(),
                )),
                _ => {
                    return Err(src_err(
                        "several *.manifest.yaml here; pass the one to install".into(),
                    ));
                }
            }
        };
        let name = name_of(&manifest);
        let wasm = wasm_in(path, name.as_deref())?;
        return Ok((manifest, wasm));
    }
    if !path.is_file() {
        return Err(src_err("no such file or directory".into()));
    }
    let file = path.to_string_lossy();
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    if file.ends_with(".yaml") || file.ends_with(".yml") {
        let name = name_of(path);
        let wasm = wasm_in(&dir, name.as_deref())?;
        Ok((path.to_path_buf(), wasm))
    } else if file.ends_with(".wasm") {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let manifest = [
            dir.join(format!("{stem}.manifest.yaml")),
            dir.join(MANIFEST_FILE),
        ]
        .into_iter()
        .find(|m| m.is_file())
        .ok_or_else(|| {
            src_err(format!(
                "no manifest beside it ({stem}.manifest.yaml or manifest.yaml)"
            ))
        })?;
        Ok((manifest, path.to_path_buf()))
    } else {
        Err(src_err(
            "expected a plugin directory, a manifest (.yaml) or a .wasm file".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_sources_are_located() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("manifest.yaml"), "name: my-tool\n").unwrap();
        std::fs::write(d.join("my_tool.wasm"), b"x").unwrap();
        std::fs::write(d.join("other.wasm"), b"x").unwrap();
        assert_eq!(
            locate_install_source(d).unwrap(),
            (d.join("manifest.yaml"), d.join("my_tool.wasm"))
        );
        assert_eq!(
            locate_install_source(&d.join("manifest.yaml")).unwrap().1,
            d.join("my_tool.wasm")
        );
        assert_eq!(
            locate_install_source(&d.join("other.wasm")).unwrap(),
            (d.join("manifest.yaml"), d.join("other.wasm"))
        );
        assert!(locate_install_source(&d.join("nope")).is_err());
    }
}
