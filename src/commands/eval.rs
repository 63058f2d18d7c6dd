//! `clipada eval`: metrics on a dataset in the MVTec AD layout.

use std::io::Write;

use crate::eval::{evaluate, EvalOptions, EvalReport, Metrics};
use crate::progress::Progress;

/// Runs the evaluation; prints a table, or one JSON object with `json`; each image done goes
/// to `progress`.
pub fn eval(
    options: &EvalOptions,
    json: bool,
    progress: &mut dyn Progress,
    out: &mut dyn Write,
) -> anyhow::Result<EvalReport> {
    let report = evaluate(options, progress)?;
    if json {
        serde_json::to_writer(&mut *out, &report)?;
        writeln!(out)?;
        return Ok(report);
    }
    writeln!(
        out,
        "{:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "category", "img_auc", "img_ap", "img_f1", "pix_auc", "pix_ap", "aupro", "ms/image"
    )?;
    let row = |out: &mut dyn Write, name: &str, m: &Metrics| {
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        writeln!(
            out,
            "{name:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
            f(m.image_auroc),
            f(m.image_ap),
            f(m.image_f1_max),
            f(m.pixel_auroc),
            f(m.pixel_ap),
            f(m.aupro),
            m.ms_per_image.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
        )
    };
    for (name, metrics) in &report.categories {
        row(out, name, metrics)?;
    }
    row(out, "mean", &report.mean)?;
    Ok(report)
}
