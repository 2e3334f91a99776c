//! Where samples leave the cascade: per-stage exit fractions, per-stage
//! accuracy, and exits per class.

use std::path::Path;

use crate::axis::Axis;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use serde::{Deserialize, Serialize};

use crate::error::{check, Error, Result};
use crate::output::{write_figure, DrawResult, Figure, FigureFiles, Target};
use crate::style::{self, Glyph, LegendEntry};

/// Tolerance on "fractions of a set sum to one" (rounding in stored results).
const SUM_TOL: f64 = 1e-3;

/// Fraction of the test samples that stop at each stage, for one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitFractions {
    /// Legend label.
    pub agent: String,
    /// One fraction in `[0, 1]` per stage; they sum to 1.
    pub fractions: Vec<f64>,
}

/// Grouped bars: stage on x, one bar per agent, height = % of test samples
/// stopping there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleDistributionPlot {
    /// Figure title; name the data set, the cascade and the agents.
    pub title: String,
    /// Stage labels, e.g. `["stage 1 linear", "stage 2 CNN-s", ...]`.
    pub stages: Vec<String>,
    /// One entry per agent.
    pub agents: Vec<ExitFractions>,
}

/// Accuracy of the samples that stop at each stage, for one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitAccuracies {
    /// Legend label.
    pub agent: String,
    /// One accuracy in `[0, 1]` per stage; `None` where no sample stopped
    /// there (drawn as "n/a", not as a zero bar).
    pub accuracies: Vec<Option<f64>>,
}

/// Grouped bars: stage on x, one bar per agent, height = accuracy (%) of the
/// samples that stopped there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccuracyDistributionPlot {
    /// Figure title; name the data set, the cascade and the agents.
    pub title: String,
    /// Stage labels.
    pub stages: Vec<String>,
    /// One entry per agent.
    pub agents: Vec<ExitAccuracies>,
}

/// Heat map of exits per class: rows are classes, columns stages, cell =
/// fraction of that class's test samples that stop at that stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitsPerClassPlot {
    /// Figure title; name the data set, the cascade and the agent.
    pub title: String,
    /// Class names, one per row, top to bottom.
    pub classes: Vec<String>,
    /// Stage labels, one per column.
    pub stages: Vec<String>,
    /// `fractions[class][stage]` in `[0, 1]`; each row sums to 1.
    ///
    /// # Shapes
    /// `[classes.len()][stages.len()]`
    pub fractions: Vec<Vec<f64>>,
}

fn validate_stages(figure: &'static str, stages: &[String]) -> Result<()> {
    check::non_empty(figure, "stages", stages)
}

fn check_sum(figure: &'static str, what: String, values: impl Iterator<Item = f64>) -> Result<()> {
    let sum: f64 = values.sum();
    if (sum - 1.0).abs() > SUM_TOL {
        return Err(Error::Invalid {
            figure,
            message: format!("{what} sum to {sum}, not 1"),
        });
    }
    Ok(())
}

impl SampleDistributionPlot {
    const FIG: &'static str = "sample distribution";

    fn validate(&self) -> Result<()> {
        let f = Self::FIG;
        check::title(f, &self.title)?;
        validate_stages(f, &self.stages)?;
        check::non_empty(f, "agents", &self.agents)?;
        check::unique_names(f, "agent", self.agents.iter().map(|a| a.agent.as_str()))?;
        for a in &self.agents {
            check::len(
                f,
                || format!("agent {:?} fractions", a.agent),
                a.fractions.len(),
                self.stages.len(),
            )?;
            for (k, v) in a.fractions.iter().enumerate() {
                check::in_range(
                    f,
                    || format!("agent {:?} fraction at stage {k}", a.agent),
                    *v,
                    0.0,
                    1.0,
                )?;
            }
            check_sum(
                f,
                format!("agent {:?} fractions", a.agent),
                a.fractions.iter().copied(),
            )?;
        }
        Ok(())
    }

    /// Writes `<stem>.svg` and `<stem>.png`.
    ///
    /// # Errors
    /// [`crate::Error`] on no stages or agents, a fraction list whose length
    /// differs from the number of stages, values outside `[0, 1]` or not
    /// summing to 1, duplicate agent names, or a failed write.
    pub fn write(&self, stem: impl AsRef<Path>) -> Result<FigureFiles> {
        self.validate()?;
        let bars = GroupedBars {
            name: Self::FIG,
            title: &self.title,
            stages: &self.stages,
            series: self
                .agents
                .iter()
                .map(|a| {
                    (
                        a.agent.as_str(),
                        a.fractions.iter().map(|v| Some(v * 100.0)).collect(),
                    )
                })
                .collect(),
            y_desc: "test samples stopping at stage (%)",
            fixed_top: None,
        };
        write_figure(&bars, stem.as_ref())
    }
}

impl AccuracyDistributionPlot {
    const FIG: &'static str = "accuracy distribution";

    fn validate(&self) -> Result<()> {
        let f = Self::FIG;
        check::title(f, &self.title)?;
        validate_stages(f, &self.stages)?;
        check::non_empty(f, "agents", &self.agents)?;
        check::unique_names(f, "agent", self.agents.iter().map(|a| a.agent.as_str()))?;
        for a in &self.agents {
            check::len(
                f,
                || format!("agent {:?} accuracies", a.agent),
                a.accuracies.len(),
                self.stages.len(),
            )?;
            for (k, v) in a.accuracies.iter().enumerate() {
                if let Some(v) = v {
                    check::in_range(
                        f,
                        || format!("agent {:?} accuracy at stage {k}", a.agent),
                        *v,
                        0.0,
                        1.0,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Writes `<stem>.svg` and `<stem>.png`.
    ///
    /// # Errors
    /// [`crate::Error`] on no stages or agents, an accuracy list whose length
    /// differs from the number of stages, values outside `[0, 1]`, duplicate
    /// agent names, or a failed write.
    pub fn write(&self, stem: impl AsRef<Path>) -> Result<FigureFiles> {
        self.validate()?;
        let bars = GroupedBars {
            name: Self::FIG,
            title: &self.title,
            stages: &self.stages,
            series: self
                .agents
                .iter()
                .map(|a| {
                    (
                        a.agent.as_str(),
                        a.accuracies.iter().map(|v| v.map(|v| v * 100.0)).collect(),
                    )
                })
                .collect(),
            y_desc: "accuracy of samples stopping at stage (%)",
            fixed_top: Some(100.0),
        };
        write_figure(&bars, stem.as_ref())
    }
}

/// Grouped bar chart shared by the two distribution figures. Values in %;
/// `None` is drawn as "n/a".
struct GroupedBars<'a> {
    name: &'static str,
    title: &'a str,
    stages: &'a [String],
    series: Vec<(&'a str, Vec<Option<f64>>)>,
    y_desc: &'static str,
    /// Top of the y axis; `None` fits the data.
    fixed_top: Option<f64>,
}

impl Figure for GroupedBars<'_> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn size(&self) -> (u32, u32) {
        (style::WIDTH, style::HEIGHT)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, _: Target) -> DrawResult<DB> {
        let area = style::draw_title(root, self.title)?;
        let legend: Vec<LegendEntry> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, (name, _))| LegendEntry {
                label: name.to_string(),
                glyph: Glyph::Swatch(style::color(i)),
            })
            .collect();
        let area = style::draw_legend_strip(&area, &legend)?;

        let k = self.stages.len();
        let m = self.series.len();
        let max = self
            .series
            .iter()
            .flat_map(|(_, v)| v.iter().flatten())
            .fold(0.0f64, |a, &b| a.max(b));
        // Room above the tallest bar for its value label.
        let top = self
            .fixed_top
            .unwrap_or_else(|| (max * 1.12).clamp(1.0, 100.0));
        let top = if self.fixed_top.is_some() {
            top * 1.06
        } else {
            top
        };
        let (yticks, ydec) = style::nice_ticks(0.0, top.min(100.0), 10);

        let x = Axis::linear(-0.5, k as f64 - 0.5, (0..k).map(|i| i as f64).collect());
        let mut chart = ChartBuilder::on(&area)
            .margin_left(12)
            .margin_right(30)
            .margin_bottom(10)
            .margin_top(8)
            .x_label_area_size(62)
            .y_label_area_size(78)
            .build_cartesian_2d(x, Axis::linear(0.0, top, yticks))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("stage")
            .y_desc(self.y_desc)
            .axis_desc_style(style::font(style::LABEL_SIZE))
            .label_style(style::font(style::TICK_SIZE))
            // Stage names are drawn below, fitted to the column width.
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&|v| style::fmt_tick(*v, ydec))
            .bold_line_style(style::GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(style::AXIS)
            .x_labels(k.max(2))
            .y_labels(20)
            .draw()?;

        let group_w = 0.8;
        let bar_w = group_w / m as f64;
        let (plot_w, _) = chart.plotting_area().dim_in_pixel();
        let labels: Vec<(f64, &str)> = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (i as f64, s.as_str()))
            .collect();
        style::draw_category_labels(
            &area,
            chart.plotting_area(),
            &labels,
            0.0,
            plot_w / k as u32,
        )?;
        let bar_px = plot_w as f64 / k as f64 * bar_w;
        let show_values = bar_px >= 38.0;
        let value_size = if bar_px >= 52.0 {
            style::NOTE_SIZE
        } else {
            14.0
        };
        for (j, (_, values)) in self.series.iter().enumerate() {
            let col = style::color(j);
            for (i, v) in values.iter().enumerate() {
                let x0 = i as f64 - group_w / 2.0 + j as f64 * bar_w;
                let (l, r) = (x0 + bar_w * 0.06, x0 + bar_w * 0.94);
                let mid = (l + r) / 2.0;
                match v {
                    Some(v) => {
                        chart.draw_series(std::iter::once(Rectangle::new(
                            [(l, 0.0), (r, *v)],
                            col.filled(),
                        )))?;
                        if show_values {
                            chart.plotting_area().draw(
                                &(EmptyElement::at((mid, *v))
                                    + Text::new(
                                        format!("{v:.1}"),
                                        (0, -4),
                                        style::font_anchored(
                                            value_size,
                                            HPos::Center,
                                            VPos::Bottom,
                                        ),
                                    )),
                            )?;
                        }
                    }
                    None => {
                        // No sample stopped here: an empty slot labelled n/a
                        // (a zero bar would claim 0 % accuracy).
                        chart.plotting_area().draw(
                            &(EmptyElement::at((mid, 0.0))
                                + Text::new(
                                    "n/a",
                                    (0, -8),
                                    style::font_anchored(
                                        style::NOTE_SIZE,
                                        HPos::Center,
                                        VPos::Bottom,
                                    )
                                    .color(&style::AXIS),
                                )),
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl ExitsPerClassPlot {
    const FIG: &'static str = "exits per class";

    fn validate(&self) -> Result<()> {
        let f = Self::FIG;
        check::title(f, &self.title)?;
        validate_stages(f, &self.stages)?;
        check::non_empty(f, "classes", &self.classes)?;
        check::len(
            f,
            || "fractions (rows)".into(),
            self.fractions.len(),
            self.classes.len(),
        )?;
        for (c, row) in self.fractions.iter().enumerate() {
            let name = &self.classes[c];
            check::len(
                f,
                || format!("fractions row {c} ({name:?})"),
                row.len(),
                self.stages.len(),
            )?;
            for (k, v) in row.iter().enumerate() {
                check::in_range(
                    f,
                    || format!("fraction of class {name:?} at stage {k}"),
                    *v,
                    0.0,
                    1.0,
                )?;
            }
            check_sum(
                f,
                format!("fractions of class {name:?}"),
                row.iter().copied(),
            )?;
        }
        Ok(())
    }

    /// Writes `<stem>.svg` and `<stem>.png`.
    ///
    /// # Errors
    /// [`crate::Error`] on no stages or classes, a row count differing from
    /// the class count or a row length differing from the stage count, values
    /// outside `[0, 1]`, rows not summing to 1, or a failed write.
    pub fn write(&self, stem: impl AsRef<Path>) -> Result<FigureFiles> {
        self.validate()?;
        write_figure(self, stem.as_ref())
    }
}

impl Figure for ExitsPerClassPlot {
    fn name(&self) -> &'static str {
        Self::FIG
    }

    fn size(&self) -> (u32, u32) {
        // Rows 44 px tall (numbers fit comfortably) up to 20 classes, then
        // 24 px so CIFAR-100 stays a reasonable size.
        let row = if self.classes.len() <= 20 { 44 } else { 24 };
        let h = (self.classes.len() as u32 * row + 250).max(style::HEIGHT);
        (style::WIDTH, h)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, _: Target) -> DrawResult<DB> {
        let area = style::draw_title(root, &self.title)?;
        let (w, _) = area.dim_in_pixel();
        let (main, bar) = area.split_horizontally(w - 130);
        let k = self.stages.len();
        let c = self.classes.len();
        let label_w = self
            .classes
            .iter()
            .map(|n| style::text_width(root, n, style::TICK_SIZE))
            .max()
            .unwrap_or(0);

        let classes = self.classes.clone();
        let mut chart = ChartBuilder::on(&main)
            .margin_left(12)
            .margin_right(10)
            .margin_bottom(10)
            .margin_top(16)
            .x_label_area_size(62)
            .y_label_area_size(label_w + 50)
            .build_cartesian_2d(
                Axis::linear(0.0, k as f64, (0..k).map(|i| i as f64 + 0.5).collect()),
                Axis::linear(0.0, c as f64, (0..c).map(|i| i as f64 + 0.5).collect()),
            )?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("stage where the sample stops")
            .y_desc("class")
            .axis_desc_style(style::font(style::LABEL_SIZE))
            .label_style(style::font(style::TICK_SIZE))
            // Stage names are drawn below, fitted to the column width.
            .x_label_formatter(&|_| String::new())
            // Row 0 at the top.
            .y_label_formatter(&|v| {
                let r = v.floor() as usize;
                classes
                    .get(c.wrapping_sub(r + 1))
                    .cloned()
                    .unwrap_or_default()
            })
            .axis_style(style::AXIS)
            .x_labels(k.max(2))
            .y_labels(c.max(2))
            .draw()?;

        let (pw, ph) = chart.plotting_area().dim_in_pixel();
        let cell_h = ph as f64 / c as f64;
        let cell_w = pw as f64 / k as f64;
        let num_size = ((cell_h * 0.42 / 2.0).floor() * 2.0).min(style::LEGEND_SIZE);
        let show_numbers = num_size >= 12.0 && cell_w >= 56.0;
        let labels: Vec<(f64, &str)> = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (i as f64 + 0.5, s.as_str()))
            .collect();
        style::draw_category_labels(&main, chart.plotting_area(), &labels, 0.0, pw / k as u32)?;
        for (r, row) in self.fractions.iter().enumerate() {
            let y0 = (c - 1 - r) as f64;
            for (j, v) in row.iter().enumerate() {
                let fill = style::viridis(*v);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(j as f64, y0), (j as f64 + 1.0, y0 + 1.0)],
                    fill.filled(),
                )))?;
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(j as f64, y0), (j as f64 + 1.0, y0 + 1.0)],
                    WHITE.stroke_width(1),
                )))?;
                if show_numbers {
                    chart.plotting_area().draw(&Text::new(
                        format!("{:.1}%", v * 100.0),
                        (j as f64 + 0.5, y0 + 0.5),
                        style::font_anchored(num_size, HPos::Center, VPos::Center)
                            .color(&style::ink_on(fill)),
                    ))?;
                }
            }
        }

        // Colour bar: the same vertical extent as the cells.
        let steps = 100;
        let mut cb = ChartBuilder::on(&bar)
            .margin_left(24)
            .margin_right(36)
            .margin_bottom(10 + 62)
            .margin_top(16)
            .y_label_area_size(0)
            .right_y_label_area_size(56)
            .build_cartesian_2d(
                0.0..1.0,
                Axis::linear(0.0, 100.0, vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]),
            )?;
        cb.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .label_style(style::font(style::TICK_SIZE))
            .y_label_formatter(&|v| format!("{v:.0}%"))
            .axis_style(style::AXIS)
            .y_labels(6)
            .draw()?;
        cb.draw_series((0..steps).map(|s| {
            let a = s as f64 / steps as f64 * 100.0;
            let b = (s + 1) as f64 / steps as f64 * 100.0;
            Rectangle::new(
                [(0.0, a), (1.0, b)],
                style::viridis((a + b) / 200.0).filled(),
            )
        }))?;
        let (bw, bh) = bar.dim_in_pixel();
        bar.draw(&Text::new(
            "fraction of class",
            (bw as i32 - 18, (bh / 2) as i32 - 31),
            style::font_anchored(style::NOTE_SIZE, HPos::Center, VPos::Center)
                .transform(FontTransform::Rotate270),
        ))?;
        Ok(())
    }
}
