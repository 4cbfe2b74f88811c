//! The approximation report's plot (`cuattn approx-report --plot FILE.png`): each method's
//! relative error against its FLOPs (log scale), one line and marker shape a method through its
//! lengths, each point labelled with its length. Drawn with plotters' bitmap backend; the text
//! in Noto Sans Regular (embedded, Apache-2.0) through ab_glyph, so no system font library is
//! needed.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::register_font;

use super::report::ApproxReport;
use crate::error::{Error, Result};

/// Width and height of the PNG in pixels.
pub const PLOT_SIZE: (u32, u32) = (1280, 800);
/// Distinct colours for the series, in order (Tableau 10).
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// Pixels right of the chart that hold the legend.
const LEGEND_WIDTH: u32 = 250;
/// The family name the embedded font is registered under (plotters' sans-serif).
const FONT: &str = "sans-serif";

/// Registers the embedded font once; plotters' ab_glyph text has no other font.
fn font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font(FONT, FontStyle::Normal, ttf_noto_sans::REGULAR).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Internal(
            "the embedded Noto Sans font did not load".into(),
        ))
    }
}

/// `1k`, `16k`, or `300`: a length as the points' labels write it.
fn length_label(tokens: usize) -> String {
    if tokens >= 1024 && tokens.is_multiple_of(1024) {
        format!("{}k", tokens / 1024)
    } else {
        tokens.to_string()
    }
}

/// Series `n`'s marker at the origin of an element: a filled circle, a filled triangle, a cross
/// or a hollow circle in turn, so that series of close colours still differ.
fn marker<DB: DrawingBackend>(n: usize, color: RGBColor) -> DynElement<'static, DB, (i32, i32)> {
    match n % 4 {
        0 => Circle::new((0, 0), 6, color.filled()).into_dyn(),
        1 => TriangleMarker::new((0, 0), 8, color.filled()).into_dyn(),
        2 => Cross::new((0, 0), 6, color.stroke_width(3)).into_dyn(),
        _ => Circle::new((0, 0), 6, color.stroke_width(2)).into_dyn(),
    }
}

/// `200M`, `1.5G`, `3T`: FLOPs with an SI prefix.
fn flops_label(x: f64) -> String {
    let (value, prefix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(unit, _)| x >= *unit)
        .map_or((x, ""), |(unit, p)| (x / unit, p));
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}{prefix}")
    } else {
        format!("{rounded:.1}{prefix}")
    }
}

/// Draws `report`'s rows that ran (error against FLOPs) into a PNG at `path`.
pub fn plot(report: &ApproxReport, path: &Path) -> Result<()> {
    font()?;
    let io = |e: &dyn std::fmt::Display| {
        Error::file(path.display(), format!("cannot draw the plot: {e}"))
    };
    let rows: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.error.is_none() && r.flops > 0.0 && r.rel_error.is_finite())
        .collect();
    if rows.is_empty() {
        return Err(Error::invalid("report", "no row ran: nothing to plot"));
    }
    let mut series: Vec<&str> = Vec::new();
    for r in &rows {
        if !series.contains(&r.series.as_str()) {
            series.push(&r.series);
        }
    }
    let (min_flops, max_flops) = rows.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
        (lo.min(r.flops), hi.max(r.flops))
    });
    let max_error = rows.iter().map(|r| r.rel_error).fold(0.0f64, f64::max);
    let y_top = if max_error > 0.0 {
        max_error * 1.15
    } else {
        1.0
    };

    // Whole decades, so that the log axis has its labelled powers of ten at both ends.
    let x_low = 10f64.powf(min_flops.log10().floor());
    let x_high = 10f64.powf(max_flops.log10().ceil()).max(10.0 * x_low);

    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| io(&e))?;
    // The legend in a column of its own, right of the chart, where no point can hide it.
    let (plot_area, legend_area) = root.split_horizontally(PLOT_SIZE.0 - LEGEND_WIDTH);
    let lengths: Vec<String> = {
        let mut l: Vec<usize> = rows.iter().map(|r| r.seqlen_k).collect();
        l.sort_unstable();
        l.dedup();
        l.into_iter().map(length_label).collect()
    };
    let caption = format!(
        "Attention approximations: error against cost (non-causal, {} tokens, {})",
        lengths.join(", "),
        report.device
    );
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(caption, (FONT, 26))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d((x_low..x_high).log_scale(), 0.0..y_top)
        .map_err(|e| io(&e))?;
    chart
        .configure_mesh()
        .x_desc("FLOPs (log scale)")
        .y_desc("relative error ||o - o_exact|| / ||o_exact||")
        .x_label_formatter(&|x| flops_label(*x))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 20))
        .draw()
        .map_err(|e| io(&e))?;
    for (n, name) in series.iter().enumerate() {
        let color = COLORS[n % COLORS.len()];
        let mut points: Vec<(f64, f64, usize)> = rows
            .iter()
            .filter(|r| r.series == *name)
            .map(|r| (r.flops, r.rel_error, r.seqlen_k))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let line = points.iter().map(|&(x, y, _)| (x, y));
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(|e| io(&e))?;
        for &(x, y, tokens) in &points {
            let label = Text::new(length_label(tokens), (7, -18), (FONT, 14).into_font());
            chart
                .plotting_area()
                .draw(&(EmptyElement::at((x, y)) + marker(n, color) + label))
                .map_err(|e| io(&e))?;
        }
        // The legend's entry: the line, the marker, the name.
        let y = 90 + 32 * n as i32;
        legend_area
            .draw(&PathElement::new(
                vec![(10, y), (50, y)],
                color.stroke_width(2),
            ))
            .map_err(|e| io(&e))?;
        legend_area
            .draw(&(EmptyElement::at((30, y)) + marker(n, color)))
            .map_err(|e| io(&e))?;
        legend_area
            .draw(&Text::new(
                name.to_string(),
                (60, y - 9),
                (FONT, 17).into_font(),
            ))
            .map_err(|e| io(&e))?;
    }
    legend_area
        .draw(&Text::new(
            "method (points: tokens)",
            (10, 50),
            (FONT, 18).into_font(),
        ))
        .map_err(|e| io(&e))?;
    root.present().map_err(|e| io(&e))?;
    Ok(())
}
