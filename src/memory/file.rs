//! The memory file: versioned, checksummed, written atomically.
//!
//! Layout (little endian): the 16-byte magic `CLIPADA-MEMORY\0\0`; `u32` format version; `u32`
//! length `H` and `H` bytes of JSON header (model SHA-256 and name, layers, dim, count,
//! threshold, good images); `count * L * D` `f32` features; `count` `u32` source-image indices;
//! `u32` CRC-32 of everything before it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MemoryBank;

/// First bytes of every memory file.
pub const MAGIC: &[u8; 16] = b"CLIPADA-MEMORY\0\0";
/// The format version this runtime reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Why a memory file cannot be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    /// Reading or writing failed.
    #[error("{path}: {error}")]
    Io {
        /// The memory file.
        path: PathBuf,
        /// The I/O error (not a `source`: the message already says it).
        error: std::io::Error,
    },
    /// Not a memory file, another version, truncated or corrupted.
    #[error("{path}: {reason}")]
    Invalid {
        /// The memory file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Made from another model than the one it is used with.
    #[error("{path}: this memory was made for model {made_for} (sha256 {made_sha}), not for {used_with} (sha256 {used_sha}); run `clipada calibrate` with this model")]
    OtherModel {
        /// The memory file.
        path: PathBuf,
        /// Model name the memory was made for.
        made_for: String,
        /// Its SHA-256.
        made_sha: String,
        /// Model name in use.
        used_with: String,
        /// Its SHA-256.
        used_sha: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    model_sha256: String,
    model_name: String,
    layers: usize,
    dim: usize,
    count: usize,
    threshold: Option<f32>,
    good_images: usize,
}

/// Serialises `bank` to bytes in the memory file format.
pub fn to_bytes(bank: &MemoryBank) -> Vec<u8> {
    let header = Header {
        model_sha256: bank.model_sha256.clone(),
        model_name: bank.model_name.clone(),
        layers: bank.layers,
        dim: bank.dim,
        count: bank.len(),
        threshold: bank.threshold,
        good_images: bank.good_images,
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

/// Parses memory file bytes read from `path`.
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<MemoryBank, MemoryFileError> {
    let invalid = |reason: String| MemoryFileError::Invalid { path: path.to_path_buf(), reason };
    if bytes.len() < 28 || &bytes[..16] != MAGIC {
        return Err(invalid("not a clipada memory file (no CLIPADA-MEMORY magic)".into()));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let version = u32_at(16);
    if version != FORMAT_VERSION {
        return Err(invalid(format!("memory format version {version}; this runtime reads version {FORMAT_VERSION}")));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(invalid("checksum mismatch: the file is truncated or corrupted".into()));
    }
    let header_len = u32_at(20) as usize;
    let header_end = 24usize.checked_add(header_len).filter(|end| *end <= body.len());
    let header_end = header_end.ok_or_else(|| invalid("header length runs past the end".into()))?;
    let header: Header = serde_json::from_slice(&body[24..header_end]).map_err(|e| invalid(format!("header: {e}")))?;
    let width = header.layers * header.dim;
    let expected = header.count * width * 4 + header.count * 4;
    if body.len() - header_end != expected || width == 0 {
        return Err(invalid(format!(
            "header promises {} patches of {} values, the file holds {} bytes of data",
            header.count,
            width,
            body.len() - header_end
        )));
    }
    let (features, sources) = body[header_end..].split_at(header.count * width * 4);
    Ok(MemoryBank {
        model_sha256: header.model_sha256,
        model_name: header.model_name,
        layers: header.layers,
        dim: header.dim,
        features: features.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect(),
        sources: sources.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4"))).collect(),
        threshold: header.threshold,
        good_images: header.good_images,
    })
}

/// Reads the memory file at `path`.
pub fn read(path: &Path) -> Result<MemoryBank, MemoryFileError> {
    let bytes = std::fs::read(path).map_err(|error| MemoryFileError::Io { path: path.to_path_buf(), error })?;
    from_bytes(path, &bytes)
}

/// Refuses `bank` (read from `path`) unless it was made from the model with `model_sha256`.
pub fn check_model(
    path: &Path,
    bank: &MemoryBank,
    model_name: &str,
    model_sha256: &str,
) -> Result<(), MemoryFileError> {
    if bank.model_sha256 == model_sha256 {
        return Ok(());
    }
    Err(MemoryFileError::OtherModel {
        path: path.to_path_buf(),
        made_for: bank.model_name.clone(),
        made_sha: bank.model_sha256.clone(),
        used_with: model_name.to_string(),
        used_sha: model_sha256.to_string(),
    })
}

/// Writes `bank` to `path` atomically: a temporary file beside it, flushed to disk, renamed.
pub fn write(path: &Path, bank: &MemoryBank) -> Result<(), MemoryFileError> {
    crate::atomic::write_atomic(path, &to_bytes(bank))
        .map_err(|error| MemoryFileError::Io { path: path.to_path_buf(), error })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank() -> MemoryBank {
        MemoryBank {
            model_sha256: "ab".repeat(32),
            model_name: "m".into(),
            layers: 2,
            dim: 3,
            features: (0..12).map(|v| v as f32 * 0.5).collect(),
            sources: vec![0, 7],
            threshold: Some(0.25),
            good_images: 8,
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
    fn truncation_and_other_versions_are_refused_naming_the_file() {
        let bytes = to_bytes(&bank());
        let error = from_bytes(Path::new("line3.mem"), &bytes[..bytes.len() - 9]).unwrap_err();
        assert!(error.to_string().starts_with("line3.mem: checksum mismatch"), "{error}");
        let mut newer = bytes.clone();
        newer[16] = 2;
        let error = from_bytes(Path::new("line3.mem"), &newer).unwrap_err();
        assert!(error.to_string().contains("format version 2"), "{error}");
    }
}
