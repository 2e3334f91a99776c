//! A backend wrapper that sets text glyph by glyph at the positions the font's
//! metrics give, instead of plotters' ab_glyph layout (which drops each
//! glyph's left side bearing and places "centred" text a few pixels high).
//! Everything else is passed through to the wrapped backend untouched.

use std::sync::OnceLock;

use plotters::prelude::DrawingBackend;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind, FontFamily,
    FontStyle, FontTransform,
};

use crate::ttf::Metrics;

/// Metrics of the embedded font, parsed once; `None` if parsing failed, in
/// which case text falls back to plotters' own layout.
pub(crate) fn metrics() -> Option<&'static Metrics> {
    static M: OnceLock<Option<Metrics>> = OnceLock::new();
    M.get_or_init(|| Metrics::parse(crate::output::font_bytes()))
        .as_ref()
}

/// Baseline offsets below the anchor, in em, matching what SVG renderers do
/// with plotters' `dy` attributes (`0.76em` top, `0.5ex` centre, `-0.5ex`
/// bottom), with the centre on the middle of digits and capitals.
const BASELINE_TOP: f64 = 0.76;
const BASELINE_CENTER: f64 = 0.36;
const BASELINE_BOTTOM: f64 = -0.22;

/// Wraps a backend so its text is laid out with [`Metrics`].
pub(crate) struct CrispText<B> {
    inner: B,
    metrics: Option<&'static Metrics>,
}

impl<B> CrispText<B> {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            metrics: metrics(),
        }
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

impl<B: DrawingBackend> DrawingBackend for CrispText<B> {
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
        let (w, h) = self.inner.estimate_text_size(text, style)?;
        match self.metrics {
            Some(m) => Ok((m.width(text, style.size()).round() as u32, h)),
            None => Ok((w, h)),
        }
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let Some(m) = self.metrics else {
            return self.inner.draw_text(text, style, pos);
        };
        let size = style.size();
        let px_per_unit = size / f64::from(m.height);
        let em = f64::from(m.units_per_em) * px_per_unit;
        let (pens, total) = m.pen_positions(text);
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
        for (c, pen) in text.chars().zip(pens) {
            if c.is_whitespace() {
                continue;
            }
            let ox = (dx + (f64::from(pen) + f64::from(m.x_min(c))) * px_per_unit).floor() as i32;
            let (tx, ty) = trans.transform(ox, oy);
            self.inner
                .draw_text(c.encode_utf8(&mut buf), &one, (pos.0 + tx, pos.1 + ty))?;
        }
        Ok(())
    }
}
