//! Image files and directories given on the command line, and decoding them to RGB.

use std::path::{Path, PathBuf};

use image::RgbImage;

/// File extensions searched for in directories (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// One image to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    /// Where to read it.
    pub path: PathBuf,
    /// Its path relative to the argument it was found under (the file name for a file argument).
    pub relative: PathBuf,
}

/// Expands files and directories (searched recursively, sorted) into images to judge.
///
/// A path that is neither a readable directory nor has an image extension is kept as given,
/// so that reading it fails later with an error verdict that names it, instead of vanishing.
pub fn collect_images(arguments: &[PathBuf]) -> Vec<ImageInput> {
    let mut images = Vec::new();
    for argument in arguments {
        if argument.is_dir() {
            let mut found = Vec::new();
            walk(argument, &mut found);
            found.sort();
            images.extend(
                found.into_iter().map(|path| ImageInput {
                    relative: path.strip_prefix(argument).unwrap_or(&path).to_path_buf(),
                    path,
                }),
            );
        } else {
            let relative = argument.file_name().map(PathBuf::from).unwrap_or_else(|| argument.clone());
            images.push(ImageInput { path: argument.clone(), relative });
        }
    }
    images
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        found.push(dir.to_path_buf());
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, found);
        } else if has_image_extension(&path) {
            found.push(path);
        }
    }
}

fn has_image_extension(path: &Path) -> bool {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    IMAGE_EXTENSIONS.iter().any(|known| extension.eq_ignore_ascii_case(known))
}

/// Reads and decodes an image file to 8-bit RGB; the error names the file.
pub fn load_rgb(path: &Path) -> anyhow::Result<RgbImage> {
    use anyhow::Context;
    let reader = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let decoded = reader.decode().with_context(|| format!("{}: cannot decode image", path.display()))?;
    Ok(decoded.into_rgb8())
}
