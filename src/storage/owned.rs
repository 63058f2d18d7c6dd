//! What clipada writes, and only that: folders it made and marked as its own, and files of its
//! own kinds.
//!
//! - A folder clipada writes many files into (overlays, maps, failed parts, the station's
//!   state) is claimed with [`OwnedDir::claim`]: created if missing, or taken over when empty,
//!   and marked with a [`MARKER`] file naming its kind; a folder with other content and no
//!   marker, a marker of another kind, or a symlink in the folder's place is refused. Files in
//!   it are written relative to the folder's open handle (`openat`-style), never through a
//!   symlink, to an unpredictable temporary name created exclusively, synced, and renamed into
//!   place; only regular files of clipada's own naming are deleted.
//! - A single file clipada replaces or appends to (a memory file, the result log, the GPIO
//!   record, a plain-file framebuffer) is opened the same way, and an existing one is used only
//!   when it is recognisably of that [`FileKind`]: a model given as `--out`, a user's text file
//!   named as the result log, or a symlink planted in its place, is refused, never overwritten.
//!   Its folder must exist (a mistyped path is not made real); an output folder's missing
//!   parents are created, as `mkdir -p` would.
//! - [`OwnedDir::lock`] and [`open_owned`] hold an exclusive lock, so a second station on the
//!   same folder or files refuses to start.

use std::ffi::OsStr;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

/// The marker file in every folder clipada owns; it holds `clipada <kind>`.
pub const MARKER: &str = ".clipada";

/// Permissions of what clipada creates: its group (the service's) may read, others nothing.
const FILE_MODE: u32 = 0o640;
/// Permissions of folders clipada creates.
const DIR_MODE: u32 = 0o750;

/// Kinds of folder clipada owns; the marker says which, and one kind is never used as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderKind {
    /// `infer --overlay-dir`.
    Overlays,
    /// `infer --maps-dir`.
    Maps,
    /// A station's failed parts.
    FailedParts,
    /// A station's state folder (lock, counters).
    State,
    /// `clipada demo`'s output.
    Demo,
    /// Images captured for commissioning (`clipada capture`, the operator interface), and the
    /// memory calibrated from them before it is put in place.
    Commissioning,
    /// The memories the operator interface replaced, kept for undo.
    #[cfg(feature = "hmi")]
    MemoryVersions,
    /// TensorRT's engine cache (only ONNX Runtime makes one).
    #[cfg(feature = "ort")]
    EngineCache,
}

impl FolderKind {
    fn name(self) -> &'static str {
        match self {
            FolderKind::Overlays => "overlays",
            FolderKind::Maps => "maps",
            FolderKind::FailedParts => "failed-parts",
            FolderKind::State => "state",
            FolderKind::Demo => "demo",
            FolderKind::Commissioning => "commissioning",
            #[cfg(feature = "hmi")]
            FolderKind::MemoryVersions => "memory-versions",
            #[cfg(feature = "ort")]
            FolderKind::EngineCache => "engine-cache",
        }
    }
}

/// Kinds of single file clipada replaces or appends to; an existing file is used only when it
/// is recognisably of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A memory file: starts with its magic.
    Memory,
    /// The JSON-lines result log: empty, or its first line is a JSON object with a `verdict`.
    ResultLog,
    /// The recording GPIO's file: starts with [`GPIO_RECORD_HEADER`].
    GpioRecord,
    /// A plain file used as framebuffer memory: ends with [`FRAMEBUFFER_TRAILER`] and a geometry.
    Framebuffer,
}

/// First line of a GPIO record.
pub const GPIO_RECORD_HEADER: &[u8] = b"# clipada gpio record: ms line level\n";
/// Marks a plain file as clipada's framebuffer memory: it follows the page, with the page's
/// width, height and bits per pixel (`u32` little endian each).
pub const FRAMEBUFFER_TRAILER: &[u8; 20] = b"CLIPADA-FRAMEBUFFER\0";
/// Length of the framebuffer trailer with its geometry.
pub(crate) const FRAMEBUFFER_TRAILER_LEN: u64 = 32;

impl FileKind {
    fn name(self) -> &'static str {
        match self {
            FileKind::Memory => "memory file",
            FileKind::ResultLog => "result log",
            FileKind::GpioRecord => "GPIO record",
            FileKind::Framebuffer => "framebuffer file",
        }
    }

    /// Whether an empty file may be of this kind: those clipada appends to are created empty
    /// before their first line, and may be left so by a crash; the others are only ever
    /// renamed into place whole, so an empty one is someone else's.
    fn may_be_empty(self) -> bool {
        matches!(self, FileKind::ResultLog | FileKind::GpioRecord)
    }

    /// Whether `file` (`len` bytes, not empty) is of this kind.
    fn recognises(self, file: &File, len: u64) -> bool {
        let head = |n: usize| -> Vec<u8> {
            let mut bytes = vec![0; n.min(len as usize)];
            file.read_exact_at(&mut bytes, 0).map(|()| bytes).unwrap_or_default()
        };
        match self {
            FileKind::Memory => head(16) == crate::memory::file::MAGIC,
            FileKind::GpioRecord => head(GPIO_RECORD_HEADER.len()) == GPIO_RECORD_HEADER,
            FileKind::ResultLog => {
                let bytes = head(64 << 10);
                let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
                serde_json::from_slice::<serde_json::Value>(first).is_ok_and(|v| v.get("verdict").is_some())
            }
            FileKind::Framebuffer => {
                let mut tail = [0u8; FRAMEBUFFER_TRAILER.len()];
                len >= FRAMEBUFFER_TRAILER_LEN
                    && file.read_exact_at(&mut tail, len - FRAMEBUFFER_TRAILER_LEN).is_ok()
                    && &tail == FRAMEBUFFER_TRAILER
            }
        }
    }
}

/// Why clipada would not, or could not, write.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The place is not clipada's to write (another kind of file, a foreign folder, a symlink).
    #[error("{path}: {reason}")]
    Refused {
        /// The file or folder.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// Another clipada holds it.
    #[error("{path}: in use by another clipada process (it holds the lock); one station per folder and file")]
    Locked {
        /// The file or folder.
        path: PathBuf,
    },
    /// The system call failed (full disk, permissions).
    #[error("{path}: {error}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl Fn(Errno) -> WriteError + '_ {
    move |errno| WriteError::Io { path: path.to_path_buf(), error: errno.into() }
}

fn refused(path: &Path, reason: impl Into<String>) -> WriteError {
    WriteError::Refused { path: path.to_path_buf(), reason: reason.into() }
}

/// Whether [`open_parent`] creates missing folders on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parents {
    /// For an output folder (`mkdir -p`): the folders are clipada's to make.
    Create,
    /// For a single file: its folder must exist (a mistyped path is not made real).
    MustExist,
}

/// The folder a path lives in (`.` for a bare name), opened, and the path's last component.
fn open_parent(path: &Path, parents: Parents) -> Result<(OwnedFd, &OsStr), WriteError> {
    let name = path.file_name().ok_or_else(|| refused(path, "names no file"))?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if parents == Parents::Create {
        std::fs::create_dir_all(parent).map_err(|error| WriteError::Io { path: parent.to_path_buf(), error })?;
    }
    let fd = rustix::fs::open(parent, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(io_error(parent))?;
    Ok((fd, name))
}

/// The file type of `name` in `dir` without following a symlink; `None` when absent.
fn type_at(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<Option<FileType>, WriteError> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(FileType::from_raw_mode(stat.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// An unpredictable temporary name beside `name`, never longer than the longest name a
/// file may have: `name` itself is only hashed into it.
fn temporary_name(name: &OsStr) -> PathBuf {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    hasher.write(name.as_bytes());
    PathBuf::from(format!(".clipada-{:016x}.partial", hasher.finish()))
}

/// Writes `bytes` to `name` in `dir`: an exclusive new temporary, synced, renamed over `name`.
fn replace_at(dir: &OwnedFd, name: &OsStr, bytes: &[u8], path: &Path) -> Result<(), WriteError> {
    if let Some(kind) = type_at(dir, name, path)? {
        if kind == FileType::Directory {
            return Err(refused(path, "is a folder"));
        }
    }
    let temporary = temporary_name(name);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, &temporary, flags, Mode::from_raw_mode(FILE_MODE)).map_err(io_error(path))?;
    let mut file = File::from(fd);
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| WriteError::Io { path: path.to_path_buf(), error })
        .and_then(|()| rustix::fs::renameat(dir, &temporary, dir, name).map_err(io_error(path)));
    if written.is_err() {
        let _ = rustix::fs::unlinkat(dir, &temporary, AtFlags::empty());
    }
    written
}

/// Refuses `name` in `dir` unless it is absent, or a regular file of `kind`.
fn check_kind(dir: &OwnedFd, name: &OsStr, kind: FileKind, path: &Path) -> Result<(), WriteError> {
    match type_at(dir, name, path)? {
        None => Ok(()),
        Some(FileType::RegularFile) => {
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
            let file = File::from(rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(io_error(path))?);
            let len = file.metadata().map_err(|error| WriteError::Io { path: path.to_path_buf(), error })?.len();
            if (len == 0 && kind.may_be_empty()) || (len > 0 && kind.recognises(&file, len)) {
                Ok(())
            } else {
                Err(refused(path, format!("not a clipada {}: refusing to overwrite it", kind.name())))
            }
        }
        Some(FileType::Symlink) => Err(refused(path, "is a symlink: clipada writes only files it made")),
        Some(_) => Err(refused(path, format!("not a regular file: refusing to write a {} there", kind.name()))),
    }
}

/// Replaces the file at `path` with `bytes` atomically: refused when an existing file there is
/// not a clipada file of `kind` (or is a symlink).
pub(crate) fn replace_file(path: &Path, kind: FileKind, bytes: &[u8]) -> Result<(), WriteError> {
    let (dir, name) = open_parent(path, Parents::MustExist)?;
    check_kind(&dir, name, kind, path)?;
    replace_at(&dir, name, bytes, path)
}

/// Checks, writing nothing, that [`replace_file`] would accept `path` for `kind`: a command
/// that works for minutes before writing its result checks its destination first.
pub(crate) fn replaceable(path: &Path, kind: FileKind) -> Result<(), WriteError> {
    let (dir, name) = open_parent(path, Parents::MustExist)?;
    check_kind(&dir, name, kind, path)
}

/// Rotates the file at `path`: `path.N` (the oldest kept) is replaced by `path.N-1`, …, `path.1`
/// by `path`, so at most `keep` earlier files stay; `path` itself is then gone. Refused, moving
/// nothing, when any of them exists and is not a clipada file of `kind`.
pub(crate) fn rotate(path: &Path, kind: FileKind, keep: u32) -> Result<(), WriteError> {
    let (dir, name) = open_parent(path, Parents::MustExist)?;
    check_rotation(&dir, name, path, kind, keep)?;
    for n in (1..=keep).rev() {
        let from = if n == 1 { name.to_os_string() } else { numbered(name, n - 1) };
        match rustix::fs::renameat(&dir, &from, &dir, numbered(name, n)) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(io_error(&path.with_file_name(&from))(e)),
        }
    }
    if keep == 0 {
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(io_error(path)(e)),
        }
    }
    Ok(())
}

/// `name.n`.
fn numbered(name: &OsStr, n: u32) -> std::ffi::OsString {
    let mut numbered = name.to_os_string();
    numbered.push(format!(".{n}"));
    numbered
}

/// Checks, moving nothing, that [`rotate`] would accept `path` and its `keep` numbered files:
/// each absent or a clipada file of `kind` (a station checks it at start, so a foreign file
/// stops it there rather than its log later).
pub(crate) fn rotatable(path: &Path, kind: FileKind, keep: u32) -> Result<(), WriteError> {
    let (dir, name) = open_parent(path, Parents::MustExist)?;
    check_rotation(&dir, name, path, kind, keep)
}

/// [`check_kind`] of `name` (at `path`) and its `keep` numbered files in `dir`.
fn check_rotation(dir: &OwnedFd, name: &OsStr, path: &Path, kind: FileKind, keep: u32) -> Result<(), WriteError> {
    check_kind(dir, name, kind, path)?;
    for n in 1..=keep {
        check_kind(dir, &numbered(name, n), kind, &path.with_file_name(numbered(name, n)))?;
    }
    Ok(())
}

/// Opens the file at `path` for reading and writing (every write at its end with `append`),
/// creating it when missing, locked exclusively; refused when it exists and is not a clipada
/// file of `kind` (or is a symlink), and [`WriteError::Locked`] when another process holds it.
pub fn open_owned(path: &Path, kind: FileKind, append: bool) -> Result<File, WriteError> {
    let (dir, name) = open_parent(path, Parents::MustExist)?;
    check_kind(&dir, name, kind, path)?;
    let mut flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    if append {
        flags |= OFlags::APPEND;
    }
    let fd = rustix::fs::openat(&dir, name, flags, Mode::from_raw_mode(FILE_MODE)).map_err(io_error(path))?;
    let stat = rustix::fs::fstat(&fd).map_err(io_error(path))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(refused(path, "not a regular file"));
    }
    lock(&fd, path)?;
    Ok(File::from(fd))
}

fn lock(fd: &impl AsFd, path: &Path) -> Result<(), WriteError> {
    match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(Errno::WOULDBLOCK) => Err(WriteError::Locked { path: path.to_path_buf() }),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// A folder clipada owns, held open: everything in it is reached relative to this handle.
#[derive(Debug)]
pub struct OwnedDir {
    dir: OwnedFd,
    path: PathBuf,
}

impl OwnedDir {
    /// Opens the folder at `path` as clipada's folder of `kind`, creating it (and its parents)
    /// when missing. An existing folder is taken only when it carries the marker of this kind,
    /// or is empty (then it is marked); the folder itself must not be a symlink.
    pub fn claim(path: &Path, kind: FolderKind) -> Result<OwnedDir, WriteError> {
        let (parent, name) = open_parent(path, Parents::Create)?;
        match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io_error(path)(e)),
        }
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = rustix::fs::openat(&parent, name, flags, Mode::empty()).map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => {
                refused(path, "not a folder (or a symlink to one): clipada writes only into folders it made")
            }
            e => io_error(path)(e),
        })?;
        let owned = OwnedDir { dir, path: path.to_path_buf() };
        let marker = format!("clipada {}\n", kind.name());
        match owned.read_marker()? {
            Some(found) if found == marker.as_bytes() => Ok(owned),
            Some(found) => Err(refused(
                path,
                format!(
                    "marked as clipada's {:?} folder, not its {} folder",
                    String::from_utf8_lossy(&found).trim().trim_start_matches("clipada "),
                    kind.name()
                ),
            )),
            None if owned.is_empty()? => {
                replace_at(&owned.dir, OsStr::new(MARKER), marker.as_bytes(), path)?;
                Ok(owned)
            }
            None => Err(refused(
                path,
                format!(
                    "has files that clipada did not make (no {MARKER} marker): give a new or empty folder for the {}",
                    kind.name()
                ),
            )),
        }
    }

    fn read_marker(&self) -> Result<Option<Vec<u8>>, WriteError> {
        if type_at(&self.dir, OsStr::new(MARKER), &self.path)? != Some(FileType::RegularFile) {
            return Ok(None);
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = rustix::fs::openat(&self.dir, MARKER, flags, Mode::empty()).map_err(io_error(&self.path))?;
        let mut bytes = Vec::new();
        File::from(fd)
            .take(64)
            .read_to_end(&mut bytes)
            .map_err(|error| WriteError::Io { path: self.path.clone(), error })?;
        Ok(Some(bytes))
    }

    fn is_empty(&self) -> Result<bool, WriteError> {
        let mut entries = rustix::fs::Dir::read_from(&self.dir).map_err(io_error(&self.path))?;
        while let Some(entry) = entries.read() {
            let entry = entry.map_err(io_error(&self.path))?;
            if ![&b"."[..], b".."].contains(&entry.file_name().to_bytes()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The folder's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Holds an exclusive lock on the folder while this handle lives; [`WriteError::Locked`]
    /// when another process holds it.
    pub fn lock(&self) -> Result<(), WriteError> {
        lock(&self.dir, &self.path)
    }

    /// Opens (creating) the sub-folders of `relative`, a plain relative path, without
    /// following symlinks; returns the innermost folder and the file name.
    fn folder_of<'a>(&self, relative: &'a Path) -> Result<(Option<OwnedFd>, &'a OsStr), WriteError> {
        let full = self.path.join(relative);
        let mut components: Vec<&OsStr> = Vec::new();
        for component in relative.components() {
            match component {
                Component::Normal(name) => components.push(name),
                _ => return Err(refused(&full, "must stay inside its folder (a plain relative path)")),
            }
        }
        let name = components.pop().ok_or_else(|| refused(&full, "names no file"))?;
        let mut current: Option<OwnedFd> = None;
        for folder in components {
            let at = current.as_ref().unwrap_or(&self.dir);
            match rustix::fs::mkdirat(at, folder, Mode::from_raw_mode(DIR_MODE)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(io_error(&full)(e)),
            }
            let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let next = rustix::fs::openat(at, folder, flags, Mode::empty()).map_err(|e| match e {
                Errno::LOOP | Errno::NOTDIR => refused(&full, "a folder on its way is a symlink or a file"),
                e => io_error(&full)(e),
            })?;
            current = Some(next);
        }
        Ok((current, name))
    }

    /// Writes `bytes` to `relative` (sub-folders created) atomically; returns its path.
    pub(crate) fn write_atomic(&self, relative: &Path, bytes: &[u8]) -> Result<PathBuf, WriteError> {
        let full = self.path.join(relative);
        if relative.as_os_str().as_bytes() == MARKER.as_bytes() {
            return Err(refused(&full, "is the folder's marker"));
        }
        let (folder, name) = self.folder_of(relative)?;
        replace_at(folder.as_ref().unwrap_or(&self.dir), name, bytes, &full)?;
        Ok(full)
    }

    /// The regular files directly in the folder (not the marker, symlinks, folders or
    /// temporaries), with their sizes, in name order.
    pub fn files(&self) -> Result<Vec<(String, u64)>, WriteError> {
        let mut found = Vec::new();
        let mut entries = rustix::fs::Dir::read_from(&self.dir).map_err(io_error(&self.path))?;
        while let Some(entry) = entries.read() {
            let entry = entry.map_err(io_error(&self.path))?;
            let Ok(name) = entry.file_name().to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let Ok(stat) = rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) else { continue };
            if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile {
                found.push((name.to_string(), stat.st_size as u64));
            }
        }
        found.sort();
        Ok(found)
    }

    /// The folder's owner (uid) and permission bits.
    #[cfg(feature = "ort")]
    pub(crate) fn owner_and_mode(&self) -> Result<(u32, u32), WriteError> {
        let stat = rustix::fs::fstat(&self.dir).map_err(io_error(&self.path))?;
        Ok((stat.st_uid, stat.st_mode & 0o7777))
    }

    /// Every entry directly in the folder but its marker, by its name's bytes (which need not be
    /// UTF-8), with the size of each regular file (`None`: a symlink, folder or other), in name
    /// order.
    #[cfg(any(feature = "ort", feature = "hmi"))]
    pub(crate) fn entries(&self) -> Result<Vec<(std::ffi::OsString, Option<u64>)>, WriteError> {
        let mut found = Vec::new();
        let mut entries = rustix::fs::Dir::read_from(&self.dir).map_err(io_error(&self.path))?;
        while let Some(entry) = entries.read() {
            let entry = entry.map_err(io_error(&self.path))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if [".", "..", MARKER].map(OsStr::new).contains(&name) {
                continue;
            }
            let stat = rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_error(&self.path))?;
            let regular = FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile;
            found.push((name.to_owned(), regular.then_some(stat.st_size as u64)));
        }
        found.sort();
        Ok(found)
    }

    /// Opens the regular file `name` directly in the folder for reading, never through a link.
    pub(crate) fn open_file(&self, name: &str) -> Result<File, WriteError> {
        let path = self.path.join(name);
        if name.contains('/') {
            return Err(refused(&path, "not a file directly in its folder"));
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = rustix::fs::openat(&self.dir, name, flags, Mode::empty()).map_err(|e| match e {
            Errno::LOOP => refused(&path, "a symlink"),
            e => io_error(&path)(e),
        })?;
        let stat = rustix::fs::fstat(&fd).map_err(io_error(&path))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(refused(&path, "not a regular file"));
        }
        // clipada renames each file it makes into place: one more name is a link someone made,
        // maybe to a file outside.
        if stat.st_nlink != 1 {
            return Err(refused(&path, "a file with other names (a hard link): clipada made no such file"));
        }
        Ok(File::from(fd))
    }

    /// The bytes of the regular file `name` directly in the folder, at most `limit` of them.
    pub(crate) fn read(&self, name: &str, limit: usize) -> Result<Vec<u8>, WriteError> {
        let mut bytes = Vec::new();
        self.open_file(name)?
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|error| WriteError::Io { path: self.path.join(name), error })?;
        if bytes.len() > limit {
            return Err(refused(&self.path.join(name), format!("larger than {limit} bytes")));
        }
        Ok(bytes)
    }

    /// Removes every entry directly in the folder but its marker: files and symlinks (never
    /// what a link points to); a sub-folder is refused.
    #[cfg(any(feature = "ort", feature = "hmi"))]
    pub(crate) fn clear(&self) -> Result<(), WriteError> {
        for (name, _) in self.entries()? {
            let path = self.path.join(&name);
            if type_at(&self.dir, &name, &path)? == Some(FileType::Directory) {
                return Err(refused(&path, "a folder inside: clipada made none here"));
            }
            match rustix::fs::unlinkat(&self.dir, name.as_os_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(io_error(&path)(e)),
            }
        }
        Ok(())
    }

    /// Deletes the regular file `name` directly in the folder; a missing one is no error. A
    /// symlink or folder of that name is refused.
    pub fn remove(&self, name: &str) -> Result<(), WriteError> {
        let path = self.path.join(name);
        if name.contains('/') || name.starts_with('.') {
            return Err(refused(&path, "not a file clipada made here"));
        }
        match type_at(&self.dir, OsStr::new(name), &path)? {
            None => Ok(()),
            Some(FileType::RegularFile) => match rustix::fs::unlinkat(&self.dir, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(io_error(&path)(e)),
            },
            Some(_) => Err(refused(&path, "not a regular file: clipada deletes only files it made")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_file_of_the_longest_name_is_written_through_its_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let owned = OwnedDir::claim(&dir.path().join("out"), FolderKind::Overlays).unwrap();
        let longest = format!("{}.png", "n".repeat(251));
        owned.write_atomic(Path::new(&longest), b"png").unwrap();
        assert_eq!(std::fs::read(dir.path().join("out").join(longest)).unwrap(), b"png");
    }

    #[test]
    fn a_new_folder_is_marked_and_reclaimed_and_a_foreign_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let overlays = dir.path().join("out/overlays");
        let owned = OwnedDir::claim(&overlays, FolderKind::Overlays).unwrap();
        owned.write_atomic(Path::new("chip/000.png"), b"png").unwrap();
        assert_eq!(std::fs::read(overlays.join("chip/000.png")).unwrap(), b"png");
        drop(owned);
        OwnedDir::claim(&overlays, FolderKind::Overlays).expect("its own folder again");
        let error = OwnedDir::claim(&overlays, FolderKind::FailedParts).unwrap_err();
        assert!(error.to_string().contains("not its failed-parts folder"), "{error}");

        let user = dir.path().join("photos");
        std::fs::create_dir(&user).unwrap();
        std::fs::write(user.join("holiday.png"), b"mine").unwrap();
        let error = OwnedDir::claim(&user, FolderKind::Overlays).unwrap_err();
        assert!(error.to_string().contains("has files that clipada did not make"), "{error}");
        assert_eq!(std::fs::read(user.join("holiday.png")).unwrap(), b"mine");
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        OwnedDir::claim(&dir.path().join("empty"), FolderKind::Maps).expect("an empty folder is taken");
    }

    #[test]
    fn symlinks_in_the_way_are_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        symlink(&victim, dir.path().join("failures")).unwrap();
        let error = OwnedDir::claim(&dir.path().join("failures"), FolderKind::FailedParts).unwrap_err();
        assert!(error.to_string().contains("symlink"), "{error}");
        assert!(std::fs::read_dir(&victim).unwrap().next().is_none(), "nothing written through the link");

        let owned = OwnedDir::claim(&dir.path().join("maps"), FolderKind::Maps).unwrap();
        symlink(&victim, dir.path().join("maps/chip")).unwrap();
        let error = owned.write_atomic(Path::new("chip/000.npy"), b"x").unwrap_err();
        assert!(error.to_string().contains("symlink"), "{error}");
        assert!(owned.write_atomic(Path::new("../escape.npy"), b"x").is_err());
        assert!(std::fs::read_dir(&victim).unwrap().next().is_none());

        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        symlink(&secret, dir.path().join("part.memory")).unwrap();
        let error = replace_file(&dir.path().join("part.memory"), FileKind::Memory, b"CLIPADA-MEMORY").unwrap_err();
        assert!(error.to_string().contains("symlink"), "{error}");
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only");
    }

    #[test]
    fn a_file_of_another_kind_is_never_overwritten_or_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.onnx");
        std::fs::write(&model, b"\x08\x07onnx").unwrap();
        let error = replace_file(&model, FileKind::Memory, b"CLIPADA-MEMORY\0\0").unwrap_err();
        assert!(error.to_string().contains("not a clipada memory file"), "{error}");
        assert_eq!(std::fs::read(&model).unwrap(), b"\x08\x07onnx");

        let notes = dir.path().join("notes.txt");
        std::fs::write(&notes, b"shift notes\n").unwrap();
        assert!(open_owned(&notes, FileKind::ResultLog, true).is_err());
        assert!(open_owned(&notes, FileKind::GpioRecord, false).is_err());
        assert!(open_owned(&notes, FileKind::Framebuffer, false).is_err());
        assert_eq!(std::fs::read(&notes).unwrap(), b"shift notes\n");

        let log = dir.path().join("results.jsonl");
        std::fs::write(&log, b"{\"time\":\"t\",\"verdict\":\"pass\"}\n").unwrap();
        open_owned(&log, FileKind::ResultLog, true).expect("a result log is appended to");
    }

    #[test]
    fn a_second_holder_of_the_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = OwnedDir::claim(&dir.path().join("state"), FolderKind::State).unwrap();
        state.lock().unwrap();
        let other = OwnedDir::claim(&dir.path().join("state"), FolderKind::State).unwrap();
        assert!(matches!(other.lock(), Err(WriteError::Locked { .. })));
        let log = dir.path().join("results.jsonl");
        let _held = open_owned(&log, FileKind::ResultLog, true).unwrap();
        assert!(matches!(open_owned(&log, FileKind::ResultLog, true), Err(WriteError::Locked { .. })));
    }

    #[test]
    fn only_plain_files_are_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let owned = OwnedDir::claim(&dir.path().join("failures"), FolderKind::FailedParts).unwrap();
        owned.write_atomic(Path::new("b.png"), b"12").unwrap();
        std::fs::create_dir(dir.path().join("failures/x.png")).unwrap();
        symlink("/etc/hostname", dir.path().join("failures/a.png")).unwrap();
        assert_eq!(owned.files().unwrap(), [("b.png".to_string(), 2)]);
        assert!(owned.remove("x.png").is_err());
        assert!(owned.remove("a.png").is_err());
        assert!(owned.remove("../b.png").is_err());
        owned.remove("b.png").unwrap();
        owned.remove("b.png").expect("already gone is no error");
    }
}
