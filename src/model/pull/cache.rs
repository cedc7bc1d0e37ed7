//! The models cache: where a pulled file lives, what is there, and the
//! verified move of a finished download into place.
//!
//! A hub file is cached at `MODELS/OWNER/NAME/FILE` (`HubFile::cache_path`).
//! A `FILE.sha256` sidecar records the verified hash so `agent model info`
//! need not rehash. A finished download, from the hub or assembled from
//! wheels, is checked against [`Expected`] by `commit_file` and only then
//! renamed into place, with its sidecar.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::{Expected, PullError, io_err};
use crate::model::reference::ModelRef;

/// A model file in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// The `.gguf` file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The SHA-256 verified when it was pulled, if recorded.
    pub sha256: Option<String>,
}

/// The cached file for `reference`, if it is there and matches what the
/// registry says (size, and the recorded hash when both are known).
pub fn cached(reference: &ModelRef, models_dir: &Path) -> Option<CachedModel> {
    let path = match reference {
        ModelRef::File(p) => p.clone(),
        ModelRef::Scripted(_) => return None,
        _ => reference.hub_file()?.cache_path(models_dir),
    };
    let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
    let sha256 = read_sidecar(&path);
    let expected = Expected::of(reference);
    if expected.size.is_some_and(|s| s != meta.len()) {
        return None;
    }
    if let (Some(want), Some(have)) = (&expected.sha256, &sha256)
        && want != have
    {
        return None;
    }
    Some(CachedModel {
        path,
        bytes: meta.len(),
        sha256,
    })
}

/// Every `.gguf` file under the models cache, sorted by path.
pub fn list_cached(models_dir: &Path) -> Vec<CachedModel> {
    let mut out = Vec::new();
    let mut stack = vec![models_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file()
                && p.extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
            {
                let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
                out.push(CachedModel {
                    sha256: read_sidecar(&p),
                    path: p,
                    bytes,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Remove `reference`'s file (and its sidecar) from the cache; returns what
/// was removed, or `None` when it was not cached. Local files are never
/// touched.
pub fn remove_cached(
    reference: &ModelRef,
    models_dir: &Path,
) -> Result<Option<CachedModel>, PullError> {
    let Some(hub) = reference.hub_file() else {
        return Err(PullError::NotPullable(reference.label()));
    };
    let path = hub.cache_path(models_dir);
    let Ok(meta) = std::fs::metadata(&path) else {
        return Ok(None);
    };
    let removed = CachedModel {
        sha256: read_sidecar(&path),
        bytes: meta.len(),
        path: path.clone(),
    };
    std::fs::remove_file(&path).map_err(io_err(&path))?;
    let side = sidecar(&path);
    if side.exists() {
        std::fs::remove_file(&side).map_err(io_err(&side))?;
    }
    // Drop now-empty OWNER/NAME directories, never the cache root.
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == models_dir || !d.starts_with(models_dir) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(Some(removed))
}

/// Hash a file (for `agent model info` on files without a sidecar).
pub fn sha256_file(path: &Path) -> Result<String, PullError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The size of `dest` when it is there and its recorded hash and size match
/// `expected`.
pub(super) fn verified_copy(dest: &Path, expected: &Expected) -> Option<u64> {
    let meta = std::fs::metadata(dest).ok().filter(|m| m.is_file())?;
    let sha = read_sidecar(dest)?;
    let size_ok = expected.size.is_none_or(|s| s == meta.len());
    let sha_ok = expected.sha256.as_ref().is_none_or(|w| w == &sha);
    (size_ok && sha_ok).then_some(meta.len())
}

/// Check a finished download (`written` bytes hashing to `sha`) against
/// `expected`, then move it from `path` to `dest` with its sidecar.
pub(super) async fn commit_file(
    path: &Path,
    dest: &Path,
    written: u64,
    sha: String,
    what: &str,
    expected: &Expected,
) -> Result<u64, PullError> {
    if let Some(size) = expected.size
        && size != written
    {
        return Err(PullError::Mismatch {
            what: what.to_string(),
            kind: "size",
            expected: size.to_string(),
            actual: written.to_string(),
        });
    }
    if let Some(want) = &expected.sha256
        && !want.eq_ignore_ascii_case(&sha)
    {
        return Err(PullError::Mismatch {
            what: what.to_string(),
            kind: "sha256",
            expected: want.clone(),
            actual: sha,
        });
    }
    let side = sidecar(dest);
    let side_tmp = with_suffix(&side, &format!(".{}.part", unique_suffix()));
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tokio::fs::write(&side_tmp, format!("{sha}  {file_name}\n"))
        .await
        .map_err(io_err(&side_tmp))?;
    tokio::fs::rename(path, dest).await.map_err(io_err(dest))?;
    tokio::fs::rename(&side_tmp, &side)
        .await
        .map_err(io_err(&side))?;
    Ok(written)
}

fn sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

pub(super) fn read_sidecar(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(sidecar(path)).ok()?;
    let hex = text.split_whitespace().next()?.to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

pub(super) fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}-{}", std::process::id(), rand::random::<u32>())
}

/// `path` with `suffix` added to its file name.
pub(super) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rm_removes_the_file_its_sidecar_and_empty_folders_only() {
        let dir = tempfile::tempdir().unwrap();
        let r = ModelRef::parse("hf:o/r/m.gguf").unwrap();
        let p = dir.path().join("o/r/m.gguf");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"x").unwrap();
        std::fs::write(sidecar(&p), format!("{}  m.gguf\n", "a".repeat(64))).unwrap();
        std::fs::write(dir.path().join("o/keep.gguf"), b"y").unwrap();
        assert_eq!(list_cached(dir.path()).len(), 2);

        let gone = remove_cached(&r, dir.path()).unwrap().unwrap();
        assert_eq!((gone.bytes, gone.sha256), (1, Some("a".repeat(64))));
        assert!(!dir.path().join("o/r").exists());
        assert!(dir.path().join("o/keep.gguf").exists());
        assert!(remove_cached(&r, dir.path()).unwrap().is_none());
        assert!(matches!(
            remove_cached(&ModelRef::Scripted("s.yaml".into()), dir.path()),
            Err(PullError::NotPullable(_))
        ));
    }
}
