//! A camera through nokhwa (V4L2 on Linux): device by stable path, index or name, requested
//! resolution, frame rate and pixel format (MJPEG, YUYV, NV12, grey, RGB), decoded to RGB.
//!
//! When the camera fails or disappears, each attempt to get a frame reports an error (the
//! station judges it ERROR) and the camera is reopened with exponential backoff; waits are
//! cut short when the station is asked to stop. The camera is pinned: a stable path
//! (`/dev/v4l/by-id/usb-<vendor>_<model>_<serial>-video-index0`) names that very camera, and
//! whatever the device was named by, a reopened camera that is not the one first opened (its
//! name and bus) is refused, never inspected with: a swapped camera is an ERROR until the
//! right one is back.
//!
//! The settings are always built (a configuration names them); the camera itself needs the
//! `camera` feature.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A camera by stable path, index or name.
#[derive(Debug, Clone, PartialEq)]
pub enum CameraDevice {
    /// `/dev/videoN` on Linux.
    Index(u32),
    /// A path under `/dev` that leads to a V4L2 device, best a stable one
    /// (`/dev/v4l/by-id/...`, which holds the USB serial, or `/dev/v4l/by-path/...`).
    Path(PathBuf),
    /// The camera's human-readable name as the system reports it.
    Name(String),
}

/// An index (a whole number from 0), a path (a string starting with `/`, which must lie under
/// `/dev/`) or a name (any other string).
impl<'de> Deserialize<'de> for CameraDevice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<CameraDevice, D::Error> {
        struct Device;
        impl serde::de::Visitor<'_> for Device {
            type Value = CameraDevice;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a camera index (0, 1, ...), a device path under /dev/ or a camera name")
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<CameraDevice, E> {
                u32::try_from(v).map(CameraDevice::Index).map_err(|_| E::custom(format!("{v}: not a camera index")))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<CameraDevice, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CameraDevice, E> {
                match v {
                    "" => Err(E::custom("an empty camera name")),
                    path if path.starts_with("/dev/") => Ok(CameraDevice::Path(PathBuf::from(path))),
                    path if path.starts_with('/') => {
                        Err(E::custom(format!("{path}: a camera path must lie under /dev/ (best /dev/v4l/by-id/...)")))
                    }
                    name => Ok(CameraDevice::Name(name.to_string())),
                }
            }
        }
        deserializer.deserialize_any(Device)
    }
}

/// The major number of V4L2 devices (`/dev/videoN`).
const V4L2_MAJOR: u32 = 81;

/// The `N` of the `/dev/videoN` that `path` leads to now: it must resolve to a V4L2 character
/// device named `videoN`. A stable link that no longer resolves means the camera is gone.
pub fn video_index(path: &Path) -> Result<u32, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let resolved = path.canonicalize().map_err(|e| format!("{}: {e} (camera not connected?)", path.display()))?;
    let metadata = std::fs::metadata(&resolved).map_err(|e| format!("{}: {e}", resolved.display()))?;
    let is_v4l2 = metadata.file_type().is_char_device() && rustix::fs::major(metadata.rdev()) == V4L2_MAJOR;
    let index = resolved.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("video"));
    match (is_v4l2, index.and_then(|i| i.parse().ok())) {
        (true, Some(index)) => Ok(index),
        _ => Err(format!("{} ({}): not a V4L2 camera device", path.display(), resolved.display())),
    }
}

/// Camera pixel formats; all are decoded to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Motion JPEG.
    #[default]
    Mjpeg,
    /// YUV 4:2:2.
    Yuyv,
    /// YUV 4:2:0, semi-planar.
    Nv12,
    /// 8-bit grey.
    Gray,
    /// Packed RGB.
    Rgb,
}

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

#[cfg(feature = "camera")]
pub use capture::CameraSource;

/// The camera itself, through nokhwa.
#[cfg(feature = "camera")]
mod capture {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use nokhwa::pixel_format::RgbFormat;
    use nokhwa::utils::{
        ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
    };
    use nokhwa::Camera;

    use super::{CameraDevice, CameraSettings, PixelFormat};
    use crate::source::decode::{allocate_rgb, decode_rgb};
    use crate::source::{Frame, FrameSource, SourceError, SourceErrorKind};

    /// Frames from a camera, reopened after failures.
    pub struct CameraSource {
        settings: CameraSettings,
        camera: Option<Camera>,
        /// The camera first opened: its name and bus (V4L2's card and bus info).
        identity: String,
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
            Ok(CameraSource {
                identity: identity(&camera),
                backoff: settings.reconnect,
                settings,
                camera: Some(camera),
                retry_at: Instant::now(),
                stop,
            })
        }

        /// Waits until the next reopening attempt (or a stop request), then tries.
        fn reopen(&mut self) -> Result<(), SourceError> {
            while Instant::now() < self.retry_at && !self.stop.load(Ordering::Relaxed) {
                std::thread::sleep((self.retry_at - Instant::now()).min(Duration::from_millis(50)));
            }
            match open_camera(&self.settings) {
                Ok(camera) if identity(&camera) != self.identity => {
                    let found = identity(&camera);
                    drop(camera);
                    self.schedule_retry();
                    Err(SourceError {
                        kind: SourceErrorKind::Gone,
                        origin: describe(&self.settings.device),
                        reason: format!(
                            "another camera ({found}), not the one the station started with ({}): refused; \
                             next attempt in {:?}",
                            self.identity, self.backoff
                        ),
                    })
                }
                Ok(camera) => {
                    self.camera = Some(camera);
                    self.backoff = self.settings.reconnect;
                    Ok(())
                }
                Err(e) => {
                    self.schedule_retry();
                    Err(SourceError { reason: format!("{}; next attempt in {:?}", e.reason, self.backoff), ..e })
                }
            }
        }

        fn schedule_retry(&mut self) {
            self.retry_at = Instant::now() + self.backoff;
            self.backoff = (self.backoff * 2).min(self.settings.reconnect_max);
        }
    }

    impl FrameSource for CameraSource {
        fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError> {
            if self.camera.is_none() {
                self.reopen()?;
            }
            let Some(camera) = self.camera.as_mut() else {
                return Err(SourceError {
                    kind: SourceErrorKind::Gone,
                    origin: describe(&self.settings.device),
                    reason: "not open".into(),
                });
            };
            match camera.frame() {
                // Dated at once: nokhwa made the driver's monotonic timestamp wall-clock time
                // when it took the buffer; turned back before decoding, a clock step in between
                // has microseconds to shift it, not a decode's milliseconds.
                Ok(buffer) => decode_buffer(&buffer, captured_at(buffer.capture_timestamp()), frame)
                    .map(|()| true)
                    .map_err(|reason| SourceError {
                        kind: SourceErrorKind::BadFrame,
                        origin: describe(&self.settings.device),
                        reason,
                    }),
                Err(e) => {
                    // Drop the handle (closing the device) and reopen later.
                    self.camera = None;
                    self.schedule_retry();
                    Err(SourceError {
                        kind: SourceErrorKind::Gone,
                        // Named only on failure: a good frame allocates no message.
                        origin: describe(&self.settings.device),
                        reason: format!("frame capture failed ({e}); reopening in {:?}", self.backoff),
                    })
                }
            }
        }
    }

    /// Decodes a captured buffer into `frame`, with its capture time (none: refused, see
    /// [`captured_at`]): MJPEG through the one strict decoder ([`decode_rgb`]: a truncated frame
    /// is an error, not grey filler), raw formats through nokhwa's converters, which refuse a
    /// buffer of the wrong length.
    fn decode_buffer(buffer: &nokhwa::Buffer, captured: Option<Instant>, frame: &mut Frame) -> Result<(), String> {
        let captured = captured.ok_or(
            "the driver gave no capture time (or one ahead of the clock): a frame that cannot be dated after \
             its trigger is never judged",
        )?;
        let Resolution { width_x: w, height_y: h } = buffer.resolution();
        if buffer.source_frame_format() == FrameFormat::MJPEG {
            let image = decode_rgb(buffer.buffer()).map_err(|e| e.to_string())?;
            if image.dimensions() != (w, h) {
                return Err(format!("an MJPEG frame of {}x{} in a {w}x{h} stream", image.width(), image.height()));
            }
            frame.image = image;
        } else {
            if frame.image.dimensions() != (w, h) {
                frame.image = allocate_rgb(w, h).map_err(|e| e.to_string())?;
            }
            buffer.decode_image_to_buffer::<RgbFormat>(&mut frame.image).map_err(|e| e.to_string())?;
        }
        frame.captured = captured;
        Ok(())
    }

    /// The monotonic instant of a buffer's capture time (nokhwa gives the driver's timestamp as
    /// wall-clock time since the epoch). None when the driver gave none or one ahead of the
    /// clock: such a frame might have waited in the driver's queue since before its trigger.
    fn captured_at(timestamp: Option<Duration>) -> Option<Instant> {
        let now = Instant::now();
        let wall_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
        now.checked_sub(wall_now.checked_sub(timestamp?)?)
    }

    /// `camera 0`, `camera "USB Camera"`: how errors name the device.
    fn describe(device: &CameraDevice) -> String {
        match device {
            CameraDevice::Index(i) => format!("camera {i} (/dev/video{i})"),
            CameraDevice::Path(path) => format!("camera {}", path.display()),
            CameraDevice::Name(name) => format!("camera {name:?}"),
        }
    }

    /// What tells one camera from another: its name and where it sits (V4L2's card name and
    /// bus info, which nokhwa reports as the description and misc fields).
    fn identity(camera: &Camera) -> String {
        let info = camera.info();
        format!("{:?} at {:?} {:?}", info.human_name(), info.description(), info.misc())
    }

    fn open_camera(settings: &CameraSettings) -> Result<Camera, SourceError> {
        let origin = describe(&settings.device);
        let error = |reason: String| SourceError { kind: SourceErrorKind::Gone, origin: origin.clone(), reason };
        let index = match &settings.device {
            CameraDevice::Index(i) => CameraIndex::Index(*i),
            CameraDevice::Path(path) => CameraIndex::Index(super::video_index(path).map_err(error)?),
            CameraDevice::Name(name) => {
                let cameras =
                    nokhwa::query(ApiBackend::Auto).map_err(|e| error(format!("cannot list cameras: {e}")))?;
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

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_frame_without_a_capture_time_is_not_dated_now() {
            let wall_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            assert_eq!(captured_at(None), None);
            assert_eq!(captured_at(Some(wall_now + Duration::from_secs(60))), None, "a time ahead of the clock");
            let before = Instant::now();
            let dated = captured_at(Some(wall_now - Duration::from_secs(2))).unwrap();
            let age = before.duration_since(dated);
            assert!(age > Duration::from_millis(1900) && age < Duration::from_millis(2500), "{age:?}");
        }

        #[test]
        fn an_undated_buffer_is_refused_and_a_dated_one_keeps_its_time() {
            let pixels = [7u8; 2 * 2 * 3];
            let buffer = nokhwa::Buffer::new(Resolution::new(2, 2), &pixels, FrameFormat::RAWRGB);
            assert_eq!(buffer.capture_timestamp(), None);
            let mut frame = Frame::default();
            let refused = decode_buffer(&buffer, captured_at(buffer.capture_timestamp()), &mut frame).unwrap_err();
            assert!(refused.contains("no capture time"), "{refused}");
            let exposed = Instant::now() - Duration::from_millis(300);
            decode_buffer(&buffer, Some(exposed), &mut frame).unwrap();
            assert_eq!((frame.captured, frame.image.dimensions()), (exposed, (2, 2)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_a_path_under_dev_an_index_or_else_a_name() {
        let parse = |text: &str| toml::from_str::<std::collections::HashMap<String, CameraDevice>>(text).unwrap();
        assert_eq!(parse("d = 2")["d"], CameraDevice::Index(2));
        let by_id = "/dev/v4l/by-id/usb-Acme_Cam_SN123-video-index0";
        assert_eq!(parse(&format!("d = {by_id:?}"))["d"], CameraDevice::Path(by_id.into()));
        assert_eq!(parse("d = \"USB Camera\"")["d"], CameraDevice::Name("USB Camera".into()));
        let refused = |text: &str| toml::from_str::<std::collections::HashMap<String, CameraDevice>>(text).unwrap_err();
        assert!(refused("d = \"/tmp/video0\"").to_string().contains("must lie under /dev/"));
        assert!(refused("d = \"/proc/self/fd/0\"").to_string().contains("must lie under /dev/"));
        assert!(refused("d = -1").to_string().contains("-1: not a camera index"));
        assert!(refused("d = 1.5").to_string().contains("a camera index"));
    }

    #[test]
    fn a_stable_path_must_lead_to_a_v4l2_device_now() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("usb-Acme_Cam_SN123-video-index0");
        std::os::unix::fs::symlink("/dev/video-that-is-not-there", &gone).unwrap();
        assert!(video_index(&gone).unwrap_err().contains("camera not connected"));
        // A character device, but not a camera; a file named like one.
        assert!(video_index(Path::new("/dev/null")).unwrap_err().contains("not a V4L2 camera device"));
        let file = dir.path().join("video0");
        std::fs::write(&file, b"").unwrap();
        assert!(video_index(&file).unwrap_err().contains("not a V4L2 camera device"));
    }
}
