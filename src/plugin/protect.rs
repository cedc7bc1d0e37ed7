//! Files in the workspace that other programs execute or obey: git's
//! repository config and hooks, and the attribute files whose filters git
//! runs (security case 42). Writing `core.fsmonitor` into `.git/config`
//! runs a command the next time the user types `git status` there.
//!
//! The promise: tools never change these files. Two layers keep it:
//! - before a call, the approval layer asks a person about any write whose
//!   path argument names one ([`is_protected`]), whatever the policy, and
//!   refuses it when nobody can answer (`--yes` does not cover it);
//! - around every call of a plugin that may write the workspace, the host
//!   takes a [`Snapshot`] of them and puts back whatever the call changed,
//!   created or removed ([`Snapshot::restore`]), so code run by
//!   `run_python`, whose paths nobody can see in advance, cannot change
//!   them either. The call's result then says what was undone.
//!
//! Checked: `.git/config`, every file in `.git/hooks/`, `.git/info/attributes`,
//! and `.gitattributes` and `.gitmodules` at the top of the workspace; and
//! `.git` itself staying what it was (a planted link or file in its place
//! is removed). Other files under `.git` (objects, refs) cannot run code and
//! are not restored. Nested repositories (`sub/.git`) are not watched. All
//! access goes through [`Confined`], so a link planted on the way is never
//! followed.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use crate::confined::Confined;

/// Single files watched, relative to the workspace.
const FILES: &[&str] = &[
    // A file `.git` (a worktree's pointer to its repository).
    ".git",
    ".git/config",
    ".git/info/attributes",
    ".gitattributes",
    ".gitmodules",
];

/// The hooks directory: every file in it is watched.
const HOOKS: &str = ".git/hooks";

/// True when a tool argument `path` (relative to the workspace) names a
/// protected file or anything inside `.git`. A backslash separates parts,
/// as it does for the `files` plugin.
pub fn is_protected(path: &str) -> bool {
    let path = path.trim().replace('\\', "/");
    let mut names = Vec::new();
    for c in Path::new(&path).components() {
        match c {
            Component::Normal(n) => names.push(n.to_string_lossy().to_lowercase()),
            Component::ParentDir => {
                names.pop();
            }
            _ => {}
        }
    }
    match names.first().map(String::as_str) {
        // Case-folded: a case-insensitive file system would make `.GIT` the same directory.
        Some(".git") => true,
        Some(".gitattributes" | ".gitmodules") => names.len() == 1,
        _ => false,
    }
}

/// What the watched files held before a call.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Relative path → contents (`None`: absent).
    files: BTreeMap<String, Option<Vec<u8>>>,
    /// What `.git` was: `Some(true)` a real directory, `Some(false)`
    /// something else, `None` absent.
    git_dir: Option<bool>,
}

fn git_kind(workspace: &Path) -> Option<bool> {
    std::fs::symlink_metadata(workspace.join(".git"))
        .ok()
        .map(|m| m.file_type().is_dir())
}

fn hook_names(workspace: &Path) -> Vec<String> {
    let dir = workspace.join(HOOKS);
    // A link in place of `.git` or `hooks` is not listed through.
    let real_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if !real_dir(&workspace.join(".git")) || !real_dir(&dir) {
        return Vec::new();
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some(format!("{HOOKS}/{}", e.file_name().to_str()?)))
        .collect();
    names.sort();
    names
}

impl Snapshot {
    /// What the watched files of `workspace` hold now.
    pub fn take(workspace: &Path) -> Self {
        let Ok(confined) = Confined::open(workspace) else {
            return Self::default();
        };
        let mut files = BTreeMap::new();
        for rel in FILES
            .iter()
            .map(|s| s.to_string())
            .chain(hook_names(workspace))
        {
            files.insert(rel.clone(), confined.read(Path::new(&rel)).ok());
        }
        Self {
            files,
            git_dir: git_kind(workspace),
        }
    }

    /// Put back whatever changed since the snapshot; returns the paths
    /// restored (empty when nothing changed).
    pub fn restore(&self, workspace: &Path) -> Vec<String> {
        let mut undone = Vec::new();
        let now = git_kind(workspace);
        if now != self.git_dir && now == Some(false) {
            // A link or file put where the repository (or nothing) was.
            if std::fs::remove_file(workspace.join(".git")).is_ok() {
                undone.push(".git".to_string());
            }
        }
        let Ok(confined) = Confined::open(workspace) else {
            return undone;
        };
        let mut watched: Vec<String> = self.files.keys().cloned().collect();
        for hook in hook_names(workspace) {
            if !self.files.contains_key(&hook) {
                watched.push(hook);
            }
        }
        for rel in watched {
            let path = Path::new(&rel);
            let before = self.files.get(&rel).cloned().flatten();
            let after = confined.read(path).ok();
            if before == after {
                continue;
            }
            let exists = std::fs::symlink_metadata(workspace.join(&rel)).is_ok();
            let done = match &before {
                Some(bytes) => confined.write(path, bytes).is_ok(),
                None if exists => {
                    let p = workspace.join(&rel);
                    // Only ever a file or a link: a directory is left, and said.
                    std::fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir())
                        && std::fs::remove_file(&p).is_ok()
                }
                None => true,
            };
            if done {
                undone.push(rel);
            } else {
                tracing::warn!("could not restore protected file {rel}");
                undone.push(format!("{rel} (could not be restored)"));
            }
        }
        undone
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn protected_paths_are_recognised_however_they_are_spelled() {
        for p in [
            ".git/config",
            "./.git/hooks/pre-commit",
            "a/../.git/config",
            ".GIT/config",
            ".gitattributes",
            ".gitmodules",
            ".git",
            ".git\\hooks\\pre-commit",
            ".\\.git\\config",
        ] {
            assert!(is_protected(p), "{p}");
        }
        for p in [
            "src/.gitattributes",
            "notes.txt",
            "git/config",
            ".github/x.yml",
        ] {
            assert!(!is_protected(p), "{p}");
        }
    }

    #[test]
    fn case_42_changes_to_git_config_hooks_and_attributes_are_undone() {
        let ws = tempfile::tempdir().unwrap();
        let w = ws.path();
        std::fs::create_dir_all(w.join(".git/hooks")).unwrap();
        std::fs::write(w.join(".git/config"), "[core]\n\tbare = false\n").unwrap();
        std::fs::write(w.join(".git/hooks/pre-commit.sample"), "#!/bin/sh\n").unwrap();
        std::fs::write(w.join("notes.txt"), "mine").unwrap();
        let snap = Snapshot::take(w);

        std::fs::write(
            w.join(".git/config"),
            "[core]\n\tfsmonitor = touch /tmp/pwned\n",
        )
        .unwrap();
        std::fs::write(w.join(".git/hooks/post-checkout"), "#!/bin/sh\nrm -rf ~\n").unwrap();
        std::fs::remove_file(w.join(".git/hooks/pre-commit.sample")).unwrap();
        std::fs::write(w.join(".gitattributes"), "* filter=evil\n").unwrap();
        std::fs::write(w.join("notes.txt"), "changed by the tool").unwrap();

        let undone = snap.restore(w);
        assert_eq!(
            std::fs::read_to_string(w.join(".git/config")).unwrap(),
            "[core]\n\tbare = false\n"
        );
        assert!(!w.join(".git/hooks/post-checkout").exists());
        assert!(w.join(".git/hooks/pre-commit.sample").exists());
        assert!(!w.join(".gitattributes").exists());
        // Ordinary files are the tool's to change.
        assert_eq!(
            std::fs::read_to_string(w.join("notes.txt")).unwrap(),
            "changed by the tool"
        );
        assert_eq!(undone.len(), 4, "{undone:?}");
        assert!(snap.restore(w).is_empty(), "nothing left to undo");
    }

    #[test]
    fn a_repository_planted_where_there_was_none_is_defused() {
        let ws = tempfile::tempdir().unwrap();
        let w = ws.path();
        let snap = Snapshot::take(w);
        std::fs::create_dir_all(w.join(".git")).unwrap();
        std::fs::write(w.join(".git/config"), "[core]\n\tfsmonitor = evil\n").unwrap();
        let undone = snap.restore(w);
        assert!(!w.join(".git/config").exists(), "{undone:?}");

        // A link in place of .git is removed, its target untouched.
        std::fs::remove_dir_all(w.join(".git")).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("config"), "theirs").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), w.join(".git")).unwrap();
        let undone = snap.restore(w);
        assert!(undone.contains(&".git".to_string()), "{undone:?}");
        assert!(std::fs::symlink_metadata(w.join(".git")).is_err());
        assert_eq!(
            std::fs::read_to_string(elsewhere.path().join("config")).unwrap(),
            "theirs"
        );
    }
}
