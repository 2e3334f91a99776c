//! A backend wrapper that sets text glyph by glyph at the positions the font's
//! metrics give, instead of plotters' ab_glyph layout (which drops each
//! glyph's left side bearing and places "centred" text a few pixels high).
//! Everything else is passed through to the wrapped backend untouched.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef};
use plotters::prelude::DrawingBackend;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind, FontFamily,
    FontStyle, FontTransform,
};

use crate::error::Error;

/// The embedded font as ab_glyph reads it, with the two numbers that turn
/// its font units into pixels.
struct Metrics {
    font: FontRef<'static>,
    /// `ascent - descent`; ab_glyph's (and so plotters') pixel size `s` means
    /// `s / height` pixels per font unit.
    height: f32,
    /// Units per em.
    units_per_em: f32,
}

impl Metrics {
    /// Reads `font`; [`Error::Font`] if it is not a usable TrueType font.
    fn parse(font: &'static [u8]) -> crate::Result<Self> {
        let font = FontRef::try_from_slice(font).map_err(|_| Error::Font)?;
        let height = font.height_unscaled();
        let units_per_em = font.units_per_em().ok_or(Error::Font)?;
        if !(height > 0.0 && units_per_em > 0.0) {
            return Err(Error::Font);
        }
        Ok(Self {
            font,
            height,
            units_per_em,
        })
    }

    /// Each char of `text` with the left edge of its outline (pen position
    /// plus left side bearing, which in DejaVu Sans is the outline's `xMin`),
    /// and the total advance, in font units (kerning included).
    fn ink_edges(&self, text: &str) -> (Vec<(char, f32)>, f32) {
        let f = &self.font;
        let mut edges = Vec::with_capacity(text.len());
        let mut pen = 0.0;
        let mut prev = None;
        for c in text.chars() {
            let g = f.glyph_id(c);
            if let Some(p) = prev {
                pen += f.kern_unscaled(p, g);
            }
            edges.push((c, pen + f.h_side_bearing_unscaled(g)));
            pen += f.h_advance_unscaled(g);
            prev = Some(g);
        }
        (edges, pen)
    }

    /// Width of `text` in pixels at ab_glyph pixel size `size`.
    fn width(&self, text: &str, size: f64) -> f64 {
        f64::from(self.ink_edges(text).1) * size / f64::from(self.height)
    }
}

/// Metrics of the embedded font, read once.
fn metrics() -> crate::Result<&'static Metrics> {
    static M: OnceLock<Option<Metrics>> = OnceLock::new();
    M.get_or_init(|| Metrics::parse(crate::output::font_bytes()).ok())
        .as_ref()
        .ok_or(Error::Font)
}

/// Baseline offsets below the anchor, in em, matching what SVG renderers do
/// with plotters' `dy` attributes (`0.76em` top, `0.5ex` centre, `-0.5ex`
/// bottom), with the centre on the middle of digits and capitals.
const BASELINE_TOP: f64 = 0.76;
const BASELINE_CENTER: f64 = 0.36;
const BASELINE_BOTTOM: f64 = -0.22;

/// Wraps a backend so its text is laid out with [`Metrics`].
pub(crate) struct GlyphBackend<B> {
    inner: B,
    metrics: &'static Metrics,
}

impl<B> GlyphBackend<B> {
    pub fn new(inner: B) -> crate::Result<Self> {
        Ok(Self {
            inner,
            metrics: metrics()?,
        })
    }
}

/// `S` with its anchor replaced by left/top, used to draw one glyph at an
/// exact position.
struct TopLeft<'a, S>(&'a S);

impl<S: BackendTextStyle> BackendTextStyle for TopLeft<'_, S> {
    type FontError = S::FontError;

    fn color(&self) -> BackendColor {
        self.0.color()
    }
    fn size(&self) -> f64 {
        self.0.size()
    }
    fn transform(&self) -> FontTransform {
        self.0.transform()
    }
    fn style(&self) -> FontStyle {
        self.0.style()
    }
    fn anchor(&self) -> Pos {
        Pos::new(HPos::Left, VPos::Top)
    }
    fn family(&self) -> FontFamily<'_> {
        self.0.family()
    }
    #[allow(clippy::type_complexity)]
    fn layout_box(&self, text: &str) -> Result<((i32, i32), (i32, i32)), Self::FontError> {
        self.0.layout_box(text)
    }
    fn draw<E, DrawFunc: FnMut(i32, i32, BackendColor) -> Result<(), E>>(
        &self,
        text: &str,
        pos: BackendCoord,
        draw: DrawFunc,
    ) -> Result<Result<(), E>, Self::FontError> {
        self.0.draw(text, pos, draw)
    }
}

impl<B: DrawingBackend> DrawingBackend for GlyphBackend<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let (_, h) = self.inner.estimate_text_size(text, style)?;
        Ok((self.metrics.width(text, style.size()).round() as u32, h))
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let m = self.metrics;
        let size = style.size();
        let px_per_unit = size / f64::from(m.height);
        let em = f64::from(m.units_per_em) * px_per_unit;
        let (edges, total) = m.ink_edges(text);
        let width = f64::from(total) * px_per_unit;
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        let baseline = em
            * match anchor.v_pos {
                VPos::Top => BASELINE_TOP,
                VPos::Center => BASELINE_CENTER,
                VPos::Bottom => BASELINE_BOTTOM,
            };
        // plotters' glyph renderer puts the baseline `size / 2` below the
        // point it is given and the left edge of the ink at that point.
        let oy = (baseline - size / 2.0).round() as i32;
        let trans = style.transform();
        let one = TopLeft(style);
        let mut buf = [0u8; 4];
        for (c, edge) in edges {
            if c.is_whitespace() {
                continue;
            }
            let ox = (dx + f64::from(edge) * px_per_unit).floor() as i32;
            let (tx, ty) = trans.transform(ox, oy);
            self.inner
                .draw_text(c.encode_utf8(&mut buf), &one, (pos.0 + tx, pos.1 + ty))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dejavu() -> &'static Metrics {
        metrics().unwrap()
    }

    fn edge(text: &str, i: usize) -> f32 {
        dejavu().ink_edges(text).0[i].1
    }

    #[test]
    fn dejavu_sans_metrics_match_the_font() {
        let m = dejavu();
        // head.unitsPerEm and hhea ascender/descender of DejaVu Sans 2.37.
        assert_eq!(m.units_per_em, 2048.0);
        assert_eq!(m.height, 1901.0 + 483.0);
        // Advance widths from the font's hmtx table.
        assert_eq!(m.ink_edges(" ").1, 651.0);
        assert_eq!(m.ink_edges("0").1, 1303.0);
        assert_eq!(m.ink_edges("j").1, 569.0);
        // 'j' hangs left of the pen, 'l' starts right of it.
        assert_eq!(edge("j", 0), -37.0);
        assert_eq!(edge("l", 0), 193.0);
        assert_eq!(edge("T", 0), -6.0);
        // Pairs from the font's kern table: 'e' after 'T' moves left by 348
        // units, 'V' after 'A' by 131.
        assert_eq!(edge("Te", 1), 1251.0 - 348.0 + edge("e", 0));
        let advance = |t: &str| m.ink_edges(t).1;
        assert_eq!(edge("AV", 1), advance("A") - 131.0 + edge("V", 0));
        assert_eq!(advance("AV"), advance("A") - 131.0 + advance("V"));
    }

    #[test]
    fn width_is_the_kerned_advance_in_pixels() {
        let m = dejavu();
        let w = m.width("Te", 20.0);
        assert!((m.width("Te", 40.0) - 2.0 * w).abs() < 1e-9);
        let units = 1251.0 - 348.0 + m.ink_edges("e").1;
        assert!((w - f64::from(units) * 20.0 / f64::from(m.height)).abs() < 1e-9);
    }

    #[test]
    fn a_corrupt_font_is_an_error() {
        assert!(matches!(Metrics::parse(b"not a font"), Err(Error::Font)));
        let bytes = crate::output::font_bytes();
        assert!(matches!(Metrics::parse(&bytes[..64]), Err(Error::Font)));
    }
}
