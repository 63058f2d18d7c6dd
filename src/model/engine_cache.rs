//! TensorRT's engine cache. Serialized engines are code the GPU runs, so ONNX Runtime is
//! pointed only at a folder of engines clipada recorded itself:
//!
//! - one sub-folder per key: the model file's SHA-256, the precision, the ONNX Runtime and
//!   TensorRT versions and the GPU — engines built for anything else are never offered;
//! - a manifest (`manifest`, written by clipada after the engines were built) with each file's
//!   size and SHA-256; before a load, every entry of the folder must be a regular file listed
//!   there with its hash, else the folder is emptied and the engines rebuilt (minutes, logged);
//! - the folders are clipada's own (marked, no symlinks followed, 0750) and the running user's
//!   alone; the command line uses the user's own cache, never the service's, and none where
//!   the folder it lies in is not the user's (`cli`); it is opened only when TensorRT is there.

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::storage::owned::{FolderKind, OwnedDir};

/// The manifest's name in a key's folder.
const MANIFEST: &str = "manifest";
/// Largest manifest read: a line per engine file.
const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// What the engines in one folder were built from and for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheKey {
    /// The model file's SHA-256.
    pub model_sha256: String,
    /// `fp16`, `int8` or `fp32`.
    pub precision: &'static str,
    /// ONNX Runtime's version string.
    pub onnx_runtime: String,
    /// TensorRT's version, or `unknown`.
    pub tensorrt: String,
    /// The GPU (model name, or the Jetson module), or `unknown`.
    pub gpu: String,
}

impl CacheKey {
    /// The key as text: one `name value` line per field (the manifest's first lines).
    fn text(&self) -> String {
        format!(
            "model {}\nprecision {}\nonnxruntime {}\ntensorrt {}\ngpu {}\n",
            self.model_sha256, self.precision, self.onnx_runtime, self.tensorrt, self.gpu
        )
    }

    /// The key's folder name: the first 32 hex digits of the SHA-256 of its text.
    fn folder_name(&self) -> String {
        format!("{:x}", Sha256::digest(self.text().as_bytes()))[..32].to_string()
    }
}

/// A key's folder in the engine cache, checked.
pub(crate) struct EngineCache {
    folder: OwnedDir,
    key: CacheKey,
}

impl EngineCache {
    /// The folder for `key` under `root` (both claimed as clipada's engine cache), with
    /// whatever the manifest does not vouch for removed. `Ok((cache, Some(why)))` when engines
    /// were removed (they will be rebuilt).
    pub(crate) fn open(root: &Path, key: CacheKey) -> Result<(EngineCache, Option<String>), String> {
        let claim = |path: &Path| {
            let folder = OwnedDir::claim(path, FolderKind::EngineCache).map_err(|e| format!("engine cache: {e}"))?;
            // Engines another user could have written are never loaded (say, root's run with a
            // user's HOME): the folders must be this user's alone.
            let (owner, mode) = folder.owner_and_mode().map_err(|e| format!("engine cache: {e}"))?;
            let user = rustix::process::geteuid().as_raw();
            if !crate::storage::trust::only_changed_by(user, owner, mode) {
                return Err(format!(
                    "engine cache {}: owner uid {owner}, mode {mode:04o}: not this user's (uid {user}) alone; \
                     engines are loaded only from the running user's own cache (XDG_CACHE_HOME, or sudo -H)",
                    path.display()
                ));
            }
            Ok(folder)
        };
        claim(root)?;
        let folder = claim(&root.join(key.folder_name()))?;
        let cache = EngineCache { folder, key };
        let removed = match cache.unvouched() {
            Ok(()) => None,
            Err(why) => {
                cache.folder.clear().map_err(|e| format!("engine cache: {e}"))?;
                Some(format!("engine cache {}: {why}: emptied, engines are rebuilt", cache.path().display()))
            }
        };
        Ok((cache, removed))
    }

    /// The folder ONNX Runtime is to use.
    pub(crate) fn path(&self) -> &Path {
        self.folder.path()
    }

    /// Records the files now in the folder (the engines just built) in the manifest.
    pub(crate) fn record(&self) -> Result<(), String> {
        let mut manifest = self.key.text();
        for (name, size) in self.engine_files()? {
            let hash = self.hash_of(&name)?;
            let _ = writeln!(manifest, "file {hash} {size} {name}");
        }
        self.folder
            .write_atomic(Path::new(MANIFEST), manifest.as_bytes())
            .map(drop)
            .map_err(|e| format!("engine cache: {e}"))
    }

    /// `Ok` when the folder holds only regular files the manifest lists, each with its size and
    /// hash, every file it lists, and the manifest is this key's (an empty folder needs none).
    fn unvouched(&self) -> Result<(), String> {
        let entries = self.folder.entries().map_err(|e| e.to_string())?;
        if entries.is_empty() {
            return Ok(());
        }
        let mut engines = Vec::new();
        for (name, size) in &entries {
            match name.to_str() {
                Some(MANIFEST) => {}
                Some(name) => engines.push((name, *size)),
                None => return Err(format!("{name:?} is not in the manifest")),
            }
        }
        let manifest = self.folder.read(MANIFEST, MAX_MANIFEST_BYTES).map_err(|e| format!("no manifest: {e}"))?;
        let manifest = String::from_utf8(manifest).map_err(|_| "the manifest is not text".to_string())?;
        let Some(listed) = manifest.strip_prefix(&self.key.text()) else {
            return Err("the manifest is for other engines".into());
        };
        let mut vouched = std::collections::BTreeMap::new();
        for line in listed.lines() {
            let mut fields = line.splitn(4, ' ');
            let (Some("file"), Some(hash), Some(size), Some(name)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(format!("manifest line {line:?}"));
            };
            vouched.insert(name.to_string(), (hash.to_string(), size.parse::<u64>().ok()));
        }
        for (name, size) in engines {
            if size.is_none() {
                return Err(format!("{name} is not a regular file"));
            }
            let Some((hash, listed_size)) = vouched.remove(name) else {
                return Err(format!("{name} is not in the manifest"));
            };
            if size != listed_size || self.hash_of(name)? != hash {
                return Err(format!("{name} is not the file the manifest lists"));
            }
        }
        match vouched.into_keys().next() {
            Some(missing) => Err(format!("{missing} is missing")),
            None => Ok(()),
        }
    }

    /// The regular files but the manifest, with their sizes: every one the check will look at
    /// (the same listing); a name that is not UTF-8 is left out, so the next check removes it.
    fn engine_files(&self) -> Result<Vec<(String, u64)>, String> {
        let entries = self.folder.entries().map_err(|e| format!("engine cache: {e}"))?;
        Ok(entries
            .into_iter()
            .filter_map(|(name, size)| Some((name.into_string().ok()?, size?)))
            .filter(|(name, _)| name != MANIFEST)
            .collect())
    }

    /// The SHA-256 of the regular file `name` in the folder, read without following links.
    fn hash_of(&self, name: &str) -> Result<String, String> {
        let mut file = self.folder.open_file(name).map_err(|e| e.to_string())?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buffer[..n]),
                Err(e) => return Err(format!("{name}: {e}")),
            }
        }
        Ok(format!("{:x}", hasher.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        CacheKey {
            model_sha256: "ab".repeat(32),
            precision: "fp16",
            onnx_runtime: "1.32.0".into(),
            tensorrt: "10.3.0".into(),
            gpu: "Orin".into(),
        }
    }

    /// The cache for `key` under `root` with one engine built and recorded.
    fn recorded(root: &Path, key: CacheKey) -> std::path::PathBuf {
        let (cache, removed) = EngineCache::open(root, key).unwrap();
        assert_eq!(removed, None, "a new folder is empty");
        std::fs::write(cache.path().join("model_sm87.engine"), b"engine bytes").unwrap();
        cache.record().unwrap();
        cache.path().to_path_buf()
    }

    #[test]
    fn a_cache_that_cannot_be_a_folder_is_an_error_naming_it_and_a_missing_one_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-folder");
        std::fs::write(&file, b"").unwrap();
        let error = EngineCache::open(&file.join("engines"), key()).err().unwrap();
        assert!(error.contains("not-a-folder"), "{error}");
        let fresh = dir.path().join("cache/tensorrt");
        let (cache, _) = EngineCache::open(&fresh, key()).unwrap();
        assert!(cache.path().starts_with(&fresh) && cache.path().is_dir());
    }

    #[test]
    fn a_cache_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tensorrt");
        EngineCache::open(&root, key()).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o770)).unwrap();
        let error = EngineCache::open(&root, key()).err().unwrap();
        assert!(error.contains("mode 0770") && error.contains("alone"), "{error}");
    }

    #[test]
    fn recorded_engines_are_kept_and_each_key_has_its_own_folder() {
        let dir = tempfile::tempdir().unwrap();
        let folder = recorded(dir.path(), key());
        let (again, removed) = EngineCache::open(dir.path(), key()).unwrap();
        assert_eq!((again.path(), removed), (folder.as_path(), None));
        assert_eq!(std::fs::read(folder.join("model_sm87.engine")).unwrap(), b"engine bytes");
        for other in [
            CacheKey { tensorrt: "10.4.0".into(), ..key() },
            CacheKey { gpu: "RTX 4090".into(), ..key() },
            CacheKey { precision: "int8", ..key() },
            CacheKey { model_sha256: "cd".repeat(32), ..key() },
            CacheKey { onnx_runtime: "1.31.1".into(), ..key() },
        ] {
            let (cache, removed) = EngineCache::open(dir.path(), other).unwrap();
            assert_ne!(cache.path(), folder.as_path());
            assert_eq!(removed, None);
            assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1, "only the folder's marker");
        }
    }

    #[test]
    fn engines_the_manifest_does_not_vouch_for_are_removed_before_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.engine");
        std::fs::write(&outside, b"someone else's").unwrap();
        type Tamper = fn(&Path, &Path);
        let tampering: [(&str, Tamper); 5] = [
            ("not the file", |folder, _| std::fs::write(folder.join("model_sm87.engine"), b"engine bytez").unwrap()),
            ("not in the manifest", |folder, _| std::fs::write(folder.join("planted.engine"), b"x").unwrap()),
            ("not a regular file", |folder, outside| {
                std::os::unix::fs::symlink(outside, folder.join("link.engine")).unwrap()
            }),
            ("no manifest", |folder, _| std::fs::remove_file(folder.join(MANIFEST)).unwrap()),
            ("is missing", |folder, _| std::fs::remove_file(folder.join("model_sm87.engine")).unwrap()),
        ];
        for (why, tamper) in tampering {
            let root = dir.path().join(why.replace(' ', "-"));
            let folder = recorded(&root, key());
            tamper(&folder, &outside);
            let (cache, removed) = EngineCache::open(&root, key()).unwrap();
            let removed = removed.unwrap_or_else(|| panic!("{why}: kept"));
            assert!(removed.contains(why), "{why}: {removed}");
            let left: Vec<String> = std::fs::read_dir(cache.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(left, [".clipada"], "{why}: emptied");
        }
        assert_eq!(std::fs::read(&outside).unwrap(), b"someone else's", "a link's target is never touched");
    }

    #[test]
    fn names_that_are_not_utf8_and_hidden_files_are_removed_too_and_then_the_folder_is_clean() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let folder = recorded(dir.path(), key());
        std::fs::write(folder.join(std::ffi::OsStr::from_bytes(b"b\xff.engine")), b"x").unwrap();
        std::fs::write(folder.join(".hidden.engine"), b"x").unwrap();
        let (_, removed) = EngineCache::open(dir.path(), key()).unwrap();
        assert!(removed.unwrap().contains("is not in the manifest"));
        let left: Vec<_> = std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [".clipada"], "emptied, as the warning says");
        let (_, removed) = EngineCache::open(dir.path(), key()).unwrap();
        assert_eq!(removed, None, "said once, not at every start");
    }
}
