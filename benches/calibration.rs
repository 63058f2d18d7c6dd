//! Calibration's peak memory and time, at 50 and at 1000 good images: the peak is bounded by
//! the memory size, not by the number of images (the target: 1000 images within 1.5 times the
//! peak of 50). The good images are variants of the shipped sample parts (shifted, brightened,
//! with noise), made here; `clipada calibrate` (the release binary) runs on them with the
//! default model and memory size, and each run's peak resident memory is read from the kernel.
//!
//!     cargo build --release && cargo bench --bench calibration
//!
//! `ORT_DYLIB_PATH` picks ONNX Runtime (else tract); prints one JSON object.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clipada::memory::coreset::SplitMix64;

/// A number below `n` from `rng`.
fn below(rng: &mut SplitMix64, n: u64) -> u64 {
    rng.next_u64() % n
}

/// `count` good images in `dir`: the sample parts, each variant shifted by a few pixels, its
/// brightness moved and pixel noise added.
fn make_good_images(root: &Path, dir: &Path, count: usize) {
    let good: Vec<image::RgbImage> = (0..10)
        .map(|i| {
            clipada::source::files::read_image(&root.join(format!("models/samples/part/train/good/{i:03}.png")))
                .unwrap()
        })
        .collect();
    let mut rng = SplitMix64(7);
    for n in 0..count {
        let base = &good[n % good.len()];
        let (dx, dy) = (below(&mut rng, 9) as i64 - 4, below(&mut rng, 9) as i64 - 4);
        let gain = 0.9 + below(&mut rng, 200) as f32 / 1000.0;
        let (w, h) = base.dimensions();
        let variant = image::RgbImage::from_fn(w, h, |x, y| {
            let sx = (x as i64 + dx).clamp(0, w as i64 - 1) as u32;
            let sy = (y as i64 + dy).clamp(0, h as i64 - 1) as u32;
            let p = base.get_pixel(sx, sy).0;
            let noise = (below(&mut rng, 9) as f32) - 4.0;
            image::Rgb(p.map(|c| (c as f32 * gain + noise).clamp(0.0, 255.0) as u8))
        });
        variant.save(dir.join(format!("{n:04}.png"))).unwrap();
    }
}

/// Runs `clipada calibrate` on `good`; its peak resident memory in MB and its wall time in s.
fn calibrate(clipada: &Path, model: &Path, good: &Path, out: &Path) -> (f64, f64) {
    let started = Instant::now();
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives its rusage
    let child = std::process::Command::new(clipada)
        .args(["calibrate", "--model"])
        .arg(model)
        .arg("--good")
        .arg(good)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: waiting for our own child with valid pointers; rusage is plain data.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(waited > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "calibrate failed");
    (usage.ru_maxrss as f64 / 1024.0, started.elapsed().as_secs_f64())
}

fn main() {
    clipada::process::set_up();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let clipada = root.join("target/release/clipada");
    assert!(clipada.is_file(), "build the release binary first: cargo build --release");
    let model = root.join("models/default/efficientnet-lite0.onnx");
    let dir = tempfile::tempdir().unwrap();
    let mut report = serde_json::Map::new();
    for count in [50, 1000] {
        let good = dir.path().join(format!("good-{count}"));
        std::fs::create_dir(&good).unwrap();
        make_good_images(&root, &good, count);
        let (peak_mb, seconds) = calibrate(&clipada, &model, &good, &dir.path().join(format!("{count}.memory")));
        report.insert(count.to_string(), serde_json::json!({"peak_rss_mb": peak_mb, "seconds": seconds}));
    }
    let ratio = report["1000"]["peak_rss_mb"].as_f64().unwrap() / report["50"]["peak_rss_mb"].as_f64().unwrap();
    report.insert("peak_1000_over_50".into(), serde_json::json!(ratio));
    report.insert(
        "engine".into(),
        serde_json::json!(if std::env::var_os("ORT_DYLIB_PATH").is_some() { "auto (ort)" } else { "tract" }),
    );
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
