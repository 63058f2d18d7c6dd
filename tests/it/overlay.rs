//! Overlays: checked property by property (banner, outline, heat), and against a snapshot that
//! was inspected by eye when it was made (regenerate with UPDATE_SNAPSHOTS=1, then look at it).

use crate::common;

use clipada::pipeline::{InspectOptions, Inspector};
use clipada::sink::overlay::{banner_colour, OverlayRenderer, BANNER_HEIGHT, OUTLINE_COLOUR};
use clipada::source::files::read_image;
use clipada::verdict::{Threshold, ThresholdSource, Verdict};
use embedded_graphics::pixelcolor::RgbColor;
use image::RgbImage;

/// Renders the scratch sample with a threshold at the map's upper quartile, so that there is
/// a region to outline whatever the random fixture weights make of the scratch.
fn render_scratch() -> (RgbImage, RgbImage, Vec<f32>, f32, Verdict) {
    let frame = read_image(&common::sample("test/scratch/000.png")).unwrap();
    let mut inspector = Inspector::load(&common::tiny_model(), &InspectOptions::default()).unwrap();
    let judged = inspector.inspect(&frame).unwrap();
    let mut sorted = judged.map.values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let threshold = sorted[sorted.len() * 3 / 4];
    let verdict = Verdict::judge(judged.score, &Threshold::new(threshold, ThresholdSource::Operator, 1.0).unwrap());
    let overlay =
        OverlayRenderer::default().render(&frame, Some((judged.map, judged.score)), threshold, verdict).clone();
    (frame, overlay, judged.map.values.to_vec(), threshold, verdict)
}

#[test]
fn banner_has_the_verdict_colour_across_the_top() {
    let (_, overlay, _, _, verdict) = render_scratch();
    let colour = banner_colour(verdict);
    let expected = [colour.r(), colour.g(), colour.b()];
    let banner_pixels = (0..overlay.width()).flat_map(|x| (0..BANNER_HEIGHT).map(move |y| (x, y)));
    let (coloured, total) =
        banner_pixels.fold((0, 0), |(c, t), (x, y)| (c + usize::from(overlay.get_pixel(x, y).0 == expected), t + 1));
    assert!(coloured * 10 > total * 7, "banner mostly verdict colour: {coloured}/{total}");
    assert!(coloured < total, "banner has text on it");
}

#[test]
fn outline_is_drawn_and_heat_map_changes_the_frame() {
    let (frame, overlay, _, _, _) = render_scratch();
    let white = [OUTLINE_COLOUR.r(), OUTLINE_COLOUR.g(), OUTLINE_COLOUR.b()];
    let below_banner = |(_, y, _): &(u32, u32, &image::Rgb<u8>)| *y >= BANNER_HEIGHT;
    let outline = overlay.enumerate_pixels().filter(below_banner).filter(|(_, _, p)| p.0 == white).count();
    assert!(outline > 20, "outline pixels: {outline}");
    let changed =
        overlay.enumerate_pixels().filter(below_banner).filter(|(x, y, p)| p.0 != frame.get_pixel(*x, *y).0).count();
    let area = (overlay.width() * (overlay.height() - BANNER_HEIGHT)) as usize;
    assert!(changed * 10 > area * 9, "heat map blended over the frame: {changed}/{area}");
}

#[test]
fn overlay_matches_the_reviewed_snapshot() {
    let (_, overlay, _, _, _) = render_scratch();
    common::assert_snapshot("overlay_scratch.png", &overlay);
}
