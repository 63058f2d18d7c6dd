//! Frames in: image files named on the command line ([`files`]), decoding ([`decode`]), and the
//! station's frame sources behind [`FrameSource`]: a folder of images ([`directory`]) and a
//! camera ([`camera`], feature `camera`).

pub mod camera;
pub mod decode;
pub mod directory;
pub mod files;

use std::time::Instant;

use image::RgbImage;

/// One frame from a source.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Its pixels.
    pub image: RgbImage,
    /// When it was exposed, on the monotonic clock (a camera: the driver's timestamp of the
    /// buffer; a folder: when the file was read).
    pub captured: Instant,
}

impl Default for Frame {
    fn default() -> Self {
        Frame { image: RgbImage::new(0, 0), captured: Instant::now() }
    }
}

/// What went wrong getting a frame, for callers that act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// The source is gone (camera unplugged, folder removed); it may come back.
    Gone,
    /// A frame came but is not usable (truncated, corrupt, not an image, too large).
    BadFrame,
}

/// A frame could not be had; names the source (file, device) and says why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct SourceError {
    /// What kind of failure.
    pub kind: SourceErrorKind,
    /// The file or device.
    pub origin: String,
    /// Why.
    pub reason: String,
}

/// Where a station's frames come from.
pub trait FrameSource {
    /// Puts the next frame into `frame` (its buffer is reused when the size stays the same),
    /// with `frame.captured` set to when it was exposed: the station judges only frames
    /// exposed after their trigger.
    /// `Ok(false)`: the source is exhausted and the station stops. An error is one frame that
    /// could not be had; the station judges it ERROR and asks again (a camera reconnects).
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError>;
}
