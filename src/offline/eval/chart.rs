//! The PNG chart `shoprank eval --chart` writes: NDCG@10 and Recall@10 per
//! method (left), the head's training curve — train loss and
//! inner-validation NDCG@10 per epoch — from its spec (middle), and, when
//! the model was evaluated, its reliability diagram: mean predicted against
//! observed purchase rate per equal-mass bin, over all pairs and over the
//! top-10 pairs, on log axes (right).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::calibration::{CalibrationReport, ReliabilityBin};
use super::EvalReport;
use crate::model::bundle::EpochLog;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ChartError {
    #[error("no TrueType font found for chart text (looked in {0}); install fonts-dejavu-core")]
    NoFont(String),
    #[error("drawing the chart: {0}")]
    Draw(String),
}

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
];

fn load_font() -> Result<(), ChartError> {
    for path in FONT_PATHS {
        if let Ok(bytes) = std::fs::read(path) {
            // plotters keeps the font for the process: leak one copy.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
    }
    Err(ChartError::NoFont(FONT_PATHS.join(", ")))
}

fn draw_error(e: impl std::fmt::Display) -> ChartError {
    ChartError::Draw(e.to_string())
}

pub(crate) fn write_chart(path: &Path, report: &EvalReport, training: &[EpochLog]) -> Result<(), ChartError> {
    load_font()?;
    let width = if report.calibration.is_some() { 1700 } else { 1200 };
    let root = BitMapBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let (left, rest) = root.split_horizontally(640);
    let (right, reliability) = rest.split_horizontally(560);
    if let Some(calibration) = &report.calibration {
        draw_reliability(&reliability, calibration)?;
    }

    let methods: Vec<(&String, &crate::offline::ranking_metrics::RankingMetrics)> =
        { super::method_order().filter_map(|m| report.methods.get_key_value(m)).collect() };
    let top = methods.iter().map(|(_, m)| m.ndcg10.max(m.recall10)).fold(0.0, f64::max) * 1.15 + 1e-3;
    let mut chart = ChartBuilder::on(&left)
        .caption(
            format!("{} test users, {} items", report.counts.test_users, report.counts.catalog_items),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5..methods.len() as f64 - 0.5, 0.0..top)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(methods.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                methods.get(i as usize).map(|(n, _)| n.to_string()).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("metric value")
        .draw()
        .map_err(draw_error)?;
    for (series, colour, left_edge) in [("NDCG@10", BLUE, -0.38), ("Recall@10", RED, 0.02)] {
        let bars = methods.iter().enumerate().map(|(i, (_, m))| {
            let value = if series == "NDCG@10" { m.ndcg10 } else { m.recall10 };
            let x = i as f64 + left_edge;
            Rectangle::new([(x, 0.0), (x + 0.36, value)], colour.mix(0.7).filled())
        });
        chart
            .draw_series(bars)
            .map_err(draw_error)?
            .label(series)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.mix(0.7).filled()));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(draw_error)?;

    // The selection epochs of each trained MLP (an ensemble logs one run per
    // member, each restarting at epoch 1); refit epochs carry no validation.
    let epochs: Vec<&EpochLog> = training.iter().filter(|e| e.val_ndcg10.is_some()).collect();
    let mut runs: Vec<Vec<&EpochLog>> = Vec::new();
    for &e in &epochs {
        match runs.last_mut() {
            Some(run) if e.epoch > run.last().map_or(0, |last| last.epoch) => run.push(e),
            _ => runs.push(vec![e]),
        }
    }
    let last_epoch = epochs.iter().map(|e| e.epoch).max().unwrap_or(1) as f64;
    let max_loss = epochs.iter().map(|e| e.loss).fold(0.0, f64::max) * 1.1 + 1e-3;
    let max_ndcg = epochs.iter().filter_map(|e| e.val_ndcg10).fold(0.0, f64::max) * 1.1 + 1e-3;
    let caption = match runs.len() {
        0 | 1 => "training: loss and inner-validation NDCG@10".to_string(),
        n => format!("training ({n} members): loss and inner-validation NDCG@10"),
    };
    let mut chart = ChartBuilder::on(&right)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .right_y_label_area_size(50)
        .build_cartesian_2d(0.5..last_epoch + 0.5, 0.0..max_loss)
        .map_err(draw_error)?
        .set_secondary_coord(0.5..last_epoch + 0.5, 0.0..max_ndcg);
    chart.configure_mesh().x_desc("epoch").y_desc("train loss").draw().map_err(draw_error)?;
    chart.configure_secondary_axes().y_desc("NDCG@10").draw().map_err(draw_error)?;
    for (i, run) in runs.iter().enumerate() {
        let loss = chart
            .draw_series(LineSeries::new(run.iter().map(|e| (e.epoch as f64, e.loss)), BLUE.stroke_width(2)))
            .map_err(draw_error)?;
        if i == 0 {
            loss.label("train loss").legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], BLUE));
        }
        let ndcg = chart
            .draw_secondary_series(LineSeries::new(
                run.iter().filter_map(|e| e.val_ndcg10.map(|n| (e.epoch as f64, n))),
                RED.stroke_width(2),
            ))
            .map_err(draw_error)?;
        if i == 0 {
            ndcg.label("inner-validation NDCG@10").legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], RED));
        }
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(draw_error)?;
    root.present().map_err(draw_error)
}

/// Predicted against observed rate per bin, log-log, with the diagonal a
/// calibrated model's bins lie on.
fn draw_reliability(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    report: &CalibrationReport,
) -> Result<(), ChartError> {
    let points = |bins: &[ReliabilityBin]| -> Vec<(f64, f64)> {
        bins.iter()
            .filter(|b| b.observed > 0.0 && b.mean_predicted > 0.0)
            .map(|b| (b.mean_predicted, b.observed))
            .collect()
    };
    let (all, top) = (points(&report.bins), points(&report.top10_bins));
    let values = all.iter().chain(&top).flat_map(|&(x, y)| [x, y]);
    let low = values.clone().fold(1.0f64, f64::min).max(1e-6) / 2.0;
    let high = values.fold(low * 4.0, f64::max).min(1.0) * 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("reliability (ECE {:.4})", report.ece), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((low..high).log_scale(), (low..high).log_scale())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("mean predicted probability")
        .y_desc("observed purchase rate")
        .x_label_formatter(&|x| format!("{x:.0e}"))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .draw()
        .map_err(draw_error)?;
    chart.draw_series(LineSeries::new([(low, low), (high, high)], BLACK.mix(0.4))).map_err(draw_error)?;
    for (points, colour, label) in [(all, BLUE, "all pairs, 20 bins"), (top, RED, "top 10, 5 bins")] {
        chart
            .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)))
            .map_err(draw_error)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], colour));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled()))).map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(draw_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::offline::eval::Counts;
    use crate::offline::ranking_metrics::RankingMetrics;

    fn calibration_fixture() -> CalibrationReport {
        let mut pairs = crate::offline::eval::calibration::CalibrationPairs::default();
        let scored: Vec<(f32, bool)> = (0..400).map(|i| (0.001 + i as f32 / 1000.0, i % 9 == 0)).collect();
        pairs.add_user(scored.iter().copied(), scored[390..].iter().copied());
        pairs.report().unwrap()
    }

    #[test]
    fn draws_a_png_for_an_ensemble_log() {
        let metrics = |x: f64| RankingMetrics { ndcg10: x, recall10: x, hit10: x, mrr: x, auc: 0.5 + x };
        let report = EvalReport {
            protocol: "test".into(),
            counts: Counts { test_users: 3, catalog_items: 7, history_events: 20, sampled_from: None },
            methods: [("random".to_string(), metrics(0.01)), ("model".to_string(), metrics(0.1))].into(),
            retrieval: None,
            revenue: BTreeMap::new(),
            calibration: Some(calibration_fixture()),
        };
        // Two members, each selection run followed by a refit epoch.
        let log = |epoch, loss, val| EpochLog { epoch, loss, val_ndcg10: val };
        let training = [
            log(1, 0.31, Some(0.10)),
            log(2, 0.30, Some(0.11)),
            log(1, 0.30, None),
            log(1, 0.32, Some(0.09)),
            log(2, 0.29, Some(0.10)),
            log(1, 0.31, None),
        ];
        let path = std::env::temp_dir().join(format!("shoprank-chart-{}.png", std::process::id()));
        write_chart(&path, &report, &training).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 1000, "{} bytes", bytes.len());
    }
}
