//! Error against cost: the accuracy/compute trade-off of every stopping rule.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use serde::{Deserialize, Serialize};

use crate::axis::Axis;
use crate::error::{check, Result};
use crate::output::{write_figure, DrawResult, Figure, FigureFiles, Target};
use crate::style::{self, Glyph, LegendEntry, Marker};

const NAME: &str = "pareto";

/// One operating point of a curve: mean over seeds, and optionally the spread
/// (e.g. one standard deviation) drawn as error bars.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ParetoPoint {
    /// Mean cost, in % of the cost of running the largest stage alone.
    pub cost: f64,
    /// Mean test error, in %.
    pub error: f64,
    /// Half-width of the cost error bar, in the same unit as `cost`.
    #[serde(default)]
    pub cost_spread: Option<f64>,
    /// Half-width of the error error bar, in the same unit as `error`.
    #[serde(default)]
    pub error_spread: Option<f64>,
}

impl ParetoPoint {
    /// A point without spread.
    pub fn new(cost: f64, error: f64) -> Self {
        Self {
            cost,
            error,
            cost_spread: None,
            error_spread: None,
        }
    }

    /// The same point with error bars of half-width `cost_spread` and `error_spread`.
    pub fn with_spread(self, cost_spread: f64, error_spread: f64) -> Self {
        Self {
            cost_spread: Some(cost_spread),
            error_spread: Some(error_spread),
            ..self
        }
    }
}

/// A named trade-off curve (one stopping rule swept over alpha or a threshold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParetoCurve {
    /// Legend label, e.g. `"threshold"`, `"REINFORCE (frozen)"`, `"oracle"`.
    pub name: String,
    /// Operating points; drawn in order of increasing cost.
    pub points: Vec<ParetoPoint>,
    /// Draw dashed: for reference curves that are not attainable policies,
    /// such as the oracle.
    #[serde(default)]
    pub dashed: bool,
}

impl ParetoCurve {
    /// A solid curve.
    pub fn new(name: impl Into<String>, points: Vec<ParetoPoint>) -> Self {
        Self {
            name: name.into(),
            points,
            dashed: false,
        }
    }

    /// A dashed reference curve (the oracle).
    pub fn reference(name: impl Into<String>, points: Vec<ParetoPoint>) -> Self {
        Self {
            dashed: true,
            ..Self::new(name, points)
        }
    }
}

/// A single stage used alone for every input (the static baselines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagePoint {
    /// Label written next to the point, e.g. `"stage 1 linear"`.
    pub label: String,
    /// Cost, in % of the largest stage.
    pub cost: f64,
    /// Test error, in %.
    pub error: f64,
}

/// Test error against mean cost for stage baselines and stopping policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParetoPlot {
    /// Figure title; name the data set, the cascade and the agents.
    pub title: String,
    /// Static single-stage points, drawn as labelled stars.
    pub stages: Vec<StagePoint>,
    /// Trade-off curves, each with its own colour and marker.
    pub curves: Vec<ParetoCurve>,
    /// Logarithmic cost axis (default `true`): stage costs in a cascade span
    /// orders of magnitude (a linear first stage costs well under 1 % of a
    /// CNN), so on a linear axis every cheap operating point collapses onto
    /// the y axis. All costs must then be positive.
    #[serde(default = "default_true")]
    pub log_cost: bool,
}

fn default_true() -> bool {
    true
}

impl ParetoPlot {
    /// A plot with a logarithmic cost axis and nothing in it yet.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            stages: vec![],
            curves: vec![],
            log_cost: true,
        }
    }

    fn validate(&self) -> Result<()> {
        check::title(NAME, &self.title)?;
        if self.stages.is_empty() && self.curves.is_empty() {
            return Err(crate::Error::Empty {
                figure: NAME,
                what: "the plot (no stage points and no curves)".into(),
            });
        }
        let cost_lo = if self.log_cost {
            f64::MIN_POSITIVE
        } else {
            0.0
        };
        let cost_range = |what: &dyn Fn() -> String, v: f64| -> Result<()> {
            check::finite(NAME, what, v)?;
            if v < cost_lo || (self.log_cost && v <= 0.0) {
                return Err(crate::Error::OutOfRange {
                    figure: NAME,
                    what: what(),
                    value: v,
                    range: if self.log_cost {
                        "(0, inf) (the cost axis is logarithmic)".into()
                    } else {
                        "[0, inf)".into()
                    },
                });
            }
            Ok(())
        };
        for (i, s) in self.stages.iter().enumerate() {
            cost_range(&|| format!("stage point {i} ({:?}) cost", s.label), s.cost)?;
            check::in_range(
                NAME,
                || format!("stage point {i} ({:?}) error", s.label),
                s.error,
                0.0,
                100.0,
            )?;
        }
        check::unique_names(NAME, "curve", self.curves.iter().map(|c| c.name.as_str()))?;
        for c in &self.curves {
            check::non_empty(NAME, &format!("curve {:?}", c.name), &c.points)?;
            for (j, p) in c.points.iter().enumerate() {
                let what = |field: &str| format!("curve {:?} point {j} {field}", c.name);
                cost_range(&|| what("cost"), p.cost)?;
                check::in_range(NAME, || what("error"), p.error, 0.0, 100.0)?;
                if let Some(s) = p.cost_spread {
                    check::in_range(NAME, || what("cost_spread"), s, 0.0, f64::MAX)?;
                }
                if let Some(s) = p.error_spread {
                    check::in_range(NAME, || what("error_spread"), s, 0.0, f64::MAX)?;
                }
            }
        }
        Ok(())
    }

    /// Writes `<stem>.svg` and `<stem>.png`.
    ///
    /// # Errors
    /// [`crate::Error`] on empty plots or curves, non-finite values, errors
    /// outside `[0, 100]`, non-positive costs on a log axis, negative spreads,
    /// duplicate curve names, or a failed write.
    pub fn write(&self, stem: impl AsRef<Path>) -> Result<FigureFiles> {
        self.validate()?;
        write_figure(self, stem.as_ref())
    }

    fn cost_bounds(&self) -> (f64, f64) {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for s in &self.stages {
            lo = lo.min(s.cost);
            hi = hi.max(s.cost);
        }
        for p in self.curves.iter().flat_map(|c| &c.points) {
            let s = p.cost_spread.unwrap_or(0.0);
            // A spread reaching below zero is clipped on a log axis, so it
            // must not drag the axis down to zero.
            let low = if self.log_cost && p.cost - s <= 0.0 {
                p.cost
            } else {
                p.cost - s
            };
            lo = lo.min(low);
            hi = hi.max(p.cost + s);
        }
        (lo, hi)
    }

    fn error_bounds(&self) -> (f64, f64) {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for s in &self.stages {
            lo = lo.min(s.error);
            hi = hi.max(s.error);
        }
        for p in self.curves.iter().flat_map(|c| &c.points) {
            let s = p.error_spread.unwrap_or(0.0);
            lo = lo.min(p.error - s);
            hi = hi.max(p.error + s);
        }
        (lo, hi)
    }

    fn legend(&self) -> Vec<LegendEntry> {
        let mut entries: Vec<LegendEntry> = self
            .curves
            .iter()
            .enumerate()
            .map(|(i, c)| LegendEntry {
                label: c.name.clone(),
                glyph: Glyph::Line {
                    color: style::color(i),
                    dashed: c.dashed,
                    marker: Some(style::marker(i)),
                },
            })
            .collect();
        if !self.stages.is_empty() {
            entries.push(LegendEntry {
                label: "single stage".into(),
                glyph: Glyph::Point {
                    color: style::INK,
                    marker: Marker::Star,
                },
            });
        }
        entries
    }
}

impl Figure for ParetoPlot {
    fn name(&self) -> &'static str {
        NAME
    }

    fn size(&self) -> (u32, u32) {
        (style::WIDTH, style::HEIGHT)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, _: Target) -> DrawResult<DB> {
        let area = style::draw_title(root, &self.title)?;
        let area = style::draw_legend_strip(&area, &self.legend())?;

        let (ylo, yhi) = self.error_bounds();
        let pad = ((yhi - ylo) * 0.08).max(0.5);
        let (ylo, yhi) = ((ylo - pad).max(0.0), (yhi + pad).min(100.0));
        let (yticks, ydec) = style::nice_ticks(ylo, yhi, 9);
        let y = Axis::linear(ylo, yhi, yticks);

        let (clo, chi) = self.cost_bounds();
        if self.log_cost {
            // Pad by a constant factor so both ends get the same visual margin.
            let f = (chi / clo).powf(0.06).max(1.15);
            let (lo, hi) = (clo / f, chi * f);
            let ticks = style::log_ticks(lo, hi, 12);
            let x = Axis::log(lo, hi, ticks);
            self.draw_chart(&area, x, y, lo, &|v| style::fmt_log_tick(*v), ydec)
        } else {
            let pad = ((chi - clo) * 0.06).max(1.0);
            let (lo, hi) = ((clo - pad).max(0.0), chi + pad);
            let (ticks, dec) = style::nice_ticks(lo, hi, 10);
            let x = Axis::linear(lo, hi, ticks);
            self.draw_chart(&area, x, y, lo, &move |v| style::fmt_tick(*v, dec), ydec)
        }
    }
}

impl ParetoPlot {
    #[allow(clippy::too_many_arguments)]
    fn draw_chart<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        x_spec: Axis,
        y_spec: Axis,
        x_min: f64,
        x_fmt: &dyn Fn(&f64) -> String,
        y_dec: usize,
    ) -> DrawResult<DB> {
        let mut chart = ChartBuilder::on(area)
            .margin_left(12)
            .margin_right(30)
            .margin_bottom(10)
            .margin_top(8)
            .x_label_area_size(62)
            .y_label_area_size(78)
            .build_cartesian_2d(x_spec, y_spec)?;
        let x_desc = if self.log_cost {
            "mean cost (% of largest stage's FLOPs, log scale)"
        } else {
            "mean cost (% of largest stage's FLOPs)"
        };
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("test error (%)")
            .axis_desc_style(style::font(style::LABEL_SIZE))
            .label_style(style::font(style::TICK_SIZE))
            .x_label_formatter(x_fmt)
            .y_label_formatter(&|v| style::fmt_tick(*v, y_dec))
            .bold_line_style(style::GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(style::AXIS)
            .x_labels(20)
            .y_labels(20)
            .draw()?;

        for (i, c) in self.curves.iter().enumerate() {
            let col = style::color(i);
            let mut pts = c.points.clone();
            pts.sort_by(|a, b| a.cost.total_cmp(&b.cost));
            // Error bars first, so markers sit on top of them.
            let bar = col.mix(0.7).stroke_width(2);
            for p in &pts {
                if let Some(s) = p.error_spread.filter(|s| *s > 0.0) {
                    chart.draw_series(std::iter::once(ErrorBar::new_vertical(
                        p.cost,
                        p.error - s,
                        p.error,
                        p.error + s,
                        bar,
                        8,
                    )))?;
                }
                if let Some(s) = p.cost_spread.filter(|s| *s > 0.0) {
                    chart.draw_series(std::iter::once(ErrorBar::new_horizontal(
                        p.error,
                        (p.cost - s).max(x_min),
                        p.cost,
                        p.cost + s,
                        bar,
                        8,
                    )))?;
                }
            }
            let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.cost, p.error)).collect();
            if c.dashed {
                chart.draw_series(DashedLineSeries::new(
                    line.clone(),
                    9,
                    6,
                    col.stroke_width(3),
                ))?;
            } else {
                chart.draw_series(LineSeries::new(line.clone(), col.stroke_width(3)))?;
            }
            let m = style::marker(i);
            // (Drawn one by one: a `DynElement` series would need a 'static backend.)
            for xy in line {
                chart
                    .plotting_area()
                    .draw(&style::marker_element(m, xy, 6, col))?;
            }
        }

        // Stage labels go where they cover the least ink: obstacles are the
        // curves (sampled every few pixels), error bars, markers and labels
        // already placed; candidates that leave the plot are never used.
        let to_px = |x: f64, y: f64| chart.backend_coord(&(x, y));
        let mut obstacles: Vec<(i32, i32)> = vec![];
        for c in &self.curves {
            let mut pts = c.points.clone();
            pts.sort_by(|a, b| a.cost.total_cmp(&b.cost));
            let px: Vec<(i32, i32)> = pts.iter().map(|p| to_px(p.cost, p.error)).collect();
            for pair in px.windows(2) {
                obstacles.extend(sample_segment(pair[0], pair[1]));
            }
            for p in &pts {
                let centre = to_px(p.cost, p.error);
                obstacles.extend(disc(centre, 7));
                if let Some(sp) = p.error_spread {
                    obstacles.extend(sample_segment(
                        to_px(p.cost, p.error - sp),
                        to_px(p.cost, p.error + sp),
                    ));
                }
                if let Some(sp) = p.cost_spread {
                    let lo = (p.cost - sp).max(x_min);
                    obstacles.extend(sample_segment(
                        to_px(lo, p.error),
                        to_px(p.cost + sp, p.error),
                    ));
                }
            }
        }
        for s in &self.stages {
            obstacles.extend(disc(to_px(s.cost, s.error), 9));
        }
        let (xr, yr) = chart.plotting_area().get_pixel_range();
        let mut placed: Vec<Rect> = vec![];
        for s in &self.stages {
            chart.plotting_area().draw(&style::marker_element(
                Marker::Star,
                (s.cost, s.error),
                7,
                style::INK,
            ))?;
            let (px, py) = to_px(s.cost, s.error);
            let tw = style::text_width(area, &s.label, style::NOTE_SIZE) as i32;
            let th = style::NOTE_SIZE as i32;
            let best = label_candidates(tw, th)
                .into_iter()
                .map(|(dx, dy)| Rect {
                    x0: px + dx,
                    y0: py + dy,
                    x1: px + dx + tw,
                    y1: py + dy + th,
                })
                .filter(|r| {
                    r.x0 >= xr.start + 2
                        && r.x1 <= xr.end - 2
                        && r.y0 >= yr.start + 2
                        && r.y1 <= yr.end - 2
                })
                .enumerate()
                .min_by_key(|(order, r)| {
                    let hits = obstacles
                        .iter()
                        .filter(|p| r.grown(3).contains(**p))
                        .count();
                    let overlaps = placed.iter().filter(|q| q.grown(4).intersects(r)).count();
                    // Ink hidden counts most; among equals keep the preferred order.
                    (overlaps * 1000 + hits, *order)
                })
                .map(|(_, r)| r);
            let Some(r) = best else { continue };
            placed.push(r);
            chart.plotting_area().draw(
                &(EmptyElement::at((s.cost, s.error))
                    + Text::new(
                        s.label.clone(),
                        (r.x0 - px, r.y0 - py),
                        style::font_anchored(style::NOTE_SIZE, HPos::Left, VPos::Top)
                            .color(&style::MUTED),
                    )),
            )?;
        }
        Ok(())
    }
}

/// A pixel rectangle, `x1`/`y1` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    x0: i32,
    y0: i32,
    x1: i32,
    y1: i32,
}

impl Rect {
    fn grown(&self, by: i32) -> Rect {
        Rect {
            x0: self.x0 - by,
            y0: self.y0 - by,
            x1: self.x1 + by,
            y1: self.y1 + by,
        }
    }
    fn contains(&self, (x, y): (i32, i32)) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }
    fn intersects(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }
}

/// Offsets of a `w x h` label's top-left corner around a marker, in order of
/// preference: above right, below right, above left, below left, right,
/// left, above, below.
fn label_candidates(w: i32, h: i32) -> Vec<(i32, i32)> {
    let gap = 10;
    vec![
        (gap, -gap - h),
        (gap, gap),
        (-gap - w, -gap - h),
        (-gap - w, gap),
        (gap + 4, -h / 2),
        (-gap - 4 - w, -h / 2),
        (-w / 2, -gap - 4 - h),
        (-w / 2, gap + 4),
    ]
}

/// Points every 3 px along a segment.
fn sample_segment(a: (i32, i32), b: (i32, i32)) -> Vec<(i32, i32)> {
    let (dx, dy) = (f64::from(b.0 - a.0), f64::from(b.1 - a.1));
    let n = ((dx.hypot(dy) / 3.0).ceil() as usize).max(1);
    (0..=n)
        .map(|k| {
            let t = k as f64 / n as f64;
            (
                (f64::from(a.0) + t * dx).round() as i32,
                (f64::from(a.1) + t * dy).round() as i32,
            )
        })
        .collect()
}

/// Points covering a disc of radius `r` (a marker), on a 3 px grid.
fn disc(c: (i32, i32), r: i32) -> Vec<(i32, i32)> {
    let mut v = vec![];
    for dy in (-r..=r).step_by(3) {
        for dx in (-r..=r).step_by(3) {
            if dx * dx + dy * dy <= r * r {
                v.push((c.0 + dx, c.1 + dy));
            }
        }
    }
    v
}
