//! Writing a file so that readers see the old content or the new, never a torn one: the bytes
//! go to `<name>.partial` beside it, are flushed to disk, and the file is renamed into place.
//! Every file clipada writes for others to read (memory files, overlays, maps, saved parts)
//! goes through here.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically; on failure the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    let written = std::fs::File::create(&temporary)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Creates the folder `path` goes in, if missing.
pub fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir),
        None => Ok(()),
    }
}
