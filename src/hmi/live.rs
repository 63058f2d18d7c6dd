//! The live view: one thread takes each new overlay picture from the board (it is the board's
//! only picture reader), encodes it as JPEG at most `stream_fps` times a second and hands it to
//! every viewer through a watch channel that keeps only the latest frame, so a slow viewer
//! skips frames instead of holding anything up. The last encoded frames stay as the recent
//! results' thumbnails; the judged images that come with pictures during a capture go to the
//! commissioning job.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use image::RgbImage;

use crate::station::status::{lock, Picture, StatusBoard};
use crate::verdict::Verdict;

/// Thumbnails (encoded overlays of recent results) kept.
pub(crate) const THUMBNAILS: usize = 48;
/// JPEG quality of the live view.
const QUALITY: u8 = 80;
/// How long the encoder waits for a picture before it looks at its stop flag again.
const POLL: Duration = Duration::from_millis(50);

/// One encoded frame of the live view.
#[derive(Clone)]
pub(crate) struct LiveFrame {
    /// The result it shows.
    pub sequence: u64,
    /// The overlay as JPEG.
    pub jpeg: Bytes,
}

/// A judged image taken for commissioning: its recipe's number, its verdict, and the image.
pub(crate) type Captured = (u16, Verdict, RgbImage);

/// The live view's state, shared by the encoder thread and the server.
pub(crate) struct Live {
    frames: tokio::sync::watch::Sender<Option<LiveFrame>>,
    thumbnails: Mutex<VecDeque<LiveFrame>>,
    capture: Mutex<Option<SyncSender<Captured>>>,
    stop: AtomicBool,
}

impl Live {
    /// Starts the encoder thread over `board`, at most `fps` frames a second.
    pub(crate) fn start(board: Arc<StatusBoard>, fps: u32) -> std::io::Result<Arc<Live>> {
        let live = Arc::new(Live {
            frames: tokio::sync::watch::channel(None).0,
            thumbnails: Mutex::new(VecDeque::with_capacity(THUMBNAILS)),
            capture: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let shared = live.clone();
        // A tenth of slack: parts that come exactly at the rate are not skipped for jitter.
        let every = Duration::from_secs(1) / fps.max(1) * 9 / 10;
        std::thread::Builder::new().name("clipada-live".into()).spawn(move || shared.encode(&board, every))?;
        Ok(live)
    }

    /// Ends the encoder thread (within [`POLL`]).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// A receiver of the latest frame.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<LiveFrame>> {
        self.frames.subscribe()
    }

    /// The latest frame, if any.
    pub(crate) fn latest(&self) -> Option<LiveFrame> {
        self.frames.borrow().clone()
    }

    /// The thumbnail of result `sequence`, while it is kept.
    pub(crate) fn thumbnail(&self, sequence: u64) -> Option<Bytes> {
        lock(&self.thumbnails).iter().find(|f| f.sequence == sequence).map(|f| f.jpeg.clone())
    }

    /// The results that have a thumbnail.
    pub(crate) fn thumbnailed(&self) -> Vec<u64> {
        lock(&self.thumbnails).iter().map(|f| f.sequence).collect()
    }

    /// Sends the judged images of the pictures to come to `sink` (none: stops sending).
    pub(crate) fn capture_to(&self, sink: Option<SyncSender<Captured>>) {
        *lock(&self.capture) = sink;
    }

    fn encode(&self, board: &StatusBoard, every: Duration) {
        let mut picture = Picture::default();
        let mut last_encoded: Option<Instant> = None;
        let mut jpeg = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            if !board.take_picture(picture.sequence, POLL, &mut picture) {
                continue;
            }
            // Only judged parts: an ERROR's picture may be the whole frame, not the region.
            if let Some(verdict @ (Verdict::Pass | Verdict::Fail)) =
                picture.verdict.filter(|_| picture.judged.width() > 0)
            {
                if let Some(sink) = lock(&self.capture).as_ref() {
                    // A full queue: the capture is behind; this frame is not taken.
                    let _ = sink.try_send((picture.recipe, verdict, picture.judged.clone()));
                }
            }
            if last_encoded.is_some_and(|at| at.elapsed() < every) {
                continue;
            }
            last_encoded = Some(Instant::now());
            jpeg.clear();
            if let Err(e) = encode_jpeg(&picture.overlay, &mut jpeg) {
                tracing::debug!("live view: {e}");
                continue;
            }
            let frame = LiveFrame { sequence: picture.sequence, jpeg: Bytes::copy_from_slice(&jpeg) };
            {
                let mut thumbnails = lock(&self.thumbnails);
                if thumbnails.len() == THUMBNAILS {
                    thumbnails.pop_front();
                }
                thumbnails.push_back(frame.clone());
            }
            self.frames.send_replace(Some(frame));
        }
    }
}

/// `image` as JPEG into `out`.
pub(crate) fn encode_jpeg(image: &RgbImage, out: &mut Vec<u8>) -> image::ImageResult<()> {
    image::codecs::jpeg::JpegEncoder::new_with_quality(out, QUALITY).encode_image(image)
}
