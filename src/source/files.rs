//! Image files and folders given by the user, and reading one image from its file.
//!
//! The one place folders are walked and image files read: symlinks are followed, but every
//! file and folder is visited at most once by its identity (device, inode), so a symlink loop
//! ends and a file reached twice is judged once; a walk stops with an error beyond
//! [`MAX_WALK_DEPTH`] levels or [`MAX_WALK_ENTRIES`] entries. A name with an image extension
//! that is not a regular file (a FIFO, a device, a broken link) is kept, so that reading it is
//! an error that names it, never a hang or a silent skip. A folder met on the way that
//! clipada made for its outputs (it holds the `storage::owned` marker) is not entered.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use image::RgbImage;

use super::decode::{decode_rgb, DecodeError};
use crate::storage::owned::MARKER;
use crate::storage::read::{identity, read_regular, ReadError, MAX_IMAGE_FILE_BYTES};

/// File extensions searched for in folders (compared case-insensitively).
pub(crate) const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];
/// Deepest folder nesting walked.
pub const MAX_WALK_DEPTH: usize = 32;
/// Most folder entries looked at in one walk.
pub const MAX_WALK_ENTRIES: usize = 1_000_000;

/// One image to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    /// Where to read it.
    pub path: PathBuf,
    /// Its path relative to the argument it was found under (the file name for a file argument).
    pub relative: PathBuf,
}

/// A folder that could not be walked.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct WalkError {
    /// The folder.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// An image file that could not be read or decoded; names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not a readable regular file of bounded size.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Not a complete PNG, JPEG or BMP within the frame limits.
    #[error("{path}: {error}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Why.
        error: DecodeError,
    },
}

/// Reads and decodes the image file at `path` to 8-bit RGB.
pub fn read_image(path: &Path) -> Result<RgbImage, ImageError> {
    let bytes = read_regular(path, MAX_IMAGE_FILE_BYTES, "image file")?;
    decode_rgb(&bytes).map_err(|error| ImageError::Decode { path: path.to_path_buf(), error })
}

/// Reads and decodes the image file at `path` to 8-bit grey (masks).
pub(crate) fn read_gray(path: &Path) -> Result<image::GrayImage, ImageError> {
    Ok(image::DynamicImage::ImageRgb8(read_image(path)?).into_luma8())
}

/// Expands files and folders (searched recursively, sorted) into images to judge, each file
/// once. A file argument is kept as given whatever its name.
pub fn collect_images(arguments: &[PathBuf]) -> Result<Vec<ImageInput>, WalkError> {
    let mut walk = Walk::default();
    let mut images = Vec::new();
    for argument in arguments {
        let metadata = std::fs::metadata(argument);
        if metadata.as_ref().is_ok_and(|m| m.is_dir()) {
            let mut found = Vec::new();
            walk.folder(argument, 0, &mut found)?;
            found.sort();
            images.extend(
                found.into_iter().map(|path| ImageInput {
                    relative: path.strip_prefix(argument).unwrap_or(&path).to_path_buf(),
                    path,
                }),
            );
        } else if metadata.map_or(true, |m| walk.first_visit(&m)) {
            let relative = argument.file_name().map(PathBuf::from).unwrap_or_else(|| argument.clone());
            images.push(ImageInput { path: argument.clone(), relative });
        }
    }
    Ok(images)
}

/// What a walk has seen.
#[derive(Default)]
struct Walk {
    seen: HashSet<(u64, u64)>,
    entries: usize,
}

impl Walk {
    fn first_visit(&mut self, metadata: &std::fs::Metadata) -> bool {
        self.seen.insert(identity(metadata))
    }

    fn folder(&mut self, dir: &Path, depth: usize, found: &mut Vec<PathBuf>) -> Result<(), WalkError> {
        let error = |reason: String| WalkError { path: dir.to_path_buf(), reason };
        if depth > MAX_WALK_DEPTH {
            return Err(error(format!("folders nested deeper than {MAX_WALK_DEPTH} levels")));
        }
        let metadata = std::fs::metadata(dir).map_err(|e| error(e.to_string()))?;
        if !self.first_visit(&metadata) {
            return Ok(());
        }
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| error(format!("cannot list: {e}")))? {
            self.entries += 1;
            if self.entries > MAX_WALK_ENTRIES {
                return Err(error(format!("more than {MAX_WALK_ENTRIES} entries under the folders given")));
            }
            paths.push(entry.map_err(|e| error(format!("cannot list: {e}")))?.path());
        }
        // In name order, so that of two names for one file the first in order is the one kept.
        paths.sort();
        for path in paths {
            match std::fs::metadata(&path) {
                // A folder clipada made (overlays, maps, failed parts) holds its outputs, not
                // parts to judge: judging a previous run's overlays would be judging drawings.
                Ok(m) if m.is_dir() && path.join(MARKER).exists() => {}
                Ok(m) if m.is_dir() => self.folder(&path, depth + 1, found)?,
                Ok(m) if has_image_extension(&path) && self.first_visit(&m) => found.push(path),
                Ok(_) => {}
                // A broken link with an image's name: reading it will say so.
                Err(_) if has_image_extension(&path) => found.push(path),
                Err(_) => {}
            }
        }
        Ok(())
    }
}

fn has_image_extension(path: &Path) -> bool {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    IMAGE_EXTENSIONS.iter().any(|known| extension.eq_ignore_ascii_case(known))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::owned::FolderKind;
    use std::os::unix::fs::symlink;

    fn names(images: &[ImageInput]) -> Vec<String> {
        images.iter().map(|i| i.relative.display().to_string()).collect()
    }

    #[test]
    fn symlink_loops_end_and_each_file_is_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("a")).unwrap();
        std::fs::write(root.join("a/1.png"), b"").unwrap();
        symlink(".", root.join("a/self")).unwrap();
        symlink("..", root.join("a/up")).unwrap();
        symlink("1.png", root.join("a/again.png")).unwrap();
        let images = collect_images(&[root.to_path_buf(), root.join("a/1.png")]).unwrap();
        assert_eq!(names(&images), ["a/1.png"]);
    }

    #[test]
    fn folders_clipada_made_for_its_outputs_are_not_entered() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("part.png"), b"").unwrap();
        let overlays = crate::storage::owned::OwnedDir::claim(&root.join("overlays"), FolderKind::Overlays).unwrap();
        overlays.write_atomic(Path::new("part.png"), b"").unwrap();
        assert_eq!(names(&collect_images(&[root.to_path_buf()]).unwrap()), ["part.png"]);
    }

    #[test]
    fn non_regular_files_with_image_names_are_kept_to_be_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        symlink("/nonexistent", dir.path().join("broken.png")).unwrap();
        symlink("/dev/null", dir.path().join("device.jpg")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        let images = collect_images(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(names(&images), ["broken.png", "device.jpg"]);
        for image in &images {
            let error = read_image(&image.path).unwrap_err();
            assert!(error.to_string().contains(image.path.to_str().unwrap()), "{error}");
        }
    }

    #[test]
    fn nesting_beyond_the_limit_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut deep = dir.path().to_path_buf();
        for _ in 0..=MAX_WALK_DEPTH + 1 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let error = collect_images(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(error.reason.contains("nested deeper"), "{error}");
    }
}
