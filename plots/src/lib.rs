//! Figures for cascade-rl runs, drawn with plotters.
//!
//! A pure figure library: every figure is a plain data struct (serde, no
//! dependency on the other cascade crates) with a `write(stem)` method that
//! validates the data and writes `<stem>.svg` and `<stem>.png`, each through a
//! temporary file and a rename. Bad input (NaN, empty curves, mismatched
//! lengths, fractions outside `[0, 1]`) is refused with an [`Error`] that names
//! the figure and the offending value; nothing panics on user data.
//!
//! | figure | struct |
//! |---|---|
//! | test error against mean cost (stage points + curves) | [`ParetoPlot`] |
//! | fraction of test samples stopping at each stage, per agent | [`SampleDistributionPlot`] |
//! | accuracy of the samples stopping at each stage, per agent | [`AccuracyDistributionPlot`] |
//! | exits per class heat map | [`ExitsPerClassPlot`] |
//! | training metrics per epoch, small multiples | [`TrainingCurvesPlot`] |
//! | sample images per class | [`ImageGridPlot`] |
//!
//! Text is set in DejaVu Sans, embedded in the crate (no system fonts are
//! read), so figures look the same everywhere. Colours are the Okabe–Ito
//! palette, heat maps use viridis.
//!
//! ```no_run
//! use cascade_plots::{ParetoCurve, ParetoPlot, ParetoPoint, StagePoint};
//!
//! let mut plot = ParetoPlot::new("Fashion-MNIST, cascade linear/CNN-s/CNN-l: REINFORCE vs threshold");
//! plot.stages.push(StagePoint { label: "stage 1 linear".into(), cost: 0.4, error: 15.8 });
//! plot.stages.push(StagePoint { label: "stage 3 CNN-l".into(), cost: 100.0, error: 8.1 });
//! plot.curves.push(ParetoCurve::new(
//!     "threshold",
//!     vec![ParetoPoint::new(5.0, 12.0), ParetoPoint::new(40.0, 8.9)],
//! ));
//! let files = plot.write("results/pareto")?; // results/pareto.svg, results/pareto.png
//! # Ok::<(), cascade_plots::Error>(())
//! ```

mod axis;
mod curves;
mod error;
mod exits;
mod glyphs;
mod image_grid;
mod output;
mod pareto;
mod png;
mod style;

pub use curves::{MetricPanel, MetricSeries, TrainingCurvesPlot};
pub use error::{Error, Result};
pub use exits::{
    AccuracyDistributionPlot, ExitAccuracies, ExitFractions, ExitsPerClassPlot,
    SampleDistributionPlot,
};
pub use image_grid::ImageGridPlot;
pub use output::FigureFiles;
pub use pareto::{ParetoCurve, ParetoPlot, ParetoPoint, StagePoint};
