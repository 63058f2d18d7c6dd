//! Files clipada runs as code (the ONNX Runtime library) are loaded only when root alone could
//! have placed them: the rule sudo applies to its plugins.
//!
//! The file and every folder above it — along the path as given and along the path its links
//! resolve to — must belong to root and be writable by no one else. A path that is relative
//! (it would resolve in the service's writable working folder), a library in a home folder or
//! in a virtual environment of another user, or one reached through a folder the service may
//! write is refused, naming what is at fault.

#[cfg(feature = "ort")]
use std::os::unix::fs::MetadataExt;
#[cfg(feature = "ort")]
use std::path::{Path, PathBuf};

/// Write permission for the group or for others.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// Whether a file or folder of `owner` and `mode` can be changed by the user `uid` alone (and
/// root): it is theirs and neither its group nor others may write it.
pub(crate) fn only_changed_by(uid: u32, owner: u32, mode: u32) -> bool {
    owner == uid && mode & WRITABLE_BY_OTHERS == 0
}

/// The file at `path`, resolved, when only root can change it (and what leads to it); else
/// why not.
#[cfg(feature = "ort")]
pub(crate) fn root_only(path: &Path) -> Result<PathBuf, String> {
    if !path.is_absolute() {
        return Err(format!("{}: not an absolute path", path.display()));
    }
    let resolved = path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))?;
    let metadata = std::fs::metadata(&resolved).map_err(|e| format!("{}: {e}", resolved.display()))?;
    if !metadata.is_file() {
        return Err(format!("{}: not a regular file", resolved.display()));
    }
    for place in std::iter::once(resolved.as_path()).chain(resolved.ancestors().skip(1)).chain(path.ancestors().skip(1))
    {
        let metadata = std::fs::metadata(place).map_err(|e| format!("{}: {e}", place.display()))?;
        let (owner, mode) = (metadata.uid(), metadata.mode() & 0o7777);
        if !only_changed_by(0, owner, mode) {
            return Err(format!(
                "{}: owner uid {owner}, mode {mode:04o}: others than root could change it",
                place.display()
            ));
        }
    }
    Ok(resolved)
}

#[cfg(all(test, feature = "ort"))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_root_alone_can_change_is_trusted() {
        // Part of every Debian system: root's, in root's folders.
        assert_eq!(root_only(Path::new("/usr/bin/env")).unwrap(), Path::new("/usr/bin/env").canonicalize().unwrap());
    }

    #[test]
    fn relative_paths_and_files_others_could_change_are_refused_naming_the_place() {
        assert!(root_only(Path::new("libonnxruntime.so")).unwrap_err().contains("not an absolute path"));
        // Below /tmp (writable by everyone, sticky) whoever owns the file.
        let dir = tempfile::tempdir().unwrap();
        let library = dir.path().join("libonnxruntime.so");
        std::fs::write(&library, b"\x7fELF").unwrap();
        let why = root_only(&library).unwrap_err();
        assert!(why.contains("others than root could change it"), "{why}");
        // The file itself writable by others.
        std::fs::set_permissions(&library, std::fs::Permissions::from_mode(0o666)).unwrap();
        let why = root_only(&library).unwrap_err();
        assert!(why.starts_with(&format!("{}: ", library.display())) && why.contains("mode 0666"), "{why}");
        // A link to a trusted file, in a place others could change (and swap the link): refused.
        let link = dir.path().join("env");
        std::os::unix::fs::symlink("/usr/bin/env", &link).unwrap();
        let why = root_only(&link).unwrap_err();
        assert!(why.contains("others than root could change it"), "{why}");
        let folder = dir.path().join("folder");
        std::fs::create_dir(&folder).unwrap();
        assert!(root_only(&folder).unwrap_err().contains("not a regular file"));
    }
}
