//! Model references: the one string a user types to say which model to use.
//!
//! Four forms, told apart without touching the network:
//! - `scripted:FILE.yaml`: replay canned outputs (tests, demos);
//! - `hf:OWNER/NAME/FILE.gguf` (or `hf:OWNER/NAME@REVISION/FILE.gguf`): any
//!   GGUF file on the Hugging Face hub;
//! - a short name from the built-in [registry];
//! - a path to a local `.gguf` file, which must exist.
//!
//! Hub parts are validated strictly (no `..`, no empty segments, a `.gguf`
//! file) because they become paths inside the model cache. With
//! `--endpoint URL` the model string is the server's model id and is not
//! parsed here at all.

use std::path::{Path, PathBuf};

use super::registry::{self, KnownModel};

/// A GGUF file on the Hugging Face hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// `owner/name`.
    pub repo: String,
    /// The file's path inside the repository (may contain `/`).
    pub file: String,
    /// A branch, tag or commit; `None` means `main`.
    pub revision: Option<String>,
}

impl HubFile {
    /// The revision to ask the hub for.
    pub fn revision_or_main(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// Where this file lives in the model cache: `MODELS/OWNER/NAME/FILE`.
    pub fn cache_path(&self, models_dir: &Path) -> PathBuf {
        let mut p = models_dir.to_path_buf();
        p.extend(self.repo.split('/'));
        p.extend(self.file.split('/'));
        p
    }
}

/// Which model a run uses, parsed from the user's string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// `scripted:FILE.yaml`.
    Scripted(PathBuf),
    /// A local `.gguf` file (checked to exist when parsed).
    File(PathBuf),
    /// `hf:OWNER/NAME/FILE.gguf`.
    Hub(HubFile),
    /// A short name from the registry.
    Known(&'static KnownModel),
}

/// A model string that names no model.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error(
        "unknown model `{name}`. Known names: {known}. Other forms: a path to a .gguf file, \
             hf:OWNER/NAME/FILE.gguf (a file on the Hugging Face hub), scripted:FILE.yaml, \
             or --endpoint URL with the server's model id"
    )]
    Unknown { name: String, known: String },
    #[error("model file {0} does not exist (or is not a file). Check the path, or use a short name \
             such as `{default}` or hf:OWNER/NAME/FILE.gguf", default = registry::DEFAULT_MODEL)]
    FileMissing(PathBuf),
    #[error("`{0}` is not a GGUF file: local models must be .gguf files")]
    NotGguf(PathBuf),
    #[error(
        "bad hub reference `{reference}`: {reason}. Expected hf:OWNER/NAME/FILE.gguf, \
             e.g. hf:Qwen/Qwen3-4B-GGUF/Qwen3-4B-Q4_K_M.gguf"
    )]
    BadHub { reference: String, reason: String },
    #[error(
        "empty model reference: give a short name ({known}), a .gguf path or hf:OWNER/NAME/FILE.gguf"
    )]
    Empty { known: String },
}

impl ModelRef {
    /// Parse a model string (see the module docs for the forms).
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ReferenceError::Empty {
                known: registry::known_names(),
            });
        }
        if let Some(path) = s.strip_prefix("scripted:") {
            return Ok(Self::Scripted(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("hf:") {
            return parse_hub(s, rest).map(Self::Hub);
        }
        if let Some(known) = registry::find(s) {
            return Ok(Self::Known(known));
        }
        let looks_like_path = s.to_ascii_lowercase().ends_with(".gguf")
            || s.contains('/')
            || s.contains(std::path::MAIN_SEPARATOR)
            || s.starts_with('.');
        if !looks_like_path {
            return Err(ReferenceError::Unknown {
                name: s.to_string(),
                known: registry::known_names(),
            });
        }
        let path = PathBuf::from(s);
        if !path.is_file() {
            return Err(ReferenceError::FileMissing(path));
        }
        if !s.to_ascii_lowercase().ends_with(".gguf") {
            return Err(ReferenceError::NotGguf(path));
        }
        Ok(Self::File(path))
    }

    /// The hub file to pull, for hub references and known names.
    pub fn hub_file(&self) -> Option<HubFile> {
        match self {
            Self::Hub(h) => Some(h.clone()),
            Self::Known(k) => Some(HubFile {
                repo: k.hub.repo.to_string(),
                file: k.hub.file.to_string(),
                revision: k.hub.revision.map(str::to_string),
            }),
            Self::Scripted(_) | Self::File(_) => None,
        }
    }

    /// Where the GGUF file is (or would be, once pulled); `None` for scripted.
    pub fn gguf_path(&self, models_dir: &Path) -> Option<PathBuf> {
        match self {
            Self::File(p) => Some(p.clone()),
            Self::Scripted(_) => None,
            Self::Hub(_) | Self::Known(_) => self.hub_file().map(|h| h.cache_path(models_dir)),
        }
    }

    /// A short label for transcripts and the journal.
    pub fn label(&self) -> String {
        match self {
            Self::Scripted(p) => format!("scripted:{}", p.display()),
            Self::File(p) => p.display().to_string(),
            Self::Hub(h) => match &h.revision {
                Some(r) => format!("hf:{}@{r}/{}", h.repo, h.file),
                None => format!("hf:{}/{}", h.repo, h.file),
            },
            Self::Known(k) => k.name.to_string(),
        }
    }
}

fn valid_segment(seg: &str) -> bool {
    !seg.is_empty()
        && seg != "."
        && seg != ".."
        && seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn parse_hub(whole: &str, rest: &str) -> Result<HubFile, ReferenceError> {
    let bad = |reason: &str| ReferenceError::BadHub {
        reference: whole.to_string(),
        reason: reason.to_string(),
    };
    let mut parts = rest.splitn(3, '/');
    let owner = parts.next().unwrap_or_default();
    let name_rev = parts.next().unwrap_or_default();
    let file = parts.next().unwrap_or_default();
    let (name, revision) = match name_rev.split_once('@') {
        Some((n, r)) => (n, Some(r)),
        None => (name_rev, None),
    };
    if !valid_segment(owner) || !valid_segment(name) {
        return Err(bad(
            "the repository must be OWNER/NAME (letters, digits, '-', '_', '.')",
        ));
    }
    if let Some(r) = revision
        && !valid_segment(r)
    {
        return Err(bad(
            "the revision after '@' must be a branch, tag or commit id",
        ));
    }
    if file.is_empty() {
        return Err(bad("the file name is missing"));
    }
    if !file.split('/').all(valid_segment) {
        return Err(bad(
            "the file path has an empty, '.', '..' or unusual segment",
        ));
    }
    if !file.to_ascii_lowercase().ends_with(".gguf") {
        return Err(bad("the file must be a .gguf file"));
    }
    Ok(HubFile {
        repo: format!("{owner}/{name}"),
        file: file.to_string(),
        revision: revision.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_references_split_into_repo_and_file() {
        let r = ModelRef::parse("hf:Qwen/Qwen3-4B-GGUF/Qwen3-4B-Q4_K_M.gguf").unwrap();
        let h = r.hub_file().unwrap();
        assert_eq!(h.repo, "Qwen/Qwen3-4B-GGUF");
        assert_eq!(h.file, "Qwen3-4B-Q4_K_M.gguf");
        assert_eq!(h.revision_or_main(), "main");
        assert_eq!(
            h.cache_path(Path::new("/c/models")),
            Path::new("/c/models/Qwen/Qwen3-4B-GGUF/Qwen3-4B-Q4_K_M.gguf")
        );
        assert_eq!(r.label(), "hf:Qwen/Qwen3-4B-GGUF/Qwen3-4B-Q4_K_M.gguf");

        let r = ModelRef::parse("hf:a/b@v1.0/sub/m.GGUF").unwrap();
        let h = r.hub_file().unwrap();
        assert_eq!(
            (h.repo.as_str(), h.file.as_str(), h.revision_or_main()),
            ("a/b", "sub/m.GGUF", "v1.0")
        );
    }

    #[test]
    fn hub_references_that_could_escape_the_cache_are_refused() {
        for bad in [
            "hf:Qwen/Qwen3-4B-GGUF",
            "hf:Qwen/Qwen3-4B-GGUF/",
            "hf:../x/m.gguf",
            "hf:a/b/../../../etc/m.gguf",
            "hf:a/b//m.gguf",
            "hf:a/b/m.bin",
            "hf:a b/c/m.gguf",
            "hf:a/b@/m.gguf",
        ] {
            assert!(
                matches!(ModelRef::parse(bad), Err(ReferenceError::BadHub { .. })),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn short_names_resolve_and_unknown_names_list_the_alternatives() {
        assert!(
            matches!(ModelRef::parse("smollm2-135m"), Ok(ModelRef::Known(k)) if k.name == "smollm2-135m")
        );
        let err = ModelRef::parse("llama-70b").unwrap_err().to_string();
        assert!(
            err.contains("smollm2-135m") && err.contains("qwen3-8b"),
            "{err}"
        );
        assert!(
            err.contains("hf:OWNER/NAME/FILE.gguf")
                && err.contains(".gguf")
                && err.contains("scripted:")
        );
    }

    #[test]
    fn local_files_must_exist_and_be_gguf() {
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("m.gguf");
        std::fs::write(&gguf, b"GGUF").unwrap();
        assert_eq!(
            ModelRef::parse(gguf.to_str().unwrap()),
            Ok(ModelRef::File(gguf.clone()))
        );

        let missing = dir.path().join("nope.gguf");
        assert_eq!(
            ModelRef::parse(missing.to_str().unwrap()),
            Err(ReferenceError::FileMissing(missing))
        );

        let txt = dir.path().join("m.txt");
        std::fs::write(&txt, b"x").unwrap();
        assert_eq!(
            ModelRef::parse(txt.to_str().unwrap()),
            Err(ReferenceError::NotGguf(txt))
        );
    }

    #[test]
    fn scripted_references_keep_their_path() {
        assert_eq!(
            ModelRef::parse("scripted:tests/demo.yaml"),
            Ok(ModelRef::Scripted(PathBuf::from("tests/demo.yaml")))
        );
        assert!(
            ModelRef::parse("scripted:x.yaml")
                .unwrap()
                .gguf_path(Path::new("/m"))
                .is_none()
        );
    }
}
