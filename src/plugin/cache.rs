//! The compiled-plugin cache: precompiled components (`.cwasm`) and the tool
//! lists their `describe()` returned, under `Dirs::compiled_plugins()`.
//!
//! Decisions:
//! - Entries are keyed by the sha256 of the `.wasm` and by wasmtime's
//!   compatibility hash of the engine's settings, so a new wasmtime or a changed
//!   engine configuration misses the cache instead of loading stale code.
//! - Deserialising a `.cwasm` runs its machine code, and wasmtime documents it as
//!   unsafe on untrusted input. So only files this host wrote are loaded: each
//!   entry carries an HMAC-SHA256 tag under a random per-cache key (`key`, mode
//!   0600, created once), and the bytes are read into memory, checked, and
//!   deserialised from that same buffer (no window between check and load).
//!   A file dropped into the cache by anyone without the key is ignored and
//!   recompiled over.
//! - Writes are atomic (temporary file + rename) so a crash or a concurrent
//!   `agent` never leaves half an entry that looks whole.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Errors opening the cache directory or its key.
#[derive(Debug, thiserror::Error)]
#[error(
    "compiled-plugin cache {path}: {source}; check the directory's permissions or set AGENT_CACHE_DIR"
)]
pub struct CacheError {
    /// The file or directory.
    pub path: PathBuf,
    /// What failed.
    #[source]
    pub source: std::io::Error,
}

/// The cache directory and its key.
#[derive(Clone)]
pub struct CompiledCache {
    dir: PathBuf,
    mac: HmacSha256,
}

impl std::fmt::Debug for CompiledCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl CompiledCache {
    /// Open (creating if needed) the cache in `dir`.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError { path, source }
        };
        fs::create_dir_all(dir).map_err(err(dir))?;
        let key_path = dir.join("key");
        let key = match fs::read(&key_path) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            _ => {
                let mut k = [0u8; 32];
                rand::Rng::fill(&mut rand::rng(), &mut k[..]);
                create_key(&key_path, &k).map_err(err(&key_path))?
            }
        };
        let mac = <HmacSha256 as Mac>::new_from_slice(&key).map_err(|_| CacheError {
            path: key_path.clone(),
            source: std::io::Error::other("unusable key"),
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            mac,
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tag(&self, kind: &[u8], bytes: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(kind);
        mac.update(&[0]);
        mac.update(bytes);
        hex::encode(mac.finalize().into_bytes())
    }

    fn verify(&self, kind: &[u8], bytes: &[u8], tag: &str) -> bool {
        let Ok(tag) = hex::decode(tag.trim()) else {
            return false;
        };
        let mut mac = self.mac.clone();
        mac.update(kind);
        mac.update(&[0]);
        mac.update(bytes);
        mac.verify_slice(&tag).is_ok()
    }

    fn stem(wasm_sha: &str, engine_hash: &str) -> String {
        format!(
            "{}-{}",
            &wasm_sha[..wasm_sha.len().min(32)],
            &engine_hash[..engine_hash.len().min(16)]
        )
    }

    /// Path of the compiled entry for this wasm and engine.
    pub fn compiled_path(&self, wasm_sha: &str, engine_hash: &str) -> PathBuf {
        self.dir
            .join(format!("{}.cwasm", Self::stem(wasm_sha, engine_hash)))
    }

    /// The compiled bytes, if present and written by this host.
    pub fn load_compiled(&self, wasm_sha: &str, engine_hash: &str) -> Option<Vec<u8>> {
        let path = self.compiled_path(wasm_sha, engine_hash);
        let tag = fs::read_to_string(path.with_extension("cwasm.tag")).ok()?;
        let bytes = fs::read(&path).ok()?;
        if self.verify(b"cwasm", &bytes, &tag) {
            Some(bytes)
        } else {
            tracing::warn!(path = %path.display(), "ignoring a compiled plugin this host did not write");
            None
        }
    }

    /// Store compiled bytes with their tag.
    pub fn store_compiled(
        &self,
        wasm_sha: &str,
        engine_hash: &str,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        let path = self.compiled_path(wasm_sha, engine_hash);
        // Tag first: a tag without its file is a miss, a file without its tag too.
        write_atomic(
            &path.with_extension("cwasm.tag"),
            self.tag(b"cwasm", bytes).as_bytes(),
            false,
        )?;
        write_atomic(&path, bytes, false)
    }

    /// The cached `describe()` answer (JSON text) for this wasm, if written by this host.
    pub fn load_describe(&self, wasm_sha: &str) -> Option<String> {
        let path = self.dir.join(format!(
            "{}.describe.json",
            &wasm_sha[..wasm_sha.len().min(32)]
        ));
        let text = fs::read_to_string(&path).ok()?;
        let (tag, body) = text.split_once('\n')?;
        self.verify(b"describe", body.as_bytes(), tag)
            .then(|| body.to_owned())
    }

    /// Store a `describe()` answer (JSON text).
    pub fn store_describe(&self, wasm_sha: &str, json: &str) -> std::io::Result<()> {
        let path = self.dir.join(format!(
            "{}.describe.json",
            &wasm_sha[..wasm_sha.len().min(32)]
        ));
        let text = format!("{}\n{json}", self.tag(b"describe", json.as_bytes()));
        write_atomic(&path, text.as_bytes(), false)
    }
}

/// Install a fresh key unless another process got there first; returns the key in force.
fn create_key(path: &Path, key: &[u8; 32]) -> std::io::Result<Vec<u8>> {
    let tmp = path.with_extension(format!("{}.tmp", rand::random::<u32>()));
    write_atomic(&tmp, key, true)?;
    // hard_link is atomic and refuses to replace: the first writer wins.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key.to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match fs::read(path) {
            Ok(existing) if existing.len() == 32 => Ok(existing),
            // A damaged key: replace it (entries under it become misses).
            _ => write_atomic(path, key, true).map(|()| key.to_vec()),
        },
        Err(e) => Err(e),
    }
}

/// Write `bytes` to `path` atomically (temporary file in the same directory,
/// then rename). `private` makes the file mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if private { 0o600 } else { 0o644 });
        }
        let _ = private;
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12";

    #[test]
    fn entries_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::open(dir.path()).unwrap();
        assert!(cache.load_compiled(SHA, "e1").is_none());
        cache.store_compiled(SHA, "e1", b"machine code").unwrap();
        assert_eq!(cache.load_compiled(SHA, "e1").unwrap(), b"machine code");
        assert!(
            cache.load_compiled(SHA, "e2").is_none(),
            "another engine must miss"
        );
        let again = CompiledCache::open(dir.path()).unwrap();
        assert_eq!(again.load_compiled(SHA, "e1").unwrap(), b"machine code");
        cache.store_describe(SHA, "[1,2]").unwrap();
        assert_eq!(again.load_describe(SHA).unwrap(), "[1,2]");
    }

    #[test]
    fn files_the_host_did_not_write_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::open(dir.path()).unwrap();
        cache.store_compiled(SHA, "e1", b"machine code").unwrap();
        let path = cache.compiled_path(SHA, "e1");
        // Swapped contents with the old tag.
        fs::write(&path, b"evil code").unwrap();
        assert!(cache.load_compiled(SHA, "e1").is_none());
        // A planted file with a tag computed without the key.
        let forged = hex::encode(<Sha256 as sha2::Digest>::digest(b"evil code"));
        fs::write(path.with_extension("cwasm.tag"), forged).unwrap();
        assert!(cache.load_compiled(SHA, "e1").is_none());
        // A different cache (another key) does not trust this one's entries.
        let other_dir = tempfile::tempdir().unwrap();
        let other = CompiledCache::open(other_dir.path()).unwrap();
        other.store_compiled(SHA, "e1", b"x").unwrap();
        fs::copy(other.compiled_path(SHA, "e1"), &path).unwrap();
        fs::copy(
            other.compiled_path(SHA, "e1").with_extension("cwasm.tag"),
            path.with_extension("cwasm.tag"),
        )
        .unwrap();
        assert!(cache.load_compiled(SHA, "e1").is_none());
        // Tampered describe entries are ignored too.
        cache.store_describe(SHA, "[]").unwrap();
        let p = dir.path().join(format!("{}.describe.json", &SHA[..32]));
        let text = fs::read_to_string(&p).unwrap().replace("[]", "[\"rm\"]");
        fs::write(&p, text).unwrap();
        assert!(cache.load_describe(SHA).is_none());
    }

    #[cfg(unix)]
    #[test]
    fn the_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        CompiledCache::open(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join("key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
