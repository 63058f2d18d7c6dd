//! The station's records: a JSON-lines result log and a bounded folder of failed parts.
//!
//! Neither may stop the inspection: a write that fails (full disk, removed folder) is counted
//! and reported once per kind of failure through the station's diagnostics, and the station
//! goes on judging parts.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use image::RgbImage;
use serde::Serialize;

use crate::atomic::write_atomic;
use crate::sink::overlay::png_bytes;
use crate::verdict::Verdict;

/// One verdict as logged.
#[derive(Debug, Clone, Serialize)]
pub struct ResultRecord<'a> {
    /// UTC time of the verdict, RFC 3339 with milliseconds.
    pub time: &'a str,
    /// Frame number since start, from 1.
    pub frame: u64,
    /// Image score; absent for ERROR.
    pub score: Option<f32>,
    /// The verdict.
    pub verdict: Verdict,
    /// Trigger to GPIO output, milliseconds.
    pub latency_ms: f32,
    /// What went wrong, for ERROR.
    pub error: Option<&'a str>,
}

/// Appends one JSON object per verdict to a file; each line is written with one `write` call
/// to a file opened for appending, so a line is never interleaved or half-replaced.
pub struct ResultLog {
    file: File,
    path: PathBuf,
    line: Vec<u8>,
}

impl ResultLog {
    /// Opens `path` for appending (created if missing).
    pub fn open(path: &Path) -> anyhow::Result<ResultLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("{}: cannot open the result log", path.display()))?;
        Ok(ResultLog { file, path: path.to_path_buf(), line: Vec::with_capacity(512) })
    }

    /// Appends `record`.
    pub fn append(&mut self, record: &ResultRecord<'_>) -> anyhow::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)?;
        self.line.push(b'\n');
        self.file.write_all(&self.line).with_context(|| format!("{}: cannot append", self.path.display()))
    }
}

/// Keeps the images and overlays of failed parts in a folder, within a count and a byte
/// budget: the oldest are deleted first. Files are written atomically (`crate::atomic`).
pub struct FailureArchive {
    dir: PathBuf,
    max_parts: usize,
    max_bytes: u64,
    /// Saved parts, oldest first: their files and total size.
    kept: VecDeque<(Vec<PathBuf>, u64)>,
    bytes: u64,
}

impl FailureArchive {
    /// Uses `dir` (created if missing); parts saved there by earlier runs count toward the limits.
    pub fn open(dir: &Path, max_parts: usize, max_bytes: u64) -> anyhow::Result<FailureArchive> {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
        let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
            .with_context(|| format!("{}: cannot list", dir.display()))?
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                let part = path.extension().is_some_and(|x| x == "png");
                part.then(|| (path, e.metadata().map(|m| m.len()).unwrap_or(0)))
            })
            .collect();
        // Names start with the time, so name order is age order.
        files.sort();
        let mut archive =
            FailureArchive { dir: dir.to_path_buf(), max_parts, max_bytes, kept: VecDeque::new(), bytes: 0 };
        for (path, size) in files {
            archive.bytes += size;
            // A part's files share the name up to the last `-` (`…-frame.png`, `…-overlay.png`).
            let stem = |p: &Path| p.to_string_lossy().rsplit_once('-').map(|(stem, _)| stem.to_string());
            match archive.kept.back_mut() {
                Some((files, bytes)) if stem(&files[0]) == stem(&path) => {
                    files.push(path);
                    *bytes += size;
                }
                _ => archive.kept.push_back((vec![path], size)),
            }
        }
        archive.evict(0, 0)?;
        Ok(archive)
    }

    /// Saves a failed part's frame and overlay as `<time>-<frame>-frame.png` and
    /// `-overlay.png`, after deleting the oldest parts that must go to make room.
    pub fn save(&mut self, time: &str, frame_id: u64, frame: &RgbImage, overlay: &RgbImage) -> anyhow::Result<()> {
        let stem = format!("{}-{frame_id:08}", time.replace(':', ""));
        let encoded = [("frame", png_bytes(frame)?), ("overlay", png_bytes(overlay)?)];
        let size = encoded.iter().map(|(_, bytes)| bytes.len() as u64).sum();
        self.evict(1, size)?;
        let mut files = Vec::new();
        let mut written = Ok(());
        for (suffix, bytes) in &encoded {
            let path = self.dir.join(format!("{stem}-{suffix}.png"));
            written = write_atomic(&path, bytes).with_context(|| format!("{}: cannot write", path.display()));
            if written.is_err() {
                break;
            }
            files.push(path);
        }
        if !files.is_empty() {
            self.bytes += size;
            self.kept.push_back((files, size));
        }
        written
    }

    /// Deletes the oldest parts until `parts` more parts and `bytes` more bytes fit.
    fn evict(&mut self, parts: usize, bytes: u64) -> anyhow::Result<()> {
        while !self.kept.is_empty() && (self.kept.len() + parts > self.max_parts || self.bytes + bytes > self.max_bytes)
        {
            let Some((files, size)) = self.kept.pop_front() else { break };
            self.bytes -= size;
            for file in files {
                std::fs::remove_file(&file)
                    .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
                    .with_context(|| format!("{}: cannot delete", file.display()))?;
            }
        }
        Ok(())
    }

    /// Parts kept now.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// True when no part is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

/// `time` as RFC 3339 UTC with milliseconds, e.g. `2026-11-27T15:04:05.123Z`.
pub fn rfc3339(time: SystemTime) -> heapless::String<32> {
    use std::fmt::Write as _;
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, seconds) = ((since.as_secs() / 86_400) as i64, since.as_secs() % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let mut text = heapless::String::new();
    let _ = write!(
        text,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        since.subsec_millis()
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_dates() {
        let at = |s: u64, ms: u64| rfc3339(UNIX_EPOCH + Duration::from_millis(s * 1000 + ms));
        assert_eq!(at(0, 0).as_str(), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (leap day of a century leap year) 12:34:56.789 = 951827696 s.
        assert_eq!(at(951_827_696, 789).as_str(), "2000-02-29T12:34:56.789Z");
        // 2026-11-27T00:00:00Z = 1795737600 s.
        assert_eq!(at(1_795_737_600, 5).as_str(), "2026-11-27T00:00:00.005Z");
    }
}
