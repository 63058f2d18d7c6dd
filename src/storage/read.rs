//! Reading files from outside: only regular files, each of bounded size, opened so that a FIFO
//! or a device never blocks the reader.
//!
//! Every read of a file clipada did not make goes through [`read_regular`]: models, memory
//! files, configurations, images, masks. A FIFO, socket or device with a plausible name is
//! refused by what it is, not read; a file larger than the limit of its kind is refused before
//! anything is allocated for it.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest image file (PNG, JPEG, BMP) read: a 64-megapixel frame compresses far below this.
pub(crate) const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;
/// Largest station configuration read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A file that could not be read; every variant names it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It could not be opened (missing, no permission).
    #[error("{path}: cannot open: {error}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// It is a FIFO, a device, a socket or a folder.
    #[error("{path}: not a regular file but a {kind}")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// It is larger than files of its kind may be.
    #[error("{path}: {size} bytes, more than the {limit} bytes a {what} may have")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (at least; it may be growing).
        size: u64,
        /// The limit for its kind.
        limit: u64,
        /// Its kind, e.g. `model`.
        what: &'static str,
    },
    /// Reading failed, or its bytes could not be allocated.
    #[error("{path}: cannot read: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

impl ReadError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ReadError::Open { path, .. }
            | ReadError::NotRegular { path, .. }
            | ReadError::TooLarge { path, .. }
            | ReadError::Read { path, .. } => path,
        }
    }
}

/// Opens `path` for reading without blocking (a FIFO opens at once) and checks that it is a
/// regular file of at most `limit` bytes; returns it with its metadata.
pub(crate) fn open_regular(path: &Path, limit: u64, what: &'static str) -> Result<(File, Metadata), ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|error| ReadError::Open { path: path.to_path_buf(), error })?;
    let metadata = file.metadata().map_err(|error| ReadError::Read { path: path.to_path_buf(), error })?;
    if !metadata.is_file() {
        return Err(ReadError::NotRegular { path: path.to_path_buf(), kind: kind_of(&metadata) });
    }
    if metadata.len() > limit {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), size: metadata.len(), limit, what });
    }
    Ok((file, metadata))
}

/// Reads the whole of `path`, a regular file of at most `limit` bytes (`what` names its kind
/// in the error). The buffer is allocated fallibly, and a file that grows past the limit while
/// it is read is refused too.
pub fn read_regular(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, ReadError> {
    let (file, metadata) = open_regular(path, limit, what)?;
    let read_error = |error| ReadError::Read { path: path.to_path_buf(), error };
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(metadata.len() as usize).map_err(|e| read_error(std::io::Error::other(e.to_string())))?;
    file.take(limit + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), size: bytes.len() as u64, limit, what });
    }
    Ok(bytes)
}

/// A file's identity on this machine: the same pair for every path (hard links, symlinks,
/// `..`) that reaches it.
pub(crate) fn identity(metadata: &Metadata) -> (u64, u64) {
    (metadata.dev(), metadata.ino())
}

/// What a non-regular file is, for messages.
pub(crate) fn kind_of(metadata: &Metadata) -> &'static str {
    let kind = metadata.file_type();
    if kind.is_dir() {
        "folder"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_symlink() {
        "symlink"
    } else {
        "regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("part.jpg");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let error = read_regular(&fifo, 1 << 20, "image").unwrap_err();
        assert!(matches!(error, ReadError::NotRegular { kind: "FIFO", .. }), "{error}");
        assert!(error.to_string().contains("part.jpg"), "{error}");
    }

    #[test]
    fn devices_and_folders_are_refused_by_kind() {
        let error = read_regular(Path::new("/dev/urandom"), 1 << 20, "image").unwrap_err();
        assert!(matches!(error, ReadError::NotRegular { kind: "character device", .. }), "{error}");
        let error = read_regular(Path::new("/"), 1 << 20, "image").unwrap_err();
        assert!(matches!(error, ReadError::NotRegular { kind: "folder", .. }), "{error}");
    }

    #[test]
    fn a_file_over_its_limit_is_refused_naming_limit_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.onnx");
        std::fs::write(&path, vec![0u8; 1001]).unwrap();
        let error = read_regular(&path, 1000, "model").unwrap_err();
        assert!(error.to_string().contains("1001 bytes, more than the 1000 bytes a model may have"), "{error}");
        assert_eq!(read_regular(&path, 1001, "model").unwrap().len(), 1001);
    }
}
