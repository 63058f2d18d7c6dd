//! A camera through nokhwa (V4L2 on Linux): device by index or name, requested resolution,
//! frame rate and pixel format (MJPEG, YUYV, NV12, grey, RGB), decoded to RGB.
//!
//! When the camera fails or disappears, each attempt to get a frame reports an error (the
//! station judges it ERROR) and the camera is reopened with exponential backoff; waits are
//! cut short when the station is asked to stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
};
use nokhwa::Camera;

use super::{FrameSource, SourceError};
use crate::station::config::{CameraDevice, PixelFormat};

/// What to open.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSettings {
    /// Index or name.
    pub device: CameraDevice,
    /// Requested resolution.
    pub width: u32,
    /// Requested resolution.
    pub height: u32,
    /// Requested frame rate.
    pub fps: u32,
    /// Requested pixel format.
    pub format: PixelFormat,
    /// First reconnect wait; doubles up to `reconnect_max`.
    pub reconnect: Duration,
    /// Longest reconnect wait.
    pub reconnect_max: Duration,
}

/// Frames from a camera, reopened after failures.
pub struct CameraSource {
    settings: CameraSettings,
    camera: Option<Camera>,
    /// Wait before the next reopening attempt.
    backoff: Duration,
    /// When the camera may be reopened.
    retry_at: Instant,
    stop: Arc<AtomicBool>,
}

impl CameraSource {
    /// Opens the camera; a camera that cannot be opened now is an error (the station does
    /// not start on a missing camera; it rides out a camera lost later).
    pub fn open(settings: CameraSettings, stop: Arc<AtomicBool>) -> Result<CameraSource, SourceError> {
        let camera = open_camera(&settings)?;
        Ok(CameraSource { backoff: settings.reconnect, settings, camera: Some(camera), retry_at: Instant::now(), stop })
    }

    /// Waits until the next reopening attempt (or a stop request), then tries.
    fn reopen(&mut self) -> Result<(), SourceError> {
        while Instant::now() < self.retry_at && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep((self.retry_at - Instant::now()).min(Duration::from_millis(50)));
        }
        match open_camera(&self.settings) {
            Ok(camera) => {
                self.camera = Some(camera);
                self.backoff = self.settings.reconnect;
                Ok(())
            }
            Err(e) => {
                self.schedule_retry();
                Err(SourceError {
                    origin: e.origin,
                    reason: format!("{}; next attempt in {:?}", e.reason, self.backoff),
                })
            }
        }
    }

    fn schedule_retry(&mut self) {
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(self.settings.reconnect_max);
    }
}

impl FrameSource for CameraSource {
    fn next_frame(&mut self, frame: &mut RgbImage) -> Result<bool, SourceError> {
        if self.camera.is_none() {
            self.reopen()?;
        }
        let Some(camera) = self.camera.as_mut() else {
            return Err(SourceError { origin: describe(&self.settings.device), reason: "not open".into() });
        };
        let captured = camera.frame().and_then(|buffer| {
            let Resolution { width_x: w, height_y: h } = buffer.resolution();
            if frame.dimensions() != (w, h) {
                *frame = RgbImage::new(w, h);
            }
            buffer.decode_image_to_buffer::<RgbFormat>(frame)
        });
        match captured {
            Ok(()) => Ok(true),
            Err(e) => {
                // Drop the handle (closing the device) and reopen later.
                self.camera = None;
                self.schedule_retry();
                Err(SourceError {
                    // Named only on failure: a good frame allocates no message.
                    origin: describe(&self.settings.device),
                    reason: format!("frame capture failed ({e}); reopening in {:?}", self.backoff),
                })
            }
        }
    }
}

/// `camera 0`, `camera "USB Camera"`: how errors name the device.
fn describe(device: &CameraDevice) -> String {
    match device {
        CameraDevice::Index(i) => format!("camera {i} (/dev/video{i})"),
        CameraDevice::Name(name) => format!("camera {name:?}"),
    }
}

fn open_camera(settings: &CameraSettings) -> Result<Camera, SourceError> {
    let origin = describe(&settings.device);
    let error = |reason: String| SourceError { origin: origin.clone(), reason };
    let index = match &settings.device {
        CameraDevice::Index(i) => CameraIndex::Index(*i),
        CameraDevice::Name(name) => {
            let cameras = nokhwa::query(ApiBackend::Auto).map_err(|e| error(format!("cannot list cameras: {e}")))?;
            let found = cameras.iter().find(|c| c.human_name() == *name);
            let names: Vec<String> = cameras.iter().map(|c| c.human_name()).collect();
            found.map(|c| c.index().clone()).ok_or_else(|| error(format!("no such camera; found {names:?}")))?
        }
    };
    let format = match settings.format {
        PixelFormat::Mjpeg => FrameFormat::MJPEG,
        PixelFormat::Yuyv => FrameFormat::YUYV,
        PixelFormat::Nv12 => FrameFormat::NV12,
        PixelFormat::Gray => FrameFormat::GRAY,
        PixelFormat::Rgb => FrameFormat::RAWRGB,
    };
    let wanted = CameraFormat::new(Resolution::new(settings.width, settings.height), format, settings.fps);
    let requested = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(wanted));
    let mut camera = Camera::new(index, requested).map_err(|e| error(format!("cannot open: {e}")))?;
    camera.open_stream().map_err(|e| error(format!("cannot start streaming: {e}")))?;
    Ok(camera)
}
