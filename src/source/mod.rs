//! Frames in: image files named on the command line ([`files`]), and the station's frame
//! sources behind [`FrameSource`]: a folder of images ([`directory`]) and a camera
//! ([`camera`], feature `camera`).

#[cfg(feature = "camera")]
pub mod camera;
pub mod directory;
pub mod files;

use image::RgbImage;

/// A frame could not be had; names the source (file, device) and says why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct SourceError {
    /// The file or device.
    pub origin: String,
    /// Why.
    pub reason: String,
}

/// Where a station's frames come from.
pub trait FrameSource {
    /// Puts the next frame into `frame` (its buffer is reused when the size stays the same).
    /// `Ok(false)`: the source is exhausted and the station stops. An error is one frame that
    /// could not be had; the station judges it ERROR and asks again (a camera reconnects).
    fn next_frame(&mut self, frame: &mut RgbImage) -> Result<bool, SourceError>;
}
