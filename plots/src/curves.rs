//! Training curves: metrics per epoch for one or more runs, one panel per metric.

use std::collections::BTreeMap;
use std::path::Path;

use crate::axis::Axis;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use serde::{Deserialize, Serialize};

use crate::error::{check, Error, Result};
use crate::output::{write_figure, DrawResult, Figure, FigureFiles, Target};
use crate::style::{self, Glyph, LegendEntry};

const NAME: &str = "training curves";

/// How one run is drawn: its colour's index, and its marker where it is
/// one of a group.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct RunStyle {
    colour: usize,
    marker: Option<style::Marker>,
}

/// One run's values of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSeries {
    /// Run name (legend label); the same run keeps its colour in every panel.
    pub run: String,
    /// `(epoch, value)` pairs, epochs strictly increasing.
    pub points: Vec<(f64, f64)>,
    /// Runs of one group (an agent's seeds, say) share a colour and are
    /// told apart by their markers; a run without one has a colour of its
    /// own. A run keeps the group it first appears with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// One panel: one metric, any number of runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPanel {
    /// Metric name, e.g. `"charts/mean_reward"`; the panel caption and y label.
    pub metric: String,
    /// Unit appended to the y label in parentheses, e.g. `"%"`.
    #[serde(default)]
    pub unit: Option<String>,
    /// The runs.
    pub series: Vec<MetricSeries>,
}

/// Small multiples of training metrics against epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingCurvesPlot {
    /// Figure title; name the data set, the cascade and the agents.
    pub title: String,
    /// X axis label of every panel (default `"epoch"`).
    #[serde(default = "default_x_label")]
    pub x_label: String,
    /// One panel per metric, laid out row by row.
    pub panels: Vec<MetricPanel>,
}

fn default_x_label() -> String {
    "epoch".into()
}

impl TrainingCurvesPlot {
    /// A figure with x label `"epoch"` and no panels yet.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            x_label: default_x_label(),
            panels: vec![],
        }
    }

    fn validate(&self) -> Result<()> {
        check::title(NAME, &self.title)?;
        check::non_empty(NAME, "panels", &self.panels)?;
        for p in &self.panels {
            check::non_empty(NAME, &format!("panel {:?} series", p.metric), &p.series)?;
            check::unique_names(
                NAME,
                &format!("panel {:?} run", p.metric),
                p.series.iter().map(|s| s.run.as_str()),
            )?;
            for s in &p.series {
                let what = format!("panel {:?} run {:?}", p.metric, s.run);
                check::non_empty(NAME, &format!("{what} points"), &s.points)?;
                for (i, (x, y)) in s.points.iter().enumerate() {
                    check::finite(NAME, || format!("{what} point {i} epoch"), *x)?;
                    check::finite(NAME, || format!("{what} point {i} value"), *y)?;
                    if i > 0 && *x <= s.points[i - 1].0 {
                        return Err(Error::Invalid {
                            figure: NAME,
                            message: format!(
                                "{what}: epochs must increase, but point {i} has epoch {x} after {}",
                                s.points[i - 1].0
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes `<stem>.svg` and `<stem>.png`.
    ///
    /// # Errors
    /// [`crate::Error`] on no panels, a panel without series, a series without
    /// points, non-finite values, epochs not strictly increasing, a run
    /// appearing twice in a panel, or a failed write.
    pub fn write(&self, stem: impl AsRef<Path>) -> Result<FigureFiles> {
        self.validate()?;
        write_figure(self, stem.as_ref())
    }

    /// Runs in order of first appearance, each with its colour and marker:
    /// a colour per group (or per ungrouped run), in order of first
    /// appearance; within a group, markers in order.
    fn runs(&self) -> Vec<(String, RunStyle)> {
        let mut runs: Vec<(String, RunStyle)> = vec![];
        // A colour's key: (grouped, the group's name or the run's), so an
        // ungrouped run is a group of its own.
        let mut colours: Vec<(bool, &str)> = vec![];
        for s in self.panels.iter().flat_map(|p| &p.series) {
            if runs.iter().any(|(r, _)| *r == s.run) {
                continue;
            }
            let key = (s.group.is_some(), s.group.as_deref().unwrap_or(&s.run));
            let colour = colours.iter().position(|c| *c == key).unwrap_or_else(|| {
                colours.push(key);
                colours.len() - 1
            });
            let in_group = runs.iter().filter(|(_, st)| st.colour == colour).count();
            runs.push((
                s.run.clone(),
                RunStyle {
                    colour,
                    marker: s.group.as_ref().map(|_| style::marker(in_group)),
                },
            ));
        }
        runs
    }

    fn grid(&self) -> (usize, usize) {
        let n = self.panels.len();
        let cols = match n {
            1 => 1,
            2..=4 => 2,
            _ => 3,
        };
        (n.div_ceil(cols), cols)
    }
}

impl Figure for TrainingCurvesPlot {
    fn name(&self) -> &'static str {
        NAME
    }

    fn size(&self) -> (u32, u32) {
        match self.grid() {
            (1, 1) => (style::WIDTH, style::HEIGHT),
            (rows, cols) => {
                let w = if cols <= 2 { 1100 } else { 1500 };
                let extra = 26 * self.runs().len().div_ceil(4) as u32;
                (w, 150 + extra + rows as u32 * 420)
            }
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, _: Target) -> DrawResult<DB> {
        let area = style::draw_title(root, &self.title)?;
        let runs = self.runs();
        let index: BTreeMap<&str, RunStyle> =
            runs.iter().map(|(r, st)| (r.as_str(), *st)).collect();
        let legend: Vec<LegendEntry> = runs
            .iter()
            .map(|(r, st)| LegendEntry {
                label: r.clone(),
                glyph: Glyph::Line {
                    color: style::color(st.colour),
                    dashed: false,
                    marker: st.marker,
                },
            })
            .collect();
        let area = style::draw_legend_strip(&area, &legend)?;
        let (rows, cols) = self.grid();
        let cells = area.split_evenly((rows, cols));
        for (panel, cell) in self.panels.iter().zip(cells.iter()) {
            draw_panel(cell, panel, &self.x_label, &index, self.panels.len() > 1)?;
        }
        Ok(())
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &MetricPanel,
    x_label: &str,
    index: &BTreeMap<&str, RunStyle>,
    caption: bool,
) -> DrawResult<DB> {
    let (mut xlo, mut xhi) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut ylo, mut yhi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (x, y) in panel.series.iter().flat_map(|s| &s.points) {
        xlo = xlo.min(*x);
        xhi = xhi.max(*x);
        ylo = ylo.min(*y);
        yhi = yhi.max(*y);
    }
    if xhi - xlo < 1e-9 {
        xlo -= 0.5;
        xhi += 0.5;
    }
    let ypad = if yhi - ylo < 1e-12 {
        ylo.abs().max(1.0) * 0.05
    } else {
        (yhi - ylo) * 0.06
    };
    let (ylo, yhi) = (ylo - ypad, yhi + ypad);
    let (xticks, xdec) = style::nice_ticks(xlo, xhi, 10);
    let (yticks, ydec) = style::nice_ticks(ylo, yhi, 8);
    let y_label = match &panel.unit {
        Some(u) => format!("{} ({u})", panel.metric),
        None => panel.metric.clone(),
    };
    let area = if caption {
        let (w, _) = area.dim_in_pixel();
        let size = style::fit_size(
            area,
            &panel.metric,
            style::LABEL_SIZE,
            12.0,
            w.saturating_sub(20),
        );
        area.draw(&Text::new(
            panel.metric.clone(),
            ((w / 2) as i32, 10),
            style::font_anchored(size, HPos::Center, VPos::Top),
        ))?;
        area.split_vertically(40).1
    } else {
        area.clone()
    };
    let y_desc_size = {
        let (_, h) = area.dim_in_pixel();
        style::fit_size(
            &area,
            &y_label,
            style::LABEL_SIZE,
            11.0,
            h.saturating_sub(90),
        )
    };
    let y_label_w = yticks
        .iter()
        .map(|v| style::text_width(&area, &style::fmt_tick(*v, ydec), style::TICK_SIZE))
        .max()
        .unwrap_or(0);
    let mut chart = ChartBuilder::on(&area)
        .margin_left(12)
        .margin_right(30)
        .margin_bottom(8)
        .margin_top(6)
        .x_label_area_size(58)
        .y_label_area_size(y_label_w + 44)
        .build_cartesian_2d(
            Axis::linear(xlo, xhi, xticks),
            Axis::linear(ylo, yhi, yticks),
        )?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .axis_desc_style(style::font(y_desc_size))
        .label_style(style::font(style::TICK_SIZE))
        .x_label_formatter(&|v| style::fmt_tick(*v, xdec))
        .y_label_formatter(&|v| style::fmt_tick(*v, ydec))
        .bold_line_style(style::GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(style::AXIS)
        .x_labels(20)
        .y_labels(20)
        .draw()?;
    for s in &panel.series {
        let st = index.get(s.run.as_str()).copied().unwrap_or_default();
        let col = style::color(st.colour);
        chart.draw_series(LineSeries::new(
            s.points.iter().copied(),
            col.stroke_width(2),
        ))?;
        if let Some(m) = st.marker {
            for &p in &s.points {
                chart
                    .plotting_area()
                    .draw(&style::marker_element(m, p, 4, col))?;
            }
        } else if s.points.len() <= 30 {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, col.filled())))?;
        }
    }
    Ok(())
}
