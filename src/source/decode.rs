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
pub(crate) fn check_dimensions(width: u64, height: u64) -> Result<(), DecodeError> {
    let side = u64::from(MAX_FRAME_SIDE);
    if width == 0 || height == 0 || width > side || height > side || width * height > MAX_FRAME_PIXELS {
        return Err(DecodeError::TooLarge { width, height });
    }
    Ok(())
}

/// A zeroed RGB frame of `width x height`, allocated fallibly.
pub(crate) fn allocate_rgb(width: u32, height: u32) -> Result<RgbImage, DecodeError> {
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

/// What walking a JPEG's markers found: where the image ends, and whether its scans give every
/// coefficient of every component to full precision.
#[derive(Debug, PartialEq, Eq)]
struct JpegLayout {
    /// Offset of the end-of-image marker the decoder stops at.
    end: usize,
}

/// Walks a JPEG's segments from its start as a decoder does (segment lengths skip what is
/// inside them, so a thumbnail or a comment holding `FF D9` is passed over), through each
/// scan's entropy-coded data, to the end-of-image marker that closes the image. Refuses an
/// image whose scans leave some coefficient of some component without its last bit (a
/// progressive file cut at a scan boundary and closed decodes as a blurred picture).
fn jpeg_layout(bytes: &[u8]) -> Result<JpegLayout, String> {
    let cut = || "no end-of-image marker after its scans: the file is cut short".to_string();
    // Per frame component: the lowest successive-approximation bit reached, per coefficient.
    let mut components: Vec<(u8, [u8; 64])> = Vec::new();
    let mut at = 2; // after SOI
    loop {
        // The next marker: 0xFF, fill bytes, the code.
        while bytes.get(at) == Some(&0xFF) && bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let (Some(&0xFF), Some(&code)) = (bytes.get(at), bytes.get(at + 1)) else { return Err(cut()) };
        at += 2;
        match code {
            0xD9 => break,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let length = match (bytes.get(at), bytes.get(at + 1)) {
            (Some(&high), Some(&low)) => usize::from(high) << 8 | usize::from(low),
            _ => return Err(cut()),
        };
        let segment = bytes.get(at + 2..at + length.max(2)).ok_or_else(cut)?;
        match code {
            // Start of frame (any coding process): its components.
            0xC0..=0xCF if !matches!(code, 0xC4 | 0xC8 | 0xCC) => {
                let count = usize::from(*segment.get(5).ok_or_else(cut)?);
                components = (0..count)
                    .map(|i| segment.get(6 + 3 * i).map(|&id| (id, [u8::MAX; 64])).ok_or_else(cut))
                    .collect::<Result<_, _>>()?;
            }
            // Start of scan: the components and the coefficients it brings, then its data.
            0xDA => {
                let count = usize::from(*segment.first().ok_or_else(cut)?);
                let spectral = segment.get(1 + 2 * count..4 + 2 * count).ok_or_else(cut)?;
                let (first, last, low_bit) = (usize::from(spectral[0]), usize::from(spectral[1]), spectral[2] & 0x0F);
                for i in 0..count {
                    let id = *segment.get(1 + 2 * i).ok_or_else(cut)?;
                    if let Some((_, bits)) = components.iter_mut().find(|(c, _)| *c == id) {
                        for bit in bits.iter_mut().take(last.min(63) + 1).skip(first) {
                            *bit = (*bit).min(low_bit);
                        }
                    }
                }
                at += length;
                // Entropy-coded data: up to a marker that is neither stuffing nor a restart.
                loop {
                    let next = bytes.get(at..).and_then(|rest| rest.iter().position(|&b| b == 0xFF)).ok_or_else(cut)?;
                    at += next;
                    match bytes.get(at + 1) {
                        Some(0x00 | 0xD0..=0xD7 | 0xFF) => at += if bytes[at + 1] == 0xFF { 1 } else { 2 },
                        Some(_) => break,
                        None => return Err(cut()),
                    }
                }
                continue;
            }
            _ => {}
        }
        at += length;
    }
    let end = at - 2;
    if components.is_empty() {
        return Err("no frame header before its end".into());
    }
    if components.iter().any(|(_, bits)| bits.iter().any(|&bit| bit != 0)) {
        return Err("its scans leave coefficients unfinished: a progressive file cut at a scan".into());
    }
    Ok(JpegLayout { end })
}

/// `bytes` with [`SCAN_GUARD_BYTES`] bytes of one bits (each 0xFF stuffed as `FF 00`) before
/// the end-of-image marker at `end`. A complete scan ends before them and decodes as it would
/// without them. A scan whose data ends early (a frame cut short and closed with an
/// end-of-image marker, as some cameras and drivers do) goes on reading into them, and all-one
/// bits are never a valid Huffman code, so the decode fails. Without the guard the decoder
/// reads zero bits past the end and invents grey blocks that look like a good part.
fn with_scan_guard(bytes: &[u8], end: usize) -> Vec<u8> {
    let mut guarded = Vec::with_capacity(end + 2 * SCAN_GUARD_BYTES + 2);
    guarded.extend_from_slice(&bytes[..end]);
    for _ in 0..SCAN_GUARD_BYTES {
        guarded.extend_from_slice(&[0xFF, 0x00]);
    }
    guarded.extend_from_slice(JPEG_END);
    guarded
}

fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
    let corrupt = |e: zune_jpeg::errors::DecodeErrors| DecodeError::Corrupt { format: "JPEG", reason: e.to_string() };
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(MAX_FRAME_SIDE as usize)
        .set_max_height(MAX_FRAME_SIDE as usize)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let layout = jpeg_layout(bytes).map_err(|reason| DecodeError::Corrupt { format: "JPEG", reason })?;
    let guarded = with_scan_guard(bytes, layout.end);
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
            let mut another = Vec::new();
            image::codecs::jpeg::JpegEncoder::new(&mut another).encode_image(&RgbImage::new(8, 8)).unwrap();
            // Closed once, twice, with a trailer between, or followed by another picture (MPF).
            let closings: [Vec<u8>; 4] = [
                JPEG_END.to_vec(),
                [JPEG_END, JPEG_END].concat(),
                [JPEG_END, b"trailer", JPEG_END].concat(),
                [JPEG_END, &another].concat(),
            ];
            let step = ((scan_end - scan_start) / 100).max(1);
            for cut in (scan_start..scan_end).step_by(step).chain(scan_end - 3..scan_end) {
                for (kind, closing) in closings.iter().enumerate() {
                    if let Ok(decoded) = decode_rgb(&[&bytes[..cut], closing].concat()) {
                        failures.push((cut, kind, decoded == whole));
                    }
                }
            }
            assert!(
                failures.is_empty(),
                "{width}x{height} q{quality}: cuts decoded (cut, closing, same): {failures:?}"
            );
        }
    }

    /// A good part as a progressive JPEG (models/make_samples.py).
    fn progressive() -> Vec<u8> {
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/images/progressive.jpg")).unwrap()
    }

    #[test]
    fn a_progressive_jpeg_cut_at_or_inside_any_scan_and_closed_is_an_error() {
        let bytes = progressive();
        let whole = decode_rgb(&bytes).unwrap();
        let scans: Vec<usize> =
            bytes.windows(2).enumerate().filter(|(_, w)| w == &[0xFF, 0xDA]).map(|(i, _)| i).collect();
        assert!(scans.len() > 3, "a progressive file has several scans");
        let mut decoded = Vec::new();
        for (n, &scan) in scans.iter().enumerate().skip(1) {
            let inside = (scans[n - 1] + scan) / 2;
            for cut in [scan, inside] {
                if let Ok(image) = decode_rgb(&[&bytes[..cut], JPEG_END].concat()) {
                    decoded.push((cut, image == whole));
                }
            }
        }
        assert!(decoded.is_empty(), "cuts decoded (cut, same pixels): {decoded:?}");
    }

    #[test]
    fn whole_jpegs_decode_with_padding_trailers_and_markers_inside_segments() {
        let bytes = progressive();
        let whole = decode_rgb(&bytes).unwrap();
        let padded = [&bytes[..], &[0u8; 10_000]].concat();
        assert_eq!(decode_rgb(&padded).unwrap(), whole, "padding after the end marker");
        // A comment segment holding end markers, right after SOI.
        let comment = [&[0xFF, 0xFE, 0x00, 0x06][..], JPEG_END, JPEG_END].concat();
        let commented = [&bytes[..2], &comment, &bytes[2..]].concat();
        assert_eq!(decode_rgb(&commented).unwrap(), whole, "end markers inside a comment");
        let trailing = [&bytes[..], JPEG_END, b"junk"].concat();
        assert_eq!(decode_rgb(&trailing).unwrap(), whole, "bytes after the end marker");
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
