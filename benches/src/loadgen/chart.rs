//! The run's chart, drawn with `plotters` as SVG and PNG: throughput per
//! second (top) and p99 batch latency per second (bottom) over the run, on
//! a shared time axis, with the run's mean throughput and overall p99 as
//! dashed reference lines.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use super::report::{format_ms, thousands, Report};
use super::stats::SecondSummary;

/// The chart's size in pixels.
pub const SIZE: (u32, u32) = (960, 640);
/// Height of the title block above the panels.
const HEADER: u32 = 84;
/// Above this many seconds, points are not marked.
const MARKED_POINTS_MAX: usize = 120;
const THROUGHPUT_COLOUR: RGBColor = RGBColor(0x1f, 0x5f, 0xa8);
const LATENCY_COLOUR: RGBColor = RGBColor(0xc0, 0x39, 0x2b);
const GRID_COLOUR: RGBColor = RGBColor(0xe3, 0xe3, 0xe3);
const NOTE_COLOUR: RGBColor = RGBColor(0x44, 0x44, 0x44);
/// The font family every text of the chart names.
const FAMILY: &str = "sans-serif";
/// Where the chart's font is looked for, after `COFFER_CHART_FONT`:
/// Debian's `fonts-dejavu-core` (which set-up installs), then others.
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Loads the chart's font once: text is measured with it for the layout
/// (both forms) and drawn with it (PNG). An error names the files tried.
fn font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let given = std::env::var_os("COFFER_CHART_FONT").map(PathBuf::from);
        let candidates: Vec<PathBuf> = given.into_iter().chain(FONT_PATHS.iter().map(PathBuf::from)).collect();
        for path in &candidates {
            let Ok(bytes) = std::fs::read(path) else { continue };
            // The font table keeps the bytes for the process's life.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return register_font(FAMILY, FontStyle::Normal, bytes)
                .map_err(|_| format!("{}: not a TrueType or OpenType font", path.display()));
        }
        let tried = candidates.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", ");
        Err(format!(
            "no font for the chart's text: none of {tried} exists (Debian: apt-get install fonts-dejavu-core, or set \
             COFFER_CHART_FONT to a .ttf file)"
        ))
    })
    .clone()
}

/// A round step near `max / 5` (1, 2 or 5 × 10^k) and the axis top it gives.
pub fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let magnitude = 10_f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|step| *step >= raw).unwrap_or(raw);
    (step, (max / step).ceil() * step)
}

/// The chart of `report` as SVG text.
pub fn svg(report: &Report) -> Result<String, String> {
    font()?;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        draw(&root, report)?;
        root.present().map_err(|error| error.to_string())?;
    }
    Ok(text)
}

/// Writes the chart of `report` as a PNG image to `path`.
pub fn png(report: &Report, path: &Path) -> Result<(), String> {
    font()?;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    draw(&root, report)?;
    root.present().map_err(|error| format!("{}: {error}", path.display()))
}

/// One panel's series and axis.
struct Panel<'a> {
    name: &'a str,
    points: Vec<Option<(f64, f64)>>,
    colour: RGBColor,
    reference: f64,
    reference_label: String,
    y_label: &'a dyn Fn(&f64) -> String,
    x_labels: bool,
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, report: &Report) -> Result<(), String> {
    let failed = |error: DrawingAreaErrorKind<DB::ErrorType>| error.to_string();
    root.fill(&WHITE).map_err(failed)?;
    let (header, body) = root.split_vertically(HEADER);
    for (line, (text, size, colour)) in title(report).into_iter().enumerate() {
        let y = if line == 0 { 16 } else { 32 + 16 * line as i32 };
        let style = (FAMILY, size).into_font().color(&colour);
        header.draw(&Text::new(text, (100, y), style)).map_err(failed)?;
    }
    let seconds = &report.per_second;
    let x_max = (seconds.len() as f64).max(1.0);
    let throughput_label = |value: &f64| short_number(*value);
    let latency_max = seconds.iter().filter_map(|second| second.p99_ms).fold(report.latency_ms.p99_ms, f64::max);
    let latency_label = move |&value: &f64| {
        if nice_axis(latency_max).0 < 1.0 {
            format!("{value:.1}")
        } else {
            thousands(value.round() as u64)
        }
    };
    let panels = [
        Panel {
            name: "transfers committed / s",
            points: seconds.iter().map(|second| Some((second.second as f64 + 0.5, second.transfers as f64))).collect(),
            colour: THROUGHPUT_COLOUR,
            reference: report.throughput_per_s,
            reference_label: format!("mean {} /s", thousands(report.throughput_per_s.round() as u64)),
            y_label: &throughput_label,
            x_labels: false,
        },
        Panel {
            name: "p99 batch latency (ms)",
            points: seconds.iter().map(p99_point).collect(),
            colour: LATENCY_COLOUR,
            reference: report.latency_ms.p99_ms,
            reference_label: format!("run p99 {}", format_ms(report.latency_ms.p99_ms)),
            y_label: &latency_label,
            x_labels: true,
        },
    ];
    let areas = body.split_evenly((2, 1));
    for (area, panel) in areas.iter().zip(&panels) {
        draw_panel(area, panel, x_max, seconds.len() <= MARKED_POINTS_MAX).map_err(failed)?;
    }
    Ok(())
}

/// The heading and two lines on the run: (text, size, colour).
fn title(report: &Report) -> [(String, u32, RGBColor); 3] {
    let config = &report.config;
    let mode = match config.rate {
        Some(rate) => format!("open loop at {} /s", thousands(rate)),
        None => "closed loop".into(),
    };
    let heading = format!(
        "coffer bench: {} transfers/s committed, p99 {}, {} distribution",
        thousands(report.throughput_per_s.round() as u64),
        format_ms(report.latency_ms.p99_ms),
        config.distribution.name()
    );
    let run = format!(
        "{} transfers committed in batches of {}, {} clients, {mode}, seed {}; validation {}",
        thousands(report.load.transfers_committed),
        thousands(config.batch_size as u64),
        config.clients,
        config.seed,
        if report.validation.ok { "ok" } else { "FAILED" },
    );
    let workload = format!(
        "mix {}; {} ledger(s) × {} accounts; {} cluster; {} cpus, load average {}",
        config.mix,
        config.ledgers,
        thousands(u64::from(config.accounts_per_ledger)),
        report.cluster.kind,
        report.cpus,
        report.load_average.as_deref().unwrap_or("unknown"),
    );
    [(heading, 18, BLACK), (run, 12, NOTE_COLOUR), (workload, 12, NOTE_COLOUR)]
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel<'_>,
    x_max: f64,
    mark: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let values = panel.points.iter().flatten().map(|&(_, y)| y);
    let (_, y_top) = nice_axis(values.fold(panel.reference, f64::max));
    let mut chart = ChartBuilder::on(area)
        .margin_top(12)
        .margin_left(12)
        .margin_right(30)
        .x_label_area_size(if panel.x_labels { 44 } else { 8 })
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..x_max, 0.0..y_top)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .max_light_lines(0)
        .bold_line_style(GRID_COLOUR)
        .y_labels(6)
        .y_label_formatter(panel.y_label)
        .y_desc(panel.name)
        .axis_desc_style((FAMILY, 13));
    // Ticks on whole seconds only: a short run gets one per second.
    let whole = |second: &f64| {
        if (second - second.round()).abs() < 1e-9 {
            format!("{second:.0}")
        } else {
            String::new()
        }
    };
    mesh.x_labels((x_max as usize + 1).min(11));
    if panel.x_labels {
        mesh.x_label_formatter(&whole).x_desc("time since the load started (s)");
    } else {
        mesh.x_label_formatter(&|_| String::new());
    }
    mesh.draw()?;
    // A line per run of seconds with an answer: a gap breaks it.
    for run in panel.points.split(Option::is_none) {
        let line: Vec<(f64, f64)> = run.iter().flatten().copied().collect();
        if line.len() > 1 {
            chart.draw_series(LineSeries::new(line, panel.colour.stroke_width(2)))?;
        }
    }
    if mark || panel.points.iter().flatten().count() == 1 {
        let marks = panel.points.iter().flatten().map(|&point| Circle::new(point, 3, panel.colour.filled()));
        chart.draw_series(marks)?;
    }
    if panel.reference.is_finite() && panel.reference > 0.0 {
        let y = panel.reference.min(y_top);
        let dashed = DashedLineSeries::new([(0.0, y), (x_max, y)], 6, 4, panel.colour.mix(0.7).stroke_width(1));
        chart.draw_series(dashed)?;
        let style = (FAMILY, 12).into_font().color(&panel.colour).pos(Pos::new(HPos::Right, VPos::Bottom));
        chart.draw_series(std::iter::once(Text::new(panel.reference_label.clone(), (x_max * 0.99, y), style)))?;
    }
    Ok(())
}

fn p99_point(second: &SecondSummary) -> Option<(f64, f64)> {
    second.p99_ms.map(|p99| (second.second as f64 + 0.5, p99))
}

/// `12000` as `12k`, `1500000` as `1.5M`.
pub fn short_number(value: f64) -> String {
    let trim = |text: String| text.trim_end_matches('0').trim_end_matches('.').to_owned();
    if value >= 1_000_000.0 {
        format!("{}M", trim(format!("{:.2}", value / 1_000_000.0)))
    } else if value >= 1_000.0 {
        format!("{}k", trim(format!("{:.1}", value / 1_000.0)))
    } else {
        trim(format!("{value:.1}"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::loadgen::options::DistributionConfig;
    use crate::loadgen::report::{ClusterReport, ConfigReport, Phases};
    use crate::loadgen::runner::LoadSummary;
    use crate::loadgen::stats::Percentiles;
    use crate::loadgen::validate::Validation;

    /// Checks that `svg` is well-formed XML as far as a chart needs: tags
    /// nest and close, attributes are quoted, text has no bare `<` or `&`.
    pub(crate) fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            let unescaped = text.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "").replace("&quot;", "");
            assert!(!unescaped.contains('&') && !unescaped.contains('>'), "bad text {text:?}");
            let close = rest[open..].find('>').expect("every tag closes") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "a tag inside a tag: {tag:?}");
            assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in {tag:?}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name.trim()), "closing {name}");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().expect("a tag has a name");
                stack.push(name.to_owned());
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        assert!(rest.trim().is_empty());
        assert!(svg.starts_with("<svg "));
    }

    pub(crate) fn report(seconds: u64) -> Report {
        let per_second = (0..seconds)
            .map(|second| SecondSummary {
                second,
                transfers: 20_000 + second * 100,
                batches: 3,
                p99_ms: (second != 2).then_some(40.0 + second as f64),
                max_ms: Some(60.0),
                rss_kib: vec![Some(100_000)],
            })
            .collect();
        Report {
            command: "coffer bench".into(),
            config: ConfigReport {
                mode: "closed_loop",
                accounts_per_ledger: 10_000,
                ledgers: 1,
                batch_size: 8_189,
                clients: 4,
                distribution: DistributionConfig::Hot { hot: 10 },
                mix: "expenditure=40,receipt=30,cash=20,two-phase=10".into(),
                transfers: Some(1_000_000),
                rate: None,
                duration_s: None,
                seed: 1,
                sample: 1_000,
            },
            cluster: ClusterReport { kind: "local", addresses: vec!["127.0.0.1:1".into()], tls: true },
            cpus: 2,
            load_average: Some("1.00 1.00 1.00".into()),
            phases: Phases::default(),
            load: LoadSummary { transfers_committed: 1_000_000, ..LoadSummary::default() },
            throughput_per_s: 21_000.0,
            latency_ms: Percentiles { p99_ms: 45.0, ..Percentiles::default() },
            processes: Vec::new(),
            per_second,
            validation: Validation { ok: true, ..Validation::default() },
        }
    }

    /// The SVG elements drawn in `colour` with this stroke width.
    fn strokes(svg: &str, colour: RGBColor, width: u32) -> usize {
        let colour = format!("stroke=\"#{:02X}{:02X}{:02X}\"", colour.0, colour.1, colour.2);
        let width = format!("stroke-width=\"{width}\"");
        svg.lines().filter(|line| line.contains("<polyline") && line.contains(&colour) && line.contains(&width)).count()
    }

    #[test]
    fn the_chart_is_well_formed_with_titles_axes_and_both_series() {
        for seconds in [0, 1, 10, 500] {
            let svg = svg(&report(seconds)).unwrap();
            assert_well_formed(&svg);
            assert!(svg.contains("coffer bench: 21,000 transfers/s committed"), "{svg}");
            assert!(svg.contains("transfers committed / s") && svg.contains("p99 batch latency (ms)"));
            assert!(svg.contains("time since the load started (s)"));
            assert!(svg.contains("mean 21,000 /s") && svg.contains("run p99 45.0 ms"), "{svg}");
            if seconds >= 10 {
                assert_eq!(strokes(&svg, THROUGHPUT_COLOUR, 2), 1, "{svg}");
                // Second 2 has no p99: the latency line breaks into two.
                assert_eq!(strokes(&svg, LATENCY_COLOUR, 2), 2, "{svg}");
            }
        }
    }

    #[test]
    fn the_png_is_an_image_of_the_charts_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.png");
        png(&report(30), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!((be(16), be(20)), SIZE, "the IHDR's width and height");
        // Not a blank page: the panels, lines and text are drawn.
        assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
    }

    #[test]
    fn axes_get_round_steps() {
        assert_eq!(nice_axis(23_000.0), (5_000.0, 25_000.0));
        assert_eq!(nice_axis(100.0), (20.0, 100.0));
        assert_eq!(nice_axis(0.0), (0.2, 1.0));
        assert_eq!(nice_axis(7.0), (2.0, 8.0));
        assert_eq!(short_number(12_000.0), "12k");
        assert_eq!(short_number(1_500_000.0), "1.5M");
        assert_eq!(short_number(2_500.0), "2.5k");
        assert_eq!(short_number(40.0), "40");
    }
}
