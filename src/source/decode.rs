//! Decoding an image file's bytes to 8-bit RGB, completely or not at all.
//!
//! The one place images from outside become pixels (files, folder sources, masks, a camera's
//! MJPEG frames). The format is recognised from the bytes, never the name. A frame larger than
//! [`MAX_FRAME_SIDE`] a side or [`MAX_FRAME_PIXELS`] in all is refused before its pixels are
//! allocated, and allocations are fallible. An image whose data ends early is an error, never
//! a picture with invented pixels: JPEG is decoded in strict mode (a truncated scan is an
//! error instead of grey filler), and PNG and BMP decoders fail on missing data.

use std::io::Cursor;

use image::{ImageFormat, RgbImage};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

/// Longest side of a frame, in pixels.
pub const MAX_FRAME_SIDE: u32 = 32_768;
/// Most pixels in a frame (64 megapixels: 192 MB as RGB).
pub const MAX_FRAME_PIXELS: u64 = 1 << 26;

/// A PNG file's last chunk (IEND with its CRC).
const PNG_END: &[u8] = b"IEND\xAE\x42\x60\x82";

/// A JPEG file's end-of-image marker.
const JPEG_END: &[u8] = b"\xFF\xD9";
/// How far from the end a file's final marker is looked for (writers may pad after it).
const END_MARKER_SEARCH: usize = 4096;

/// Whether `marker` occurs near the end of `bytes`: a file cut short has lost it, even when
/// the decoder found all the pixels it needed before the cut.
fn ends_with_marker(bytes: &[u8], marker: &[u8]) -> bool {
    bytes.windows(marker.len()).rev().take(END_MARKER_SEARCH).any(|w| w == marker)
}

/// Why an image could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not PNG, JPEG or BMP.
    #[error("not a PNG, JPEG or BMP image")]
    UnknownFormat,
    /// Larger than a frame may be.
    #[error("{width}x{height} pixels: larger than a frame may be ({MAX_FRAME_SIDE} pixels a side, {MAX_FRAME_PIXELS} in all)")]
    TooLarge {
        /// Width.
        width: u64,
        /// Height.
        height: u64,
    },
    /// Truncated, corrupt, or of a kind the decoder does not take.
    #[error("cannot decode {format}: {reason}")]
    Corrupt {
        /// `PNG`, `JPEG` or `BMP`.
        format: &'static str,
        /// The decoder's words.
        reason: String,
    },
    /// The frame's pixels could not be allocated.
    #[error("cannot allocate {bytes} bytes for a {width}x{height} frame")]
    OutOfMemory {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Bytes asked for.
        bytes: u64,
    },
}

/// Checks a frame's dimensions against the limits.
pub fn check_dimensions(width: u64, height: u64) -> Result<(), DecodeError> {
    let side = u64::from(MAX_FRAME_SIDE);
    if width == 0 || height == 0 || width > side || height > side || width * height > MAX_FRAME_PIXELS {
        return Err(DecodeError::TooLarge { width, height });
    }
    Ok(())
}

/// A zeroed RGB frame of `width x height`, allocated fallibly.
pub fn allocate_rgb(width: u32, height: u32) -> Result<RgbImage, DecodeError> {
    check_dimensions(u64::from(width), u64::from(height))?;
    let bytes = 3 * u64::from(width) * u64::from(height);
    let mut pixels = Vec::new();
    pixels.try_reserve_exact(bytes as usize).map_err(|_| DecodeError::OutOfMemory { width, height, bytes })?;
    pixels.resize(bytes as usize, 0);
    Ok(RgbImage::from_raw(width, height, pixels).expect("sized for the frame"))
}

/// Decodes `bytes` (PNG, JPEG or BMP) to RGB.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
    match image::guess_format(bytes) {
        Ok(ImageFormat::Jpeg) => decode_jpeg(bytes),
        Ok(format @ (ImageFormat::Png | ImageFormat::Bmp)) => decode_with_image(bytes, format),
        _ => Err(DecodeError::UnknownFormat),
    }
}

/// Bytes of all-one bits put before the end-of-image marker by [`with_scan_guard`]: more than
/// a decoder can hold back between one Huffman code and the next (16 + 16 bits).
const SCAN_GUARD_BYTES: usize = 8;

/// `bytes` with [`SCAN_GUARD_BYTES`] bytes of one bits (each 0xFF stuffed as `FF 00`) before the
/// last end-of-image marker. A complete scan ends before them and decodes as it would without
/// them. A scan whose data ends early (a frame cut short and closed with an end-of-image marker,
/// as some cameras and drivers do) goes on reading into them, and all-one bits are never a valid
/// Huffman code, so the decode fails. Without the guard the decoder reads zero bits past the
/// end and invents grey blocks that look like a good part.
fn with_scan_guard(bytes: &[u8]) -> Vec<u8> {
    let end = bytes.windows(JPEG_END.len()).rposition(|w| w == JPEG_END).unwrap_or(bytes.len());
    let mut guarded = Vec::with_capacity(bytes.len() + 2 * SCAN_GUARD_BYTES);
    guarded.extend_from_slice(&bytes[..end]);
    for _ in 0..SCAN_GUARD_BYTES {
        guarded.extend_from_slice(&[0xFF, 0x00]);
    }
    guarded.extend_from_slice(&bytes[end..]);
    guarded
}

fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
    let corrupt = |e: zune_jpeg::errors::DecodeErrors| DecodeError::Corrupt { format: "JPEG", reason: e.to_string() };
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(MAX_FRAME_SIDE as usize)
        .set_max_height(MAX_FRAME_SIDE as usize)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    if !ends_with_marker(bytes, JPEG_END) {
        return Err(DecodeError::Corrupt {
            format: "JPEG",
            reason: "no end-of-image marker: the file is cut short".into(),
        });
    }
    let guarded = with_scan_guard(bytes);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(&guarded[..]), options);
    decoder.decode_headers().map_err(corrupt)?;
    let (width, height) = decoder.dimensions().expect("headers were decoded");
    check_dimensions(width as u64, height as u64)?;
    let mut frame = allocate_rgb(width as u32, height as u32)?;
    if decoder.output_colorspace() != Some(ColorSpace::RGB) {
        return Err(DecodeError::Corrupt {
            format: "JPEG",
            reason: "its colour space cannot be turned into RGB".into(),
        });
    }
    decoder.decode_into(&mut frame).map_err(corrupt)?;
    Ok(frame)
}

fn decode_with_image(bytes: &[u8], format: ImageFormat) -> Result<RgbImage, DecodeError> {
    let name = if format == ImageFormat::Png { "PNG" } else { "BMP" };
    let corrupt = |e: image::ImageError| DecodeError::Corrupt { format: name, reason: e.to_string() };
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_FRAME_SIDE);
    limits.max_image_height = Some(MAX_FRAME_SIDE);
    // The decoded image at up to 16 bits and 4 channels, and its RGB copy.
    limits.max_alloc = Some(MAX_FRAME_PIXELS * 8 + MAX_FRAME_PIXELS * 3);
    // The header alone: the limits are ours, with their own error.
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.no_limits();
    let (width, height) = reader.into_dimensions().map_err(corrupt)?;
    check_dimensions(u64::from(width), u64::from(height))?;
    if format == ImageFormat::Png && !ends_with_marker(bytes, PNG_END) {
        return Err(DecodeError::Corrupt { format: name, reason: "no IEND chunk: the file is cut short".into() });
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => DecodeError::TooLarge { width: width.into(), height: height.into() },
        e => corrupt(e),
    })?;
    Ok(decoded.into_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(format: ImageFormat, width: u32, height: u32) -> Vec<u8> {
        let frame = RgbImage::from_fn(width, height, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, (x ^ y) as u8]));
        let mut bytes = Cursor::new(Vec::new());
        frame.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    }

    #[test]
    fn whole_images_decode_in_each_format() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Bmp] {
            let frame = decode_rgb(&encoded(format, 61, 37)).unwrap();
            assert_eq!(frame.dimensions(), (61, 37), "{format:?}");
        }
    }

    #[test]
    fn a_truncated_image_is_an_error_at_every_cut_never_invented_pixels() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Bmp] {
            let bytes = encoded(format, 96, 80);
            for keep in [0.3, 0.5, 0.8, 0.9, 0.95, 0.98, 0.995] {
                let cut = (bytes.len() as f64 * keep) as usize;
                assert!(
                    decode_rgb(&bytes[..cut]).is_err(),
                    "{format:?} cut to {cut} of {} bytes was decoded",
                    bytes.len()
                );
            }
            let cut = bytes.len() - 2;
            assert!(decode_rgb(&bytes[..cut]).is_err(), "{format:?} missing its last 2 bytes was decoded");
        }
    }

    #[test]
    fn a_jpeg_scan_cut_short_and_closed_with_an_end_marker_is_an_error() {
        for (width, height, quality) in [(96, 80, 90), (640, 480, 75), (33, 17, 100), (200, 150, 30)] {
            let frame = RgbImage::from_fn(width, height, |x, y| {
                image::Rgb([(x * 7 + y) as u8, (y * 5) as u8, ((x * y) % 251) as u8])
            });
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality).encode_image(&frame).unwrap();
            let whole = decode_rgb(&bytes).unwrap();
            let scan_start = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap() + 20;
            let scan_end = bytes.len() - 2;
            let mut failures = Vec::new();
            for cut in
                (scan_start..scan_end).step_by(((scan_end - scan_start) / 200).max(1)).chain(scan_end - 3..scan_end)
            {
                let mut closed = bytes[..cut].to_vec();
                closed.extend_from_slice(JPEG_END);
                if let Ok(decoded) = decode_rgb(&closed) {
                    failures.push((cut, decoded == whole));
                }
            }
            assert!(failures.is_empty(), "{width}x{height} q{quality}: cuts decoded (cut, same pixels): {failures:?}");
        }
    }

    #[test]
    fn frames_beyond_the_limits_are_refused_before_allocation() {
        // A PNG of 1 x 20,000,000 pixels is a few kilobytes of zeros.
        let mut bytes = Cursor::new(Vec::new());
        let encoder = image::codecs::png::PngEncoder::new(&mut bytes);
        let row_bytes = 20_000_000usize;
        image::ImageEncoder::write_image(encoder, &vec![0u8; row_bytes], 20_000_000, 1, image::ExtendedColorType::L8)
            .unwrap();
        let error = decode_rgb(bytes.get_ref()).unwrap_err();
        assert_eq!(error, DecodeError::TooLarge { width: 20_000_000, height: 1 });
        assert!(check_dimensions(8192, 8192).is_ok());
        assert!(check_dimensions(8193, 8192).is_err());
        assert!(check_dimensions(0, 5).is_err());
    }

    #[test]
    fn anything_else_is_not_an_image() {
        assert_eq!(decode_rgb(b"GIF89a...."), Err(DecodeError::UnknownFormat));
        assert_eq!(decode_rgb(b""), Err(DecodeError::UnknownFormat));
    }
}
