//! SVG plots of benchmark runs (`--plot out.svg`), drawn with `plotters` through its SVG
//! backend only: text is left to the SVG viewer's fonts, so no font or image crate is built.

use std::path::Path;

use plotters::prelude::*;

/// One line of a plot: a label for the legend and its points.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Grey and thin: a reference (a paper's numbers), not a measurement of this run.
    pub reference: bool,
}

/// Colours of the measured lines, in order.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// Plot size in pixels.
const SIZE: (u32, u32) = (900, 560);

fn style(i: usize, l: &Line) -> ShapeStyle {
    if l.reference { RGBColor(120, 120, 120).stroke_width(1) } else { PALETTE[i % PALETTE.len()].stroke_width(2) }
}

/// A blank plot to be written to `path`.
fn canvas(path: &Path) -> anyhow::Result<DrawingArea<SVGBackend<'_>, plotters::coord::Shift>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

/// A chart on `root` with a title and room for the left and bottom axes' labels.
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut b = ChartBuilder::on(root);
    b.caption(title, ("sans-serif", 20)).margin(15).x_label_area_size(45).y_label_area_size(70);
    b
}

/// `l` as a drawable line with a dot at each point.
fn series<'a>(l: &Line, s: ShapeStyle) -> LineSeries<SVGBackend<'a>, (f64, f64)> {
    LineSeries::new(l.points.iter().copied(), s).point_size(3)
}

/// `l`'s legend entry: its label beside a short stroke of its style.
fn legend(anno: &mut plotters::chart::SeriesAnno<'_, SVGBackend<'_>>, l: &Line, s: ShapeStyle) {
    anno.label(&l.label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], s));
}

/// Draws the legend and writes the file.
fn finish<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    path: &Path,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()?;
    root.present()?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The smallest and largest y of `lines` (1 and 10 if there are none).
fn y_span<'a>(lines: impl Iterator<Item = &'a Line>) -> (f64, f64) {
    let ys: Vec<f64> = lines.flat_map(|l| l.points.iter().map(|p| p.1)).filter(|y| y.is_finite()).collect();
    if ys.is_empty() {
        return (1.0, 10.0);
    }
    (ys.iter().copied().fold(f64::INFINITY, f64::min), ys.iter().copied().fold(0.0, f64::max))
}

/// Lines of milliseconds (log scale) against a linear x axis starting at 0.
pub fn latency_by(path: &Path, title: &str, x_desc: &str, lines: &[Line]) -> anyhow::Result<()> {
    log_y_by(path, title, x_desc, "latency, ms (log scale)", lines)
}

/// Lines of positive values on a log-scale y axis described by `y_desc`, against a linear x axis
/// starting at 0.
pub fn log_y_by(path: &Path, title: &str, x_desc: &str, y_desc: &str, lines: &[Line]) -> anyhow::Result<()> {
    let x_max = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)).fold(1.0, f64::max);
    let (lo, hi) = y_span(lines.iter());
    let root = canvas(path)?;
    let mut chart =
        frame(&root, title).build_cartesian_2d(0f64..x_max * 1.05, ((lo / 1.5).max(0.01)..hi * 1.5).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;
    for (i, l) in lines.iter().enumerate() {
        let s = style(i, l);
        legend(chart.draw_series(series(l, s))?, l, s);
    }
    finish(&mut chart, &root, path)
}

/// `left` lines on the left y axis and `right` lines on the right one, both linear from 0,
/// against a log₂ x axis.
pub fn two_axes_by_log2(
    path: &Path,
    title: &str,
    x_desc: &str,
    (left_desc, left): (&str, &[Line]),
    (right_desc, right): (&str, &[Line]),
) -> anyhow::Result<()> {
    let xs = || left.iter().chain(right).flat_map(|l| l.points.iter().map(|p| p.0));
    let (x_lo, x_hi) = (xs().fold(f64::INFINITY, f64::min).min(1.0), xs().fold(2.0, f64::max));
    let x_range = || (x_lo..x_hi * 1.1).log_scale().base(2.0);
    let root = canvas(path)?;
    let mut chart = frame(&root, title)
        .right_y_label_area_size(60)
        .build_cartesian_2d(x_range(), 0f64..y_span(left.iter()).1 * 1.15)?
        .set_secondary_coord(x_range(), 0f64..y_span(right.iter()).1 * 1.15);
    let whole = |v: &f64| format!("{v:.0}");
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(left_desc)
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .draw()?;
    chart.configure_secondary_axes().y_desc(right_desc).y_label_formatter(&whole).draw()?;
    for (i, l) in left.iter().enumerate() {
        let s = style(i, l);
        legend(chart.draw_series(series(l, s))?, l, s);
    }
    for (i, l) in right.iter().enumerate() {
        let s = style(left.len() + i, l);
        legend(chart.draw_secondary_series(series(l, s))?, l, s);
    }
    finish(&mut chart, &root, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_svg_with_their_labels() {
        let dir = tempfile::tempdir().expect("temp dir");
        let line = |label: &str, reference| Line {
            label: label.into(),
            points: vec![(1.0, 0.9), (2.0, 2.5), (50.0, 7.0)],
            reference,
        };
        let one = dir.path().join("latency.svg");
        latency_by(&one, "latency", "participants", &[line("p50 mine", false), line("paper", true)]).expect("plot");
        let two = dir.path().join("two.svg");
        two_axes_by_log2(&two, "bank", "clients", ("ops/s", &[line("tput", false)]), ("ms", &[line("p99", false)]))
            .expect("plot");
        for (path, labels) in [(one, ["p50 mine", "paper", "participants"]), (two, ["tput", "p99", "clients"])] {
            let svg = std::fs::read_to_string(&path).expect("written");
            assert!(svg.starts_with("<svg"), "not an SVG: {}", &svg[..svg.len().min(80)]);
            for l in labels {
                assert!(svg.contains(l), "{} lacks the label {l:?}", path.display());
            }
        }
    }
}
