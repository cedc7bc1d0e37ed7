//! The sled store: opening it safely and durably.
//!
//! sled 0.34 lets one process at a time open a database, but its own lock
//! error does not say who holds it, and its open can fail in many ways on a
//! damaged directory. So before sled is touched we take an exclusive,
//! non-blocking `flock` on `agent.lock` beside the data and write our PID
//! into it: a second `agent` learns at once which process holds the store.
//! A failed or panicking sled open becomes [`StoreError::Corrupt`], which
//! names the path and how to move it aside; nothing is deleted for the user.
//! When the disk is full (sled says so, or almost no space is left) it is
//! [`StoreError::DiskFull`] instead: moving a healthy store aside would be
//! the wrong advice.
//!
//! Durability: sled flushes on its own every 500 ms; anything acknowledged to
//! the user goes through [`Store::flush`] first.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fs2::FileExt;

/// Failure opening or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store {path} is in use by another agent process{}; wait for it to finish or stop it", holder.as_ref().map(|h| format!(" (PID {h})")).unwrap_or_default())]
    InUse {
        path: PathBuf,
        holder: Option<String>,
    },
    #[error(
        "the store {path} cannot be opened: {detail}. It may be damaged. Move it aside \
         (`mv {path} {path}.broken`) and agent will start a new, empty store; the old one is kept for recovery"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot create the store directory {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store write failed: {0}. The last acknowledged step is safe")]
    Write(String),
    #[error(
        "the disk holding the store {path} is full ({detail}). Free some space and run the command again; \
         nothing that was acknowledged is lost"
    )]
    DiskFull { path: String, detail: String },
    #[error("a record in the store is unreadable ({key}): {detail}")]
    BadRecord { key: String, detail: String },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        if is_disk_full(&e) {
            StoreError::DiskFull {
                path: "(agent's data directory)".into(),
                detail: e.to_string(),
            }
        } else {
            StoreError::Write(e.to_string())
        }
    }
}

/// True when sled failed for want of space (or quota).
fn is_disk_full(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::StorageFull
                || io.kind() == std::io::ErrorKind::QuotaExceeded
                || matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        }
        _ => false,
    }
}

/// Below this much free space a failed open is blamed on a full disk.
const LOW_SPACE: u64 = 4 << 20;

/// A failed open as an error: a full disk when sled said so or the disk
/// has almost no space left, otherwise damage, with the way out.
fn open_failure(path: &Path, error: Option<&sled::Error>, detail: String) -> StoreError {
    let free = fs2::available_space(path).ok();
    if error.is_some_and(is_disk_full) || free.is_some_and(|f| f < LOW_SPACE) {
        return StoreError::DiskFull {
            path: path.display().to_string(),
            detail: match free {
                Some(f) => format!("{detail}; {} KiB free", f / 1024),
                None => detail,
            },
        };
    }
    StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    }
}

/// An open store, held exclusively by this process.
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    // Held for the life of the store; the OS releases it if we die.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Open (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let lock_path = path.join("agent.lock");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| StoreError::Create {
                path: lock_path.clone(),
                source,
            })?;
        if lock.try_lock_exclusive().is_err() {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            let holder = holder.trim().to_string();
            return Err(StoreError::InUse {
                path: path.to_path_buf(),
                holder: (!holder.is_empty()).then_some(holder),
            });
        }
        let _ = lock.set_len(0);
        let _ = lock.seek(SeekFrom::Start(0));
        let _ = write!(lock, "{}", std::process::id());
        let _ = lock.flush();

        let db_path = path.join("db");
        // We hold agent.lock, so another holder of sled's own lock can only
        // be a handle this process just dropped whose flusher thread has
        // not let go yet (a reopen in the same process): wait for it.
        let mut opened;
        let mut waited = 0;
        loop {
            opened = std::panic::catch_unwind(|| sled::Config::new().path(&db_path).open());
            let busy = matches!(&opened, Ok(Err(sled::Error::Io(e)))
                if e.to_string().contains("could not acquire lock"));
            if !busy || waited >= 40 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            waited += 1;
        }
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(open_failure(path, Some(&e), e.to_string())),
            Err(_) => {
                return Err(open_failure(
                    path,
                    None,
                    "the storage engine crashed while reading it".into(),
                ));
            }
        };
        Ok(Self {
            db,
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A named tree (table).
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Block until everything written so far is durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_is_refused_at_once_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let e = Store::open(dir.path()).unwrap_err();
        match &e {
            StoreError::InUse { holder, .. } => assert_eq!(
                holder.as_deref(),
                Some(std::process::id().to_string().as_str())
            ),
            other => panic!("expected InUse, got {other}"),
        }
        assert!(e.to_string().contains("in use"));
        drop(first);
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn a_garbage_store_is_reported_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("db")).unwrap();
        std::fs::write(
            dir.path().join("db/conf"),
            b"\xff\xfe garbage that is not a sled config",
        )
        .unwrap();
        std::fs::write(dir.path().join("db/db"), vec![0xAB; 4096]).unwrap();
        let e = Store::open(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("mv "), "{e}");
    }

    #[test]
    fn no_space_is_told_apart_from_damage() {
        let full = sled::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        let e = StoreError::from(full);
        assert!(matches!(e, StoreError::DiskFull { .. }), "{e}");
        assert!(e.to_string().contains("Free some space"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let full = sled::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        let e = open_failure(dir.path(), Some(&full), full.to_string());
        assert!(e.to_string().contains("is full"), "{e}");
        assert!(!e.to_string().contains("mv "), "{e}");
        // Other failures on a disk with room are damage, with the way out.
        let other = sled::Error::Unsupported("bad config".into());
        let e = open_failure(dir.path(), Some(&other), other.to_string());
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    }
}
