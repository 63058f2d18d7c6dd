//! A folder of images as a frame source, for replay and tests: the images found under it
//! (recursively, sorted, each file once), once or in a loop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::files::{collect_images, read_image, ImageError};
use super::{Frame, FrameSource, SourceError, SourceErrorKind};

/// Frames from the image files of a folder.
pub struct DirectorySource {
    images: Vec<PathBuf>,
    next: usize,
    looping: bool,
}

impl DirectorySource {
    /// The images under `dir`; an error when there are none.
    pub fn open(dir: &Path, looping: bool) -> Result<DirectorySource, SourceError> {
        let error =
            |reason: String| SourceError { kind: SourceErrorKind::Gone, origin: dir.display().to_string(), reason };
        if !dir.is_dir() {
            return Err(error("not a folder".into()));
        }
        let images = collect_images(&[dir.to_path_buf()]).map_err(|e| error(e.to_string()))?;
        if images.is_empty() {
            return Err(error("no png, jpg, jpeg or bmp images in it".into()));
        }
        Ok(DirectorySource { images: images.into_iter().map(|i| i.path).collect(), next: 0, looping })
    }
}

impl FrameSource for DirectorySource {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError> {
        if self.next == self.images.len() {
            if !self.looping {
                return Ok(false);
            }
            self.next = 0;
        }
        let path = &self.images[self.next];
        self.next += 1;
        frame.image = read_image(path).map_err(|e| {
            let kind = match &e {
                ImageError::Read(crate::storage::read::ReadError::Open { .. }) => SourceErrorKind::Gone,
                _ => SourceErrorKind::BadFrame,
            };
            SourceError { kind, origin: path.display().to_string(), reason: e.to_string() }
        })?;
        frame.captured = Instant::now();
        Ok(true)
    }
}
