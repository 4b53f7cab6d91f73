//! The chart: one small bar panel per workload, one bar per target (its median), a
//! whisker from the min to the max over the rounds, tuxfs's bar in the same colour in every
//! panel. SVG, readable in any browser.

use std::path::Path;

use plotters::prelude::*;

use super::report::{Row, num};

/// Panels per line.
const COLUMNS: usize = 4;

fn colour(target: &str) -> RGBColor {
    match target {
        "raw" => RGBColor(150, 150, 150),
        "engine" => RGBColor(255, 160, 60),
        "tuxfs" => RGBColor(220, 60, 30),
        "ext4" => RGBColor(40, 100, 200),
        "fuse2fs" => RGBColor(100, 170, 230),
        "btrfs" => RGBColor(60, 160, 80),
        "xfs" => RGBColor(140, 90, 180),
        _ => RGBColor(90, 90, 90),
    }
}

/// Draws `rows` (as `report::summarize` orders them) into an SVG at `path`.
pub fn draw(rows: &[Row], title: &str, path: &Path) -> Result<(), String> {
    let mut groups: Vec<(&str, Vec<&Row>)> = Vec::new();
    for r in rows {
        match groups.iter_mut().find(|(w, _)| *w == r.workload) {
            Some((_, g)) => g.push(r),
            None => groups.push((&r.workload, vec![r])),
        }
    }
    if groups.is_empty() {
        return Err("no figures to draw".into());
    }
    let lines = groups.len().div_ceil(COLUMNS);
    let size = (1400u32, 60 + 260 * lines as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| format!("chart {}: {e}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(e)?;
    let panels = root.split_evenly((lines, COLUMNS));
    for (panel, (workload, bars)) in panels.iter().zip(&groups) {
        panel_chart(panel, workload, bars).map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn panel_chart(
    panel: &Area<'_>,
    workload: &str,
    bars: &[&Row],
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let top = bars.iter().map(|r| r.max.max(r.median)).fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.2 } else { 1.0 };
    let unit = bars.first().map_or("", |r| r.unit.as_str());
    let better = if matches!(unit, "ms" | "MiB") {
        "lower is better"
    } else {
        "higher is better"
    };
    let names: Vec<&str> = bars.iter().map(|r| r.target.as_str()).collect();
    let mut chart = ChartBuilder::on(panel)
        .caption(format!("{workload} ({unit}, {better})"), ("sans-serif", 14))
        .margin(8)
        .x_label_area_size(22)
        .y_label_area_size(50)
        .build_cartesian_2d((0..bars.len()).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_labels(5)
        .y_label_formatter(&|v| num(*v))
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => names.get(*i).map_or(String::new(), |s| s.to_string()),
            _ => String::new(),
        })
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, r)| {
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), r.median),
            ],
            colour(&r.target).filled(),
        );
        bar.set_margin(0, 0, 6, 6);
        bar
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, r)| {
        PathElement::new(
            vec![
                (SegmentValue::CenterOf(i), r.min),
                (SegmentValue::CenterOf(i), r.max),
            ],
            BLACK.stroke_width(2),
        )
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, r)| {
        Text::new(
            num(r.median),
            (SegmentValue::CenterOf(i), r.max.max(r.median) + top * 0.02),
            ("sans-serif", 11),
        )
    }))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::report::{summarize, tests::synthetic};

    #[test]
    fn draws_an_svg_with_every_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chart.svg");
        draw(&summarize(&synthetic()), "test", &path).expect("draw");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg") || svg.contains("<svg"));
        for needle in ["tuxfs", "ext4", "seq-write (MB/s", "append-fsync-1", "rect"] {
            assert!(svg.contains(needle), "{needle} missing from the chart");
        }
        assert!(draw(&[], "empty", &path).is_err());
    }
}
