//! Charts as SVG text, rendered on the server: no chart library, nothing
//! fetched at run time, readable with JavaScript off. A missing bucket is a
//! gap in the line, never a zero: no data is not good news.

use std::fmt::Write;

use crate::format::Unit;

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 190.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 30.0;

/// Line colours, told apart also by dash pattern for colour-blind readers.
const SERIES_STYLE: [(&str, &str); 3] = [("#2563eb", ""), ("#d97706", "6 3"), ("#dc2626", "2 2")];

/// One line of a chart: a name and `(bucket start in Unix s, value)` points.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) name: &'static str,
    pub(crate) points: Vec<(i64, Option<f64>)>,
}

/// A time-series line chart with axes, UTC time labels, the unit on the y
/// axis, optional threshold lines (from the alert rules) and a legend.
#[derive(Debug, Clone)]
pub(crate) struct LineChart {
    pub(crate) title: String,
    pub(crate) unit: Unit,
    pub(crate) from_s: i64,
    pub(crate) to_s: i64,
    pub(crate) step_s: i64,
    pub(crate) series: Vec<Series>,
    pub(crate) thresholds: Vec<(f64, String)>,
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A "nice" step (1, 2 or 5 times a power of ten) giving about `ticks` ticks.
fn nice_step(span: f64, ticks: f64) -> f64 {
    let raw = (span / ticks).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    let r = raw / magnitude;
    let nice = if r <= 1.0 {
        1.0
    } else if r <= 2.0 {
        2.0
    } else if r <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// A step on round durations (1 s, 5 min, 1 h...) for millisecond axes.
fn nice_duration_step(span_ms: f64, ticks: f64) -> f64 {
    const STEPS_MS: [f64; 27] = [
        1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3,
        600e3, 900e3, 1800e3, 3600e3, 7200e3, 10800e3, 21600e3, 43200e3, 86400e3,
    ];
    let raw = span_ms / ticks;
    STEPS_MS.into_iter().find(|s| *s >= raw).unwrap_or_else(|| nice_step(span_ms, ticks))
}

fn time_label(t: i64, span_s: i64) -> String {
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp(t) else { return String::new() };
    if span_s > 2 * 86_400 {
        format!("{:02}-{:02} {:02}:{:02}", u8::from(at.month()), at.day(), at.hour(), at.minute())
    } else {
        format!("{:02}:{:02}", at.hour(), at.minute())
    }
}

impl LineChart {
    /// Whether any point has a value.
    pub(crate) fn has_data(&self) -> bool {
        self.series.iter().any(|s| s.points.iter().any(|(_, v)| v.is_some()))
    }

    /// The SVG element.
    pub(crate) fn svg(&self) -> String {
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let values = self.series.iter().flat_map(|s| s.points.iter().filter_map(|(_, v)| *v));
        let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        // A threshold near the data is drawn to scale; one far above or
        // below would squash the lines flat, so it is named in a corner.
        type Marks<'a> = Vec<&'a (f64, String)>;
        let (near, far): (Marks<'_>, Marks<'_>) = self.thresholds.iter().partition(|(t, _)| {
            let span = (hi - lo).max(hi.abs() * 0.5).max(f64::MIN_POSITIVE);
            *t >= lo - span && *t <= hi + span
        });
        for (t, _) in &near {
            lo = lo.min(*t);
            hi = hi.max(*t);
        }
        // Rates and counts are read against zero; only a narrow band of
        // success rates near 100% gets a zoomed axis (a drop from 99.9% to
        // 99% matters and must be visible).
        lo = if self.unit == Unit::Ratio && lo > 0.5 { (lo - (hi - lo).max(0.01) * 0.2).max(0.0) } else { lo.min(0.0) };
        if self.unit == Unit::Ratio {
            hi = hi.min(1.0).max(lo + 0.01);
        }
        if hi <= lo {
            hi = lo + 1.0;
        }
        let step = if self.unit == Unit::Millis { nice_duration_step(hi - lo, 4.0) } else { nice_step(hi - lo, 4.0) };
        lo = (lo / step).floor() * step;
        hi = (hi / step).ceil() * step;
        let span_s = (self.to_s - self.from_s).max(1);
        let x = |t: i64| LEFT + (t - self.from_s) as f64 / span_s as f64 * plot_w;
        let y = |v: f64| TOP + (1.0 - (v - lo) / (hi - lo)) * plot_h;

        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
            esc(&self.title)
        );
        // Horizontal grid and y labels.
        let mut v = lo;
        while v <= hi + step / 2.0 {
            let yy = y(v);
            let _ = write!(
                svg,
                r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}"/><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT + plot_w,
                LEFT - 6.0,
                yy + 4.0,
                // Rounded to the step: 0.1 + 0.2 must read as 0.3.
                esc(&self.unit.show(Some((v / step).round() * step)))
            );
            v += step;
        }
        // Time ticks: about six, on multiples of a round duration.
        let tick_s = [60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
            .into_iter()
            .find(|t| span_s / t <= 7)
            .unwrap_or(86400);
        let mut t = (self.from_s / tick_s + 1) * tick_s;
        while t < self.to_s {
            let xx = x(t);
            let _ = write!(
                svg,
                r#"<line class="grid" x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{:.1}"/><text class="axis" x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                TOP + plot_h,
                HEIGHT - 12.0,
                time_label(t, span_s)
            );
            t += tick_s;
        }
        let _ = write!(
            svg,
            r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">UTC</text>"#,
            WIDTH - RIGHT,
            HEIGHT - 1.0
        );
        let _ = write!(svg, r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w:.1}" height="{plot_h:.1}"/>"#);
        for (i, (value, label)) in far.iter().enumerate() {
            let side = if *value > hi { "above" } else { "below" };
            let _ = write!(
                svg,
                r#"<text class="threshold-label" x="{:.1}" y="{:.1}" text-anchor="end">{} (off scale, {side})</text>"#,
                LEFT + plot_w - 2.0,
                TOP + 10.0 + i as f64 * 12.0,
                esc(label)
            );
        }
        for (value, label) in near {
            {
                let yy = y(*value);
                let _ = write!(
                    svg,
                    r#"<line class="threshold" x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}"><title>{}</title></line><text class="threshold-label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                    LEFT + plot_w,
                    esc(label),
                    LEFT + plot_w - 2.0,
                    yy - 3.0,
                    esc(label)
                );
            }
        }
        // Each run of consecutive buckets with data is one polyline; a
        // lone point is a dot, so it is not lost.
        let half = self.step_s as f64 / 2.0;
        for (i, series) in self.series.iter().enumerate() {
            let (colour, dash) = SERIES_STYLE[i % SERIES_STYLE.len()];
            let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
            let mut previous: Option<i64> = None;
            for (t, v) in &series.points {
                let Some(v) = v else {
                    previous = None;
                    continue;
                };
                let point = (x(*t) + half / span_s as f64 * plot_w, y(*v));
                match (previous, runs.last_mut()) {
                    (Some(p), Some(run)) if t - p <= self.step_s => run.push(point),
                    _ => runs.push(vec![point]),
                }
                previous = Some(*t);
            }
            for run in runs {
                if let [(px, py)] = run.as_slice() {
                    let _ = write!(svg, r#"<circle cx="{px:.1}" cy="{py:.1}" r="2.5" fill="{colour}"/>"#);
                } else {
                    let path: Vec<String> = run.iter().map(|(px, py)| format!("{px:.1},{py:.1}")).collect();
                    let _ = write!(
                        svg,
                        r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8" stroke-dasharray="{dash}" points="{}"/>"#,
                        path.join(" ")
                    );
                }
            }
        }
        if self.series.len() > 1 {
            let mut lx = LEFT + 6.0;
            for (i, series) in self.series.iter().enumerate() {
                let (colour, dash) = SERIES_STYLE[i % SERIES_STYLE.len()];
                let _ = write!(
                    svg,
                    r#"<line x1="{lx:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/><text class="legend" x="{:.1}" y="{:.1}">{}</text>"#,
                    lx + 16.0,
                    TOP + 10.0,
                    TOP + 10.0,
                    lx + 20.0,
                    TOP + 14.0,
                    esc(series.name)
                );
                lx += 28.0 + series.name.len() as f64 * 6.5;
            }
        }
        svg.push_str("</svg>");
        svg
    }
}

/// A histogram as labelled bars.
#[derive(Debug, Clone)]
pub(crate) struct BarChart {
    pub(crate) title: String,
    /// `(label, value)` in display order.
    pub(crate) bars: Vec<(String, f64)>,
    /// What a bar counts, e.g. "attempts".
    pub(crate) what: &'static str,
}

impl BarChart {
    /// Whether any bar is above zero.
    pub(crate) fn has_data(&self) -> bool {
        self.bars.iter().any(|(_, v)| *v > 0.0)
    }

    /// The SVG element.
    pub(crate) fn svg(&self) -> String {
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let max = self.bars.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1.0);
        let step = nice_step(max, 4.0);
        let hi = (max / step).ceil() * step;
        let n = self.bars.len().max(1) as f64;
        let slot = plot_w / n;
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
            esc(&self.title)
        );
        let mut v = 0.0;
        while v <= hi + step / 2.0 {
            let yy = TOP + (1.0 - v / hi) * plot_h;
            let _ = write!(
                svg,
                r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}"/><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT + plot_w,
                LEFT - 6.0,
                yy + 4.0,
                crate::format::num(Some(v))
            );
            v += step;
        }
        let total: f64 = self.bars.iter().map(|(_, v)| v).sum();
        // At most about twelve labels, so they never overlap.
        let label_every = self.bars.len().div_ceil(12).max(1);
        for (i, (label, value)) in self.bars.iter().enumerate() {
            let h = value / hi * plot_h;
            let bx = LEFT + i as f64 * slot + slot * 0.12;
            let share = if total > 0.0 { value / total * 100.0 } else { 0.0 };
            let _ = write!(
                svg,
                r#"<rect class="bar" x="{bx:.1}" y="{:.1}" width="{:.1}" height="{h:.1}"><title>{}: {} {} ({share:.1} %)</title></rect><text class="axis" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                TOP + plot_h - h,
                slot * 0.76,
                esc(label),
                crate::format::num(Some(*value)),
                self.what,
                bx + slot * 0.38,
                HEIGHT - 12.0,
                if i % label_every == 0 || i + 1 == self.bars.len() { esc(label) } else { String::new() }
            );
        }
        let _ = write!(svg, r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w:.1}" height="{plot_h:.1}"/>"#);
        svg.push_str("</svg>");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_bucket_breaks_the_line_instead_of_drawing_zero() {
        let chart = LineChart {
            title: "Success rate".into(),
            unit: Unit::Ratio,
            from_s: 0,
            to_s: 600,
            step_s: 60,
            series: vec![Series {
                name: "success",
                points: vec![(0, Some(0.9)), (60, Some(0.95)), (240, Some(0.99)), (300, Some(1.0))],
            }],
            thresholds: vec![(0.95, "alert < 95 %".into())],
        };
        let svg = chart.svg();
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert!(svg.contains("alert &lt; 95 %"));
        assert!(svg.contains("UTC"));
    }

    #[test]
    fn nice_steps_are_1_2_or_5_times_a_power_of_ten() {
        assert_eq!(nice_step(100.0, 4.0), 50.0);
        assert_eq!(nice_step(0.04, 4.0), 0.01);
        assert_eq!(nice_step(7.0, 4.0), 2.0);
    }
}

/// A sparkline: an error group's series as tiny columns over the window,
/// small enough for a table cell. A bucket without failures has no column
/// (the series leaves empty buckets out) rather than a drawn zero, and the
/// heights are relative to the group's own busiest bucket: it shows when
/// the error happens, not how much against other rows.
pub(crate) fn sparkline(points: &[(i64, f64)], from_s: i64, to_s: i64, step_s: i64, label: &str) -> String {
    const W: f64 = 120.0;
    const H: f64 = 24.0;
    let span_s = (to_s - from_s).max(1) as f64;
    let column = (step_s.max(1) as f64 / span_s * W).max(1.0);
    let max = points.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="spark" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg"><line x1="0" x2="{W}" y1="{:.1}" y2="{:.1}" stroke="currentColor" stroke-opacity="0.25"/>"#,
        esc(label),
        H - 0.5,
        H - 0.5
    );
    for (t, v) in points {
        if *v <= 0.0 || max <= 0.0 || *t + step_s <= from_s || *t >= to_s {
            continue;
        }
        // A bucket that starts before the window is clipped to its start.
        let x = ((*t - from_s).max(0) as f64 / span_s * W).min(W - column);
        let h = (v / max * (H - 2.0)).max(1.5);
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="{column:.1}" height="{h:.1}" fill="#2563eb"/>"##,
            H - 1.0 - h
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod sparkline_tests {
    use super::sparkline;

    #[test]
    fn a_sparkline_draws_one_column_per_bucket_with_failures_scaled_to_the_busiest() {
        let svg = sparkline(&[(0, 2.0), (120, 4.0), (9_999, 1.0)], 0, 600, 60, "errors <b>");
        assert_eq!(svg.matches("<rect").count(), 2, "the bucket outside the window is left out: {svg}");
        assert!(svg.contains(r#"height="22.0""#), "the busiest bucket is full height: {svg}");
        assert!(svg.contains(r#"height="11.0""#), "half as many, half as high: {svg}");
        assert!(svg.contains("errors &lt;b&gt;"), "the label is escaped");
        assert_eq!(sparkline(&[], 0, 600, 60, "none").matches("<rect").count(), 0);
    }
}
