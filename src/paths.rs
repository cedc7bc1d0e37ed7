//! Where `agent` keeps things. `AGENT_HOME=DIR` puts config, data (the store)
//! and prompt overrides under one directory; `AGENT_CACHE_DIR=DIR` moves the
//! model and compiled-plugin cache. Otherwise the platform's directories are
//! used (XDG on Linux). Nothing here creates directories: callers create what
//! they write.

use std::path::{Path, PathBuf};

/// The directories of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// `config.yaml` lives here.
    pub config: PathBuf,
    /// The sled store and the REPL history live here.
    pub data: PathBuf,
    /// User prompt overrides (`NAME.yaml` wins over the built-in one).
    pub prompts: PathBuf,
    /// Installed plugins.
    pub plugins: PathBuf,
    /// Downloaded models and compiled plugins.
    pub cache: PathBuf,
}

/// No directory could be determined.
#[derive(Debug, thiserror::Error)]
#[error("cannot determine a home directory for agent's files; set AGENT_HOME=DIR")]
pub struct NoHomeError;

impl Dirs {
    /// Resolve from the environment (`AGENT_HOME`, `AGENT_CACHE_DIR`) or the
    /// platform's defaults.
    pub fn from_env() -> Result<Self, NoHomeError> {
        let home = std::env::var_os("AGENT_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let cache = std::env::var_os("AGENT_CACHE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Self::resolve(home.as_deref(), cache.as_deref())
    }

    /// Resolve from explicit overrides (used by `from_env` and tests).
    pub fn resolve(home: Option<&Path>, cache: Option<&Path>) -> Result<Self, NoHomeError> {
        let (config, data) = match home {
            Some(h) => (h.join("config"), h.join("data")),
            None => {
                let p = directories::ProjectDirs::from("", "", "agent").ok_or(NoHomeError)?;
                (p.config_dir().to_path_buf(), p.data_dir().to_path_buf())
            }
        };
        let cache = match (cache, home) {
            (Some(c), _) => c.to_path_buf(),
            (None, Some(h)) => h.join("cache"),
            (None, None) => directories::ProjectDirs::from("", "", "agent")
                .ok_or(NoHomeError)?
                .cache_dir()
                .to_path_buf(),
        };
        Ok(Self {
            prompts: config.join("prompts"),
            plugins: data.join("plugins"),
            config,
            data,
            cache,
        })
    }

    /// The user's config file.
    pub fn config_file(&self) -> PathBuf {
        self.config.join("config.yaml")
    }

    /// The sled store.
    pub fn store(&self) -> PathBuf {
        self.data.join("store")
    }

    /// Downloaded models.
    pub fn models(&self) -> PathBuf {
        self.cache.join("models")
    }

    /// Precompiled plugins, keyed by content hash and engine version.
    pub fn compiled_plugins(&self) -> PathBuf {
        self.cache.join("plugins")
    }

    /// Saved prompt-prefix states of local models (llama.cpp engine).
    pub fn prefix_states(&self) -> PathBuf {
        self.cache.join("prefix-states")
    }

    /// Where LoRA adapters converted for the llama.cpp engine are kept.
    pub fn lora(&self) -> PathBuf {
        self.cache.join("lora")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_home_holds_config_data_and_cache() {
        let d = Dirs::resolve(Some(Path::new("/h")), None).unwrap();
        assert_eq!(d.config_file(), Path::new("/h/config/config.yaml"));
        assert_eq!(d.store(), Path::new("/h/data/store"));
        assert_eq!(d.models(), Path::new("/h/cache/models"));
    }

    #[test]
    fn cache_dir_overrides_home() {
        let d = Dirs::resolve(Some(Path::new("/h")), Some(Path::new("/c"))).unwrap();
        assert_eq!(d.models(), Path::new("/c/models"));
        assert_eq!(d.store(), Path::new("/h/data/store"));
    }
}
