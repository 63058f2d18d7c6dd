//! The station's records: a JSON-lines result log and a bounded folder of failed parts.
//!
//! Neither may stop the inspection: a write that fails (full disk, removed folder) is counted
//! and reported once per kind of failure through the station's log lines (`logging`), and the station
//! goes on judging parts.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use image::RgbImage;
use serde::Serialize;

use crate::sink::png::png_bytes;
use crate::storage::owned::{open_owned, rotatable, rotate, FileKind, FolderKind, OwnedDir};
use crate::verdict::Verdict;

/// What judged the parts: model and memory (SHA-256 prefixes), engine, provider, precision.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Provenance {
    /// The model file's SHA-256, first 16 hex digits.
    pub model_sha256: String,
    /// The memory file's SHA-256, first 16 hex digits (none without a memory).
    pub memory_sha256: Option<String>,
    /// `tract` or `ort`.
    pub engine: &'static str,
    /// `cpu`, `cuda`, `tensorrt`.
    pub provider: &'static str,
    /// `fp32`, `fp16`, `int8`.
    pub precision: &'static str,
}

impl Provenance {
    /// What judges with `extractor`'s engine against the memory of SHA-256 `memory_sha256`.
    pub fn of(extractor: &crate::pipeline::Extractor, memory_sha256: Option<&str>) -> Provenance {
        let prefix = |sha: &str| sha.chars().take(SHA256_PREFIX).collect::<String>();
        let info = extractor.info();
        Provenance {
            model_sha256: prefix(extractor.model_sha256()),
            memory_sha256: memory_sha256.map(prefix),
            engine: info.engine,
            provider: info.provider,
            precision: info.precision.name(),
        }
    }
}

/// Hex digits of a SHA-256 kept in records: enough to tell files apart, short enough to read.
pub const SHA256_PREFIX: usize = 16;

/// One verdict as logged.
#[derive(Debug, Clone, Serialize)]
pub struct ResultRecord<'a> {
    /// UTC time of the verdict, RFC 3339 with milliseconds.
    pub time: &'a str,
    /// The part's ID: increasing across restarts (none when the station keeps no state).
    pub part_id: Option<u64>,
    /// Frame number since start, from 1.
    pub frame: u64,
    /// Image score; absent for ERROR.
    pub score: Option<f32>,
    /// The verdict.
    pub verdict: Verdict,
    /// Trigger to the verdict on the lines (with a reject gate: to the verdict kept for the
    /// gate), milliseconds.
    pub latency_ms: f32,
    /// Triggers missed since start (an ERROR verdict each), this one included.
    pub missed_triggers: u64,
    /// What went wrong, for ERROR.
    pub error: Option<&'a str>,
    /// The recipe that judged it.
    pub recipe: &'a str,
    /// The threshold its score was judged against (the recipe's).
    pub threshold: f32,
    /// What judged it.
    pub judged_by: &'a Provenance,
}

impl ResultRecord<'_> {
    /// The record as one line of JSON (no newline) in `line`, replacing what it held: the
    /// result log's line and the MQTT result's payload alike.
    pub fn write_json(&self, line: &mut Vec<u8>) -> serde_json::Result<()> {
        line.clear();
        serde_json::to_writer(line, self)
    }
}

/// When the result log is rotated, and how many rotated files are kept: at most
/// `max_bytes` × (`keep` + 1) bytes on disk in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// The log is rotated before a line would take it past this size.
    pub max_bytes: u64,
    /// The log is rotated once its first line is this old.
    pub max_age: Duration,
    /// Rotated files kept (`results.jsonl.1` the newest); older ones are deleted.
    pub keep: u32,
}

impl Rotation {
    /// No rotation (tests, one-off runs).
    pub const NEVER: Rotation = Rotation { max_bytes: u64::MAX, max_age: Duration::MAX, keep: 0 };
}

/// Appends one JSON object per verdict to a file; each line is written with one `write` call
/// to a file opened for appending, so a line is never interleaved or half-replaced. An existing
/// file must be a result log (`storage::owned`), and the file is locked while open.
/// The log is rotated by size and age ([`Rotation`]); rotated files are `<path>.1` (newest) to
/// `<path>.<keep>`, and only result logs are ever moved or deleted.
pub struct ResultLog {
    file: File,
    path: PathBuf,
    line: Vec<u8>,
    rotation: Rotation,
    /// Bytes in the current file.
    size: u64,
    /// When the current file was begun (its creation time, or when it was opened empty).
    begun: SystemTime,
}

impl ResultLog {
    /// Opens `path` for appending (created if missing), rotated as `rotation` says.
    pub fn open(path: &Path, rotation: Rotation) -> anyhow::Result<ResultLog> {
        let file = open_owned(path, FileKind::ResultLog, true)?;
        // A foreign file where a rotated log would go is refused now, not when the log is full.
        rotatable(path, FileKind::ResultLog, rotation.keep)?;
        let metadata = file.metadata().with_context(|| path.display().to_string())?;
        let begun = if metadata.len() == 0 {
            SystemTime::now()
        } else {
            metadata.created().or_else(|_| metadata.modified())?
        };
        Ok(ResultLog {
            file,
            path: path.to_path_buf(),
            line: Vec::with_capacity(512),
            rotation,
            size: metadata.len(),
            begun,
        })
    }

    /// Appends a record's JSON (from [`ResultRecord::write_json`]) as a line, rotating first
    /// when the line would take the file past its size or the file is past its age.
    pub fn append(&mut self, json: &[u8]) -> anyhow::Result<()> {
        self.line.clear();
        self.line.extend_from_slice(json);
        self.line.push(b'\n');
        let full = self.size > 0 && self.size.saturating_add(self.line.len() as u64) > self.rotation.max_bytes;
        let old = self.size > 0 && self.begun.elapsed().is_ok_and(|age| age >= self.rotation.max_age);
        if full || old {
            self.rotate()?;
        }
        self.file.write_all(&self.line).with_context(|| format!("{}: cannot append", self.path.display()))?;
        self.size += self.line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> anyhow::Result<()> {
        rotate(&self.path, FileKind::ResultLog, self.rotation.keep)?;
        self.file = open_owned(&self.path, FileKind::ResultLog, true)?;
        self.size = 0;
        self.begun = SystemTime::now();
        Ok(())
    }
}

/// Part IDs that keep increasing across restarts: the next unused one is kept in the state
/// folder's `part-id` file, reserved [`PartIds::BLOCK`] at a time (written atomically), so a
/// crash skips at most a block and never hands out an ID twice.
pub struct PartIds {
    dir: OwnedDir,
    next: u64,
    reserved_to: u64,
    failures: u64,
}

impl PartIds {
    /// IDs reserved per write of the file.
    pub const BLOCK: u64 = 1000;
    /// The file's name in the state folder.
    pub const FILE: &'static str = "part-id";

    /// Continues from the state folder `dir` (one `clipada run` claimed); the first ID is 1.
    pub fn open(dir: &Path) -> anyhow::Result<PartIds> {
        let dir = OwnedDir::claim(dir, FolderKind::State)?;
        let path = dir.path().join(Self::FILE);
        let next = match dir.read(Self::FILE, 32) {
            Ok(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .filter(|n| *n >= 1 && *n < u64::MAX / 2)
                .with_context(|| format!("{}: not a part ID (one decimal number)", path.display()))?,
            // Only when nothing is there: a dangling link must not restart the IDs at 1.
            Err(_) if path.symlink_metadata().is_err() => 1,
            Err(e) => return Err(e.into()),
        };
        let mut ids = PartIds { dir, next, reserved_to: next, failures: 0 };
        ids.reserve()?;
        Ok(ids)
    }

    fn reserve(&mut self) -> anyhow::Result<()> {
        let to = self.next + Self::BLOCK;
        self.dir.write_atomic(Path::new(Self::FILE), format!("{to}\n").as_bytes())?;
        self.reserved_to = to;
        Ok(())
    }

    /// The next part's ID. When a new block cannot be reserved the IDs go on (the error says
    /// so): a restart after that may skip back into IDs already used.
    pub fn next_id(&mut self) -> (u64, anyhow::Result<()>) {
        let id = self.next;
        self.next += 1;
        let reserved = if self.next >= self.reserved_to { self.reserve() } else { Ok(()) };
        if reserved.is_err() {
            self.failures += 1;
        }
        (id, reserved)
    }

    /// Failed reservations so far (each part after the reserved block tries again).
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

/// Suffixes of a failed part's two files.
const PART_FILES: [&str; 2] = ["-frame.png", "-overlay.png"];

/// Whether `name` is a file the archive wrote: `<time>-<frame>-frame.png` or `-overlay.png`,
/// the time starting with a four-digit year.
fn is_part_file(name: &str) -> bool {
    let dated = name.len() > 5 && name.as_bytes()[..4].iter().all(u8::is_ascii_digit) && name.as_bytes()[4] == b'-';
    dated && PART_FILES.iter().any(|suffix| name.ends_with(suffix))
}

/// Keeps the images and overlays of failed parts in a folder clipada owns, within a count and a
/// byte budget: the oldest parts are deleted first, and only files of the archive's own naming
/// are ever deleted (anything else in the folder is left alone and not counted).
pub struct FailureArchive {
    dir: OwnedDir,
    max_parts: usize,
    max_bytes: u64,
    /// Saved parts, oldest first: their file names and total size.
    kept: VecDeque<(Vec<String>, u64)>,
    bytes: u64,
}

impl FailureArchive {
    /// Uses `dir` (created if missing, or a failed-parts folder clipada made; see
    /// `storage::owned`), locked while the archive lives; parts saved there by earlier runs
    /// count toward the limits.
    pub fn open(dir: &Path, max_parts: usize, max_bytes: u64) -> anyhow::Result<FailureArchive> {
        let dir = OwnedDir::claim(dir, FolderKind::FailedParts)?;
        // Two stations pruning one folder would delete each other's parts.
        dir.lock()?;
        let mut archive = FailureArchive { max_parts, max_bytes, kept: VecDeque::new(), bytes: 0, dir };
        // Names start with the time, so name order is age order.
        for (name, size) in archive.dir.files()?.into_iter().filter(|(name, _)| is_part_file(name)) {
            archive.bytes += size;
            // A part's files share the name up to the last `-`.
            let stem = |n: &str| n.rsplit_once('-').map(|(stem, _)| stem.to_string());
            match archive.kept.back_mut() {
                Some((files, bytes)) if stem(&files[0]) == stem(&name) => {
                    files.push(name);
                    *bytes += size;
                }
                _ => archive.kept.push_back((vec![name], size)),
            }
        }
        archive.evict(0, 0)?;
        Ok(archive)
    }

    /// Saves a failed part's frame and overlay as `<time>-<frame>-frame.png` and
    /// `-overlay.png`, after deleting the oldest parts that must go to make room.
    pub fn save(&mut self, time: &str, frame_id: u64, frame: &RgbImage, overlay: &RgbImage) -> anyhow::Result<()> {
        let stem = format!("{}-{frame_id:08}", time.replace(':', ""));
        let encoded = [(PART_FILES[0], png_bytes(frame)?), (PART_FILES[1], png_bytes(overlay)?)];
        let size = encoded.iter().map(|(_, bytes)| bytes.len() as u64).sum();
        self.evict(1, size)?;
        let mut files = Vec::new();
        let mut written = Ok(());
        for (suffix, bytes) in &encoded {
            let name = format!("{stem}{suffix}");
            written = self.dir.write_atomic(Path::new(&name), bytes).map(drop).map_err(anyhow::Error::from);
            if written.is_err() {
                break;
            }
            files.push(name);
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
                self.dir.remove(&file)?;
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
pub(crate) fn rfc3339(time: SystemTime) -> heapless::String<32> {
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

    fn read_png(path: &Path) -> RgbImage {
        crate::source::files::read_image(path).unwrap()
    }

    #[test]
    fn a_saved_failed_part_holds_its_frame_and_its_overlay() {
        let dir = tempfile::tempdir().unwrap();
        // Different sizes and contents, so that one file cannot pass for the other.
        let frame = RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 5, y as u8 * 7, 90]));
        let overlay = RgbImage::from_pixel(12, 9, image::Rgb([200, 10, 10]));
        FailureArchive::open(dir.path(), 10, u64::MAX)
            .unwrap()
            .save("2026-01-01T00:00:01.000Z", 7, &frame, &overlay)
            .unwrap();
        let read = |suffix: &str| read_png(&dir.path().join(format!("2026-01-01T000001.000Z-00000007-{suffix}.png")));
        assert_eq!(read("frame"), frame);
        assert_eq!(read("overlay"), overlay);
    }

    fn parts_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| is_part_file(n))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_failed_parts_folder_keeps_the_newest_within_its_limits() {
        let dir = tempfile::tempdir().unwrap();
        let frame = RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]));
        let mut archive = FailureArchive::open(dir.path(), 3, u64::MAX).unwrap();
        for id in 1..=5 {
            archive.save(&format!("2026-01-01T00:00:0{id}.000Z"), id, &frame, &frame).unwrap();
        }
        let names = parts_in(dir.path());
        assert_eq!(names.len(), 6);
        assert!(names[0].contains("00000003-frame"), "{names:?}");
        assert!(names[5].contains("00000005-overlay"), "{names:?}");
        // Another station cannot use the folder while this one holds it.
        assert!(FailureArchive::open(dir.path(), 10, u64::MAX).is_err(), "locked by the first archive");
        drop(archive);
        // A new run counts what is there; a byte budget of one part keeps only the newest.
        let one_part: u64 = names.iter().take(2).map(|n| std::fs::metadata(dir.path().join(n)).unwrap().len()).sum();
        let mut archive = FailureArchive::open(dir.path(), 10, one_part).unwrap();
        assert_eq!(archive.len(), 1);
        archive.save("2026-01-01T00:00:09.000Z", 9, &frame, &frame).unwrap();
        let names = parts_in(dir.path());
        assert_eq!(names.len(), 2);
        assert!(names.iter().all(|n| n.contains("00000009")), "{names:?}");
    }

    #[test]
    fn files_the_archive_did_not_write_are_never_deleted_and_a_foreign_folder_is_refused() {
        // Regression: eviction deleted any *.png in the folder (10 user images lost), and a
        // folder named `x.png` in it broke every save.
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("photos");
        std::fs::create_dir(&user).unwrap();
        std::fs::write(user.join("holiday.png"), b"mine").unwrap();
        assert!(FailureArchive::open(&user, 1, u64::MAX).is_err(), "a folder of other files is not taken over");
        assert_eq!(std::fs::read(user.join("holiday.png")).unwrap(), b"mine");

        let failures = dir.path().join("failures");
        let frame = RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]));
        let mut archive = FailureArchive::open(&failures, 1, u64::MAX).unwrap();
        std::fs::write(failures.join("notes.png"), b"mine").unwrap();
        std::fs::create_dir(failures.join("x.png")).unwrap();
        for id in 1..=3 {
            archive.save(&format!("2026-01-01T00:00:0{id}.000Z"), id, &frame, &frame).unwrap();
        }
        drop(archive);
        let mut archive = FailureArchive::open(&failures, 1, u64::MAX).unwrap();
        archive.save("2026-01-01T00:00:09.000Z", 9, &frame, &frame).unwrap();
        assert_eq!(std::fs::read(failures.join("notes.png")).unwrap(), b"mine");
        assert!(failures.join("x.png").is_dir());
        assert_eq!(parts_in(&failures).len(), 2);
    }

    #[test]
    fn a_result_log_is_appended_to_and_a_file_of_another_kind_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        log_lines(&path, Rotation::NEVER, 1).unwrap();
        log_lines(&path, Rotation::NEVER, 1).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, "root's notes\n").unwrap();
        assert!(ResultLog::open(&other, Rotation::NEVER).is_err());
        assert_eq!(std::fs::read_to_string(&other).unwrap(), "root's notes\n");
    }

    /// A result log at `path` with `rotation`, and `count` records appended.
    fn log_lines(path: &Path, rotation: Rotation, count: u64) -> anyhow::Result<()> {
        let provenance = Provenance::default();
        let mut log = ResultLog::open(path, rotation)?;
        let mut json = Vec::new();
        for frame in 1..=count {
            let record = ResultRecord {
                time: "2026-12-03T00:00:00.000Z",
                part_id: Some(frame),
                frame,
                score: Some(0.5),
                verdict: Verdict::Pass,
                latency_ms: 1.0,
                missed_triggers: 0,
                error: None,
                recipe: "default",
                threshold: 0.6,
                judged_by: &provenance,
            };
            record.write_json(&mut json)?;
            log.append(&json)?;
        }
        Ok(())
    }

    /// The frame numbers in a result log file.
    fn frames_in(path: &Path) -> Vec<u64> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["frame"].as_u64().unwrap()).collect()
    }

    #[test]
    fn the_result_log_rotates_by_size_keeps_its_bound_and_never_moves_a_foreign_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let rotation = Rotation { max_bytes: 1000, max_age: Duration::MAX, keep: 2 };
        log_lines(&path, rotation, 40).unwrap();
        let files: Vec<Vec<u64>> =
            ["results.jsonl.2", "results.jsonl.1", "results.jsonl"].map(|n| frames_in(&dir.path().join(n))).into();
        for (name, size) in ["results.jsonl", "results.jsonl.1", "results.jsonl.2"]
            .map(|n| (n, std::fs::metadata(dir.path().join(n)).unwrap().len()))
        {
            assert!(size <= 1000, "{name}: {size} bytes");
        }
        assert!(!dir.path().join("results.jsonl.3").exists(), "at most `keep` rotated files");
        // Oldest to newest, no line lost between the kept files, the newest last.
        let kept: Vec<u64> = files.concat();
        assert_eq!(*kept.last().unwrap(), 40);
        assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
        // A file of someone else's where a rotated log would go: refused at open, naming it;
        // nothing is moved or lost.
        std::fs::write(dir.path().join("results.jsonl.1"), "root's notes\n").unwrap();
        let error = ResultLog::open(&path, rotation).err().unwrap().to_string();
        assert!(error.contains("results.jsonl.1"), "{error}");
        assert!(log_lines(&path, rotation, 40).is_err());
        assert_eq!(std::fs::read_to_string(dir.path().join("results.jsonl.1")).unwrap(), "root's notes\n");
    }

    #[test]
    fn the_result_log_rotates_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        log_lines(&path, Rotation { max_bytes: u64::MAX, max_age: Duration::ZERO, keep: 5 }, 3).unwrap();
        assert_eq!(frames_in(&path), [3]);
        assert_eq!(frames_in(&dir.path().join("results.jsonl.1")), [2]);
        assert_eq!(frames_in(&dir.path().join("results.jsonl.2")), [1]);
    }

    #[test]
    fn part_ids_keep_increasing_across_restarts_and_a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut ids = PartIds::open(&state).unwrap();
        let first: Vec<u64> = (0..3).map(|_| ids.next_id().0).collect();
        assert_eq!(first, [1, 2, 3]);
        drop(ids);
        // A restart (or a crash) goes on after every ID that could have been handed out.
        let mut ids = PartIds::open(&state).unwrap();
        let (id, _) = ids.next_id();
        assert!(id > 3, "{id}");
        for _ in 0..PartIds::BLOCK + 5 {
            ids.next_id().1.unwrap();
        }
        let last = ids.next_id().0;
        drop(ids);
        assert!(PartIds::open(&state).unwrap().next_id().0 > last);
        // A dangling link in its place is refused, not taken for a first start (IDs from 1 again).
        std::fs::remove_file(state.join(PartIds::FILE)).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), state.join(PartIds::FILE)).unwrap();
        assert!(PartIds::open(&state).is_err());
        std::fs::remove_file(state.join(PartIds::FILE)).unwrap();
        std::fs::write(state.join(PartIds::FILE), "twelve\n").unwrap();
        let error = PartIds::open(&state).err().unwrap().to_string();
        assert!(error.contains("part-id") && error.contains("not a part ID"), "{error}");
    }

    #[test]
    fn only_the_archives_own_names_count_as_parts() {
        assert!(is_part_file("2026-11-27T150405.123Z-00000012-frame.png"));
        assert!(is_part_file("2026-11-27T150405.123Z-00000012-overlay.png"));
        for other in ["holiday.png", "x.png", "2026-frame.jpg", "frame.png", "12-frame.png"] {
            assert!(!is_part_file(other), "{other}");
        }
    }

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
