//! What the API and the metrics say, made from the board: JSON values for `/api/v1/…` and the
//! Prometheus text for `/metrics`.

use std::fmt::Write as _;
use std::path::Path;

use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::server::{answer, refusal, Body, Shared};
use crate::station::log::rfc3339;
use crate::station::status::{LastResult, StationStatus, LATENCY_BUCKETS_MS, STAGES};
use crate::station::RunSummary;
use crate::storage::read::read_regular;
use crate::verdict::Verdict;

/// Results one request may ask for.
pub(crate) const MAX_RESULTS: usize = crate::station::status::RECENT_RESULTS;
/// Failed parts listed at most (the newest).
const MAX_FAILURES: usize = 200;
/// Largest failed-part image served.
const MAX_IMAGE_BYTES: usize = 64 << 20;
/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Words that make a configuration key's value a secret's name, redacted from `/api/v1/config`.
const SECRET_WORDS: [&str; 4] = ["token", "password", "key", "secret"];
/// Suffix of a failed part's frame in the archive.
const FRAME_SUFFIX: &str = "-frame.png";
/// Suffix of a failed part's overlay in the archive.
const OVERLAY_SUFFIX: &str = "-overlay.png";

/// The name of a verdict, as the result log writes it.
fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Error => "error",
    }
}

/// A finite number as JSON; NaN and infinities as null.
fn number(value: f32) -> Value {
    if value.is_finite() {
        json!(value)
    } else {
        Value::Null
    }
}

/// One result as JSON.
fn result(sequence: u64, last: &LastResult, recipes: &[super::RecipeSetup], image: bool) -> Value {
    let recipe = (last.recipe as usize).checked_sub(1).and_then(|i| recipes.get(i)).map(|r| r.name.as_str());
    let time = rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(last.unix_ms));
    json!({
        "sequence": sequence,
        "frame": last.frame,
        "part_id": last.part_id,
        "time": time.as_str(),
        "verdict": verdict_name(last.verdict),
        "score": last.score.map(number),
        "threshold": number(last.threshold),
        "recipe": recipe,
        "latency_ms": number(last.latency_ms),
        "error_cause": last.cause as u16,
        "image": image.then(|| format!("/api/v1/results/{sequence}/overlay.jpg")),
    })
}

fn counters_json(counters: &RunSummary) -> Value {
    json!({
        "frames": counters.frames,
        "passed": counters.passed,
        "failed": counters.failed,
        "errors": counters.errors,
        "missed_triggers": counters.missed_triggers,
        "stale_frames": counters.stale_frames,
        "images_dropped": counters.images_dropped,
        "log_failures": counters.log_failures,
        "gpio_failures": counters.gpio_failures,
        "display_failures": counters.display_failures,
        "self_test_failures": counters.self_test_failures,
        "drift_warnings": counters.drift_warnings,
        "mqtt_dropped": counters.mqtt_dropped,
    })
}

/// Parts per second over the recent results (0 with fewer than two).
fn frame_rate(shared: &Shared) -> f64 {
    let statistics = shared.board.statistics();
    let times: Vec<u64> = statistics.recent.oldest_ordered().map(|(_, r)| r.unix_ms).collect();
    match (times.first(), times.last()) {
        (Some(first), Some(last)) if times.len() > 1 && last > first => {
            (times.len() - 1) as f64 * 1000.0 / (last - first) as f64
        }
        _ => 0.0,
    }
}

/// `/api/v1/status`.
pub(crate) fn status(shared: &Shared) -> Value {
    let status: StationStatus = shared.board.status();
    let recipes = &shared.facts.recipes;
    let recipe = (status.recipe as usize).checked_sub(1).and_then(|i| recipes.get(i)).map(|r| r.name.as_str());
    json!({
        "sequence": status.sequence,
        "ready": status.ready,
        "busy": status.busy,
        "recipe": recipe,
        "self_test_fault": status.self_test_fault,
        "drift_warning": status.drift_warning,
        "frame_rate": frame_rate(shared),
        "uptime_s": shared.started.elapsed().as_secs(),
        "last": status.last.map(|last| result(status.sequence, &last, recipes, shared.live.thumbnail(status.sequence).is_some())),
        "counters": counters_json(&status.counters),
    })
}

/// `/api/v1/counters`: the totals, verdicts per recipe and errors per cause.
pub(crate) fn counters(shared: &Shared) -> Value {
    let status = shared.board.status();
    let statistics = shared.board.statistics();
    let by_recipe: Vec<Value> = shared
        .facts
        .recipes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let [pass, fail, error] = statistics.by_recipe.get(i).copied().unwrap_or_default();
            json!({ "recipe": r.name, "passed": pass, "failed": fail, "errors": error })
        })
        .collect();
    json!({
        "totals": counters_json(&status.counters),
        "by_recipe": by_recipe,
        "errors_by_cause": statistics.errors_by_cause.to_vec(),
    })
}

/// `/api/v1/results?limit=N`: the newest results first, at most [`MAX_RESULTS`].
pub(crate) fn results(shared: &Shared, limit: usize) -> Value {
    let statistics = shared.board.statistics();
    let thumbnailed = shared.live.thumbnailed();
    let list: Vec<Value> = statistics
        .recent
        .oldest_ordered()
        .rev()
        .take(limit.min(MAX_RESULTS))
        .map(|(sequence, last)| result(*sequence, last, &shared.facts.recipes, thumbnailed.contains(sequence)))
        .collect();
    Value::Array(list)
}

/// `/api/v1/scores`: each recipe's calibration (threshold, good parts' leave-one-out scores)
/// and the recent parts' scores, for the distribution plot.
pub(crate) fn scores(shared: &Shared) -> Value {
    let statistics = shared.board.statistics();
    let calibrations: Vec<Value> = shared
        .board
        .calibrations()
        .iter()
        .map(|c| json!({ "recipe": c.name, "threshold": number(c.threshold), "good_scores": c.good_scores.iter().map(|s| number(*s)).collect::<Vec<_>>(), "memory_sha256": c.memory_sha256 }))
        .collect();
    let recent: Vec<Value> = statistics
        .recent
        .oldest_ordered()
        .filter_map(|(_, r)| {
            let score = r.score?;
            let recipe = (r.recipe as usize).checked_sub(1).and_then(|i| shared.facts.recipes.get(i))?;
            Some(json!({ "recipe": recipe.name, "score": number(score), "verdict": verdict_name(r.verdict) }))
        })
        .collect();
    json!({ "calibrations": calibrations, "recent": recent })
}

/// `/api/v1/failures`: the failed parts kept in the archive, newest first.
pub(crate) fn failures(shared: &Shared) -> Value {
    let Some(dir) = &shared.failures else { return json!({ "archive": false, "parts": [] }) };
    let files = dir.files().unwrap_or_default();
    // A part's score, while its result is among the recent ones (its overlay shows it always).
    let statistics = shared.board.statistics();
    let score_of =
        |frame: u64| statistics.recent.oldest_ordered().find(|(_, r)| r.frame == frame).and_then(|(_, r)| r.score);
    let parts: Vec<Value> = files
        .iter()
        .rev()
        .filter_map(|(name, _)| name.strip_suffix(OVERLAY_SUFFIX).filter(|stem| archive_stem(stem)))
        .take(MAX_FAILURES)
        .map(|stem| {
            let (time, frame) = stem.rsplit_once('-').unwrap_or((stem, ""));
            let frame = frame.parse::<u64>().ok();
            json!({
                "part": stem,
                "time": time,
                "frame": frame,
                "score": frame.and_then(score_of).map(number),
                "overlay": format!("/api/v1/failures/{stem}{OVERLAY_SUFFIX}"),
                "frame_image": format!("/api/v1/failures/{stem}{FRAME_SUFFIX}"),
                "mark_good": format!("/api/v1/failures/{stem}/good"),
            })
        })
        .collect();
    json!({ "archive": true, "parts": parts })
}

/// Whether `stem` is a failed part's name as the archive makes them: `<time>-<frame>`, the
/// time's digits, `-`, `T`, `.` and `Z`, the frame's digits.
pub(crate) fn archive_stem(stem: &str) -> bool {
    let Some((time, frame)) = stem.rsplit_once('-') else { return false };
    let time_ok = time.len() >= 10
        && time.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && time.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'T' | b'.' | b'Z'));
    time_ok && !frame.is_empty() && frame.bytes().all(|b| b.is_ascii_digit())
}

/// `/api/v1/failures/<stem>-frame.png` or `-overlay.png`: one image of a failed part, read
/// from the archive folder by a name of its own naming, never through a link.
pub(crate) fn failure_image(shared: &Shared, name: &str) -> Response<Body> {
    let Some(dir) = &shared.failures else {
        return refusal(StatusCode::NOT_FOUND, "this station keeps no failed parts (log.failures_dir)");
    };
    let stem = name.strip_suffix(FRAME_SUFFIX).or_else(|| name.strip_suffix(OVERLAY_SUFFIX));
    if !stem.is_some_and(archive_stem) {
        return refusal(StatusCode::NOT_FOUND, "not a failed part's image");
    }
    match dir.read(name, MAX_IMAGE_BYTES) {
        Ok(bytes) => answer(StatusCode::OK, "image/png", bytes),
        Err(_) => refusal(StatusCode::NOT_FOUND, "no such image in the archive"),
    }
}

/// The configuration file as JSON, the values of keys that name secrets replaced by
/// `"(redacted)"`.
pub(crate) fn redacted_config(file: &Path) -> anyhow::Result<Value> {
    let bytes = read_regular(file, MAX_CONFIG_BYTES, "configuration")?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: not UTF-8", file.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let mut value = serde_json::to_value(table)?;
    redact(&mut value);
    Ok(value)
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let lower = key.to_ascii_lowercase();
                if SECRET_WORDS.iter().any(|w| lower.contains(w)) && !value.is_object() {
                    *value = json!("(redacted)");
                } else {
                    redact(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// `/metrics`: Prometheus text format.
pub(crate) fn metrics(shared: &Shared) -> String {
    let status = shared.board.status();
    let statistics = shared.board.statistics();
    let mut out = String::with_capacity(4096);
    let recipes = &shared.facts.recipes;
    let _ = writeln!(out, "# HELP clipada_verdicts_total Verdicts since start, by recipe.");
    let _ = writeln!(out, "# TYPE clipada_verdicts_total counter");
    for (i, recipe) in recipes.iter().enumerate() {
        let counts = statistics.by_recipe.get(i).copied().unwrap_or_default();
        for (verdict, count) in ["pass", "fail", "error"].iter().zip(counts) {
            let _ = writeln!(
                out,
                "clipada_verdicts_total{{recipe=\"{}\",verdict=\"{verdict}\"}} {count}",
                label(&recipe.name)
            );
        }
    }
    let counters = &status.counters;
    for (name, help, value) in [
        ("clipada_parts_total", "Parts judged since start (each got one verdict).", counters.frames),
        (
            "clipada_missed_triggers_total",
            "Triggers that came while busy or overflowed (ERROR each).",
            counters.missed_triggers,
        ),
        ("clipada_stale_frames_total", "Frames discarded as exposed before their trigger.", counters.stale_frames),
        ("clipada_images_dropped_total", "Failed parts whose images could not be saved.", counters.images_dropped),
        ("clipada_log_failures_total", "Result lines that could not be written.", counters.log_failures),
        ("clipada_gpio_failures_total", "Verdicts the lines could not show.", counters.gpio_failures),
        ("clipada_self_test_failures_total", "Self-tests a reference part failed.", counters.self_test_failures),
        ("clipada_drift_warnings_total", "Drift warnings raised.", counters.drift_warnings),
        ("clipada_mqtt_dropped_total", "Results dropped from the MQTT queue.", counters.mqtt_dropped),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    let _ =
        writeln!(out, "# HELP clipada_errors_total ERROR results since start, by cause (README's error-cause table).");
    let _ = writeln!(out, "# TYPE clipada_errors_total counter");
    for (cause, count) in statistics.errors_by_cause.iter().enumerate().skip(1) {
        let _ = writeln!(out, "clipada_errors_total{{cause=\"{cause}\"}} {count}");
    }
    let _ = writeln!(out, "# HELP clipada_stage_latency_ms Time per part in each stage, milliseconds.");
    let _ = writeln!(out, "# TYPE clipada_stage_latency_ms histogram");
    for (stage, histogram) in STAGES.iter().zip(&statistics.stages) {
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS_MS.iter().zip(&histogram.counts) {
            cumulative += count;
            let _ = writeln!(out, "clipada_stage_latency_ms_bucket{{stage=\"{stage}\",le=\"{bound}\"}} {cumulative}");
        }
        let total = histogram.count();
        let _ = writeln!(out, "clipada_stage_latency_ms_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "clipada_stage_latency_ms_sum{{stage=\"{stage}\"}} {}", histogram.sum_ms);
        let _ = writeln!(out, "clipada_stage_latency_ms_count{{stage=\"{stage}\"}} {total}");
    }
    let _ = writeln!(out, "# HELP clipada_ready Whether the loop waits for parts.\n# TYPE clipada_ready gauge");
    let _ = writeln!(out, "clipada_ready {}", u8::from(status.ready));
    let _ = writeln!(out, "# HELP clipada_threshold Each recipe's threshold in force.\n# TYPE clipada_threshold gauge");
    for calibration in shared.board.calibrations() {
        let _ = writeln!(out, "clipada_threshold{{recipe=\"{}\"}} {}", label(&calibration.name), calibration.threshold);
    }
    let _ = writeln!(
        out,
        "# HELP clipada_engine_info The engine that judges each recipe.\n# TYPE clipada_engine_info gauge"
    );
    for recipe in recipes {
        let [engine, provider, precision] = recipe.engine_info;
        let _ = writeln!(
            out,
            "clipada_engine_info{{recipe=\"{}\",engine=\"{engine}\",provider=\"{provider}\",precision=\"{precision}\",version=\"{}\"}} 1",
            label(&recipe.name),
            env!("CARGO_PKG_VERSION")
        );
    }
    out
}

/// `text` as a Prometheus label value (backslash, quote and newline escaped).
fn label(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_archives_own_names_are_part_stems() {
        assert!(archive_stem("2026-12-04T180102.345Z-00000012"));
        for bad in [
            "",
            "x-1",
            "2026-12-04T18:01:02Z-1",
            "2026-12-04T180102.345Z-",
            "../2026-12-04T1801Z-1",
            "2026-12-04T180102Z-1a",
        ] {
            assert!(!archive_stem(bad), "{bad}");
        }
    }

    #[test]
    fn keys_that_name_secrets_are_redacted_at_any_depth() {
        let mut value = json!({
            "http": { "token_file": "/etc/t", "bind": "x" },
            "mqtt": { "password_file": "/p", "tls": { "key": "/k", "ca": "/ca" } },
        });
        redact(&mut value);
        assert_eq!(value["http"]["token_file"], "(redacted)");
        assert_eq!(value["http"]["bind"], "x");
        assert_eq!(value["mqtt"]["password_file"], "(redacted)");
        assert_eq!(value["mqtt"]["tls"]["key"], "(redacted)");
        assert_eq!(value["mqtt"]["tls"]["ca"], "/ca");
    }
}
