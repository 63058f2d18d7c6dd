//! The memory file: versioned, checksummed, every field bounded, tied to what it was made for,
//! written atomically.
//!
//! Layout (little endian): the 16-byte magic `CLIPADA-MEMORY\0\0`; `u32` format version; `u32`
//! length `H` and `H` bytes of JSON header ([`Header`]); `count * L * D` `f32` features; `count`
//! `u32` source-image indices; `u32` CRC-32 of everything before it. Every number in it is
//! checked against its range when read (see [`limits`]), and the features must be finite and of
//! unit length per layer, so a damaged or hand-edited file is refused naming the field, never
//! used. [`check_against`] refuses a memory made for another model file, engine precision,
//! patch grid or scoring mode.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{MadeFor, MemoryBank};
use crate::model::contract::limits as contract_limits;
use crate::model::ModelSpec;
use crate::score::FEATURE_NORM_TOLERANCE;
use crate::storage::owned::{replace_file, FileKind, WriteError};
use crate::storage::read::read_regular;

/// First bytes of every memory file.
pub(crate) const MAGIC: &[u8; 16] = b"CLIPADA-MEMORY\0\0";
/// The format version this runtime reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 2;

/// Ranges of the memory file's fields.
pub mod limits {
    /// Most patches a memory holds.
    pub(crate) const PATCHES: usize = 1 << 20;
    /// Most good images a memory is made from.
    pub(crate) const GOOD_IMAGES: usize = 1_000_000;
    /// Longest JSON header.
    pub(crate) const HEADER_BYTES: usize = 64 << 20;
    /// Largest memory file: the most patches at the widest features would not fit, and a
    /// memory that big would not be searched in time anyway.
    pub(crate) const FILE_BYTES: u64 = 2 << 30;
    /// Largest score a memory's threshold or good scores may hold (cosine distances lie in [0, 2]).
    pub(crate) const SCORE: f32 = 2.0;
    /// Engine precisions a memory can be made with.
    pub(crate) const PRECISIONS: [&str; 3] = ["fp32", "fp16", "int8"];
}

/// Why a memory file cannot be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    /// Reading failed (missing, not a regular file, too large).
    #[error(transparent)]
    Read(#[from] crate::storage::read::ReadError),
    /// Writing was refused or failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Not a memory file, another version, truncated, corrupted, or a field out of range.
    #[error("{path}: field `{field}`: {reason}")]
    Invalid {
        /// The memory file.
        path: PathBuf,
        /// The field at fault (`threshold`, `features`, `format`…).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Made for another model, engine precision, grid or scoring mode than the one in use.
    #[error("{path}: field `{field}`: {reason}; run `clipada calibrate` with this model and settings")]
    Mismatch {
        /// The memory file.
        path: PathBuf,
        /// The field that differs.
        field: &'static str,
        /// What it says and what is in use.
        reason: String,
    },
}

/// The JSON header.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The model, precision and scoring mode the memory was made for.
    pub made_for: MadeFor,
    /// `L`.
    pub layers: usize,
    /// `D`.
    pub dim: usize,
    /// Patch grid `[h, w]`.
    pub grid: [usize; 2],
    /// Stored patches.
    pub count: usize,
    /// Threshold from the good images' leave-one-out scores (none with fewer than 2 images).
    pub threshold: Option<f32>,
    /// Good images the memory was made from.
    pub good_images: usize,
    /// Their leave-one-out scores.
    pub good_scores: Vec<f32>,
}

/// Serialises `bank` to bytes in the memory file format.
pub fn to_bytes(bank: &MemoryBank) -> Vec<u8> {
    let header = Header {
        made_for: bank.made_for.clone(),
        layers: bank.layers,
        dim: bank.dim,
        grid: bank.grid,
        count: bank.len(),
        threshold: bank.threshold,
        good_images: bank.good_images,
        good_scores: bank.good_scores.clone(),
    };
    let header = serde_json::to_vec(&header).expect("header serialises");
    let mut bytes = Vec::with_capacity(28 + header.len() + bank.features.len() * 4 + bank.sources.len() * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend(bank.features.iter().flat_map(|v| v.to_le_bytes()));
    bytes.extend(bank.sources.iter().flat_map(|v| v.to_le_bytes()));
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Parses memory file bytes read from `path`, checking every field.
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<MemoryBank, MemoryFileError> {
    let invalid =
        |field: &'static str, reason: String| MemoryFileError::Invalid { path: path.to_path_buf(), field, reason };
    if bytes.len() < 28 || &bytes[..16] != MAGIC {
        return Err(invalid("magic", "not a clipada memory file (no CLIPADA-MEMORY magic)".into()));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let version = u32_at(16);
    if version != FORMAT_VERSION {
        return Err(invalid(
            "format",
            format!("memory format version {version}; this runtime reads version {FORMAT_VERSION}: calibrate again"),
        ));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(invalid("checksum", "mismatch: the file is truncated or corrupted".into()));
    }
    let header_len = u32_at(20) as usize;
    let header_end = (header_len <= limits::HEADER_BYTES).then_some(24 + header_len).filter(|end| *end <= body.len());
    let header_end = header_end.ok_or_else(|| invalid("header", "its length runs past the end".into()))?;
    let header: Header = serde_json::from_slice(&body[24..header_end]).map_err(|e| invalid("header", e.to_string()))?;
    check_header(&header).map_err(|(field, reason)| invalid(field, reason))?;
    let width = header.layers * header.dim;
    let data = body.len() - header_end;
    if data as u64 != (header.count as u64) * (width as u64 * 4 + 4) {
        return Err(invalid(
            "count",
            format!(
                "{} patches of {width} values need {} bytes; the file holds {data}",
                header.count,
                header.count * (width * 4 + 4)
            ),
        ));
    }
    let (features, sources) = body[header_end..].split_at(header.count * width * 4);
    let features: Vec<f32> = features.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect();
    let sources: Vec<u32> = sources.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4"))).collect();
    if let Some(source) = sources.iter().find(|s| **s as usize >= header.good_images) {
        return Err(invalid("sources", format!("image {source} of {} good images", header.good_images)));
    }
    for vector in features.chunks_exact(header.dim) {
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !((1.0 - FEATURE_NORM_TOLERANCE)..=(1.0 + FEATURE_NORM_TOLERANCE)).contains(&norm) {
            return Err(invalid("features", format!("a feature vector has length {norm}, not 1")));
        }
    }
    Ok(MemoryBank {
        made_for: header.made_for,
        layers: header.layers,
        dim: header.dim,
        grid: header.grid,
        features,
        sources,
        threshold: header.threshold,
        good_images: header.good_images,
        good_scores: header.good_scores,
    })
}

/// Each header field within its range; the field at fault and why otherwise.
fn check_header(header: &Header) -> Result<(), (&'static str, String)> {
    let made_for = &header.made_for;
    if made_for.model_sha256.len() != 64 || !made_for.model_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(("made_for.model_sha256", "must be 64 hex digits".into()));
    }
    if made_for.model_name.len() > contract_limits::NAME_BYTES || made_for.model_name.chars().any(char::is_control) {
        return Err(("made_for.model_name", "too long or has control characters".into()));
    }
    if !limits::PRECISIONS.contains(&made_for.precision.as_str()) {
        return Err(("made_for.precision", format!("must be one of {:?}", limits::PRECISIONS)));
    }
    if !contract_limits::LAYERS.contains(&header.layers) {
        return Err(("layers", format!("must be in {:?}", contract_limits::LAYERS)));
    }
    if !contract_limits::FEATURE_DIM.contains(&header.dim) {
        return Err(("dim", format!("must be in {:?}", contract_limits::FEATURE_DIM)));
    }
    if !header.grid.iter().all(|g| contract_limits::GRID_SIDE.contains(g)) {
        return Err(("grid", format!("each side must be in {:?}", contract_limits::GRID_SIDE)));
    }
    if !(1..=limits::PATCHES).contains(&header.count) {
        return Err(("count", format!("must be in 1..={}", limits::PATCHES)));
    }
    if !(1..=limits::GOOD_IMAGES).contains(&header.good_images) {
        return Err(("good_images", format!("must be in 1..={}", limits::GOOD_IMAGES)));
    }
    let score_ok = |s: f32| (0.0..=limits::SCORE).contains(&s);
    match header.threshold {
        Some(t) if !(t > 0.0 && score_ok(t)) => {
            return Err(("threshold", format!("{t} is outside (0, {}]", limits::SCORE)));
        }
        Some(_) if header.good_images < 2 => {
            return Err(("threshold", "a threshold needs at least 2 good images".into()));
        }
        None if header.good_images >= 2 => {
            return Err(("threshold", "missing: a memory of 2 or more good images has one".into()));
        }
        _ => {}
    }
    let expected_scores = if header.good_images >= 2 { header.good_images } else { 0 };
    if header.good_scores.len() != expected_scores {
        return Err((
            "good_scores",
            format!("{} scores for {} good images", header.good_scores.len(), header.good_images),
        ));
    }
    if header.good_scores.iter().any(|s| !score_ok(*s)) {
        return Err(("good_scores", format!("a score outside [0, {}]", limits::SCORE)));
    }
    if let Some(threshold) = header.threshold {
        let derived = super::threshold_from_good_scores(&header.good_scores);
        if (threshold - derived).abs() > 1e-6 * derived.max(1e-6) {
            return Err((
                "threshold",
                format!(
                    "{threshold} is not the threshold its good scores give ({derived}): the file was edited; \
                     calibrate again, or give a threshold on purpose (--threshold, the station's threshold)"
                ),
            ));
        }
    }
    Ok(())
}

/// Reads the memory file at `path` (a regular file of bounded size), checking every field.
pub fn read(path: &Path) -> Result<MemoryBank, MemoryFileError> {
    read_hashed(path).map(|(bank, _)| bank)
}

/// Reads the memory file at `path`, with the SHA-256 (hex) of the very bytes read.
pub fn read_hashed(path: &Path) -> Result<(MemoryBank, String), MemoryFileError> {
    let bytes = read_regular(path, limits::FILE_BYTES, "memory file")?;
    Ok((from_bytes(path, &bytes)?, crate::model::contract::sha256_hex(&bytes)))
}

/// Refuses `bank` (read from `path`) unless it was made for `used`: the same model file
/// (SHA-256), engine precision and scoring mode, with the model's layers, feature size and grid.
pub fn check_against(path: &Path, bank: &MemoryBank, spec: &ModelSpec, used: &MadeFor) -> Result<(), MemoryFileError> {
    let mismatch =
        |field: &'static str, reason: String| MemoryFileError::Mismatch { path: path.to_path_buf(), field, reason };
    let made = &bank.made_for;
    if made.model_sha256 != used.model_sha256 {
        return Err(mismatch(
            "made_for.model_sha256",
            format!(
                "made for model {} (sha256 {}), not for {} (sha256 {})",
                made.model_name, made.model_sha256, used.model_name, used.model_sha256
            ),
        ));
    }
    if (bank.layers, Some(bank.dim)) != (spec.layer_count(), spec.feature_dim) || bank.grid != spec.grid {
        return Err(mismatch("layers", "its layers, feature size or grid are not the model's".into()));
    }
    if made.precision != used.precision {
        return Err(mismatch(
            "made_for.precision",
            format!("calibrated with the engine at {}, running at {}", made.precision, used.precision),
        ));
    }
    if made.refine != used.refine {
        let mode = |on: bool| if on { "with" } else { "without" };
        return Err(mismatch(
            "made_for.refine",
            format!(
                "its threshold was derived {} refinement, the scoring runs {} it",
                mode(made.refine),
                mode(used.refine)
            ),
        ));
    }
    Ok(())
}

/// Writes `bank` to `path` atomically; an existing file there must be a memory file.
pub fn write(path: &Path, bank: &MemoryBank) -> Result<(), MemoryFileError> {
    Ok(replace_file(path, FileKind::Memory, &to_bytes(bank))?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn unit(dim: usize, seed: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|i| ((i + seed) as f32 * 0.7).sin() + 0.1).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / norm).collect()
    }

    pub(crate) fn bank() -> MemoryBank {
        MemoryBank {
            made_for: MadeFor {
                model_sha256: "ab".repeat(32),
                model_name: "m".into(),
                precision: "fp32".into(),
                refine: true,
            },
            layers: 2,
            dim: 3,
            grid: [4, 4],
            features: (0..4).flat_map(|i| unit(3, i)).collect(),
            sources: vec![0, 7],
            threshold: Some(0.25),
            good_images: 8,
            good_scores: vec![0.25; 8],
        }
    }

    /// The bank's file with its header text edited and the checksum made valid again.
    fn with_header_text(edit: impl FnOnce(String) -> String) -> Vec<u8> {
        let bytes = to_bytes(&bank());
        let header_len = u32::from_le_bytes(bytes[20..24].try_into().unwrap()) as usize;
        let new_header = edit(String::from_utf8(bytes[24..24 + header_len].to_vec()).unwrap()).into_bytes();
        let mut out = bytes[..20].to_vec();
        out.extend_from_slice(&(new_header.len() as u32).to_le_bytes());
        out.extend_from_slice(&new_header);
        out.extend_from_slice(&bytes[24 + header_len..bytes.len() - 4]);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn rewritten(edit: impl FnOnce(&mut Header)) -> Vec<u8> {
        with_header_text(|text| {
            let mut header: Header = serde_json::from_str(&text).unwrap();
            edit(&mut header);
            serde_json::to_string(&header).unwrap()
        })
    }

    fn refused_field(bytes: &[u8]) -> String {
        match from_bytes(Path::new("m.mem"), bytes) {
            Err(MemoryFileError::Invalid { field, .. }) => field.to_string(),
            other => panic!("accepted or another error: {other:?}"),
        }
    }

    #[test]
    fn round_trip_keeps_everything() {
        let bytes = to_bytes(&bank());
        assert_eq!(from_bytes(Path::new("m.mem"), &bytes).unwrap(), bank());
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = to_bytes(&bank());
        for at in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[at] ^= 0x10;
            assert!(from_bytes(Path::new("m.mem"), &corrupt).is_err(), "flip at {at} went unnoticed");
        }
    }

    #[test]
    fn fields_out_of_range_are_refused_by_name_even_with_a_valid_checksum() {
        // Regression: a threshold of 1e39 parsed to infinity and passed every part.
        assert_eq!(
            refused_field(&with_header_text(|t| t.replace("\"threshold\":0.25", "\"threshold\":1e39"))),
            "threshold"
        );
        assert_eq!(refused_field(&rewritten(|h| h.threshold = Some(2.5))), "threshold");
        // Within range but not what the good scores give: edited by hand.
        assert_eq!(refused_field(&rewritten(|h| h.threshold = Some(0.3))), "threshold");
        assert_eq!(refused_field(&rewritten(|h| h.threshold = None)), "threshold");
        assert_eq!(refused_field(&rewritten(|h| h.count = 0)), "count");
        assert_eq!(refused_field(&rewritten(|h| h.count = 3)), "count");
        assert_eq!(refused_field(&rewritten(|h| h.layers = 0)), "layers");
        assert_eq!(refused_field(&rewritten(|h| h.good_images = 5)), "good_scores");
        assert_eq!(refused_field(&rewritten(|h| h.good_images = 7)), "good_scores");
        assert_eq!(refused_field(&rewritten(|h| h.made_for.precision = "fp8".into())), "made_for.precision");
        assert_eq!(refused_field(&rewritten(|h| h.good_scores[3] = f32::NAN)), "header");
        let duplicated = with_header_text(|text| text.replace("\"dim\":3", "\"dim\":3,\"dim\":3"));
        assert_eq!(refused_field(&duplicated), "header", "a duplicated key is never resolved silently");
    }

    #[test]
    fn features_that_are_not_unit_length_are_refused() {
        let mut long = bank();
        long.features.iter_mut().for_each(|v| *v *= 2.0);
        let error = from_bytes(Path::new("m.mem"), &to_bytes(&long)).unwrap_err();
        assert!(error.to_string().contains("field `features`"), "{error}");
    }

    #[test]
    fn truncation_and_other_versions_are_refused_naming_the_file() {
        let bytes = to_bytes(&bank());
        let error = from_bytes(Path::new("line3.mem"), &bytes[..bytes.len() - 9]).unwrap_err();
        assert!(error.to_string().starts_with("line3.mem: field `checksum`"), "{error}");
        let mut older = bytes.clone();
        older[16] = 1;
        let error = from_bytes(Path::new("line3.mem"), &older).unwrap_err();
        assert!(error.to_string().contains("format version 1"), "{error}");
    }
}
