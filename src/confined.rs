//! Host-side file access inside a directory that a plugin or a model may
//! have filled with links (a workspace): reading a file the grader checks,
//! copying a challenge's test files in. Security case 38.
//!
//! WASI lets sandboxed code create a symlink whose target is outside the
//! workspace (`os.symlink('../../../etc/passwd', 'answer.txt')`). The
//! sandbox never follows it, but host code that opens `workspace/answer.txt`
//! with `std::fs` would, and would read or overwrite the target. So every
//! path here is opened one component at a time relative to a descriptor of
//! the directory (`openat` with `O_NOFOLLOW`): a symlink anywhere on the
//! path, wherever it points, is an error, never a way out, and no check can
//! be raced by swapping a component between a check and the open. `..`,
//! absolute paths and non-regular files (FIFOs, devices, which would block)
//! are refused too. Unix only; elsewhere every call says it is unsupported.

use std::io;
use std::path::{Component, Path};

/// The largest file [`Confined::read`] returns.
pub const MAX_READ_BYTES: u64 = 16 * 1024 * 1024;

/// A directory whose files are opened without following links.
#[derive(Debug)]
pub struct Confined {
    #[cfg(unix)]
    root: std::os::fd::OwnedFd,
    #[cfg(unix)]
    path: std::path::PathBuf,
}

/// The names along `rel`, refusing what could leave the directory.
fn names(rel: &Path) -> io::Result<Vec<&std::ffi::OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} leaves the directory (only plain relative paths are allowed)",
                        rel.display()
                    ),
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an empty path names no file",
        ));
    }
    Ok(out)
}

/// Say plainly why an open failed when the cause is a link or a special file.
fn explain(rel: &Path, e: io::Error) -> io::Error {
    #[cfg(unix)]
    if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) {
        return io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is (or passes through) a symbolic link; links in the workspace are not followed",
                rel.display()
            ),
        );
    }
    e
}

#[cfg(unix)]
mod imp {
    use std::ffi::{CString, OsStr};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::ffi::OsStrExt;

    pub fn c(name: &OsStr) -> io::Result<CString> {
        CString::new(name.as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name holds a NUL byte"))
    }

    pub fn open_at(dir: RawFd, name: &OsStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
        let name = c(name)?;
        // SAFETY: `name` is a valid C string, `dir` a descriptor we own; the
        // returned descriptor is owned by the OwnedFd.
        let fd = unsafe {
            libc::openat(
                dir,
                name.as_ptr(),
                flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by openat and is not owned elsewhere.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn stat_at(dir: RawFd, name: &OsStr) -> io::Result<Option<libc::stat>> {
        let name = c(name)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid C string and out-pointer; AT_SYMLINK_NOFOLLOW keeps
        // a link as itself.
        let rc = unsafe {
            libc::fstatat(
                dir,
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::NotFound => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: fstatat succeeded and filled it.
        Ok(Some(unsafe { st.assume_init() }))
    }

    pub fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: a descriptor we own and a valid out-pointer.
        let rc = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstat succeeded and filled it.
        Ok(unsafe { st.assume_init() })
    }

    pub fn is(st: &libc::stat, kind: libc::mode_t) -> bool {
        st.st_mode & libc::S_IFMT == kind
    }

    pub fn mkdir_at(dir: RawFd, name: &OsStr) -> io::Result<()> {
        let name = c(name)?;
        // SAFETY: valid C string; mkdirat never follows a final link.
        if unsafe { libc::mkdirat(dir, name.as_ptr(), 0o755) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
        }
        Ok(())
    }

    pub fn unlink_at(dir: RawFd, name: &OsStr) -> io::Result<()> {
        let name = c(name)?;
        // SAFETY: valid C string; unlinkat removes a link itself, not its target.
        if unsafe { libc::unlinkat(dir, name.as_ptr(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(unix)]
impl Confined {
    /// Open `root` (the directory itself may be reached through links: the
    /// user or the host chose it).
    pub fn open(root: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(root)?;
        Ok(Self {
            root: dir.into(),
            path: root.to_path_buf(),
        })
    }

    /// The directory holding `rel`'s last name, and that name; with
    /// `create`, missing directories on the way are made.
    fn parent<'a>(
        &self,
        rel: &'a Path,
        create: bool,
    ) -> io::Result<(Option<std::os::fd::OwnedFd>, &'a std::ffi::OsStr)> {
        use std::os::fd::AsRawFd;
        let names = names(rel)?;
        let (last, dirs) = names
            .split_last()
            .ok_or_else(|| io::Error::other("empty path"))?;
        let mut current: Option<std::os::fd::OwnedFd> = None;
        for name in dirs {
            let at = current
                .as_ref()
                .map_or(self.root.as_raw_fd(), |d| d.as_raw_fd());
            if create {
                imp::mkdir_at(at, name)?;
            }
            let next = imp::open_at(at, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(|e| explain(rel, e))?;
            current = Some(next);
        }
        Ok((current, last))
    }

    /// The bytes of the regular file `rel` (at most [`MAX_READ_BYTES`]).
    pub fn read(&self, rel: &Path) -> io::Result<Vec<u8>> {
        self.read_head(rel, MAX_READ_BYTES)
    }

    /// The first `max_bytes` bytes of the regular file `rel`.
    pub fn read_head(&self, rel: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (dir, name) = self.parent(rel, false)?;
        let at = dir
            .as_ref()
            .map_or(self.root.as_raw_fd(), |d| d.as_raw_fd());
        // Non-blocking, so a FIFO planted here cannot hang the open.
        let fd = imp::open_at(at, name, libc::O_RDONLY | libc::O_NONBLOCK, 0)
            .map_err(|e| explain(rel, e))?;
        let st = imp::fstat(&fd)?;
        if !imp::is(&st, libc::S_IFREG) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", rel.display()),
            ));
        }
        let mut out = Vec::new();
        std::fs::File::from(fd)
            .take(max_bytes)
            .read_to_end(&mut out)?;
        Ok(out)
    }

    /// The text of the regular file `rel` (invalid UTF-8 replaced).
    pub fn read_to_string(&self, rel: &Path) -> io::Result<String> {
        Ok(String::from_utf8_lossy(&self.read(rel)?).into_owned())
    }

    /// True when `rel` is a regular file (a link to one is not).
    pub fn is_file(&self, rel: &Path) -> bool {
        use std::os::fd::AsRawFd;
        let Ok((dir, name)) = self.parent(rel, false) else {
            return false;
        };
        let at = dir
            .as_ref()
            .map_or(self.root.as_raw_fd(), |d| d.as_raw_fd());
        matches!(imp::stat_at(at, name), Ok(Some(st)) if imp::is(&st, libc::S_IFREG))
    }

    /// Write `bytes` as a new file `rel`, replacing a file or a link that
    /// is there (the link itself, never its target); missing directories
    /// are made, and a directory on the way that is a link is an error.
    pub fn write(&self, rel: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (dir, name) = self.parent(rel, true)?;
        let at = dir
            .as_ref()
            .map_or(self.root.as_raw_fd(), |d| d.as_raw_fd());
        if let Some(st) = imp::stat_at(at, name)? {
            if imp::is(&st, libc::S_IFDIR) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is a directory", rel.display()),
                ));
            }
            imp::unlink_at(at, name)?;
        }
        // O_EXCL: if something appeared in between, fail rather than follow it.
        let fd = imp::open_at(
            at,
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o644,
        )
        .map_err(|e| explain(rel, e))?;
        std::fs::File::from(fd).write_all(bytes)
    }

    /// The names of the regular files directly in the directory, sorted
    /// (links and special files left out).
    pub fn files(&self) -> io::Result<Vec<String>> {
        // The entry types are read without following links; whatever is
        // opened later is opened by name through `read` again.
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(not(unix))]
impl Confined {
    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "reading a workspace without following links is only supported on Unix",
        )
    }
    /// Unsupported off Unix.
    pub fn open(_root: &Path) -> io::Result<Self> {
        Err(Self::unsupported())
    }
    /// Unsupported off Unix.
    pub fn read(&self, _rel: &Path) -> io::Result<Vec<u8>> {
        Err(Self::unsupported())
    }
    /// Unsupported off Unix.
    pub fn read_head(&self, _rel: &Path, _max_bytes: u64) -> io::Result<Vec<u8>> {
        Err(Self::unsupported())
    }
    /// Unsupported off Unix.
    pub fn read_to_string(&self, _rel: &Path) -> io::Result<String> {
        Err(Self::unsupported())
    }
    /// Unsupported off Unix.
    pub fn is_file(&self, _rel: &Path) -> bool {
        false
    }
    /// Unsupported off Unix.
    pub fn write(&self, _rel: &Path, _bytes: &[u8]) -> io::Result<()> {
        Err(Self::unsupported())
    }
    /// Unsupported off Unix.
    pub fn files(&self) -> io::Result<Vec<String>> {
        Err(Self::unsupported())
    }
}

/// Copy the tree `from` (trusted: a challenge's own files, whose links are
/// skipped) into `to`, replacing what is there without following links.
pub fn copy_tree_into(from: &Path, to: &Confined) -> io::Result<()> {
    if !from.is_dir() {
        return Ok(());
    }
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(from).map_err(io::Error::other)?;
        to.write(rel, &std::fs::read(entry.path())?)?;
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn case_38_links_are_never_followed_out_of_the_directory() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.txt");
        std::fs::write(&secret, "the host's secret").unwrap();
        let ws = tempfile::tempdir().unwrap();
        let w = ws.path();
        symlink(&secret, w.join("answer.txt")).unwrap();
        symlink("../../../../../../..", w.join("up")).unwrap();
        std::fs::create_dir(w.join("d")).unwrap();
        std::fs::write(w.join("d/ok.txt"), "fine").unwrap();
        symlink(w.join("d"), w.join("dlink")).unwrap();
        let c = Confined::open(w).unwrap();

        let e = c.read(Path::new("answer.txt")).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(c.read(Path::new("up/etc/passwd")).is_err());
        assert!(
            c.read(Path::new("dlink/ok.txt")).is_err(),
            "a link on the way"
        );
        assert!(c.read(Path::new("../x")).is_err());
        assert!(c.read(Path::new("/etc/passwd")).is_err());
        assert_eq!(c.read_to_string(Path::new("d/ok.txt")).unwrap(), "fine");
        assert!(!c.is_file(Path::new("answer.txt")));
        assert!(c.is_file(Path::new("d/ok.txt")));
        assert_eq!(c.files().unwrap(), Vec::<String>::new());

        // Writing over a planted link replaces the link, not its target.
        c.write(Path::new("answer.txt"), b"graded").unwrap();
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            "the host's secret"
        );
        assert_eq!(
            std::fs::read_to_string(w.join("answer.txt")).unwrap(),
            "graded"
        );
        assert!(
            !std::fs::symlink_metadata(w.join("answer.txt"))
                .unwrap()
                .is_symlink()
        );
        // A directory on the way that is a link is refused, not followed.
        symlink(outside.path(), w.join("tests")).unwrap();
        assert!(c.write(Path::new("tests/test.py"), b"x").is_err());
        assert!(!outside.path().join("test.py").exists());
        assert_eq!(c.files().unwrap(), vec!["answer.txt".to_string()]);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let ws = tempfile::tempdir().unwrap();
        let fifo = ws.path().join("pipe");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path; the test owns the directory.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
        let c = Confined::open(ws.path()).unwrap();
        let e = c.read(Path::new("pipe")).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
