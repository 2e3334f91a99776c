//! Shared look: palette, markers, fonts, titles, legend strips, colour map, ticks.

use plotters::coord::Shift;
use plotters::element::{DashedPathElement, DynElement, IntoDynElement};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::output::{DrawResult, FONT};

/// Default canvas of single-panel figures.
pub(crate) const WIDTH: u32 = 1000;
pub(crate) const HEIGHT: u32 = 700;

// Font sizes are even: plotters' glyph renderer rounds `size / 2` per glyph,
// so odd sizes make the baseline wobble by a pixel.
pub(crate) const TITLE_SIZE: f64 = 26.0;
pub(crate) const LABEL_SIZE: f64 = 20.0;
pub(crate) const TICK_SIZE: f64 = 18.0;
pub(crate) const LEGEND_SIZE: f64 = 18.0;
pub(crate) const NOTE_SIZE: f64 = 16.0;

pub(crate) const GRID: RGBColor = RGBColor(225, 225, 225);
pub(crate) const AXIS: RGBColor = RGBColor(60, 60, 60);
pub(crate) const INK: RGBColor = RGBColor(25, 25, 25);
pub(crate) const MUTED: RGBColor = RGBColor(110, 110, 110);

/// Okabe–Ito colours (distinguishable with the common colour-vision
/// deficiencies; the hard-to-see yellow left out), then darker extras.
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(0, 0, 0),       // black
    RGBColor(140, 86, 75),   // brown
    RGBColor(127, 127, 127), // grey
    RGBColor(120, 40, 140),  // purple
];

pub(crate) fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Point markers, cycled together with the colours (at a different period, so
/// series 0 and 10 still differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    Cross,
    Star,
}

const MARKERS: [Marker; 6] = [
    Marker::Circle,
    Marker::Square,
    Marker::TriangleUp,
    Marker::Diamond,
    Marker::TriangleDown,
    Marker::Cross,
];

pub(crate) fn marker(i: usize) -> Marker {
    MARKERS[i % MARKERS.len()]
}

/// A marker of radius `r` pixels centred on `at` (any coordinate system).
pub(crate) fn marker_element<'a, DB, C>(
    m: Marker,
    at: C,
    r: i32,
    col: RGBColor,
) -> DynElement<'a, DB, C>
where
    DB: DrawingBackend + 'a,
    C: Clone + 'a,
{
    let fill = col.filled();
    let edge = ShapeStyle::from(&WHITE).stroke_width(1);
    let base = EmptyElement::at(at);
    match m {
        Marker::Circle => {
            (base + Circle::new((0, 0), r, fill) + Circle::new((0, 0), r, edge)).into_dyn()
        }
        Marker::Square => {
            let s = r * 8 / 10 + 1;
            (base
                + Rectangle::new([(-s, -s), (s, s)], fill)
                + Rectangle::new([(-s, -s), (s, s)], edge))
            .into_dyn()
        }
        Marker::TriangleUp => {
            let pts = vec![(0, -r - 1), (r + 1, r * 3 / 4), (-r - 1, r * 3 / 4)];
            (base + Polygon::new(pts, fill)).into_dyn()
        }
        Marker::TriangleDown => {
            let pts = vec![(0, r + 1), (r + 1, -r * 3 / 4), (-r - 1, -r * 3 / 4)];
            (base + Polygon::new(pts, fill)).into_dyn()
        }
        Marker::Diamond => {
            let s = r + 1;
            (base + Polygon::new(vec![(0, -s), (s, 0), (0, s), (-s, 0)], fill)).into_dyn()
        }
        Marker::Cross => {
            let st = col.stroke_width(3);
            (base
                + PathElement::new(vec![(-r, -r), (r, r)], st)
                + PathElement::new(vec![(-r, r), (r, -r)], st))
            .into_dyn()
        }
        Marker::Star => {
            let (ro, ri) = (f64::from(r) * 1.5, f64::from(r) * 0.65);
            let pts: Vec<(i32, i32)> = (0..10)
                .map(|k| {
                    let a = std::f64::consts::PI * (k as f64) / 5.0 - std::f64::consts::FRAC_PI_2;
                    let rad = if k % 2 == 0 { ro } else { ri };
                    (
                        (rad * a.cos()).round() as i32,
                        (rad * a.sin()).round() as i32,
                    )
                })
                .collect();
            (base + Polygon::new(pts, fill)).into_dyn()
        }
    }
}

pub(crate) fn font(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&INK)
}

pub(crate) fn font_anchored(size: f64, h: HPos, v: VPos) -> TextStyle<'static> {
    font(size).pos(Pos::new(h, v))
}

/// Width in pixels of `text` at `size` (0 if the font cannot measure it).
pub(crate) fn text_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    size: f64,
) -> u32 {
    area.estimate_text_size(text, &font(size))
        .map(|(w, _)| w)
        .unwrap_or(0)
}

/// Largest even font size `<= size` (down to `min`) at which `text` fits in `width` px.
pub(crate) fn fit_size<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    size: f64,
    min: f64,
    width: u32,
) -> f64 {
    let mut s = (size / 2.0).floor() * 2.0;
    while s > min && text_width(area, text, s) > width {
        s -= 2.0;
    }
    s
}

/// Splits `text` at the space nearest its middle (for two-line titles).
fn split_in_two(text: &str) -> Option<(&str, &str)> {
    let mid = text.len() / 2;
    let best = text
        .char_indices()
        .filter(|&(_, c)| c == ' ')
        .map(|(i, _)| i)
        .min_by_key(|&i| i.abs_diff(mid))?;
    Some((text[..best].trim_end(), text[best + 1..].trim_start()))
}

/// Draws `title` centred at the top of `root`, shrinking it or breaking it onto
/// two lines if it is too wide, and returns the area below it.
pub(crate) fn draw_title<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    let (w, _) = root.dim_in_pixel();
    let avail = w.saturating_sub(40);
    let size = fit_size(root, title, TITLE_SIZE, 18.0, avail);
    let lines: Vec<&str> = if text_width(root, title, size) <= avail {
        vec![title]
    } else {
        match split_in_two(title) {
            Some((a, b)) => vec![a, b],
            None => vec![title],
        }
    };
    let size = lines
        .iter()
        .map(|l| fit_size(root, l, TITLE_SIZE, 12.0, avail))
        .fold(TITLE_SIZE, f64::min);
    let line_h = (size * 1.3).round() as i32;
    let top = 14;
    for (k, line) in lines.iter().enumerate() {
        root.draw(&Text::new(
            line.to_string(),
            ((w / 2) as i32, top + k as i32 * line_h),
            font_anchored(size, HPos::Center, VPos::Top),
        ))?;
    }
    let used = top + lines.len() as i32 * line_h + 6;
    Ok(root.split_vertically(used).1)
}

/// Sets `label` in at most `max_w` px: at the tick size if it fits, else
/// smaller (down to 12 px), else on two lines broken at the space nearest the
/// middle. Returns the lines and the font size.
pub(crate) fn fit_label<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    label: &str,
    max_w: u32,
) -> (Vec<String>, f64) {
    let size = fit_size(area, label, TICK_SIZE, 14.0, max_w);
    if text_width(area, label, size) <= max_w {
        return (vec![label.to_string()], size);
    }
    if let Some((a, b)) = split_in_two(label) {
        let size = fit_size(area, a, TICK_SIZE, 12.0, max_w)
            .min(fit_size(area, b, TICK_SIZE, 12.0, max_w));
        return (vec![a.to_string(), b.to_string()], size);
    }
    (
        vec![label.to_string()],
        fit_size(area, label, TICK_SIZE, 12.0, max_w),
    )
}

/// Draws category names centred under `x` positions of a chart whose x axis
/// carries empty tick labels (so long names can shrink or wrap instead of
/// overlapping). `y` is the data value at the bottom of the plot.
pub(crate) fn draw_category_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: &DrawingArea<
        DB,
        plotters::coord::cartesian::Cartesian2d<crate::axis::Axis, crate::axis::Axis>,
    >,
    labels: &[(f64, &str)],
    y: f64,
    column_px: u32,
) -> DrawResult<DB> {
    let max_w = (f64::from(column_px) * 0.94) as u32;
    let fitted: Vec<(Vec<String>, f64)> = labels
        .iter()
        .map(|(_, l)| fit_label(root, l, max_w))
        .collect();
    // One size for all labels, so the row looks even.
    let size = fitted.iter().map(|(_, s)| *s).fold(TICK_SIZE, f64::min);
    for ((x, _), (lines, _)) in labels.iter().zip(&fitted) {
        for (k, line) in lines.iter().enumerate() {
            plot.draw(
                &(EmptyElement::at((*x, y))
                    + Text::new(
                        line.clone(),
                        (0, 12 + k as i32 * (size * 1.15).round() as i32),
                        font_anchored(size, HPos::Center, VPos::Top),
                    )),
            )?;
        }
    }
    Ok(())
}

/// What a legend entry shows left of its label.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Glyph {
    /// A line, optionally dashed, with an optional marker on it.
    Line {
        color: RGBColor,
        dashed: bool,
        marker: Option<Marker>,
    },
    /// A filled box (bars, areas).
    Swatch(RGBColor),
    /// A marker alone.
    Point { color: RGBColor, marker: Marker },
}

#[derive(Debug, Clone)]
pub(crate) struct LegendEntry {
    pub label: String,
    pub glyph: Glyph,
}

const GLYPH_W: i32 = 40;
const GLYPH_GAP: i32 = 8;
const ENTRY_GAP: i32 = 30;
const ROW_H: i32 = 28;

/// Greedy line breaking of legend entries into rows that fit `width`.
fn legend_rows<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    width: i32,
) -> Vec<Vec<(usize, i32)>> {
    let mut rows: Vec<Vec<(usize, i32)>> = vec![];
    let mut row: Vec<(usize, i32)> = vec![];
    let mut used = 0;
    for (i, e) in entries.iter().enumerate() {
        let w = GLYPH_W + GLYPH_GAP + text_width(area, &e.label, LEGEND_SIZE) as i32;
        let need = if row.is_empty() {
            w
        } else {
            used + ENTRY_GAP + w
        };
        if !row.is_empty() && need > width {
            rows.push(std::mem::take(&mut row));
            used = w;
        } else {
            used = need;
        }
        row.push((i, w));
    }
    if !row.is_empty() {
        rows.push(row);
    }
    rows
}

/// Height a legend strip for `entries` needs across the full width of `area`.
pub(crate) fn legend_height<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
) -> u32 {
    if entries.is_empty() {
        return 0;
    }
    let w = area.dim_in_pixel().0 as i32 - 40;
    (legend_rows(area, entries, w).len() as i32 * ROW_H + 12) as u32
}

/// Draws a legend as centred rows of entries across the top of `area` and
/// returns the area below it. Outside the plot, so it never hides data.
pub(crate) fn draw_legend_strip<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
) -> Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    if entries.is_empty() {
        return Ok(area.clone());
    }
    let (w, _) = area.dim_in_pixel();
    let rows = legend_rows(area, entries, w as i32 - 40);
    for (r, row) in rows.iter().enumerate() {
        let total: i32 =
            row.iter().map(|&(_, w)| w).sum::<i32>() + ENTRY_GAP * (row.len() as i32 - 1);
        let mut x = (w as i32 - total) / 2;
        let y = 6 + r as i32 * ROW_H + ROW_H / 2;
        for &(i, ew) in row {
            let e = &entries[i];
            draw_glyph(area, e.glyph, (x, y))?;
            area.draw(&Text::new(
                e.label.clone(),
                (x + GLYPH_W + GLYPH_GAP, y),
                font_anchored(LEGEND_SIZE, HPos::Left, VPos::Center),
            ))?;
            x += ew + ENTRY_GAP;
        }
    }
    Ok(area.split_vertically(legend_height(area, entries)).1)
}

fn draw_glyph<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    glyph: Glyph,
    (x, y): (i32, i32),
) -> DrawResult<DB> {
    match glyph {
        Glyph::Line {
            color,
            dashed,
            marker,
        } => {
            let st = color.stroke_width(3);
            if dashed {
                area.draw(&DashedPathElement::new(
                    vec![(x, y), (x + GLYPH_W, y)],
                    7,
                    5,
                    st,
                ))?;
            } else {
                area.draw(&PathElement::new(vec![(x, y), (x + GLYPH_W, y)], st))?;
            }
            if let Some(m) = marker {
                area.draw(&marker_element(m, (x + GLYPH_W / 2, y), 6, color))?;
            }
        }
        Glyph::Swatch(color) => {
            area.draw(&Rectangle::new(
                [(x + 6, y - 9), (x + GLYPH_W - 6, y + 9)],
                color.filled(),
            ))?;
        }
        Glyph::Point { color, marker } => {
            area.draw(&marker_element(marker, (x + GLYPH_W / 2, y), 7, color))?;
        }
    }
    Ok(())
}

/// Viridis, sampled at nine points and interpolated linearly: perceptually
/// uniform, readable in grey-scale print and by colour-blind readers.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
];

/// Colour of `t` in `[0, 1]` on the viridis map.
pub(crate) fn viridis(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0) * (VIRIDIS.len() - 1) as f64;
    let i = (t.floor() as usize).min(VIRIDIS.len() - 2);
    let f = t - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |x: u8, y: u8| (f64::from(x) + (f64::from(y) - f64::from(x)) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Black or white, whichever reads better on `bg`.
pub(crate) fn ink_on(bg: RGBColor) -> RGBColor {
    let l = 0.2126 * f64::from(bg.0) + 0.7152 * f64::from(bg.1) + 0.0722 * f64::from(bg.2);
    if l > 140.0 {
        INK
    } else {
        WHITE
    }
}

/// "Nice" linear ticks (steps of 1, 2 or 5 times a power of ten) covering
/// `[lo, hi]` with at most about `max_n` ticks, and the decimals to print them.
pub(crate) fn nice_ticks(lo: f64, hi: f64, max_n: usize) -> (Vec<f64>, usize) {
    let span = (hi - lo).abs().max(1e-12);
    let raw = span / max_n.max(2) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= max_n as f64)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let ticks = (first..=last).map(|k| k as f64 * step).collect();
    let decimals = if step >= 1.0 {
        0
    } else {
        // 2.5 * 10^-k needs one more decimal than 10^-k.
        let d = (-step.log10()).ceil() as usize;
        if ((step / 10f64.powi(-(d as i32))) - (step / 10f64.powi(-(d as i32))).round()).abs()
            > 1e-9
        {
            d + 1
        } else {
            d
        }
    };
    (ticks, decimals)
}

/// Ticks at 1, 2 and 5 times powers of ten inside `[lo, hi]` (`lo > 0`); if
/// that gives fewer than three, adds 3 and 7 multiples too; if more than
/// `max_n`, keeps only powers of ten (and 3 times them if still too few).
pub(crate) fn log_ticks(lo: f64, hi: f64, max_n: usize) -> Vec<f64> {
    let gen = |mults: &[f64]| -> Vec<f64> {
        let mut out = vec![];
        let mut p = 10f64.powf(lo.log10().floor());
        while p <= hi * 1.000_001 {
            for m in mults {
                let v = round_sig(p * m);
                if v >= lo * 0.999_999 && v <= hi * 1.000_001 {
                    out.push(v);
                }
            }
            p *= 10.0;
        }
        out
    };
    let mid = gen(&[1.0, 2.0, 5.0]);
    if mid.len() > max_n {
        let coarse = gen(&[1.0]);
        return if coarse.len() >= 3 {
            coarse
        } else {
            gen(&[1.0, 3.0])
        };
    }
    if mid.len() < 3 {
        let fine = gen(&[1.0, 2.0, 3.0, 5.0, 7.0]);
        if fine.len() > mid.len() {
            return fine;
        }
    }
    mid
}

fn round_sig(v: f64) -> f64 {
    // Powers of ten times small integers, without 0.30000000000000004.
    let p = 10f64.powf(v.log10().floor() - 3.0);
    (v / p).round() * p
}

/// Prints a tick value with no trailing zeros beyond what it needs.
pub(crate) fn fmt_tick(v: f64, decimals: usize) -> String {
    let v = if v.abs() < 1e-12 { 0.0 } else { v };
    format!("{v:.decimals$}")
}

/// Prints a log-axis tick (`0.05`, `0.2`, `1`, `20`, `100`).
pub(crate) fn fmt_log_tick(v: f64) -> String {
    if v >= 1.0 {
        format!("{}", v.round())
    } else {
        let d = (-v.log10()).ceil() as usize;
        let s = format!("{v:.d$}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_cover_range_with_round_steps() {
        let (t, d) = nice_ticks(0.0, 100.0, 10);
        assert_eq!(
            t,
            vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
        );
        assert_eq!(d, 0);
        let (t, d) = nice_ticks(7.3, 12.1, 8);
        assert_eq!(t, vec![8.0, 9.0, 10.0, 11.0, 12.0]);
        assert_eq!(d, 0);
        let (t, d) = nice_ticks(0.0, 0.9, 4);
        assert_eq!(t.len(), 4);
        assert!((t[1] - 0.25).abs() < 1e-12);
        assert_eq!(d, 2);
    }

    #[test]
    fn log_ticks_use_1_2_5() {
        assert_eq!(
            log_ticks(0.3, 150.0, 12),
            vec![0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert_eq!(log_ticks(0.01, 100.0, 6), vec![0.01, 0.1, 1.0, 10.0, 100.0]);
        assert_eq!(log_ticks(30.0, 110.0, 12), vec![30.0, 50.0, 70.0, 100.0]);
    }

    #[test]
    fn log_tick_labels() {
        assert_eq!(fmt_log_tick(0.05), "0.05");
        assert_eq!(fmt_log_tick(0.2), "0.2");
        assert_eq!(fmt_log_tick(1.0), "1");
        assert_eq!(fmt_log_tick(200.0), "200");
    }

    #[test]
    fn viridis_endpoints_and_ink() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(ink_on(viridis(0.0)), WHITE);
        assert_eq!(ink_on(viridis(1.0)), INK);
    }

    #[test]
    fn title_split_near_middle() {
        assert_eq!(split_in_two("aa bb cc dd"), Some(("aa bb", "cc dd")));
        assert_eq!(split_in_two("nospace"), None);
    }
}
