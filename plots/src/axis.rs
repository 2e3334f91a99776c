//! A numeric axis (linear or logarithmic) with explicitly chosen ticks.
//!
//! plotters' own key-point override (`with_key_points`) drops the value
//! formatter of `f64` axes, so the mesh could not be drawn with it; this small
//! coordinate type keeps formatting available and lets every figure pick its
//! ticks with the same rules (see `style::nice_ticks`, `style::log_ticks`).

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

#[derive(Debug, Clone)]
pub(crate) struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<f64>,
}

impl Axis {
    /// Linear axis over `[lo, hi]` labelled at `ticks`.
    pub fn linear(lo: f64, hi: f64, ticks: Vec<f64>) -> Self {
        Self {
            lo,
            hi,
            log: false,
            ticks,
        }
    }

    /// Logarithmic axis over `[lo, hi]` (`0 < lo < hi`) labelled at `ticks`.
    pub fn log(lo: f64, hi: f64, ticks: Vec<f64>) -> Self {
        Self {
            lo,
            hi,
            log: true,
            ticks,
        }
    }

    /// Position of `v` along the axis, 0 at `lo` and 1 at `hi`.
    fn fraction(&self, v: f64) -> f64 {
        if self.hi == self.lo {
            return 0.5;
        }
        if self.log {
            // Non-positive values sit far below the axis instead of NaN.
            let v = v.max(self.lo * 1e-9);
            (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let len = f64::from(limit.1 - limit.0);
        limit.0 + (self.fraction(*v) * len + 1e-3).floor() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // No light grid lines: only the chosen ticks.
        if hint.weight().allow_light_points() {
            vec![]
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_linear_and_log() {
        let a = Axis::linear(0.0, 10.0, vec![]);
        assert_eq!(a.map(&5.0, (0, 100)), 50);
        assert_eq!(a.map(&0.0, (100, 0)), 100);
        let l = Axis::log(1.0, 100.0, vec![]);
        assert_eq!(l.map(&10.0, (0, 100)), 50);
        assert_eq!(l.map(&100.0, (0, 100)), 100);
        // Zero sits at 1e-9 * lo: 4.5 decades below the axis.
        assert_eq!(l.map(&0.0, (0, 100)), -450);
    }
}
