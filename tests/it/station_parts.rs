//! The station's parts seen from outside: the screen drawn on a framebuffer file, the ignore
//! mask, and the shipped configurations. (Each part's own rules are unit-tested beside it.)

use crate::common;

use clipada::pipeline::{InspectOptions, Inspector};
use clipada::sink::display::{Alert, StationScreen, Status};
use clipada::sink::framebuffer::{Framebuffer, Geometry};
use clipada::source::files::read_image;
use clipada::station::plan::StationPlan;
use clipada::verdict::Verdict;
use embedded_graphics::pixelcolor::RgbColor;
use image::RgbImage;

#[test]
fn the_station_screen_matches_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fb");
    let mut fb = Framebuffer::open(&path, Some((160, 120, 32))).unwrap();
    // A frame with a bright square, standing for the overlay of a judged part.
    let frame = RgbImage::from_fn(200, 100, |x, y| {
        if (80..120).contains(&x) && (30..70).contains(&y) {
            image::Rgb([250, 40, 40])
        } else {
            image::Rgb([30, 90, 160])
        }
    });
    let status = Status {
        verdict: Some(Verdict::Fail),
        score: Some(0.412),
        threshold: 0.25,
        latency_ms: 41.5,
        fps: 23.9,
        passed: 12,
        failed: 3,
        errors: 1,
        missed: 0,
        recipe: "bottle-a".try_into().unwrap(),
        alert: Some(Alert::Drift(0.62)),
    };
    StationScreen::default().draw(&mut fb, Some(&frame), &status).unwrap();
    fb.flush().unwrap();
    let geometry = Geometry::packed(160, 120, 32).unwrap();
    let memory = std::fs::read(&path).unwrap();
    let shown = RgbImage::from_fn(160, 120, |x, y| {
        let at = (y as usize * 160 + x as usize) * 4;
        let c = geometry.decode(u32::from_le_bytes(memory[at..at + 4].try_into().unwrap()));
        image::Rgb([c.r(), c.g(), c.b()])
    });
    // Properties that hold whatever the snapshot: the image is scaled to 160x80 and centred in
    // the 82 rows above the status bar, and the bar has the FAIL colour.
    assert_eq!(shown.get_pixel(80, 47).0, [250, 40, 40], "the square, scaled");
    assert_eq!(shown.get_pixel(5, 47).0, [30, 90, 160]);
    assert_eq!(shown.get_pixel(5, 0).0, [0, 0, 0], "letterbox");
    assert_eq!(shown.get_pixel(159, 119).0, [210, 30, 30], "status bar");
    common::assert_snapshot("station_screen.png", &shown);
}

#[test]
fn the_ignore_mask_silences_the_map_where_it_is_black_and_scores_only_what_it_inspects() {
    let frame = read_image(&common::sample("test/scratch/000.png")).unwrap();
    let mut inspector = Inspector::load(&common::tiny_model(), &InspectOptions::default()).unwrap();
    let judged = inspector.inspect(&frame).unwrap();
    let (width, unmasked) = (judged.map.width, judged.map.values.to_vec());
    assert!(unmasked.iter().all(|v| *v > 0.0), "the fixture's map is positive everywhere");
    // Left half black (ignored), right half white.
    let mask = image::GrayImage::from_fn(40, 10, |x, _| image::Luma([if x < 20 { 0 } else { 255 }]));
    inspector.set_ignore_mask(&mask).unwrap();
    let w = inspector.spec().score.image_logits_weight;
    let judged = inspector.inspect(&frame).unwrap();
    for row in judged.map.values.chunks_exact(width) {
        assert!(row[..width / 2 - 1].iter().all(|v| *v == 0.0));
        assert!(row[width / 2 + 1..].iter().all(|v| *v > 0.0));
    }
    // The score is the top-k mean of the inspected half alone, not diluted by the zeros.
    let mut inspected: Vec<f32> =
        unmasked.chunks_exact(width).flat_map(|row| row[width / 2..].iter().copied()).collect();
    inspected.sort_by(|a, b| b.total_cmp(a));
    let k = (0.01 * inspected.len() as f64).ceil() as usize;
    let top_k = inspected[..k].iter().sum::<f32>() / k as f32;
    let logits = common::golden("scratch").raw.image_logits.data;
    let expected = (1.0 - w) * top_k + w / (1.0 + (logits[0] - logits[1]).exp());
    assert!((judged.score - expected).abs() < 1e-4, "{} vs {expected}", judged.score);
}

#[test]
fn a_mask_that_ignores_everything_is_refused() {
    // Regression: an all-black (or inverted) mask made every score 0.0, so every part passed.
    let mut inspector = Inspector::load(&common::tiny_model(), &InspectOptions::default()).unwrap();
    let black = image::GrayImage::new(64, 64);
    let error = inspector.set_ignore_mask(&black).unwrap_err();
    assert!(error.contains("inspected"), "{error}");
    let nearly = image::GrayImage::from_fn(100, 100, |x, y| image::Luma([if x == 0 && y < 50 { 255 } else { 0 }]));
    assert!(inspector.set_ignore_mask(&nearly).is_err(), "0.5 % inspected is too little");
}

#[test]
fn every_shipped_station_config_parses() {
    let mut checked = Vec::new();
    for dir in ["board", "board/examples"] {
        for entry in std::fs::read_dir(common::root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let lines = std::fs::read_to_string(&path).unwrap();
                let networked = lines.lines().any(|l| l == "[modbus]" || l == "[mqtt]");
                let served = lines.lines().any(|l| l == "[http]");
                match StationPlan::load(&path) {
                    Err(e) if networked && !cfg!(feature = "plant") => {
                        assert!(e.to_string().contains("without the `plant` feature"), "{e}")
                    }
                    Err(e) if served && !cfg!(feature = "hmi") => {
                        assert!(e.to_string().contains("without the `hmi` feature"), "{e}")
                    }
                    loaded => drop(loaded.unwrap_or_else(|e| panic!("{e}"))),
                }
                checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
                plant_settings_parse(&path);
            }
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "hmi.toml",
            "jetson-orin-nano.toml",
            "jetson-xavier-nx.toml",
            "line.toml",
            "plant.toml",
            "raspberry-pi-5.toml",
            "replay.toml",
            "station.toml"
        ]
    );
}

/// A board profile's commented plant-network settings, uncommented, parse too (refused by
/// name in a build without them; there are some in every profile under `board/`).
fn plant_settings_parse(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let Some((before, block)) = text.find("# Plant networks").map(|at| text.split_at(at)) else {
        assert!(path.parent().unwrap().ends_with("examples"), "{}: no plant-network settings shown", path.display());
        return;
    };
    let uncommented: String = block
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if !rest.starts_with(' ') && !rest.is_empty() => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    // The board profiles show the operator interface too; the plant example does not.
    let profile = !path.parent().unwrap().ends_with("examples");
    assert!(
        uncommented.contains("[modbus]")
            && uncommented.contains("[mqtt]")
            && (!profile || uncommented.contains("[http]")),
        "{}",
        path.display()
    );
    let copy = tempfile::tempdir().unwrap();
    let edited = copy.path().join(path.file_name().unwrap());
    std::fs::write(&edited, format!("{before}{uncommented}")).unwrap();
    let loaded = StationPlan::load(&edited);
    if cfg!(all(feature = "plant", feature = "hmi")) {
        let plan = loaded.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(plan.plant.modbus.is_some() && plan.plant.mqtt.is_some(), "{}", path.display());
        if profile {
            let http = plan.http.unwrap_or_else(|| panic!("{}: no [http]", path.display()));
            assert_eq!(http.bind, "127.0.0.1:8080");
        }
    } else if cfg!(feature = "plant") && profile {
        let refusal = loaded.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refusal.contains("without the `hmi` feature"), "{refusal}");
    } else {
        // A build without the networks refuses them by name.
        let refusal = loaded.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refusal.contains("`modbus`") && refusal.contains("without the `plant` feature"), "{refusal}");
    }
}
