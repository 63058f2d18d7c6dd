//! PNG bytes of an RGB image, for every image clipada writes (overlays, saved parts).

use anyhow::Context;
use image::RgbImage;

/// `image` encoded as PNG.
pub(crate) fn png_bytes(image: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).context("cannot encode PNG")?;
    Ok(bytes.into_inner())
}
