//! An embedded-graphics `DrawTarget` over Linux framebuffer memory.
//!
//! The target is a framebuffer device (geometry and pixel format from its
//! `FBIOGET_VSCREENINFO`/`FBIOGET_FSCREENINFO` ioctls) or a plain file used as framebuffer
//! memory (geometry from the config), which is how it is tested. A plain file is clipada's own:
//! created by it, with a trailer after the page that marks it (`storage::owned`), so a file of
//! anything else named as the display is refused, never cut to size. Geometry is bounded
//! ([`MAX_SIDE`]) and its arithmetic checked. Drawing goes to a buffer in the target's pixel
//! format; [`Framebuffer::flush`] writes it to the visible page in one call.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;

use crate::storage::owned::{open_owned, FileKind, FRAMEBUFFER_TRAILER, FRAMEBUFFER_TRAILER_LEN};

/// Longest side of a framebuffer, in pixels.
pub const MAX_SIDE: u32 = 8192;

/// Why a framebuffer could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct FramebufferError {
    /// The device or file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// Where one colour channel sits in a pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// Lowest bit.
    pub offset: u32,
    /// Bits.
    pub length: u32,
}

/// Size and pixel format of a framebuffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Visible width in pixels.
    pub width: u32,
    /// Visible height in pixels.
    pub height: u32,
    /// Bytes from one row to the next.
    pub line_length: u32,
    /// 16, 24 or 32.
    pub bits_per_pixel: u32,
    /// Red channel.
    pub red: Channel,
    /// Green channel.
    pub green: Channel,
    /// Blue channel.
    pub blue: Channel,
    /// Byte offset of the visible page in the memory.
    pub page_offset: u64,
}

impl Geometry {
    /// The usual packed layouts: 16 bits RGB565, 24 bits B,G,R bytes, 32 bits XRGB8888
    /// (little-endian: B,G,R,X bytes); none for another depth or a side beyond [`MAX_SIDE`].
    pub fn packed(width: u32, height: u32, bits_per_pixel: u32) -> Option<Geometry> {
        let channel = |offset, length| Channel { offset, length };
        let (red, green, blue) = match bits_per_pixel {
            16 => (channel(11, 5), channel(5, 6), channel(0, 5)),
            24 | 32 => (channel(16, 8), channel(8, 8), channel(0, 8)),
            _ => return None,
        };
        if !(1..=MAX_SIDE).contains(&width) || !(1..=MAX_SIDE).contains(&height) {
            return None;
        }
        Some(Geometry {
            width,
            height,
            line_length: width * bits_per_pixel / 8,
            bits_per_pixel,
            red,
            green,
            blue,
            page_offset: 0,
        })
    }

    /// Bytes of the visible page.
    pub(crate) fn page_bytes(&self) -> usize {
        self.line_length as usize * self.height as usize
    }

    /// `colour` as this format's pixel value.
    pub(crate) fn encode(&self, colour: Rgb888) -> u32 {
        let put = |value: u8, channel: Channel| (u32::from(value) >> (8 - channel.length.min(8))) << channel.offset;
        put(colour.r(), self.red) | put(colour.g(), self.green) | put(colour.b(), self.blue)
    }

    /// The colour of pixel value `value` (channels widened to 8 bits), for reading back.
    pub fn decode(&self, value: u32) -> Rgb888 {
        let get = |channel: Channel| {
            let bits = (value >> channel.offset) & ((1 << channel.length) - 1);
            (bits << (8 - channel.length.min(8))) as u8
        };
        Rgb888::new(get(self.red), get(self.green), get(self.blue))
    }
}

/// A framebuffer to draw on.
pub struct Framebuffer {
    file: File,
    path: PathBuf,
    geometry: Geometry,
    /// The visible page in the target's pixel format.
    page: Vec<u8>,
}

impl Framebuffer {
    /// Opens a framebuffer device, or a plain file with the given geometry (clipada's own: made
    /// here, or made by an earlier run and resized to fit). Geometry given for a device must
    /// match what the device reports.
    pub fn open(path: &Path, configured: Option<(u32, u32, u32)>) -> Result<Framebuffer, FramebufferError> {
        use std::os::unix::fs::FileTypeExt;
        let error = |reason: String| FramebufferError { path: path.to_path_buf(), reason };
        let is_device = std::fs::metadata(path).map(|m| m.file_type().is_char_device()).unwrap_or(false);
        let file = if is_device {
            OpenOptions::new().read(true).write(true).open(path).map_err(|e| error(format!("cannot open: {e}")))?
        } else {
            open_owned(path, FileKind::Framebuffer, false).map_err(|e| error(e.to_string()))?
        };
        let geometry = if is_device {
            let reported = device_geometry(&file).map_err(error)?;
            if let Some((width, height, bits)) = configured {
                if (width, height, bits) != (reported.width, reported.height, reported.bits_per_pixel) {
                    return Err(error(format!(
                        "the config says {width}x{height} at {bits} bits per pixel, the device is {}x{} at {}",
                        reported.width, reported.height, reported.bits_per_pixel
                    )));
                }
            }
            reported
        } else {
            let (width, height, bits) = configured.ok_or_else(|| {
                error(
                    "not a framebuffer device: give `width`, `height` and `bits_per_pixel` to use it as a plain file"
                        .into(),
                )
            })?;
            let geometry = Geometry::packed(width, height, bits).ok_or_else(|| {
                error(format!("{width}x{height} at {bits} bits per pixel: sides 1 to {MAX_SIDE}, depth 16, 24 or 32"))
            })?;
            let page = geometry.page_bytes() as u64;
            let mut trailer = FRAMEBUFFER_TRAILER.to_vec();
            trailer.extend([width, height, bits].iter().flat_map(|v| v.to_le_bytes()));
            file.set_len(page + FRAMEBUFFER_TRAILER_LEN)
                .and_then(|()| file.write_all_at(&trailer, page))
                .map_err(|e| error(format!("cannot size: {e}")))?;
            geometry
        };
        Ok(Framebuffer { file, path: path.to_path_buf(), page: vec![0; geometry.page_bytes()], geometry })
    }

    /// The device or file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what was drawn to the visible page.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.write_all_at(&self.page, self.geometry.page_offset)
    }
}

impl OriginDimensions for Framebuffer {
    fn size(&self) -> Size {
        Size::new(self.geometry.width, self.geometry.height)
    }
}

impl DrawTarget for Framebuffer {
    type Color = Rgb888;
    type Error = std::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(&mut self, pixels: I) -> Result<(), Self::Error> {
        let g = self.geometry;
        let bytes = (g.bits_per_pixel / 8) as usize;
        for Pixel(point, colour) in pixels {
            let (Ok(x), Ok(y)) = (u32::try_from(point.x), u32::try_from(point.y)) else { continue };
            if x < g.width && y < g.height {
                let at = y as usize * g.line_length as usize + x as usize * bytes;
                let value = g.encode(colour).to_le_bytes();
                self.page[at..at + bytes].copy_from_slice(&value[..bytes]);
            }
        }
        Ok(())
    }
}

/// `struct fb_bitfield` of `<linux/fb.h>`.
#[repr(C)]
#[allow(dead_code)]
#[derive(Default, Clone, Copy)]
struct FbBitfield {
    offset: u32,
    length: u32,
    msb_right: u32,
}

/// `struct fb_var_screeninfo` of `<linux/fb.h>` (all fields for the layout; some are read).
#[repr(C)]
#[allow(dead_code)]
#[derive(Default)]
struct FbVarScreeninfo {
    xres: u32,
    yres: u32,
    xres_virtual: u32,
    yres_virtual: u32,
    xoffset: u32,
    yoffset: u32,
    bits_per_pixel: u32,
    grayscale: u32,
    red: FbBitfield,
    green: FbBitfield,
    blue: FbBitfield,
    transp: FbBitfield,
    nonstd: u32,
    activate: u32,
    height: u32,
    width: u32,
    accel_flags: u32,
    timing: [u32; 11],
    rotate: u32,
    colorspace: u32,
    reserved: [u32; 4],
}

/// `struct fb_fix_screeninfo` of `<linux/fb.h>` (all fields for the layout; one is read).
#[repr(C)]
#[allow(dead_code)]
#[derive(Default)]
struct FbFixScreeninfo {
    id: [u8; 16],
    smem_start: libc::c_ulong,
    smem_len: u32,
    kind: u32,
    type_aux: u32,
    visual: u32,
    xpanstep: u16,
    ypanstep: u16,
    ywrapstep: u16,
    line_length: u32,
    mmio_start: libc::c_ulong,
    mmio_len: u32,
    accel: u32,
    capabilities: u16,
    reserved: [u16; 2],
}

const FBIOGET_VSCREENINFO: libc::c_ulong = 0x4600;
const FBIOGET_FSCREENINFO: libc::c_ulong = 0x4602;

/// Geometry of a framebuffer device from its ioctls.
fn device_geometry(file: &File) -> Result<Geometry, String> {
    use std::os::fd::AsRawFd;
    let mut var = FbVarScreeninfo::default();
    let mut fix = FbFixScreeninfo::default();
    // SAFETY: both structs are the kernel's layouts (repr(C)), and live for the calls.
    let (v, f) = unsafe {
        (
            libc::ioctl(file.as_raw_fd(), FBIOGET_VSCREENINFO as _, &mut var as *mut FbVarScreeninfo),
            libc::ioctl(file.as_raw_fd(), FBIOGET_FSCREENINFO as _, &mut fix as *mut FbFixScreeninfo),
        )
    };
    if v != 0 || f != 0 {
        return Err(format!("not a framebuffer (ioctl: {})", std::io::Error::last_os_error()));
    }
    if ![16, 24, 32].contains(&var.bits_per_pixel) {
        return Err(format!("{} bits per pixel: only 16, 24 and 32 are supported", var.bits_per_pixel));
    }
    if !(1..=MAX_SIDE).contains(&var.xres) || !(1..=MAX_SIDE).contains(&var.yres) {
        return Err(format!("{}x{} pixels: sides 1 to {MAX_SIDE} are supported", var.xres, var.yres));
    }
    let bytes = var.bits_per_pixel / 8;
    if fix.line_length < var.xres * bytes {
        return Err(format!("line length {} is shorter than a row of {} pixels", fix.line_length, var.xres));
    }
    let channel_ok = |b: &FbBitfield| b.length <= 32 && b.offset.checked_add(b.length).is_some_and(|end| end <= 32);
    if ![&var.red, &var.green, &var.blue].iter().all(|b| channel_ok(b)) {
        return Err("a colour channel lies outside the pixel".into());
    }
    let channel = |b: FbBitfield| Channel { offset: b.offset, length: b.length.min(8) };
    Ok(Geometry {
        width: var.xres,
        height: var.yres,
        line_length: fix.line_length,
        bits_per_pixel: var.bits_per_pixel,
        red: channel(var.red),
        green: channel(var.green),
        blue: channel(var.blue),
        page_offset: u64::from(var.yoffset) * u64::from(fix.line_length) + u64::from(var.xoffset) * u64::from(bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_are_packed_as_the_format_says() {
        let dir = tempfile::tempdir().unwrap();
        for (bits, colour, bytes) in [
            (16, Rgb888::new(0xff, 0x00, 0x00), vec![0x00, 0xf8]),
            (16, Rgb888::new(0x00, 0xff, 0x00), vec![0xe0, 0x07]),
            (24, Rgb888::new(0x12, 0x34, 0x56), vec![0x56, 0x34, 0x12]),
            (32, Rgb888::new(0x12, 0x34, 0x56), vec![0x56, 0x34, 0x12, 0x00]),
        ] {
            let path = dir.path().join(format!("fb{bits}"));
            let mut fb = Framebuffer::open(&path, Some((4, 3, bits))).unwrap();
            Pixel(Point::new(2, 1), colour).draw(&mut fb).unwrap();
            fb.flush().unwrap();
            let memory = std::fs::read(&path).unwrap();
            let page = 4 * 3 * bits as usize / 8;
            assert_eq!(memory.len() as u64, page as u64 + FRAMEBUFFER_TRAILER_LEN, "the page and the trailer");
            let at = (4 + 2) * bits as usize / 8;
            assert_eq!(memory[at..at + bytes.len()], bytes[..], "{bits} bits");
            assert!(memory[..at].iter().all(|b| *b == 0), "nothing else drawn");
            assert_eq!(&memory[page..page + FRAMEBUFFER_TRAILER.len()], FRAMEBUFFER_TRAILER);
        }
        let error = Framebuffer::open(&dir.path().join("plain"), None).err().unwrap();
        assert!(error.to_string().contains("width"), "{error}");
    }

    #[test]
    fn a_file_that_is_not_clipadas_framebuffer_is_never_cut_to_size() {
        // Regression: `display.device` naming a regular file truncated it to the page size.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        std::fs::write(&path, vec![b'x'; 10_000]).unwrap();
        assert!(Framebuffer::open(&path, Some((4, 3, 32))).is_err());
        assert_eq!(std::fs::read(&path).unwrap().len(), 10_000);
        // Its own file, from an earlier run, is resized to a new geometry.
        let own = dir.path().join("fb");
        Framebuffer::open(&own, Some((4, 3, 32))).unwrap();
        Framebuffer::open(&own, Some((8, 6, 16))).expect("its own file");
    }

    #[test]
    fn geometry_beyond_the_limits_is_refused_not_wrapped() {
        // Regression: a width of 134217728 at 32 bits wrapped `line_length` and panicked later.
        for (w, h, bits) in [(134_217_728, 2, 32), (MAX_SIDE + 1, 2, 32), (2, 0, 16), (4, 4, 12)] {
            assert!(Geometry::packed(w, h, bits).is_none(), "{w}x{h} at {bits}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(Framebuffer::open(&dir.path().join("fb"), Some((134_217_728, 2, 32))).is_err());
    }
}
