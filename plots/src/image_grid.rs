//! A grid of sample images per row (a class, or the stage where a policy
//! stopped them), for previewing a data set and for the exit gallery, with
//! an optional caption under each image.

use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use crate::error::{check, Error, Result};
use crate::output::{write_figure, DrawResult, Figure, FigureFiles, Target, FONT};
use crate::style;

const NAME: &str = "image grid";
const PAD: u32 = 24;
const GAP: u32 = 6;
const TITLE_H: u32 = 62;
/// Largest canvas side accepted, in pixels.
const MAX_SIDE: u32 = 16_384;

/// Sample images, `per_class` per class, one row per class.
///
/// Images are taken in index order: the first `per_class` images of each class
/// (shuffle beforehand for a random preview). Each is upscaled by `scale` with
/// nearest-neighbour sampling, so every source pixel is a `scale x scale`
/// block (in the SVG the original-size image is embedded and drawn with
/// `image-rendering: pixelated`).
#[derive(Debug, Clone, Copy)]
pub struct ImageGridPlot<'a> {
    /// Figure title, e.g. `"Fashion-MNIST (train): 8 images per class"`.
    pub title: &'a str,
    /// Pixel values in `[0, 1]`, channel-first.
    ///
    /// # Shapes
    /// `images: [n, c, h, w]` flattened, `c` = 1 (grey) or 3 (RGB)
    pub images: &'a [f32],
    /// `[n, c, h, w]`
    pub shape: [usize; 4],
    /// Class index of every image.
    ///
    /// # Shapes
    /// `labels: [n]`, each `< class_names.len()`
    pub labels: &'a [usize],
    /// Row labels, indexed by class.
    pub class_names: &'a [String],
    /// Images per row (`k`).
    pub per_class: usize,
    /// Integer upscaling factor, 1 to 16 (3 makes a 28 px digit 84 px).
    pub scale: u32,
    /// A caption under every image (e.g. its prediction); empty for none.
    ///
    /// # Shapes
    /// `captions: [n]` or `[]`
    pub captions: &'a [String],
    /// Images to mark (a red frame and caption, e.g. wrong predictions);
    /// empty for none.
    ///
    /// # Shapes
    /// `flagged: [n]` or `[]`
    pub flagged: &'a [bool],
}

/// Height of the caption line under each image.
const CAPTION_H: u32 = 20;
/// The colour of flagged images' frames and captions.
const FLAG: RGBColor = RGBColor(200, 30, 30);

/// Where everything goes, shared by the PNG and SVG renderings.
struct Layout {
    width: u32,
    height: u32,
    label_w: u32,
    tile_w: u32,
    tile_h: u32,
    /// Tile plus caption.
    row_h: u32,
    /// Per class: indices of the images shown.
    rows: Vec<Vec<usize>>,
}

impl<'a> ImageGridPlot<'a> {
    fn validate(&self) -> Result<()> {
        check::title(NAME, self.title)?;
        let [n, c, h, w] = self.shape;
        let fail = |message: String| {
            Err(Error::Invalid {
                figure: NAME,
                message,
            })
        };
        if c != 1 && c != 3 {
            return fail(format!(
                "images have {c} channels; 1 (grey) or 3 (RGB) are supported"
            ));
        }
        if h == 0 || w == 0 {
            return fail(format!("image size {h}x{w} is empty"));
        }
        let expected = n.checked_mul(c * h * w).ok_or_else(|| Error::Invalid {
            figure: NAME,
            message: format!("shape {:?} overflows", self.shape),
        })?;
        check::len(
            NAME,
            || format!("images (shape {:?})", self.shape),
            self.images.len(),
            expected,
        )?;
        check::len(NAME, || "labels".into(), self.labels.len(), n)?;
        if !self.captions.is_empty() {
            check::len(NAME, || "captions".into(), self.captions.len(), n)?;
        }
        if !self.flagged.is_empty() {
            check::len(NAME, || "flagged".into(), self.flagged.len(), n)?;
        }
        check::non_empty(NAME, "class_names", self.class_names)?;
        if self.per_class == 0 {
            return fail("per_class is 0".into());
        }
        if !(1..=16).contains(&self.scale) {
            return fail(format!("scale {} is outside 1..=16", self.scale));
        }
        if let Some((i, l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l >= self.class_names.len())
        {
            return fail(format!(
                "label {l} of image {i} has no class name ({} names given)",
                self.class_names.len()
            ));
        }
        let per_image = c * h * w;
        for &i in self.rows().iter().flatten() {
            for (j, v) in self.images[i * per_image..(i + 1) * per_image]
                .iter()
                .enumerate()
            {
                let v = f64::from(*v);
                check::in_range(
                    NAME,
                    || format!("image {i} pixel {j} (unnormalised values expected)"),
                    v,
                    0.0,
                    1.0,
                )?;
            }
        }
        let l = self.layout();
        if l.width > MAX_SIDE || l.height > MAX_SIDE {
            return fail(format!(
                "the grid would be {}x{} px (at most {MAX_SIDE} per side); lower scale or per_class",
                l.width, l.height
            ));
        }
        Ok(())
    }

    /// Writes `<stem>.svg` and `<stem>.png`.
    ///
    /// # Errors
    /// [`crate::Error`] on a shape that does not match the data, channels
    /// other than 1 or 3, labels without a class name, pixel values outside
    /// `[0, 1]` or not finite in the images shown, `per_class` of 0, `scale`
    /// outside `1..=16`, a canvas over 16384 px, or a failed write.
    pub fn write(&self, stem: impl AsRef<Path>) -> Result<FigureFiles> {
        // The layout measures text, so the font must be there before validation.
        crate::output::ensure_font()?;
        self.validate()?;
        write_figure(self, stem.as_ref())
    }

    fn rows(&self) -> Vec<Vec<usize>> {
        let mut rows = vec![Vec::new(); self.class_names.len()];
        for (i, &l) in self.labels.iter().enumerate() {
            if let Some(r) = rows.get_mut(l) {
                if r.len() < self.per_class {
                    r.push(i);
                }
            }
        }
        rows
    }

    fn layout(&self) -> Layout {
        let [_, _, h, w] = self.shape;
        let measure = |text: &str, size: f64| {
            FontDesc::new(FontFamily::Name(FONT), size, FontStyle::Normal)
                .box_size(text)
                .map(|(w, _)| w)
                .unwrap_or(text.len() as u32 * size as u32 / 2)
        };
        let label_w = self
            .class_names
            .iter()
            .map(|n| measure(n, style::LEGEND_SIZE))
            .max()
            .unwrap_or(0)
            + 20;
        let tile_w = (w as u32).saturating_mul(self.scale);
        let tile_h = (h as u32).saturating_mul(self.scale);
        let k = self.per_class as u32;
        let grid_w = k.saturating_mul(tile_w + GAP) - GAP;
        let rows = self.rows();
        let caption_h = if self.captions.is_empty() {
            0
        } else {
            CAPTION_H
        };
        let row_h = tile_h + caption_h;
        let grid_h = (rows.len() as u32).saturating_mul(row_h + GAP) - GAP;
        let title_w = measure(self.title, style::TITLE_SIZE) + 2 * PAD;
        let width = (2 * PAD + label_w + grid_w).max(title_w).max(400);
        Layout {
            width,
            height: TITLE_H + grid_h + PAD,
            label_w,
            tile_w,
            tile_h,
            row_h,
            rows,
        }
    }

    /// Top-left pixel of tile `j` of row `r`.
    fn tile_pos(&self, l: &Layout, r: usize, j: usize) -> (i32, i32) {
        let k = self.per_class as u32;
        let grid_w = k * (l.tile_w + GAP) - GAP;
        // Centre the label column plus grid when the title makes the canvas wider.
        let x0 = (l.width - (l.label_w + grid_w)) / 2 + l.label_w;
        (
            (x0 + j as u32 * (l.tile_w + GAP)) as i32,
            (TITLE_H + r as u32 * (l.row_h + GAP)) as i32,
        )
    }

    /// Image `i` as RGB bytes, upscaled by `scale`.
    fn tile_rgb(&self, i: usize, scale: usize) -> Vec<u8> {
        let [_, c, h, w] = self.shape;
        let img = &self.images[i * c * h * w..(i + 1) * c * h * w];
        let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        let mut out = Vec::with_capacity(h * w * scale * scale * 3);
        for y in 0..h * scale {
            for x in 0..w * scale {
                let (sy, sx) = (y / scale, x / scale);
                for ch in 0..3 {
                    let src = if c == 1 { 0 } else { ch };
                    out.push(byte(img[src * h * w + sy * w + sx]));
                }
            }
        }
        out
    }

    /// Image `i` at its own size as a PNG (grey stays grey).
    fn tile_png(&self, i: usize) -> Result<Vec<u8>> {
        let [_, c, h, w] = self.shape;
        let img = &self.images[i * c * h * w..(i + 1) * c * h * w];
        let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        let mut px = Vec::with_capacity(h * w * c);
        for p in 0..h * w {
            for ch in 0..c {
                px.push(byte(img[ch * h * w + p]));
            }
        }
        crate::png::encode(w as u32, h as u32, c as u8, &px).map_err(|e| Error::Draw {
            figure: NAME,
            message: format!("encoding image {i} as PNG: {e}"),
        })
    }
}

impl Figure for ImageGridPlot<'_> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn size(&self) -> (u32, u32) {
        let l = self.layout();
        (l.width, l.height)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        target: Target,
    ) -> DrawResult<DB> {
        let l = self.layout();
        root.draw(&Text::new(
            self.title.to_string(),
            ((l.width / 2) as i32, 16),
            style::font_anchored(style::TITLE_SIZE, HPos::Center, VPos::Top),
        ))?;
        for (r, row) in l.rows.iter().enumerate() {
            let (x, y) = self.tile_pos(&l, r, 0);
            root.draw(&Text::new(
                self.class_names[r].clone(),
                (x - 14, y + (l.tile_h / 2) as i32),
                style::font_anchored(style::LEGEND_SIZE, HPos::Right, VPos::Center),
            ))?;
            if row.is_empty() {
                root.draw(&Text::new(
                    "(no images)",
                    (x, y + (l.tile_h / 2) as i32),
                    style::font_anchored(style::NOTE_SIZE, HPos::Left, VPos::Center)
                        .color(&style::MUTED),
                ))?;
            }
            for (j, &i) in row.iter().enumerate() {
                let pos = self.tile_pos(&l, r, j);
                if target == Target::Png {
                    let buf = self.tile_rgb(i, self.scale as usize);
                    if let Some(el) =
                        BitMapElement::with_owned_buffer(pos, (l.tile_w, l.tile_h), buf)
                    {
                        root.draw(&el)?;
                    }
                }
                let flagged = self.flagged.get(i).copied().unwrap_or(false);
                if flagged {
                    let (x, y) = pos;
                    let (w, h) = (l.tile_w as i32, l.tile_h as i32);
                    for d in 0..2 {
                        root.draw(&Rectangle::new(
                            [(x - 1 - d, y - 1 - d), (x + w + d, y + h + d)],
                            FLAG.stroke_width(1),
                        ))?;
                    }
                }
                if let Some(c) = self.captions.get(i) {
                    let colour = if flagged { FLAG } else { style::MUTED };
                    root.draw(&Text::new(
                        c.clone(),
                        (pos.0 + (l.tile_w / 2) as i32, pos.1 + l.tile_h as i32 + 3),
                        style::font_anchored(style::NOTE_SIZE * 0.8, HPos::Center, VPos::Top)
                            .color(&colour),
                    ))?;
                }
            }
        }
        Ok(())
    }

    fn svg_extra(&self) -> Result<String> {
        let l = self.layout();
        let mut s = String::new();
        for (r, row) in l.rows.iter().enumerate() {
            for (j, &i) in row.iter().enumerate() {
                let (x, y) = self.tile_pos(&l, r, j);
                let _ = writeln!(
                    s,
                    r#"<image x="{x}" y="{y}" width="{}" height="{}" preserveAspectRatio="none" image-rendering="optimizeSpeed" style="image-rendering:pixelated" href="data:image/png;base64,{}"/>"#,
                    l.tile_w,
                    l.tile_h,
                    crate::png::base64(&self.tile_png(i)?)
                );
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3 RGB 2x2 images and 1 grey-equivalent check: every source pixel must
    /// become an exact `scale x scale` block in the PNG, and the SVG must
    /// embed the unscaled pixels.
    #[test]
    fn upscaling_is_pixel_exact_in_png_and_svg() {
        let (n, c, h, w) = (3usize, 3usize, 2usize, 2usize);
        // Values k/255 so the byte conversion is exact.
        let px: Vec<f32> = (0..n * c * h * w)
            .map(|k| (k * 7 % 256) as f32 / 255.0)
            .collect();
        let labels = [1usize, 0, 1];
        let names = vec!["cat".to_string(), "dog".to_string()];
        let grid = ImageGridPlot {
            title: "tiny RGB preview",
            images: &px,
            shape: [n, c, h, w],
            labels: &labels,
            class_names: &names,
            per_class: 2,
            scale: 4,
            captions: &[],
            flagged: &[],
        };
        let dir = tempfile::tempdir().unwrap();
        let files = grid.write(dir.path().join("grid")).unwrap();
        let img = image::open(&files.png).unwrap().to_rgb8();
        let layout = grid.layout();
        assert_eq!(img.dimensions(), (layout.width, layout.height));
        // Row 0 (cat) shows image 1; row 1 (dog) shows images 0 and 2.
        let shown = [(0usize, 0usize, 1usize), (1, 0, 0), (1, 1, 2)];
        let svg = std::fs::read_to_string(&files.svg).unwrap();
        for (r, j, i) in shown {
            let (x0, y0) = grid.tile_pos(&layout, r, j);
            let mut raw = vec![];
            for y in 0..h {
                for x in 0..w {
                    let want: Vec<u8> = (0..c)
                        .map(|ch| ((i * c * h * w + ch * h * w + y * w + x) * 7 % 256) as u8)
                        .collect();
                    raw.extend_from_slice(&want);
                    for dy in 0..4 {
                        for dx in 0..4 {
                            let p = img.get_pixel(
                                x0 as u32 + (x * 4 + dx) as u32,
                                y0 as u32 + (y * 4 + dy) as u32,
                            );
                            assert_eq!(
                                p.0.to_vec(),
                                want,
                                "image {i} pixel ({x},{y}) block ({dx},{dy})"
                            );
                        }
                    }
                }
            }
            let tile =
                crate::png::base64(&crate::png::encode(w as u32, h as u32, 3, &raw).unwrap());
            assert!(svg.contains(&format!("x=\"{x0}\" y=\"{y0}\" width=\"8\" height=\"8\"")));
            assert!(svg.contains(&tile), "tile of image {i} not embedded");
        }
        // The gap right of the last tile in row 0 stays white.
        let (x0, y0) = grid.tile_pos(&layout, 0, 1);
        assert_eq!(
            img.get_pixel(x0 as u32 + 2, y0 as u32 + 2).0,
            [255, 255, 255]
        );
    }
}
