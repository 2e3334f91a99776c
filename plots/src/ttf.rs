//! The few TrueType tables needed to place glyphs: advance widths, outline
//! left edges, the character map and the vertical metrics ab_glyph scales by.
//!
//! plotters' ab_glyph text renderer draws every glyph at the pen position
//! without its left side bearing, which makes PNG text look unevenly spaced
//! ("thresho ld"). [`crate::crisp`] draws text glyph by glyph at the right
//! positions using these metrics.

use std::collections::HashMap;

/// Horizontal metrics of a TrueType font, in font units.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// `ascent - descent` as ab_glyph computes it; ab_glyph's pixel size `s`
    /// means `s / height` pixels per font unit.
    pub height: f32,
    /// Units per em.
    pub units_per_em: f32,
    /// Advance width per glyph id.
    advances: Vec<u16>,
    /// Outline `xMin` per glyph id (0 for glyphs without outline).
    x_mins: Vec<i16>,
    /// Character to glyph id (format 4 subtable, the Basic Multilingual Plane).
    cmap: HashMap<char, u16>,
    /// Pair kerning from the legacy `kern` table (what ab_glyph applies).
    kern: HashMap<(u16, u16), i16>,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(o)?, *b.get(o + 1)?]))
}

fn i16_at(b: &[u8], o: usize) -> Option<i16> {
    u16_at(b, o).map(|v| v as i16)
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(o)?,
        *b.get(o + 1)?,
        *b.get(o + 2)?,
        *b.get(o + 3)?,
    ]))
}

fn table<'a>(font: &'a [u8], tag: &[u8; 4]) -> Option<&'a [u8]> {
    let n = usize::from(u16_at(font, 4)?);
    (0..n).find_map(|i| {
        let rec = 12 + 16 * i;
        if font.get(rec..rec + 4)? == tag {
            let off = u32_at(font, rec + 8)? as usize;
            let len = u32_at(font, rec + 12)? as usize;
            font.get(off..off.checked_add(len)?)
        } else {
            None
        }
    })
}

fn parse_cmap(cmap: &[u8]) -> Option<HashMap<char, u16>> {
    let n = usize::from(u16_at(cmap, 2)?);
    let sub = (0..n).find_map(|i| {
        let rec = 4 + 8 * i;
        let (platform, encoding) = (u16_at(cmap, rec)?, u16_at(cmap, rec + 2)?);
        let off = u32_at(cmap, rec + 4)? as usize;
        let unicode_bmp = (platform == 3 && encoding == 1) || platform == 0;
        (unicode_bmp && u16_at(cmap, off)? == 4).then_some(off)
    })?;
    let s = cmap.get(sub..)?;
    let seg_x2 = usize::from(u16_at(s, 6)?);
    let ends = 14;
    let starts = ends + seg_x2 + 2;
    let deltas = starts + seg_x2;
    let ranges = deltas + seg_x2;
    let mut map = HashMap::new();
    for seg in 0..seg_x2 / 2 {
        let end = u16_at(s, ends + 2 * seg)?;
        let start = u16_at(s, starts + 2 * seg)?;
        let delta = u16_at(s, deltas + 2 * seg)?;
        let range_off = usize::from(u16_at(s, ranges + 2 * seg)?);
        if start == 0xFFFF {
            continue;
        }
        for code in start..=end {
            let gid = if range_off == 0 {
                code.wrapping_add(delta)
            } else {
                let at = ranges + 2 * seg + range_off + 2 * usize::from(code - start);
                match u16_at(s, at)? {
                    0 => 0,
                    g => g.wrapping_add(delta),
                }
            };
            if let Some(c) = char::from_u32(u32::from(code)) {
                if gid != 0 {
                    map.insert(c, gid);
                }
            }
        }
    }
    Some(map)
}

fn parse_kern(kern: &[u8]) -> HashMap<(u16, u16), i16> {
    let mut pairs = HashMap::new();
    let n = u16_at(kern, 2).unwrap_or(0);
    let mut off = 4;
    for _ in 0..n {
        let (Some(len), Some(coverage), Some(n_pairs)) = (
            u16_at(kern, off + 2),
            u16_at(kern, off + 4),
            u16_at(kern, off + 6),
        ) else {
            break;
        };
        // Format 0, horizontal, not minimum values, not cross-stream.
        if coverage >> 8 == 0 && coverage & 0b111 == 0b001 {
            for p in 0..usize::from(n_pairs) {
                let at = off + 14 + 6 * p;
                if let (Some(l), Some(r), Some(v)) =
                    (u16_at(kern, at), u16_at(kern, at + 2), i16_at(kern, at + 4))
                {
                    pairs.insert((l, r), v);
                }
            }
        }
        off += usize::from(len);
    }
    pairs
}

impl Metrics {
    /// Parses the tables of a TrueType (`glyf`) font; `None` if any is missing
    /// or malformed.
    pub fn parse(font: &[u8]) -> Option<Self> {
        let head = table(font, b"head")?;
        let hhea = table(font, b"hhea")?;
        let maxp = table(font, b"maxp")?;
        let hmtx = table(font, b"hmtx")?;
        let loca = table(font, b"loca")?;
        let glyf = table(font, b"glyf")?;
        let cmap = parse_cmap(table(font, b"cmap")?)?;
        let kern = table(font, b"kern").map(parse_kern).unwrap_or_default();

        let units_per_em = f32::from(u16_at(head, 18)?);
        let long_loca = i16_at(head, 50)? != 0;
        let n_glyphs = usize::from(u16_at(maxp, 4)?);
        let n_hmetrics = usize::from(u16_at(hhea, 34)?);

        // Vertical metrics as ttf-parser reports them (typographic ones when
        // the OS/2 USE_TYPO_METRICS bit is set, hhea otherwise).
        let (mut ascent, mut descent) = (i16_at(hhea, 4)?, i16_at(hhea, 6)?);
        if let Some(os2) = table(font, b"OS/2") {
            if u16_at(os2, 62)? & (1 << 7) != 0 {
                ascent = i16_at(os2, 68)?;
                descent = i16_at(os2, 70)?;
            }
        }

        let mut advances = Vec::with_capacity(n_glyphs);
        let mut last = 0;
        for g in 0..n_glyphs {
            if g < n_hmetrics {
                last = u16_at(hmtx, 4 * g)?;
            }
            advances.push(last);
        }

        let loca_at = |g: usize| -> Option<usize> {
            if long_loca {
                u32_at(loca, 4 * g).map(|v| v as usize)
            } else {
                u16_at(loca, 2 * g).map(|v| 2 * usize::from(v))
            }
        };
        let mut x_mins = Vec::with_capacity(n_glyphs);
        for g in 0..n_glyphs {
            let (a, b) = (loca_at(g)?, loca_at(g + 1)?);
            x_mins.push(if b > a { i16_at(glyf, a + 2)? } else { 0 });
        }

        Some(Self {
            height: f32::from(ascent) - f32::from(descent),
            units_per_em,
            advances,
            x_mins,
            cmap,
            kern,
        })
    }

    fn glyph(&self, c: char) -> usize {
        usize::from(self.cmap.get(&c).copied().unwrap_or(0))
    }

    /// Advance width of `c` in font units (of `.notdef` if unmapped).
    pub fn advance(&self, c: char) -> f32 {
        f32::from(self.advances.get(self.glyph(c)).copied().unwrap_or(0))
    }

    /// Left edge of the outline of `c` in font units.
    pub fn x_min(&self, c: char) -> f32 {
        f32::from(self.x_mins.get(self.glyph(c)).copied().unwrap_or(0))
    }

    /// Kerning between `a` and a following `b`, in font units.
    pub fn kern(&self, a: char, b: char) -> f32 {
        let key = (self.glyph(a) as u16, self.glyph(b) as u16);
        f32::from(self.kern.get(&key).copied().unwrap_or(0))
    }

    /// Pen position before each char of `text` and the total advance, in
    /// font units (kerning included).
    pub fn pen_positions(&self, text: &str) -> (Vec<f32>, f32) {
        let mut pens = Vec::with_capacity(text.len());
        let mut pen = 0.0;
        let mut prev = None;
        for c in text.chars() {
            if let Some(p) = prev {
                pen += self.kern(p, c);
            }
            pens.push(pen);
            pen += self.advance(c);
            prev = Some(c);
        }
        (pens, pen)
    }

    /// Width of `text` in pixels at ab_glyph pixel size `size`.
    pub fn width(&self, text: &str, size: f64) -> f64 {
        f64::from(self.pen_positions(text).1) * size / f64::from(self.height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dejavu() -> Metrics {
        Metrics::parse(include_bytes!("../assets/DejaVuSans.ttf")).unwrap()
    }

    #[test]
    fn dejavu_sans_metrics_match_the_font() {
        let m = dejavu();
        // head.unitsPerEm and hhea ascender/descender of DejaVu Sans 2.37.
        assert_eq!(m.units_per_em, 2048.0);
        assert_eq!(m.height, 1901.0 + 483.0);
        // Advance widths from the font's hmtx table.
        assert_eq!(m.advance(' '), 651.0);
        assert_eq!(m.advance('0'), 1303.0);
        assert_eq!(m.advance('j'), 569.0);
        // 'j' hangs left of the pen, 'l' starts right of it.
        assert_eq!(m.x_min('j'), -37.0);
        assert_eq!(m.x_min('l'), 193.0);
        assert_eq!(m.x_min('T'), -6.0);
        // Pairs from the font's kern table.
        assert_eq!(m.kern('T', 'e'), -348.0);
        assert_eq!(m.kern('A', 'V'), -131.0);
        assert_eq!(m.pen_positions("Te").0, vec![0.0, 1251.0 - 348.0]);
    }

    #[test]
    fn unmapped_chars_fall_back_to_notdef() {
        let m = dejavu();
        assert_eq!(m.advance('\u{E000}'), f32::from(m.advances[0]));
    }
}
