//! The run's chart, written by hand as SVG: throughput per second (top)
//! and p99 batch latency per second (bottom) over the run, on a shared
//! time axis, with the run's mean throughput and overall p99 as dashed
//! reference lines.

use std::fmt::Write as _;

use super::report::{format_ms, thousands, Report};
use super::stats::SecondSummary;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 640.0;
const LEFT: f64 = 100.0;
const RIGHT: f64 = 30.0;
/// Top and height of the throughput panel.
const TOP_PANEL: (f64, f64) = (100.0, 200.0);
/// Top and height of the latency panel.
const BOTTOM_PANEL: (f64, f64) = (360.0, 200.0);
/// Ticks per axis, roughly.
const TICKS: f64 = 5.0;
/// Above this many seconds, points are not marked.
const MARKED_POINTS_MAX: usize = 120;
const THROUGHPUT_COLOUR: &str = "#1f5fa8";
const LATENCY_COLOUR: &str = "#c0392b";

/// Escapes text for SVG.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A round step near `span / TICKS` (1, 2 or 5 × 10^k) and the axis top it gives.
pub fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let raw = max / TICKS;
    let magnitude = 10_f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|step| *step >= raw).unwrap_or(raw);
    (step, (max / step).ceil() * step)
}

/// One panel: a plot area with a y axis.
struct Panel {
    top: f64,
    height: f64,
    y_max: f64,
    x_max: f64,
}

impl Panel {
    fn x(&self, seconds: f64) -> f64 {
        LEFT + seconds / self.x_max * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, value: f64) -> f64 {
        self.top + self.height - value / self.y_max * self.height
    }
}

/// The chart of `report`.
pub fn chart(report: &Report) -> String {
    let seconds = &report.per_second;
    let x_max = (seconds.len() as f64).max(1.0);
    let throughput_max = seconds.iter().map(|second| second.transfers as f64).fold(report.throughput_per_s, f64::max);
    let latency_max = seconds.iter().filter_map(|second| second.p99_ms).fold(report.latency_ms.p99_ms, f64::max);
    let (throughput_step, throughput_top) = nice_axis(throughput_max);
    let (latency_step, latency_top) = nice_axis(latency_max);
    let top = Panel { top: TOP_PANEL.0, height: TOP_PANEL.1, y_max: throughput_top, x_max };
    let bottom = Panel { top: BOTTOM_PANEL.0, height: BOTTOM_PANEL.1, y_max: latency_top, x_max };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    title(&mut svg, report);

    let throughput_label = |value: f64| short_number(value);
    axes(&mut svg, &top, throughput_step, &throughput_label, "transfers committed / s", x_max, false);
    let points: Vec<Option<(f64, f64)>> =
        seconds.iter().map(|second| Some((second.second as f64 + 0.5, second.transfers as f64))).collect();
    series(&mut svg, &top, &points, THROUGHPUT_COLOUR, seconds.len() <= MARKED_POINTS_MAX);
    let mean = format!("mean {} /s", thousands(report.throughput_per_s.round() as u64));
    reference(&mut svg, &top, report.throughput_per_s, THROUGHPUT_COLOUR, &mean);

    let latency_label =
        |value: f64| if latency_step < 1.0 { format!("{value:.1}") } else { thousands(value.round() as u64) };
    axes(&mut svg, &bottom, latency_step, &latency_label, "p99 batch latency (ms)", x_max, true);
    let points: Vec<Option<(f64, f64)>> = seconds.iter().map(p99_point).collect();
    series(&mut svg, &bottom, &points, LATENCY_COLOUR, seconds.len() <= MARKED_POINTS_MAX);
    let overall = format!("run p99 {}", format_ms(report.latency_ms.p99_ms));
    reference(&mut svg, &bottom, report.latency_ms.p99_ms, LATENCY_COLOUR, &overall);

    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">time since the load started (s)</text>"#,
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - 22.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn p99_point(second: &SecondSummary) -> Option<(f64, f64)> {
    second.p99_ms.map(|p99| (second.second as f64 + 0.5, p99))
}

fn title(svg: &mut String, report: &Report) {
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
    let _ = writeln!(svg, r#"<text x="{LEFT}" y="30" font-size="18" font-weight="bold">{}</text>"#, escape(&heading));
    for (line, text) in [run, workload].iter().enumerate() {
        let y = 52.0 + 16.0 * line as f64;
        let _ = writeln!(svg, r##"<text x="{LEFT}" y="{y}" font-size="12" fill="#444">{}</text>"##, escape(text));
    }
}

/// The panel's frame, grid, y ticks and label, and x ticks.
fn axes(
    svg: &mut String,
    panel: &Panel,
    y_step: f64,
    y_label: &dyn Fn(f64) -> String,
    name: &str,
    x_max: f64,
    x_labels: bool,
) {
    let (left, right) = (LEFT, WIDTH - RIGHT);
    let bottom = panel.top + panel.height;
    let _ = writeln!(svg, "<g>");
    let mut value = 0.0;
    while value <= panel.y_max + y_step / 2.0 {
        let y = panel.y(value);
        let _ = writeln!(svg, r##"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#e3e3e3"/>"##);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 8.0,
            y + 4.0,
            escape(&y_label(value))
        );
        value += y_step;
    }
    let (x_step, _) = nice_axis(x_max);
    let x_step = x_step.max(1.0);
    let mut second = 0.0;
    while second <= x_max + 1e-9 {
        let x = panel.x(second);
        let _ =
            writeln!(svg, r##"<line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{:.1}" stroke="#444"/>"##, bottom + 5.0);
        if x_labels {
            let _ = writeln!(svg, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{second}</text>"#, bottom + 19.0);
        }
        second += x_step;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        panel.top,
        right - left,
        panel.height
    );
    let middle = panel.top + panel.height / 2.0;
    let _ = writeln!(
        svg,
        r#"<text x="22" y="{middle:.1}" text-anchor="middle" font-size="13" transform="rotate(-90 22 {middle:.1})">{}</text>"#,
        escape(name)
    );
    let _ = writeln!(svg, "</g>");
}

/// A line through the points; `None` breaks it (a second with no answer).
fn series(svg: &mut String, panel: &Panel, points: &[Option<(f64, f64)>], colour: &str, mark: bool) {
    for run in points.split(Option::is_none) {
        let coordinates: Vec<String> =
            run.iter().flatten().map(|&(x, y)| format!("{:.1},{:.1}", panel.x(x), panel.y(y))).collect();
        if coordinates.len() > 1 {
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                coordinates.join(" ")
            );
        }
    }
    if mark || points.iter().flatten().count() == 1 {
        for &(x, y) in points.iter().flatten() {
            let _ = writeln!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#, panel.x(x), panel.y(y));
        }
    }
}

/// A dashed horizontal line at `value` with its label.
fn reference(svg: &mut String, panel: &Panel, value: f64, colour: &str, label: &str) {
    if !(value.is_finite() && value > 0.0) {
        return;
    }
    let y = panel.y(value.min(panel.y_max));
    let _ = writeln!(
        svg,
        r#"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{colour}" stroke-dasharray="6 4" opacity="0.7"/>"#,
        WIDTH - RIGHT
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{colour}">{}</text>"#,
        WIDTH - RIGHT - 6.0,
        y - 6.0,
        escape(label)
    );
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

    #[test]
    fn the_chart_is_well_formed_with_titles_axes_and_both_series() {
        for seconds in [0, 1, 10, 500] {
            let svg = chart(&report(seconds));
            assert_well_formed(&svg);
            assert!(svg.contains("coffer bench: 21,000 transfers/s committed"));
            assert!(svg.contains("transfers committed / s") && svg.contains("p99 batch latency (ms)"));
            assert!(svg.contains("time since the load started (s)"));
            if seconds >= 10 {
                assert!(svg.contains(THROUGHPUT_COLOUR) && svg.contains(LATENCY_COLOUR));
                // Second 2 has no p99: the latency line breaks into two.
                assert_eq!(svg.matches(&format!("<polyline fill=\"none\" stroke=\"{LATENCY_COLOUR}\"")).count(), 2);
            }
        }
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
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
