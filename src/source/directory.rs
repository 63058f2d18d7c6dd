//! A folder of images as a frame source, for replay and tests: the images found under it
//! (recursively, sorted), once or in a loop.

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::files::{collect_images, load_rgb};
use super::{FrameSource, SourceError};

/// Frames from the image files of a folder.
pub struct DirectorySource {
    images: Vec<PathBuf>,
    next: usize,
    looping: bool,
}

impl DirectorySource {
    /// The images under `dir`; an error when there are none.
    pub fn open(dir: &Path, looping: bool) -> Result<DirectorySource, SourceError> {
        let error = |reason: &str| SourceError { origin: dir.display().to_string(), reason: reason.into() };
        if !dir.is_dir() {
            return Err(error("not a folder"));
        }
        let images: Vec<PathBuf> = collect_images(&[dir.to_path_buf()]).into_iter().map(|i| i.path).collect();
        if images.is_empty() {
            return Err(error("no png, jpg, jpeg or bmp images in it"));
        }
        Ok(DirectorySource { images, next: 0, looping })
    }
}

impl FrameSource for DirectorySource {
    fn next_frame(&mut self, frame: &mut RgbImage) -> Result<bool, SourceError> {
        if self.next == self.images.len() {
            if !self.looping {
                return Ok(false);
            }
            self.next = 0;
        }
        let path = &self.images[self.next];
        self.next += 1;
        *frame =
            load_rgb(path).map_err(|e| SourceError { origin: path.display().to_string(), reason: format!("{e:#}") })?;
        Ok(true)
    }
}
